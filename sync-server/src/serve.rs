//! Accepting connections. HTTP/1 through hyper with a timer, so the header
//! read timeout is in force (it also closes keep-alive connections left
//! idle), and caps on concurrent connections per process and per client
//! address: past them a connection gets a short 503 and is closed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How many refusals may be written at once; past that a connection over
/// the caps is dropped without an answer.
const REFUSALS_AT_ONCE: usize = 64;
const REFUSAL_WRITE_LIMIT: Duration = Duration::from_secs(1);

/// What the listener enforces.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time to read a request's headers, and the longest a keep-alive
    /// connection may sit idle between requests.
    pub header_timeout: Duration,
    /// Connections open at once in this process.
    pub max_connections: usize,
    /// Connections open at once from one client address (0: no cap, for a
    /// server behind a proxy where every connection comes from it).
    pub max_per_address: usize,
    /// How soon a peer that vanished without closing (a phone that lost
    /// its network) is noticed: TCP keepalive probes on an idle connection
    /// and a bound on unacknowledged data.
    pub dead_peer_after: Duration,
}

/// Open connections, in total and per address.
#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One accepted connection's place in the counts; released when the last
/// holder drops it. Requests carry it as an extension, so a WebSocket keeps
/// its connection counted after the upgrade.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<Slot>);

struct Slot {
    counts: Arc<Mutex<Counts>>,
    address: IpAddr,
}

impl Slot {
    fn take(counts: &Arc<Mutex<Counts>>, address: IpAddr, limits: &ServeLimits) -> Option<Slot> {
        let mut c = counts.lock().expect("connection counts lock poisoned");
        let mine = c.by_address.get(&address).copied().unwrap_or(0);
        if c.total >= limits.max_connections
            || (limits.max_per_address > 0 && mine >= limits.max_per_address)
        {
            return None;
        }
        c.total += 1;
        *c.by_address.entry(address).or_default() += 1;
        metrics::gauge!("larder_http_connections").set(c.total as f64);
        Some(Slot {
            counts: counts.clone(),
            address,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().expect("connection counts lock poisoned");
        c.total -= 1;
        if let Some(n) = c.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                c.by_address.remove(&self.address);
            }
        }
        metrics::gauge!("larder_http_connections").set(c.total as f64);
    }
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting and
/// lets open HTTP connections finish their request.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&counts, remote.ip(), &limits) else {
            metrics::counter!("larder_connections_refused_total").increment(1);
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(tcp).await;
                    drop(permit);
                });
            }
            continue;
        };
        tune(&tcp, limits.dead_peer_after);
        let router = router.clone();
        let shutdown = shutdown.clone();
        let slot = ConnectionSlot(Arc::new(slot));
        connections.spawn(serve_connection(
            tcp, remote, slot, router, limits, shutdown,
        ));
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    tcp: TcpStream,
    remote: SocketAddr,
    slot: ConnectionSlot,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        request.extensions_mut().insert(slot.clone());
        router.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
    }
}

/// Small frames go out at once: Nagle's algorithm meeting delayed ACKs would
/// hold a sync message back for tens of milliseconds. A peer gone silent is
/// noticed within `dead_peer_after`: keepalive probes start after 40 % of it
/// idle, one every 20 %, and the connection is dropped when two go
/// unanswered or data stays unacknowledged for all of it. Its socket then
/// closes, and its presence is removed for everyone else.
fn tune(tcp: &TcpStream, dead_peer_after: Duration) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot disable Nagle's algorithm");
    }
    let socket = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time((dead_peer_after * 2 / 5).max(Duration::from_secs(1)))
        .with_interval((dead_peer_after / 5).max(Duration::from_secs(1)))
        .with_retries(2);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
    if let Err(e) = socket.set_tcp_user_timeout(Some(dead_peer_after)) {
        tracing::debug!(error = %e, "cannot set the TCP user timeout");
    }
}

/// A short 503 for a connection over the caps, then close.
async fn refuse(mut tcp: TcpStream) {
    const BODY: &str = r#"{"error":{"code":"too_many_connections","message":"too many connections; retry shortly"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_LIMIT, async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_in_total_and_released() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let limits = ServeLimits {
            header_timeout: Duration::from_secs(1),
            max_connections: 3,
            max_per_address: 2,
            dead_peer_after: Duration::from_secs(5),
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = Slot::take(&counts, a, &limits).expect("first");
        let _second = Slot::take(&counts, a, &limits).expect("second");
        assert!(Slot::take(&counts, a, &limits).is_none(), "per address");
        let _third = Slot::take(&counts, b, &limits).expect("another address");
        assert!(Slot::take(&counts, b, &limits).is_none(), "in total");
        drop(first);
        assert!(Slot::take(&counts, a, &limits).is_some(), "released");
        let unlimited = ServeLimits {
            max_per_address: 0,
            max_connections: 100,
            ..limits
        };
        let many: Vec<_> = (0..50)
            .map(|_| Slot::take(&counts, a, &unlimited).expect("no per-address cap"))
            .collect();
        drop(many);
        assert_eq!(counts.lock().unwrap().by_address.get(&a), Some(&1));
    }
}
