//! Arbitrary bytes and mutated valid messages go through the validator and,
//! when it lets them pass, through yrs: on a thread with a small stack (an
//! overflow aborts this test binary) and under an allocation cap tied to
//! the input's size (an allocation past it aborts too), so neither deep
//! recursion nor a count the input declared can reach yrs.

use std::alloc::System;
use std::sync::atomic::{AtomicUsize, Ordering};

use cap::Cap;
use larder_crdt::validate::{Limits, check_awareness, check_state_vector, check_update};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use yrs::encoding::read::Error as ReadError;
use yrs::sync::AwarenessUpdate;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Array, Doc, Map, MapPrelim, ReadTxn, StateVector, Text, Transact, Update};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Stack of the thread yrs runs on: far less than a tokio worker's 2 MiB.
const SMALL_STACK: usize = 256 * 1024;

/// Memory yrs may take on top of what is allocated already, for `len` input
/// bytes: a generous constant factor, never a count the input declares.
fn budget(len: usize) -> usize {
    8 * 1024 * 1024 + 256 * len
}

/// Runs `f` on a small stack with allocations capped at `budget(len)`.
fn bounded<T: Send + 'static>(len: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || {
            ALLOCATOR
                .set_limit(ALLOCATOR.allocated() + budget(len))
                .expect("limit above what is allocated");
            let out = f();
            ALLOCATOR.set_limit(usize::MAX).expect("lift the limit");
            out
        })
        .expect("spawn")
        .join()
        .expect("no panic while decoding or applying")
}

fn is_out_of_memory(e: &ReadError) -> bool {
    matches!(e, ReadError::NotEnoughMemory(_))
}

/// What yrs does with an update a client sends: decode, apply to a list
/// that already holds something, and encode the result.
fn through_yrs(update: Vec<u8>) {
    let len = update.len();
    bounded(len, move || {
        let doc = Doc::with_client_id(1);
        let items = doc.get_or_insert_map("items");
        items.insert(&mut doc.transact_mut(), "a", "milk");
        match Update::decode_v1(&update) {
            Ok(decoded) => {
                let mut txn = doc.transact_mut();
                let _ = txn.apply_update(decoded);
                let _ = txn.encode_update_v1();
                drop(txn);
                let _ = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
            }
            Err(e) => assert!(!is_out_of_memory(&e), "yrs ran out of memory: {e}"),
        }
    });
}

fn sample_updates() -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(9);
    let items = doc.get_or_insert_map("items");
    let note = doc.get_or_insert_text("note");
    let log = doc.get_or_insert_array("log");
    let mut updates = Vec::new();
    {
        let mut txn = doc.transact_mut();
        let item = items.insert(&mut txn, "a", MapPrelim::default());
        item.insert(&mut txn, "name", "milk");
        item.insert(&mut txn, "tags", vec![vec!["x"], vec!["y", "z"]]);
        updates.push(txn.encode_update_v1());
    }
    {
        let mut txn = doc.transact_mut();
        note.insert(&mut txn, 0, "héllo 👋 there");
        log.insert(&mut txn, 0, 3.5);
        log.insert(&mut txn, 1, -7_000_000_000i64);
        updates.push(txn.encode_update_v1());
    }
    {
        let mut txn = doc.transact_mut();
        note.remove_range(&mut txn, 0, 1);
        items.remove(&mut txn, "a");
        updates.push(txn.encode_update_v1());
    }
    updates.push(
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    updates
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// Repeats a slice many times: deep nesting and long runs.
    Repeat {
        at: usize,
        len: usize,
        times: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => (any::<usize>(), 1usize..4, 2usize..5000)
            .prop_map(|(at, len, times)| Mutation::Repeat { at, len, times }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            bytes.push(0);
        }
        let n = bytes.len();
        match m {
            Mutation::Flip { at, byte } => bytes[at % n] = *byte,
            Mutation::Insert { at, bytes: more } => {
                let at = at % (n + 1);
                bytes.splice(at..at, more.iter().copied());
            }
            Mutation::Remove { at, len } => {
                let at = at % n;
                let end = (at + len).min(n);
                bytes.drain(at..end);
            }
            Mutation::Repeat { at, len, times } => {
                let at = at % n;
                let end = (at + len).min(n);
                let chunk = bytes[at..end].to_vec();
                let repeated: Vec<u8> = chunk
                    .iter()
                    .copied()
                    .cycle()
                    .take(chunk.len() * times)
                    .collect();
                bytes.splice(at..at, repeated);
            }
        }
    }
    bytes
}

