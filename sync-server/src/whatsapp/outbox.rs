//! The outbox worker: one per replica. It claims due share jobs (on
//! PostgreSQL with `FOR UPDATE SKIP LOCKED`, so exactly one replica sends
//! each; SQLite's one writer serialises claims), sends each as a text
//! message inside the vendor's 24-hour window or as the approved template
//! outside it, and records the outcome: sent (with the `wamid`), retried
//! with backoff, parked until a status webhook settles an unknown outcome,
//! or failed with a reason the family can read.
//!
//! Before every request the job is marked as started; a job found marked
//! (its worker timed out or died mid-request) is not sent again until
//! `unsure_wait` has passed without a status webhook for its share. The
//! version in the message text makes a rare duplicate harmless.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use larder_storage::outbox::{ClaimedJob, JobOutcome, MessageKind, Outbox};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::breaker::Breaker;
use super::client::{GraphClient, Message, SendError};
use super::config::{TemplateParam, WhatsAppConfig};
use super::policy::{self, Decision};
use crate::auth::tokens::TokenKeys;
use crate::snapshot::{Snapshot, short};

/// How often the outbox depth gauges are refreshed.
const DEPTH_EVERY: Duration = Duration::from_secs(5);

/// Starts the worker (or, with sends off, only the depth gauges).
pub fn spawn(
    outbox: Outbox,
    config: WhatsAppConfig,
    tokens: Arc<TokenKeys>,
    worker_id: String,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    config.check().map_err(|e| anyhow::anyhow!(e))?;
    let params = config.template_params().map_err(|e| anyhow::anyhow!(e))?;
    let client = match (&config.whatsapp_token, &config.whatsapp_phone_number_id) {
        (Some(token), Some(number_id)) => Some(GraphClient::new(
            &config.whatsapp_api_base,
            &config.whatsapp_api_version,
            number_id,
            token.clone(),
            config.request_timeout(),
        )?),
        _ => None,
    };
    let Some(client) = client else {
        tracing::warn!(
            "WhatsApp sending is off (set LARDER_WHATSAPP_TOKEN and \
             LARDER_WHATSAPP_PHONE_NUMBER_ID): shares stay pending"
        );
        tracker.spawn(watch_depth(outbox, shutdown));
        return Ok(());
    };
    if config.public_url().is_none() {
        tracing::warn!(
            "LARDER_PUBLIC_URL is not set: messages to vendors carry no link to the list"
        );
    }
    tracing::info!(api = %config.whatsapp_api_base, "WhatsApp outbox worker started");
    let worker = Worker {
        breaker: Breaker::new(config.whatsapp_breaker_failures, config.breaker_cooldown()),
        send_interval: Duration::from_secs(1) / config.whatsapp_sends_per_second.max(1),
        next_send: Instant::now(),
        outbox,
        client,
        config,
        params,
        tokens,
        worker_id,
    };
    tracker.spawn(worker.run(wake, shutdown));
    Ok(())
}

/// Only the depth gauges, when nothing is sent.
async fn watch_depth(outbox: Outbox, shutdown: CancellationToken) {
    loop {
        record_depth(&outbox).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(DEPTH_EVERY) => {}
        }
    }
}

