//! The collector's read-only web UI (`lastword collect --ui ADDR`): server-rendered pages of the crash
//! groups, reports and logs of the store, served on a listener of its own.
//!
//! - [`serve`]: the server; its shutdown trigger is a parameter. [`router`]: the routes.
//! - What it reads: the read methods of the one [`Store`] interface, on a reader of its own
//!   ([`AnyStore::reader`](crate::store::AnyStore::reader)); their SQL is in each backend's `reads.rs`.
//! - `pages.rs`: the HTML (maud templates, escaped); `style.css`: compiled into the binary.
//! - [`Access`]: open on loopback, a token (cookie of a login or HTTP basic auth) anywhere else;
//!   `session.rs`: the logins (random ids kept here, with an expiry) and the limit on wrong passwords.
//! - `serve.rs`: the connection loop (header-read timeout, connection limits, TLS); [`UiConfig`] and
//!   [`UiLimits`] say how it is served.
//!
//! Every answer carries a strict Content-Security-Policy: no script at all, styles from this server
//! only, so even markup that escaped escaping could not run. A request whose `Host` is not this
//! server's (DNS rebinding) gets 421; a state-changing request (POST) from another origin gets 403
//! (the CSRF rule of ARCHITECTURE.md).

mod debug_files;
mod pages;
mod serve;
mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, Form, FromRequestParts, Path as UrlPath, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use lastword_spool::EntryId;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::store::reads::{GroupQuery, GroupSort, LogQuery, Tag};
use crate::store::{DebugFileStore, Store, StoreError, Waits};
use serve::OverTls;
use session::{Sessions, Throttle, token_matches};

pub use debug_files::{BODY_IDLE_TIMEOUT, DebugFilesApi};

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

/// The limits of the UI's listener and logins. [`UiLimits::default`] holds the defaults that
/// SECURITY.md lists (the `DEFAULT_*` constants, the defaults of `lastword collect`'s `--ui-*` flags);
/// [`UiLimits::validate`] refuses values that cannot work.
#[derive(Clone, Copy, Debug)]
pub struct UiLimits {
    /// How long a client has to send a request's head (line and headers), counted from when the
    /// server starts waiting for it (a new connection, or the next request of a kept-alive one); also
    /// the time a TLS handshake may take. Default 10 s.
    pub header_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted. Default 256.
    pub max_connections: usize,
    /// Connections open at once from one client address. Default 32.
    pub max_connections_per_address: usize,
    /// The largest request head (request line and headers) read, in bytes; a larger one gets 431.
    /// At least 8 KiB (hyper's minimum). Default 16 KiB.
    pub max_head_bytes: usize,
    /// The largest request body read (the login form), in bytes; a larger one gets 413. Default 16 KiB.
    pub max_body_bytes: usize,
    /// How long a login lasts. Default 12 h.
    pub session_ttl: Duration,
    /// Wrong passwords (login form or basic auth) one address may give within
    /// [`Self::login_window`]; past them every password from it is refused (429) until the window,
    /// counted from its first failure, ends. Default 10.
    pub login_failures: u32,
    /// See [`Self::login_failures`]. Default 5 min.
    pub login_window: Duration,
}

/// Default of [`UiLimits::header_timeout`], in ms.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Default of [`UiLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default of [`UiLimits::max_connections_per_address`].
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 32;
/// Default of [`UiLimits::max_head_bytes`].
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
/// Default of [`UiLimits::max_body_bytes`].
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;
/// Default of [`UiLimits::session_ttl`], in ms (12 h).
pub const DEFAULT_SESSION_TTL_MS: u64 = 12 * 3600 * 1000;
/// Default of [`UiLimits::login_failures`].
pub const DEFAULT_LOGIN_FAILURES: u32 = 10;
/// Default of [`UiLimits::login_window`], in ms (5 min).
pub const DEFAULT_LOGIN_WINDOW_MS: u64 = 300_000;

