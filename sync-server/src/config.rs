//! Configuration: every setting is a flag and an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Larder: offline-first sync server for family grocery lists.
#[derive(Debug, Parser)]
#[command(name = "larder", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (applies migrations first).
    Serve(Box<Config>),
    /// Apply database migrations and exit.
    Migrate(DatabaseConfig),
    /// Write the whole installation (accounts, families, lists with their
    /// logs and snapshots, links) to a portable file. Stop the server first.
    Export(ExportArgs),
    /// Load a file written by `larder export` into an empty database (the
    /// way from the single-node default to PostgreSQL, or back).
    Import(ImportArgs),
}

/// `larder export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// The file to write; it must not exist yet.
    #[arg(long, short)]
    pub output: std::path::PathBuf,
}

/// `larder import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// A file written by `larder export`.
    #[arg(long, short)]
    pub input: std::path::PathBuf,
}

/// Everything `larder serve` takes.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LARDER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Log format: `pretty` for people, `json` for log collectors.
    #[arg(long, env = "LARDER_LOG_FORMAT", default_value = "pretty", value_parser = ["pretty", "json"])]
    pub log_format: String,

    /// The built web app (`npm run build --prefix web` writes `web/dist`),
    /// served at `/`. Without it, `/` says how to build it.
    #[arg(long, env = "LARDER_WEB_DIR", default_value = "web/dist")]
    pub web_dir: std::path::PathBuf,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub rooms: RoomSettings,

    #[command(flatten)]
    pub relay: RelayConfig,

    #[command(flatten)]
    pub auth: AuthConfig,

    #[command(flatten)]
    pub rate_limits: RateLimitConfig,

    #[command(flatten)]
    pub projector: ProjectorConfig,

    #[command(flatten)]
    pub whatsapp: crate::whatsapp::WhatsAppConfig,
}

impl Config {
    /// The defaults with another database, as tests and embedders want.
    pub fn with_database_url(url: &str) -> Config {
        let mut config =
            Config::try_parse_from_args(std::iter::empty::<String>()).expect("defaults parse");
        config.database.database_url = Some(url.to_owned());
        config
    }

    /// Parses `larder serve` arguments (without the program and subcommand).
    pub fn try_parse_from_args<I, S>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let argv = ["larder".to_owned(), "serve".to_owned()]
            .into_iter()
            .chain(args.into_iter().map(Into::into));
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(config) => Ok(*config),
            _ => unreachable!("the serve subcommand was given"),
        }
    }

    /// The effective configuration as one line, without secrets.
    pub fn describe(&self) -> String {
        format!(
            "listen={} web_dir={} database_url={} db_max_connections={} max_message_bytes={} max_doc_bytes={} \
             messages_per_second={} message_burst={} outbound_queue={} max_nesting={} max_update_clients={} \
             max_update_structs={} max_update_delete_ranges={} outbound_queue_bytes={} max_doc_structs={} \
             presence_clients_per_connection={} \
             presence_state_bytes={} presence_list_bytes={} http_header_timeout_secs={} max_connections={} \
             max_connections_per_address={} max_lists_per_socket={} dead_peer_secs={} linger_ms={} commit_window_ms={} \
             compaction_max_updates={} compaction_max_bytes={} keepalive_ms={} awareness_coalesce_ms={} \
             redis_url={} replica_id={} catchup_interval_ms={} gap_grace_ms={} jwt_secret={} data_dir={} \
             access_token_ttl_secs={} refresh_token_ttl_days={} invitation_ttl_hours={} access_recheck_secs={} \
             refresh_grace_secs={} read_only_link_max_hours={} auth_per_minute={} login_per_minute={} writes_per_minute={} trust_forwarded_for={} \
             projection_debounce_ms={} projection_max_delay_ms={} projection_scan_ms={} {}",
            self.listen,
            self.web_dir.display(),
            redact_url(&self.database.url()),
            self.database.db_max_connections,
            self.limits.max_message_bytes,
            self.limits.max_doc_bytes,
            self.limits.messages_per_second,
            self.limits.message_burst,
            self.limits.outbound_queue,
            self.limits.max_nesting,
            self.limits.max_update_clients,
            self.limits.max_update_structs,
            self.limits.max_update_delete_ranges,
            self.limits.outbound_queue_bytes,
            self.limits.max_doc_structs,
            self.limits.presence_clients_per_connection,
            self.limits.presence_state_bytes,
            self.limits.presence_list_bytes,
            self.limits.http_header_timeout_secs,
            self.limits.max_connections,
            self.limits.max_connections_per_address,
            self.limits.max_lists_per_socket,
            self.limits.dead_peer_secs,
            self.rooms.linger_ms,
            self.rooms.commit_window_ms,
            self.rooms.compaction_max_updates,
            self.rooms.compaction_max_bytes,
            self.rooms.keepalive_ms,
            self.rooms.awareness_coalesce_ms,
            self.relay
                .redis_url
                .as_deref()
                .map_or_else(|| "none (single replica)".to_owned(), redact_url),
            self.relay
                .replica_id
                .map_or_else(|| "random".to_owned(), |id| id.to_string()),
            self.relay.catchup_interval_ms,
            self.relay.gap_grace_ms,
            if self.auth.jwt_secret.is_some() {
                "configured"
            } else {
                "dev secret from the data directory"
            },
            self.database.data_dir.display(),
            self.auth.access_token_ttl_secs,
            self.auth.refresh_token_ttl_days,
            self.auth.invitation_ttl_hours,
            self.auth.access_recheck_secs,
            self.auth.refresh_grace_secs,
            self.auth.read_only_link_max_hours,
            self.rate_limits.auth_per_minute,
            self.rate_limits.login_per_minute,
            self.rate_limits.writes_per_minute,
            self.rate_limits.trust_forwarded_for,
            self.projector.projection_debounce_ms,
            self.projector.projection_max_delay_ms,
            self.projector.projection_scan_ms,
            self.whatsapp.describe(),
        )
    }
}

