//! Random concurrent edit histories, delivered in any order and with
//! duplicates, converge to the same document and the same rows.

use larder_crdt::{ItemPatch, ItemStatus, ListDoc, NewItem};
use proptest::prelude::*;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

const ITEM_IDS: [&str; 4] = [
    "00000000-0000-4000-8000-000000000001",
    "00000000-0000-4000-8000-000000000002",
    "00000000-0000-4000-8000-000000000003",
    "00000000-0000-4000-8000-000000000004",
];

#[derive(Debug, Clone)]
enum Op {
    Add {
        item: usize,
        name: u8,
    },
    SetQuantity {
        item: usize,
        quantity: u8,
    },
    SetStatus {
        item: usize,
        status: usize,
    },
    SetAssignee {
        item: usize,
        assignee: Option<u8>,
    },
    Remove {
        item: usize,
    },
    Rename {
        name: u8,
    },
    /// Client pulls everything another client has (a sync).
    SyncFrom {
        other: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let item = 0..ITEM_IDS.len();
    prop_oneof![
        3 => (item.clone(), any::<u8>()).prop_map(|(item, name)| Op::Add { item, name }),
        3 => (item.clone(), any::<u8>()).prop_map(|(item, quantity)| Op::SetQuantity { item, quantity }),
        2 => (item.clone(), 0..3usize).prop_map(|(item, status)| Op::SetStatus { item, status }),
        1 => (item.clone(), proptest::option::of(any::<u8>())).prop_map(|(item, assignee)| Op::SetAssignee { item, assignee }),
        1 => item.prop_map(|item| Op::Remove { item }),
        1 => any::<u8>().prop_map(|name| Op::Rename { name }),
        2 => (0..3usize).prop_map(|other| Op::SyncFrom { other }),
    ]
}

/// Runs the history on three clients and returns every update produced,
/// with the client that produced it.
fn run_history(history: &[(usize, Op)]) -> (Vec<Doc>, Vec<(usize, Vec<u8>)>) {
    let docs: Vec<Doc> = (0..3).map(|i| Doc::with_client_id(i as u64 + 1)).collect();
    let mut updates = Vec::new();
    for (client, op) in history {
        let doc = &docs[*client];
        let list = ListDoc::new(doc);
        if let Op::SyncFrom { other } = op {
            let sv = doc.transact().state_vector();
            let diff = docs[*other].transact().encode_state_as_update_v1(&sv);
            let mut txn = doc.transact_mut();
            txn.apply_update(Update::decode_v1(&diff).expect("valid"))
                .expect("applies");
            continue;
        }
        let mut txn = doc.transact_mut();
        match op {
            Op::Add { item, name } => {
                let new = NewItem {
                    id: ITEM_IDS[*item].to_owned(),
                    name: format!("item {name}"),
                    quantity: None,
                    category: Some("dairy".into()),
                    note: None,
                    position: Some(format!("a{}", item + 1)),
                    added_by: Some(format!("user{client}")),
                    added_at_ms: 1_700_000_000_000 + *name as i64,
                };
                list.add_item(&mut txn, &new).expect("valid item");
            }
            Op::SetQuantity { item, quantity } => {
                let patch = ItemPatch {
                    quantity: Some(Some(format!("{quantity} kg"))),
                    ..Default::default()
                };
                let _ = list.update_item(&mut txn, ITEM_IDS[*item], &patch);
            }
            Op::SetStatus { item, status } => {
                let patch = ItemPatch {
                    status: Some(ItemStatus::ALL[*status]),
                    ..Default::default()
                };
                let _ = list.update_item(&mut txn, ITEM_IDS[*item], &patch);
            }
            Op::SetAssignee { item, assignee } => {
                let patch = ItemPatch {
                    assignee: Some(assignee.map(|a| format!("user{a}"))),
                    ..Default::default()
                };
                let _ = list.update_item(&mut txn, ITEM_IDS[*item], &patch);
            }
            Op::Remove { item } => {
                list.remove_item(&mut txn, ITEM_IDS[*item]);
            }
            Op::Rename { name } => list
                .set_name(&mut txn, &format!("list {name}"))
                .expect("valid"),
            Op::SyncFrom { .. } => unreachable!("handled above"),
        }
        updates.push((*client, txn.encode_update_v1()));
    }
    (docs, updates)
}

fn replay(updates: &[Vec<u8>], order: &[usize]) -> Doc {
    let doc = Doc::with_client_id(99);
    for i in order {
        let mut txn = doc.transact_mut();
        txn.apply_update(Update::decode_v1(&updates[*i % updates.len()]).expect("valid"))
            .expect("applies");
    }
    doc
}

fn full_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_interleaving_of_client_streams_with_duplicates_converges(
        history in proptest::collection::vec((0..3usize, op()), 1..60),
        shuffle_seed in any::<u64>(),
        duplicates in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
                let (_, tagged) = run_history(&history);
        prop_assume!(!tagged.is_empty());
        let updates: Vec<Vec<u8>> = tagged.iter().map(|(_, u)| u.clone()).collect();
        let in_order: Vec<usize> = (0..updates.len()).collect();
        // Any interleaving of the clients' streams (each client's own updates
        // keep their order, as one connection and the sequenced log deliver
        // them), driven by the seed, then duplicates of anything.
        let mut queues: Vec<std::collections::VecDeque<usize>> = vec![Default::default(); 3];
        for (i, (client, _)) in tagged.iter().enumerate() {
            queues[*client].push_back(i);
        }
        let mut shuffled = Vec::with_capacity(updates.len() + duplicates.len());
        let mut state = shuffle_seed | 1;
        while queues.iter().any(|q| !q.is_empty()) {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            let live: Vec<usize> = (0..3).filter(|c| !queues[*c].is_empty()).collect();
            let pick = live[(state % live.len() as u64) as usize];
            shuffled.push(queues[pick].pop_front().expect("non-empty"));
        }
        shuffled.extend(duplicates.iter().map(|d| d % updates.len()));

        let a = replay(&updates, &in_order);
        let b = replay(&updates, &shuffled);
        let rows_a = ListDoc::new(&a).read(&a.transact());
        let rows_b = ListDoc::new(&b).read(&b.transact());
        prop_assert_eq!(&rows_a, &rows_b);
        prop_assert!(rows_a.skipped.is_clean());
        prop_assert_eq!(a.transact().state_vector(), b.transact().state_vector());

        // Folding the log (what compaction stores) and replaying what it
        // left after the snapshot is the same state too, whatever order
        // the log holds its updates in.
        for order in [&in_order, &shuffled] {
            let log: Vec<&[u8]> = order.iter().map(|i| updates[*i].as_slice()).collect();
            let (count, folded) = larder_crdt::state::fold(log.iter().copied()).expect("folds");
            let mut rest = vec![folded];
            rest.extend(log[count..].iter().map(|u| u.to_vec()));
            let indexes: Vec<usize> = (0..rest.len()).collect();
            let c = replay(&rest, &indexes);
            prop_assert_eq!(ListDoc::new(&c).read(&c.transact()), rows_a.clone());
            prop_assert_eq!(c.transact().state_vector(), a.transact().state_vector());
            prop_assert_eq!(!full_state(&c).is_empty(), true);
        }
    }

    #[test]
    fn clients_that_sync_everything_hold_equal_rows(history in proptest::collection::vec((0..3usize, op()), 1..60)) {
        let (docs, _) = run_history(&history);
        // Everyone exchanges state with everyone.
        for _ in 0..2 {
            for i in 0..3 {
                for j in 0..3 {
                    if i == j { continue; }
                    let sv = docs[i].transact().state_vector();
                    let diff = docs[j].transact().encode_state_as_update_v1(&sv);
                    docs[i].transact_mut().apply_update(Update::decode_v1(&diff).expect("valid")).expect("applies");
                }
            }
        }
        let rows: Vec<_> = docs.iter().map(|d| ListDoc::new(d).read(&d.transact())).collect();
        prop_assert_eq!(&rows[0], &rows[1]);
        prop_assert_eq!(&rows[1], &rows[2]);
    }
}