impl Default for UiLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_millis(DEFAULT_HEADER_TIMEOUT_MS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            session_ttl: Duration::from_millis(DEFAULT_SESSION_TTL_MS),
            login_failures: DEFAULT_LOGIN_FAILURES,
            login_window: Duration::from_millis(DEFAULT_LOGIN_WINDOW_MS),
        }
    }
}

impl UiLimits {
    /// Refuses a limit that cannot work (0, or beyond any sensible bound), naming its flag
    /// (`--ui-...`) and what it must be, before anything is served.
    pub fn validate(&self) -> Result<(), UiError> {
        let bad = |what: &'static str, why: &'static str| Err(UiError::Limit { what, why });
        let within = |v: u128, lo: u128, hi: u128| (lo..=hi).contains(&v);
        if !within(self.header_timeout.as_millis(), 100, 60_000) {
            return bad(
                "header-timeout-ms",
                "must be between 100 and 60000 (a half-sent request holds a connection for it)",
            );
        }
        if !within(self.max_connections as u128, 1, 65_536) {
            return bad("max-connections", "must be between 1 and 65536 (each takes a file descriptor)");
        }
        if !within(self.max_connections_per_address as u128, 1, self.max_connections as u128) {
            return bad("max-connections-per-address", "must be between 1 and --ui-max-connections");
        }
        if !within(self.max_head_bytes as u128, 8 * 1024, 1 << 20) {
            return bad("max-head-bytes", "must be between 8 KiB (8192) and 1 MiB");
        }
        if !within(self.max_body_bytes as u128, 1024, 1 << 20) {
            return bad("max-body-bytes", "must be between 1 KiB (1024) and 1 MiB");
        }
        if !within(self.session_ttl.as_millis(), 60_000, 30 * 86_400_000) {
            return bad("session-ttl-ms", "must be between 60000 (a minute) and 2592000000 (30 days)");
        }
        if !within(u128::from(self.login_failures), 1, 10_000) {
            return bad("login-failures", "must be between 1 and 10000");
        }
        if !within(self.login_window.as_millis(), 1_000, 86_400_000) {
            return bad("login-window-ms", "must be between 1000 and 86400000 (a day)");
        }
        Ok(())
    }
}

/// How the UI is served: who may read it, under which names, over TLS or not, with which limits.
#[derive(Clone, Debug)]
pub struct UiConfig {
    /// Who may read.
    pub access: Access,
    /// Host names (with or without a port) the UI answers to besides IP literals and `localhost`
    /// with its bound port: the names people use to reach it (`--ui-host`). A name without a port
    /// matches any port (behind a proxy the port people use is not the bound one).
    pub hosts: Vec<String>,
    /// The certificate and key to serve HTTPS with; plain HTTP when `None`.
    pub tls: Option<Arc<ServerConfig>>,
    /// The limits.
    pub limits: UiLimits,
    /// The debug files: the upload API, the debuginfod API and their page; `None` serves neither.
    pub debug_files: Option<DebugFilesApi>,
}

impl UiConfig {
    /// Plain HTTP, no extra host name, the default limits.
    pub fn new(access: Access) -> Self {
        Self { access, hosts: Vec::new(), tls: None, limits: UiLimits::default(), debug_files: None }
    }
}

/// Why the UI cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// A limit makes no sense ([`UiLimits::validate`]).
    #[error("--ui-{what} {why}")]
    Limit {
        /// The flag, without its `--ui-`.
        what: &'static str,
        /// What it must be.
        why: &'static str,
    },
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

/// The session id of `headers`' login cookie, if there is one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        v.split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, v)| v)
    })
}

/// The bearer token of `headers` (`Authorization: Bearer`, as debuginfod clients send from
/// `DEBUGINFOD_HEADERS_FILE`), if there is one.
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
}

/// The password of `headers`' HTTP basic auth, if there is one.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, pw)| pw.to_owned()))
}

