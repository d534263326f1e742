//! The web app (`web/`) in a real Chromium against a real server: two
//! family members sign up, share a list, edit it together, one goes
//! offline, reloads and edits, and both converge. The browser script
//! (`web/tests/e2e.mjs`) asks this test to look in the database when the
//! app says "Saved", so the indicator is checked against what is stored.
//! A second scenario lets access tokens expire in seconds (refresh, and
//! the socket's 4440) and removes a member (4403, no reconnecting); a third
//! sends a list to a vendor through a fake WhatsApp API, follows the share
//! to "delivered" and the vendor's reply, and orders from it.
//! Screenshots of the final screens land in `target/web-screenshots/`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::sync::Arc;

use larder_tests::whatsapp::{self, FakeGraph};
use larder_tests::*;
use uuid::Uuid;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn chromium() -> String {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "Chromium is required at {path} (scripts/test-deps.sh installs Debian's package)"
    );
    path
}

/// What the browser script's checks may look at.
struct Env {
    database_url: String,
    app_url: String,
    http: reqwest::Client,
    /// The fake WhatsApp API, in the vendor scenario.
    graph: Option<Arc<FakeGraph>>,
}

/// Answers one `CHECK` line of the browser script: from the database, or
/// (`shared`) by playing WhatsApp: the message to that number is reported
/// delivered and the vendor replies.
async fn check(env: &Env, line: &str) -> Result<(), String> {
    let words: Vec<&str> = line.split(' ').collect();
    let [_, what, list, name] = words.as_slice() else {
        return Err(format!("cannot read {line:?}"));
    };
    let list: Uuid = list
        .parse()
        .map_err(|_| format!("bad list id in {line:?}"))?;
    let stored = stored_snapshot(&env.database_url, list).await;
    let has = stored.items.iter().any(|i| i.name == *name);
    match *what {
        "stored" if has => Ok(()),
        "stored" => Err(format!("{name} is not in the database")),
        "absent" if !has => Ok(()),
        "absent" => Err(format!("{name} is in the database")),
        "ordered"
            if stored
                .orders
                .iter()
                .any(|o| o.status.as_str() == *name && o.share_id.is_some()) =>
        {
            Ok(())
        }
        "ordered" => Err(format!("no {name} order from a share: {:?}", stored.orders)),
        "shared" => {
            let graph = env.graph.as_ref().ok_or("no fake WhatsApp API")?;
            let sent = graph
                .requests()
                .into_iter()
                .rfind(|r| r.to() == *name && r.wamid.is_some())
                .ok_or_else(|| format!("nothing was sent to {name}"))?;
            let now = chrono::Utc::now().timestamp();
            let wamid = sent.wamid.clone().expect("accepted");
            for delivery in [
                whatsapp::status_delivery(&wamid, "delivered", Some(sent.share_id()), now),
                whatsapp::message_delivery(name, "wamid.reply-1", "Yes, all in stock", now),
            ] {
                let body = delivery.to_string();
                let answer = env
                    .http
                    .post(format!("{}/v1/webhooks/whatsapp", env.app_url))
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", whatsapp::signature(body.as_bytes()))
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if answer.status() != 200 {
                    return Err(format!("the webhook answered {}", answer.status()));
                }
            }
            Ok(())
        }
        _ => Err(format!("unknown check {what}")),
    }
}

