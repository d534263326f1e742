//! The README's run command on a machine with no PostgreSQL and no Redis:
//! `larder serve` with nothing configured keeps its data in
//! `./larder-data/larder.db`, relays in process, keeps acknowledged edits
//! across a crash, and an unmodified JavaScript Yjs client syncs with it.

use larder_tests::interop::run_interop;
use larder_tests::process::{ServerProcess, TempDir};
use larder_tests::*;
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_larder");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zero_configuration_server_keeps_lists_across_a_crash_and_serves_yjs_clients() {
    let home = TempDir::new();
    let database_url = format!(
        "sqlite://{}",
        home.path().join("larder-data/larder.db").display()
    );
    let server = ServerProcess::start_zero_config(BINARY, home.path()).await;
    assert!(
        home.path().join("larder-data/larder.db").exists(),
        "the database file is created on first start"
    );
    let app = server.app(&database_url);
    let list = Uuid::new_v4();
    let client = app.connect(list).await;
    let milk = add_item(&client, "Milk");
    let before = client.snapshot();
    wait_stored(&database_url, list, &before).await;
    drop(client);

    // A crash (SIGKILL), then the same command in the same folder.
    drop(server);
    let server = ServerProcess::start_zero_config(BINARY, home.path()).await;
    let app = server.app(&database_url);
    // The owner signs in again and opens the list.
    let again = app.connect(list).await;
    assert_eq!(again.snapshot(), before, "the list survived the crash");
    assert!(again.snapshot().items.iter().any(|i| i.id == milk));

    // Unmodified yjs + y-websocket clients against the same server.
    run_interop(&database_url, &app, &app).await;
    drop(server);
}

/// `larder serve` with `env` set, expected to fail: its exit status and stderr.
fn failed_start(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let home = TempDir::new();
    let output = std::process::Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(home.path())
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .envs(env.iter().copied())
        .env("RUST_LOG", "off")
        .output()
        .expect("run the server");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn start_up_failures_are_one_readable_line() {
    let (status, stderr) =
        failed_start(&[("DATABASE_URL", "mysql://root:secret@127.0.0.1/larder")]);
    assert_eq!(status, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unsupported database URL"), "{stderr}");
    assert!(
        stderr.contains("sqlite://") && stderr.contains("postgres://"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "the password is not shown: {stderr}"
    );

    // Nothing listens on port 9 of loopback.
    let (status, stderr) =
        failed_start(&[("DATABASE_URL", "postgres://postgres@127.0.0.1:9/larder")]);
    assert_eq!(status, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach PostgreSQL"), "{stderr}");

    let (status, stderr) = failed_start(&[("DATABASE_URL", "sqlite::memory:")]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("in-memory"), "{stderr}");

    let (status, stderr) = failed_start(&[("LARDER_MAX_CONNECTIONS", "many")]);
    assert_eq!(status, Some(2), "clap's usage error: {stderr}");
    assert!(stderr.contains("--max-connections"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_installation_moves_to_postgresql_with_export_and_import() {
    let home = TempDir::new();
    let sqlite_url = format!(
        "sqlite://{}",
        home.path().join("larder-data/larder.db").display()
    );
    let server = ServerProcess::start_zero_config(BINARY, home.path()).await;
    let app = server.app(&sqlite_url);
    let list = Uuid::new_v4();
    let client = app.connect(list).await;
    for name in ["Milk", "Bread", "Eggs"] {
        add_item(&client, name);
    }
    let before = client.snapshot();
    wait_stored(&sqlite_url, list, &before).await;
    drop(client);
    drop(server);

    let larder = |args: &[&str], database_url: Option<&str>| {
        let mut command = std::process::Command::new(BINARY);
        command
            .args(args)
            .current_dir(home.path())
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn");
        if let Some(url) = database_url {
            command.env("DATABASE_URL", url);
        }
        let output = command.output().expect("run larder");
        assert!(
            output.status.success(),
            "larder {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let file = home.path().join("larder-export.jsonl");
    let file = file.to_str().expect("UTF-8 path");
    larder(&["export", "--output", file], None);
    let postgres = TestDatabase::postgres().await;
    larder(&["import", "--input", file], Some(postgres.url()));

    // The same list, by the same id, for the same account, now on PostgreSQL.
    let app = TestApp::spawn(postgres.url()).await;
    let again = app.connect(list).await;
    assert_eq!(again.snapshot(), before);
    let moved = stored_snapshot(postgres.url(), list).await;
    assert_eq!(moved, before);
    // And it goes on: a new edit gets the next sequence.
    add_item(&again, "Butter");
    wait_stored(postgres.url(), list, &again.snapshot()).await;
    app.stop().await;
}
