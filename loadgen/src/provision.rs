//! Accounts and lists for a load run against Larder (`--api`): lists must
//! exist in a family of the connecting user, so the run signs up a fresh
//! account, creates a family, and creates every list it will open (with the
//! list's id) before connecting to it.

use anyhow::Context;
use serde_json::{Value, json};
use uuid::Uuid;

/// A signed-up account with a family.
#[derive(Debug, Clone)]
pub struct Provisioner {
    http: reqwest::Client,
    api: String,
    pub token: String,
    family: Uuid,
}

impl Provisioner {
    /// Signs up `loadgen-…@larder.test` on the server at `api`
    /// (`http://host:port`) and creates its family.
    pub async fn sign_up(api: &str) -> anyhow::Result<Provisioner> {
        // reqwest is built with rustls and no bundled crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let api = api.trim_end_matches('/').to_owned();
        let email = format!("loadgen-{}@larder.test", Uuid::new_v4().simple());
        let session = post(
            &http,
            &format!("{api}/v1/auth/signup"),
            None,
            json!({"email": email, "password": Uuid::new_v4().to_string(), "display_name": "Load generator"}),
        )
        .await
        .context("sign-up")?;
        let token = session["access_token"]
            .as_str()
            .context("no access token")?
            .to_owned();
        let family = post(
            &http,
            &format!("{api}/v1/families"),
            Some(&token),
            json!({"name": "Load"}),
        )
        .await
        .context("create family")?;
        let family = family["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .context("no family id")?;
        Ok(Provisioner {
            http,
            api,
            token,
            family,
        })
    }

    /// Creates the list `id` in the family.
    pub async fn create_list(&self, id: Uuid) -> anyhow::Result<()> {
        post(
            &self.http,
            &format!("{}/v1/families/{}/lists", self.api, self.family),
            Some(&self.token),
            json!({"name": "Load", "id": id}),
        )
        .await
        .with_context(|| format!("create list {id}"))?;
        Ok(())
    }
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
    Ok(body)
}
