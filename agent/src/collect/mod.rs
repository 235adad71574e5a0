//! The reference collector, `lastword collect`: accepts uploaders' websocket connections, checks them,
//! stores their reports with a group commit and answers each one (client-lib/protocol/PROTOCOL.md).
//!
//! - [`run`]: the server; [`Config`] and [`Limits`] say how it behaves. Its shutdown trigger is a
//!   parameter.
//! - `handshake.rs`: the HTTP upgrade checks (path, token, subprotocol, capacity).
//! - `connection.rs`: one connection, one task: hello, reports, answers, close codes.
//! - `committer.rs`: the single writer that commits queued reports in batches and answers them.
//! - [`store`]: the backend-neutral [`Store`] trait; [`sqlite`]: the embedded backend; [`postgres`]: the
//!   shared one, for several collectors on one database (agent/STORE.md); [`location`]: `--store`, and
//!   [`AnyStore`], whichever of the two it names.
//! - [`fingerprint`]: crash groups. [`query`]: `lastword store ...` for people.

mod auth;
mod committer;
mod connection;
pub mod fingerprint;
mod handshake;
pub mod location;
pub mod postgres;
pub mod query;
pub mod sqlite;
pub mod store;
mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{TokenError, Tokens};
pub use location::{AnyStore, StoreLocation};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use store::Store;
pub use tls::{TlsError, server_config as tls_server_config};

