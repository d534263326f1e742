//! The real `larder` binary as a child process, so a test can attack it and
//! see an abort as what it is: the process gone, not a crashed test runner.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{TEST_JWT_SECRET, TestApp, eventually, http_get};

/// A `larder serve` process on a free port; killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    _data_dir: TempDir,
}

impl ServerProcess {
    /// Starts `binary serve` on `database_url` with extra `flags`, and waits
    /// until it is ready.
    pub async fn start(binary: &str, database_url: &str, flags: &[&str]) -> ServerProcess {
        let addr = free_port();
        let data_dir = TempDir::new();
        let child = Command::new(binary)
            .arg("serve")
            .args(flags)
            .env("DATABASE_URL", database_url)
            .env("LARDER_LISTEN", addr.to_string())
            .env("LARDER_JWT_SECRET", TEST_JWT_SECRET)
            .env("LARDER_DATA_DIR", data_dir.path())
            .env("LARDER_AUTH_PER_MINUTE", "100000")
            .env("LARDER_LOGIN_PER_MINUTE", "100000")
            .env("LARDER_WRITES_PER_MINUTE", "1000000")
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        ServerProcess::ready(child, addr, data_dir).await
    }

    /// Starts `binary serve --listen ADDR` as the README runs it: in
    /// `working_dir`, with no database, relay or secret configured (every
    /// `DATABASE_URL`, `REDIS_URL` and `LARDER_*` variable removed).
    pub async fn start_zero_config(binary: &str, working_dir: &Path) -> ServerProcess {
        let addr = free_port();
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .current_dir(working_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text == "DATABASE_URL"
                || name_text == "REDIS_URL"
                || name_text.starts_with("LARDER_")
            {
                command.env_remove(&name);
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        ServerProcess::ready(child, addr, TempDir::new()).await
    }

    async fn ready(child: Child, addr: SocketAddr, data_dir: TempDir) -> ServerProcess {
        let mut server = ServerProcess {
            child,
            addr,
            _data_dir: data_dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(server.is_running(), "the server exited during start-up");
            if http_get(addr, "/readyz")
                .await
                .is_some_and(|(status, _)| status == 200)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server was not ready within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// A [`TestApp`] speaking to this process (accounts, lists, clients).
    pub fn app(&self, database_url: &str) -> TestApp {
        TestApp::attach(self.addr, database_url)
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS in /proc status")
    }

    /// Waits until `/healthz` answers 200, failing if the process died.
    pub async fn assert_healthy(&mut self, after: &str) {
        assert!(self.is_running(), "the server died after {after}");
        eventually(
            &format!("/healthz answers 200 after {after}"),
            Duration::from_secs(10),
            || async {
                http_get(self.addr, "/healthz")
                    .await
                    .is_some_and(|(status, _)| status == 200)
            },
        )
        .await;
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    probe.local_addr().expect("bound address")
}

/// A directory removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("larder-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
