//! The ingest server of `lastword collect`: accepts uploaders' websocket connections, checks them,
//! stores their reports with a group commit and answers each one (client-lib/protocol/PROTOCOL.md).
//!
//! - [`run`]: the server; [`Config`] and [`Limits`] say how it behaves. Its shutdown trigger is a
//!   parameter.
//! - `handshake.rs`: the HTTP upgrade checks (path, token, subprotocol, capacity).
//! - `connection.rs`: one connection, one task: hello, reports, answers, close codes.
//! - `committer.rs`: the single writer that commits queued reports in batches and answers them.
//! - `auth.rs`: the bearer tokens; `tls.rs`: the `wss://` configuration.

mod auth;
mod committer;
mod connection;
mod handshake;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{StoreError, Waits};
use crate::symbolize::{self, Symbols};

pub use auth::{TokenError, Tokens};
pub use tls::{TlsError, server_config as tls_server_config};

/// Default of [`Limits::max_message_bytes`].
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Default of [`Limits::max_inflated_bytes`].
pub const DEFAULT_MAX_INFLATED_BYTES: usize = lastword_protocol::MAX_DECOMPRESSED;
/// Default of [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of [`Limits::max_handshakes`]: four times the sessions. An unauthenticated socket costs one
/// file descriptor and a few KiB for at most [`DEFAULT_HANDSHAKE_TIMEOUT_MS`]; 4096 of them and the
/// 1024 sessions fit in the 8192 descriptors of a typical service unit (`LimitNOFILE`), and a flood
/// that fills the pool must sustain 800 new sockets a second to keep it full.
pub const DEFAULT_MAX_HANDSHAKES: usize = 4096;
/// Default of [`Limits::handshake_timeout_ms`]: the unauthenticated part of a connection is short.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Default of [`Limits::max_in_flight`]: room for a client to claim its next reports while the
/// previous ones are committed, so that neither side waits for the other (agent/benches/drain.rs:
/// a drain of 10,000 entries on tmpfs ran 0.55-0.64 of its slower half with 256, about 0.9 with
/// 1024). The memory it lets one connection hold is bounded by `queue_bytes` all the same.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 1024;
/// Default of the handshake, hello and write timeouts, in milliseconds.
pub const DEFAULT_STEP_TIMEOUT_MS: u64 = 10_000;
/// Default of [`Limits::idle_timeout_ms`].
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default of [`Limits::max_write_buffer_bytes`].
pub const DEFAULT_MAX_WRITE_BUFFER_BYTES: usize = 1 << 20;
/// Default of [`Limits::batch_max`].
pub const DEFAULT_BATCH_MAX: usize = 1024;
/// Default of [`Limits::queue_bytes`].
pub const DEFAULT_QUEUE_BYTES: usize = 256 << 20;
/// Default of [`Limits::retry_delay_ms`].
pub const DEFAULT_RETRY_DELAY_MS: u64 = 1000;

/// The limits the collector enforces against bad or hostile clients, and its batching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest report message read and stored; longer ones up to twice this are answered
    /// rejected/too_large, beyond that the connection is closed (1009).
    pub max_message_bytes: usize,
    /// Longest body a `deflate` report may inflate to; a longer one is answered rejected/too_large,
    /// found out while inflating, with no more than this (and a small buffer) allocated for it. Stated
    /// in the welcome.
    pub max_inflated_bytes: usize,
    /// Authenticated sessions served at once (a connection counts from the moment its upgrade request
    /// presented a valid token); the next one is refused with HTTP 503.
    pub max_connections: usize,
    /// Connections in their unauthenticated part at once (from TCP accept to the end of the TLS and
    /// websocket handshakes); a connection accepted beyond it is closed at once, without an answer.
    pub max_handshakes: usize,
    /// Reports a connection may have unanswered; one more closes it (1008).
    pub max_in_flight: u32,
    /// Time from TCP accept to the end of the TLS and websocket handshakes: how long an
    /// unauthenticated socket may hold a place among the `max_handshakes`.
    pub handshake_timeout_ms: u64,
    /// Time from the handshake to the hello (4408 after it).
    pub hello_timeout_ms: u64,
    /// A connection on which nothing (no message, no ping) arrives for this long is closed (4408).
    pub idle_timeout_ms: u64,
    /// Time allowed to hand answers to a peer that does not read; after it the connection is dropped.
    pub write_timeout_ms: u64,
    /// Bytes a connection may have waiting to be written.
    pub max_write_buffer_bytes: usize,
    /// Most reports committed in one transaction.
    pub batch_max: usize,
    /// Bytes of report bodies waiting for the store, all connections together; beyond it reports are
    /// answered retry_later.
    pub queue_bytes: usize,
    /// The delay asked for in retry_later answers.
    pub retry_delay_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_inflated_bytes: DEFAULT_MAX_INFLATED_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            hello_timeout_ms: DEFAULT_STEP_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            write_timeout_ms: DEFAULT_STEP_TIMEOUT_MS,
            max_write_buffer_bytes: DEFAULT_MAX_WRITE_BUFFER_BYTES,
            batch_max: DEFAULT_BATCH_MAX,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            retry_delay_ms: DEFAULT_RETRY_DELAY_MS,
        }
    }
}

