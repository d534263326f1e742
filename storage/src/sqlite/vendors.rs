//! Vendors, shares and their outbox in SQLite: the shared statements of
//! [`crate::vendors`]. The one writer connection serialises claims, so a
//! single worker sends each job without row locks.

use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::outbox::queries::{claim_select, rank};
use crate::vendors::queries::share_select;

use super::SqliteDb;

/// Vendors, shares and the outbox in SQLite.
#[derive(Clone, Debug)]
pub struct SqliteVendors {
    db: SqliteDb,
}

impl SqliteVendors {
    pub fn new(db: SqliteDb) -> Self {
        SqliteVendors { db }
    }

    fn reader(&self) -> &SqlitePool {
        self.db.readers()
    }

    fn writer(&self) -> &SqlitePool {
        self.db.writer()
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.db.write().await
    }
}

crate::vendors::vendor_store!(SqliteVendors);
crate::outbox::outbox_store!(SqliteVendors, "");
