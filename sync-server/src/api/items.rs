//! Items and orders. Reads come from the projected rows (no document is
//! loaded); writes become CRDT updates applied through the list's document
//! ([`crate::rooms::Rooms::write`]): connected clients see them live, they
//! are logged and relayed like any other edit, and projected afterwards.
//! `?wait=projected` on a write answers once the rows reflect it.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use larder_crdt::list::{ItemPatch, ItemRow, NewItem, NewOrder, OrderItemRow};
use larder_crdt::{ItemStatus, OrderStatus};
use larder_storage::SeqRange;
use larder_storage::projection::{ItemFilter, ItemRecord, OrderRecord};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::families::require_member;
use super::list_access::live_list;
use super::lists::{ListView, write_error};
use super::{
    ApiJson, ApiPath, ApiQuery, Caller, Validate, check, idempotency_key, next_page, page_limit,
};
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
        .route("/v1/lists/{list_id}/orders", post(place_order))
        .route("/v1/families/{family_id}/orders", get(family_orders))
        .route("/v1/orders/{order_id}", get(get_order).patch(update_order))
}

/// Longest free-text field (quantity, category, note), in characters.
const MAX_TEXT: usize = 500;
/// How long `?wait=projected` waits.
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// Namespace of item and order ids derived from an `Idempotency-Key`.
const IDEMPOTENT_IDS: Uuid = Uuid::from_u128(0x6c61_7264_6572_4964_656d_706f_7465_6e74);

/// An item.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemView {
    pub id: Uuid,
    pub name: String,
    pub quantity: Option<String>,
    #[schema(example = "needed")]
    pub status: String,
    pub category: Option<String>,
    pub note: Option<String>,
    pub assignee: Option<String>,
    /// Fractional index: items sort by it.
    pub position: Option<String>,
    pub added_by: Option<String>,
    pub added_at: Option<DateTime<Utc>>,
}

impl ItemView {
    fn from_doc(row: &ItemRow) -> Option<ItemView> {
        Some(ItemView {
            id: Uuid::parse_str(&row.id).ok()?,
            name: row.name.clone(),
            quantity: row.quantity.clone(),
            status: row.status.as_str().to_owned(),
            category: row.category.clone(),
            note: row.note.clone(),
            assignee: row.assignee.clone(),
            position: row.position.clone(),
            added_by: row.added_by.clone(),
            added_at: row.added_at_ms.and_then(DateTime::from_timestamp_millis),
        })
    }
}

impl From<ItemRecord> for ItemView {
    fn from(r: ItemRecord) -> Self {
        ItemView {
            id: r.item_id,
            name: r.name,
            quantity: r.quantity,
            status: r.status,
            category: r.category,
            note: r.note,
            assignee: r.assignee,
            position: r.position,
            added_by: r.added_by,
            added_at: r.added_at,
        }
    }
}

/// A list with its items, from the projection.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListDetail {
    #[serde(flatten)]
    pub list: ListView,
    /// Ordered by position; filtered by the query.
    pub items: Vec<ItemView>,
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

/// A line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderLineView {
    pub item_id: Option<Uuid>,
    pub name: String,
    pub quantity: Option<String>,
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub list_id: Uuid,
    pub vendor_id: Option<Uuid>,
    #[schema(example = "placed")]
    pub status: String,
    pub placed_by: Option<String>,
    pub placed_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
    pub items: Vec<OrderLineView>,
}

