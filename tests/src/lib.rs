//! Helpers for Larder's end-to-end tests: a real server on a random port
//! against a throw-away PostgreSQL database, and real WebSocket clients.
//!
//! - [`TestApp`]: a server (replica) on a runtime of its own, so it can be
//!   killed like a crashed process.
//! - [`proxy::TcpProxy`]: a TCP proxy a test can cut and restore.
//! - [`redis_server::RedisServer`]: a `redis-server` of the test's own.
//! - [`process::ServerProcess`]: the real `larder` binary as a child process.
//! - [`interop::run_interop`]: the JavaScript Yjs clients against servers.
#![forbid(unsafe_code)]

pub mod interop;
pub mod mux;
pub mod process;
pub mod proxy;
pub mod redis_server;
pub mod sdk;
pub mod whatsapp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use larder_client::SyncClient;
use larder_crdt::{ItemPatch, ListDoc, ListSnapshot, NewItem};
use larder_relay::Relay;
use larder_server::Config;
use larder_storage::Store;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use yrs::Doc;

pub use larder_storage::testing::TestDatabase;

/// A Larder server running in this process, on a runtime of its own.
pub struct TestApp {
    pub addr: SocketAddr,
    pub database_url: String,
    http: reqwest::Client,
    owner: tokio::sync::OnceCell<Owner>,
    shutdown: CancellationToken,
    done: Option<oneshot::Receiver<anyhow::Result<()>>>,
    kill: Option<oneshot::Sender<()>>,
}

/// An HTTP client. reqwest is built with rustls and no bundled crypto
/// provider (the server brings ring): install it before building one.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The shared Redis of the tests: `REDIS_URL`, else the local default. Panics
/// when it does not answer (tests never skip for want of Redis).
pub async fn redis_url() -> String {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    redis_server::wait_until_answers(&url, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| {
            panic!("Redis at {url} is required by this test and does not answer: {e}")
        });
    url
}

impl TestApp {
    /// Starts a server with the default configuration on `database_url`.
    pub async fn spawn(database_url: &str) -> TestApp {
        TestApp::spawn_with(database_url, |_| {}).await
    }

    /// Starts a server after `configure` adjusted its configuration.
    pub async fn spawn_with(database_url: &str, configure: impl FnOnce(&mut Config)) -> TestApp {
        TestApp::start(database_url, None, configure).await
    }

    /// Speaks to a server that runs elsewhere (another process) at `addr`:
    /// the account, list and client helpers work; stopping it is the
    /// owner's business.
    pub fn attach(addr: SocketAddr, database_url: &str) -> TestApp {
        TestApp {
            addr,
            database_url: database_url.to_owned(),
            http: http_client(),
            owner: tokio::sync::OnceCell::new(),
            shutdown: CancellationToken::new(),
            done: None,
            kill: None,
        }
    }

    /// Starts a server relaying through `relay` (shared by replicas in this
    /// process, possibly faulty on purpose).
    pub async fn spawn_with_relay(
        database_url: &str,
        relay: Arc<dyn Relay>,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        TestApp::start(database_url, Some(relay), configure).await
    }

    /// Starts a server at `addr` (the address of one that stopped: a
    /// restart, as clients see it).
    pub async fn spawn_at(
        addr: SocketAddr,
        database_url: &str,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        TestApp::start_on(addr, database_url, None, configure).await
    }

    async fn start(
        database_url: &str,
        relay: Option<Arc<dyn Relay>>,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        TestApp::start_on(any_port, database_url, relay, configure).await
    }

