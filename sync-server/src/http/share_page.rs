//! `GET /s/{token}`: the vendor's page of a share, plain HTML rendered on
//! the server (no script, everything escaped, readable on a small phone);
//! `?format=json` gives the same as JSON. It works while the share's link
//! works: not revoked, not expired, the list not deleted.

use std::fmt::Write;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{ApiPath, ApiQuery};
use crate::app::AppState;
use crate::auth::tokens::hash_secret;
use crate::error::ApiError;
use crate::snapshot::{Snapshot, SnapshotItem};

pub fn router() -> Router<AppState> {
    Router::new().route("/s/{token}", get(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// `html` (default) or `json`.
    pub format: Option<String>,
}

/// The page as JSON.
#[derive(Debug, Serialize)]
pub struct SharedList {
    pub snapshot: Snapshot,
    /// Syncs the live list read-only over `GET /v1/sync/{list_id}`.
    pub list_id: Uuid,
    pub sync_token: Option<String>,
}

/// Whether a path segment can be a page token (22 URL-safe characters as
/// issued; anything else is not looked up).
fn plausible(token: &str) -> bool {
    (16..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn page(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let json = match query.format.as_deref() {
        None | Some("html") => false,
        Some("json") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "format must be html or json",
            ));
        }
    };
    let share = if plausible(&token) {
        state
            .vendors
            .share_by_page_token(&hash_secret(&token))
            .await?
    } else {
        None
    };
    let now = Utc::now();
    let share = match share {
        Some(s) if s.link_revoked_at.is_none() && s.link_expires_at.is_some_and(|at| at > now) => {
            let live = state
                .directory
                .list(s.list_id)
                .await?
                .is_some_and(|l| l.deleted_at.is_none());
            live.then_some(s)
        }
        _ => None,
    };
    let Some(share) = share else {
        return Ok(if json {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "link_not_found",
                "this link does not exist, expired or was revoked",
            )
            .into_response()
        } else {
            html(StatusCode::NOT_FOUND, gone_page())
        });
    };
    let snapshot: Snapshot = serde_json::from_str(&share.snapshot)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("share {} snapshot: {e}", share.id)))?;
    if json {
        let sync_token = match (share.link_id, share.link_expires_at, share.shared_by) {
            (Some(link), Some(expires), Some(by)) => Some(state.tokens.issue_read_only(
                by,
                share.list_id,
                link,
                expires,
            )),
            _ => None,
        };
        let mut response = axum::Json(SharedList {
            snapshot,
            list_id: share.list_id,
            sync_token,
        })
        .into_response();
        private(&mut response);
        return Ok(response);
    }
    Ok(html(StatusCode::OK, render(&snapshot)))
}

/// Headers of a page only its link holder should see.
fn private(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No script runs, nothing loads from elsewhere.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    private(&mut response);
    response
}

/// `text` safe in HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
margin:0;background:#f6f7f4;color:#1c1f1a;line-height:1.45}\
main{max-width:40rem;margin:0 auto;padding:1rem 1rem 3rem}\
h1{font-size:1.5rem;margin:.5rem 0 .25rem}\
.from{color:#4a5145;margin:0 0 1rem}\
.note{background:#fff7d6;border-radius:.5rem;padding:.75rem;margin:0 0 1rem}\
h2{font-size:1.05rem;margin:1.25rem 0 .4rem;color:#2f5d2f}\
ul{list-style:none;padding:0;margin:0;background:#fff;border-radius:.5rem}\
li{padding:.6rem .75rem;border-bottom:1px solid #e6e8e3;display:flex;flex-wrap:wrap;gap:.25rem .5rem}\
li:last-child{border-bottom:0}.name{font-weight:600}.qty{color:#2f5d2f}\
.item-note{color:#4a5145;flex-basis:100%;font-size:.95rem}\
.cart{font-size:.8rem;background:#e3efe3;border-radius:1rem;padding:0 .5rem}\
.count{margin-top:1.5rem;color:#4a5145}";

/// The page of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let title = format!("{} — {}", s.list_name, s.family);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{}</title><style>{STYLE}</style>\
         </head><body><main><h1 dir=\"auto\">{}</h1>\
         <p class=\"from\">From <bdi>{}</bdi> · {} · {}</p>",
        escape(&title),
        escape(&s.list_name),
        escape(&s.family),
        escape(&s.version),
        s.taken_at.format("%e %b %Y, %H:%M UTC"),
    );
    if let Some(note) = &s.note {
        let _ = write!(out, "<p class=\"note\" dir=\"auto\">{}</p>", escape(note));
    }
    if s.categories.is_empty() {
        out.push_str("<p>Nothing is needed right now.</p>");
    }
    for category in &s.categories {
        let name = category.name.as_deref().unwrap_or("Other");
        let _ = write!(out, "<section><h2 dir=\"auto\">{}</h2><ul>", escape(name));
        for item in &category.items {
            item_html(&mut out, item);
        }
        out.push_str("</ul></section>");
    }
    let _ = write!(
        out,
        "<p class=\"count\">{} {}</p></main></body></html>",
        s.item_count,
        if s.item_count == 1 { "item" } else { "items" }
    );
    out
}

fn item_html(out: &mut String, item: &SnapshotItem) {
    let _ = write!(
        out,
        "<li><span class=\"name\" dir=\"auto\">{}</span>",
        escape(&item.name)
    );
    if let Some(q) = &item.quantity {
        let _ = write!(
            out,
            "<span class=\"qty\" dir=\"auto\">× {}</span>",
            escape(q)
        );
    }
    if item.status == "in_cart" {
        out.push_str("<span class=\"cart\">in cart</span>");
    }
    if let Some(note) = &item.note {
        let _ = write!(
            out,
            "<span class=\"item-note\" dir=\"auto\">{}</span>",
            escape(note)
        );
    }
    out.push_str("</li>");
}

fn gone_page() -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Link not available</title><style>{STYLE}</style></head><body><main>\
         <h1>This link is not available</h1><p>It does not exist, it expired, or the \
         family revoked it. Ask them to send the list again.</p></main></body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotCategory;

    #[test]
    fn everything_the_family_typed_is_escaped() {
        let s = Snapshot {
            family: "O'Brien & <Sons>".into(),
            list_name: "<script>alert(1)</script>".into(),
            version: "v3".into(),
            seq: 3,
            taken_at: Utc::now(),
            item_count: 2,
            note: Some("\"quoted\" note".into()),
            categories: vec![SnapshotCategory {
                name: Some("חלב 🥛".into()),
                items: vec![
                    SnapshotItem {
                        name: "<img src=x onerror=alert(1)>".into(),
                        quantity: Some("2 🍎".into()),
                        status: "in_cart".into(),
                        note: None,
                    },
                    SnapshotItem {
                        name: "לחם".into(),
                        quantity: None,
                        status: "needed".into(),
                        note: Some("فريش".into()),
                    },
                ],
            }],
        };
        let page = render(&s);
        assert!(!page.contains("<script>") && !page.contains("<img"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("O&#39;Brien &amp; &lt;Sons&gt;"));
        assert!(page.contains("&quot;quoted&quot; note"));
        assert!(page.contains("<h2 dir=\"auto\">חלב 🥛</h2>"));
        assert!(page.contains("<span class=\"qty\" dir=\"auto\">× 2 🍎</span>"));
        assert!(page.contains("<span class=\"cart\">in cart</span>"));
        assert!(page.contains("<span class=\"item-note\" dir=\"auto\">فريش</span>"));
        assert!(page.contains("2 items"));
    }
}
