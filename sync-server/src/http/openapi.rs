//! The OpenAPI description of the REST API, generated from the handlers'
//! annotations and served at `/v1/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, families, invitations, items, links, lists, orders, shares, vendors};
use crate::app::AppState;
use crate::error::{ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Larder",
        description = "Family grocery lists, synced offline-first. Lists sync over \
            `GET /v1/sync/{list_id}` (y-websocket protocol, token as `?token=` or \
            `Authorization: Bearer`); this is the REST side.",
    ),
    paths(
        accounts::signup,
        accounts::login,
        accounts::refresh,
        accounts::logout,
        accounts::me,
        families::create_family,
        families::my_families,
        families::get_family,
        families::rename_family,
        families::members,
        families::change_role,
        families::remove_member,
        invitations::invite,
        invitations::accept,
        lists::create_list,
        lists::family_lists,
        lists::list_detail,
        lists::update_list,
        lists::delete_list,
        lists::restore_list,
        links::create_link,
        links::list_links,
        links::revoke_link,
        items::add_item,
        items::update_item,
        items::delete_item,
        items::search_items,
        orders::place_order,
        orders::family_orders,
        orders::get_order,
        orders::update_order,
        vendors::create_vendor,
        vendors::family_vendors,
        vendors::get_vendor,
        vendors::update_vendor,
        vendors::delete_vendor,
        shares::create_share,
        shares::list_shares,
        shares::get_share,
        shares::revoke_share_link,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "accounts", description = "Sign-up, login and tokens"),
        (name = "families", description = "Families, members and invitations"),
        (name = "lists", description = "Grocery lists"),
        (name = "items", description = "Items, read from the projection and written through the document"),
        (name = "orders", description = "Orders to vendors"),
        (name = "vendors", description = "A family's vendors"),
        (name = "shares", description = "Lists sent to vendors over WhatsApp"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described() {
        let doc = ApiDoc::openapi();
        let json = serde_json::to_value(&doc).expect("serialises");
        let paths = json["paths"].as_object().expect("paths");
        for path in [
            "/v1/auth/signup",
            "/v1/auth/login",
            "/v1/auth/refresh",
            "/v1/auth/logout",
            "/v1/me",
            "/v1/families",
            "/v1/families/{family_id}",
            "/v1/families/{family_id}/members",
            "/v1/families/{family_id}/members/{user_id}",
            "/v1/families/{family_id}/invitations",
            "/v1/invitations/{code}/accept",
            "/v1/families/{family_id}/lists",
            "/v1/lists/{list_id}",
            "/v1/lists/{list_id}/restore",
            "/v1/lists/{list_id}/read-only-tokens",
            "/v1/lists/{list_id}/items",
            "/v1/lists/{list_id}/items/{item_id}",
            "/v1/families/{family_id}/items",
            "/v1/lists/{list_id}/orders",
            "/v1/families/{family_id}/orders",
            "/v1/orders/{order_id}",
        ] {
            assert!(paths.contains_key(path), "{path} is not described");
        }
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
    }
}