impl Limits {
    /// Checks that every limit can work: a value that would stop the collector serving (a 0), make it
    /// a danger to its clients (a `retry_later` delay of 0 ms is a retry storm) or hold what it
    /// protects for unreasonably long is an error, naming the flag, before anything is served.
    pub fn validate(&self) -> Result<(), CollectError> {
        let bad = |what: &'static str, why: &'static str| Err(CollectError::Limit { what, why });
        let within = |v: u64, lo: u64, hi: u64| (lo..=hi).contains(&v);
        let count = |v: usize| (1..=Semaphore::MAX_PERMITS).contains(&v);
        if !within(self.max_message_bytes as u64, 1024, 1 << 30) {
            return bad("max-message-bytes", "must be between 1 KiB and 1 GiB");
        }
        if !within(self.max_inflated_bytes as u64, self.max_message_bytes as u64, 1 << 30) {
            return bad("max-inflated-bytes", "must be between max-message-bytes and 1 GiB");
        }
        if !count(self.max_connections) {
            return bad("max-connections", "must be at least 1");
        }
        if !count(self.max_handshakes) {
            return bad("max-handshakes", "must be at least 1");
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT {
            return bad("max-in-flight", "must be between 1 and 65536");
        }
        if self.batch_max == 0 || self.batch_max > MAX_BATCH {
            return bad("batch-max", "must be between 1 and 65536");
        }
        if self.queue_bytes < self.max_inflated_bytes || self.queue_bytes > Semaphore::MAX_PERMITS {
            return bad("queue-bytes", "must be at least max-inflated-bytes");
        }
        if !within(self.max_write_buffer_bytes as u64, 64 * 1024, 1 << 30) {
            return bad("max-write-buffer-bytes", "must be between 64 KiB and 1 GiB");
        }
        if !within(self.handshake_timeout_ms, 1, MAX_HANDSHAKE_TIMEOUT_MS) {
            return bad(
                "handshake-timeout-ms",
                "must be between 1 and 60000 (an unauthenticated socket holds a place for it)",
            );
        }
        if !within(self.hello_timeout_ms, 1, MAX_STEP_TIMEOUT_MS) {
            return bad("hello-timeout-ms", "must be between 1 and 600000");
        }
        if !within(self.write_timeout_ms, 1, MAX_STEP_TIMEOUT_MS) {
            return bad("write-timeout-ms", "must be between 1 and 600000");
        }
        if !within(self.idle_timeout_ms, 1, MAX_IDLE_TIMEOUT_MS) {
            return bad("idle-timeout-ms", "must be between 1 and 86400000 (a day)");
        }
        if !within(self.retry_delay_ms, MIN_RETRY_DELAY_MS, MAX_RETRY_DELAY_MS) {
            return bad(
                "retry-delay-ms",
                "must be between 10 and 3600000 (clients cap the delay at an hour; under 10 ms every client would retry at once)",
            );
        }
        Ok(())
    }
}

/// Bounds checked by [`Limits::validate`].
const MAX_IN_FLIGHT: u32 = 1 << 16;
const MAX_BATCH: usize = 1 << 16;
const MAX_HANDSHAKE_TIMEOUT_MS: u64 = 60_000;
const MAX_STEP_TIMEOUT_MS: u64 = 600_000;
const MAX_IDLE_TIMEOUT_MS: u64 = 86_400_000;
const MIN_RETRY_DELAY_MS: u64 = 10;
const MAX_RETRY_DELAY_MS: u64 = 3_600_000;

/// How the collector serves.
#[derive(Clone, Debug)]
pub struct Config {
    /// The bearer tokens accepted.
    pub tokens: Tokens,
    /// `Some`: serve `wss://` with this TLS configuration; `None`: plain `ws://`.
    pub tls: Option<Arc<ServerConfig>>,
    /// The limits.
    pub limits: Limits,
    /// `Some`: name the unnamed frames of crashes and events with these debug files, at ingest and
    /// when a file arrives (crate::symbolize); `None`: store reports as they come.
    pub symbols: Option<Symbols>,
}

/// Why the collector could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A limit makes no sense.
    #[error("--{what} {why}")]
    Limit {
        /// The flag.
        what: &'static str,
        /// What it must be.
        why: &'static str,
    },
    /// The tokens could not be loaded.
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// The TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store writer stopped abnormally (a panic in a backend); answers were not sent for its batch.
    #[error("the store writer failed: {0}")]
    Committer(String),
}

