//! Opening the database named by a URL: `sqlite:` for one process on one
//! file (the default), `postgres:` for replicas sharing a server.

use std::sync::Arc;

use crate::directory::Directory;
use crate::outbox::Outbox;
use crate::postgres::{PgDirectory, PgProjections, PgStore, PgVendors};
use crate::projection::Projections;
use crate::sqlite::{SqliteDb, SqliteDirectory, SqliteProjections, SqliteStore, SqliteVendors};
use crate::vendors::Vendors;
use crate::{Store, StoreError};

/// Which kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of `url`, or a message saying which URLs are accepted.
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Open(format!(
                "unsupported database URL {:?}: use sqlite://PATH (one process, a file) or \
                 postgres://USER@HOST/DATABASE (replicas)",
                redact(url)
            )))
        }
    }
}

/// The connections of an open database.
#[derive(Clone, Debug)]
pub enum Pools {
    Postgres(sqlx::PgPool),
    Sqlite(SqliteDb),
}

/// Everything storage offers, on one database.
#[derive(Clone)]
pub struct Database {
    pub backend: Backend,
    pub store: Arc<dyn Store>,
    pub directory: Directory,
    pub projections: Projections,
    /// Vendors and their shares.
    pub vendors: Vendors,
    /// The WhatsApp outbox and what WhatsApp reports.
    pub outbox: Outbox,
    pub pools: Pools,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .field("pools", &self.pools)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens the database at `url`, creating it if missing (a PostgreSQL
    /// database, or a SQLite file and its folder), and applies migrations.
    /// `max_connections` bounds the connections to PostgreSQL, or the
    /// read-only connections to SQLite (which has one writer).
    pub async fn open(url: &str, max_connections: u32) -> Result<Database, StoreError> {
        match Backend::of_url(url)? {
            Backend::Sqlite => {
                let path = crate::sqlite::path_of_url(url).map_err(StoreError::Open)?;
                let db = SqliteDb::open(&path, max_connections.clamp(1, 8))
                    .await
                    .map_err(|e| {
                        StoreError::Open(format!(
                            "cannot open the SQLite database {}: {}",
                            path.display(),
                            explain(&e)
                        ))
                    })?;
                Ok(Database::sqlite(db))
            }
            Backend::Postgres => {
                let fail = |what: &str, e: StoreError| {
                    StoreError::Open(format!(
                        "{what} PostgreSQL at {}: {}",
                        redact(url),
                        explain(&e)
                    ))
                };
                crate::postgres::create_database_if_missing(url)
                    .await
                    .map_err(|e| fail("cannot reach", e))?;
                let pool = crate::postgres::connect(url, max_connections)
                    .await
                    .map_err(|e| fail("cannot connect to", e))?;
                crate::postgres::migrate(&pool)
                    .await
                    .map_err(|e| fail("cannot apply migrations to", e))?;
                Ok(Database::postgres(pool))
            }
        }
    }

    /// The database over an open PostgreSQL pool.
    pub fn postgres(pool: sqlx::PgPool) -> Database {
        Database {
            backend: Backend::Postgres,
            store: Arc::new(PgStore::new(pool.clone())),
            directory: Directory::new(PgDirectory::new(pool.clone())),
            projections: Projections::new(PgProjections::new(pool.clone())),
            vendors: Vendors::new(PgVendors::new(pool.clone())),
            outbox: Outbox::new(PgVendors::new(pool.clone())),
            pools: Pools::Postgres(pool),
        }
    }

    /// The database over an open SQLite file.
    pub fn sqlite(db: SqliteDb) -> Database {
        Database {
            backend: Backend::Sqlite,
            store: Arc::new(SqliteStore::new(db.clone())),
            directory: Directory::new(SqliteDirectory::new(db.clone())),
            projections: Projections::new(SqliteProjections::new(db.clone())),
            vendors: Vendors::new(SqliteVendors::new(db.clone())),
            outbox: Outbox::new(SqliteVendors::new(db.clone())),
            pools: Pools::Sqlite(db),
        }
    }

    /// Where the data lives, for the start-up log.
    pub fn describe(&self) -> String {
        match &self.pools {
            Pools::Sqlite(db) => format!("SQLite file {}", db.path().display()),
            Pools::Postgres(pool) => {
                let options = pool.connect_options();
                format!(
                    "PostgreSQL database {} at {}:{}",
                    options.get_database().unwrap_or("postgres"),
                    options.get_host(),
                    options.get_port()
                )
            }
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match &self.pools {
            Pools::Postgres(pool) => pool.close().await,
            Pools::Sqlite(db) => db.close().await,
        }
    }
}

/// The error and its causes on one line.
fn explain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end], &rest[at..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(
            Backend::of_url("sqlite://larder-data/larder.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::of_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        let refused = Backend::of_url("mysql://u:secret@h/db")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("sqlite://") && refused.contains("postgres://"));
        assert!(!refused.contains("secret"), "{refused}");
    }

    #[test]
    fn in_memory_sqlite_is_refused() {
        assert!(crate::sqlite::path_of_url("sqlite::memory:").is_err());
        assert!(crate::sqlite::path_of_url("sqlite://:memory:").is_err());
        assert!(crate::sqlite::path_of_url("sqlite://?mode=memory").is_err());
        assert_eq!(
            crate::sqlite::path_of_url("sqlite:///srv/larder.db").unwrap(),
            std::path::PathBuf::from("/srv/larder.db")
        );
        assert_eq!(
            crate::sqlite::path_of_url("sqlite://data/larder.db").unwrap(),
            std::path::PathBuf::from("data/larder.db")
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://a/b.db"), "sqlite://a/b.db");
    }
}
