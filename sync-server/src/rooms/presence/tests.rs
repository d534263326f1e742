use super::*;

const LIMITS: PresenceLimits = PresenceLimits {
    clients_per_conn: 2,
    state_bytes: 64,
    list_bytes: 200,
};
const COALESCE: Duration = Duration::from_millis(30);

fn update(entries: &[(u64, u32, &str)]) -> AwarenessUpdate {
    AwarenessUpdate {
        clients: entries
            .iter()
            .map(|(c, clock, json)| (ClientID::new(*c), entry(*clock, (*json).into())))
            .collect(),
    }
}

fn clients(update: &Option<AwarenessUpdate>) -> Vec<(u64, u32, String)> {
    let mut out: Vec<_> = update
        .iter()
        .flat_map(|u| u.clients.iter())
        .map(|(c, e)| (c.get(), e.clock, e.json.to_string()))
        .collect();
    out.sort();
    out
}

#[tokio::test(start_paused = true)]
async fn changes_are_coalesced_then_sent_here_and_relayed() {
    let mut p = Presence::new(LIMITS, COALESCE);
    p.apply_local(1, update(&[(10, 1, r#"{"n":"ann"}"#)]))
        .expect("fits");
    assert_eq!(p.flush_at(), Some(Instant::now() + COALESCE));
    p.apply_local(1, update(&[(10, 2, r#"{"n":"ann b"}"#)]))
        .expect("fits");
    // An older clock changes nothing.
    p.apply_local(1, update(&[(10, 1, r#"{"n":"old"}"#)]))
        .expect("fits");
    let out = p.flush();
    assert_eq!(
        clients(&out.broadcast),
        vec![(10, 2, r#"{"n":"ann b"}"#.into())]
    );
    assert_eq!(clients(&out.relay), clients(&out.broadcast));
    assert_eq!(p.flush_at(), None);
    assert_eq!(
        clients(&Some(p.full())),
        vec![(10, 2, r#"{"n":"ann b"}"#.into())]
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_leaves_takes_its_clients_and_nothing_is_kept() {
    let mut p = Presence::new(LIMITS, COALESCE);
    p.apply_local(1, update(&[(10, 4, "{}"), (11, 1, "{}")]))
        .expect("fits");
    p.apply_local(2, update(&[(20, 1, "{}")])).expect("fits");
    p.flush();
    let out = p.conn_left(1);
    assert_eq!(
        clients(&out.broadcast),
        vec![(10, 4, "null".into()), (11, 1, "null".into())],
        "removed with their clocks unchanged"
    );
    assert_eq!(clients(&out.relay), clients(&out.broadcast));
    assert_eq!(clients(&Some(p.full())), vec![(20, 1, "{}".into())]);
    assert_eq!(p.states.len(), 1, "departed clients are forgotten");
    assert_eq!(p.bytes(), 2);
    // The client comes back with the same clock: welcome.
    p.apply_local(3, update(&[(10, 4, "{}")])).expect("fits");
    assert_eq!(p.full().clients.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn removals_of_unknown_clients_hold_nothing() {
    let mut p = Presence::new(LIMITS, COALESCE);
    let nulls: Vec<(u64, u32, &str)> = (0..5000).map(|c| (c, 1, "null")).collect();
    p.apply_local(1, update(&nulls))
        .expect("removals are not announcements");
    assert!(p.states.is_empty());
    assert!(p.flush().broadcast.is_none());
}

#[tokio::test(start_paused = true)]
async fn caps_refuse_the_whole_message_before_applying_any_of_it() {
    let mut p = Presence::new(LIMITS, COALESCE);
    assert_eq!(
        p.apply_local(1, update(&[(1, 1, "{}"), (2, 1, "{}"), (3, 1, "{}")])),
        Err(PresenceError::TooManyClients(2))
    );
    assert!(p.is_empty(), "nothing of a refused message is applied");
    let big = format!(r#"{{"n":"{}"}}"#, "x".repeat(80));
    assert_eq!(
        p.apply_local(1, update(&[(1, 1, &big)])),
        Err(PresenceError::StateTooLarge(64))
    );
    let forty_eight = format!(r#"{{"n":"{}"}}"#, "x".repeat(40));
    for conn in 0..4 {
        p.apply_local(conn, update(&[(100 + conn, 1, &forty_eight)]))
            .expect("fits the list");
    }
    assert_eq!(
        p.apply_local(9, update(&[(200, 1, &forty_eight)])),
        Err(PresenceError::ListFull)
    );
    // Shrinking one's own state is always allowed.
    p.apply_local(0, update(&[(100, 2, "{}")]))
        .expect("smaller");
    p.apply_local(9, update(&[(200, 1, &forty_eight)]))
        .expect("room again");
}

#[tokio::test(start_paused = true)]
async fn relayed_presence_expires_unless_renewed_and_moves_between_replicas() {
    let mut p = Presence::new(LIMITS, COALESCE);
    p.apply_relayed(update(&[(7, 1, "{}"), (8, 1, "{}")]));
    assert_eq!(clients(&p.flush().relay), vec![], "never relayed back");
    tokio::time::advance(REMOTE_TIMEOUT / 2).await;
    // 8 is renewed (same clock), 7 is not.
    p.apply_relayed(update(&[(8, 1, "{}")]));
    tokio::time::advance(REMOTE_TIMEOUT / 2).await;
    assert_eq!(clients(&p.expire_remote()), vec![(7, 1, "null".into())]);
    // 8 reconnects here (and renews): a local client now, leaving with its socket.
    p.apply_local(4, update(&[(8, 2, "{}")])).expect("fits");
    tokio::time::advance(REMOTE_TIMEOUT * 2).await;
    assert!(p.expire_remote().is_none(), "local clients do not expire");
    assert_eq!(clients(&p.conn_left(4).relay), vec![(8, 2, "null".into())]);
}

#[tokio::test(start_paused = true)]
async fn a_client_moving_to_another_connection_is_that_ones() {
    let mut p = Presence::new(LIMITS, COALESCE);
    p.apply_local(1, update(&[(5, 1, "{}")])).expect("fits");
    p.apply_local(2, update(&[(5, 2, "{}")])).expect("fits");
    assert!(p.conn_left(1).broadcast.is_none(), "5 moved away");
    assert_eq!(
        clients(&p.all_local_left().broadcast),
        vec![(5, 2, "null".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn echoes_of_others_presence_neither_move_them_nor_count() {
    let mut p = Presence::new(LIMITS, COALESCE);
    // Five people, each on a connection of their own.
    for conn in 1..=5u64 {
        p.apply_local(conn, update(&[(100 + conn, 3, "{}")]))
            .expect("fits");
    }
    p.flush();
    // Connection 1 echoes everyone's state back (more than its cap of 2).
    let echo: Vec<(u64, u32, &str)> = (1..=5u64).map(|c| (100 + c, 3, "{}")).collect();
    p.apply_local(1, update(&echo))
        .expect("an echo counts for nothing");
    assert!(p.flush().broadcast.is_none(), "and changes nothing");
    // Person 3's socket is cut: they are gone for everyone, though 1 echoed them.
    assert_eq!(
        clients(&p.conn_left(3).broadcast),
        vec![(103, 3, "null".into())]
    );
    // Connection 1 leaving takes only its own client.
    assert_eq!(
        clients(&p.conn_left(1).broadcast),
        vec![(101, 3, "null".into())]
    );
}
