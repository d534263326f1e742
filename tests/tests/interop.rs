//! The JavaScript `yjs` + `y-websocket` packages, unmodified, against real
//! Larder servers: two JS clients edit concurrently, one goes offline and
//! back, and a Rust client and the stored log agree with them; once on one
//! replica, once with each JS client on a replica of its own.

use larder_tests::interop::run_interop;
use larder_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_yjs_clients_and_a_rust_client_converge_with_the_stored_list() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    run_interop(db.url(), &app, &app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_clients_on_two_replicas_converge_through_the_relay() {
    let redis = redis_url().await;
    let db = TestDatabase::create().await;
    let first = TestApp::spawn_replica(db.url(), &redis, |_| {}).await;
    let second = TestApp::spawn_replica(db.url(), &redis, |_| {}).await;
    run_interop(db.url(), &first, &second).await;
    first.stop().await;
    second.stop().await;
}