/// The client address of a request (from the connection loop), the unspecified address when the
/// router is driven some other way.
fn client_ip(request_extensions: &axum::http::Extensions) -> std::net::IpAddr {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip())
}

/// The `Host` of a request split into a lowercase name (IPv6 in brackets, no trailing dot) and a
/// port, if it says one.
fn host_of(request: &Request) -> Option<(String, Option<u16>)> {
    let text = match request.headers().get(header::HOST) {
        Some(v) => v.to_str().ok()?.to_owned(),
        None => request.uri().authority()?.as_str().to_owned(),
    };
    split_host(&text)
}

fn split_host(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim().to_ascii_lowercase();
    let (name, port) = if text.starts_with('[') {
        let end = text.find(']')?;
        let port = match &text[end + 1..] {
            "" => None,
            rest => Some(rest.strip_prefix(':')?.parse().ok()?),
        };
        (text[..=end].to_owned(), port)
    } else {
        match text.rsplit_once(':') {
            Some((name, port)) => (name.to_owned(), Some(port.parse().ok()?)),
            None => (text.clone(), None),
        }
    };
    let name = name.trim_end_matches('.').to_owned();
    (!name.is_empty()).then_some((name, port))
}

/// The names a request's `Host` may carry: see [`UiConfig::hosts`].
#[derive(Debug)]
struct Hosts {
    /// The bound port.
    port: u16,
    /// The port a `Host` without one means: 443 over TLS, else 80.
    default_port: u16,
    /// `--ui-host` names, parsed.
    extra: Vec<(String, Option<u16>)>,
}

impl Hosts {
    /// Whether a request for `name`:`port` is for this server. IP literals cannot be rebound (DNS
    /// rebinding needs a name the attacker controls), so any with the bound port is accepted.
    fn accepts(&self, name: &str, port: Option<u16>) -> bool {
        let port_or_default = port.unwrap_or(self.default_port);
        let ip_literal = name.parse::<std::net::Ipv4Addr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok());
        if (ip_literal || name == "localhost") && port_or_default == self.port {
            return true;
        }
        self.extra.iter().any(|(n, p)| n == name && p.is_none_or(|p| p == port_or_default))
    }
}

struct Ui<S> {
    store: S,
    access: Access,
    hosts: Hosts,
    sessions: Sessions,
    throttle: Throttle,
    debug_files: Option<DebugFilesApi>,
}

type UiState<S> = State<Arc<Ui<S>>>;

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

