//! A fake WhatsApp Cloud API (the Graph API's send endpoint) over real
//! HTTP on a random port: it records every request and answers each as
//! scripted — success, any error code, a slow answer, or a connection
//! dropped without an answer — plus signed webhook deliveries as Meta
//! sends them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::time::Instant;
use uuid::Uuid;

/// The phone number id the fake serves.
pub const PHONE_NUMBER_ID: &str = "1055500001";
/// The access token the fake expects.
pub const TOKEN: &str = "test-whatsapp-token";
/// The app secret webhook deliveries are signed with.
pub const APP_SECRET: &str = "test-app-secret";
/// The webhook verify token.
pub const VERIFY_TOKEN: &str = "test-verify-token";
/// The public address vendor links point to.
pub const PUBLIC_URL: &str = "https://larder.test";

/// How the fake answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 with a fresh `wamid`.
    Accept,
    /// An error body with `code`, under `http` status.
    Error { http: u16, code: i64 },
    /// Accepts, but answers only after a while (a client that times out
    /// first cannot know it was sent).
    Slow(Duration),
    /// Reads the request and closes the connection without an answer.
    Drop,
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    /// The `wamid` answered, when accepted.
    pub wamid: Option<String>,
}

impl Recorded {
    /// `text` or `template`.
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }

    /// The share id the server put in the callback data.
    pub fn share_id(&self) -> Uuid {
        Uuid::parse_str(self.body["biz_opaque_callback_data"].as_str().unwrap_or(""))
            .expect("the callback data is a share id")
    }

    pub fn to(&self) -> &str {
        self.body["to"].as_str().unwrap_or("")
    }

    /// The text body, or the template's parameters joined by ` | `.
    pub fn content(&self) -> String {
        match self.kind() {
            "text" => self.body["text"]["body"].as_str().unwrap_or("").to_owned(),
            _ => self.template_params().join(" | "),
        }
    }

    pub fn template_params(&self) -> Vec<String> {
        self.body["template"]["components"][0]["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["text"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    requests: Vec<Recorded>,
    next_id: u64,
}

/// The fake API.
#[derive(Clone)]
pub struct FakeGraph {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl FakeGraph {
    pub async fn start() -> FakeGraph {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let fake = FakeGraph { addr, inner };
        let served = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let fake = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let fake = fake.clone();
                        async move { fake.answer(request).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        fake
    }

    /// The base URL to configure (`LARDER_WHATSAPP_API_BASE`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers for the next requests, in order; then it accepts.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().expect("fake lock").script.extend(answers);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().expect("fake lock").requests.clone()
    }

    /// Waits until `n` requests arrived (panics after `limit`).
    pub async fn wait_requests(&self, n: usize, limit: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.requests();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} requests to the WhatsApp API, got {}: {:#?}",
                seen.len(),
                seen.iter()
                    .map(|r| (r.kind().to_owned(), r.to().to_owned()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn answer(
        &self,
        request: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<Body>, std::io::Error> {
        let path = request.uri().path().to_owned();
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(Body::new(request.into_body()), 1024 * 1024)
            .await
            .map_err(std::io::Error::other)?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let (answer, index) = {
            let mut inner = self.inner.lock().expect("fake lock");
            let answer = inner.script.pop_front().unwrap_or(Answer::Accept);
            inner.requests.push(Recorded {
                at: Instant::now(),
                path: path.clone(),
                authorization: authorization.clone(),
                body,
                wamid: None,
            });
            (answer, inner.requests.len() - 1)
        };
        let expected_path = format!("/v25.0/{PHONE_NUMBER_ID}/messages");
        if path != expected_path || authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return Ok(json_response(
                401,
                json!({"error": {"message": "bad path or token", "type": "OAuthException", "code": 190}}),
            ));
        }
        match answer {
            Answer::Accept => Ok(self.accept(index)),
            Answer::Slow(wait) => {
                // Accepted at once (a client that gives up still sent it);
                // only the answer is late.
                let response = self.accept(index);
                tokio::time::sleep(wait).await;
                Ok(response)
            }
            Answer::Error { http, code } => Ok(json_response(
                http,
                json!({"error": {"message": format!("fake error {code}"), "type": "OAuthException",
                    "code": code, "error_data": {"details": "scripted by the test"},
                    "fbtrace_id": "AbCd"}}),
            )),
            Answer::Drop => Err(std::io::Error::other("dropped by the test")),
        }
    }

    fn accept(&self, index: usize) -> hyper::Response<Body> {
        let (wamid, to) = {
            let mut inner = self.inner.lock().expect("fake lock");
            inner.next_id += 1;
            let wamid = format!("wamid.FAKE{}", inner.next_id);
            let recorded = &mut inner.requests[index];
            recorded.wamid = Some(wamid.clone());
            (wamid, recorded.to().to_owned())
        };
        json_response(
            200,
            json!({"messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}]}),
        )
    }
}

fn json_response(status: u16, body: Value) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

/// Points `config` at `fake` with sends on and quick retries.
pub fn configure(config: &mut larder_server::Config, fake: &FakeGraph) {
    let w = &mut config.whatsapp;
    w.whatsapp_api_base = fake.base_url();
    w.whatsapp_api_version = "v25.0".into();
    w.whatsapp_phone_number_id = Some(PHONE_NUMBER_ID.into());
    w.whatsapp_token = Some(TOKEN.into());
    configure_webhook(config);
    let w = &mut config.whatsapp;
    w.whatsapp_retry_base_ms = 50;
    w.whatsapp_poll_ms = 50;
    w.whatsapp_request_timeout_ms = 2_000;
    w.whatsapp_vendor_interval_ms = 0;
    w.public_url = Some(PUBLIC_URL.into());
}

/// Sets the webhook's app secret and verify token only (sends stay off).
pub fn configure_webhook(config: &mut larder_server::Config) {
    config.whatsapp.whatsapp_app_secret = Some(APP_SECRET.into());
    config.whatsapp.whatsapp_verify_token = Some(VERIFY_TOKEN.into());
}

/// `X-Hub-Signature-256` of `body` under the app secret.
pub fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn delivery(value: Value) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-1",
        "changes": [{"field": "messages", "value": value}]}]})
}

/// A status delivery for `wamid`, with the share id as callback data.
pub fn status_delivery(wamid: &str, status: &str, share_id: Option<Uuid>, at: i64) -> Value {
    let mut s = json!({"id": wamid, "status": status, "timestamp": at.to_string(),
        "recipient_id": "447700900123",
        "conversation": {"id": "c1", "origin": {"type": "utility"}},
        "pricing": {"billable": true, "pricing_model": "PMP", "category": "utility"}});
    if let Some(id) = share_id {
        s["biz_opaque_callback_data"] = json!(id.to_string());
    }
    if status == "failed" {
        s["errors"] = json!([{"code": 131026, "title": "Message undeliverable",
            "error_data": {"details": "not on WhatsApp"}}]);
    }
    delivery(json!({"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000001", "phone_number_id": PHONE_NUMBER_ID},
        "statuses": [s]}))
}

/// A text message from `from` to the business number.
pub fn message_delivery(from: &str, wamid: &str, text: &str, at: i64) -> Value {
    delivery(json!({"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000001", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Raj"}, "wa_id": from}],
        "messages": [{"from": from, "id": wamid, "timestamp": at.to_string(),
            "type": "text", "text": {"body": text}}]}))
}

/// A family with a list on a server of its own, and the calls sharing
/// tests make.
pub struct SharingFamily {
    pub app: crate::TestApp,
    pub owner: crate::Account,
    pub family: Uuid,
    pub list: Uuid,
    pub db: crate::TestDatabase,
}

impl SharingFamily {
    /// A server on `db` configured by `configure`, an owner, a family
    /// ("The Smiths") and a list ("Weekly shop").
    pub async fn start(
        db: crate::TestDatabase,
        configure: impl FnOnce(&mut larder_server::Config),
    ) -> SharingFamily {
        let app = crate::TestApp::spawn_with(db.url(), configure).await;
        let owner = app.signup("owner").await;
        let family = app.create_family(&owner, "The Smiths").await;
        let list = app.create_list(&owner, family, "Weekly shop").await;
        SharingFamily {
            app,
            owner,
            family,
            list,
            db,
        }
    }

    /// A request as the owner to this family's server.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_on(&self.app, method, path, body).await
    }

    /// A request as the owner to `app` (another replica).
    pub async fn call_on(
        &self,
        app: &crate::TestApp,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        app.call(method, path, Some(&self.owner.access_token), body)
            .await
    }

    pub async fn vendor(&self, name: &str, number: &str) -> Uuid {
        let (status, body) = self
            .call(
                "POST",
                &format!("/v1/families/{}/vendors", self.family),
                Some(json!({"name": name, "whatsapp_number": number})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        crate::json_uuid(&body["id"])
    }

    /// Adds an item (a new version of the list).
    pub async fn item(&self, body: Value) -> Uuid {
        let (status, created) = self
            .call(
                "POST",
                &format!("/v1/lists/{}/items", self.list),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        crate::json_uuid(&created["id"])
    }

    pub async fn try_share_on(&self, app: &crate::TestApp, vendor: Uuid) -> (u16, Value) {
        self.call_on(
            app,
            "POST",
            &format!("/v1/lists/{}/shares", self.list),
            Some(json!({"vendor_id": vendor})),
        )
        .await
    }

    pub async fn try_share(&self, vendor: Uuid) -> (u16, Value) {
        self.try_share_on(&self.app, vendor).await
    }

    /// Shares the list with `vendor` through `app`; the new share's id.
    pub async fn share_on(&self, app: &crate::TestApp, vendor: Uuid) -> Uuid {
        let (status, body) = self.try_share_on(app, vendor).await;
        assert_eq!(status, 201, "{body}");
        crate::json_uuid(&body["id"])
    }

    pub async fn share(&self, vendor: Uuid) -> Uuid {
        self.share_on(&self.app, vendor).await
    }

    pub async fn get_share(&self, id: Uuid) -> Value {
        let (status, body) = self.call("GET", &format!("/v1/shares/{id}"), None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the share shows `status`; returns it.
    pub async fn wait_status(&self, id: Uuid, status: &str) -> Value {
        crate::eventually(
            &format!("share {id} becomes {status}"),
            Duration::from_secs(30),
            || async { self.get_share(id).await["status"] == status },
        )
        .await;
        self.get_share(id).await
    }

    /// Posts `body` to the webhook with `signature`, if any.
    pub async fn webhook(&self, body: &[u8], signature: Option<&str>) -> (u16, String) {
        let mut request = self
            .app
            .http()
            .post(self.app.url("/v1/webhooks/whatsapp"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let response = request.send().await.expect("webhook sent");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// Delivers a signed webhook; it must be taken.
    pub async fn deliver(&self, delivery: &Value) {
        let body = delivery.to_string();
        let (status, answer) = self
            .webhook(body.as_bytes(), Some(&signature(body.as_bytes())))
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    /// Shares with a fresh vendor and waits until the API saw it: every
    /// request due before it has been made by then. The requests before it.
    pub async fn marker(&self, fake: &FakeGraph, number: &str) -> Vec<Recorded> {
        let vendor = self.vendor("Marker", number).await;
        let marker = self.share(vendor).await;
        crate::eventually(
            "the marker share is sent",
            Duration::from_secs(30),
            || async { fake.requests().iter().any(|r| r.share_id() == marker) },
        )
        .await;
        fake.requests()
            .into_iter()
            .filter(|r| r.share_id() != marker)
            .collect()
    }
}
