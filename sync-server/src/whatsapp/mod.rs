//! Sending lists to vendors over the WhatsApp Business Cloud API
//! (WHATSAPP.md): configuration, the API client, what to do after each
//! error code, the circuit breaker, the outbox worker that sends shares,
//! and the webhook deliveries that report back.

pub mod breaker;
pub mod client;
pub mod config;
pub mod outbox;
pub mod policy;
pub mod webhook;

pub use config::WhatsAppConfig;
