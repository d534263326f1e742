//! A throw-away database per test, so tests run in parallel.
//!
//! [`TestDatabase::create`] gives the backend named by
//! `LARDER_TEST_DATABASE` (`postgres`, the default, or `sqlite`), so one
//! suite runs on both; tests of something only one backend has ask for it
//! ([`TestDatabase::postgres`], [`TestDatabase::sqlite`]).
//!
//! PostgreSQL is taken from `DATABASE_URL` (its database part is replaced),
//! defaulting to the local one at 127.0.0.1:5432; a missing server fails the
//! test loudly, nothing skips. SQLite databases are files in a temporary
//! folder, never `:memory:` (each pooled connection would get its own).

use sqlx::Postgres;
use sqlx::migrate::MigrateDatabase;
use uuid::Uuid;

/// The PostgreSQL server tests use when `DATABASE_URL` is not set.
pub const DEFAULT_TEST_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test and dropped when this value drops.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    /// The folder of a SQLite database.
    folder: Option<std::path::PathBuf>,
}

/// The backend `LARDER_TEST_DATABASE` asks for (PostgreSQL when unset).
pub fn backend_under_test() -> crate::Backend {
    match std::env::var("LARDER_TEST_DATABASE").as_deref() {
        Ok("sqlite") => crate::Backend::Sqlite,
        Ok("postgres") | Err(_) => crate::Backend::Postgres,
        Ok(other) => panic!("LARDER_TEST_DATABASE={other}: expected postgres or sqlite"),
    }
}

impl TestDatabase {
    /// An empty, migrated database of the backend under test.
    pub async fn create() -> TestDatabase {
        match backend_under_test() {
            crate::Backend::Postgres => TestDatabase::postgres().await,
            crate::Backend::Sqlite => TestDatabase::sqlite().await,
        }
    }

    /// An empty, migrated SQLite database in a folder of its own.
    pub async fn sqlite() -> TestDatabase {
        let folder = std::env::temp_dir().join(format!("larder-test-{}", Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", folder.join("larder.db").display());
        let db = crate::Database::open(&url, 2)
            .await
            .unwrap_or_else(|e| panic!("cannot create a SQLite test database: {e}"));
        db.close().await;
        TestDatabase {
            url,
            folder: Some(folder),
        }
    }

    /// The backend of this database.
    pub fn backend(&self) -> crate::Backend {
        if self.folder.is_some() {
            crate::Backend::Sqlite
        } else {
            crate::Backend::Postgres
        }
    }

    /// Opens it (a pool of `max_connections`).
    pub async fn open(&self, max_connections: u32) -> crate::Database {
        crate::Database::open(&self.url, max_connections)
            .await
            .expect("open the test database")
    }

    /// An empty, migrated PostgreSQL database with a unique name.
    pub async fn postgres() -> TestDatabase {
        let server =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_SERVER.to_owned());
        let name = format!("larder_test_{}", Uuid::new_v4().simple());
        let url = with_database(&server, &name);
        Postgres::create_database(&url).await.unwrap_or_else(|e| {
            panic!("tests need PostgreSQL at {server}: cannot create a test database: {e}")
        });
        let db = TestDatabase { url, folder: None };
        let pool = crate::postgres::connect(&db.url, 2)
            .await
            .expect("connect to the test database");
        crate::postgres::migrate(&pool)
            .await
            .expect("migrate the test database");
        pool.close().await;
        db
    }

    /// Its connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(folder) = &self.folder {
            let _ = std::fs::remove_dir_all(folder);
            return;
        }
        let url = self.url.clone();
        // Drop runs inside the test's runtime; a thread of its own may block.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let name = url.rsplit('/').next().unwrap_or_default().to_owned();
                let mut conn = sqlx::PgConnection::connect(&with_database(&url, "postgres"))
                    .await
                    .map_err(std::io::Error::other)?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database: {e}");
        }
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/a", "b"),
            "postgres://u@h:5432/b"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "b"),
            "postgres://u@h:5432/b"
        );
        assert_eq!(
            with_database("postgres://u@h/a?sslmode=disable", "b"),
            "postgres://u@h/b?sslmode=disable"
        );
    }
}
