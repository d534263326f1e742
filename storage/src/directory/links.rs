//! Read-only links (vendor links): a row per issued token, so the family
//! can list and revoke them; the token carries the row's id.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DirResult, Directory};

/// An issued read-only link (never the token itself: only its holder has it).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReadOnlyLink {
    pub id: Uuid,
    pub list_id: Uuid,
    pub created_by: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl Directory {
    /// Records a link to `list_id` issued by `created_by`.
    pub async fn create_read_only_link(
        &self,
        list_id: Uuid,
        created_by: Uuid,
        expires_at: DateTime<Utc>,
    ) -> DirResult<ReadOnlyLink> {
        sqlx::query_as(
            "INSERT INTO read_only_tokens (id, list_id, created_by, expires_at) \
             VALUES ($1, $2, $3, $4) \
             RETURNING id, list_id, created_by, expires_at, revoked_at, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(list_id)
        .bind(created_by)
        .bind(expires_at)
        .fetch_one(&self.pool)
        .await
    }

    /// The list's links that still work (not revoked, not expired), newest first.
    pub async fn read_only_links(&self, list_id: Uuid) -> DirResult<Vec<ReadOnlyLink>> {
        sqlx::query_as(
            "SELECT id, list_id, created_by, expires_at, revoked_at, created_at \
             FROM read_only_tokens \
             WHERE list_id = $1 AND revoked_at IS NULL AND expires_at > now() \
             ORDER BY id DESC",
        )
        .bind(list_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Revokes the link `id` of `list_id`; `None` when the list has no such
    /// link. Revoking twice is harmless.
    pub async fn revoke_read_only_link(
        &self,
        list_id: Uuid,
        id: Uuid,
    ) -> DirResult<Option<ReadOnlyLink>> {
        sqlx::query_as(
            "UPDATE read_only_tokens \
             SET revoked_at = COALESCE(revoked_at, now()), updated_at = now() \
             WHERE id = $1 AND list_id = $2 \
             RETURNING id, list_id, created_by, expires_at, revoked_at, created_at",
        )
        .bind(id)
        .bind(list_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Whether the link `id` to `list_id` still works.
    pub async fn read_only_link_is_live(&self, list_id: Uuid, id: Uuid) -> DirResult<bool> {
        let row: Option<(Uuid,)> = sqlx::query_as(
            "SELECT id FROM read_only_tokens \
             WHERE id = $1 AND list_id = $2 AND revoked_at IS NULL AND expires_at > now()",
        )
        .bind(id)
        .bind(list_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}
