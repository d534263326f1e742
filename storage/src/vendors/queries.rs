//! The vendor store's statements, written once for both databases: the
//! SQL below is the same on PostgreSQL and SQLite (times are bound from
//! Rust, no database functions), and [`vendor_store!`] implements
//! [`super::VendorStore`] for a type that gives a reader pool, a writer
//! pool and a write transaction.

/// Columns of a share, with its link's state.
macro_rules! share_select {
    () => {
        "SELECT s.id, s.list_id, s.vendor_id, s.shared_by, s.snapshot_seq, s.status, s.snapshot, \
         s.rendered_text, s.note, s.error_code, s.error_message, s.detail, s.link_id, \
         t.expires_at AS link_expires_at, t.revoked_at AS link_revoked_at, s.created_at, \
         s.updated_at \
         FROM vendor_shares s LEFT JOIN read_only_tokens t ON t.id = s.link_id"
    };
}
pub(crate) use share_select;

/// Implements `VendorStore` for `$ty`, which has `reader()`, `writer()`
/// and `begin()`.
macro_rules! vendor_store {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::vendors::VendorStore for $ty {
            async fn create_vendor(
                &self,
                v: &$crate::vendors::NewVendor,
            ) -> $crate::directory::DirResult<$crate::vendors::VendorWrite> {
                let now = chrono::Utc::now();
                let row = sqlx::query_as(
                    "INSERT INTO vendors (id, family_id, name, whatsapp_number, notes, created_by, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                     RETURNING id, family_id, name, whatsapp_number, notes, created_by, \
                     created_at, updated_at, deleted_at",
                )
                .bind(v.id)
                .bind(v.family_id)
                .bind(&v.name)
                .bind(&v.whatsapp_number)
                .bind(&v.notes)
                .bind(v.created_by)
                .bind(now)
                .fetch_one(self.writer())
                .await;
                $crate::vendors::queries::vendor_written(row)
            }

            async fn family_vendors(
                &self,
                family_id: uuid::Uuid,
                after: Option<uuid::Uuid>,
                limit: i64,
            ) -> $crate::directory::DirResult<Vec<$crate::vendors::Vendor>> {
                sqlx::query_as(
                    "SELECT id, family_id, name, whatsapp_number, notes, created_by, created_at, \
                     updated_at, deleted_at FROM vendors \
                     WHERE family_id = $1 AND deleted_at IS NULL AND ($2 IS NULL OR id > $2) \
                     ORDER BY id LIMIT $3",
                )
                .bind(family_id)
                .bind(after)
                .bind(limit)
                .fetch_all(self.reader())
                .await
            }

            async fn vendor(
                &self,
                id: uuid::Uuid,
            ) -> $crate::directory::DirResult<Option<$crate::vendors::Vendor>> {
                sqlx::query_as(
                    "SELECT id, family_id, name, whatsapp_number, notes, created_by, created_at, \
                     updated_at, deleted_at FROM vendors WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(self.reader())
                .await
            }

            async fn update_vendor(
                &self,
                id: uuid::Uuid,
                patch: &$crate::vendors::VendorPatch,
            ) -> $crate::directory::DirResult<$crate::vendors::VendorWrite> {
                let row = sqlx::query_as(
                    "UPDATE vendors SET name = COALESCE($2, name), \
                     whatsapp_number = COALESCE($3, whatsapp_number), \
                     notes = CASE WHEN $4 THEN $5 ELSE notes END, updated_at = $6 \
                     WHERE id = $1 AND deleted_at IS NULL \
                     RETURNING id, family_id, name, whatsapp_number, notes, created_by, \
                     created_at, updated_at, deleted_at",
                )
                .bind(id)
                .bind(&patch.name)
                .bind(&patch.whatsapp_number)
                .bind(patch.notes.is_some())
                .bind(patch.notes.clone().flatten())
                .bind(chrono::Utc::now())
                .fetch_one(self.writer())
                .await;
                $crate::vendors::queries::vendor_written(row)
            }

            async fn delete_vendor(&self, id: uuid::Uuid) -> $crate::directory::DirResult<bool> {
                let done = sqlx::query(
                    "UPDATE vendors SET deleted_at = $2, updated_at = $2 \
                     WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(id)
                .bind(chrono::Utc::now())
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn create_share(
                &self,
                n: &$crate::vendors::NewShare,
            ) -> $crate::directory::DirResult<$crate::vendors::ShareCreated> {
                use $crate::vendors::ShareCreated;
                let now = chrono::Utc::now();
                let mut tx = self.begin().await?;
                let link_id = uuid::Uuid::now_v7();
                sqlx::query(
                    "INSERT INTO read_only_tokens (id, list_id, created_by, expires_at, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .bind(link_id)
                .bind(n.list_id)
                .bind(n.shared_by)
                .bind(n.link_expires_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let inserted: Option<(uuid::Uuid,)> = sqlx::query_as(
                    "INSERT INTO vendor_shares (id, list_id, vendor_id, shared_by, snapshot_seq, \
                     status, snapshot, rendered_text, note, link_id, page_token_hash, detail, \
                     created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12, $12) \
                     ON CONFLICT (list_id, vendor_id, snapshot_seq) DO NOTHING RETURNING id",
                )
                .bind(n.id)
                .bind(n.list_id)
                .bind(n.vendor_id)
                .bind(n.shared_by)
                .bind(n.snapshot_seq)
                .bind(&n.snapshot)
                .bind(&n.rendered_text)
                .bind(&n.note)
                .bind(link_id)
                .bind(&n.page_token_hash)
                .bind(&n.detail)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                if inserted.is_none() {
                    tx.rollback().await?;
                    let existing: (uuid::Uuid,) = sqlx::query_as(
                        "SELECT id FROM vendor_shares \
                         WHERE list_id = $1 AND vendor_id = $2 AND snapshot_seq = $3",
                    )
                    .bind(n.list_id)
                    .bind(n.vendor_id)
                    .bind(n.snapshot_seq)
                    .fetch_one(self.writer())
                    .await?;
                    // Sharing a version that failed again tries again.
                    let mut tx = self.begin().await?;
                    let retried = sqlx::query(
                        "UPDATE vendor_shares SET status = 'pending', error_code = NULL, \
                         error_message = NULL, detail = $2, updated_at = $3 \
                         WHERE id = $1 AND status = 'failed'",
                    )
                    .bind(existing.0)
                    .bind(&n.detail)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        > 0;
                    if retried {
                        sqlx::query(
                            "UPDATE outbox_jobs SET status = 'pending', attempts = 0, \
                             run_after = $2, locked_until = NULL, request_started_at = NULL, \
                             last_error = NULL, updated_at = $2 WHERE share_id = $1",
                        )
                        .bind(existing.0)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    let share = self.share(existing.0).await?.ok_or(sqlx::Error::RowNotFound)?;
                    return Ok(ShareCreated::Exists(share));
                }
                sqlx::query(
                    "INSERT INTO outbox_jobs (id, kind, dedupe_key, status, attempts, run_after, \
                     share_id, created_at, updated_at) \
                     VALUES ($1, 'whatsapp_share', $2, 'pending', 0, $3, $4, $3, $3) \
                     ON CONFLICT (dedupe_key) DO NOTHING",
                )
                .bind(uuid::Uuid::now_v7())
                .bind(format!(
                    "whatsapp_share:{}:{}:{}",
                    n.list_id, n.snapshot_seq, n.vendor_id
                ))
                .bind(now)
                .bind(n.id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                let share = self.share(n.id).await?.ok_or(sqlx::Error::RowNotFound)?;
                Ok(ShareCreated::New(share))
            }

            async fn share(
                &self,
                id: uuid::Uuid,
            ) -> $crate::directory::DirResult<Option<$crate::vendors::Share>> {
                sqlx::query_as(concat!(
                    share_select!(),
                    " WHERE s.id = $1"
                ))
                .bind(id)
                .fetch_optional(self.reader())
                .await
            }

            async fn share_by_page_token(
                &self,
                token_hash: &str,
            ) -> $crate::directory::DirResult<Option<$crate::vendors::Share>> {
                sqlx::query_as(concat!(
                    share_select!(),
                    " WHERE s.page_token_hash = $1"
                ))
                .bind(token_hash)
                .fetch_optional(self.reader())
                .await
            }

            async fn list_shares(
                &self,
                list_id: uuid::Uuid,
                before: Option<uuid::Uuid>,
                limit: i64,
            ) -> $crate::directory::DirResult<Vec<$crate::vendors::Share>> {
                sqlx::query_as(concat!(
                    share_select!(),
                    " WHERE s.list_id = $1 AND ($2 IS NULL OR s.id < $2) \
                     ORDER BY s.id DESC LIMIT $3"
                ))
                .bind(list_id)
                .bind(before)
                .bind(limit)
                .fetch_all(self.reader())
                .await
            }

            async fn family_shares_since(
                &self,
                family_id: uuid::Uuid,
                since: chrono::DateTime<chrono::Utc>,
            ) -> $crate::directory::DirResult<(i64, Option<chrono::DateTime<chrono::Utc>>)> {
                let (count,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM vendor_shares s JOIN grocery_lists l ON l.id = s.list_id \
                     WHERE l.family_id = $1 AND s.created_at > $2",
                )
                .bind(family_id)
                .bind(since)
                .fetch_one(self.reader())
                .await?;
                let first: Option<(chrono::DateTime<chrono::Utc>,)> = sqlx::query_as(
                    "SELECT s.created_at FROM vendor_shares s \
                     JOIN grocery_lists l ON l.id = s.list_id \
                     WHERE l.family_id = $1 AND s.created_at > $2 ORDER BY s.created_at LIMIT 1",
                )
                .bind(family_id)
                .bind(since)
                .fetch_optional(self.reader())
                .await?;
                Ok((count, first.map(|(at,)| at)))
            }

            async fn share_statuses(
                &self,
                share_id: uuid::Uuid,
            ) -> $crate::directory::DirResult<Vec<$crate::vendors::StatusEvent>> {
                sqlx::query_as(concat!(
                    "SELECT wamid, status, occurred_at, error_code, error_title \
                     FROM whatsapp_statuses WHERE share_id = $1 ORDER BY occurred_at, ",
                    rank!("status"),
                    " LIMIT 200"
                ))
                .bind(share_id)
                .fetch_all(self.reader())
                .await
            }

            async fn share_replies(
                &self,
                share_id: uuid::Uuid,
            ) -> $crate::directory::DirResult<Vec<$crate::vendors::Reply>> {
                sqlx::query_as(
                    "SELECT id, wamid, wa_number, share_id, kind, body, sender_name, received_at \
                     FROM vendor_replies WHERE share_id = $1 ORDER BY received_at, id LIMIT 200",
                )
                .bind(share_id)
                .fetch_all(self.reader())
                .await
            }
        }
    };
}
pub(crate) use vendor_store;

/// A written vendor, or why not: a taken number is a unique violation.
pub(crate) fn vendor_written(
    row: Result<super::Vendor, sqlx::Error>,
) -> crate::directory::DirResult<super::VendorWrite> {
    match row {
        Ok(v) => Ok(super::VendorWrite::Done(v)),
        Err(sqlx::Error::RowNotFound) => Ok(super::VendorWrite::Missing),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Ok(super::VendorWrite::NumberTaken)
        }
        Err(e) => Err(e),
    }
}
