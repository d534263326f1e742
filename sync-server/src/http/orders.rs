//! Orders to a family's vendors, placed on a list (optionally answering a
//! share): read from the projection, written through the list's document.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use larder_crdt::OrderStatus;
use larder_crdt::list::{NewOrder, OrderItemRow};
use larder_storage::projection::OrderRecord;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::access::{live_list, require_member};
use super::check::text;
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller, Validate};
use super::idempotency::new_id;
use super::pages::{next_page, page_limit};
use super::write::{WriteQuery, settle, write_error};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::rooms::write::WriteError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/lists/{list_id}/orders", post(place_order))
        .route("/v1/families/{family_id}/orders", get(family_orders))
        .route("/v1/orders/{order_id}", get(get_order).patch(update_order))
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
    /// The share (the snapshot sent to the vendor) the order answers.
    pub share_id: Option<Uuid>,
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
            share_id: o.share_id,
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderRequest {
    /// A vendor of the list's family; may be left out when `share_id`
    /// names the share the order answers (its vendor is taken).
    #[serde(default)]
    pub vendor_id: Option<Uuid>,
    /// A share of this list the order answers.
    #[serde(default)]
    pub share_id: Option<Uuid>,
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
        if self.vendor_id.is_none() && self.share_id.is_none() {
            return Err("give vendor_id, share_id or both".to_owned());
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
pub struct OrderQuery {
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<Uuid>,
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
    let share = match request.share_id {
        Some(share_id) => Some(
            state
                .vendors
                .share(share_id)
                .await?
                .filter(|s| s.list_id == list_id)
                .ok_or_else(|| ApiError::invalid("share_id is not a share of this list"))?,
        ),
        None => None,
    };
    let vendor_id = match (request.vendor_id, &share) {
        (Some(vendor), Some(share)) if vendor != share.vendor_id => {
            return Err(ApiError::invalid(
                "vendor_id is not the vendor the share was sent to",
            ));
        }
        (Some(vendor), _) => vendor,
        (None, Some(share)) => share.vendor_id,
        (None, None) => return Err(ApiError::invalid("give vendor_id, share_id or both")),
    };
    if !state
        .projections
        .is_family_vendor(row.family_id, vendor_id)
        .await?
    {
        return Err(ApiError::invalid(
            "vendor_id is not a vendor of this family",
        ));
    }
    let share_id = share.map(|s| s.id);
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
                    vendor_id: vendor_id.to_string(),
                    share_id: share_id.map(|s| s.to_string()),
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
        share_id: order
            .share_id
            .as_deref()
            .and_then(|s| Uuid::parse_str(s).ok()),
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
