//! The vendor store's statements, written once for both databases: the
//! SQL below is the same on PostgreSQL and SQLite (times are bound from
//! Rust, no database functions), and [`vendor_store!`] implements
//! [`super::VendorStore`] for a type that gives a reader pool, a writer
//! pool and a write transaction. Only the claim differs: PostgreSQL locks
//! the job row (`FOR UPDATE OF j SKIP LOCKED`), SQLite's one writer needs
//! no lock.

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

/// The due job whose number may be sent to now (append the lock clause).
macro_rules! claim_select {
    () => {
        "SELECT j.id AS job_id, j.share_id, j.attempts, j.request_started_at, \
         v.whatsapp_number AS wa_number, c.window_open_until, v.deleted_at AS vendor_deleted_at, \
         s.status AS share_status, s.rendered_text, s.snapshot, s.snapshot_seq \
         FROM outbox_jobs j \
         JOIN vendor_shares s ON s.id = j.share_id \
         JOIN vendors v ON v.id = s.vendor_id \
         LEFT JOIN whatsapp_contacts c ON c.wa_number = v.whatsapp_number \
         WHERE j.kind = 'whatsapp_share' \
         AND ((j.status = 'pending' AND j.run_after <= $1) \
              OR (j.status = 'running' AND j.locked_until <= $1)) \
         AND (c.next_send_at IS NULL OR c.next_send_at <= $1) \
         ORDER BY j.run_after, j.id LIMIT 1"
    };
}
pub(crate) use claim_select;

/// Rank of `status` (a column or parameter) in SQL: statuses only move up.
macro_rules! rank {
    ($e:literal) => {
        concat!(
            "(CASE ",
            $e,
            " WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3 \
             WHEN 'failed' THEN 4 ELSE 0 END)"
        )
    };
}
pub(crate) use rank;

