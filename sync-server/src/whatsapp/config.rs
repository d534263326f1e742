//! Configuration of WhatsApp sending and its webhook. Secrets are
//! [`SecretString`]s: no formatting of the configuration can show them.

use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

/// Meta's Graph API host, where the Cloud API lives.
pub const GRAPH_API: &str = "https://graph.facebook.com";

/// WhatsApp Business Cloud API settings. With no token, nothing is sent:
/// shares stay pending and say why.
#[derive(Debug, Clone, Args)]
pub struct WhatsAppConfig {
    /// Base URL of the Graph API (tests point it at a local fake).
    #[arg(long, env = "LARDER_WHATSAPP_API_BASE", default_value = GRAPH_API)]
    pub whatsapp_api_base: String,

    /// Graph API version the requests are pinned to.
    #[arg(long, env = "LARDER_WHATSAPP_API_VERSION", default_value = "v25.0")]
    pub whatsapp_api_version: String,

    /// Id of the business phone number that sends (not the number itself).
    #[arg(long, env = "LARDER_WHATSAPP_PHONE_NUMBER_ID")]
    pub whatsapp_phone_number_id: Option<String>,

    /// Access token of the WhatsApp Business account. Unset: sends are off.
    #[arg(long, env = "LARDER_WHATSAPP_TOKEN", hide_env_values = true)]
    pub whatsapp_token: Option<SecretString>,

    /// App secret that signs webhook deliveries (`X-Hub-Signature-256`).
    /// Unset: webhook deliveries are refused.
    #[arg(long, env = "LARDER_WHATSAPP_APP_SECRET", hide_env_values = true)]
    pub whatsapp_app_secret: Option<SecretString>,

    /// Token Meta echoes when verifying the webhook subscription.
    #[arg(long, env = "LARDER_WHATSAPP_VERIFY_TOKEN", hide_env_values = true)]
    pub whatsapp_verify_token: Option<SecretString>,

    /// Name of the approved message template sent outside the 24-hour window.
    #[arg(long, env = "LARDER_WHATSAPP_TEMPLATE", default_value = "larder_list")]
    pub whatsapp_template: String,

