//! The relational side of the product: accounts, refresh tokens, families,
//! memberships, invitations, list rows and idempotency keys.
//!
//! Every operation that must not half-happen runs in one transaction, and
//! every check that guards an invariant (the last admin, one-time codes,
//! refresh-token rotation) locks the row it reads, so concurrent requests
//! on any replica cannot both pass it.
//!
//! Creating operations take an optional [`IdempotencyRecord`]: the key is
//! claimed in the same transaction that creates the row, so a retried (or
//! concurrent) request with the same key either replays the stored response
//! or waits for the first to commit and then replays it; never a second row.

pub(crate) mod flow;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Result type of the directory: database failures only; refusals are
/// values of each operation's outcome.
pub type DirResult<T> = Result<T, sqlx::Error>;

/// A user account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// A family as seen by one of its members.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Family {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The reader's role in it.
    pub role: String,
}

/// A member of a family.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

/// A grocery list's row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListRow {
    pub id: Uuid,
    pub family_id: Uuid,
    pub name: String,
    pub status: String,
    pub item_count: i32,
    pub needed_count: i32,
    pub in_cart_count: i32,
    pub purchased_count: i32,
    pub head_seq: i64,
    pub projected_seq: i64,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The columns of [`ListRow`], for `concat!` into static queries.
#[macro_export]
#[doc(hidden)]
macro_rules! list_columns {
    () => {
        "id, family_id, name, status, item_count, needed_count, in_cart_count, \
         purchased_count, head_seq, projected_seq, created_by, created_at, updated_at, deleted_at"
    };
}

/// What a user may do with a list, from their membership of its family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListAccess {
    pub family_id: Uuid,
    /// The user's role in the family.
    pub role: String,
    pub is_deleted: bool,
}

/// An idempotency key claimed by a creating request, with the response it
/// produces if it is the first.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub user_id: Uuid,
    pub key: String,
    pub method: String,
    pub path: String,
    /// Hash of the request body: the same key with another body is refused.
    pub request_hash: String,
    pub response_status: u16,
    pub response_body: String,
    pub expires_at: DateTime<Utc>,
}

/// The outcome of a creating operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created<T> {
    /// Created now.
    New(T),
    /// The key was used before by the same request: its response.
    Replay { status: u16, body: String },
    /// The key was used before by another request.
    KeyReused,
    /// The row exists already (e.g. a client-chosen id).
    Exists,
}

/// Outcome of rotating a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The old token is now spent; the new one is stored.
    Rotated { user_id: Uuid },
    /// The token was spent moments ago (within the grace period) for the
    /// same successor: a retried refresh (a lost response, two tabs). The
    /// successor stands; it expires at `expires_at`.
    Replayed {
        user_id: Uuid,
        expires_at: DateTime<Utc>,
    },
    /// The token was spent or revoked before: the whole chain is now revoked.
    Reused,
    /// The token expired.
    Expired,
    /// No such token.
    Unknown,
}

/// Outcome of a membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Done(Option<Member>),
    NotMember,
    /// The acting user is not (or no longer) an admin of the family.
    NotAdmin,
    /// The family would be left without an admin.
    LastAdmin,
}

/// Outcome of accepting an invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptance {
    Joined { family_id: Uuid, role: String },
    AlreadyMember { family_id: Uuid },
    Expired,
    Used,
    Unknown,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RefreshRow {
    pub(crate) id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) chain_id: Uuid,
    pub(crate) replaced_by: Option<Uuid>,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
}

/// The token that replaced a spent refresh token.
#[derive(sqlx::FromRow)]
pub(crate) struct Successor {
    pub(crate) token_hash: String,
    pub(crate) expires_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct InvitationRow {
    pub(crate) id: Uuid,
    pub(crate) family_id: Uuid,
    pub(crate) role: String,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) accepted_at: Option<DateTime<Utc>>,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
}

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