    async fn start_on(
        addr: SocketAddr,
        database_url: &str,
        relay: Option<Arc<dyn Relay>>,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        let mut config = Config::with_database_url(database_url);
        config.auth.jwt_secret = Some(TEST_JWT_SECRET.into());
        // Tests share one address and one Redis: the limits are tested
        // where they are lowered on purpose.
        config.rate_limits.auth_per_minute = 100_000;
        config.rate_limits.login_per_minute = 100_000;
        config.rate_limits.writes_per_minute = 1_000_000;
        configure(&mut config);
        let listener = std::net::TcpListener::bind(addr).expect("bind the address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("bound address");
        let shutdown = CancellationToken::new();
        let (done_tx, done) = oneshot::channel();
        let (kill, killed) = oneshot::channel::<()>();
        let server_shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name(format!("larder-{addr}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let server = async move {
                        match relay {
                            Some(relay) => {
                                larder_server::run_with_relay(
                                    config,
                                    listener,
                                    server_shutdown,
                                    relay,
                                )
                                .await
                            }
                            None => larder_server::run(config, listener, server_shutdown).await,
                        }
                    };
                    tokio::select! {
                        result = server => {
                            let _ = done_tx.send(result);
                        }
                        _ = killed => {}
                    }
                });
                // Whatever still runs (rooms, sockets) dies with the runtime,
                // as with a crashed process.
                runtime.shutdown_background();
            })
            .expect("server thread");
        let app = TestApp {
            addr,
            database_url: database_url.to_owned(),
            http: http_client(),
            owner: tokio::sync::OnceCell::new(),
            shutdown,
            done: Some(done),
            kill: Some(kill),
        };
        // The listener is bound already; wait until migrations ran and it serves.
        eventually("server ready", Duration::from_secs(30), || async {
            http_get(app.addr, "/readyz")
                .await
                .is_some_and(|(status, _)| status == 200)
        })
        .await;
        app
    }

    /// `ws://.../v1/sync/{list_id}?token=...` for the list `list_id`,
    /// created (with that id) in the test owner's family if it does not
    /// exist yet.
    pub async fn sync_url(&self, list_id: Uuid) -> String {
        self.ensure_list(list_id).await;
        let owner = self.owner().await;
        self.sync_url_with(list_id, Some(&owner.access_token))
    }

    /// `ws://.../v1/sync/{list_id}`, with `?token=` when one is given.
    pub fn sync_url_with(&self, list_id: Uuid, token: Option<&str>) -> String {
        match token {
            Some(token) => format!("ws://{}/v1/sync/{list_id}?token={token}", self.addr),
            None => format!("ws://{}/v1/sync/{list_id}", self.addr),
        }
    }

    /// `http://.../path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a JSON request (with a bearer token when given); returns the
    /// status and the JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("response body");
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{path} answered {status} with non-JSON {text:?}: {e}"))
        };
        (status, json)
    }

    /// The raw HTTP client, for requests [`TestApp::call`] cannot express.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Signs up a new account named `name` (a unique email).
    pub async fn signup(&self, name: &str) -> Account {
        let email = format!("{name}-{}@larder.test", Uuid::new_v4().simple());
        self.signup_as(&email, name)
            .await
            .expect("sign-up succeeds")
    }

    /// Signs up `email`; `None` when it is taken.
    pub async fn signup_as(&self, email: &str, name: &str) -> Option<Account> {
        let (status, body) = self
            .call(
                "POST",
                "/v1/auth/signup",
                None,
                Some(serde_json::json!({"email": email, "password": TEST_PASSWORD, "display_name": name})),
            )
            .await;
        match status {
            201 => Some(Account::from_session(&body, email)),
            409 => None,
            other => panic!("sign-up answered {other}: {body}"),
        }
    }

    /// Logs `email` in with the test password.
    pub async fn login(&self, email: &str) -> Account {
        let (status, body) = self
            .call(
                "POST",
                "/v1/auth/login",
                None,
                Some(serde_json::json!({"email": email, "password": TEST_PASSWORD})),
            )
            .await;
        assert_eq!(status, 200, "login: {body}");
        Account::from_session(&body, email)
    }

    /// Creates a family owned by `account`; returns its id.
    pub async fn create_family(&self, account: &Account, name: &str) -> Uuid {
        let (status, body) = self
            .call(
                "POST",
                "/v1/families",
                Some(&account.access_token),
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "create family: {body}");
        json_uuid(&body["id"])
    }

    /// Creates a list in `family_id` as `account`; returns its id.
    pub async fn create_list(&self, account: &Account, family_id: Uuid, name: &str) -> Uuid {
        let (status, body) = self
            .call(
                "POST",
                &format!("/v1/families/{family_id}/lists"),
                Some(&account.access_token),
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "create list: {body}");
        json_uuid(&body["id"])
    }

    /// Makes `member` a member of `family_id` through an invitation by `admin`.
    pub async fn add_member(&self, admin: &Account, family_id: Uuid, member: &Account) {
        let (status, body) = self
            .call(
                "POST",
                &format!("/v1/families/{family_id}/invitations"),
                Some(&admin.access_token),
                Some(serde_json::json!({})),
            )
            .await;
        assert_eq!(status, 201, "invite: {body}");
        let code = body["code"].as_str().expect("code").to_owned();
        let (status, body) = self
            .call(
                "POST",
                &format!("/v1/invitations/{code}/accept"),
                Some(&member.access_token),
                None,
            )
            .await;
        assert_eq!(status, 200, "accept: {body}");
    }

    /// The account and family that own the lists tests open by id. One per
    /// database, so every replica on it shares them.
    pub async fn owner(&self) -> &Owner {
        self.owner
            .get_or_init(|| async {
                let email = "owner@larder.test";
                let account = match self.signup_as(email, "Owner").await {
                    Some(account) => account,
                    None => self.login(email).await,
                };
                let (status, body) = self
                    .call("GET", "/v1/families", Some(&account.access_token), None)
                    .await;
                assert_eq!(status, 200, "families: {body}");
                let family_id = match body["families"].as_array().and_then(|f| f.first()) {
                    Some(family) => json_uuid(&family["id"]),
                    None => self.create_family(&account, "Test family").await,
                };
                Owner { account, family_id }
            })
            .await
    }

    /// Creates the list `list_id` in the owner's family unless it exists.
    pub async fn ensure_list(&self, list_id: Uuid) {
        let owner = self.owner().await;
        let (status, body) = self
            .call(
                "POST",
                &format!("/v1/families/{}/lists", owner.family_id),
                Some(&owner.access_token),
                Some(serde_json::json!({"name": "Test list", "id": list_id})),
            )
            .await;
        assert!(
            status == 201 || status == 409,
            "create list {list_id}: {status} {body}"
        );
    }

    /// A new client connected to `list_id` and synced.
    pub async fn connect(&self, list_id: Uuid) -> SyncClient {
        let mut client = SyncClient::new();
        self.reconnect(&mut client, list_id).await;
        client
    }

    /// Connects `client` to `list_id` and waits for the first sync.
    pub async fn reconnect(&self, client: &mut SyncClient, list_id: Uuid) {
        client
            .connect(&self.sync_url(list_id).await)
            .await
            .expect("connect");
        wait_synced(client).await;
    }

    /// Stops the server gracefully and waits until it drained.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(done) = self.done.take() {
            done.await
                .expect("server thread")
                .expect("server stopped cleanly");
        }
    }

    /// Kills the server without draining, as a crash would: every task stops
    /// and every socket it held is cut.
    pub fn kill(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }

    /// Starts a replica on `database_url` relaying through the Redis at
    /// `redis_url`, after `configure` adjusted its configuration.
    pub async fn spawn_replica(
        database_url: &str,
        redis_url: &str,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        let redis_url = redis_url.to_owned();
        TestApp::spawn_with(database_url, move |config| {
            config.relay.redis_url = Some(redis_url);
            configure(config);
        })
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The token secret of every test server, so tests can mint tokens (e.g.
/// expired ones) the servers accept.
pub const TEST_JWT_SECRET: &str = "larder-test-secret-0123456789-larder-test-secret";
/// The password of every test account.
pub const TEST_PASSWORD: &str = "correct horse battery staple";

/// A signed-in test account.
#[derive(Debug, Clone)]
pub struct Account {
    pub user_id: Uuid,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl Account {
    fn from_session(body: &serde_json::Value, email: &str) -> Account {
        Account {
            user_id: json_uuid(&body["user"]["id"]),
            email: email.to_owned(),
            access_token: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh_token: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        }
    }
}

/// The owner of the lists tests open by id, and its family.
#[derive(Debug, Clone)]
pub struct Owner {
    pub account: Account,
    pub family_id: Uuid,
}

impl std::ops::Deref for Owner {
    type Target = Account;
    fn deref(&self) -> &Account {
        &self.account
    }
}

/// A UUID from a JSON string.
pub fn json_uuid(value: &serde_json::Value) -> Uuid {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a UUID: {value}"))
}

/// Waits for a client's first sync step 2.
pub async fn wait_synced(client: &SyncClient) {
    let mut status = client.status();
    tokio::time::timeout(Duration::from_secs(15), status.wait_for(|s| s.is_synced))
        .await
        .expect("synced within 15 s")
        .expect("status channel open");
}

/// Polls `check` until it holds; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until every client holds the same rows as the first; returns them.
pub async fn converge(clients: &[&SyncClient]) -> ListSnapshot {
    eventually("clients converge", Duration::from_secs(30), || async {
        let first = clients[0].snapshot();
        clients.iter().all(|c| c.snapshot() == first)
    })
    .await;
    clients[0].snapshot()
}

/// The list as stored (snapshot + tail), read back through larder-crdt.
pub async fn stored_snapshot(database_url: &str, list_id: Uuid) -> ListSnapshot {
    let database = larder_storage::Database::open(database_url, 2)
        .await
        .expect("open the database");
    let stored = database
        .store
        .load_doc(list_id)
        .await
        .expect("load stored list");
    let doc = Doc::new();
    larder_crdt::state::apply_stored(&doc, stored.updates()).expect("stored updates apply");
    let snapshot = ListDoc::new(&doc).read(&yrs::Transact::transact(&doc));
    database.close().await;
    snapshot
}

/// Waits until the stored list (snapshot + tail) reads as `expected`.
pub async fn wait_stored(database_url: &str, list_id: Uuid, expected: &ListSnapshot) {
    eventually(
        "the stored list matches",
        Duration::from_secs(10),
        || async { stored_snapshot(database_url, list_id).await == *expected },
    )
    .await;
}

/// The store of the database at `database_url` (PostgreSQL or SQLite).
pub async fn store(database_url: &str) -> Arc<dyn Store> {
    larder_storage::Database::open(database_url, 4)
        .await
        .expect("open the database")
        .store
}

/// A minimal HTTP/1.1 GET returning status and body; `None` when nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A new item with a fresh id.
pub fn new_item(name: &str) -> NewItem {
    NewItem {
        id: Uuid::new_v4().to_string(),
        name: name.to_owned(),
        quantity: Some("1".into()),
        category: None,
        note: None,
        position: larder_crdt::position::between(None, None),
        added_by: Some("tester".into()),
        added_at_ms: 1_700_000_000_000,
    }
}

/// Adds an item through the client; returns its id.
pub fn add_item(client: &SyncClient, name: &str) -> String {
    let item = new_item(name);
    client.edit(|txn| client.list().add_item(txn, &item).expect("valid item"));
    item.id
}

/// Changes fields of an item through the client.
pub fn patch_item(client: &SyncClient, id: &str, patch: &ItemPatch) {
    client.edit(|txn| {
        client
            .list()
            .update_item(txn, id, patch)
            .expect("item exists")
    });
}
