//! [`SqliteDirectory`]: the directory in SQLite. Every transaction that
//! writes begins with `BEGIN IMMEDIATE` on the one writer connection, so a
//! check that guards an invariant (the last admin, one-time codes,
//! refresh-token rotation) and the write it allows cannot interleave with
//! another writer: what PostgreSQL does with row locks.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};
use uuid::Uuid;

use super::{SqliteDb, links, now};
use crate::directory::{
    Acceptance, Created, DirResult, DirectoryStore, Family, IdempotencyRecord, InvitationRow,
    ListAccess, ListRow, Member, MemberChange, ReadOnlyLink, RefreshRow, Rotation, Successor, User,
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
        let mut tx = self.db.write().await?;
        let row: Option<RefreshRow> = sqlx::query_as(
            "SELECT id, user_id, chain_id, replaced_by, expires_at, revoked_at \
                 FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(RefreshRow {
            id,
            user_id,
            chain_id,
            replaced_by,
            expires_at,
            revoked_at,
        }) = row
        else {
            return Ok(Rotation::Unknown);
        };
        if let (Some(successor), Some(spent_at)) = (replaced_by, revoked_at)
            && Utc::now() - spent_at < chrono::Duration::from_std(grace).unwrap_or_default()
        {
            let next: Option<Successor> =
                sqlx::query_as("SELECT token_hash, expires_at FROM refresh_tokens WHERE id = $1")
                    .bind(successor)
                    .fetch_optional(&mut *tx)
                    .await?;
            // The successor is the one this token derives, and the sign-in
            // was not ended since: no token of the chain was revoked without
            // a successor (logout, or reuse detected).
            let (chain_ended,): (bool,) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM refresh_tokens \
                 WHERE chain_id = $1 AND revoked_at IS NOT NULL AND replaced_by IS NULL)",
            )
            .bind(chain_id)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(next) = next
                && next.token_hash == new_hash
                && !chain_ended
            {
                tx.commit().await?;
                return Ok(Rotation::Replayed {
                    user_id,
                    expires_at: next.expires_at,
                });
            }
        }
        if replaced_by.is_some() || revoked_at.is_some() {
            revoke_chain(&mut tx, chain_id).await?;
            tx.commit().await?;
            return Ok(Rotation::Reused);
        }
        if expires_at <= Utc::now() {
            return Ok(Rotation::Expired);
        }
        let new_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, chain_id, token_hash, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new_id)
        .bind(user_id)
        .bind(chain_id)
        .bind(new_hash)
        .bind(new_expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE refresh_tokens SET replaced_by = $2, revoked_at = $3 WHERE id = $1")
            .bind(id)
            .bind(new_id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Rotation::Rotated { user_id })
    }

    async fn revoke_refresh_token(&self, token_hash: &str) -> DirResult<Option<Uuid>> {
        let mut tx = self.db.write().await?;
        let row: Option<(Uuid, Uuid)> =
            sqlx::query_as("SELECT user_id, chain_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((user_id, chain_id)) = row else {
            return Ok(None);
        };
        revoke_chain(&mut tx, chain_id).await?;
        tx.commit().await?;
        Ok(Some(user_id))
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
        let mut tx = self.db.write().await?;
        if let Some(prior) = claim_key(&mut tx, idempotency).await? {
            return Ok(prior);
        }
        sqlx::query(
            "INSERT INTO families (id, name, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(id)
        .bind(name)
        .bind(creator)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO family_memberships (family_id, user_id, role, created_at, updated_at) \
             VALUES ($1, $2, 'admin', $3, $3)",
        )
        .bind(id)
        .bind(creator)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Created::New(Family {
            id,
            name: name.to_owned(),
            created_at: now,
            updated_at: now,
            role: "admin".to_owned(),
        }))
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
        let mut tx = self.db.write().await?;
        let Some(current) = lock_membership(&mut tx, family_id, user_id).await? else {
            return Ok(MemberChange::NotMember);
        };
        if role_in(&mut tx, family_id, acting).await?.as_deref() != Some("admin") {
            return Ok(MemberChange::NotAdmin);
        }
        if current == "admin" && role != "admin" && admin_count(&mut tx, family_id).await? <= 1 {
            return Ok(MemberChange::LastAdmin);
        }
        sqlx::query(
            "UPDATE family_memberships SET role = $3 WHERE family_id = $1 AND user_id = $2",
        )
        .bind(family_id)
        .bind(user_id)
        .bind(role)
        .execute(&mut *tx)
        .await?;
        let member = member_in(&mut tx, family_id, user_id).await?;
        tx.commit().await?;
        Ok(MemberChange::Done(member))
    }

    async fn remove_member(
        &self,
        family_id: Uuid,
        user_id: Uuid,
        acting: Uuid,
    ) -> DirResult<MemberChange> {
        let mut tx = self.db.write().await?;
        let Some(current) = lock_membership(&mut tx, family_id, user_id).await? else {
            return Ok(MemberChange::NotMember);
        };
        if acting != user_id
            && role_in(&mut tx, family_id, acting).await?.as_deref() != Some("admin")
        {
            return Ok(MemberChange::NotAdmin);
        }
        if current == "admin" && admin_count(&mut tx, family_id).await? <= 1 {
            return Ok(MemberChange::LastAdmin);
        }
        sqlx::query("DELETE FROM family_memberships WHERE family_id = $1 AND user_id = $2")
            .bind(family_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        // Links they issued to the family's lists stop for good (not only
        // while they are away: they could be invited back).
        sqlx::query(
            "UPDATE read_only_tokens SET revoked_at = $3, updated_at = $3 \
             WHERE created_by = $2 AND revoked_at IS NULL \
               AND list_id IN (SELECT id FROM grocery_lists WHERE family_id = $1)",
        )
        .bind(family_id)
        .bind(user_id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        // Codes they handed out and nobody used no longer let anyone in.
        sqlx::query(
            "UPDATE invitations SET revoked_at = $3, updated_at = $3 \
             WHERE family_id = $1 AND invited_by = $2 \
               AND accepted_at IS NULL AND revoked_at IS NULL",
        )
        .bind(family_id)
        .bind(user_id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(MemberChange::Done(None))
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
        let mut tx = self.db.write().await?;
        // In the write transaction: an admin removed meanwhile (which
        // revokes their codes) was removed before, and may no longer invite.
        let role_now: Option<(String,)> = sqlx::query_as(
            "SELECT role FROM family_memberships \
             WHERE family_id = $1 AND user_id = $2",
        )
        .bind(family_id)
        .bind(invited_by)
        .fetch_optional(&mut *tx)
        .await?;
        if role_now.is_none_or(|(r,)| r != "admin") {
            return Ok(None);
        }
        let id = Uuid::now_v7();
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
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    async fn accept_invitation(&self, code_hash: &str, user_id: Uuid) -> DirResult<Acceptance> {
        let mut tx = self.db.write().await?;
        let row: Option<InvitationRow> = sqlx::query_as(
            "SELECT i.id, i.family_id, i.role, i.expires_at, i.accepted_at, i.revoked_at \
                 FROM invitations i JOIN families f ON f.id = i.family_id \
                 WHERE i.code_hash = $1 AND f.deleted_at IS NULL",
        )
        .bind(code_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(InvitationRow {
            id,
            family_id,
            role,
            expires_at,
            accepted_at,
            revoked_at,
        }) = row
        else {
            return Ok(Acceptance::Unknown);
        };
        if accepted_at.is_some() || revoked_at.is_some() {
            return Ok(Acceptance::Used);
        }
        if expires_at <= Utc::now() {
            return Ok(Acceptance::Expired);
        }
        let inserted = sqlx::query(
            "INSERT INTO family_memberships (family_id, user_id, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (family_id, user_id) DO NOTHING",
        )
        .bind(family_id)
        .bind(user_id)
        .bind(&role)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // The code stays valid for someone who is not a member yet.
            return Ok(Acceptance::AlreadyMember { family_id });
        }
        sqlx::query("UPDATE invitations SET accepted_by = $2, accepted_at = $3 WHERE id = $1")
            .bind(id)
            .bind(user_id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Acceptance::Joined { family_id, role })
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
        let mut tx = self.db.write().await?;
        if let Some(prior) = claim_key(&mut tx, idempotency).await? {
            return Ok(prior);
        }
        let inserted = sqlx::query(
            "INSERT INTO grocery_lists (id, family_id, created_by, name, head_seq, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 1, $5, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(family_id)
        .bind(created_by)
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(Created::Exists);
        }
        sqlx::query(
            "INSERT INTO doc_updates (list_id, seq, update_v1, origin, user_id, created_at) \
             VALUES ($1, 1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(initial_update)
        .bind(origin)
        .bind(created_by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query_as::<_, ListRow>(concat!(
            "SELECT ",
            list_columns!(),
            " FROM grocery_lists WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Created::New(row))
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
                "UPDATE grocery_lists SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL RETURNING ",
                list_columns!(),
                ""
            )
        } else {
            concat!(
                "UPDATE grocery_lists SET deleted_at = NULL WHERE id = $1 AND deleted_at IS NOT NULL RETURNING ",
                list_columns!(),
                ""
            )
        };
        let query = sqlx::query_as::<_, ListRow>(query).bind(id);
        let query = if deleted { query.bind(now()) } else { query };
        query.fetch_optional(self.db.writer()).await
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

async fn revoke_chain(tx: &mut Transaction<'_, Sqlite>, chain_id: Uuid) -> DirResult<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE chain_id = $1 AND revoked_at IS NULL",
    )
    .bind(chain_id)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn lock_membership(
    tx: &mut Transaction<'_, Sqlite>,
    family_id: Uuid,
    user_id: Uuid,
) -> DirResult<Option<String>> {
    // The write transaction serialises every membership change, so two
    // admins demoting each other cannot both pass the last-admin check, and
    // an admin demoted meanwhile cannot act as one.
    role_in(tx, family_id, user_id).await
}

/// `user_id`'s role in the family, read in the transaction.
async fn role_in(
    tx: &mut Transaction<'_, Sqlite>,
    family_id: Uuid,
    user_id: Uuid,
) -> DirResult<Option<String>> {
    let role: Option<(String,)> =
        sqlx::query_as("SELECT role FROM family_memberships WHERE family_id = $1 AND user_id = $2")
            .bind(family_id)
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(role.map(|(role,)| role))
}

async fn admin_count(tx: &mut Transaction<'_, Sqlite>, family_id: Uuid) -> DirResult<i64> {
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM family_memberships WHERE family_id = $1 AND role = 'admin'",
    )
    .bind(family_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(count)
}

async fn member_in(
    tx: &mut Transaction<'_, Sqlite>,
    family_id: Uuid,
    user_id: Uuid,
) -> DirResult<Option<Member>> {
    sqlx::query_as::<_, Member>(
        "SELECT u.id AS user_id, u.email, u.display_name, m.role, m.created_at AS joined_at \
         FROM family_memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.family_id = $1 AND m.user_id = $2",
    )
    .bind(family_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await
}

/// Claims the idempotency key for the transaction's request. `Some` when
/// the key was used before (the caller returns it without doing anything).
/// A concurrent request with the same key waits for the write lock until
/// the first commits or rolls back.
async fn claim_key<T>(
    tx: &mut Transaction<'_, Sqlite>,
    record: Option<&IdempotencyRecord>,
) -> DirResult<Option<Created<T>>> {
    let Some(record) = record else {
        return Ok(None);
    };
    // An expired key may be used again.
    sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND expires_at < $3")
        .bind(record.user_id)
        .bind(&record.key)
        .bind(now())
        .execute(&mut **tx)
        .await?;
    let claimed = sqlx::query(
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
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if claimed == 1 {
        return Ok(None);
    }
    let (method, path, hash, status, body): (String, String, String, Option<i32>, Option<String>) =
        sqlx::query_as(
            "SELECT request_method, request_path, request_hash, response_status, response_body \
             FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(record.user_id)
        .bind(&record.key)
        .fetch_one(&mut **tx)
        .await?;
    if method != record.method || path != record.path || hash != record.request_hash {
        return Ok(Some(Created::KeyReused));
    }
    Ok(Some(Created::Replay {
        status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
        body: body.unwrap_or_else(|| "{}".to_owned()),
    }))
}
