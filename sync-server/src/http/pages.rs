//! Cursor pagination shared by the listings.

use crate::error::ApiError;

/// Largest page of a paginated listing.
pub const MAX_PAGE: i64 = 200;

/// The page size asked for (default 50), checked.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_PAGE}"),
        ))
    }
}

/// Cuts `rows` (read with `limit + 1`) to a page; the cursor of the next
/// page, from the page's last row, when there is one.
pub fn next_page<T, C>(rows: &mut Vec<T>, limit: i64, cursor: impl Fn(&T) -> C) -> Option<C> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor)
    } else {
        None
    }
}