/// What every connection task shares.
struct ServerState {
    limits: Limits,
    tokens: Tokens,
    tls: Option<TlsAcceptor>,
    jobs: mpsc::UnboundedSender<committer::Job>,
    symbols: Option<Symbols>,
    queue_bytes: Arc<Semaphore>,
    /// The authenticated sessions' slots ([`Limits::max_connections`]), taken in the upgrade.
    sessions: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// Says (tracing, warn) when the handshakes and sessions allowed could take more file descriptors than
/// the process may open: accepts would then fail before the limits are reached.
fn warn_if_short_of_descriptors(limits: &Limits) {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let wanted = limits.max_handshakes.saturating_add(limits.max_connections).saturating_add(64);
    let soft = soft.and_then(|s| usize::try_from(s).ok());
    if let Some(soft) = soft.filter(|&soft| soft < wanted) {
        tracing::warn!(
            "the process may open {soft} file descriptors, fewer than max-handshakes + max-connections \
             ({wanted} with a margin): raise `ulimit -n` or lower the limits"
        );
    }
}

/// Serves the collector on `listener` until `shutdown` completes, then stops accepting, lets every
/// connection commit and answer what it read, closes each with 1001, waits for the store writer and
/// returns.
///
/// # Cancel safety
///
/// Do not drop this future to stop the server: connections would be cut without their answers. Make
/// `shutdown` complete instead, and await the returned future.
pub async fn run<S: Waits>(
    listener: TcpListener,
    config: Config,
    store: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CollectError> {
    config.limits.validate()?;
    let limits = config.limits.clone();
    let (jobs, jobs_rx) = mpsc::unbounded_channel();
    let store = Arc::new(store);
    let cancel = CancellationToken::new();
    let resymbolizer = config
        .symbols
        .clone()
        .map(|symbols| tokio::spawn(symbolize::watch(Arc::clone(&store), symbols, cancel.clone())));
    let writer = tokio::spawn(committer::run(store, jobs_rx, limits.batch_max, limits.retry_delay_ms));
    let shared = Arc::new(ServerState {
        queue_bytes: Arc::new(Semaphore::new(limits.queue_bytes)),
        limits: limits.clone(),
        tokens: config.tokens,
        tls: config.tls.map(TlsAcceptor::from),
        jobs,
        symbols: config.symbols,
        sessions: Arc::new(Semaphore::new(limits.max_connections)),
        shutdown: cancel.clone(),
    });
    warn_if_short_of_descriptors(&limits);
    // Two stages: every accepted socket takes one of the many handshake places, for the handshake
    // deadline at most; only a valid token takes one of the few session slots (handshake.rs).
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Ok(place) = Arc::clone(&handshakes).try_acquire_owned() else {
                    // Every handshake place is taken: a flood; close this one without a word.
                    drop(tcp);
                    continue;
                };
                tracker.spawn(connection::handle(tcp, peer, Arc::clone(&shared), place));
            }
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin; the connections
                // already served go on.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    // The last sender of the job queue goes with `shared`: the writer commits what is left and ends.
    drop(shared);
    if let Some(resymbolizer) = resymbolizer {
        // Cancelled above; a page in its transaction is finished first.
        let _ = resymbolizer.await;
    }
    writer.await.map_err(|e| CollectError::Committer(e.to_string()))
}
