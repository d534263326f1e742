//! The real `larder-cli` binary against a real server: the README's
//! sample session (edit offline, sync, watch the count of edits not yet
//! on the server go to zero), and a process killed with SIGKILL while it
//! writes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use larder_tests::sdk::DataDir;
use larder_tests::*;
use uuid::Uuid;

const CLI: &str = env!("CARGO_BIN_EXE_larder-cli");

/// Runs the CLI; returns its stdout, panicking with stderr on failure.
async fn cli(dir: &Path, app: &TestApp, args: &[&str]) -> String {
    let dir = dir.to_owned();
    let server = format!("http://{}", app.addr);
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(CLI)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--server")
            .arg(&server)
            .args(&args)
            .env("LARDER_PASSWORD", TEST_PASSWORD)
            .output()
            .expect("run larder-cli");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "larder-cli {args:?} failed: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    })
    .await
    .expect("the CLI thread")
}

fn id_after(output: &str, prefix: &str) -> Uuid {
    output
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in {output:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_offline_then_online_and_a_killed_process() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let dir = DataDir::new();
    let email = format!("ann-{}@larder.test", Uuid::new_v4().simple());
    let out = cli(
        &dir.0,
        &app,
        &["signup", "--email", &email, "--name", "Ann"],
    )
    .await;
    assert!(out.contains("signed up as"), "{out}");
    let family = id_after(
        &cli(&dir.0, &app, &["new-family", "Smiths"]).await,
        "family ",
    );
    let out = cli(
        &dir.0,
        &app,
        &["new-list", "--family", &family.to_string(), "Weekly shop"],
    )
    .await;
    let list = id_after(&out, "list ");
    let list_arg = list.to_string();

    // Offline: the edits stay on this machine and are counted.
    let out = cli(
        &dir.0,
        &app,
        &["--offline", "add", &list_arg, "Milk", "Bread", "Eggs"],
    )
    .await;
    assert!(
        out.contains("kept on this machine; 3 edit(s) not yet on the server"),
        "{out}"
    );
    let out = cli(&dir.0, &app, &["--offline", "status"]).await;
    assert!(out.ends_with("3 edit(s) not yet on the server\n"), "{out}");
    assert!(stored_snapshot(db.url(), list).await.items.is_empty());

    // Online again: everything goes up and the count reaches zero.
    let out = cli(&dir.0, &app, &["sync"]).await;
    assert!(out.ends_with("0 edit(s) not yet on the server\n"), "{out}");
    let stored = stored_snapshot(db.url(), list).await;
    let names: Vec<&str> = stored.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["Milk", "Bread", "Eggs"]);
    let out = cli(&dir.0, &app, &["check", &list_arg, "milk"]).await;
    assert!(out.contains("stored on the server"), "{out}");
    let stored = stored_snapshot(db.url(), list).await;
    assert_eq!(stored.items[0].status, larder_crdt::ItemStatus::Purchased);
    let out = cli(&dir.0, &app, &["--offline", "show", &list_arg]).await;
    assert!(out.contains("[x] Milk"), "{out}");

    // A process killed (SIGKILL) in the middle of a run of edits.
    let names: Vec<String> = (0..2000).map(|n| format!("item-{n:04}")).collect();
    let mut child = Command::new(CLI)
        .arg("--data-dir")
        .arg(&dir.0)
        .args(["--offline", "add", &list_arg])
        .args(&names)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run larder-cli");
    let stdout = child.stdout.take().expect("stdout");
    let added = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut added = 0;
        while added < 50 {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("added ") => added += 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        added
    })
    .await
    .expect("the reader thread");
    assert_eq!(added, 50, "the process was killed before its 50th edit");

    let out = cli(&dir.0, &app, &["--offline", "show", &list_arg]).await;
    let kept: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("[ ] "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("item-"))
        .collect();
    assert!(kept.len() >= 50 && kept.len() < 2000, "{} kept", kept.len());
    assert_eq!(
        kept,
        names[..kept.len()],
        "a prefix of the edits, none half-made"
    );
    let out = cli(&dir.0, &app, &["sync"]).await;
    assert!(out.ends_with("0 edit(s) not yet on the server\n"), "{out}");
    assert_eq!(
        stored_snapshot(db.url(), list).await.items.len(),
        3 + kept.len()
    );
    app.stop().await;
}
