//! The debug files' routes of the UI's server: the upload API of `lastword debug-files upload`
//! (`/api/debug-files/ID/KIND`, the upload token as a bearer token), the debuginfod API
//! (`/buildid/ID/debuginfo|executable`, read like the pages: the UI token), and the "Debug files"
//! page.
//!
//! The upload API has an authentication of its own (not the UI's login, not the agents' ingest
//! token: whoever can replace a debug file can make every report of a build lie), and no cookie: a
//! browser never sends its credentials by itself, so it is not exposed to CSRF (ARCHITECTURE.md).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use maud::html;
use serde::Deserialize;

use super::pages::{self, Tab};
use super::session::token_matches;
use super::{Ui, UiState, error_page, throttled};
use crate::debug_files::{Accepted, DebugFiles, FileKind, is_build_id};
use crate::query::utc;
use crate::store::{DebugFileRow, DebugFileStore, Store, Waits};

/// How long an upload may send nothing before it is dropped (408).
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows of the "Debug files" page.
const PAGE_ROWS: u32 = 500;

/// The debug files behind the UI's server, and who may upload.
#[derive(Clone, Debug)]
pub struct DebugFilesApi {
    /// The collector's debug files.
    pub files: DebugFiles,
    /// The token an upload presents (`Authorization: Bearer`); without one, uploads are refused
    /// (403) and only the debuginfod API and the page are served.
    pub upload_token: Option<Arc<str>>,
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn bearer(request: &Request) -> Option<&str> {
    request.headers().get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// The refusal of a request of the upload API without the upload token (counted against its address).
fn upload_refusal<S>(ui: &Ui<S>, api: &DebugFilesApi, request: &Request) -> Option<Response> {
    let Some(token) = &api.upload_token else {
        return Some(text(
            StatusCode::FORBIDDEN,
            "uploads are off: the collector has no --upload-token-file",
        ));
    };
    let ip = super::client_ip(request.extensions());
    if !ui.throttle.allows(ip) {
        return Some(throttled());
    }
    match bearer(request) {
        Some(given) if token_matches(given, token) => None,
        given => {
            if given.is_some() {
                ui.throttle.failed(ip);
            }
            let mut answer =
                text(StatusCode::UNAUTHORIZED, "an upload needs the upload token (Authorization: Bearer)");
            answer.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(answer)
        }
    }
}

fn check_target(id: &str, kind: &str) -> Result<(String, FileKind), (StatusCode, &'static str)> {
    let Some(kind) = FileKind::parse(kind) else {
        return Err((StatusCode::NOT_FOUND, "the kind of a debug file is debuginfo or executable"));
    };
    if !is_build_id(id) {
        return Err((
            StatusCode::BAD_REQUEST,
            "a build id is lowercase hex, an even count of 2 to 128 digits",
        ));
    }
    Ok((id.to_owned(), kind))
}

/// `GET`/`HEAD /api/debug-files/ID/KIND`: 200 with the stored file's size and SHA-256
/// (`size SHA256`, one line), or 404.
pub(super) async fn stored<S: Store>(
    State(ui): UiState<S>,
    UrlPath((id, kind)): UrlPath<(String, String)>,
    request: Request,
) -> Response {
    let Some(api) = &ui.debug_files else { return text(StatusCode::NOT_FOUND, "no debug files here") };
    if let Some(answer) = upload_refusal(&ui, api, &request) {
        return answer;
    }
    let (id, kind) = match check_target(&id, &kind) {
        Ok(t) => t,
        Err((status, why)) => return text(status, why),
    };
    match api.files.stored(&id, kind).await {
        Ok(Some(row)) => text(StatusCode::OK, format!("{} {}", row.size, row.sha256)),
        Ok(None) => text(StatusCode::NOT_FOUND, "not here"),
        Err(e) => {
            tracing::error!("debug files: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

#[derive(Deserialize, Default)]
pub(super) struct UploadParams {
    name: Option<String>,
}

/// `PUT /api/debug-files/ID/KIND?name=FILE`: the body is the file. 201 stored, 200 the same bytes
/// were there; 400 a bad build id, 401 no upload token, 408 a body that stalls, 413 past the size
/// limit, 422 a file that is not ELF, has another build id or cannot be that kind.
pub(super) async fn upload<S: Store>(
    State(ui): UiState<S>,
    UrlPath((id, kind)): UrlPath<(String, String)>,
    Query(params): Query<UploadParams>,
    request: Request,
) -> Response {
    let Some(api) = &ui.debug_files else { return text(StatusCode::NOT_FOUND, "no debug files here") };
    if let Some(answer) = upload_refusal(&ui, api, &request) {
        return answer;
    }
    let (id, kind) = match check_target(&id, &kind) {
        Ok(t) => t,
        Err((status, why)) => return text(status, why),
    };
    let limit = api.files.settings().max_file_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the file is larger than the limit of {limit} bytes"),
        );
    }
    let name: String = params
        .name
        .as_deref()
        .map(|n| n.rsplit('/').next().unwrap_or(n))
        .filter(|n| !n.is_empty())
        .unwrap_or("(no name)")
        .chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect();
    let mut staging = match api.files.stage().await {
        Ok(s) => s,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut body = request.into_body().into_data_stream();
    loop {
        match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next()).await {
            Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "the upload stalled"),
            Ok(None) => break,
            Ok(Some(Err(e))) => return text(StatusCode::BAD_REQUEST, format!("the upload broke off: {e}")),
            Ok(Some(Ok(bytes))) => {
                if let Err(e) = staging.write(&bytes).await {
                    let status = if e.is_the_files() {
                        StatusCode::PAYLOAD_TOO_LARGE
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    };
                    return text(status, e.to_string());
                }
            }
        }
    }
    let staged = match staging.finish().await {
        Ok(s) => s,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match api.files.accept(staged, &id, kind, &name).await {
        Ok(Accepted::Stored) => {
            tracing::info!("debug files: stored {id}/{} ({name})", kind.name());
            text(StatusCode::CREATED, "stored")
        }
        Ok(Accepted::AlreadyThere) => text(StatusCode::OK, "already there"),
        Err(e) if e.is_the_files() => text(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e) => {
            tracing::error!("debug files: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// `GET`/`HEAD /buildid/ID/debuginfo|executable`: the debuginfod API. The file, streamed, with
/// `Content-Length` and `X-Debuginfod-Size`; 404 when the collector (and its upstreams) lack it.
pub(super) async fn debuginfod<S: Store>(
    State(ui): UiState<S>,
    UrlPath((id, kind)): UrlPath<(String, String)>,
) -> Response {
    let Some(api) = &ui.debug_files else { return text(StatusCode::NOT_FOUND, "no debug files here") };
    let (id, kind) = match check_target(&id, &kind) {
        Ok(t) => t,
        Err((status, why)) => return text(status, why),
    };
    let path = match api.files.file(&id, kind).await {
        Ok(Some(path)) => path,
        Ok(None) => return text(StatusCode::NOT_FOUND, "no such file"),
        Err(e) => {
            tracing::error!("debug files: {e}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot open the file: {e}")),
    };
    let size = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the file: {e}")),
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024));
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert("x-debuginfod-size", HeaderValue::from(size));
    response
}

/// The "Debug files" page: what the store holds, the most recently uploaded first.
pub(super) async fn page<S: Waits + DebugFileStore>(State(ui): UiState<S>) -> Response {
    let rows = match ui.store.debug_files(PAGE_ROWS).await {
        Ok(rows) => rows,
        Err(e) => return error_page(&e),
    };
    match ui.store.wait_counts(PAGE_ROWS).await {
        Ok(waits) => render(&rows, &waits).into_response(),
        Err(e) => error_page(&e),
    }
}

/// The page of `rows` (the files held) and `waits` (build ids reports wait for, with how many).
fn render(rows: &[DebugFileRow], waits: &[(String, u64)]) -> maud::Markup {
    let content = html! {
        h1 { "Debug files" }
        p.muted {
            "Uploaded with " code { "lastword debug-files upload" } ", or fetched from an upstream debuginfod \
             server; served to gdb and debuginfod-find at " code { "/buildid/ID/debuginfo" } "."
        }
        @if rows.is_empty() {
            p { "No debug files yet." }
        } @else {
            table {
                thead { tr { th { "Build id" } th { "Kind" } th { "File" } th { "Size" } th { "Uploaded" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { code { (r.build_id) } }
                            td { (r.kind.name()) }
                            td { (r.file_name) }
                            td { (r.size) " bytes" }
                            td { (utc(r.uploaded_ms)) }
                        }
                    }
                }
            }
        }
        h2 { "Reports waiting for a debug file" }
        @if waits.is_empty() {
            p { "No report waits for a debug file." }
        } @else {
            p.muted {
                "Stored with frames that have no name in a module of this build id; uploading its debug \
                 file names them and moves them to their group."
            }
            table.waits {
                thead { tr { th { "Build id" } th { "Reports waiting" } } }
                tbody {
                    @for (build_id, n) in waits {
                        tr { td { code { (build_id) } } td.num { (n) } }
                    }
                }
            }
        }
    };
    pages::layout("Debug files", Tab::DebugFiles, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_lists_the_build_ids_reports_wait_for() {
        let page = render(&[], &[("ab12cd".into(), 7)]).into_string();
        assert!(page.contains("Reports waiting for a debug file"), "{page}");
        assert!(page.contains("<code>ab12cd</code>") && page.contains(">7<"), "{page}");
        let none = render(&[], &[]).into_string();
        assert!(none.contains("No report waits for a debug file"), "{none}");
    }
}
