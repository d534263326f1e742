//! Items. Reads come from the projected rows (no document is loaded);
//! writes become CRDT updates applied through the list's document
//! ([`crate::rooms::Rooms::write`]): connected clients see them live, they
//! are logged and relayed like any other edit, and projected afterwards.
//! `?wait=projected` on a write answers once the rows reflect it.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::Utc;
use larder_crdt::ItemStatus;
use larder_crdt::list::{ItemPatch, NewItem};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::access::{live_list, require_member};
use super::check::{self, text};
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller, Validate, double_option};
use super::idempotency::new_id;
use super::pages::{next_page, page_limit};
use super::views::ItemView;
use super::write::{WriteQuery, settle, write_error};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::rooms::write::WriteError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/lists/{list_id}/items", post(add_item))
        .route(
            "/v1/lists/{list_id}/items/{item_id}",
            patch(update_item).delete(delete_item),
        )
        .route("/v1/families/{family_id}/items", get(search_items))
}

/// An item found by a search.
#[derive(Debug, Serialize, ToSchema)]
pub struct FoundItem {
    pub list_id: Uuid,
    #[serde(flatten)]
    pub item: ItemView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemPage {
    pub items: Vec<FoundItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Status of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatusField {
    Needed,
    InCart,
    Purchased,
}

impl From<ItemStatusField> for ItemStatus {
    fn from(s: ItemStatusField) -> Self {
        match s {
            ItemStatusField::Needed => ItemStatus::Needed,
            ItemStatusField::InCart => ItemStatus::InCart,
            ItemStatusField::Purchased => ItemStatus::Purchased,
        }
    }
}

fn position(value: &Option<String>) -> Result<(), String> {
    match value {
        Some(p) if !larder_crdt::position::is_key(p) => Err(
            "position must be a fractional index: digits and ASCII letters, not ending in 0"
                .to_owned(),
        ),
        _ => Ok(()),
    }
}

fn nested_text(field: &str, value: &Option<Option<String>>) -> Result<(), String> {
    match value {
        Some(inner) => text(field, inner),
        None => Ok(()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItemRequest {
    /// 1 to 200 characters.
    #[schema(example = "Milk")]
    pub name: String,
    #[serde(default)]
    pub quantity: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    /// A user id.
    #[serde(default)]
    pub assignee: Option<String>,
    /// Fractional index; after the last item when absent.
    #[serde(default)]
    pub position: Option<String>,
    /// An id chosen by the client; derived from `Idempotency-Key` when one
    /// is sent, else fresh.
    #[serde(default)]
    pub id: Option<Uuid>,
}

impl Validate for NewItemRequest {
    fn validate(&self) -> Result<(), String> {
        check::name("name", &self.name, larder_crdt::list::MAX_NAME_CHARS)?;
        text("quantity", &self.quantity)?;
        text("category", &self.category)?;
        text("note", &self.note)?;
        text("assignee", &self.assignee)?;
        text("position", &self.position)?;
        position(&self.position)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemPatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<ItemStatusField>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub quantity: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub category: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub note: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub assignee: Option<Option<String>>,
    #[serde(default)]
    pub position: Option<String>,
}

impl Validate for ItemPatchRequest {
    fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.name {
            check::name("name", name, larder_crdt::list::MAX_NAME_CHARS)?;
        }
        nested_text("quantity", &self.quantity)?;
        nested_text("category", &self.category)?;
        nested_text("note", &self.note)?;
        nested_text("assignee", &self.assignee)?;
        text("position", &self.position)?;
        position(&self.position)?;
        let nothing = self.name.is_none()
            && self.status.is_none()
            && self.quantity.is_none()
            && self.category.is_none()
            && self.note.is_none()
            && self.assignee.is_none()
            && self.position.is_none();
        if nothing {
            return Err("give at least one field to change".to_owned());
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Part of the name, case-insensitive (1 to 100 characters).
    pub q: String,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Adds an item to the list's document. With `Idempotency-Key` (or an
/// `id`) a retry adds nothing new and returns the item.
#[utoipa::path(post, path = "/v1/lists/{list_id}/items", tag = "items", security(("bearer" = [])),
    params(("list_id" = Uuid, Path), WriteQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key name the same item")),
    request_body = NewItemRequest,
    responses(
        (status = 201, body = ItemView),
        (status = 202, description = "Written; not projected within 10 s", body = ItemView),
        (status = 404, description = "No such list, deleted, or not a member", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
    ))]
async fn add_item(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(list_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<WriteQuery>,
    headers: HeaderMap,
    body: ApiJson<NewItemRequest>,
) -> Result<(StatusCode, Json<ItemView>), ApiError> {
    let wait = query.wants_projection()?;
    live_list(&state, list_id, &caller).await?;
    state.limit_writes(&caller).await?;
    let request = body.value;
    let id = new_id(request.id, &headers, &caller, list_id)?;
    let user = caller.user_id.to_string();
    let (item, range) = state
        .rooms
        .write(list_id, caller.user_id, move |list, txn| {
            let key = id.to_string();
            if let Some(existing) = list.item(txn, &key) {
                return Ok(existing);
            }
            let position = match request.position {
                Some(p) => Some(p),
                None => {
                    // A position some client wrote that is no valid key
                    // must not push new items to the top.
                    let last = list
                        .read(txn)
                        .items
                        .into_iter()
                        .filter_map(|i| i.position)
                        .filter(|p| larder_crdt::position::is_key(p))
                        .max();
                    larder_crdt::position::between(last.as_deref(), None)
                }
            };
            list.add_item(
                txn,
                &NewItem {
                    id: key.clone(),
                    name: request.name,
                    quantity: request.quantity,
                    category: request.category,
                    note: request.note,
                    position,
                    added_by: Some(user),
                    added_at_ms: Utc::now().timestamp_millis(),
                },
            )?;
            if request.assignee.is_some() {
                list.update_item(
                    txn,
                    &key,
                    &ItemPatch {
                        assignee: Some(request.assignee),
                        ..ItemPatch::default()
                    },
                )?;
            }
            list.item(txn, &key)
                .ok_or_else(|| WriteError::Invalid("the item did not fit the schema".into()))
        })
        .await
        .map_err(write_error)?;
    let view =
        ItemView::from_doc(&item).ok_or_else(|| ApiError::invalid("the item id is not a UUID"))?;
    let status = settle(&state, list_id, range, wait, StatusCode::CREATED).await?;
    Ok((status, Json(view)))
}

/// Changes fields of an item (`null` removes an optional field).
#[utoipa::path(patch, path = "/v1/lists/{list_id}/items/{item_id}", tag = "items",
    security(("bearer" = [])),
    params(("list_id" = Uuid, Path), ("item_id" = Uuid, Path), WriteQuery),
    request_body = ItemPatchRequest,
    responses(
        (status = 200, body = ItemView),
        (status = 404, description = "No such list or item, or not a member", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
    ))]
async fn update_item(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((list_id, item_id)): ApiPath<(Uuid, Uuid)>,
    ApiQuery(query): ApiQuery<WriteQuery>,
    body: ApiJson<ItemPatchRequest>,
) -> Result<(StatusCode, Json<ItemView>), ApiError> {
    let wait = query.wants_projection()?;
    live_list(&state, list_id, &caller).await?;
    state.limit_writes(&caller).await?;
    let request = body.value;
    let patch = ItemPatch {
        name: request.name,
        quantity: request.quantity,
        status: request.status.map(ItemStatus::from),
        category: request.category,
        note: request.note,
        assignee: request.assignee,
        position: request.position,
    };
    let (item, range) = state
        .rooms
        .write(list_id, caller.user_id, move |list, txn| {
            let key = item_id.to_string();
            list.update_item(txn, &key, &patch)?;
            list.item(txn, &key)
                .ok_or_else(|| WriteError::Missing(format!("item {key} does not exist")))
        })
        .await
        .map_err(write_error)?;
    let view = ItemView::from_doc(&item).ok_or(ApiError::NotFound)?;
    let status = settle(&state, list_id, range, wait, StatusCode::OK).await?;
    Ok((status, Json(view)))
}

/// Removes an item.
#[utoipa::path(delete, path = "/v1/lists/{list_id}/items/{item_id}", tag = "items",
    security(("bearer" = [])),
    params(("list_id" = Uuid, Path), ("item_id" = Uuid, Path), WriteQuery),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such list or item, or not a member", body = ErrorBody),
    ))]
async fn delete_item(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((list_id, item_id)): ApiPath<(Uuid, Uuid)>,
    ApiQuery(query): ApiQuery<WriteQuery>,
) -> Result<StatusCode, ApiError> {
    let wait = query.wants_projection()?;
    live_list(&state, list_id, &caller).await?;
    state.limit_writes(&caller).await?;
    let ((), range) = state
        .rooms
        .write(list_id, caller.user_id, move |list, txn| {
            if list.remove_item(txn, &item_id.to_string()) {
                Ok(())
            } else {
                Err(WriteError::Missing(format!(
                    "item {item_id} does not exist"
                )))
            }
        })
        .await
        .map_err(write_error)?;
    let status = settle(&state, list_id, range, wait, StatusCode::NO_CONTENT).await?;
    Ok(if status == StatusCode::ACCEPTED {
        StatusCode::ACCEPTED
    } else {
        StatusCode::NO_CONTENT
    })
}

/// Searches item names across the family's lists (from the projection).
#[utoipa::path(get, path = "/v1/families/{family_id}/items", tag = "items", security(("bearer" = [])),
    params(("family_id" = Uuid, Path), SearchQuery),
    responses(
        (status = 200, body = ItemPage),
        (status = 404, description = "Not a member", body = ErrorBody),
    ))]
async fn search_items(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(family_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<ItemPage>, ApiError> {
    require_member(&state, family_id, &caller).await?;
    let limit = page_limit(query.limit)?;
    if query.q.trim().is_empty() || query.q.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "q must be 1 to 100 characters",
        ));
    }
    let after = match &query.cursor {
        None => None,
        Some(cursor) => Some(
            cursor
                .split_once('.')
                .and_then(|(l, i)| Some((Uuid::parse_str(l).ok()?, Uuid::parse_str(i).ok()?)))
                .ok_or_else(|| ApiError::bad_request("invalid_query", "malformed cursor"))?,
        ),
    };
    let mut rows = state
        .projections
        .search_items(family_id, query.q.trim(), after, limit + 1)
        .await?;
    let next_cursor = next_page(&mut rows, limit, |r| format!("{}.{}", r.list_id, r.item_id));
    Ok(Json(ItemPage {
        items: rows
            .into_iter()
            .map(|r| FoundItem {
                list_id: r.list_id,
                item: r.into(),
            })
            .collect(),
        next_cursor,
    }))
}
