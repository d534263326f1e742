//! A family's vendors (the corner shop, the greengrocer): members read
//! them, admins write them. A deleted vendor stays readable by id, with
//! its past shares and orders.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use larder_storage::vendors::{NewVendor, Vendor, VendorPatch, VendorWrite};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::access::{require_admin, require_member};
use super::check;
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller, Validate, double_option};
use super::idempotency::idempotency_key;
use super::pages::{next_page, page_limit};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/families/{family_id}/vendors",
            get(family_vendors).post(create_vendor),
        )
        .route(
            "/v1/vendors/{vendor_id}",
            get(get_vendor).patch(update_vendor).delete(delete_vendor),
        )
}

/// Longest vendor name, in characters (as the schema allows).
const MAX_NAME: usize = 100;
/// Longest notes, in characters.
const MAX_NOTES: usize = 500;
/// Namespace of vendor ids derived from an `Idempotency-Key`.
const IDEMPOTENT_VENDORS: Uuid = Uuid::from_u128(0x6c61_7264_6572_5665_6e64_6f72_4b65_7973);

/// A vendor.
#[derive(Debug, Serialize, ToSchema)]
pub struct VendorView {
    pub id: Uuid,
    pub family_id: Uuid,
    #[schema(example = "Corner shop")]
    pub name: String,
    /// E.164, with its `+`.
    #[schema(example = "+447700900123")]
    pub whatsapp_number: String,
    pub notes: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set once deleted; its shares and orders stay readable.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl From<Vendor> for VendorView {
    fn from(v: Vendor) -> Self {
        VendorView {
            id: v.id,
            family_id: v.family_id,
            name: v.name,
            whatsapp_number: format!("+{}", v.whatsapp_number),
            notes: v.notes,
            created_by: v.created_by,
            created_at: v.created_at,
            updated_at: v.updated_at,
            deleted_at: v.deleted_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VendorPage {
    pub vendors: Vec<VendorView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVendorRequest {
    /// 1 to 100 characters.
    #[schema(example = "Corner shop")]
    pub name: String,
    /// International form: `+447700900123` (spaces and dashes allowed).
    #[schema(example = "+44 7700 900123")]
    pub whatsapp_number: String,
    /// Up to 500 characters.
    #[serde(default)]
    pub notes: Option<String>,
}

impl Validate for CreateVendorRequest {
    fn validate(&self) -> Result<(), String> {
        check::name("name", &self.name, MAX_NAME)?;
        check::e164("whatsapp_number", &self.whatsapp_number)?;
        notes(self.notes.as_ref())
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVendorRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub whatsapp_number: Option<String>,
    /// `null` removes them.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub notes: Option<Option<String>>,
}

impl Validate for UpdateVendorRequest {
    fn validate(&self) -> Result<(), String> {
        if self.name.is_none() && self.whatsapp_number.is_none() && self.notes.is_none() {
            return Err("give at least one of name, whatsapp_number, notes".to_owned());
        }
        if let Some(name) = &self.name {
            check::name("name", name, MAX_NAME)?;
        }
        if let Some(number) = &self.whatsapp_number {
            check::e164("whatsapp_number", number)?;
        }
        notes(self.notes.as_ref().and_then(Option::as_ref))
    }
}

fn notes(value: Option<&String>) -> Result<(), String> {
    match value {
        Some(n) if n.chars().count() > MAX_NOTES => {
            Err(format!("notes must be at most {MAX_NOTES} characters"))
        }
        Some(n) if n.chars().any(|c| c.is_control() && c != '\n') => {
            Err("notes must not contain control characters".to_owned())
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VendorQuery {
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

fn number_taken() -> ApiError {
    ApiError::conflict(
        "vendor_number_taken",
        "another vendor of this family has this WhatsApp number",
    )
}

/// The vendor if the caller is a member of its family; 404 otherwise.
async fn visible_vendor(
    state: &AppState,
    vendor_id: Uuid,
    caller: &Caller,
) -> Result<(Vendor, larder_storage::directory::Family), ApiError> {
    let vendor = state
        .vendors
        .vendor(vendor_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let family = require_member(state, vendor.family_id, caller).await?;
    Ok((vendor, family))
}

/// Adds a vendor to the family (admins). With `Idempotency-Key` a retry
/// returns the vendor the first request created.
#[utoipa::path(post, path = "/v1/families/{family_id}/vendors", tag = "vendors", security(("bearer" = [])),
    params(("family_id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the same vendor")),
    request_body = CreateVendorRequest,
    responses(
        (status = 201, body = VendorView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "Not a member of the family", body = ErrorBody),
        (status = 409, description = "Another vendor has this number", body = ErrorBody),
        (status = 422, description = "Invalid body (e.g. not an E.164 number)", body = ErrorBody),
    ))]
async fn create_vendor(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(family_id): ApiPath<Uuid>,
    headers: HeaderMap,
    body: ApiJson<CreateVendorRequest>,
) -> Result<(StatusCode, Json<VendorView>), ApiError> {
    let family = require_member(&state, family_id, &caller).await?;
    require_admin(&family)?;
    state.limit_writes(&caller).await?;
    let request = body.value;
    let number =
        check::e164("whatsapp_number", &request.whatsapp_number).map_err(ApiError::invalid)?;
    let id = match idempotency_key(&headers)? {
        Some(key) => Uuid::new_v5(
            &IDEMPOTENT_VENDORS,
            format!("{}:{family_id}:{key}", caller.user_id).as_bytes(),
        ),
        None => Uuid::now_v7(),
    };
    if let Some(existing) = state.vendors.vendor(id).await? {
        return Ok((StatusCode::CREATED, Json(existing.into())));
    }
    let written = state
        .vendors
        .create_vendor(&NewVendor {
            id,
            family_id,
            name: request.name.trim().to_owned(),
            whatsapp_number: number,
            notes: request.notes.filter(|n| !n.trim().is_empty()),
            created_by: caller.user_id,
        })
        .await?;
    match written {
        VendorWrite::Done(v) => Ok((StatusCode::CREATED, Json(v.into()))),
        VendorWrite::NumberTaken => Err(number_taken()),
        VendorWrite::Missing => Err(ApiError::NotFound),
    }
}

/// The family's vendors, a page at a time (deleted ones are left out).
#[utoipa::path(get, path = "/v1/families/{family_id}/vendors", tag = "vendors", security(("bearer" = [])),
    params(("family_id" = Uuid, Path), VendorQuery),
    responses(
        (status = 200, body = VendorPage),
        (status = 404, description = "Not a member of the family", body = ErrorBody),
    ))]
async fn family_vendors(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(family_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<VendorQuery>,
) -> Result<Json<VendorPage>, ApiError> {
    require_member(&state, family_id, &caller).await?;
    let limit = page_limit(query.limit)?;
    let mut rows = state
        .vendors
        .family_vendors(family_id, query.cursor, limit + 1)
        .await?;
    let next_cursor = next_page(&mut rows, limit, |v| v.id);
    Ok(Json(VendorPage {
        vendors: rows.into_iter().map(VendorView::from).collect(),
        next_cursor,
    }))
}

/// One vendor, deleted or not.
#[utoipa::path(get, path = "/v1/vendors/{vendor_id}", tag = "vendors", security(("bearer" = [])),
    params(("vendor_id" = Uuid, Path)),
    responses(
        (status = 200, body = VendorView),
        (status = 404, description = "No such vendor, or not a member of its family", body = ErrorBody),
    ))]
async fn get_vendor(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(vendor_id): ApiPath<Uuid>,
) -> Result<Json<VendorView>, ApiError> {
    let (vendor, _) = visible_vendor(&state, vendor_id, &caller).await?;
    Ok(Json(vendor.into()))
}

/// Renames a vendor, changes its number or notes (admins).
#[utoipa::path(patch, path = "/v1/vendors/{vendor_id}", tag = "vendors", security(("bearer" = [])),
    params(("vendor_id" = Uuid, Path)), request_body = UpdateVendorRequest,
    responses(
        (status = 200, body = VendorView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such vendor, deleted, or not a member", body = ErrorBody),
        (status = 409, description = "Another vendor has this number", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
    ))]
async fn update_vendor(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(vendor_id): ApiPath<Uuid>,
    body: ApiJson<UpdateVendorRequest>,
) -> Result<Json<VendorView>, ApiError> {
    let (_, family) = visible_vendor(&state, vendor_id, &caller).await?;
    require_admin(&family)?;
    state.limit_writes(&caller).await?;
    let request = body.value;
    let whatsapp_number = match &request.whatsapp_number {
        Some(n) => Some(check::e164("whatsapp_number", n).map_err(ApiError::invalid)?),
        None => None,
    };
    let patch = VendorPatch {
        name: request.name.map(|n| n.trim().to_owned()),
        whatsapp_number,
        notes: request
            .notes
            .map(|n| n.filter(|text| !text.trim().is_empty())),
    };
    match state.vendors.update_vendor(vendor_id, &patch).await? {
        VendorWrite::Done(v) => Ok(Json(v.into())),
        VendorWrite::NumberTaken => Err(number_taken()),
        VendorWrite::Missing => Err(ApiError::NotFound),
    }
}

/// Deletes a vendor (admins). Its past shares and orders stay readable;
/// shares not yet sent to it are not sent.
#[utoipa::path(delete, path = "/v1/vendors/{vendor_id}", tag = "vendors", security(("bearer" = [])),
    params(("vendor_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such vendor, deleted already, or not a member", body = ErrorBody),
    ))]
async fn delete_vendor(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(vendor_id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let (_, family) = visible_vendor(&state, vendor_id, &caller).await?;
    require_admin(&family)?;
    state.limit_writes(&caller).await?;
    if state.vendors.delete_vendor(vendor_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
