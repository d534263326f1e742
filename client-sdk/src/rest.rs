//! The server's REST API as the SDK uses it, over whichever replica
//! answers: a replica that cannot be reached is skipped for the next.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a REST call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RestError {
    /// No replica answered (offline, or every server down).
    #[error("no server answered: {0}")]
    Network(String),
    /// A server answered with an error.
    #[error("{status}: {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

impl RestError {
    pub fn status(&self) -> Option<u16> {
        match self {
            RestError::Api { status, .. } => Some(*status),
            RestError::Network(_) => None,
        }
    }
}

/// A REST client of the server's replicas.
#[derive(Debug)]
pub(crate) struct Rest {
    http: reqwest::Client,
    servers: Vec<String>,
    /// The replica tried first: the last one that answered.
    current: AtomicUsize,
}

impl Rest {
    pub(crate) fn new(servers: Vec<String>) -> Rest {
        // reqwest is built with rustls and no bundled crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client with default TLS settings builds");
        Rest {
            http,
            servers: servers
                .into_iter()
                .map(|s| s.trim_end_matches('/').to_owned())
                .collect(),
            current: AtomicUsize::new(0),
        }
    }

    /// The replica to use now, then the others in turn.
    pub(crate) fn servers_from_current(&self) -> impl Iterator<Item = &str> {
        let n = self.servers.len();
        let first = self.current.load(Ordering::Relaxed);
        (0..n).map(move |i| self.servers[(first + i) % n].as_str())
    }

    /// Marks `server` as the one to try first from now on.
    pub(crate) fn prefer(&self, server: &str) {
        if let Some(i) = self.servers.iter().position(|s| s == server) {
            self.current.store(i, Ordering::Relaxed);
        }
    }

    /// Moves on to the next replica (the current one failed).
    pub(crate) fn skip_current(&self) {
        let n = self.servers.len().max(1);
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| Some((i + 1) % n));
    }

    /// Calls `method path` with an optional bearer token and JSON body.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&(dyn erased::Body + Sync)>,
    ) -> Result<T, RestError> {
        let mut last = RestError::Network("no server configured".into());
        let servers: Vec<String> = self.servers_from_current().map(str::to_owned).collect();
        for server in servers {
            let mut request = self.http.request(method.clone(), format!("{server}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_json());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    last = RestError::Network(format!("{server}: {e}"));
                    continue;
                }
            };
            let status = response.status();
            if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
                // A replica in trouble: the next may answer.
                last = api_error(status, response).await;
                continue;
            }
            self.prefer(&server);
            if !status.is_success() {
                return Err(api_error(status, response).await);
            }
            return response.json::<T>().await.map_err(|e| RestError::Api {
                status: status.as_u16(),
                code: "unreadable_response".into(),
                message: e.to_string(),
            });
        }
        Err(last)
    }
}

async fn api_error(status: StatusCode, response: reqwest::Response) -> RestError {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<Body>(&text) {
        Ok(body) => RestError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => RestError::Api {
            status: status.as_u16(),
            code: "http_error".into(),
            message: text.chars().take(200).collect(),
        },
    }
}

/// A JSON body of any type (so `call` takes bodies by reference).
pub(crate) mod erased {
    pub trait Body {
        fn to_json(&self) -> Vec<u8>;
    }

    impl<T: super::Serialize> Body for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("request bodies serialize")
        }
    }
}