/// Implements `VendorStore` for `$ty`, which has `reader()`, `writer()`
/// and `begin()`; `$lock` is appended to the claim's `SELECT`.
macro_rules! vendor_store {
    ($ty:ty, $lock:literal) => {
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

            async fn record_status(
                &self,
                e: &$crate::vendors::StatusEvent,
                callback_share: Option<uuid::Uuid>,
            ) -> $crate::directory::DirResult<$crate::vendors::StatusApplied> {
                use $crate::vendors::StatusApplied;
                let now = chrono::Utc::now();
                let mut tx = self.begin().await?;
                let by_message: Option<(uuid::Uuid,)> =
                    sqlx::query_as("SELECT share_id FROM share_messages WHERE wamid = $1")
                        .bind(&e.wamid)
                        .fetch_optional(&mut *tx)
                        .await?;
                let share_id = match (by_message, callback_share) {
                    (Some((id,)), _) => Some(id),
                    (None, Some(id)) => sqlx::query_as::<_, (uuid::Uuid,)>(
                        "SELECT id FROM vendor_shares WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|(id,)| id),
                    (None, None) => None,
                };
                let fresh = sqlx::query(
                    "INSERT INTO whatsapp_statuses (wamid, status, share_id, occurred_at, \
                     error_code, error_title, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                     ON CONFLICT (wamid, status) DO NOTHING",
                )
                .bind(&e.wamid)
                .bind(&e.status)
                .bind(share_id)
                .bind(e.occurred_at)
                .bind(e.error_code)
                .bind(&e.error_title)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if !fresh {
                    tx.rollback().await?;
                    return Ok(StatusApplied::Duplicate);
                }
                let Some(share_id) = share_id else {
                    tx.commit().await?;
                    return Ok(StatusApplied::Unknown);
                };
                // A message whose send answer was lost is known from here on;
                // what went out outside the window is a template.
                sqlx::query(
                    "INSERT INTO share_messages (id, share_id, wamid, kind, status, status_at, \
                     created_at, updated_at) VALUES ($1, $2, $3, 'template', 'sent', $4, $5, $5) \
                     ON CONFLICT (wamid) DO NOTHING",
                )
                .bind(uuid::Uuid::now_v7())
                .bind(share_id)
                .bind(&e.wamid)
                .bind(e.occurred_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(concat!(
                    "UPDATE share_messages SET status = $2, status_at = $3, error_code = $4, \
                     error_title = $5, updated_at = $6 WHERE wamid = $1 AND status <> 'failed' AND ",
                    rank!("$2"),
                    " > ",
                    rank!("status")
                ))
                .bind(&e.wamid)
                .bind(&e.status)
                .bind(e.occurred_at)
                .bind(e.error_code)
                .bind(&e.error_title)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(concat!(
                    "UPDATE vendor_shares SET status = $2, detail = NULL, \
                     error_code = CASE WHEN $2 = 'failed' THEN $3 ELSE error_code END, \
                     error_message = CASE WHEN $2 = 'failed' THEN $4 ELSE error_message END, \
                     updated_at = $5 WHERE id = $1 AND status <> 'failed' AND ",
                    rank!("$2"),
                    " > ",
                    rank!("status")
                ))
                .bind(share_id)
                .bind(&e.status)
                .bind(e.error_code)
                .bind(&e.error_title)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                // A status proves the message exists: never send it again.
                sqlx::query(
                    "UPDATE outbox_jobs SET status = 'done', locked_until = NULL, updated_at = $2 \
                     WHERE share_id = $1 AND status IN ('pending', 'running')",
                )
                .bind(share_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(StatusApplied::Applied(share_id))
            }

            async fn record_reply(
                &self,
                r: &$crate::vendors::Reply,
                window: std::time::Duration,
            ) -> $crate::directory::DirResult<bool> {
                let now = chrono::Utc::now();
                let mut tx = self.begin().await?;
                let latest: Option<(uuid::Uuid,)> = sqlx::query_as(
                    "SELECT s.id FROM vendor_shares s JOIN vendors v ON v.id = s.vendor_id \
                     WHERE v.whatsapp_number = $1 ORDER BY s.id DESC LIMIT 1",
                )
                .bind(&r.wa_number)
                .fetch_optional(&mut *tx)
                .await?;
                let fresh = sqlx::query(
                    "INSERT INTO vendor_replies (id, wamid, wa_number, share_id, kind, body, \
                     sender_name, received_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                     ON CONFLICT (wamid) DO NOTHING",
                )
                .bind(r.id)
                .bind(&r.wamid)
                .bind(&r.wa_number)
                .bind(latest.map(|(id,)| id))
                .bind(&r.kind)
                .bind(&r.body)
                .bind(&r.sender_name)
                .bind(r.received_at)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if !fresh {
                    tx.rollback().await?;
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO whatsapp_contacts (wa_number, window_open_until, created_at, \
                     updated_at) VALUES ($1, $2, $3, $3) \
                     ON CONFLICT (wa_number) DO UPDATE SET \
                     window_open_until = CASE WHEN whatsapp_contacts.window_open_until IS NULL \
                     OR whatsapp_contacts.window_open_until < excluded.window_open_until \
                     THEN excluded.window_open_until \
                     ELSE whatsapp_contacts.window_open_until END, \
                     updated_at = excluded.updated_at",
                )
                .bind(&r.wa_number)
                .bind($crate::vendors::after(r.received_at, window))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn claim_job(
                &self,
                worker: &str,
                now: chrono::DateTime<chrono::Utc>,
                lease: std::time::Duration,
                pacing: std::time::Duration,
            ) -> $crate::directory::DirResult<Option<$crate::vendors::ClaimedJob>> {
                let mut tx = self.begin().await?;
                let job: Option<$crate::vendors::ClaimedJob> =
                    sqlx::query_as(concat!(claim_select!(), $lock))
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(mut job) = job else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                // Reserve the number; another replica may have just taken it.
                let reserved: Option<(String,)> = sqlx::query_as(
                    "INSERT INTO whatsapp_contacts (wa_number, next_send_at, created_at, \
                     updated_at) VALUES ($1, $2, $3, $3) \
                     ON CONFLICT (wa_number) DO UPDATE SET next_send_at = excluded.next_send_at, \
                     updated_at = excluded.updated_at \
                     WHERE whatsapp_contacts.next_send_at IS NULL \
                     OR whatsapp_contacts.next_send_at <= $3 \
                     RETURNING wa_number",
                )
                .bind(&job.wa_number)
                .bind($crate::vendors::after(now, pacing))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                if reserved.is_none() {
                    tx.rollback().await?;
                    return Ok(None);
                }
                sqlx::query(
                    "UPDATE outbox_jobs SET status = 'running', attempts = attempts + 1, \
                     locked_until = $2, claimed_by = $3, updated_at = $4 WHERE id = $1",
                )
                .bind(job.job_id)
                .bind($crate::vendors::after(now, lease))
                .bind(worker)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                job.attempts += 1;
                Ok(Some(job))
            }

            async fn start_request(
                &self,
                job_id: uuid::Uuid,
                worker: &str,
            ) -> $crate::directory::DirResult<bool> {
                let done = sqlx::query(
                    "UPDATE outbox_jobs SET request_started_at = $3, updated_at = $3 \
                     WHERE id = $1 AND claimed_by = $2 AND status = 'running'",
                )
                .bind(job_id)
                .bind(worker)
                .bind(chrono::Utc::now())
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn finish_job(
                &self,
                job: &$crate::vendors::ClaimedJob,
                worker: &str,
                outcome: &$crate::vendors::JobOutcome,
            ) -> $crate::directory::DirResult<()> {
                use $crate::vendors::JobOutcome;
                let now = chrono::Utc::now();
                let mut tx = self.begin().await?;
                match outcome {
                    JobOutcome::Sent { wamid, kind } => {
                        sqlx::query(
                            "UPDATE outbox_jobs SET status = 'done', locked_until = NULL, \
                             request_started_at = NULL, last_error = NULL, updated_at = $2 \
                             WHERE id = $1",
                        )
                        .bind(job.job_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "INSERT INTO share_messages (id, share_id, wamid, kind, status, \
                             status_at, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, 'sent', $5, $5, $5) \
                             ON CONFLICT (wamid) DO NOTHING",
                        )
                        .bind(uuid::Uuid::now_v7())
                        .bind(job.share_id)
                        .bind(wamid)
                        .bind(kind.as_str())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "UPDATE vendor_shares SET status = 'sent', detail = NULL, \
                             updated_at = $2 WHERE id = $1 AND status = 'pending'",
                        )
                        .bind(job.share_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    JobOutcome::Retry { at, error } | JobOutcome::Unsure { until: at, error } => {
                        let unsure = matches!(outcome, JobOutcome::Unsure { .. });
                        sqlx::query(
                            "UPDATE outbox_jobs SET status = 'pending', run_after = $3, \
                             locked_until = NULL, last_error = $4, \
                             request_started_at = CASE WHEN $5 \
                             THEN COALESCE(request_started_at, $6) ELSE NULL END, \
                             updated_at = $6 \
                             WHERE id = $1 AND claimed_by = $2 AND status = 'running'",
                        )
                        .bind(job.job_id)
                        .bind(worker)
                        .bind(*at)
                        .bind(error)
                        .bind(unsure)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "UPDATE vendor_shares SET detail = $2, updated_at = $3 \
                             WHERE id = $1 AND status = 'pending'",
                        )
                        .bind(job.share_id)
                        .bind(error)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    JobOutcome::Done => {
                        sqlx::query(
                            "UPDATE outbox_jobs SET status = 'done', locked_until = NULL, \
                             updated_at = $2 WHERE id = $1",
                        )
                        .bind(job.job_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    JobOutcome::Failed { code, message } => {
                        sqlx::query(
                            "UPDATE outbox_jobs SET status = 'failed', locked_until = NULL, \
                             last_error = $2, updated_at = $3 WHERE id = $1",
                        )
                        .bind(job.job_id)
                        .bind(message)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "UPDATE vendor_shares SET status = 'failed', error_code = $2, \
                             error_message = $3, detail = NULL, updated_at = $4 \
                             WHERE id = $1 AND status = 'pending'",
                        )
                        .bind(job.share_id)
                        .bind(*code)
                        .bind(message)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn set_share_detail(
                &self,
                share_id: uuid::Uuid,
                detail: Option<&str>,
            ) -> $crate::directory::DirResult<()> {
                sqlx::query(
                    "UPDATE vendor_shares SET detail = $2, updated_at = $3 \
                     WHERE id = $1 AND status = 'pending'",
                )
                .bind(share_id)
                .bind(detail)
                .bind(chrono::Utc::now())
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn outbox_depth(
                &self,
            ) -> $crate::directory::DirResult<$crate::vendors::OutboxDepth> {
                let (jobs,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM outbox_jobs WHERE status IN ('pending', 'running')",
                )
                .fetch_one(self.reader())
                .await?;
                let oldest: Option<(chrono::DateTime<chrono::Utc>,)> = sqlx::query_as(
                    "SELECT created_at FROM outbox_jobs WHERE status IN ('pending', 'running') \
                     ORDER BY created_at LIMIT 1",
                )
                .fetch_optional(self.reader())
                .await?;
                Ok($crate::vendors::OutboxDepth {
                    jobs,
                    oldest: oldest.map(|(at,)| at),
                })
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