/// Default of [`Limits::max_message_bytes`].
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Default of [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of [`Limits::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 256;
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
#[derive(Clone, Debug, clap::Args)]
pub struct Limits {
    /// Longest report message read and stored; longer ones up to twice this are answered
    /// rejected/too_large, beyond that the connection is closed (1009).
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Connections served at once; the next handshake is refused with HTTP 503.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Reports a connection may have unanswered; one more closes it (1008).
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: u32,
    /// Time from TCP accept to the end of the TLS and websocket handshakes.
    #[arg(long, default_value_t = DEFAULT_STEP_TIMEOUT_MS)]
    pub handshake_timeout_ms: u64,
    /// Time from the handshake to the hello (4408 after it).
    #[arg(long, default_value_t = DEFAULT_STEP_TIMEOUT_MS)]
    pub hello_timeout_ms: u64,
    /// A connection on which nothing (no message, no ping) arrives for this long is closed (4408).
    #[arg(long, default_value_t = DEFAULT_IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,
    /// Time allowed to hand answers to a peer that does not read; after it the connection is dropped.
    #[arg(long, default_value_t = DEFAULT_STEP_TIMEOUT_MS)]
    pub write_timeout_ms: u64,
    /// Bytes a connection may have waiting to be written.
    #[arg(long, default_value_t = DEFAULT_MAX_WRITE_BUFFER_BYTES)]
    pub max_write_buffer_bytes: usize,
    /// Most reports committed in one transaction.
    #[arg(long, default_value_t = DEFAULT_BATCH_MAX)]
    pub batch_max: usize,
    /// Bytes of report bodies waiting for the store, all connections together; beyond it reports are
    /// answered retry_later.
    #[arg(long, default_value_t = DEFAULT_QUEUE_BYTES)]
    pub queue_bytes: usize,
    /// The delay asked for in retry_later answers.
    #[arg(long, default_value_t = DEFAULT_RETRY_DELAY_MS)]
    pub retry_delay_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            handshake_timeout_ms: DEFAULT_STEP_TIMEOUT_MS,
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
    /// Checks that every limit can work.
    pub fn validate(&self) -> Result<(), CollectError> {
        let bad = |what: &'static str, why: &'static str| Err(CollectError::Limit { what, why });
        if self.max_message_bytes < 1024 || self.max_message_bytes > (1 << 30) {
            return bad("max-message-bytes", "must be between 1 KiB and 1 GiB");
        }
        if self.max_connections == 0 || self.max_connections > Semaphore::MAX_PERMITS {
            return bad("max-connections", "must be at least 1");
        }
        if self.max_in_flight == 0 {
            return bad("max-in-flight", "must be at least 1");
        }
        if self.batch_max == 0 {
            return bad("batch-max", "must be at least 1");
        }
        if self.queue_bytes < self.max_message_bytes || self.queue_bytes > Semaphore::MAX_PERMITS {
            return bad("queue-bytes", "must be at least max-message-bytes");
        }
        if self.max_write_buffer_bytes < 64 * 1024 {
            return bad("max-write-buffer-bytes", "must be at least 64 KiB");
        }
        if [self.handshake_timeout_ms, self.hello_timeout_ms, self.idle_timeout_ms, self.write_timeout_ms]
            .contains(&0)
        {
            return bad("timeouts", "must be at least 1 ms");
        }
        Ok(())
    }
}

/// How the collector serves.
#[derive(Clone, Debug)]
pub struct Config {
    /// The bearer tokens accepted.
    pub tokens: Tokens,
    /// `Some`: serve `wss://` with this TLS configuration; `None`: plain `ws://`.
    pub tls: Option<Arc<ServerConfig>>,
    /// The limits.
    pub limits: Limits,
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
    Store(#[from] store::StoreError),
    /// The store writer stopped abnormally (a panic in a backend); answers were not sent for its batch.
    #[error("the store writer failed: {0}")]
    Committer(String),
}

/// The arguments of `lastword collect`.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = "Tokens: --token-file (one a line, # comments) and/or the environment variable \
LASTWORD_TOKENS (comma-separated). At least one is required.\n\nThe first line on stdout is \
`listening on ws://ADDR/ingest` (or wss://) with the address actually bound (use port 0 to let the OS \
choose). SIGINT or SIGTERM: stop accepting, commit and answer what was received, close every connection \
with 1001, exit 0.")]
pub struct CollectArgs {
    /// Address and port to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8700", value_parser = crate::cli::listen_addr)]
    pub listen: String,
    /// The store: a directory (created if missing; the data is DIR/lastword.sqlite), or a
    /// postgres://user@host/db URL of a database that several collectors may share (schema created or
    /// migrated at start).
    #[arg(long, value_name = "DIR|URL", env = "LASTWORD_STORE")]
    pub store: StoreLocation,
    /// File of accepted bearer tokens, one a line.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain: serve wss:// (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Limits and batching.
    #[command(flatten)]
    pub limits: Limits,
}

impl CollectArgs {
    /// The configuration these arguments describe; `env_tokens` is the value of `LASTWORD_TOKENS`.
    /// Reads the token and TLS files.
    pub fn config(&self, env_tokens: Option<&str>) -> Result<Config, CollectError> {
        self.limits.validate()?;
        let tokens = Tokens::load(self.token_file.as_deref(), env_tokens)?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
            _ => None,
        };
        Ok(Config { tokens, tls, limits: self.limits.clone() })
    }
}

/// How many over-capacity handshakes may be answered 503 at once; beyond that they are dropped.
const REFUSALS_AT_ONCE: usize = 64;

/// What every connection task shares.
struct Shared {
    limits: Limits,
    tokens: Tokens,
    tls: Option<TlsAcceptor>,
    jobs: mpsc::UnboundedSender<committer::Job>,
    queue_bytes: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// Serves the collector on `listener` until `shutdown` completes, then stops accepting, lets every
/// connection commit and answer what it read, closes each with 1001, waits for the store writer and
/// returns.
///
/// # Cancel safety
///
/// Do not drop this future to stop the server: connections would be cut without their answers. Make
/// `shutdown` complete instead, and await the returned future.
pub async fn run<S: Store>(
    listener: TcpListener,
    config: Config,
    store: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CollectError> {
    config.limits.validate()?;
    let limits = config.limits.clone();
    let (jobs, jobs_rx) = mpsc::unbounded_channel();
    let writer =
        tokio::spawn(committer::run(Arc::new(store), jobs_rx, limits.batch_max, limits.retry_delay_ms));
    let cancel = CancellationToken::new();
    let shared = Arc::new(Shared {
        queue_bytes: Arc::new(Semaphore::new(limits.queue_bytes)),
        limits: limits.clone(),
        tokens: config.tokens,
        tls: config.tls.map(TlsAcceptor::from),
        jobs,
        shutdown: cancel.clone(),
    });
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let admission = match Arc::clone(&connections).try_acquire_owned() {
                    Ok(permit) => handshake::Admission::Admitted(permit),
                    Err(_) => match Arc::clone(&refusals).try_acquire_owned() {
                        Ok(permit) => handshake::Admission::Full(permit),
                        // Too many refusals in progress already: a flood; drop it without a word.
                        Err(_) => continue,
                    },
                };
                tracker.spawn(connection::handle(tcp, peer, Arc::clone(&shared), admission));
            }
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin; the connections
                // already served go on.
                eprintln!("lastword collect: accept failed: {e}");
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
    writer.await.map_err(|e| CollectError::Committer(e.to_string()))
}
