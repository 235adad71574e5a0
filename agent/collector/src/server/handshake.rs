//! The checks made on the HTTP upgrade request, before any websocket message is read (PROTOCOL.md,
//! "Transport and handshake"): path, bearer token (401), subprotocol (400), capacity (503).
//!
//! This is where a connection becomes authenticated: the request that passes the first three checks
//! takes one of the session slots (`Limits::max_connections`), or is refused 503 when none is free.
//! Until then it holds only one of the many handshake places taken at accept (`Limits::max_handshakes`),
//! for the handshake deadline at most.

use std::sync::Arc;

use lastword_protocol::{INGEST_PATH, SUBPROTOCOL, parse_bearer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};

use super::Tokens;

/// Seconds a client refused for capacity is asked to wait.
pub(crate) const RETRY_AFTER_SECS: u32 = 1;

fn refuse(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{text}\n")));
    *response.status_mut() = status;
    response
}

/// Decides on an upgrade request: `Ok` with the response to send (naming the subprotocol) and the
/// session slot taken from `sessions`, held for as long as the session lasts; or the error response that
/// refuses it.
#[allow(clippy::result_large_err, reason = "the shape of tungstenite's Callback")]
pub(crate) fn check(
    request: &Request,
    mut response: Response,
    tokens: &Tokens,
    sessions: &Arc<Semaphore>,
) -> Result<(Response, OwnedSemaphorePermit), ErrorResponse> {
    if request.uri().path() != INGEST_PATH {
        return Err(refuse(StatusCode::NOT_FOUND, "lastword collects on /ingest"));
    }
    let token =
        request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(parse_bearer);
    if !token.is_some_and(|t| tokens.accepts(t)) {
        let mut refused = refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        refused.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(refused);
    }
    let speaks_v1 = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !speaks_v1 {
        return Err(refuse(StatusCode::BAD_REQUEST, "this server speaks only the subprotocol lastword.v1"));
    }
    let Ok(slot) = Arc::clone(sessions).try_acquire_owned() else {
        let mut refused = refuse(StatusCode::SERVICE_UNAVAILABLE, "too many connections, try again later");
        refused.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        return Err(refused);
    };
    response.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    Ok((response, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, auth: Option<&str>, proto: Option<&str>) -> Request {
        let mut b = Request::builder().uri(path);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        if let Some(p) = proto {
            b = b.header(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        b.body(()).unwrap()
    }

    fn status(r: Result<(Response, OwnedSemaphorePermit), ErrorResponse>) -> StatusCode {
        match r {
            Ok((r, _)) => r.status(),
            Err(e) => e.status(),
        }
    }

    #[test]
    fn each_refusal_has_its_status() {
        let tokens = Tokens::from_list(["t1", "t2"]);
        let ok = |p, a, s, admitted: bool| {
            let sessions = Arc::new(Semaphore::new(usize::from(admitted)));
            status(check(&request(p, a, s), Response::default(), &tokens, &sessions))
        };
        assert_eq!(ok("/ingest", Some("Bearer t2"), Some("x, lastword.v1"), true), StatusCode::OK);
        assert_eq!(ok("/other", Some("Bearer t2"), Some("lastword.v1"), true), StatusCode::NOT_FOUND);
        assert_eq!(ok("/ingest", None, Some("lastword.v1"), true), StatusCode::UNAUTHORIZED);
        assert_eq!(ok("/ingest", Some("Bearer t3"), Some("lastword.v1"), true), StatusCode::UNAUTHORIZED);
        assert_eq!(ok("/ingest", Some("Basic t1"), Some("lastword.v1"), true), StatusCode::UNAUTHORIZED);
        assert_eq!(ok("/ingest", Some("Bearer t1"), None, true), StatusCode::BAD_REQUEST);
        assert_eq!(ok("/ingest", Some("Bearer t1"), Some("lastword.v2"), true), StatusCode::BAD_REQUEST);
        assert_eq!(
            ok("/ingest", Some("Bearer t1"), Some("lastword.v1"), false),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // An unauthenticated client learns nothing else, not even that the server is full.
        assert_eq!(ok("/ingest", None, None, false), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn accepted_response_names_the_subprotocol() {
        let tokens = Tokens::from_list(["t"]);
        let sessions = Arc::new(Semaphore::new(1));
        let (r, _slot) = check(
            &request("/ingest", Some("Bearer t"), Some("lastword.v1")),
            Response::default(),
            &tokens,
            &sessions,
        )
        .unwrap();
        assert_eq!(r.headers()[header::SEC_WEBSOCKET_PROTOCOL], "lastword.v1");
        assert_eq!(sessions.available_permits(), 0, "the session holds its slot");
    }

    #[test]
    fn a_refused_request_takes_no_session_slot() {
        let tokens = Tokens::from_list(["t"]);
        let sessions = Arc::new(Semaphore::new(1));
        for (path, auth, proto) in [
            ("/ingest", None, Some("lastword.v1")),
            ("/ingest", Some("Bearer wrong"), Some("lastword.v1")),
            ("/other", Some("Bearer t"), Some("lastword.v1")),
            ("/ingest", Some("Bearer t"), None),
        ] {
            assert!(check(&request(path, auth, proto), Response::default(), &tokens, &sessions).is_err());
            assert_eq!(sessions.available_permits(), 1, "{path} {auth:?} {proto:?}");
        }
    }
}
