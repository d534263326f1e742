//! A `redis-server` process of the test's own, which the test may stop and
//! start again on the same port (the shared Redis must never be killed).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Waits until the Redis at `url` answers PING.
pub async fn wait_until_answers(url: &str, limit: Duration) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(1), async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await;
        match attempt {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if tokio::time::Instant::now() > deadline => return Err(e.to_string()),
            Err(_) if tokio::time::Instant::now() > deadline => {
                return Err("no answer in time".into());
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A `redis-server` on a free local port, without persistence.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` (from PATH) and waits until it answers.
    pub async fn start() -> RedisServer {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("address").port()
        };
        let mut server = RedisServer { port, child: None };
        server.start_again().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would); its port stays free for a restart.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("this test starts its own redis-server, which must be on PATH");
        self.child = Some(child);
        wait_until_answers(&self.url(), Duration::from_secs(10))
            .await
            .expect("the test's redis-server answers");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
