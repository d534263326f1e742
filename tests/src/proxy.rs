//! A TCP proxy a test controls: put it between a replica and Redis or
//! PostgreSQL, then cut the connection and restore it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to a target until cut.
pub struct TcpProxy {
    pub addr: SocketAddr,
    is_cut: Arc<AtomicBool>,
    /// Bumped on every cut: live connections end when it changes.
    cuts: watch::Sender<u64>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free local port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let is_cut = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel(0u64);
        let accept_task = tokio::spawn(accept_loop(listener, target, is_cut.clone(), cuts.clone()));
        TcpProxy {
            addr,
            is_cut,
            cuts,
            accept_task,
        }
    }

    /// Closes every forwarded connection and refuses new ones (they are
    /// accepted and closed at once, like a peer that went away).
    pub fn cut(&self) {
        self.is_cut.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.is_cut.store(false, Ordering::SeqCst);
    }

    /// `url` (e.g. `redis://127.0.0.1:6379/`) with its host and port
    /// replaced by the proxy's.
    pub fn rewrite_url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let userinfo = authority
            .rfind('@')
            .map(|at| &authority[..=at])
            .unwrap_or("");
        format!("{scheme}://{userinfo}{}{path}", self.addr)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    is_cut: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if is_cut.load(Ordering::SeqCst) {
            drop(inbound);
            continue;
        }
        let mut cut = cuts.subscribe();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            let mut inbound = inbound;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.changed() => {}
            }
            // Both sockets drop here: each side sees the connection end.
        });
    }
}

/// The `host:port` of a URL whose host is an IP address (a database URL),
/// to put a proxy in front of.
pub fn socket_addr_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("URL").1;
    let authority = rest.split('/').next().expect("authority");
    let host_port = authority.rsplit('@').next().expect("host");
    host_port.parse().expect("host:port of an IP address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_rewritten_to_the_proxy() {
        let target = "127.0.0.1:9".parse().expect("address");
        let proxy = TcpProxy::start(target).await;
        let port = proxy.addr.port();
        assert_eq!(
            proxy.rewrite_url("redis://127.0.0.1:6379"),
            format!("redis://127.0.0.1:{port}")
        );
        assert_eq!(
            proxy.rewrite_url("postgres://postgres@127.0.0.1:5432/db_x"),
            format!("postgres://postgres@127.0.0.1:{port}/db_x")
        );
    }
}