async fn record_depth(outbox: &Outbox) {
    match outbox.outbox_depth().await {
        Ok(depth) => {
            metrics::gauge!("larder_outbox_depth").set(depth.jobs as f64);
            let age = depth
                .oldest
                .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            metrics::gauge!("larder_outbox_oldest_age_seconds").set(age);
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the outbox depth"),
    }
}

struct Worker {
    outbox: Outbox,
    client: GraphClient,
    config: WhatsAppConfig,
    params: Vec<TemplateParam>,
    /// Derives each share's page token for its link.
    tokens: Arc<TokenKeys>,
    worker_id: String,
    breaker: Breaker,
    /// Least time between two sends of this replica (the global rate).
    send_interval: Duration,
    next_send: Instant,
}

impl Worker {
    async fn run(mut self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut depth_at = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let now = Instant::now();
            if now >= depth_at {
                record_depth(&self.outbox).await;
                depth_at = now + DEPTH_EVERY;
            }
            metrics::gauge!("larder_whatsapp_breaker_state").set(self.breaker.state(now).gauge());
            if !self.breaker.allow(now) {
                let until = self.breaker.retry_at().unwrap_or(now + self.config.poll());
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(until) => {}
                }
                continue;
            }
            let claimed = self
                .outbox
                .claim_job(
                    &self.worker_id,
                    Utc::now(),
                    self.config.lease(),
                    self.config.vendor_interval(),
                )
                .await;
            match claimed {
                Ok(Some(job)) => {
                    if let Err(e) = self.handle(job).await {
                        tracing::warn!(error = %e, "cannot record a send; the job will be retried");
                    }
                    // A half-open trial that ended without an answer from
                    // the API (nothing sent, lease lost) is given back.
                    self.breaker.release_trial();
                }
                Ok(None) => {
                    // A claim that found nothing gives back an unneeded trial.
                    self.breaker.release_trial();
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(self.config.poll()) => {}
                    }
                }
                Err(e) => {
                    self.breaker.release_trial();
                    tracing::warn!(error = %e, "cannot claim outbox jobs; will try again");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.config.poll()) => {}
                    }
                }
            }
        }
    }

    async fn finish(&self, job: &ClaimedJob, outcome: JobOutcome) -> Result<(), sqlx::Error> {
        self.outbox.finish_job(job, &self.worker_id, &outcome).await
    }

    async fn handle(&mut self, job: ClaimedJob) -> Result<(), sqlx::Error> {
        let now = Utc::now();
        if job.share_status != "pending" {
            // A status webhook settled it meanwhile.
            self.breaker.release_trial();
            return self.finish(&job, JobOutcome::Done).await;
        }
        if job.vendor_deleted_at.is_some() {
            self.breaker.release_trial();
            return self
                .finish(
                    &job,
                    failed(None, "the vendor was deleted before the share was sent"),
                )
                .await;
        }
        if let Some(started) = job.request_started_at {
            let until = larder_storage::outbox::after(started, self.config.unsure_wait());
            if now < until {
                self.breaker.release_trial();
                let error = "waiting for WhatsApp to report whether the last send arrived";
                return self
                    .finish(
                        &job,
                        JobOutcome::Unsure {
                            until,
                            error: error.into(),
                        },
                    )
                    .await;
            }
        }
        if job.attempts > self.config.whatsapp_max_attempts as i32 {
            self.breaker.release_trial();
            let message = format!("gave up after {} attempts", job.attempts - 1);
            return self.finish(&job, failed(None, &message)).await;
        }
        let snapshot: Snapshot = match serde_json::from_str(&job.snapshot) {
            Ok(s) => s,
            Err(e) => {
                self.breaker.release_trial();
                let message = format!("the stored snapshot cannot be read: {e}");
                return self.finish(&job, failed(None, &message)).await;
            }
        };
        let link = self.link(job.share_id);
        let window_open = job.window_open_until.is_some_and(|until| until > now);
        let mut message = if window_open {
            Message::Text {
                body: snapshot.render_text(link.as_deref()),
            }
        } else {
            self.template(&snapshot, link.as_deref())
        };
        loop {
            self.pace().await;
            if !self
                .outbox
                .start_request(&job, &self.worker_id, self.config.vendor_interval())
                .await?
            {
                // The lease passed to another worker, or a webhook closed the job.
                return Ok(());
            }
            let kind = match message {
                Message::Text { .. } => MessageKind::Text,
                Message::Template { .. } => MessageKind::Template,
            };
            let result = self
                .client
                .send(&job.wa_number, &message, &job.share_id.to_string())
                .await;
            let error = match result {
                Ok(wamid) => {
                    self.breaker.success();
                    count(kind.as_str(), "sent", None);
                    tracing::info!(share_id = %job.share_id, %wamid, kind = kind.as_str(), "share sent");
                    return self.finish(&job, JobOutcome::Sent { wamid, kind }).await;
                }
                Err(e) => e,
            };
            let code = match &error {
                SendError::Api { code, .. } => *code,
                _ => None,
            };
            let decision = policy::decide(&error);
            let reason = policy::explain(&error);
            tracing::info!(share_id = %job.share_id, attempt = job.attempts, ?decision, error = %error, "send failed");
            let outcome = match decision {
                Decision::AsTemplate if kind == MessageKind::Text => {
                    self.breaker.success();
                    count(kind.as_str(), "as_template", code);
                    message = self.template(&snapshot, link.as_deref());
                    continue;
                }
                Decision::AsTemplate => {
                    self.breaker.success();
                    count(kind.as_str(), "failed", code);
                    failed(code, &reason)
                }
                Decision::Retry { min, api_down } => {
                    if api_down {
                        self.breaker.failure(Instant::now());
                    } else {
                        self.breaker.success();
                    }
                    count(kind.as_str(), "retry", code);
                    let wait = policy::backoff(job.attempts as u32, self.config.retry_base(), min);
                    JobOutcome::Retry {
                        at: larder_storage::outbox::after(Utc::now(), wait),
                        error: format!("{reason}; trying again"),
                    }
                }
                Decision::Unsure => {
                    self.breaker.failure(Instant::now());
                    count(kind.as_str(), "unsure", code);
                    JobOutcome::Unsure {
                        until: larder_storage::outbox::after(Utc::now(), self.config.unsure_wait()),
                        error: format!(
                            "{reason}; waiting for WhatsApp to report whether it arrived"
                        ),
                    }
                }
                Decision::Fail { alert } => {
                    self.breaker.success();
                    count(kind.as_str(), "failed", code);
                    if alert {
                        tracing::error!(
                            code,
                            "WhatsApp refused the server's credentials; check LARDER_WHATSAPP_TOKEN"
                        );
                    }
                    failed(code, &reason)
                }
            };
            return self.finish(&job, outcome).await;
        }
    }

    /// Waits for this replica's next send slot.
    async fn pace(&mut self) {
        let now = Instant::now();
        if self.next_send > now {
            tokio::time::sleep_until(self.next_send).await;
        }
        self.next_send = self.next_send.max(now) + self.send_interval;
    }

    /// The vendor's link to the share, on the configured public address.
    fn link(&self, share_id: uuid::Uuid) -> Option<String> {
        self.config
            .public_url()
            .map(|base| format!("{base}/s/{}", self.tokens.share_page_token(share_id)))
    }

    fn template(&self, snapshot: &Snapshot, link: Option<&str>) -> Message {
        let params = self
            .params
            .iter()
            .map(|p| {
                let value = match p {
                    TemplateParam::Family => snapshot.family.clone(),
                    TemplateParam::Count => snapshot.item_count.to_string(),
                    TemplateParam::List => {
                        snapshot.render_line(self.config.whatsapp_template_list_chars)
                    }
                    TemplateParam::Version => snapshot.version.clone(),
                    TemplateParam::Link => link.unwrap_or_default().to_owned(),
                    TemplateParam::ListName => snapshot.list_name.clone(),
                    TemplateParam::Note => snapshot.note.clone().unwrap_or_default(),
                };
                let max = match p {
                    TemplateParam::List => self.config.whatsapp_template_list_chars,
                    _ => MAX_PARAM_CHARS,
                };
                template_text(&value, max)
            })
            .collect();
        Message::Template {
            name: self.config.whatsapp_template.clone(),
            language: self.config.whatsapp_template_language.clone(),
            params,
        }
    }
}

/// Longest template parameter but the list (which has its own limit).
const MAX_PARAM_CHARS: usize = 200;

/// A template parameter: one line, no runs of spaces, at most `max_chars`
/// characters, never empty (the API refuses empty parameters).
fn template_text(value: &str, max_chars: usize) -> String {
    let line = short(value, max_chars);
    if line.is_empty() {
        "-".to_owned()
    } else {
        line
    }
}

fn failed(code: Option<i64>, message: &str) -> JobOutcome {
    JobOutcome::Failed {
        code: code.and_then(|c| i32::try_from(c).ok()),
        message: message.to_owned(),
    }
}

fn count(kind: &'static str, outcome: &'static str, code: Option<i64>) {
    let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
    metrics::counter!("larder_whatsapp_sends_total", "kind" => kind, "outcome" => outcome, "code" => code)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parameters_are_one_line_and_never_empty() {
        assert_eq!(template_text("a\nb\t c     d", 100), "a b c d");
        assert_eq!(template_text("  ", 100), "-");
        assert_eq!(template_text("abcdef", 4), "abc…");
    }
}
