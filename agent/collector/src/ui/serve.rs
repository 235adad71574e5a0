//! The UI's connection loop: hyper's HTTP/1 server on each accepted socket (plain or TLS), with a
//! header-read timeout, a limit on connections in all and per client address, and a graceful stop.
//!
//! axum's own `serve` has no header-read timeout and no connection limit: 200 half-sent requests
//! held the UI's sockets (and the collector's descriptors) for as long as their senders liked.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service as _;

use super::UiLimits;

/// How long a connection may finish its request once the UI stops.
const GRACE: Duration = Duration::from_secs(5);

/// hyper's smallest buffer (it panics below it); [`UiLimits::validate`] refuses less.
const MIN_HEAD: usize = 8 * 1024;

/// Whether a request came over TLS (a request extension, for the cookie's `Secure`).
#[derive(Clone, Copy, Debug)]
pub(super) struct OverTls(pub bool);

/// The connections open per client address.
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A connection's claim on its address's count, given back on drop.
struct AddressClaim {
    counts: PerAddress,
    ip: IpAddr,
}

impl AddressClaim {
    fn take(counts: &PerAddress, ip: IpAddr, max: usize) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self { counts: Arc::clone(counts), ip })
    }
}

impl Drop for AddressClaim {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`; then asks each connection to finish its request
/// (closing the idle ones at once), waits for them at most [`GRACE`] and returns.
pub(super) async fn run(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: UiLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address: PerAddress = Arc::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, most likely: wait for connections to end rather than spin.
                    tracing::warn!("web UI: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over a limit: closed at once, so that the descriptor is given back.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("web UI: {peer} refused: {} connections open", limits.max_connections);
            continue;
        };
        let Some(claim) = AddressClaim::take(&per_address, peer.ip(), limits.max_connections_per_address)
        else {
            tracing::debug!("web UI: {peer} refused: its address has too many connections open");
            continue;
        };
        let app = app.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            connection(tcp, peer, app, tls, limits, stop, slot, claim).await;
        });
    }
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: UiLimits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
    _claim: AddressClaim,
) {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => http(tcp, peer, app, false, limits, stop).await,
        Some(acceptor) => {
            // The handshake gets the header-read timeout too: a socket that never finishes it is closed.
            let handshake = tokio::select! {
                () = stop.cancelled() => return,
                h = tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)) => h,
            };
            match handshake {
                Ok(Ok(stream)) => http(stream, peer, app, true, limits, stop).await,
                Ok(Err(e)) => tracing::debug!("web UI: TLS handshake with {peer} failed: {e}"),
                Err(_) => tracing::debug!("web UI: TLS handshake with {peer} timed out"),
            }
        }
    }
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    over_tls: bool,
    limits: UiLimits,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(OverTls(over_tls));
        let mut app = app.clone();
        async move { app.call(request).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_head_bytes.max(MIN_HEAD));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("web UI: connection of {peer}: {e}");
            }
        }
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn).await;
        }
    }
}
