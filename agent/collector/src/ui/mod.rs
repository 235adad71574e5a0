//! The collector's read-only web UI (`lastword collect --ui ADDR`): server-rendered pages of the crash
//! groups, reports and logs of the store, served on a listener of its own.
//!
//! - [`serve`]: the server; its shutdown trigger is a parameter. [`router`]: the routes.
//! - What it reads: the read methods of the one [`Store`] interface, on a reader of its own
//!   ([`AnyStore::reader`](crate::store::AnyStore::reader)); their SQL is in each backend's `reads.rs`.
//! - `pages.rs`: the HTML (maud templates, escaped); `style.css`: compiled into the binary.
//! - [`Access`]: open on loopback, a token (cookie or HTTP basic auth) anywhere else.
//!
//! Every answer carries a strict Content-Security-Policy: no script at all, styles from this server
//! only, so even markup that escaped escaping could not run.

mod pages;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Form, FromRequestParts, Path as UrlPath, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine as _;
use lastword_spool::EntryId;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::store::reads::{GroupQuery, GroupSort, LogQuery, Tag};
use crate::store::{Store, StoreError};

/// The stylesheet, compiled in.
const STYLE: &str = include_str!("style.css");
/// The Content-Security-Policy of every answer: nothing but this server's stylesheet; no script.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";
/// The cookie that carries a login.
const COOKIE: &str = "lastword_ui";
/// Rows per page.
const PAGE: u32 = 50;
/// The environment variable that may hold the UI token.
pub const TOKEN_ENV: &str = "LASTWORD_UI_TOKEN";

/// Why the UI cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// Off loopback with no token.
    #[error(
        "the web UI on {addr} is reachable from other machines: give a login token with --ui-token-file \
         or {TOKEN_ENV}, or bind it to 127.0.0.1"
    )]
    NoToken {
        /// The address bound.
        addr: SocketAddr,
    },
    /// The token file could not be read or holds no token.
    #[error("cannot read a UI token from {path}: {why}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
}

/// Who may read the UI.
#[derive(Clone, Debug)]
pub enum Access {
    /// Anyone who can connect (loopback only).
    Open,
    /// Who presents the token (HTTP basic auth password, or the cookie of a login).
    Token(Arc<str>),
}

impl Access {
    /// The access for a listener bound to `addr`: open on loopback unless a token is given; a token is
    /// required anywhere else.
    pub fn for_addr(addr: SocketAddr, token: Option<String>) -> Result<Self, UiError> {
        match token {
            Some(t) => Ok(Self::Token(t.into())),
            None if addr.ip().is_loopback() => Ok(Self::Open),
            None => Err(UiError::NoToken { addr }),
        }
    }

    /// Reads the token of `file`, else the value of [`TOKEN_ENV`] (`env`).
    pub fn load_token(file: Option<&Path>, env: Option<&str>) -> Result<Option<String>, UiError> {
        if let Some(path) = file {
            let fail = |why: String| UiError::TokenFile { path: path.to_owned(), why };
            let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
            let token = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
            return token.map(|t| Some(t.to_owned())).ok_or_else(|| fail("no token in it".into()));
        }
        Ok(env.map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned))
    }
}

/// The cookie value of a login: a digest of the token, so the cookie is not the token itself.
fn session_value(token: &str) -> String {
    let digest = Sha256::digest(format!("lastword-ui-session\n{token}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let cookie_ok = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(';')
            .filter_map(|c| c.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && same(value.as_bytes(), session_value(token).as_bytes()))
    });
    let basic_ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .is_some_and(|pair| {
            pair.split_once(':').is_some_and(|(_, pw)| same(pw.as_bytes(), token.as_bytes()))
        });
    cookie_ok || basic_ok
}

struct Ui<S> {
    store: S,
    access: Access,
}

type Shared<S> = State<Arc<Ui<S>>>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn error_page(e: &StoreError) -> Response {
    tracing::error!("web UI: {e}");
    (StatusCode::INTERNAL_SERVER_ERROR, pages::message("Error", &format!("The store could not be read: {e}")))
        .into_response()
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, pages::message("Not found", what)).into_response()
}

/// The query string of a page, read into `T`; a query the page cannot read (a missing parameter, a
/// number that is not one) is answered with a page that says what is wrong, status 400, instead of
/// the plain-text rejection of axum's `Query`.
struct Params<T>(T);

/// What a page's parameters are, for the message of a query it cannot read.
trait PageParams: DeserializeOwned {
    /// How the address of this page looks.
    const USAGE: &'static str;
}

impl<T: PageParams, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(params)) => Ok(Self(params)),
            Err(rejection) => Err(bad_query(&rejection, T::USAGE)),
        }
    }
}

