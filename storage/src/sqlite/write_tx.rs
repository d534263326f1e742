//! The directory's write statements in SQLite. No row is locked: the write
//! transaction began with `BEGIN IMMEDIATE` on the one writer connection,
//! so nothing else writes until it ends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};
use uuid::Uuid;

use crate::directory::flow::{StoredKey, WriteTx};
use crate::directory::{
    DirResult, IdempotencyRecord, InvitationRow, ListRow, Member, RefreshRow, Successor,
};
use crate::list_columns;

/// A write transaction of the SQLite directory.
pub(super) struct SqliteWrite(pub(super) Transaction<'static, Sqlite>);

#[async_trait]
impl WriteTx for SqliteWrite {
    async fn refresh_token(&mut self, token_hash: &str) -> DirResult<Option<RefreshRow>> {
        sqlx::query_as(
            "SELECT id, user_id, chain_id, replaced_by, expires_at, revoked_at \
             FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *self.0)
        .await
    }

    async fn successor(&mut self, id: Uuid) -> DirResult<Option<Successor>> {
        sqlx::query_as("SELECT token_hash, expires_at FROM refresh_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.0)
            .await
    }

    async fn chain_ended(&mut self, chain_id: Uuid) -> DirResult<bool> {
        let (ended,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM refresh_tokens \
             WHERE chain_id = $1 AND revoked_at IS NOT NULL AND replaced_by IS NULL)",
        )
        .bind(chain_id)
        .fetch_one(&mut *self.0)
        .await?;
        Ok(ended)
    }

    async fn revoke_chain(&mut self, chain_id: Uuid, now: DateTime<Utc>) -> DirResult<()> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE chain_id = $1 AND revoked_at IS NULL",
        )
        .bind(chain_id)
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn insert_refresh_token(
        &mut self,
        id: Uuid,
        user_id: Uuid,
        chain_id: Uuid,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> DirResult<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, chain_id, token_hash, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(user_id)
        .bind(chain_id)
        .bind(token_hash)
        .bind(expires_at)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn spend_refresh_token(
        &mut self,
        id: Uuid,
        successor: Uuid,
        now: DateTime<Utc>,
    ) -> DirResult<()> {
        sqlx::query("UPDATE refresh_tokens SET replaced_by = $2, revoked_at = $3 WHERE id = $1")
            .bind(id)
            .bind(successor)
            .bind(now)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn insert_family(
        &mut self,
        id: Uuid,
        name: &str,
        creator: Uuid,
        now: DateTime<Utc>,
    ) -> DirResult<()> {
        sqlx::query(
            "INSERT INTO families (id, name, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(id)
        .bind(name)
        .bind(creator)
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn lock_family(&mut self, _family_id: Uuid) -> DirResult<()> {
        // The write transaction serialises every change already.
        Ok(())
    }

    async fn role(&mut self, family_id: Uuid, user_id: Uuid) -> DirResult<Option<String>> {
        sqlx::query_scalar(
            "SELECT role FROM family_memberships WHERE family_id = $1 AND user_id = $2",
        )
        .bind(family_id)
        .bind(user_id)
        .fetch_optional(&mut *self.0)
        .await
    }

    async fn role_held(&mut self, family_id: Uuid, user_id: Uuid) -> DirResult<Option<String>> {
        sqlx::query_scalar(
            "SELECT role FROM family_memberships WHERE family_id = $1 AND user_id = $2",
        )
        .bind(family_id)
        .bind(user_id)
        .fetch_optional(&mut *self.0)
        .await
    }

    async fn admin_count(&mut self, family_id: Uuid) -> DirResult<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM family_memberships WHERE family_id = $1 AND role = 'admin'",
        )
        .bind(family_id)
        .fetch_one(&mut *self.0)
        .await
    }

    async fn set_role(&mut self, family_id: Uuid, user_id: Uuid, role: &str) -> DirResult<()> {
        sqlx::query(
            "UPDATE family_memberships SET role = $3 WHERE family_id = $1 AND user_id = $2",
        )
        .bind(family_id)
        .bind(user_id)
        .bind(role)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn member(&mut self, family_id: Uuid, user_id: Uuid) -> DirResult<Option<Member>> {
        sqlx::query_as(
            "SELECT u.id AS user_id, u.email, u.display_name, m.role, m.created_at AS joined_at \
             FROM family_memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.family_id = $1 AND m.user_id = $2",
        )
        .bind(family_id)
        .bind(user_id)
        .fetch_optional(&mut *self.0)
        .await
    }

    async fn insert_membership(
        &mut self,
        family_id: Uuid,
        user_id: Uuid,
        role: &str,
        now: DateTime<Utc>,
    ) -> DirResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO family_memberships (family_id, user_id, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (family_id, user_id) DO NOTHING",
        )
        .bind(family_id)
        .bind(user_id)
        .bind(role)
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn delete_membership(&mut self, family_id: Uuid, user_id: Uuid) -> DirResult<()> {
        sqlx::query("DELETE FROM family_memberships WHERE family_id = $1 AND user_id = $2")
            .bind(family_id)
            .bind(user_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn revoke_links_issued(
        &mut self,
        family_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> DirResult<()> {
        sqlx::query(
            "UPDATE read_only_tokens SET revoked_at = $3, updated_at = $3 \
             WHERE created_by = $2 AND revoked_at IS NULL \
               AND list_id IN (SELECT id FROM grocery_lists WHERE family_id = $1)",
        )
        .bind(family_id)
        .bind(user_id)
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn revoke_invitations_issued(
        &mut self,
        family_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> DirResult<()> {
        sqlx::query(
            "UPDATE invitations SET revoked_at = $3, updated_at = $3 \
             WHERE family_id = $1 AND invited_by = $2 \
               AND accepted_at IS NULL AND revoked_at IS NULL",
        )
        .bind(family_id)
        .bind(user_id)
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn insert_invitation(
        &mut self,
        id: Uuid,
        family_id: Uuid,
        code_hash: &str,
        role: &str,
        invited_by: Uuid,
        expires_at: DateTime<Utc>,
    ) -> DirResult<()> {
        sqlx::query(
            "INSERT INTO invitations (id, family_id, code_hash, role, invited_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(family_id)
        .bind(code_hash)
        .bind(role)
        .bind(invited_by)
        .bind(expires_at)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn invitation(&mut self, code_hash: &str) -> DirResult<Option<InvitationRow>> {
        sqlx::query_as(
            "SELECT i.id, i.family_id, i.role, i.expires_at, i.accepted_at, i.revoked_at \
             FROM invitations i JOIN families f ON f.id = i.family_id \
             WHERE i.code_hash = $1 AND f.deleted_at IS NULL",
        )
        .bind(code_hash)
        .fetch_optional(&mut *self.0)
        .await
    }

    async fn mark_accepted(
        &mut self,
        id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> DirResult<()> {
        sqlx::query("UPDATE invitations SET accepted_by = $2, accepted_at = $3 WHERE id = $1")
            .bind(id)
            .bind(user_id)
            .bind(now)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn insert_list(
        &mut self,
        id: Uuid,
        family_id: Uuid,
        created_by: Uuid,
        name: &str,
        now: DateTime<Utc>,
    ) -> DirResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO grocery_lists (id, family_id, created_by, name, head_seq, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 1, $5, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(family_id)
        .bind(created_by)
        .bind(name)
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn insert_first_update(
        &mut self,
        list_id: Uuid,
        update: &[u8],
        origin: &str,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> DirResult<()> {
        sqlx::query(
            "INSERT INTO doc_updates (list_id, seq, update_v1, origin, user_id, created_at) \
             VALUES ($1, 1, $2, $3, $4, $5)",
        )
        .bind(list_id)
        .bind(update)
        .bind(origin)
        .bind(user_id)
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn list_row(&mut self, id: Uuid) -> DirResult<ListRow> {
        sqlx::query_as(concat!(
            "SELECT ",
            list_columns!(),
            " FROM grocery_lists WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *self.0)
        .await
    }

    async fn delete_expired_key(
        &mut self,
        user_id: Uuid,
        key: &str,
        now: DateTime<Utc>,
    ) -> DirResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND expires_at < $3",
        )
        .bind(user_id)
        .bind(key)
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn insert_key(&mut self, record: &IdempotencyRecord) -> DirResult<bool> {
        // A concurrent request with the same key waited for the write lock
        // until the first committed or rolled back.
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, request_method, request_path, request_hash, \
             response_status, response_body, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (user_id, key) DO NOTHING",
        )
        .bind(record.user_id)
        .bind(&record.key)
        .bind(&record.method)
        .bind(&record.path)
        .bind(&record.request_hash)
        .bind(i32::from(record.response_status))
        .bind(&record.response_body)
        .bind(record.expires_at)
        .execute(&mut *self.0)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn stored_key(&mut self, user_id: Uuid, key: &str) -> DirResult<StoredKey> {
        sqlx::query_as(
            "SELECT request_method, request_path, request_hash, response_status, response_body \
             FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_one(&mut *self.0)
        .await
    }

    async fn commit(self) -> DirResult<()> {
        self.0.commit().await
    }
}