/// Where the data lives.
#[derive(Clone, Args)]
pub struct DatabaseConfig {
    /// Where the data lives: `sqlite://PATH` keeps everything in one file
    /// (one process; the file and its folder are created on first start),
    /// `postgres://USER@HOST/DATABASE` in PostgreSQL (replicas; the database
    /// is created if it does not exist).
    /// Unset: `sqlite://DATA_DIR/larder.db`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Folder for local state: the single-node database (unless
    /// `DATABASE_URL` names another) and the generated token secret.
    #[arg(long, env = "LARDER_DATA_DIR", default_value = "./larder-data")]
    pub data_dir: std::path::PathBuf,

    /// Most connections this process opens to PostgreSQL (with SQLite: read
    /// connections, at most 8, beside the one writer).
    #[arg(long, env = "LARDER_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("data_dir", &self.data_dir)
            .field("db_max_connections", &self.db_max_connections)
            .finish()
    }
}

impl DatabaseConfig {
    /// The database URL in effect: `DATABASE_URL`, else the SQLite file in
    /// the data folder.
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("larder.db").display()),
        }
    }
}

/// Limits that protect the server from any one client.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest WebSocket message accepted; larger closes with 4413.
    #[arg(long, env = "LARDER_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Largest document (encoded state) a list may grow to; an update that
    /// would pass it closes the socket with 4414.
    #[arg(long, env = "LARDER_MAX_DOC_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_doc_bytes: usize,

    /// Sustained messages per second one connection may send.
    #[arg(long, env = "LARDER_MESSAGES_PER_SECOND", default_value_t = 200)]
    pub messages_per_second: u32,

    /// Burst of messages one connection may send above the sustained rate;
    /// beyond it the socket closes with 4429.
    #[arg(long, env = "LARDER_MESSAGE_BURST", default_value_t = 1000)]
    pub message_burst: u32,

    /// Messages queued for one connection; a consumer that falls further
    /// behind is closed with 1013 and resyncs when it reconnects.
    #[arg(long, env = "LARDER_OUTBOUND_QUEUE", default_value_t = 512)]
    pub outbound_queue: usize,

    /// Deepest nesting of values (arrays and maps, JSON text) in what a
    /// client sends; deeper closes the socket with 4400.
    #[arg(long, env = "LARDER_MAX_NESTING", default_value_t = 32)]
    pub max_nesting: usize,

    /// Most writers (client ids) one update or state vector may name.
    #[arg(long, env = "LARDER_MAX_UPDATE_CLIENTS", default_value_t = 16_384)]
    pub max_update_clients: usize,

    /// Most structs one update may carry.
    #[arg(long, env = "LARDER_MAX_UPDATE_STRUCTS", default_value_t = 262_144)]
    pub max_update_structs: usize,

    /// Most deleted ranges one update may carry.
    #[arg(
        long,
        env = "LARDER_MAX_UPDATE_DELETE_RANGES",
        default_value_t = 262_144
    )]
    pub max_update_delete_ranges: usize,

    /// Structs (items and collected ranges) a list's document may hold:
    /// each costs yrs memory however few bytes it took; an update that
    /// would pass it closes the socket with 4414.
    #[arg(long, env = "LARDER_MAX_DOC_STRUCTS", default_value_t = 500_000)]
    pub max_doc_structs: usize,

    /// Bytes queued for one connection; a consumer that falls further
    /// behind is closed with 1013 (one frame larger than this still goes
    /// out alone).
    #[arg(long, env = "LARDER_OUTBOUND_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub outbound_queue_bytes: usize,

    /// Presence client ids one connection may announce; more closes it
    /// with 4400.
    #[arg(
        long,
        env = "LARDER_PRESENCE_CLIENTS_PER_CONNECTION",
        default_value_t = 8
    )]
    pub presence_clients_per_connection: usize,

    /// Bytes of one client's presence state; larger closes with 4413.
    #[arg(long, env = "LARDER_PRESENCE_STATE_BYTES", default_value_t = 8 * 1024)]
    pub presence_state_bytes: usize,

    /// Bytes of all presence states of one list; a connection that would
    /// pass it is closed with 1013.
    #[arg(long, env = "LARDER_PRESENCE_LIST_BYTES", default_value_t = 256 * 1024)]
    pub presence_list_bytes: usize,

    /// Seconds a client has to send a request's headers; also the longest
    /// a keep-alive connection may sit idle between requests.
    #[arg(long, env = "LARDER_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub http_header_timeout_secs: u64,

    /// Connections (HTTP and WebSocket) open at once in this process; more
    /// get 503.
    #[arg(long, env = "LARDER_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Connections open at once from one client address; more get 503.
    /// 0 turns the cap off (behind a proxy every connection comes from it).
    #[arg(
        long,
        env = "LARDER_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_connections_per_address: usize,

    /// Most lists one multiplexed socket (`GET /v1/sync`) subscribes at once.
    #[arg(long, env = "LARDER_MAX_LISTS_PER_SOCKET", default_value_t = 256)]
    pub max_lists_per_socket: usize,

    /// Seconds after which a peer that vanished without closing its
    /// connection (lost network) is noticed and its presence removed.
    #[arg(long, env = "LARDER_DEAD_PEER_SECS", default_value_t = 5)]
    pub dead_peer_secs: u64,
}

