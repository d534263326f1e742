//! The JavaScript `yjs` + `y-websocket` packages, unmodified, against
//! running servers (`tests/interop/interop.mjs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use uuid::Uuid;

use crate::{TestApp, add_item, eventually, wait_stored};

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Installs the locked npm packages when they are missing (CI installs
/// them up front; this keeps `cargo nextest run` alone sufficient).
fn ensure_node_packages() {
    let dir = interop_dir();
    if dir.join("node_modules/y-websocket").exists() && dir.join("node_modules/yjs").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .expect("the interop test needs Node.js and npm on PATH");
    assert!(status.success(), "npm ci in tests/interop failed");
}

/// Runs the Node script with its first JS client (and the Rust client) on
/// `first` and its second JS client on `second`.
pub async fn run_interop(database_url: &str, first: &TestApp, second: &TestApp) {
    tokio::task::spawn_blocking(ensure_node_packages)
        .await
        .expect("npm task");
    let list = Uuid::new_v4();
    let rust = first.connect(list).await;
    let from_rust = add_item(&rust, "From Rust");

    let server_a = format!("ws://{}/v1/sync", first.addr);
    let server_b = format!("ws://{}/v1/sync", second.addr);
    let token = first.owner().await.access_token.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("interop.mjs")
            .arg(&server_a)
            .arg(list.to_string())
            .arg(&server_b)
            .env("LARDER_TOKEN", &token)
            .current_dir(interop_dir())
            .output()
            .expect("the interop test needs Node.js on PATH")
    })
    .await
    .expect("node task");
    assert!(
        output.status.success(),
        "node interop failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let js_items: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("JSON items from node");
    assert!(
        js_items.contains_key(&from_rust),
        "the JS clients received the Rust client's item"
    );
    // Rust item + Milk + 40 concurrent + 30 offline + 1 while away.
    assert_eq!(js_items.len(), 73);

    let js_names: BTreeMap<String, String> = js_items
        .iter()
        .map(|(id, item)| {
            (
                id.clone(),
                item["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let rust_names = || -> BTreeMap<String, String> {
        rust.snapshot()
            .items
            .into_iter()
            .map(|i| (i.id, i.name))
            .collect()
    };
    eventually(
        "the Rust client holds what the JS clients hold",
        Duration::from_secs(10),
        || {
            let same = rust_names() == js_names;
            async move { same }
        },
    )
    .await;
    let shared = rust
        .snapshot()
        .items
        .into_iter()
        .find(|i| i.name == "Milk")
        .expect("the shared item");
    let js_shared = &js_items[&shared.id];
    assert_eq!(shared.quantity.as_deref(), js_shared["quantity"].as_str());
    assert_eq!(shared.note.as_deref(), Some("written offline"));
    let expected = rust.snapshot();
    wait_stored(database_url, list, &expected).await;
}
