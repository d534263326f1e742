use super::*;
use yrs::encoding::write::Write;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Array, Doc, Map, MapPrelim, ReadTxn, StateVector, Text, Transact, Update};

fn var(out: &mut Vec<u8>, n: u64) {
    out.write_var(n);
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.write_string(s);
}

/// An update with one item in root map `m`, key `k`, whose content is
/// `content` (kind byte included), written by client 1 at `clock`.
fn one_item(clock: u32, kind: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    var(&mut out, 1); // clients
    var(&mut out, 1); // blocks
    var(&mut out, 1); // client
    var(&mut out, u64::from(clock));
    out.push(kind | HAS_PARENT_SUB);
    var(&mut out, 1); // parent is a root name
    string(&mut out, "m");
    string(&mut out, "k");
    out.extend_from_slice(content);
    out.extend_from_slice(&[0]); // empty delete set
    out
}

/// `Any` arrays nested `depth` deep around a null.
fn nested_any(depth: usize) -> Vec<u8> {
    let mut content = vec![1]; // one value
    for _ in 0..depth {
        content.extend_from_slice(&[117, 1]);
    }
    content.push(126);
    one_item(0, ANY, &content)
}

fn real_update() -> Vec<u8> {
    let doc = Doc::with_client_id(9);
    let items = doc.get_or_insert_map("items");
    let text = doc.get_or_insert_text("note");
    let list = doc.get_or_insert_array("log");
    let mut txn = doc.transact_mut();
    let item = items.insert(&mut txn, "a", MapPrelim::default());
    item.insert(&mut txn, "name", "milk");
    item.insert(&mut txn, "addedAt", 1_700_000_000_000i64);
    item.insert(&mut txn, "tags", vec!["x", "y"]);
    text.insert(&mut txn, 0, "héllo 👋");
    list.insert(&mut txn, 0, 3.5);
    list.insert(&mut txn, 1, true);
    text.remove_range(&mut txn, 1, 2);
    items.remove(&mut txn, "missing");
    list.remove(&mut txn, 0);
    txn.encode_update_v1()
}

#[test]
fn real_updates_pass_and_are_counted() {
    let update = real_update();
    let shape = check_update(&update, &Limits::default()).expect("valid");
    assert_eq!(shape.clients, 1);
    assert!(shape.structs >= 5, "{shape:?}");
    assert!(shape.delete_ranges >= 1, "{shape:?}");
    assert_eq!(
        check_update(&[0, 0], &Limits::default()),
        Ok(UpdateShape::default())
    );
}