impl Limits {
    /// What the listener enforces.
    pub fn serve_limits(&self) -> crate::serve::ServeLimits {
        crate::serve::ServeLimits {
            header_timeout: Duration::from_secs(self.http_header_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
            max_per_address: self.max_connections_per_address,
            dead_peer_after: Duration::from_secs(self.dead_peer_secs.max(1)),
        }
    }

    /// The bounded checks every message a client sends passes before yrs
    /// decodes it.
    pub fn message_checks(&self) -> larder_crdt::validate::Limits {
        larder_crdt::validate::Limits {
            max_depth: self.max_nesting,
            max_clients: self.max_update_clients,
            max_structs: self.max_update_structs,
            max_delete_ranges: self.max_update_delete_ranges,
        }
    }
}

/// Timing of rooms (one per open list).
#[derive(Debug, Clone, Args)]
pub struct RoomSettings {
    /// How long an unused room stays loaded after its last connection leaves.
    #[arg(long, env = "LARDER_LINGER_MS", default_value_t = 5_000)]
    pub linger_ms: u64,

    /// Batches of all lists arriving within this window of the first are
    /// written in one transaction. Clients see each other's updates at once;
    /// the window delays only durable acknowledgements.
    #[arg(long, env = "LARDER_COMMIT_WINDOW_MS", default_value_t = 10)]
    pub commit_window_ms: u64,

    /// Fold the log into a snapshot once this many updates follow the last one.
    #[arg(long, env = "LARDER_COMPACTION_MAX_UPDATES", default_value_t = 500)]
    pub compaction_max_updates: u64,

