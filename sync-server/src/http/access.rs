//! Who may see and change what over REST. Whoever is not a member of a
//! family is told that it, and what belongs to it, does not exist.

use larder_storage::directory::{Family, ListRow};
use uuid::Uuid;

use super::extract::Caller;
use crate::app::AppState;
use crate::error::ApiError;

/// The caller's membership of `family_id`; 404 when they are not a member
/// (whether or not the family exists).
pub async fn require_member(
    state: &AppState,
    family_id: Uuid,
    caller: &Caller,
) -> Result<Family, ApiError> {
    state
        .directory
        .family_for(family_id, caller.user_id)
        .await?
        .ok_or(ApiError::NotFound)
}

pub fn require_admin(family: &Family) -> Result<(), ApiError> {
    if family.role == "admin" {
        Ok(())
    } else {
        Err(admin_required())
    }
}

pub fn admin_required() -> ApiError {
    ApiError::forbidden("admin_required", "only a family admin may do this")
}

/// The list's row if the caller is a member of its family, deleted or not;
/// 404 otherwise.
pub(crate) async fn visible_list(
    state: &AppState,
    list_id: Uuid,
    caller: &Caller,
) -> Result<ListRow, ApiError> {
    state
        .directory
        .list_access(list_id, caller.user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    state
        .directory
        .list(list_id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The list's row if visible and not deleted.
pub(crate) async fn live_list(
    state: &AppState,
    list_id: Uuid,
    caller: &Caller,
) -> Result<ListRow, ApiError> {
    let row = visible_list(state, list_id, caller).await?;
    if row.deleted_at.is_some() {
        return Err(ApiError::NotFound);
    }
    Ok(row)
}