/// Runs a scenario of the browser script against a server configured by
/// `configure`; returns how many database checks it asked for.
async fn run_scenario(
    scenario: &str,
    graph: Option<Arc<FakeGraph>>,
    configure: impl FnOnce(&mut larder_server::Config),
) -> usize {
    let web = repo().join("web");
    assert!(
        web.join("dist/index.html").is_file(),
        "the web app is not built: npm ci --prefix web && npm run build --prefix web \
         (scripts/test-deps.sh does it)"
    );
    let chromium = chromium();
    let db = TestDatabase::create().await;
    let dist = web.join("dist");
    let app = TestApp::spawn_with(db.url(), move |c| {
        c.web_dir = dist;
        configure(c);
    })
    .await;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"));
    let shots = target.join("web-screenshots");

    let base = format!("http://{}", app.addr);
    let env = Env {
        database_url: db.url().to_owned(),
        app_url: base.clone(),
        http: app.http().clone(),
        graph,
    };
    let runtime = tokio::runtime::Handle::current();
    let scenario = scenario.to_owned();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("node")
            .arg(web.join("tests/e2e.mjs"))
            .current_dir(&web)
            .env("LARDER_URL", &base)
            .env("CHROMIUM", &chromium)
            .env("LARDER_SCREENSHOTS", &shots)
            .env("SCENARIO", &scenario)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs the browser script");
        let mut stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut done = false;
        let mut checks = 0;
        for line in stdout.lines() {
            let line = line.expect("a line of the browser script");
            if line.starts_with("CHECK ") {
                checks += 1;
                let answer = match runtime.block_on(check(&env, &line)) {
                    Ok(()) => "OK".to_owned(),
                    Err(why) => format!("FAIL {why}"),
                };
                writeln!(stdin, "{answer}").expect("answer the browser script");
            } else if line == "DONE" {
                done = true;
            }
        }
        let status = child.wait().expect("the browser script ends");
        (status, done, checks)
    })
    .await
    .expect("the browser thread");
    let (status, done, checks) = outcome;
    assert!(
        status.success() && done,
        "the browser script failed ({status}); its log is above"
    );
    app.stop().await;
    checks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_share_a_list_online_and_offline_in_chromium() {
    let checks = run_scenario("family", None, |_| {}).await;
    assert_eq!(checks, 4, "every database check was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_and_a_removed_member_is_told_in_chromium() {
    let checks = run_scenario("session", None, |c| c.auth.access_token_ttl_secs = 5).await;
    assert_eq!(checks, 1, "every database check was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_is_sent_to_a_vendor_followed_and_ordered_from_in_chromium() {
    let graph = Arc::new(FakeGraph::start().await);
    let fake = graph.clone();
    let checks = run_scenario("vendor", Some(graph), move |c| {
        whatsapp::configure(c, &fake)
    })
    .await;
    assert_eq!(checks, 2, "every check was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_served_with_its_caching_and_never_under_v1() {
    let built = larder_tests::sdk::DataDir::new();
    std::fs::create_dir_all(built.0.join("assets")).expect("assets folder");
    std::fs::write(
        built.0.join("index.html"),
        "<!doctype html><title>Larder</title>",
    )
    .expect("page");
    std::fs::write(built.0.join("assets/main-ABC123.js"), "console.log(1)").expect("bundle");
    std::fs::write(built.0.join("sw.js"), "// worker").expect("worker");
    // The build's gzipped twin (the content here only has to differ).
    std::fs::write(built.0.join("assets/main-ABC123.js.gz"), "gzipped").expect("twin");
    let db = TestDatabase::create().await;
    let dir = built.0.clone();
    let app = TestApp::spawn_with(db.url(), move |c| c.web_dir = dir).await;
    let get = |path: &str| app.http().get(app.url(path)).send();

    let page = get("/").await.expect("GET /");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-cache");
    assert!(page.text().await.unwrap().contains("<title>Larder</title>"));
    let bundle = get("/assets/main-ABC123.js").await.expect("GET bundle");
    assert_eq!(bundle.status(), 200);
    assert_eq!(
        bundle.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        bundle.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert_eq!(bundle.text().await.unwrap(), "console.log(1)");
    let gzipped = app
        .http()
        .get(app.url("/assets/main-ABC123.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("GET bundle, gzip");
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert_eq!(
        gzipped.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        get("/sw.js").await.unwrap().headers()["cache-control"],
        "no-cache"
    );
    assert_eq!(get("/nothing-here.js").await.unwrap().status(), 404);
    // Nothing outside the web folder is reachable, however the path is spelt.
    let secret = format!("larder-secret-{}", Uuid::new_v4().simple());
    let beside = built.0.parent().expect("a parent folder").join(&secret);
    std::fs::write(&beside, "the content of a file outside").expect("a file beside it");
    for path in [
        format!("/../{secret}"),
        format!("/%2e%2e/{secret}"),
        format!("/assets/..%2f..%2f{secret}"),
        format!("/..%5c{secret}"),
    ] {
        let answer = get(&path).await.expect("GET");
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        assert!(
            !body.contains("the content of a file outside"),
            "{path} answered {status} with the file"
        );
    }
    let _ = std::fs::remove_file(&beside);
    // The API's paths are never files, and stay JSON.
    let api = get("/v1/no-such-route").await.expect("GET /v1/...");
    assert_eq!(api.status(), 404);
    let body: serde_json::Value = api.json().await.expect("a JSON error");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert_eq!(get("/v1").await.unwrap().status(), 404);
    app.stop().await;

    // Without a build, every page says how to make one.
    let empty = larder_tests::sdk::DataDir::new();
    let dir = empty.0.clone();
    let app = TestApp::spawn_with(db.url(), move |c| c.web_dir = dir).await;
    let page = app.http().get(app.url("/")).send().await.expect("GET /");
    assert_eq!(page.status(), 503);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("npm run build --prefix web")
    );
    app.stop().await;
}
