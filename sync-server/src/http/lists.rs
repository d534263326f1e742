//! Lists: the row and its document. Any member of the list's family reads
//! and writes it; whoever is not a member is told it does not exist.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use larder_crdt::{ItemStatus, ListStatus};
use larder_storage::directory::Created;
use larder_storage::projection::ItemFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use yrs::{Doc, ReadTxn, StateVector, Transact};

use super::access::{live_list, require_member, visible_list};
use super::check;
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller, Validate};
use super::idempotency::{created_response, idempotency_record};
use super::pages::{next_page, page_limit};
use super::views::{ItemView, ListView};
use super::write::{settle, write_error};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/families/{family_id}/lists",
            post(create_list).get(family_lists),
        )
        .route(
            "/v1/lists/{list_id}",
            get(list_detail).patch(update_list).delete(delete_list),
        )
        .route("/v1/lists/{list_id}/restore", post(restore_list))
}

/// Longest list name, in characters (as the document schema allows).
const MAX_LIST_NAME: usize = larder_crdt::list::MAX_NAME_CHARS;

#[derive(Debug, Serialize, ToSchema)]
pub struct ListPage {
    pub lists: Vec<ListView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateListRequest {
    /// 1 to 200 characters.
    #[schema(example = "Weekly shop")]
    pub name: String,
    /// An id chosen by the client (a list made offline keeps its id);
    /// a fresh one when absent.
    #[serde(default)]
    pub id: Option<Uuid>,
}

impl Validate for CreateListRequest {
    fn validate(&self) -> Result<(), String> {
        check::name("name", &self.name, MAX_LIST_NAME)
    }
}

/// Status of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListStatusField {
    Active,
    Archived,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateListRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<ListStatusField>,
}

impl Validate for UpdateListRequest {
    fn validate(&self) -> Result<(), String> {
        if self.name.is_none() && self.status.is_none() {
            return Err("give at least one of name, status".to_owned());
        }
        match &self.name {
            Some(name) => check::name("name", name, MAX_LIST_NAME),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// `true` lists the deleted lists (to restore one).
    pub deleted: Option<bool>,
}

/// A list with its items, from the projection.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListDetail {
    #[serde(flatten)]
    pub list: ListView,
    /// Ordered by position; filtered by the query.
    pub items: Vec<ItemView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ItemQuery {
    /// `needed`, `in_cart` or `purchased`.
    pub status: Option<String>,
    pub assignee: Option<String>,
    pub category: Option<String>,
}

/// The first update of a new list's document: its name and status.
fn initial_document(name: &str) -> Result<Vec<u8>, ApiError> {
    let doc = Doc::new();
    let list = larder_crdt::list::ListDoc::new(&doc);
    {
        let mut txn = doc.transact_mut();
        list.set_name(&mut txn, name)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        list.set_status(&mut txn, ListStatus::Active);
    }
    Ok(doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default()))
}

/// Creates a list and its document in a family. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/families/{family_id}/lists", tag = "lists", security(("bearer" = [])),
    params(("family_id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first response")),
    request_body = CreateListRequest,
    responses(
        (status = 201, body = ListView),
        (status = 404, description = "Not a member of the family", body = ErrorBody),
        (status = 409, description = "A list with this id exists", body = ErrorBody),
        (status = 422, description = "Invalid body, or key reused with another body", body = ErrorBody),
    ))]
async fn create_list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(family_id): ApiPath<Uuid>,
    headers: HeaderMap,
    body: ApiJson<CreateListRequest>,
) -> Result<Response, ApiError> {
    require_member(&state, family_id, &caller).await?;
    state.limit_writes(&caller).await?;
    let id = body.value.id.unwrap_or_else(Uuid::now_v7);
    let now = Utc::now();
    let initial = initial_document(&body.value.name)?;
    let view = ListView {
        id,
        family_id,
        name: body.value.name.clone(),
        status: ListStatus::Active.as_str().to_owned(),
        item_count: 0,
        needed_count: 0,
        in_cart_count: 0,
        purchased_count: 0,
        head_seq: 1,
        projected_seq: 0,
        created_by: Some(caller.user_id),
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    let record = idempotency_record(
        &headers,
        &caller,
        "POST",
        format!("/v1/families/{family_id}/lists"),
        &body.raw,
        StatusCode::CREATED,
        &view,
    )?;
    let created = state
        .directory
        .create_list(
            id,
            family_id,
            &body.value.name,
            caller.user_id,
            now,
            &initial,
            &state.rooms.context().replica_id.to_string(),
            record.as_ref(),
        )
        .await?;
    match created {
        Created::New(row) => {
            state.rooms.context().projector.changed(row.id);
            created_response(Created::New(ListView::from(row)))
        }
        Created::Exists => Err(ApiError::conflict(
            "list_exists",
            "a list with this id exists",
        )),
        Created::Replay { status, body } => {
            created_response::<ListView>(Created::Replay { status, body })
        }
        Created::KeyReused => created_response::<ListView>(Created::KeyReused),
    }
}

/// The family's lists, a page at a time, oldest first.
#[utoipa::path(get, path = "/v1/families/{family_id}/lists", tag = "lists", security(("bearer" = [])),
    params(("family_id" = Uuid, Path), ListQuery),
    responses(
        (status = 200, body = ListPage),
        (status = 404, description = "Not a member of the family", body = ErrorBody),
    ))]