async fn overview<S: Store>(State(ui): UiState<S>) -> Response {
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

async fn groups<S: Store>(State(ui): UiState<S>, Params(p): Params<GroupsParams>) -> Response {
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

async fn group<S: Store>(State(ui): UiState<S>, Params(p): Params<GroupParams>) -> Response {
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

async fn report<S: Store>(State(ui): UiState<S>, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(id) = id.parse::<EntryId>() else { return not_found("That is not a report id.") };
    match ui.store.report(id).await {
        Ok(Some(r)) => pages::report(&r).into_response(),
        Ok(None) => not_found("No such report."),
        Err(e) => error_page(&e),
    }
}

async fn raw_report<S: Store>(State(ui): UiState<S>, UrlPath(id): UrlPath<String>) -> Response {
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

async fn logs<S: Store>(State(ui): UiState<S>, Params(p): Params<LogsParams>) -> Response {
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

/// The answer to a client address past its wrong passwords.
fn throttled() -> Response {
    let text = "Too many wrong tokens from this address: wait a few minutes before trying again.";
    (StatusCode::TOO_MANY_REQUESTS, pages::message("Too many attempts", text)).into_response()
}

/// The `Set-Cookie` value of session `id` (empty and expired to log out).
fn session_set_cookie(id: &str, max_age: Duration, over_tls: bool) -> Option<HeaderValue> {
    let secure = if over_tls { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}", max_age.as_secs());
    HeaderValue::from_str(&cookie).ok()
}

fn over_tls(request_extensions: &axum::http::Extensions) -> bool {
    request_extensions.get::<OverTls>().is_some_and(|t| t.0)
}

async fn login<S: Store>(
    State(ui): UiState<S>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    tls: Option<axum::Extension<OverTls>>,
    Form(f): Form<LoginForm>,
) -> Response {
    let Access::Token(token) = &ui.access else { return Redirect::to("/").into_response() };
    if !ui.throttle.allows(peer.ip()) {
        return throttled();
    }
    if !token_matches(f.token.trim(), token) {
        ui.throttle.failed(peer.ip());
        return (StatusCode::UNAUTHORIZED, pages::login(true)).into_response();
    }
    let Some(id) = ui.sessions.open() else {
        let text = "No session could be opened (no randomness): use HTTP basic auth.";
        return (StatusCode::INTERNAL_SERVER_ERROR, pages::message("Error", text)).into_response();
    };
    let mut response = Redirect::to("/").into_response();
    if let Some(v) = session_set_cookie(&id, ui.sessions.ttl(), tls.is_some_and(|t| t.0.0)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// Ends the session of the request's cookie and clears the cookie.
async fn logout<S: Store>(State(ui): UiState<S>, request: Request) -> Response {
    if let Some(id) = session_cookie(request.headers()) {
        ui.sessions.close(id);
    }
    let mut response = Redirect::to("/login").into_response();
    if let Some(v) = session_set_cookie("", Duration::ZERO, over_tls(request.extensions())) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The answer to give instead of the page, unless the request may read: a live session cookie, or
/// the right basic-auth password from an address not past its wrong ones (a wrong one counts).
fn refusal<S>(ui: &Ui<S>, token: &str, request: &Request) -> Option<Response> {
    if session_cookie(request.headers()).is_some_and(|id| ui.sessions.valid(id)) {
        return None;
    }
    let challenge = || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"lastword\", charset=\"UTF-8\"")],
            pages::login(false),
        )
            .into_response()
    };
    let given = basic_password(request.headers()).or_else(|| bearer_token(request.headers()));
    let Some(password) = given else { return Some(challenge()) };
    let ip = client_ip(request.extensions());
    if !ui.throttle.allows(ip) {
        return Some(throttled());
    }
    if token_matches(&password, token) {
        None
    } else {
        ui.throttle.failed(ip);
        Some(challenge())
    }
}

/// Lets through who may read; answers 401 (basic auth challenge and the login form) to others.
async fn guard<S: Store>(State(ui): UiState<S>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    // The upload API checks its own token (debug_files.rs).
    let free = path == "/login"
        || path == "/logout"
        || path == "/static/style.css"
        || path.starts_with("/api/debug-files/");
    if let Access::Token(token) = &ui.access
        && !free
        && let Some(answer) = refusal(&ui, token, &request)
    {
        return answer;
    }
    let signed_in = matches!(ui.access, Access::Token(_))
        && session_cookie(request.headers()).is_some_and(|id| ui.sessions.valid(id));
    pages::SIGNED_IN.scope(signed_in, next.run(request)).await
}

/// Answers 421 to a request whose `Host` is not this server's (a page of another name that DNS
/// rebinding points at this address), and 403 to a state-changing request from another origin
/// (CSRF): the rule is in ARCHITECTURE.md.
async fn origin_check<S: Store>(State(ui): UiState<S>, request: Request, next: Next) -> Response {
    let Some((name, port)) = host_of(&request).filter(|(n, p)| ui.hosts.accepts(n, *p)) else {
        let text = "This server does not answer to that host name. Give it with --ui-host to allow it.";
        return (StatusCode::MISDIRECTED_REQUEST, pages::message("Wrong host", text)).into_response();
    };
    let safe = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if !safe && !same_origin(request.headers(), over_tls(request.extensions()), &name, port) {
        let text = "A form of another site cannot be sent here.";
        return (StatusCode::FORBIDDEN, pages::message("Refused", text)).into_response();
    }
    next.run(request).await
}

/// Whether a state-changing request comes from a page of this server: its `Sec-Fetch-Site`, if
/// given, is `same-origin`, and its `Origin`, if given, is this server's scheme and `Host`. A
/// request with neither comes from no browser, so from no page (CSRF needs a browser).
fn same_origin(headers: &HeaderMap, over_tls: bool, name: &str, port: Option<u16>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Some(rest) =
        origin.to_str().ok().and_then(|o| o.strip_prefix(if over_tls { "https://" } else { "http://" }))
    else {
        return false;
    };
    let default_port = if over_tls { 443 } else { 80 };
    split_host(rest)
        .is_some_and(|(n, p)| n == name && p.unwrap_or(default_port) == port.unwrap_or(default_port))
}

/// Adds the security headers to every answer.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with this server's own forms, which
    // the CSRF check could not tell from another site's.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The UI's routes over `store`, for a listener bound to `bound`.
fn router<S: Waits + DebugFileStore>(store: S, config: &UiConfig, bound: SocketAddr) -> Router {
    let extra = config.hosts.iter().filter_map(|h| split_host(h)).collect();
    let default_port = if config.tls.is_some() { 443 } else { 80 };
    let ui = Arc::new(Ui {
        store,
        access: config.access.clone(),
        hosts: Hosts { port: bound.port(), default_port, extra },
        sessions: Sessions::new(config.limits.session_ttl),
        throttle: Throttle::new(config.limits.login_failures, config.limits.login_window),
        debug_files: config.debug_files.clone(),
    });
    Router::new()
        .route("/", get(overview::<S>))
        .route("/groups", get(groups::<S>))
        .route("/group", get(group::<S>))
        .route("/reports/{id}", get(report::<S>))
        .route("/reports/{id}/raw.json", get(raw_report::<S>))
        .route("/logs", get(logs::<S>))
        .route("/login", get(login_form).post(login::<S>))
        .route("/logout", post(logout::<S>))
        .route("/static/style.css", get(style))
        // Debug files (debug_files.rs): the page, the debuginfod API, the upload API.
        .route("/debug-files", get(debug_files::page::<S>))
        .route("/buildid/{id}/{kind}", get(debug_files::debuginfod::<S>))
        .route("/api/debug-files/{id}/{kind}", get(debug_files::stored::<S>).put(debug_files::upload::<S>))
        .fallback(|| async { not_found("No such page.") })
        .layer(DefaultBodyLimit::max(config.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&ui), guard::<S>))
        .layer(middleware::from_fn_with_state(Arc::clone(&ui), origin_check::<S>))
        .layer(middleware::from_fn(headers))
        .with_state(ui)
}

/// Serves the UI on `listener` with `access`, plain HTTP and the default limits: [`serve_with`].
///
/// # Cancel safety
///
/// As [`serve_with`].
pub async fn serve<S: Waits + DebugFileStore>(
    listener: TcpListener,
    store: S,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, store, UiConfig::new(access), shutdown).await
}

/// Serves the UI on `listener` as `config` says until `shutdown` completes; then stops accepting,
/// lets the requests in progress finish (at most 5 s), closes the idle connections and returns.
///
/// # Cancel safety
///
/// Dropping the future drops the connections in progress (the UI only reads, so nothing is lost); to
/// stop cleanly, complete `shutdown` and await it.
pub async fn serve_with<S: Waits + DebugFileStore>(
    listener: TcpListener,
    store: S,
    config: UiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    let app = router(store, &config, bound);
    let tls = config.tls.clone().map(TlsAcceptor::from);
    serve::run(listener, app, tls, config.limits, shutdown).await
}

#[cfg(test)]
mod tests;
