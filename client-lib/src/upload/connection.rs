//! Opening a connection to a collector: TCP, websocket handshake with the token and subprotocol,
//! then `hello` and `welcome` (PROTOCOL.md, "Transport and handshake").

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::UploaderConfig;
use crate::protocol::{
    ClientMessage, Hello, INGEST_PATH, Losses, PROTOCOL_VERSION, SUBPROTOCOL, ServerMessage, Welcome, bearer,
};

/// The websocket type the uploader uses.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The largest message the uploader reads from a collector (answers are small).
const MAX_INCOMING: usize = 1 << 20;
/// The websocket read buffer (see `connect`).
const READ_BUFFER: usize = 16 * 1024;

/// Why a connection to a collector could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL cannot be used.
    #[error("invalid collector URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP or TLS failed.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The error.
        reason: String,
    },
    /// The whole connection took longer than the connect timeout.
    #[error("timed out connecting to {url}")]
    Timeout {
        /// The URL.
        url: String,
    },
    /// The collector refused the token (HTTP 401 or 403).
    #[error("{url} refused the token (HTTP {status}): check the token")]
    Unauthorized {
        /// The URL.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// Nothing answers on this path (HTTP 404): the URL's path is wrong.
    #[error("{url} has no collector on this path (HTTP 404): check the URL (the path is /ingest)")]
    NotFound {
        /// The URL.
        url: String,
    },
    /// TLS cannot be set up: the CA file cannot be read or holds no certificate, or there are no
    /// trusted roots at all.
    #[error("cannot set up TLS for {url}: {reason}")]
    Tls {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The collector is at its connection limit (HTTP 503).
    #[error("{url} is busy (HTTP 503)")]
    Busy {
        /// The URL.
        url: String,
        /// The `Retry-After` it gave.
        retry_after: Option<Duration>,
    },
    /// Any other handshake refusal or protocol mismatch.
    #[error("{url} refused the connection: {reason}")]
    Refused {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
}

impl ConnectError {
    /// Whether a person must change the configuration before this can work (a refused token, a wrong
    /// path, an unusable URL or CA file), as opposed to a failure that may pass (a collector down,
    /// busy or slow), which is retried with backoff.
    pub fn is_configuration_error(&self) -> bool {
        matches!(
            self,
            ConnectError::BadUrl { .. }
                | ConnectError::Unauthorized { .. }
                | ConnectError::NotFound { .. }
                | ConnectError::Tls { .. }
        )
    }
}

/// An open connection, after `welcome`.
pub(crate) struct Connected {
    pub ws: Ws,
    pub welcome: Welcome,
}

/// The request for `url`, with `/ingest` when it has no path, the subprotocol and the token.
pub(crate) fn request(
    url: &str,
    token: Option<&str>,
) -> Result<tungstenite::handshake::client::Request, ConnectError> {
    let bad = |reason: String| ConnectError::BadUrl { url: url.to_owned(), reason };
    let uri: Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    match uri.scheme_str() {
        Some("ws" | "wss") => {}
        _ => return Err(bad("the scheme must be ws:// or wss://".into())),
    }
    let uri = if uri.path().is_empty() || uri.path() == "/" {
        let authority = uri.authority().ok_or_else(|| bad("no host".into()))?;
        let scheme = uri.scheme_str().unwrap_or("ws");
        format!("{scheme}://{authority}{INGEST_PATH}").parse::<Uri>().map_err(|e| bad(format!("{e}")))?
    } else {
        uri
    };
    let mut request = uri.into_client_request().map_err(|e| bad(e.to_string()))?;
    let headers = request.headers_mut();
    headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    if let Some(token) = token {
        let value = HeaderValue::from_str(&bearer(token))
            .map_err(|_| bad("the token has characters a header cannot carry".into()))?;
        headers.insert(header::AUTHORIZATION, value);
    }
    Ok(request)
}

/// Connects to `url` and exchanges hello and welcome. The caller bounds it with a timeout. `tls` is
/// the connector for `wss://` (see [`tls_connector`]), made once by the caller.
///
/// # Cancel safety
/// Cancelling it drops the half-open connection; nothing else is held.
pub(crate) async fn connect(
    url: &str,
    config: &UploaderConfig,
    losses: Losses,
    tls: Option<Connector>,
) -> Result<Connected, ConnectError> {
    let request = request(url, config.token.as_deref())?;
    let uri = request.uri().clone();
    let unreachable = |reason: String| ConnectError::Unreachable { url: url.to_owned(), reason };
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("wss") { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    // The read buffer is zeroed up to its size before every read (tungstenite's FrameCodec::read_in),
    // once per wake-up of the uploader: the default 128 KiB cost more CPU per drained entry than
    // parsing its answer. Answers are about 70 bytes: 16 KiB holds about 230 of them (more are read
    // in more reads), and a larger frame still gets the room its header asks for.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_INCOMING))
        .max_frame_size(Some(MAX_INCOMING))
        .max_write_buffer_size(64 << 20);
    let connector = if uri.scheme_str() == Some("wss") {
        let no_tls = || ConnectError::Tls { url: url.to_owned(), reason: "no TLS connector".into() };
        Some(tls.ok_or_else(no_tls)?)
    } else {
        Some(Connector::Plain)
    };
    let (mut ws, response) =
        tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(ws_config), connector)
            .await
            .map_err(|e| classify(url, e))?;
    let agreed = response.headers().get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok());
    if agreed != Some(SUBPROTOCOL) {
        return Err(ConnectError::Refused {
            url: url.to_owned(),
            reason: format!("the server does not speak {SUBPROTOCOL} (it answered {agreed:?})"),
        });
    }
    let hello = ClientMessage::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        agent: config.agent.clone(),
        app: config.app.clone(),
        release: config.release.clone(),
        host: config.host.clone(),
        losses,
    });
    ws.send(Message::text(hello.to_json())).await.map_err(|e| unreachable(e.to_string()))?;
    loop {
        let refused = |reason: String| ConnectError::Refused { url: url.to_owned(), reason };
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return match serde_json::from_str::<ServerMessage>(text.as_str()) {
                    Ok(ServerMessage::Welcome(welcome)) if welcome.protocol == PROTOCOL_VERSION => {
                        Ok(Connected { ws, welcome })
                    }
                    Ok(other) => Err(refused(format!("expected welcome, got {other:?}"))),
                    Err(e) => Err(refused(format!("unreadable welcome: {e}"))),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                return Err(refused(format!("closed before welcome: {frame:?}")));
            }
            Some(Ok(other)) => return Err(refused(format!("unexpected {other:?} before welcome"))),
            Some(Err(e)) => return Err(unreachable(e.to_string())),
            None => return Err(refused("closed before welcome".into())),
        }
    }
}