async fn family_lists(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(family_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ListPage>, ApiError> {
    require_member(&state, family_id, &caller).await?;
    let limit = page_limit(query.limit)?;
    let mut rows = state
        .directory
        .family_lists(
            family_id,
            query.deleted.unwrap_or(false),
            query.cursor,
            limit + 1,
        )
        .await?;
    let next_cursor = next_page(&mut rows, limit, |r| r.id);
    Ok(Json(ListPage {
        lists: rows.into_iter().map(ListView::from).collect(),
        next_cursor,
    }))
}

/// The list with its items (from the projection: `projected_seq` tells
/// which log sequence they reflect), filtered by status, assignee, category.
#[utoipa::path(get, path = "/v1/lists/{list_id}", tag = "lists", security(("bearer" = [])),
    params(("list_id" = Uuid, Path), ItemQuery),
    responses(
        (status = 200, body = ListDetail),
        (status = 404, description = "No such list, deleted, or not a member", body = ErrorBody),
    ))]
async fn list_detail(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(list_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<ItemQuery>,
) -> Result<Json<ListDetail>, ApiError> {
    let row = live_list(&state, list_id, &caller).await?;
    if let Some(status) = &query.status
        && ItemStatus::parse(status).is_none()
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "status must be needed, in_cart or purchased",
        ));
    }
    let items = state
        .projections
        .items(
            list_id,
            &ItemFilter {
                status: query.status,
                assignee: query.assignee,
                category: query.category,
            },
        )
        .await?;
    Ok(Json(ListDetail {
        list: row.into(),
        items: items.into_iter().map(ItemView::from).collect(),
    }))
}

/// Renames or archives a list. The change is written to the document, so
/// connected clients see it at once; the answer waits until the row
/// reflects it (202 when that takes over 10 s).
#[utoipa::path(patch, path = "/v1/lists/{list_id}", tag = "lists", security(("bearer" = [])),
    params(("list_id" = Uuid, Path)), request_body = UpdateListRequest,
    responses(
        (status = 200, body = ListView),
        (status = 404, description = "No such list, deleted, or not a member", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
    ))]
async fn update_list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(list_id): ApiPath<Uuid>,
    body: ApiJson<UpdateListRequest>,
) -> Result<(StatusCode, Json<ListView>), ApiError> {
    live_list(&state, list_id, &caller).await?;
    state.limit_writes(&caller).await?;
    let UpdateListRequest { name, status } = body.value;
    let status = status.map(|s| match s {
        ListStatusField::Active => ListStatus::Active,
        ListStatusField::Archived => ListStatus::Archived,
    });
    let ((), range) = state
        .rooms
        .write(list_id, caller.user_id, move |list, txn| {
            if let Some(name) = &name {
                list.set_name(txn, name)?;
            }
            if let Some(status) = status {
                list.set_status(txn, status);
            }
            Ok(())
        })
        .await
        .map_err(write_error)?;
    // The row's name and status are the projector's to write: answer once
    // it has (202 if that takes long).
    let status = settle(&state, list_id, range, true, StatusCode::OK).await?;
    let row = state
        .directory
        .list(list_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((status, Json(row.into())))
}

/// Deletes a list (it can be restored). Every socket on it closes with
/// 4404, on every replica.
#[utoipa::path(delete, path = "/v1/lists/{list_id}", tag = "lists", security(("bearer" = [])),
    params(("list_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such list, deleted already, or not a member", body = ErrorBody),
    ))]
async fn delete_list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(list_id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    live_list(&state, list_id, &caller).await?;
    state.limit_writes(&caller).await?;
    state
        .directory
        .set_list_deleted(list_id, true)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(%list_id, "list deleted");
    state.rooms.revoke(list_id, None).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Restores a deleted list.
#[utoipa::path(post, path = "/v1/lists/{list_id}/restore", tag = "lists", security(("bearer" = [])),
    params(("list_id" = Uuid, Path)),
    responses(
        (status = 200, body = ListView),
        (status = 404, description = "No such list, or not a member", body = ErrorBody),
        (status = 409, description = "Not deleted", body = ErrorBody),
    ))]
async fn restore_list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(list_id): ApiPath<Uuid>,
) -> Result<Json<ListView>, ApiError> {
    let row = visible_list(&state, list_id, &caller).await?;
    if row.deleted_at.is_none() {
        return Err(ApiError::conflict("not_deleted", "the list is not deleted"));
    }
    state.limit_writes(&caller).await?;
    let row = state
        .directory
        .set_list_deleted(list_id, false)
        .await?
        .ok_or_else(|| ApiError::conflict("not_deleted", "the list is not deleted"))?;
    Ok(Json(row.into()))
}