    /// ... or once the updates after the last snapshot hold this many bytes.
    #[arg(long, env = "LARDER_COMPACTION_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub compaction_max_bytes: u64,

    /// Interval of keep-alive traffic to each connection (clients drop a
    /// connection after 30 s of silence).
    #[arg(long, env = "LARDER_KEEPALIVE_MS", default_value_t = 10_000)]
    pub keepalive_ms: u64,

    /// Presence updates within this window are sent as one message.
    #[arg(long, env = "LARDER_AWARENESS_COALESCE_MS", default_value_t = 30)]
    pub awareness_coalesce_ms: u64,
}

impl RoomSettings {
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }
    pub fn commit_window(&self) -> Duration {
        Duration::from_millis(self.commit_window_ms)
    }
    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms.max(100))
    }
    pub fn awareness_coalesce(&self) -> Duration {
        Duration::from_millis(self.awareness_coalesce_ms)
    }
}

/// How replicas reach each other.
#[derive(Clone, Args)]
pub struct RelayConfig {
    /// Redis URL of the relay between replicas. Unset: this process is the
    /// only replica and relays in memory.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// This replica's id in relayed envelopes and the update log (default:
    /// a fresh random id at every start).
    #[arg(long, env = "LARDER_REPLICA_ID")]
    pub replica_id: Option<uuid::Uuid>,

    /// How often every open list checks the log for updates the relay did
    /// not deliver.
    #[arg(long, env = "LARDER_CATCHUP_INTERVAL_MS", default_value_t = 3_000)]
    pub catchup_interval_ms: u64,

    /// How long a list waits for a missing relayed batch before reading it
    /// from the log.
    #[arg(long, env = "LARDER_GAP_GRACE_MS", default_value_t = 50)]
    pub gap_grace_ms: u64,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("replica_id", &self.replica_id)
            .field("catchup_interval_ms", &self.catchup_interval_ms)
            .field("gap_grace_ms", &self.gap_grace_ms)
            .finish()
    }
}

impl RelayConfig {
    pub fn catchup_interval(&self) -> Duration {
        Duration::from_millis(self.catchup_interval_ms.max(100))
    }
    pub fn gap_grace(&self) -> Duration {
        Duration::from_millis(self.gap_grace_ms)
    }
}

/// Timing of the projector (document -> relational rows).
#[derive(Debug, Clone, Args)]
pub struct ProjectorConfig {
    /// A changed list is projected once it has been quiet this long...
    #[arg(long, env = "LARDER_PROJECTION_DEBOUNCE_MS", default_value_t = 250)]
    pub projection_debounce_ms: u64,

    /// ... or at the latest this long after its first unprojected change.
    #[arg(long, env = "LARDER_PROJECTION_MAX_DELAY_MS", default_value_t = 2_000)]
    pub projection_max_delay_ms: u64,

    /// How often lists whose rows lag their log are looked for (and the
    /// lag metrics refreshed).
    #[arg(long, env = "LARDER_PROJECTION_SCAN_MS", default_value_t = 10_000)]
    pub projection_scan_ms: u64,
}

impl ProjectorConfig {
    pub fn settings(&self) -> crate::projector::ProjectorSettings {
        crate::projector::ProjectorSettings {
            debounce: Duration::from_millis(self.projection_debounce_ms),
            max_delay: Duration::from_millis(
                self.projection_max_delay_ms
                    .max(self.projection_debounce_ms),
            ),
            scan_interval: Duration::from_millis(self.projection_scan_ms.max(100)),
        }
    }
}