impl From<OrderRecord> for OrderView {
    fn from(o: OrderRecord) -> Self {
        OrderView {
            id: o.id,
            list_id: o.list_id,
            vendor_id: o.vendor_id,
            status: o.status,
            placed_by: o.placed_by,
            placed_at: o.placed_at,
            note: o.note,
            items: o
                .items
                .into_iter()
                .map(|l| OrderLineView {
                    item_id: l.item_id,
                    name: l.name,
                    quantity: l.quantity,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub orders: Vec<OrderView>,
    pub next_cursor: Option<Uuid>,
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

/// Status of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatusField {
    Placed,
    Confirmed,
    Delivered,
    Cancelled,
}

impl From<OrderStatusField> for OrderStatus {
    fn from(s: OrderStatusField) -> Self {
        match s {
            OrderStatusField::Placed => OrderStatus::Placed,
            OrderStatusField::Confirmed => OrderStatus::Confirmed,
            OrderStatusField::Delivered => OrderStatus::Delivered,
            OrderStatusField::Cancelled => OrderStatus::Cancelled,
        }
    }
}

fn text(field: &str, value: &Option<String>) -> Result<(), String> {
    match value {
        Some(v)
            if v.chars().count() > MAX_TEXT || v.chars().any(|c| c.is_control() && c != '\n') =>
        {
            Err(format!(
                "{field} must be at most {MAX_TEXT} characters without control characters"
            ))
        }
        _ => Ok(()),
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

/// `null` (remove the field) as `Some(None)`; absent as `None`.
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderRequest {
    /// A vendor of the list's family.
    pub vendor_id: Uuid,
    /// Items of the list to order (1 to 200); their names and quantities
    /// are copied into the order.
    pub item_ids: Vec<Uuid>,
    #[serde(default)]
    pub note: Option<String>,
}

impl Validate for NewOrderRequest {
    fn validate(&self) -> Result<(), String> {
        if self.item_ids.is_empty() || self.item_ids.len() > 200 {
            return Err("item_ids must hold 1 to 200 items".to_owned());
        }
        text("note", &self.note)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPatchRequest {
    /// `placed` -> `confirmed` -> `delivered`; `placed` or `confirmed` -> `cancelled`.
    pub status: OrderStatusField,
}

impl Validate for OrderPatchRequest {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WriteQuery {
    /// `projected`: answer once the relational rows reflect the write.
    pub wait: Option<String>,
}

impl WriteQuery {
    fn wants_projection(&self) -> Result<bool, ApiError> {
        match self.wait.as_deref() {
            None => Ok(false),
            Some("projected") => Ok(true),
            Some(_) => Err(ApiError::bad_request(
                "invalid_query",
                "wait must be `projected`",
            )),
        }
    }
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Part of the name, case-insensitive (1 to 100 characters).
    pub q: String,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<Uuid>,
}

/// Waits until the list's rows reflect `range` (when asked to); the status
/// becomes 202 when they do not within [`WAIT_LIMIT`].
pub(crate) async fn settle(
    state: &AppState,
    list_id: Uuid,
    range: Option<SeqRange>,
    wait: bool,
    done: StatusCode,
) -> Result<StatusCode, ApiError> {
    let Some(range) = range.filter(|_| wait) else {
        return Ok(done);
    };
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        if state
            .projections
            .projected_seq(list_id)
            .await?
            .is_some_and(|seq| seq >= range.last)
        {
            return Ok(done);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(StatusCode::ACCEPTED);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The id of a new item or order: given, derived from the request's
/// `Idempotency-Key` (so a retry names the same one), or fresh.
fn new_id(
    given: Option<Uuid>,
    headers: &HeaderMap,
    caller: &Caller,
    list_id: Uuid,
) -> Result<Uuid, ApiError> {
    if let Some(id) = given {
        return Ok(id);
    }
    Ok(match idempotency_key(headers)? {
        Some(key) => Uuid::new_v5(
            &IDEMPOTENT_IDS,
            format!("{}:{list_id}:{key}", caller.user_id).as_bytes(),
        ),
        None => Uuid::new_v4(),
    })
}

/// The list with its items (from the projection: `projected_seq` tells
/// which log sequence they reflect), filtered by status, assignee, category.
#[utoipa::path(get, path = "/v1/lists/{list_id}", tag = "lists", security(("bearer" = [])),
    params(("list_id" = Uuid, Path), ItemQuery),
    responses(
        (status = 200, body = ListDetail),
        (status = 404, description = "No such list, deleted, or not a member", body = ErrorBody),
    ))]
pub async fn list_items(
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

/// Places an order for items of the list with a vendor of the family.
#[utoipa::path(post, path = "/v1/lists/{list_id}/orders", tag = "orders", security(("bearer" = [])),
    params(("list_id" = Uuid, Path), WriteQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key name the same order")),
    request_body = NewOrderRequest,
    responses(
        (status = 201, body = OrderView),
        (status = 202, description = "Written; not projected within 10 s", body = OrderView),
        (status = 404, description = "No such list, deleted, or not a member", body = ErrorBody),
        (status = 422, description = "Unknown vendor or item, or invalid body", body = ErrorBody),
    ))]
async fn place_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(list_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<WriteQuery>,
    headers: HeaderMap,
    body: ApiJson<NewOrderRequest>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let wait = query.wants_projection()?;
    let row = live_list(&state, list_id, &caller).await?;
    state.limit_writes(&caller).await?;
    let request = body.value;
    if !state
        .projections
        .is_family_vendor(row.family_id, request.vendor_id)
        .await?
    {
        return Err(ApiError::invalid(
            "vendor_id is not a vendor of this family",
        ));
    }
    let id = new_id(None, &headers, &caller, list_id)?;
    let user = caller.user_id.to_string();
    let placed_at_ms = Utc::now().timestamp_millis();
    let (order, range) = state
        .rooms
        .write(list_id, caller.user_id, move |list, txn| {
            let key = id.to_string();
            let existing = list.read(txn).orders.into_iter().find(|o| o.id == key);
            if let Some(order) = existing {
                return Ok(order);
            }
            let mut lines = Vec::new();
            for item_id in &request.item_ids {
                let item = list.item(txn, &item_id.to_string()).ok_or_else(|| {
                    WriteError::Invalid(format!("item {item_id} is not on the list"))
                })?;
                lines.push(OrderItemRow {
                    item_id: Some(item.id),
                    name: item.name,
                    quantity: item.quantity,
                });
            }
            list.add_order(
                txn,
                &NewOrder {
                    id: key.clone(),
                    vendor_id: request.vendor_id.to_string(),
                    items: lines,
                    placed_by: Some(user),
                    placed_at_ms,
                    note: request.note,
                },
            )?;
            list.read(txn)
                .orders
                .into_iter()
                .find(|o| o.id == key)
                .ok_or_else(|| WriteError::Invalid("the order did not fit the schema".into()))
        })
        .await
        .map_err(write_error)?;
    let view = OrderView {
        id,
        list_id,
        vendor_id: order
            .vendor_id
            .as_deref()
            .and_then(|v| Uuid::parse_str(v).ok()),
        status: order.status.as_str().to_owned(),
        placed_by: order.placed_by,
        placed_at: order.placed_at_ms.and_then(DateTime::from_timestamp_millis),
        note: order.note,
        items: order
            .items
            .into_iter()
            .map(|l| OrderLineView {
                item_id: l.item_id.as_deref().and_then(|i| Uuid::parse_str(i).ok()),
                name: l.name,
                quantity: l.quantity,
            })
            .collect(),
    };
    let status = settle(&state, list_id, range, wait, StatusCode::CREATED).await?;
    Ok((status, Json(view)))
}

/// Whether an order may go from `from` to `to`.
fn is_legal(from: OrderStatus, to: OrderStatus) -> bool {
    use OrderStatus::*;
    from == to
        || matches!(
            (from, to),
            (Placed, Confirmed) | (Confirmed, Delivered) | (Placed | Confirmed, Cancelled)
        )
}

/// The order (from the projection) if the caller may see it.
async fn visible_order(
    state: &AppState,
    order_id: Uuid,
    caller: &Caller,
) -> Result<OrderRecord, ApiError> {
    let order = state
        .projections
        .order(order_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    live_list(state, order.list_id, caller).await?;
    Ok(order)
}

/// One order (from the projection).
#[utoipa::path(get, path = "/v1/orders/{order_id}", tag = "orders", security(("bearer" = [])),
    params(("order_id" = Uuid, Path)),
    responses(
        (status = 200, body = OrderView),
        (status = 404, description = "No such order (or not projected yet), or not a member", body = ErrorBody),
    ))]
async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(order_id): ApiPath<Uuid>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(visible_order(&state, order_id, &caller).await?.into()))
}

/// Moves an order along `placed -> confirmed -> delivered`, or cancels a
/// placed or confirmed one; other transitions are 409.
#[utoipa::path(patch, path = "/v1/orders/{order_id}", tag = "orders", security(("bearer" = [])),
    params(("order_id" = Uuid, Path), WriteQuery), request_body = OrderPatchRequest,
    responses(
        (status = 200, body = OrderView),
        (status = 404, description = "No such order, or not a member", body = ErrorBody),
        (status = 409, description = "Illegal transition", body = ErrorBody),
    ))]
async fn update_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(order_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<WriteQuery>,
    body: ApiJson<OrderPatchRequest>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let wait = query.wants_projection()?;
    let order = visible_order(&state, order_id, &caller).await?;
    state.limit_writes(&caller).await?;
    let to = OrderStatus::from(body.value.status);
    let ((), range) = state
        .rooms
        .write(order.list_id, caller.user_id, move |list, txn| {
            let key = order_id.to_string();
            let current = list
                .read(txn)
                .orders
                .into_iter()
                .find(|o| o.id == key)
                .ok_or_else(|| WriteError::Missing(format!("order {key} does not exist")))?;
            if !is_legal(current.status, to) {
                return Err(WriteError::Conflict(format!(
                    "an order cannot go from {} to {}",
                    current.status, to
                )));
            }
            list.set_order_status(txn, &key, to)?;
            Ok(())
        })
        .await
        .map_err(write_error)?;
    let status = settle(&state, order.list_id, range, wait, StatusCode::OK).await?;
    let mut view = OrderView::from(order);
    view.status = to.as_str().to_owned();
    Ok((status, Json(view)))
}

/// The family's orders (from the projection), a page at a time.
#[utoipa::path(get, path = "/v1/families/{family_id}/orders", tag = "orders", security(("bearer" = [])),
    params(("family_id" = Uuid, Path), OrderQuery),
    responses(
        (status = 200, body = OrderPage),
        (status = 404, description = "Not a member", body = ErrorBody),
    ))]
async fn family_orders(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(family_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<OrderQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    require_member(&state, family_id, &caller).await?;
    let limit = page_limit(query.limit)?;
    if let Some(status) = &query.status
        && OrderStatus::parse(status).is_none()
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "status must be placed, confirmed, delivered or cancelled",
        ));
    }
    let mut rows = state
        .projections
        .family_orders(family_id, query.status.as_deref(), query.cursor, limit + 1)
        .await?;
    let next_cursor = next_page(&mut rows, limit, |o| o.id);
    Ok(Json(OrderPage {
        orders: rows.into_iter().map(OrderView::from).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_move_forward_or_are_cancelled_only() {
        use OrderStatus::*;
        assert!(is_legal(Placed, Confirmed) && is_legal(Confirmed, Delivered));
        assert!(is_legal(Placed, Cancelled) && is_legal(Confirmed, Cancelled));
        for (from, to) in [
            (Delivered, Placed),
            (Delivered, Cancelled),
            (Cancelled, Placed),
            (Confirmed, Placed),
            (Placed, Delivered),
        ] {
            assert!(!is_legal(from, to), "{from} -> {to}");
        }
    }
}