fn bad_query(rejection: &QueryRejection, usage: &str) -> Response {
    // serde's reason, without axum's prefix: "missing field `fp`", "offset: invalid digit found in string".
    let text = rejection.body_text();
    let why = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
    let message = format!("This address cannot be shown: {why}. {usage}");
    (StatusCode::BAD_REQUEST, pages::message("Bad address", &message)).into_response()
}

/// A form or query value, `None` when empty.
fn given(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

async fn overview<S: Store>(State(ui): Shared<S>) -> Response {
    match ui.store.overview(now_ms()).await {
        Ok(o) => pages::overview(&o).into_response(),
        Err(e) => error_page(&e),
    }
}

/// The kinds of group the groups' page filters by: the `type` of their reports.
const KINDS: [&str; 3] = ["panic", "signal", "event"];

/// How a tag filter is written in an address and in the pages' forms, for the messages of a page.
const TAG_USAGE: &str = "A tag filter is tag=KEY=VALUE (e.g. tag=region=eu-west-1), split at the first =.";

/// The tag filter of a page's `tag` parameter (`KEY=VALUE`): none when absent or empty; the text
/// given when it is not one (for [`bad_tag`]).
fn tag_param(tag: Option<String>) -> Result<Option<Tag>, String> {
    match given(tag) {
        None => Ok(None),
        Some(text) => Tag::parse(&text).map(Some).ok_or(text),
    }
}

/// The 400 page of a `tag` parameter that is not `KEY=VALUE`.
fn bad_tag(text: &str, usage: &str) -> Response {
    let message = format!("This address cannot be shown: the tag {text:?} is not KEY=VALUE. {usage}");
    (StatusCode::BAD_REQUEST, pages::message("Bad address", &message)).into_response()
}

#[derive(Deserialize, Default)]
struct GroupsParams {
    app: Option<String>,
    release: Option<String>,
    kind: Option<String>,
    tag: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    offset: Option<u32>,
}

impl PageParams for GroupsParams {
    const USAGE: &'static str = "The groups' page takes the filters of its form (app, release, kind: panic, \
                                  signal or event, tag: KEY=VALUE, sort, order) and offset, a number of rows.";
}

async fn groups<S: Store>(State(ui): Shared<S>, Params(p): Params<GroupsParams>) -> Response {
    let tag = match tag_param(p.tag) {
        Ok(tag) => tag,
        Err(text) => return bad_tag(&text, TAG_USAGE),
    };
    let q = GroupQuery {
        app: given(p.app),
        release: given(p.release),
        kind: given(p.kind).filter(|k| KINDS.contains(&k.as_str())),
        tag,
        sort: GroupSort::parse(p.sort.as_deref().unwrap_or("")),
        descending: p.order.as_deref() != Some("asc"),
        offset: p.offset.unwrap_or(0),
        limit: PAGE,
    };
    match ui.store.group_page(q.clone(), now_ms()).await {
        Ok((items, more)) => pages::groups(&q, &items, more).into_response(),
        Err(e) => error_page(&e),
    }
}

#[derive(Deserialize)]
struct GroupParams {
    app: String,
    fp: String,
    tag: Option<String>,
    before: Option<i64>,
}

impl PageParams for GroupParams {
    const USAGE: &'static str = "A group's page is /group?app=APP&fp=FINGERPRINT (tag, if given, KEY=VALUE: only \
                                  its occurrences with that tag; before, a position of arrival): open one from \
                                  the list of groups.";
}

async fn group<S: Store>(State(ui): Shared<S>, Params(p): Params<GroupParams>) -> Response {
    let tag = match tag_param(p.tag) {
        Ok(tag) => tag,
        Err(text) => return bad_tag(&text, GroupParams::USAGE),
    };
    let result = async {
        let Some(g) = ui.store.group(p.app.clone(), p.fp.clone()).await? else { return Ok(None) };
        let page = ui.store.group_reports(p.app.clone(), p.fp.clone(), tag.clone(), p.before, PAGE).await?;
        // The latest report: the first of the newest page (one more probe when paging back or
        // filtering by a tag: the latest of the whole group).
        let newest = if p.before.is_none() && tag.is_none() {
            page.items.first().map(|l| l.row.id)
        } else {
            ui.store.group_reports(p.app, p.fp, None, None, 1).await?.items.first().map(|l| l.row.id)
        };
        let latest = match newest {
            Some(id) => ui.store.report(id).await?,
            None => None,
        };
        let stats = ui.store.group_stats(g.app.clone(), g.fingerprint.clone(), now_ms()).await?;
        Ok::<_, StoreError>(Some(pages::group(&g, latest.as_ref(), &stats, &page, tag.as_ref(), p.before)))
    };
    match result.await {
        Ok(Some(page)) => page.into_response(),
        Ok(None) => not_found("No such crash group."),
        Err(e) => error_page(&e),
    }
}

async fn report<S: Store>(State(ui): Shared<S>, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(id) = id.parse::<EntryId>() else { return not_found("That is not a report id.") };
    match ui.store.report(id).await {
        Ok(Some(r)) => pages::report(&r).into_response(),
        Ok(None) => not_found("No such report."),
        Err(e) => error_page(&e),
    }
}

async fn raw_report<S: Store>(State(ui): Shared<S>, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(id) = id.parse::<EntryId>() else { return not_found("That is not a report id.") };
    match ui.store.report(id).await {
        Ok(Some(r)) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{id}.json\"")),
            ],
            r.body,
        )
            .into_response(),
        Ok(None) => not_found("No such report."),
        Err(e) => error_page(&e),
    }
}

