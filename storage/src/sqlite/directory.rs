//! [`SqliteDirectory`]: the directory in SQLite. Every transaction that
//! writes begins with `BEGIN IMMEDIATE` on the one writer connection, so a
//! check that guards an invariant (the last admin, one-time codes,
//! refresh-token rotation) and the write it allows cannot interleave with
//! another writer: what PostgreSQL does with row locks.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::write_tx::SqliteWrite;
use super::{SqliteDb, links, now};
use crate::directory::flow;
use crate::directory::{
    Acceptance, Created, DirResult, DirectoryStore, Family, IdempotencyRecord, ListAccess, ListRow,
    Member, MemberChange, ReadOnlyLink, Rotation, User,
};
use crate::list_columns;

/// The relational directory over SQLite.
#[derive(Clone, Debug)]
pub struct SqliteDirectory {
    db: SqliteDb,
}

/// SQLite names no constraint in its errors: the statements that test for
/// a unique violation have only one unique key a fresh row can collide on.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

impl SqliteDirectory {
    pub fn new(db: SqliteDb) -> Self {
        SqliteDirectory { db }
    }
}

#[async_trait]
impl DirectoryStore for SqliteDirectory {
    // Accounts ---------------------------------------------------------------

    async fn create_user(
        &self,
        email: &str,
        display_name: &str,
        password_hash: &str,
    ) -> DirResult<Option<User>> {
        let result = sqlx::query_as::<_, User>(
            "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $3, $4) \
             RETURNING id, email, display_name, password_hash, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(email)
        .bind(display_name)
        .bind(password_hash)
        .fetch_one(self.db.writer())
        .await;
        match result {
            Ok(user) => Ok(Some(user)),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn user_by_email(&self, email: &str) -> DirResult<Option<User>> {
        sqlx::query_as::<_, User>(
            "SELECT id, email, display_name, password_hash, created_at FROM users \
             WHERE lower(email) = lower($1) AND deleted_at IS NULL",
        )
        .bind(email)
        .fetch_optional(self.db.readers())
        .await
    }

    async fn user_by_id(&self, id: Uuid) -> DirResult<Option<User>> {
        sqlx::query_as::<_, User>(
            "SELECT id, email, display_name, password_hash, created_at FROM users \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_optional(self.db.readers())
        .await
    }

    async fn insert_refresh_token(
        &self,
        user_id: Uuid,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> DirResult<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, chain_id, token_hash, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(Uuid::now_v7())
        .bind(token_hash)
        .bind(expires_at)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> DirResult<Rotation> {
        flow::rotate_refresh_token(
            SqliteWrite(self.db.write().await?),
            old_hash,
            new_hash,
            new_expires_at,
            grace,
        )
        .await
    }

    async fn revoke_refresh_token(&self, token_hash: &str) -> DirResult<Option<Uuid>> {
        flow::revoke_refresh_token(SqliteWrite(self.db.write().await?), token_hash).await
    }

    // Families -----------------------------------------------------------------

    async fn create_family(
        &self,
        id: Uuid,
        name: &str,
        creator: Uuid,
        now: DateTime<Utc>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> DirResult<Created<Family>> {
        flow::create_family(
            SqliteWrite(self.db.write().await?),
            id,
            name,
            creator,
            now,
            idempotency,
        )
        .await
    }

    async fn families_of(&self, user_id: Uuid) -> DirResult<Vec<Family>> {
        sqlx::query_as::<_, Family>(
            "SELECT f.id, f.name, f.created_at, f.updated_at, m.role FROM families f \
             JOIN family_memberships m ON m.family_id = f.id \
             WHERE m.user_id = $1 AND f.deleted_at IS NULL ORDER BY f.id",
        )
        .bind(user_id)
        .fetch_all(self.db.readers())
        .await
    }

    async fn family_for(&self, family_id: Uuid, user_id: Uuid) -> DirResult<Option<Family>> {
        sqlx::query_as::<_, Family>(
            "SELECT f.id, f.name, f.created_at, f.updated_at, m.role FROM families f \
             JOIN family_memberships m ON m.family_id = f.id \
             WHERE f.id = $1 AND m.user_id = $2 AND f.deleted_at IS NULL",
        )
        .bind(family_id)
        .bind(user_id)
        .fetch_optional(self.db.readers())
        .await
    }

    async fn rename_family(&self, family_id: Uuid, name: &str) -> DirResult<()> {
        sqlx::query("UPDATE families SET name = $2 WHERE id = $1 AND deleted_at IS NULL")
            .bind(family_id)
            .bind(name)
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    async fn members(&self, family_id: Uuid) -> DirResult<Vec<Member>> {
        sqlx::query_as::<_, Member>(
            "SELECT u.id AS user_id, u.email, u.display_name, m.role, m.created_at AS joined_at \
             FROM family_memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.family_id = $1 ORDER BY m.created_at, u.id",
        )
        .bind(family_id)
        .fetch_all(self.db.readers())
        .await
    }

    async fn set_member_role(
        &self,
        family_id: Uuid,
        user_id: Uuid,
        role: &str,
        acting: Uuid,
    ) -> DirResult<MemberChange> {
        flow::set_member_role(
            SqliteWrite(self.db.write().await?),
            family_id,
            user_id,
            role,
            acting,
        )
        .await
    }

    async fn remove_member(
        &self,
        family_id: Uuid,
        user_id: Uuid,
        acting: Uuid,
    ) -> DirResult<MemberChange> {
        flow::remove_member(
            SqliteWrite(self.db.write().await?),
            family_id,
            user_id,
            acting,
        )
        .await
    }

    async fn family_list_ids(&self, family_id: Uuid) -> DirResult<Vec<Uuid>> {
        let rows: Vec<(Uuid,)> =
            sqlx::query_as("SELECT id FROM grocery_lists WHERE family_id = $1")
                .bind(family_id)
                .fetch_all(self.db.readers())
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    // Invitations --------------------------------------------------------------

    async fn create_invitation(
        &self,
        family_id: Uuid,
        code_hash: &str,
        role: &str,
        invited_by: Uuid,
        expires_at: DateTime<Utc>,
    ) -> DirResult<Option<Uuid>> {
        flow::create_invitation(
            SqliteWrite(self.db.write().await?),
            family_id,
            code_hash,
            role,
            invited_by,
            expires_at,
        )
        .await
    }

    async fn accept_invitation(&self, code_hash: &str, user_id: Uuid) -> DirResult<Acceptance> {
        flow::accept_invitation(SqliteWrite(self.db.write().await?), code_hash, user_id).await
    }

    // Lists --------------------------------------------------------------------

    async fn create_list(
        &self,
        id: Uuid,
        family_id: Uuid,
        name: &str,
        created_by: Uuid,
        now: DateTime<Utc>,
        initial_update: &[u8],
        origin: &str,
        idempotency: Option<&IdempotencyRecord>,
    ) -> DirResult<Created<ListRow>> {
        flow::create_list(
            SqliteWrite(self.db.write().await?),
            id,
            family_id,
            name,
            created_by,
            now,
            initial_update,
            origin,
            idempotency,
        )
        .await
    }

    async fn family_lists(
        &self,
        family_id: Uuid,
        deleted: bool,
        after: Option<Uuid>,
        limit: i64,
    ) -> DirResult<Vec<ListRow>> {
        sqlx::query_as::<_, ListRow>(concat!(
            "SELECT ",
            list_columns!(),
            " FROM grocery_lists WHERE family_id = $1 \
             AND (deleted_at IS NOT NULL) = $2 AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
        ))
        .bind(family_id)
        .bind(deleted)
        .bind(after)
        .bind(limit)
        .fetch_all(self.db.readers())
        .await
    }

    async fn list(&self, id: Uuid) -> DirResult<Option<ListRow>> {
        sqlx::query_as::<_, ListRow>(concat!(
            "SELECT ",
            list_columns!(),
            " FROM grocery_lists WHERE id = $1 AND family_id IS NOT NULL"
        ))
        .bind(id)
        .fetch_optional(self.db.readers())
        .await
    }

    async fn list_access(&self, list_id: Uuid, user_id: Uuid) -> DirResult<Option<ListAccess>> {
        let row: Option<(Uuid, String, bool)> = sqlx::query_as(
            "SELECT l.family_id, m.role, l.deleted_at IS NOT NULL FROM grocery_lists l \
             JOIN families f ON f.id = l.family_id AND f.deleted_at IS NULL \
             JOIN family_memberships m ON m.family_id = l.family_id AND m.user_id = $2 \
             WHERE l.id = $1",
        )
        .bind(list_id)
        .bind(user_id)
        .fetch_optional(self.db.readers())
        .await?;
        Ok(row.map(|(family_id, role, is_deleted)| ListAccess {
            family_id,
            role,
            is_deleted,
        }))
    }

    async fn set_list_deleted(&self, id: Uuid, deleted: bool) -> DirResult<Option<ListRow>> {
        let query: &'static str = if deleted {
            concat!(
                "UPDATE grocery_lists SET deleted_at = $2, updated_at = $2 WHERE id = $1 AND deleted_at IS NULL RETURNING ",
                list_columns!(),
                ""
            )
        } else {
            concat!(
                "UPDATE grocery_lists SET deleted_at = NULL, updated_at = $2 WHERE id = $1 AND deleted_at IS NOT NULL RETURNING ",
                list_columns!(),
                ""
            )
        };
        // updated_at is set here: RETURNING does not show what the AFTER
        // UPDATE trigger writes.
        sqlx::query_as::<_, ListRow>(query)
            .bind(id)
            .bind(now())
            .fetch_optional(self.db.writer())
            .await
    }

    async fn purge_idempotency_keys(&self) -> DirResult<u64> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at < $1")
                .bind(now())
                .execute(self.db.writer())
                .await?
                .rows_affected(),
        )
    }

    // Read-only links ----------------------------------------------------------

    async fn create_read_only_link(
        &self,
        list_id: Uuid,
        created_by: Uuid,
        expires_at: DateTime<Utc>,
    ) -> DirResult<ReadOnlyLink> {
        links::create(&self.db, list_id, created_by, expires_at).await
    }

    async fn read_only_links(&self, list_id: Uuid) -> DirResult<Vec<ReadOnlyLink>> {
        links::working(self.db.readers(), list_id).await
    }

    async fn revoke_read_only_link(
        &self,
        list_id: Uuid,
        id: Uuid,
    ) -> DirResult<Option<ReadOnlyLink>> {
        links::revoke(&self.db, list_id, id).await
    }

    async fn read_only_link_is_live(&self, list_id: Uuid, id: Uuid) -> DirResult<bool> {
        links::is_live(self.db.readers(), list_id, id).await
    }
}
