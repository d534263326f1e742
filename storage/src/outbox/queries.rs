//! The outbox's statements, written once for both databases like the
//! vendor store's (`crate::vendors::queries`): [`outbox_store!`] implements
//! [`super::OutboxStore`]. Only the claim differs: PostgreSQL locks the
//! job row (`FOR UPDATE OF j SKIP LOCKED`, so one replica takes each job),
//! SQLite's one writer needs no lock.

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

/// Implements `OutboxStore` for `$ty`, which has `reader()`, `writer()`
/// and `begin()`; `$lock` is appended to the claim's `SELECT`.
macro_rules! outbox_store {
    ($ty:ty, $lock:literal) => {
        #[async_trait::async_trait]
        impl $crate::outbox::OutboxStore for $ty {
            async fn record_status(
                &self,
                e: &$crate::vendors::StatusEvent,
                callback_share: Option<uuid::Uuid>,
            ) -> $crate::directory::DirResult<$crate::outbox::StatusApplied> {
                use $crate::outbox::StatusApplied;
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
                if e.status == "failed" && e.error_code == Some(131047) {
                    let kind: Option<(String,)> =
                        sqlx::query_as("SELECT kind FROM share_messages WHERE wamid = $1")
                            .bind(&e.wamid)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if kind.is_some_and(|(k,)| k == "text") {
                        // A text refused after the fact because the window
                        // had closed: the message failed, the number's window
                        // is closed, and the share waits again for its job to
                        // send the template.
                        sqlx::query(
                            "UPDATE share_messages SET status = 'failed', status_at = $2, \
                             error_code = $3, error_title = $4, updated_at = $5 \
                             WHERE wamid = $1 AND status <> 'failed'",
                        )
                        .bind(&e.wamid)
                        .bind(e.occurred_at)
                        .bind(e.error_code)
                        .bind(&e.error_title)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "UPDATE whatsapp_contacts SET window_open_until = NULL, updated_at = $2 \
                             WHERE wa_number = (SELECT v.whatsapp_number FROM vendor_shares s \
                             JOIN vendors v ON v.id = s.vendor_id WHERE s.id = $1)",
                        )
                        .bind(share_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "UPDATE vendor_shares SET status = 'pending', \
                             detail = 'the vendor''s 24-hour window had closed; sending the template', \
                             updated_at = $2 WHERE id = $1 AND status IN ('pending', 'sent')",
                        )
                        .bind(share_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "UPDATE outbox_jobs SET status = 'pending', run_after = $2, \
                             locked_until = NULL, request_started_at = NULL, updated_at = $2 \
                             WHERE share_id = $1 AND status = 'done'",
                        )
                        .bind(share_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        return Ok(StatusApplied::Applied(share_id));
                    }
                }
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
                context: Option<&str>,
                window: std::time::Duration,
            ) -> $crate::directory::DirResult<bool> {
                let now = chrono::Utc::now();
                let mut tx = self.begin().await?;
                let quoted: Option<(uuid::Uuid,)> = match context {
                    Some(wamid) => {
                        sqlx::query_as("SELECT share_id FROM share_messages WHERE wamid = $1")
                            .bind(wamid)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                    None => None,
                };
                let latest = match quoted {
                    Some(found) => Some(found),
                    None => {
                        let families: Vec<(uuid::Uuid,)> = sqlx::query_as(
                            "SELECT DISTINCT family_id FROM vendors \
                             WHERE whatsapp_number = $1 AND deleted_at IS NULL LIMIT 2",
                        )
                        .bind(&r.wa_number)
                        .fetch_all(&mut *tx)
                        .await?;
                        if families.len() == 1 {
                            sqlx::query_as(
                                "SELECT s.id FROM vendor_shares s \
                                 JOIN vendors v ON v.id = s.vendor_id \
                                 WHERE v.whatsapp_number = $1 AND v.deleted_at IS NULL \
                                 AND s.status IN ('sent', 'delivered', 'read') \
                                 ORDER BY s.id DESC LIMIT 1",
                            )
                            .bind(&r.wa_number)
                            .fetch_optional(&mut *tx)
                            .await?
                        } else {
                            None
                        }
                    }
                };
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
                .bind($crate::outbox::after(r.received_at, window))
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
            ) -> $crate::directory::DirResult<Option<$crate::outbox::ClaimedJob>> {
                let mut tx = self.begin().await?;
                let job: Option<$crate::outbox::ClaimedJob> =
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
                .bind($crate::outbox::after(now, pacing))
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
                .bind($crate::outbox::after(now, lease))
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
                job: &$crate::outbox::ClaimedJob,
                worker: &str,
                pacing: std::time::Duration,
            ) -> $crate::directory::DirResult<bool> {
                let now = chrono::Utc::now();
                let mut tx = self.begin().await?;
                let mine = sqlx::query(
                    "UPDATE outbox_jobs SET request_started_at = $3, updated_at = $3 \
                     WHERE id = $1 AND claimed_by = $2 AND status = 'running'",
                )
                .bind(job.job_id)
                .bind(worker)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if mine {
                    sqlx::query(
                        "UPDATE whatsapp_contacts SET next_send_at = $2, updated_at = $3 \
                         WHERE wa_number = $1 AND (next_send_at IS NULL OR next_send_at < $2)",
                    )
                    .bind(&job.wa_number)
                    .bind($crate::outbox::after(now, pacing))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(mine)
            }

            async fn finish_job(
                &self,
                job: &$crate::outbox::ClaimedJob,
                worker: &str,
                outcome: &$crate::outbox::JobOutcome,
            ) -> $crate::directory::DirResult<()> {
                use $crate::outbox::JobOutcome;
                let now = chrono::Utc::now();
                let mut tx = self.begin().await?;
                match outcome {
                    JobOutcome::Sent { wamid, kind } => {
                        // The message went out whoever holds the job now:
                        // record it (in the order record_status locks rows).
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
                        sqlx::query(
                            "UPDATE outbox_jobs SET status = 'done', locked_until = NULL, \
                             request_started_at = NULL, last_error = NULL, updated_at = $2 \
                             WHERE id = $1",
                        )
                        .bind(job.job_id)
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
                             updated_at = $3 WHERE id = $1 AND claimed_by = $2 \
                             AND status = 'running'",
                        )
                        .bind(job.job_id)
                        .bind(worker)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    JobOutcome::Failed { code, message } => {
                        let owned = sqlx::query(
                            "UPDATE outbox_jobs SET status = 'failed', locked_until = NULL, \
                             last_error = $3, updated_at = $4 \
                             WHERE id = $1 AND claimed_by = $2 AND status = 'running'",
                        )
                        .bind(job.job_id)
                        .bind(worker)
                        .bind(message)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                            > 0;
                        if !owned {
                            // Another worker holds it now; its outcome counts.
                            tx.rollback().await?;
                            return Ok(());
                        }
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

            async fn outbox_depth(
                &self,
            ) -> $crate::directory::DirResult<$crate::outbox::OutboxDepth> {
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
                Ok($crate::outbox::OutboxDepth {
                    jobs,
                    oldest: oldest.map(|(at,)| at),
                })
            }
        }
    };
}
pub(crate) use outbox_store;
