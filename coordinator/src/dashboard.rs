//! The dashboard: a page that watches every job live (its assets embedded
//! at build time, the charts drawn by the vendored ECharts), and the JSON it
//! polls ([`api`]). Served beside `/metrics`, behind the same tokens: a
//! token with the read role, sent as `Authorization: Bearer <token>` or as
//! the cookie that opening `/dashboard?token=<token>` sets (the URL
//! `premem run` prints). Without one, every route answers 401.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, Query, State as Extract};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use premem_proto::{RequireToken, Role, Roles};

use crate::state::State;

pub mod api;

/// The cookie that carries the token (hex-encoded) after `?token=`.
const COOKIE: &str = "premem_token";

/// What every route shares.
#[derive(Clone)]
struct Dashboard {
    state: Arc<Mutex<State>>,
    tokens: RequireToken,
    started: Instant,
}

/// The dashboard's routes: `/dashboard` and its assets, `/api/overview`,
/// `/api/jobs/<name>/heatmap`.
pub fn router(state: Arc<Mutex<State>>, tokens: RequireToken) -> axum::Router {
    let dashboard = Dashboard {
        state,
        tokens,
        started: Instant::now(),
    };
    axum::Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/{*asset}", get(asset))
        .route("/api/overview", get(overview))
        .route("/api/jobs/{name}/heatmap", get(heatmap))
        .with_state(dashboard)
}

/// The roles of the request's token: its `Authorization` header, else the
/// dashboard's cookie.
pub fn roles_of(headers: &HeaderMap, tokens: &RequireToken) -> Option<Roles> {
    if let Some(given) = headers.get(header::AUTHORIZATION) {
        return tokens.roles_of(given.as_bytes());
    }
    let token = cookie_token(headers)?;
    tokens.roles_of(format!("Bearer {token}").as_bytes())
}

/// The token in the dashboard's cookie, if the request carries one.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .and_then(|hexed| hex::decode(hexed).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// The 401 or 403 to answer instead of the route, unless the request's
/// token holds the read role.
fn refusal(headers: &HeaderMap, tokens: &RequireToken) -> Option<Response> {
    match roles_of(headers, tokens) {
        Some(roles) if roles.holds(Role::Read) => None,
        Some(_) => Some(forbidden()),
        None => Some(unauthorized()),
    }
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "the dashboard needs a token with the read role\n",
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "the dashboard needs the cluster token or a read token: open the URL premem printed \
         (http://<host:port>/dashboard?token=<token>), or send 'Authorization: Bearer <token>'\n",
    )
        .into_response()
}

/// `/dashboard`: with `?token=` a valid token becomes the cookie and the
/// browser is sent to the bare URL (the token leaves the address bar);
/// otherwise the page, to a request that is signed in.
async fn page(
    Extract(d): Extract<Dashboard>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = query.get("token") {
        let given = format!("Bearer {token}");
        return match d.tokens.roles_of(given.as_bytes()) {
            Some(roles) if roles.holds(Role::Read) => sign_in(token),
            Some(_) => forbidden(),
            None => unauthorized(),
        };
    }
    if let Some(refused) = refusal(&headers, &d.tokens) {
        return refused;
    }
    asset_response("text/html; charset=utf-8", INDEX.as_bytes())
}

/// A redirect to `/dashboard` that sets the token's cookie.
fn sign_in(token: &str) -> Response {
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        hex::encode(token)
    );
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/dashboard")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

const INDEX: &str = include_str!("../dashboard/index.html");
const APP: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/style.css");
const ECHARTS: &str = include_str!("../dashboard/vendor/echarts.min.js");

/// The page's scripts and style, embedded at build time.
async fn asset(
    Extract(d): Extract<Dashboard>,
    Path(asset): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&headers, &d.tokens) {
        return refused;
    }
    let (kind, body) = match asset.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP),
        "style.css" => ("text/css; charset=utf-8", STYLE),
        "vendor/echarts.min.js" => ("text/javascript; charset=utf-8", ECHARTS),
        _ => return (StatusCode::NOT_FOUND, "no such dashboard file\n").into_response(),
    };
    asset_response(kind, body.as_bytes())
}

fn asset_response(kind: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        body,
    )
        .into_response()
}

async fn overview(Extract(d): Extract<Dashboard>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&headers, &d.tokens) {
        return refused;
    }
    let view = {
        let state = d.state.lock().unwrap_or_else(|p| p.into_inner());
        api::overview(&state, d.started, Instant::now())
    };
    axum::Json(view).into_response()
}

async fn heatmap(
    Extract(d): Extract<Dashboard>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&headers, &d.tokens) {
        return refused;
    }
    let view = {
        let state = d.state.lock().unwrap_or_else(|p| p.into_inner());
        state.job(&name).map(api::heatmap)
    };
    match view {
        Ok(view) => axum::Json(view).into_response(),
        Err(refusal) => (StatusCode::NOT_FOUND, format!("{refusal}\n")).into_response(),
    }
}