/// Reads the CA file's certificates (at least one), to tell a missing or unusable file at start.
pub(crate) fn check_ca_file(path: &std::path::Path) -> Result<(), String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0usize;
    for cert in certs {
        cert.map_err(|e| format!("{}: {e}", path.display()))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(())
}

/// A rustls client configuration trusting the system's roots and the configured CA file.
pub(crate) fn tls_connector(config: &UploaderConfig) -> Result<Connector, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: the CA file (if any) may be all that is needed.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &config.ca_file {
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("no trusted CA certificates (none from the system, no --ca-file)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(tls)))
}

fn classify(url: &str, error: tungstenite::Error) -> ConnectError {
    let url = url.to_owned();
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            match status {
                401 | 403 => ConnectError::Unauthorized { url, status },
                404 => ConnectError::NotFound { url },
                503 => {
                    let retry_after = response
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    ConnectError::Busy { url, retry_after }
                }
                _ => ConnectError::Refused { url, reason: format!("HTTP {status}") },
            }
        }
        tungstenite::Error::Io(e) => ConnectError::Unreachable { url, reason: e.to_string() },
        other => ConnectError::Refused { url, reason: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_without_path_gets_ingest_and_headers_carry_token_and_subprotocol() {
        let r = request("ws://127.0.0.1:9/", Some("tok")).unwrap();
        assert_eq!(r.uri().to_string(), "ws://127.0.0.1:9/ingest");
        assert_eq!(r.headers()[header::AUTHORIZATION], "Bearer tok");
        assert_eq!(r.headers()[header::SEC_WEBSOCKET_PROTOCOL], SUBPROTOCOL);
        let r = request("ws://h:1/custom/path", None).unwrap();
        assert_eq!(r.uri().path(), "/custom/path");
        assert!(r.headers().get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn refused_tokens_wrong_paths_and_tls_setup_are_configuration_errors_and_the_rest_is_retried() {
        let url = || "ws://h:1/ingest".to_owned();
        let config = [
            ConnectError::Unauthorized { url: url(), status: 401 },
            ConnectError::NotFound { url: url() },
            ConnectError::Tls { url: url(), reason: "x".into() },
            ConnectError::BadUrl { url: url(), reason: "x".into() },
        ];
        assert!(config.iter().all(ConnectError::is_configuration_error));
        let passing = [
            ConnectError::Unreachable { url: url(), reason: "refused".into() },
            ConnectError::Busy { url: url(), retry_after: None },
            ConnectError::Timeout { url: url() },
            ConnectError::Refused { url: url(), reason: "HTTP 500".into() },
        ];
        assert!(!passing.iter().any(ConnectError::is_configuration_error));
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_told_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem");
        assert!(check_ca_file(&missing).unwrap_err().contains("ca.pem"));
        std::fs::write(&missing, "").unwrap();
        assert!(check_ca_file(&missing).unwrap_err().contains("no certificate"));
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        for url in ["http://x/", "not a url", "ws://h:1/\n"] {
            assert!(matches!(request(url, None), Err(ConnectError::BadUrl { .. })), "{url}");
        }
        assert!(matches!(request("ws://h:1/", Some("a\nb")), Err(ConnectError::BadUrl { .. })));
    }
}