/// The directory's operations, implemented by each database.
#[async_trait]
pub trait DirectoryStore: Send + Sync + std::fmt::Debug + 'static {
    // Accounts ---------------------------------------------------------------

    /// Creates a user; `None` when the email is taken (case-insensitively).
    async fn create_user(
        &self,
        email: &str,
        display_name: &str,
        password_hash: &str,
    ) -> DirResult<Option<User>>;

    async fn user_by_email(&self, email: &str) -> DirResult<Option<User>>;

    async fn user_by_id(&self, id: Uuid) -> DirResult<Option<User>>;

    /// Stores a refresh token (its hash) starting a new chain.
    async fn insert_refresh_token(
        &self,
        user_id: Uuid,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> DirResult<()>;

    /// Spends the refresh token `old_hash` and stores `new_hash` in its
    /// chain. A token spent within `grace` for this same successor is a
    /// retry and replays it; otherwise a token that was spent or revoked
    /// before revokes the chain: someone holds a copy of it.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> DirResult<Rotation>;

    /// Revokes the chain of the refresh token `token_hash` (logout). Returns
    /// the owner when the token was known.
    async fn revoke_refresh_token(&self, token_hash: &str) -> DirResult<Option<Uuid>>;

    // Families -----------------------------------------------------------------

    /// Creates a family with `creator` as its admin.
    async fn create_family(
        &self,
        id: Uuid,
        name: &str,
        creator: Uuid,
        now: DateTime<Utc>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> DirResult<Created<Family>>;

    /// The families `user_id` belongs to, oldest first.
    async fn families_of(&self, user_id: Uuid) -> DirResult<Vec<Family>>;

    /// `user_id`'s view of a family they belong to.
    async fn family_for(&self, family_id: Uuid, user_id: Uuid) -> DirResult<Option<Family>>;

    async fn rename_family(&self, family_id: Uuid, name: &str) -> DirResult<()>;

    /// The family's members, in the order they joined.
    async fn members(&self, family_id: Uuid) -> DirResult<Vec<Member>>;

    /// Changes a member's role as the admin `acting`; the last admin
    /// cannot be demoted.
    async fn set_member_role(
        &self,
        family_id: Uuid,
        user_id: Uuid,
        role: &str,
        acting: Uuid,
    ) -> DirResult<MemberChange>;

    /// Removes a member as `acting` (an admin, or the member leaving); the
    /// last admin cannot leave. Links the member issued to the family's
    /// lists and invitations nobody used stop working.
    async fn remove_member(
        &self,
        family_id: Uuid,
        user_id: Uuid,
        acting: Uuid,
    ) -> DirResult<MemberChange>;

    /// Ids of the family's lists, deleted or not (whose sockets a removed
    /// member may hold).
    async fn family_list_ids(&self, family_id: Uuid) -> DirResult<Vec<Uuid>>;

    // Invitations --------------------------------------------------------------

    /// Stores an invitation by `invited_by`, if they are an admin of the
    /// family when it is written; `None` otherwise.
    async fn create_invitation(
        &self,
        family_id: Uuid,
        code_hash: &str,
        role: &str,
        invited_by: Uuid,
        expires_at: DateTime<Utc>,
    ) -> DirResult<Option<Uuid>>;

    /// Spends the invitation `code_hash` making `user_id` a member.
    async fn accept_invitation(&self, code_hash: &str, user_id: Uuid) -> DirResult<Acceptance>;

    // Lists --------------------------------------------------------------------

    /// Creates a list row in `family_id` together with its document's first
    /// update (sequence 1 of its log).
    #[allow(clippy::too_many_arguments)]
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
    ) -> DirResult<Created<ListRow>>;

    /// A page of the family's lists ordered by id, after `after`.
    async fn family_lists(
        &self,
        family_id: Uuid,
        deleted: bool,
        after: Option<Uuid>,
        limit: i64,
    ) -> DirResult<Vec<ListRow>>;

    /// The list's row, deleted or not, if it belongs to a family.
    async fn list(&self, id: Uuid) -> DirResult<Option<ListRow>>;

    /// What `user_id` may do with the list: `None` when they are not a
    /// member of its family (or it has none).
    async fn list_access(&self, list_id: Uuid, user_id: Uuid) -> DirResult<Option<ListAccess>>;

    /// Soft-deletes (`deleted`) or restores a list. `None` when it was
    /// already in that state.
    async fn set_list_deleted(&self, id: Uuid, deleted: bool) -> DirResult<Option<ListRow>>;

    /// Deletes idempotency keys past their expiry.
    async fn purge_idempotency_keys(&self) -> DirResult<u64>;

    // Read-only links ----------------------------------------------------------

    /// Records a link to `list_id` issued by `created_by`.
    async fn create_read_only_link(
        &self,
        list_id: Uuid,
        created_by: Uuid,
        expires_at: DateTime<Utc>,
    ) -> DirResult<ReadOnlyLink>;

    /// The list's links that still work (not revoked, not expired), newest first.
    async fn read_only_links(&self, list_id: Uuid) -> DirResult<Vec<ReadOnlyLink>>;

    /// Revokes the link `id` of `list_id`; `None` when the list has no such
    /// link. Revoking twice is harmless.
    async fn revoke_read_only_link(
        &self,
        list_id: Uuid,
        id: Uuid,
    ) -> DirResult<Option<ReadOnlyLink>>;

    /// Whether the link `id` to `list_id` still works.
    async fn read_only_link_is_live(&self, list_id: Uuid, id: Uuid) -> DirResult<bool>;
}

/// The directory of whichever database the process uses; cheap to clone.
#[derive(Clone, Debug)]
pub struct Directory(Arc<dyn DirectoryStore>);

impl Directory {
    pub fn new(store: impl DirectoryStore) -> Self {
        Directory(Arc::new(store))
    }
}

impl std::ops::Deref for Directory {
    type Target = dyn DirectoryStore;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}
