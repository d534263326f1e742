//! The directory's multi-statement operations, written once for both
//! databases: each runs in one write transaction ([`WriteTx`]) whose
//! statements each backend supplies (one small function per query).
//!
//! The backends differ in how a transaction keeps a check and the write it
//! allows together: PostgreSQL locks the rows it reads (`FOR UPDATE`,
//! `FOR SHARE`), SQLite holds the database's one write lock from
//! `BEGIN IMMEDIATE`. The order of reads, checks and writes here is the
//! same for both.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    Acceptance, Created, DirResult, Family, IdempotencyRecord, InvitationRow, ListRow, Member,
    MemberChange, RefreshRow, Rotation, Successor,
};

/// A stored idempotency key: method, path, request hash, status, body.
pub(crate) type StoredKey = (String, String, String, Option<i32>, Option<String>);

/// The statements of the directory's write transactions.
#[async_trait]
pub(crate) trait WriteTx: Send {
    // Refresh tokens.
    /// The token, locked for the rest of the transaction.
    async fn refresh_token(&mut self, token_hash: &str) -> DirResult<Option<RefreshRow>>;
    async fn successor(&mut self, id: Uuid) -> DirResult<Option<Successor>>;
    /// Whether a token of the chain was revoked without a successor
    /// (logout, or reuse detected).
    async fn chain_ended(&mut self, chain_id: Uuid) -> DirResult<bool>;
    async fn revoke_chain(&mut self, chain_id: Uuid, now: DateTime<Utc>) -> DirResult<()>;
    async fn insert_refresh_token(
        &mut self,
        id: Uuid,
        user_id: Uuid,
        chain_id: Uuid,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> DirResult<()>;
    async fn spend_refresh_token(
        &mut self,
        id: Uuid,
        successor: Uuid,
        now: DateTime<Utc>,
    ) -> DirResult<()>;

    // Families and memberships.
    async fn insert_family(
        &mut self,
        id: Uuid,
        name: &str,
        creator: Uuid,
        now: DateTime<Utc>,
    ) -> DirResult<()>;
    /// Serialises membership changes of the family until commit.
    async fn lock_family(&mut self, family_id: Uuid) -> DirResult<()>;
    async fn role(&mut self, family_id: Uuid, user_id: Uuid) -> DirResult<Option<String>>;
    /// The role, kept from changing until commit.
    async fn role_held(&mut self, family_id: Uuid, user_id: Uuid) -> DirResult<Option<String>>;
    async fn admin_count(&mut self, family_id: Uuid) -> DirResult<i64>;
    async fn set_role(&mut self, family_id: Uuid, user_id: Uuid, role: &str) -> DirResult<()>;
    async fn member(&mut self, family_id: Uuid, user_id: Uuid) -> DirResult<Option<Member>>;
    /// False when the user is a member already.
    async fn insert_membership(
        &mut self,
        family_id: Uuid,
        user_id: Uuid,
        role: &str,
        now: DateTime<Utc>,
    ) -> DirResult<bool>;
    async fn delete_membership(&mut self, family_id: Uuid, user_id: Uuid) -> DirResult<()>;
    /// Revokes the read-only links `user_id` issued to the family's lists.
    async fn revoke_links_issued(
        &mut self,
        family_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> DirResult<()>;
    /// Revokes the invitations `user_id` issued that nobody used.
    async fn revoke_invitations_issued(
        &mut self,
        family_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> DirResult<()>;

    // Invitations.
    async fn insert_invitation(
        &mut self,
        id: Uuid,
        family_id: Uuid,
        code_hash: &str,
        role: &str,
        invited_by: Uuid,
        expires_at: DateTime<Utc>,
    ) -> DirResult<()>;
    /// The invitation of a family that exists, locked until commit.
    async fn invitation(&mut self, code_hash: &str) -> DirResult<Option<InvitationRow>>;
    async fn mark_accepted(&mut self, id: Uuid, user_id: Uuid, now: DateTime<Utc>)
    -> DirResult<()>;

    // Lists.
    /// False when a list with this id exists.
    async fn insert_list(
        &mut self,
        id: Uuid,
        family_id: Uuid,
        created_by: Uuid,
        name: &str,
        now: DateTime<Utc>,
    ) -> DirResult<bool>;
    /// Sequence 1 of the list's log.
    async fn insert_first_update(
        &mut self,
        list_id: Uuid,
        update: &[u8],
        origin: &str,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> DirResult<()>;
    async fn list_row(&mut self, id: Uuid) -> DirResult<ListRow>;

    // Idempotency keys.
    async fn delete_expired_key(
        &mut self,
        user_id: Uuid,
        key: &str,
        now: DateTime<Utc>,
    ) -> DirResult<()>;
    /// False when the key is held (by a committed request, or one that
    /// committed while this one waited).
    async fn insert_key(&mut self, record: &IdempotencyRecord) -> DirResult<bool>;
    async fn stored_key(&mut self, user_id: Uuid, key: &str) -> DirResult<StoredKey>;

    async fn commit(self) -> DirResult<()>;
}

/// Spends the refresh token `old_hash` for `new_hash`; see
/// [`super::DirectoryStore::rotate_refresh_token`].
pub(crate) async fn rotate_refresh_token<T: WriteTx>(
    mut tx: T,
    old_hash: &str,
    new_hash: &str,
    new_expires_at: DateTime<Utc>,
    grace: std::time::Duration,
) -> DirResult<Rotation> {
    let Some(RefreshRow {
        id,
        user_id,
        chain_id,
        replaced_by,
        expires_at,
        revoked_at,
    }) = tx.refresh_token(old_hash).await?
    else {
        return Ok(Rotation::Unknown);
    };
    let now = Utc::now();
    if let (Some(successor), Some(spent_at)) = (replaced_by, revoked_at)
        && now - spent_at < chrono::Duration::from_std(grace).unwrap_or_default()
    {
        let next = tx.successor(successor).await?;
        // The successor is the one this token derives, and the sign-in was
        // not ended since.
        let chain_ended = tx.chain_ended(chain_id).await?;
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
        tx.revoke_chain(chain_id, now).await?;
        tx.commit().await?;
        return Ok(Rotation::Reused);
    }
    if expires_at <= now {
        return Ok(Rotation::Expired);
    }
    let new_id = Uuid::now_v7();
    tx.insert_refresh_token(new_id, user_id, chain_id, new_hash, new_expires_at)
        .await?;
    tx.spend_refresh_token(id, new_id, now).await?;
    tx.commit().await?;
    Ok(Rotation::Rotated { user_id })
}

/// Revokes the chain of `token_hash` (logout); its owner when known.
pub(crate) async fn revoke_refresh_token<T: WriteTx>(
    mut tx: T,
    token_hash: &str,
) -> DirResult<Option<Uuid>> {
    let Some(row) = tx.refresh_token(token_hash).await? else {
        return Ok(None);
    };
    tx.revoke_chain(row.chain_id, Utc::now()).await?;
    tx.commit().await?;
    Ok(Some(row.user_id))
}

pub(crate) async fn create_family<T: WriteTx>(
    mut tx: T,
    id: Uuid,
    name: &str,
    creator: Uuid,
    now: DateTime<Utc>,
    idempotency: Option<&IdempotencyRecord>,
) -> DirResult<Created<Family>> {
    if let Some(prior) = claim_key(&mut tx, idempotency).await? {
        return Ok(prior);
    }
    tx.insert_family(id, name, creator, now).await?;
    tx.insert_membership(id, creator, "admin", now).await?;
    tx.commit().await?;
    Ok(Created::New(Family {
        id,
        name: name.to_owned(),
        created_at: now,
        updated_at: now,
        role: "admin".to_owned(),
    }))
}

pub(crate) async fn set_member_role<T: WriteTx>(
    mut tx: T,
    family_id: Uuid,
    user_id: Uuid,
    role: &str,
    acting: Uuid,
) -> DirResult<MemberChange> {
    // Every membership change of the family is serialised, so two admins
    // demoting each other cannot both pass the last-admin check, and an
    // admin demoted meanwhile cannot act as one.
    tx.lock_family(family_id).await?;
    let Some(current) = tx.role(family_id, user_id).await? else {
        return Ok(MemberChange::NotMember);
    };
    if tx.role(family_id, acting).await?.as_deref() != Some("admin") {
        return Ok(MemberChange::NotAdmin);
    }
    if current == "admin" && role != "admin" && tx.admin_count(family_id).await? <= 1 {
        return Ok(MemberChange::LastAdmin);
    }
    tx.set_role(family_id, user_id, role).await?;
    let member = tx.member(family_id, user_id).await?;
    tx.commit().await?;
    Ok(MemberChange::Done(member))
}

pub(crate) async fn remove_member<T: WriteTx>(
    mut tx: T,
    family_id: Uuid,
    user_id: Uuid,
    acting: Uuid,
) -> DirResult<MemberChange> {
    tx.lock_family(family_id).await?;
    let Some(current) = tx.role(family_id, user_id).await? else {
        return Ok(MemberChange::NotMember);
    };
    if acting != user_id && tx.role(family_id, acting).await?.as_deref() != Some("admin") {
        return Ok(MemberChange::NotAdmin);
    }
    if current == "admin" && tx.admin_count(family_id).await? <= 1 {
        return Ok(MemberChange::LastAdmin);
    }
    let now = Utc::now();
    tx.delete_membership(family_id, user_id).await?;
    // Links they issued to the family's lists stop for good (not only while
    // they are away: they could be invited back), and codes they handed out
    // that nobody used no longer let anyone in.
    tx.revoke_links_issued(family_id, user_id, now).await?;
    tx.revoke_invitations_issued(family_id, user_id, now)
        .await?;
    tx.commit().await?;
    Ok(MemberChange::Done(None))
}

pub(crate) async fn create_invitation<T: WriteTx>(
    mut tx: T,
    family_id: Uuid,
    code_hash: &str,
    role: &str,
    invited_by: Uuid,
    expires_at: DateTime<Utc>,
) -> DirResult<Option<Uuid>> {
    // The inviter's role is held until commit: an admin being removed
    // meanwhile (which revokes their codes) is waited for, and then may no
    // longer invite.
    if tx.role_held(family_id, invited_by).await?.as_deref() != Some("admin") {
        return Ok(None);
    }
    let id = Uuid::now_v7();
    tx.insert_invitation(id, family_id, code_hash, role, invited_by, expires_at)
        .await?;
    tx.commit().await?;
    Ok(Some(id))
}

pub(crate) async fn accept_invitation<T: WriteTx>(
    mut tx: T,
    code_hash: &str,
    user_id: Uuid,
) -> DirResult<Acceptance> {
    let Some(InvitationRow {
        id,
        family_id,
        role,
        expires_at,
        accepted_at,
        revoked_at,
    }) = tx.invitation(code_hash).await?
    else {
        return Ok(Acceptance::Unknown);
    };
    if accepted_at.is_some() || revoked_at.is_some() {
        return Ok(Acceptance::Used);
    }
    let now = Utc::now();
    if expires_at <= now {
        return Ok(Acceptance::Expired);
    }
    if !tx.insert_membership(family_id, user_id, &role, now).await? {
        // The code stays valid for someone who is not a member yet.
        return Ok(Acceptance::AlreadyMember { family_id });
    }
    tx.mark_accepted(id, user_id, now).await?;
    tx.commit().await?;
    Ok(Acceptance::Joined { family_id, role })
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn create_list<T: WriteTx>(
    mut tx: T,
    id: Uuid,
    family_id: Uuid,
    name: &str,
    created_by: Uuid,
    now: DateTime<Utc>,
    initial_update: &[u8],
    origin: &str,
    idempotency: Option<&IdempotencyRecord>,
) -> DirResult<Created<ListRow>> {
    if let Some(prior) = claim_key(&mut tx, idempotency).await? {
        return Ok(prior);
    }
    if !tx.insert_list(id, family_id, created_by, name, now).await? {
        return Ok(Created::Exists);
    }
    tx.insert_first_update(id, initial_update, origin, created_by, now)
        .await?;
    let row = tx.list_row(id).await?;
    tx.commit().await?;
    Ok(Created::New(row))
}

/// Claims the idempotency key for the transaction's request. `Some` when
/// the key was used before (the caller returns it without doing anything).
/// A concurrent request with the same key waits until the first commits or
/// rolls back.
async fn claim_key<T: WriteTx, R>(
    tx: &mut T,
    record: Option<&IdempotencyRecord>,
) -> DirResult<Option<Created<R>>> {
    let Some(record) = record else {
        return Ok(None);
    };
    // An expired key may be used again.
    tx.delete_expired_key(record.user_id, &record.key, Utc::now())
        .await?;
    if tx.insert_key(record).await? {
        return Ok(None);
    }
    let (method, path, hash, status, body) = tx.stored_key(record.user_id, &record.key).await?;
    if method != record.method || path != record.path || hash != record.request_hash {
        return Ok(Some(Created::KeyReused));
    }
    Ok(Some(Created::Replay {
        status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
        body: body.unwrap_or_else(|| "{}".to_owned()),
    }))
}
