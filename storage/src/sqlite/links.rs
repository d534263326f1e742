//! Read-only links (vendor links) in SQLite.

use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use uuid::Uuid;

use super::{SqliteDb, now};
use crate::directory::{DirResult, ReadOnlyLink};

pub(super) async fn create(
    db: &SqliteDb,
    list_id: Uuid,
    created_by: Uuid,
    expires_at: DateTime<Utc>,
) -> DirResult<ReadOnlyLink> {
    sqlx::query_as(
        "INSERT INTO read_only_tokens (id, list_id, created_by, expires_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         RETURNING id, list_id, created_by, expires_at, revoked_at, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(list_id)
    .bind(created_by)
    .bind(expires_at)
    .bind(now())
    .fetch_one(db.writer())
    .await
}

pub(super) async fn working(pool: &SqlitePool, list_id: Uuid) -> DirResult<Vec<ReadOnlyLink>> {
    sqlx::query_as(
        "SELECT id, list_id, created_by, expires_at, revoked_at, created_at \
         FROM read_only_tokens \
         WHERE list_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
         ORDER BY id DESC",
    )
    .bind(list_id)
    .bind(now())
    .fetch_all(pool)
    .await
}

pub(super) async fn revoke(
    db: &SqliteDb,
    list_id: Uuid,
    id: Uuid,
) -> DirResult<Option<ReadOnlyLink>> {
    sqlx::query_as(
        "UPDATE read_only_tokens \
         SET revoked_at = COALESCE(revoked_at, $3), updated_at = $3 \
         WHERE id = $1 AND list_id = $2 \
         RETURNING id, list_id, created_by, expires_at, revoked_at, created_at",
    )
    .bind(id)
    .bind(list_id)
    .bind(now())
    .fetch_optional(db.writer())
    .await
}

pub(super) async fn is_live(pool: &SqlitePool, list_id: Uuid, id: Uuid) -> DirResult<bool> {
    let row: Option<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM read_only_tokens \
         WHERE id = $1 AND list_id = $2 AND revoked_at IS NULL AND expires_at > $3",
    )
    .bind(id)
    .bind(list_id)
    .bind(now())
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}
