//! Who may see a list over REST: shared by the handlers of lists, items and
//! links. Whoever is not a member of the list's family is told it does not
//! exist.

use larder_storage::directory::ListRow;
use uuid::Uuid;

use super::Caller;
use crate::app::AppState;
use crate::error::ApiError;

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