#[derive(Deserialize, Default)]
struct LogsParams {
    app: Option<String>,
    level: Option<String>,
    from: Option<String>,
    to: Option<String>,
    q: Option<String>,
    before: Option<i64>,
}

impl PageParams for LogsParams {
    const USAGE: &'static str = "The logs' page takes the filters of its form (app, level, from, to, q) and \
                                  before, a time in ms.";
}

const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

async fn logs<S: Store>(State(ui): Shared<S>, Params(p): Params<LogsParams>) -> Response {
    let form = pages::LogForm {
        app: given(p.app),
        level: given(p.level).map(|l| l.to_ascii_uppercase()),
        from: given(p.from),
        to: given(p.to),
        q: given(p.q),
    };
    let levels = match form.level.as_deref().and_then(|l| LEVELS.iter().position(|x| *x == l)) {
        Some(i) => LEVELS[..=i].iter().map(|l| (*l).to_owned()).collect(),
        None => Vec::new(),
    };
    let query = LogQuery {
        app: form.app.clone(),
        levels,
        from_ms: form.from.as_deref().and_then(crate::query::parse_utc),
        to_ms: form.to.as_deref().and_then(crate::query::parse_utc),
        text: form.q.clone(),
        before: p.before,
        limit: PAGE,
    };
    match ui.store.logs(query.clone()).await {
        Ok(page) => pages::logs(&form, &query, &page).into_response(),
        Err(e) => error_page(&e),
    }
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], STYLE)
        .into_response()
}

async fn login_form() -> Response {
    pages::login(false).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login<S: Store>(State(ui): Shared<S>, Form(f): Form<LoginForm>) -> Response {
    match &ui.access {
        Access::Token(token) if same(f.token.trim().as_bytes(), token.as_bytes()) => {
            let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", session_value(token));
            let mut response = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        Access::Token(_) => (StatusCode::UNAUTHORIZED, pages::login(true)).into_response(),
        Access::Open => Redirect::to("/").into_response(),
    }
}

/// Lets through who may read; answers 401 (basic auth challenge and the login form) to others.
async fn guard<S: Store>(State(ui): Shared<S>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let free = path == "/login" || path == "/static/style.css";
    match &ui.access {
        Access::Token(token) if !free && !authorized(request.headers(), token) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"lastword\", charset=\"UTF-8\"")],
            pages::login(false),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// Adds the security headers to every answer.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The UI's routes over `store`.
pub fn router<S: Store>(store: S, access: Access) -> Router {
    let ui = Arc::new(Ui { store, access });
    Router::new()
        .route("/", get(overview::<S>))
        .route("/groups", get(groups::<S>))
        .route("/group", get(group::<S>))
        .route("/reports/{id}", get(report::<S>))
        .route("/reports/{id}/raw.json", get(raw_report::<S>))
        .route("/logs", get(logs::<S>))
        .route("/login", get(login_form).post(login::<S>))
        .route("/static/style.css", get(style))
        .fallback(|| async { not_found("No such page.") })
        .layer(middleware::from_fn_with_state(Arc::clone(&ui), guard::<S>))
        .layer(middleware::from_fn(headers))
        .with_state(ui)
}

/// Serves the UI on `listener` until `shutdown` completes; then stops accepting, lets the requests in
/// progress finish and returns.
///
/// # Cancel safety
///
/// Dropping the future drops the connections in progress (the UI only reads, so nothing is lost); to
/// stop cleanly, complete `shutdown` and await it.
pub async fn serve<S: Store>(
    listener: TcpListener,
    store: S,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store, access)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests;