/// Inputs the validator let through to yrs: the run must reach yrs often,
/// or it proves nothing about yrs.
static REACHED_YRS: AtomicUsize = AtomicUsize::new(0);

fn check_one_update(bytes: Vec<u8>) {
    let limits = Limits::default();
    if check_update(&bytes, &limits).is_ok() {
        REACHED_YRS.fetch_add(1, Ordering::Relaxed);
        through_yrs(bytes);
    }
}

fn check_one_state_vector(bytes: Vec<u8>) {
    if check_state_vector(&bytes, &Limits::default()).is_ok() {
        let len = bytes.len();
        bounded(len, move || match StateVector::decode_v1(&bytes) {
            Ok(sv) => {
                let doc = Doc::new();
                let _ = doc.transact().encode_state_as_update_v1(&sv);
            }
            Err(e) => assert!(!is_out_of_memory(&e), "yrs ran out of memory: {e}"),
        });
    }
}

fn check_one_presence(bytes: Vec<u8>) {
    if check_awareness(&bytes, &Limits::default()).is_ok() {
        let len = bytes.len();
        bounded(len, move || match AwarenessUpdate::decode_v1(&bytes) {
            Ok(update) => {
                let mut awareness = yrs::sync::Awareness::new(Doc::new());
                let _ = awareness.apply_update(update);
                let _ = awareness.update().map(|u| u.encode_v1());
            }
            Err(e) => assert!(!is_out_of_memory(&e), "yrs ran out of memory: {e}"),
        });
    }
}

fn presence_sample() -> Vec<u8> {
    let mut awareness = yrs::sync::Awareness::new(Doc::with_client_id(5));
    awareness.set_local_state_raw(r##"{"user":{"name":"ann","color":"#ff0000"},"cursor":[1,2]}"##);
    awareness.update().expect("encodes").encode_v1()
}

#[test]
fn hostile_bytes_never_crash_or_exhaust_the_decoder() {
    // A runner counts its cases across runs: one runner per run.
    let runner = || {
        TestRunner::new(Config {
            cases: 768,
            failure_persistence: None,
            ..Config::default()
        })
    };
    let updates = sample_updates();
    let sv = {
        let doc = Doc::new();
        for u in &updates {
            doc.transact_mut()
                .apply_update(Update::decode_v1(u).expect("sample decodes"))
                .expect("sample applies");
        }
        doc.transact().state_vector().encode_v1()
    };
    let presence = presence_sample();
    for (i, update) in updates.iter().enumerate() {
        assert!(
            check_update(update, &Limits::default()).is_ok(),
            "sample {i} passes"
        );
    }
    assert!(check_state_vector(&sv, &Limits::default()).is_ok());
    assert!(check_awareness(&presence, &Limits::default()).is_ok());

    runner()
        .run(&prop::collection::vec(any::<u8>(), 0..2048), |bytes| {
            check_one_update(bytes.clone());
            check_one_state_vector(bytes.clone());
            check_one_presence(bytes);
            Ok(())
        })
        .expect("arbitrary bytes");

    runner()
        .run(
            &(0..updates.len(), prop::collection::vec(mutation(), 1..3)),
            |(which, mutations)| {
                check_one_update(mutate(updates[which].clone(), &mutations));
                Ok(())
            },
        )
        .expect("mutated updates");
    let reached = REACHED_YRS.load(Ordering::Relaxed);
    assert!(reached >= 50, "only {reached} mutated updates reached yrs");

    runner()
        .run(&prop::collection::vec(mutation(), 1..6), |mutations| {
            check_one_state_vector(mutate(sv.clone(), &mutations));
            check_one_presence(mutate(presence.clone(), &mutations));
            Ok(())
        })
        .expect("mutated state vectors and presence");
}
