//! The HTTP client of debug files: `lastword debug-files upload` and the collector's fetches from
//! upstream debuginfod servers. hyper-util's client (hyper's own) over rustls (ring, the system's
//! roots) for `https://`; bodies are streams, so a file is never held whole in memory.

use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt as _;

/// Any error of a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
/// A request body: empty, or a file streamed.
pub type Body = BoxBody<Bytes, BoxError>;
/// The request type.
pub type Request = hyper::Request<Body>;
/// The response type; its body is read as it arrives.
pub type Response = hyper::Response<Incoming>;

/// The client. Cheap to clone (a pool of connections shared by the clones).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Body>,
}

impl HttpClient {
    /// A client for `http://` and `https://` (the system's root certificates; without any, `https://`
    /// fails to verify and `http://` still works).
    pub fn new() -> Result<Self, BoxError> {
        use tokio_rustls::rustls;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(b) => b,
            Err(_) => {
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = builder.https_or_http().enable_http1().wrap_connector(http);
        Ok(Self { inner: Client::builder(TokioExecutor::new()).build(https) })
    }

    /// Sends `request`; the response comes back when its head has arrived.
    pub async fn send(&self, request: Request) -> Result<Response, hyper_util::client::legacy::Error> {
        self.inner.request(request).await
    }
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}

/// The bytes of `file` as a body, 256 KiB at a time; `progress` is called with each chunk's size.
pub fn file_body(file: tokio::fs::File, progress: impl Fn(usize) + Send + Sync + 'static) -> Body {
    use futures_util::StreamExt as _;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
        chunk.map(|bytes| {
            progress(bytes.len());
            Frame::data(bytes)
        })
    });
    BodyExt::boxed(StreamBody::new(stream).map_err(|e: std::io::Error| -> BoxError { Box::new(e) }))
}

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The connection failed.
    #[error("the response broke off: {0}")]
    Body(#[source] hyper::Error),
    /// The body is larger than allowed.
    #[error("the response is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body could not be written where it goes.
    #[error("cannot write the response: {0}")]
    Write(#[source] std::io::Error),
}

/// Reads `body` into `out`, at most `limit` bytes; the count read.
pub async fn copy_body(
    mut body: Incoming,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    limit: u64,
) -> Result<u64, ReadError> {
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Body)?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > limit {
                return Err(ReadError::TooLarge { limit });
            }
            out.write_all(&data).await.map_err(ReadError::Write)?;
        }
    }
    Ok(total)
}

/// Reads a small body (an answer's text) whole, at most `limit` bytes, lossily as UTF-8.
pub async fn small_text(body: Incoming, limit: usize) -> String {
    let mut buf = Vec::new();
    let _ = copy_body(body, &mut buf, limit as u64).await;
    String::from_utf8_lossy(&buf).trim().to_owned()
}
