//! The family's web app (`web/`, built into `--web-dir`), served at `/`
//! for every path the API does not own. Nothing under `/v1` is ever a
//! file: an unknown API path stays a JSON 404.
//!
//! Caching: the bundles under `/assets/` are named by their content hash
//! and cached for a year; the page, the service worker and the manifest
//! are revalidated on every load, so a new build reaches phones at once.
//! The build writes a gzipped twin of each text file (`x.gz`), sent to
//! browsers that accept gzip.
//! Without a build, every page says how to make one.

use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::app::AppState;
use crate::error::ApiError;

/// Serves the web app's files (the router's fallback).
pub async fn serve(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/v1" || path.starts_with("/v1/") {
        return ApiError::NotFound.into_response();
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return ApiError::NotFound.into_response();
    }
    let dir = &state.config.web_dir;
    if !dir.join("index.html").is_file() {
        return not_built(dir);
    }
    let response = match ServeDir::new(dir)
        .precompressed_gzip()
        .oneshot(request)
        .await
    {
        Ok(response) => response.map(Body::new),
        Err(infallible) => match infallible {},
    };
    if response.status() == StatusCode::NOT_FOUND {
        return (
            StatusCode::NOT_FOUND,
            Html("<!doctype html><title>Not found</title><p>No such page. <a href=\"/\">Your lists</a></p>"),
        )
            .into_response();
    }
    with_caching(&path, response)
}

fn with_caching(path: &str, mut response: Response) -> Response {
    let policy = if path.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn not_built(dir: &Path) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Larder</title>\
         <h1>Larder is running</h1>\
         <p>The web app has not been built, so there is nothing to show here yet. \
         Build it once (this needs Node.js and npm):</p>\
         <pre>npm ci --prefix web &amp;&amp; npm run build --prefix web</pre>\
         <p>then reload this page. The server looks for it in <code>{}</code> \
         (<code>--web-dir</code>). The API and the sync endpoint work without it: \
         see <a href=\"/v1/openapi.json\">/v1/openapi.json</a>.</p></html>",
        html_escape(&dir.display().to_string())
    );
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Html(page)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
