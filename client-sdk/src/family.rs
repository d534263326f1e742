//! A family's lists as the server lists them.

use reqwest::Method;
use serde::Deserialize;
use uuid::Uuid;

use crate::client::Shared;
use crate::rest::RestError;

#[derive(Deserialize)]
struct Page {
    lists: Vec<Entry>,
    next_cursor: Option<Uuid>,
}

#[derive(Deserialize)]
struct Entry {
    id: Uuid,
}

/// The ids of the family's lists (not deleted), every page.
pub(crate) async fn fetch_lists(
    shared: &Shared,
    family: Uuid,
    token: &str,
) -> Result<Vec<Uuid>, RestError> {
    let mut ids = Vec::new();
    let mut cursor: Option<Uuid> = None;
    for _ in 0..MAX_PAGES {
        let mut path = format!("/v1/families/{family}/lists?limit=200");
        if let Some(cursor) = cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page: Page = shared
            .rest
            .call(Method::GET, &path, Some(token), None)
            .await?;
        ids.extend(page.lists.into_iter().map(|l| l.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(ids),
        }
    }
    Err(RestError::Api {
        status: 0,
        code: "too_many_pages".into(),
        message: format!("family {family} lists more than {MAX_PAGES} pages of lists"),
    })
}

/// Pages of 200 lists fetched at most: a server that keeps answering with
/// a next page cannot keep the sync loop here.
const MAX_PAGES: usize = 100;

/// What the server says of a list a socket closed with 4404.
pub(crate) enum ListFate {
    /// Deleted, or never there: take it off the device.
    Gone,
    /// The user may no longer see it.
    Forbidden,
    /// It is there: the 4404 was about a subscription, not the list.
    Exists,
    /// The server could not be asked.
    Unknown(RestError),
}

/// Asks the server whether `list` still exists for the user.
pub(crate) async fn fate(shared: &Shared, list: Uuid, token: &str) -> ListFate {
    #[derive(Deserialize)]
    struct Detail {
        deleted_at: Option<serde_json::Value>,
    }
    let answer: Result<Detail, RestError> = shared
        .rest
        .call(Method::GET, &format!("/v1/lists/{list}"), Some(token), None)
        .await;
    match answer {
        Ok(detail) if detail.deleted_at.as_ref().is_some_and(|d| !d.is_null()) => ListFate::Gone,
        Ok(_) => ListFate::Exists,
        Err(e) => match e.status() {
            Some(404 | 410) => ListFate::Gone,
            Some(403) => ListFate::Forbidden,
            _ => ListFate::Unknown(e),
        },
    }
}