    /// Language code of the template.
    #[arg(
        long,
        env = "LARDER_WHATSAPP_TEMPLATE_LANGUAGE",
        default_value = "en_US"
    )]
    pub whatsapp_template_language: String,

    /// What fills the template's body parameters {{1}}, {{2}}, ... in order,
    /// comma-separated: `family`, `count`, `list`, `version`, `link`,
    /// `list_name`, `note`.
    #[arg(
        long,
        env = "LARDER_WHATSAPP_TEMPLATE_PARAMS",
        default_value = "family,count,list"
    )]
    pub whatsapp_template_params: String,

    /// Longest rendered list in a template parameter, in characters (a
    /// template body holds at most 1024 with its text).
    #[arg(
        long,
        env = "LARDER_WHATSAPP_TEMPLATE_LIST_CHARS",
        default_value_t = 700
    )]
    pub whatsapp_template_list_chars: usize,

    /// Sends per second this replica makes at most.
    #[arg(long, env = "LARDER_WHATSAPP_SENDS_PER_SECOND", default_value_t = 20)]
    pub whatsapp_sends_per_second: u32,

    /// Least time between two messages to one vendor number (WhatsApp
    /// allows about one every 6 s).
    #[arg(
        long,
        env = "LARDER_WHATSAPP_VENDOR_INTERVAL_MS",
        default_value_t = 6_000
    )]
    pub whatsapp_vendor_interval_ms: u64,

    /// First retry delay; it doubles per attempt (with jitter) up to 10 min.
    #[arg(long, env = "LARDER_WHATSAPP_RETRY_BASE_MS", default_value_t = 2_000)]
    pub whatsapp_retry_base_ms: u64,

    /// Attempts before a share is given up as failed.
    #[arg(long, env = "LARDER_WHATSAPP_MAX_ATTEMPTS", default_value_t = 10)]
    pub whatsapp_max_attempts: u32,

    /// Timeout of one API request.
    #[arg(
        long,
        env = "LARDER_WHATSAPP_REQUEST_TIMEOUT_MS",
        default_value_t = 15_000
    )]
    pub whatsapp_request_timeout_ms: u64,

    /// After a request whose outcome is unknown (a timeout after it went
    /// out), how long to wait for a status webhook before sending again.
    #[arg(long, env = "LARDER_WHATSAPP_UNSURE_WAIT_SECS", default_value_t = 600)]
    pub whatsapp_unsure_wait_secs: u64,

    /// Consecutive failures of the API that open the circuit breaker.
    #[arg(long, env = "LARDER_WHATSAPP_BREAKER_FAILURES", default_value_t = 5)]
    pub whatsapp_breaker_failures: u32,

    /// How long the open breaker stops sending before one trial request.
    #[arg(
        long,
        env = "LARDER_WHATSAPP_BREAKER_COOLDOWN_MS",
        default_value_t = 30_000
    )]
    pub whatsapp_breaker_cooldown_ms: u64,

    /// How often the outbox looks for due jobs when nothing wakes it.
    #[arg(long, env = "LARDER_WHATSAPP_POLL_MS", default_value_t = 1_000)]
    pub whatsapp_poll_ms: u64,

    /// Shares one family may make in 24 hours (each may send a message
    /// from the business number).
    #[arg(long, env = "LARDER_SHARES_PER_FAMILY_PER_DAY", default_value_t = 100)]
    pub shares_per_family_per_day: u32,

    /// Lifetime of the vendor link sent with a share, in hours.
    #[arg(long, env = "LARDER_SHARE_LINK_HOURS", default_value_t = 168)]
    pub share_link_hours: u32,

    /// Public address of this server (`https://larder.example.org`), used
    /// in the links sent to vendors. Unset: taken from the request's Host.
    #[arg(long, env = "LARDER_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl WhatsAppConfig {
    /// Whether sends are on.
    pub fn sends_enabled(&self) -> bool {
        self.whatsapp_token.is_some() && self.whatsapp_phone_number_id.is_some()
    }

    /// Why sends are off, for a pending share.
    pub fn disabled_reason(&self) -> Option<&'static str> {
        match (&self.whatsapp_token, &self.whatsapp_phone_number_id) {
            (Some(_), Some(_)) => None,
            (None, _) => Some(
                "WhatsApp sending is not configured on this server (no LARDER_WHATSAPP_TOKEN); \
                 the share will be sent once it is",
            ),
            (Some(_), None) => Some(
                "WhatsApp sending is not configured on this server (no \
                 LARDER_WHATSAPP_PHONE_NUMBER_ID); the share will be sent once it is",
            ),
        }
    }

    /// The public address without a trailing `/`, when configured.
    pub fn public_url(&self) -> Option<String> {
        self.public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
    }

    /// Lifetime of vendor links, 1 hour to a year.
    pub fn share_link_hours(&self) -> i64 {
        i64::from(self.share_link_hours.clamp(1, 24 * 366))
    }

    /// Checks what start-up can check: the template parameters and the
    /// public address.
    pub fn check(&self) -> Result<(), String> {
        self.template_params()
            .map_err(|e| format!("LARDER_WHATSAPP_TEMPLATE_PARAMS: {e}"))?;
        if let Some(url) = self.public_url()
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!(
                "LARDER_PUBLIC_URL must start with https:// or http://, not {url:?}"
            ));
        }
        Ok(())
    }

    pub fn vendor_interval(&self) -> Duration {
        Duration::from_millis(self.whatsapp_vendor_interval_ms)
    }
    pub fn retry_base(&self) -> Duration {
        Duration::from_millis(self.whatsapp_retry_base_ms.max(1))
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.whatsapp_request_timeout_ms.max(100))
    }
    pub fn unsure_wait(&self) -> Duration {
        Duration::from_secs(self.whatsapp_unsure_wait_secs)
    }
    pub fn breaker_cooldown(&self) -> Duration {
        Duration::from_millis(self.whatsapp_breaker_cooldown_ms.max(1))
    }
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.whatsapp_poll_ms.max(10))
    }
    /// How long a claimed job is held: the request's timeout and then some,
    /// so a live worker never loses a job it is sending.
    pub fn lease(&self) -> Duration {
        self.request_timeout() * 4 + Duration::from_secs(30)
    }

    /// The template parameters, checked.
    pub fn template_params(&self) -> Result<Vec<TemplateParam>, String> {
        self.whatsapp_template_params
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(TemplateParam::parse)
            .collect()
    }

    /// The configuration as `key=value` pairs, secrets shown only as set
    /// or not.
    pub fn describe(&self) -> String {
        let set = |s: &Option<SecretString>| if s.is_some() { "set" } else { "unset" };
        format!(
            "whatsapp_api_base={} whatsapp_api_version={} whatsapp_phone_number_id={} \
             whatsapp_token={} whatsapp_app_secret={} whatsapp_verify_token={} \
             whatsapp_template={} whatsapp_template_language={} whatsapp_template_params={} \
             whatsapp_sends_per_second={} whatsapp_vendor_interval_ms={} public_url={}",
            self.whatsapp_api_base,
            self.whatsapp_api_version,
            self.whatsapp_phone_number_id.as_deref().unwrap_or("unset"),
            set(&self.whatsapp_token),
            set(&self.whatsapp_app_secret),
            set(&self.whatsapp_verify_token),
            self.whatsapp_template,
            self.whatsapp_template_language,
            self.whatsapp_template_params,
            self.whatsapp_sends_per_second,
            self.whatsapp_vendor_interval_ms,
            self.public_url.as_deref().unwrap_or("from the request"),
        )
    }
}

/// A value a template parameter is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateParam {
    Family,
    Count,
    List,
    Version,
    Link,
    ListName,
    Note,
}

impl TemplateParam {
    fn parse(name: &str) -> Result<TemplateParam, String> {
        Ok(match name {
            "family" => TemplateParam::Family,
            "count" => TemplateParam::Count,
            "list" => TemplateParam::List,
            "version" => TemplateParam::Version,
            "link" => TemplateParam::Link,
            "list_name" => TemplateParam::ListName,
            "note" => TemplateParam::Note,
            other => {
                return Err(format!(
                    "unknown template parameter {other:?}: use family, count, list, version, \
                     link, list_name or note"
                ));
            }
        })
    }
}
