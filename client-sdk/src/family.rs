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
    loop {
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
            // A server that repeats a cursor would loop: stop at 100 pages.
            Some(next) if ids.len() < 200 * 100 => cursor = Some(next),
            _ => return Ok(ids),
        }
    }
}
