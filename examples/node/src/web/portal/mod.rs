//! The patient portal: one static page and its script, served by the node (no build step).
//!
//! The patient loads its key in the browser (a 32-byte Ed25519 seed as hex, or a JWK); the page
//! signs with WebCrypto Ed25519 (`crypto.subtle`, Chromium 137 and later, Firefox 129, Safari
//! 17), so the key never leaves the browser. It asks the node for unsigned templates, signs
//! their `signing_message`, and posts the signatures: see [`tx`](super::tx).
//!
//! The page comes from the node, so the patient trusts the node's operator with the page's
//! code, as with any web application; a client that must not trust it signs with the library.

use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;

use super::AppState;

/// The page.
pub const INDEX_HTML: &str = include_str!("index.html");
/// Its script.
pub const PORTAL_JS: &str = include_str!("portal.js");

/// The portal's routes: `/portal`, `/portal/portal.js`, and `/` redirecting to the portal.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/portal") }))
        .route("/portal", get(|| async { Html(INDEX_HTML) }))
        .route(
            "/portal/portal.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    PORTAL_JS,
                )
                    .into_response()
            }),
        )
}