#[test]
fn every_prefix_of_a_real_update_is_refused() {
    let update = real_update();
    for cut in 0..update.len() {
        assert!(
            check_update(&update[..cut], &Limits::default()).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn nesting_is_bounded_at_the_limit() {
    let limits = Limits::default();
    let at_limit = nested_any(limits.max_depth);
    assert!(check_update(&at_limit, &limits).is_ok());
    // yrs itself reads what passed.
    Update::decode_v1(&at_limit).expect("yrs decodes it");
    assert_eq!(
        check_update(&nested_any(limits.max_depth + 1), &limits),
        Err(Invalid::TooDeep(limits.max_depth))
    );
    // The message that overflowed the stack: 400 000 levels in 800 KB.
    assert_eq!(
        check_update(&nested_any(400_000), &limits),
        Err(Invalid::TooDeep(limits.max_depth))
    );
}

#[test]
fn declared_counts_must_fit_in_the_bytes() {
    let limits = Limits::default();
    let mut clients = Vec::new();
    var(&mut clients, u64::from(u32::MAX));
    assert_eq!(check_update(&clients, &limits), Err(Invalid::CountTooLarge));

    let mut any = vec![1, 117];
    var(&mut any, u64::MAX >> 1);
    assert_eq!(
        check_update(&one_item(0, ANY, &any), &limits),
        Err(Invalid::CountTooLarge)
    );

    let mut sv = Vec::new();
    var(&mut sv, 500_000_000);
    assert_eq!(
        check_state_vector(&sv, &limits),
        Err(Invalid::CountTooLarge)
    );

    let mut presence = Vec::new();
    var(&mut presence, u64::MAX);
    assert_eq!(
        check_awareness(&presence, &limits),
        Err(Invalid::CountTooLarge)
    );

    let mut json = Vec::new();
    var(&mut json, u64::from(u32::MAX));
    assert_eq!(
        check_update(&one_item(0, JSON, &json), &limits),
        Err(Invalid::CountTooLarge)
    );
}

#[test]
fn clocks_must_not_overflow() {
    let limits = Limits::default();
    let mut content = Vec::new();
    string(&mut content, "abc");
    assert!(check_update(&one_item(MAX_CLOCK - 3, STRING, &content), &limits).is_ok());
    assert_eq!(
        check_update(&one_item(MAX_CLOCK - 2, STRING, &content), &limits),
        Err(Invalid::ClockOverflow)
    );
    // yrs computes clock offsets in i32: a clock past that range is refused.
    assert_eq!(
        check_update(&one_item(u32::MAX - 3, STRING, &content), &limits),
        Err(Invalid::ClockOverflow)
    );
    let mut deleted = Vec::new();
    var(&mut deleted, u64::from(u32::MAX));
    assert_eq!(
        check_update(&one_item(1, DELETED, &deleted), &limits),
        Err(Invalid::ClockOverflow)
    );
    // A delete-set range past the clock space.
    let mut ds = vec![0, 1, 5, 1];
    var(&mut ds, u64::from(u32::MAX));
    var(&mut ds, 2);
    assert_eq!(check_update(&ds, &limits), Err(Invalid::ClockOverflow));
}

#[test]
fn oversized_integers_are_refused_without_panicking() {
    let mut content = vec![1, 125];
    content.extend_from_slice(&[0xff; 10]);
    content.push(0x01);
    assert!(matches!(
        check_update(&one_item(0, ANY, &content), &Limits::default()),
        Err(Invalid::Malformed(_))
    ));
    // i64::MIN's magnitude does not fit either.
    let mut min = vec![1, 125, 0xc0];
    min.extend_from_slice(&[0x80; 8]);
    min.push(0x02);
    assert!(check_update(&one_item(0, ANY, &min), &Limits::default()).is_err());
    let mut ok = vec![1, 125];
    ok.extend_from_slice(&[0xff; 9]);
    ok.push(0x01);
    assert!(check_update(&one_item(0, ANY, &ok), &Limits::default()).is_ok());
}

#[test]
fn struct_client_and_range_caps_hold() {
    let limits = Limits {
        max_structs: 2,
        max_clients: 1,
        max_delete_ranges: 1,
        ..Limits::default()
    };
    let doc = Doc::with_client_id(3);
    let list = doc.get_or_insert_array("a");
    let mut txn = doc.transact_mut();
    list.insert(&mut txn, 0, "a");
    list.insert(&mut txn, 0, "b");
    list.insert(&mut txn, 0, "c");
    let update = txn.encode_update_v1();
    assert_eq!(
        check_update(&update, &limits),
        Err(Invalid::TooManyStructs(2))
    );
    let ds = [0, 1, 5, 2, 0, 1, 4, 1];
    assert_eq!(
        check_update(&ds, &limits),
        Err(Invalid::TooManyDeleteRanges(1))
    );
    let sv = [2, 1, 1, 2, 1];
    assert_eq!(
        check_state_vector(&sv, &limits),
        Err(Invalid::TooManyClients(1))
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut update = real_update();
    update.push(0);
    assert_eq!(
        check_update(&update, &Limits::default()),
        Err(Invalid::Trailing(1))
    );
}

#[test]
fn state_vectors_pass_and_count_clients() {
    let doc = Doc::new();
    let update = real_update();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&update).expect("decodes"))
        .expect("applies");
    let sv = doc.transact().state_vector().encode_v1();
    assert_eq!(check_state_vector(&sv, &Limits::default()), Ok(1));
    assert_eq!(
        check_state_vector(&StateVector::default().encode_v1(), &Limits::default()),
        Ok(0)
    );
}

#[test]
fn presence_entries_are_listed_and_deep_json_refused() {
    let mut presence = Vec::new();
    var(&mut presence, 2);
    var(&mut presence, 7);
    var(&mut presence, 3);
    string(&mut presence, r#"{"user":{"name":"ann [{"}}"#);
    var(&mut presence, 8);
    var(&mut presence, 1);
    string(&mut presence, "null");
    let entries = check_awareness(&presence, &Limits::default()).expect("valid");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].client, 7);
    assert!(!entries[0].is_removal);
    assert!(entries[1].is_removal);

    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let mut hostile = Vec::new();
    var(&mut hostile, 1);
    var(&mut hostile, 7);
    var(&mut hostile, 3);
    string(&mut hostile, &deep);
    assert_eq!(
        check_awareness(&hostile, &Limits::default()),
        Err(Invalid::TooDeep(32))
    );
}

#[test]
fn json_depth_ignores_brackets_in_strings() {
    assert!(check_json_depth(r#"{"a":"[[[[[[[[[[\"[[[["}"#, 2).is_ok());
    assert!(check_json_depth("[[[]]]", 2).is_err());
    assert!(check_json_depth("[[]]", 2).is_ok());
}

#[test]
fn unknown_kinds_are_refused() {
    assert_eq!(
        check_update(&one_item(0, 11, &[]), &Limits::default()),
        Err(Invalid::UnknownContent(11))
    );
    assert_eq!(
        check_update(&one_item(0, TYPE, &[8]), &Limits::default()),
        Err(Invalid::UnknownContent(8))
    );
}

#[test]
fn client_ids_wider_than_53_bits_are_refused() {
    let mut update = Vec::new();
    var(&mut update, 1);
    var(&mut update, 1);
    var(&mut update, 1 << 53);
    assert_eq!(
        check_update(&update, &Limits::default()),
        Err(Invalid::ClientTooLarge)
    );
    let mut sv = vec![1];
    var(&mut sv, u64::MAX);
    var(&mut sv, 1);
    assert_eq!(
        check_state_vector(&sv, &Limits::default()),
        Err(Invalid::ClientTooLarge)
    );
    let mut presence = vec![1];
    var(&mut presence, 1 << 60);
    var(&mut presence, 1);
    string(&mut presence, "{}");
    assert_eq!(
        check_awareness(&presence, &Limits::default()),
        Err(Invalid::ClientTooLarge)
    );
    let mut ds = vec![0, 1];
    var(&mut ds, 1 << 53);
    ds.extend_from_slice(&[1, 0, 1]);
    assert_eq!(
        check_update(&ds, &Limits::default()),
        Err(Invalid::ClientTooLarge)
    );
}

#[test]
fn a_client_given_twice_is_refused() {
    // Two runs of client 1 from clock 0 (the bytes a review found to make
    // yrs free a block it still points to).
    let update = [
        2, 1, 1, 0, 4, 1, 1, b't', 2, b'a', b'b', 1, 1, 0, 4, 1, 1, b't', 1, b'a', 0,
    ];
    assert_eq!(
        check_update(&update, &Limits::default()),
        Err(Invalid::DuplicateClient)
    );
}

#[test]
fn subdocuments_are_refused() {
    let mut doc = Vec::new();
    string(&mut doc, "guid");
    doc.push(126);
    assert_eq!(
        check_update(&one_item(0, DOC, &doc), &Limits::default()),
        Err(Invalid::Subdocument)
    );
    assert_eq!(
        check_update(&one_item(0, TYPE, &[9]), &Limits::default()),
        Err(Invalid::Subdocument)
    );
}