/// Accounts and tokens.
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// Secret signing access tokens (HS256), at least 32 bytes; every
    /// replica needs the same one. Unset: a secret is generated once and
    /// kept in the data directory (fine for one machine, logged as a warning).
    #[arg(long, env = "LARDER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<secrecy::SecretString>,

    /// Lifetime of access tokens; a socket open when its token expires is
    /// closed with 4440 so the client refreshes and reconnects.
    #[arg(long, env = "LARDER_ACCESS_TOKEN_TTL_SECS", default_value_t = 900)]
    pub access_token_ttl_secs: u64,

    /// Lifetime of refresh tokens.
    #[arg(long, env = "LARDER_REFRESH_TOKEN_TTL_DAYS", default_value_t = 30)]
    pub refresh_token_ttl_days: u64,

    /// Lifetime of family invitation codes.
    #[arg(long, env = "LARDER_INVITATION_TTL_HOURS", default_value_t = 72)]
    pub invitation_ttl_hours: u64,

    /// How often an open socket re-checks that its user may still see the
    /// list. Removals close sockets at once through the relay; this catches
    /// a revocation the relay lost.
    #[arg(long, env = "LARDER_ACCESS_RECHECK_SECS", default_value_t = 60)]
    pub access_recheck_secs: u64,

    /// Seconds within which a refresh token presented again (a lost
    /// response, two tabs) gets the same successor instead of revoking its
    /// sign-in.
    #[arg(long, env = "LARDER_REFRESH_GRACE_SECS", default_value_t = 30)]
    pub refresh_grace_secs: u64,

    /// Longest lifetime of a read-only (vendor) link, in hours; links are
    /// issued for 168 (a week) unless asked otherwise.
    #[arg(long, env = "LARDER_READ_ONLY_LINK_MAX_HOURS", default_value_t = 720)]
    pub read_only_link_max_hours: u32,
}

impl AuthConfig {
    pub fn refresh_grace(&self) -> Duration {
        Duration::from_secs(self.refresh_grace_secs)
    }
    pub fn access_token_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_secs.max(1))
    }
    pub fn refresh_token_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl_days.max(1) * 86_400)
    }
    pub fn access_recheck(&self) -> Duration {
        Duration::from_secs(self.access_recheck_secs.max(1))
    }
    pub fn invitation_ttl(&self) -> Duration {
        Duration::from_secs(self.invitation_ttl_hours.max(1) * 3_600)
    }
}

/// Request rate limits, held in Redis when `REDIS_URL` is set (shared by
/// all replicas), else in memory.
#[derive(Debug, Clone, Args)]
pub struct RateLimitConfig {
    /// Requests per minute one IP address may make to the account routes
    /// (sign-up, login, refresh, invitations), in bursts of as many.
    #[arg(long, env = "LARDER_AUTH_PER_MINUTE", default_value_t = 30)]
    pub auth_per_minute: u32,

    /// Login attempts per minute against one account, whatever the address.
    #[arg(long, env = "LARDER_LOGIN_PER_MINUTE", default_value_t = 10)]
    pub login_per_minute: u32,

    /// Writing requests per minute of one user.
    #[arg(long, env = "LARDER_WRITES_PER_MINUTE", default_value_t = 300)]
    pub writes_per_minute: u32,

    /// Take the client address from the last `X-Forwarded-For` entry (only
    /// behind one proxy that appends it).
    #[arg(long, env = "LARDER_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
}

pub use larder_storage::database::redact as redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_defaults_to_a_file_in_the_data_folder() {
        let config = Config::try_parse_from_args(["--data-dir", "/srv/larder"]).expect("parse");
        if std::env::var_os("DATABASE_URL").is_none() {
            assert_eq!(config.database.url(), "sqlite:///srv/larder/larder.db");
        }
        let config =
            Config::try_parse_from_args(["--database-url", "postgres://u@h/db"]).expect("parse");
        assert_eq!(config.database.url(), "postgres://u@h/db");
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        let mut config = Config::with_database_url("postgres://u:hunter2@h/db");
        config.relay.redis_url = Some("redis://:hunter3@h:6379".into());
        config.auth.jwt_secret = Some("hunter4-hunter4-hunter4-hunter4-hunter4".into());
        config.whatsapp.whatsapp_token = Some("hunter5-token".into());
        config.whatsapp.whatsapp_app_secret = Some("hunter6-secret".into());
        config.whatsapp.whatsapp_verify_token = Some("hunter7-verify".into());
        let described = config.describe();
        let debugged = format!("{config:?}");
        for secret in [
            "hunter2", "hunter3", "hunter4", "hunter5", "hunter6", "hunter7",
        ] {
            assert!(
                !described.contains(secret) && !debugged.contains(secret),
                "{secret}"
            );
        }
    }

    #[test]
    fn defaults_match_the_readme() {
        let config = Config::try_parse_from_args(std::iter::empty::<String>()).expect("parses");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.limits.max_message_bytes, 1024 * 1024);
    }
}
