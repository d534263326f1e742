//! Vendors, shares and their outbox in PostgreSQL: the shared statements
//! of [`crate::vendors`], with the claim locking the job row so that one
//! replica sends each job.

use sqlx::{PgPool, Postgres, Transaction};

use crate::outbox::queries::{claim_select, rank};
use crate::vendors::queries::share_select;

/// Vendors, shares and the outbox in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgVendors {
    pool: PgPool,
}

impl PgVendors {
    pub fn new(pool: PgPool) -> Self {
        PgVendors { pool }
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }
}

crate::vendors::vendor_store!(PgVendors);
crate::outbox::outbox_store!(PgVendors, " FOR UPDATE OF j SKIP LOCKED");
