//! The shielded uploader: drains a spool to a collector on its own thread and runtime.
//!
//! Nothing the host application does can cancel an upload that has started: the uploader has its own
//! OS thread and its own tokio runtime, and it stops only when its owner asks, through
//! [`Uploader::shutdown`], which runs the phases in order:
//!
//! 1. stop claiming new entries;
//! 2. wait for the collector's answers to what is in flight, until the deadline;
//! 3. put back (release to `ready/`) every claim that was not answered;
//! 4. close the websocket cleanly (bounded: a stalled connection is dropped);
//! 5. return a [`Summary`] of what happened.
//!
//! Claims are spool guards, so every other way out (a lost connection, an error, a panic on the
//! uploader thread) puts the unanswered entries back as well.

mod backoff;
mod connection;
mod watch;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lastword_spool::{Claim, Spool};

use crate::protocol::Software;

pub use connection::ConnectError;

/// A diagnostic message from the uploader, for whoever wants to log it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed (a connection, a spool operation).
    Warn,
    /// A notable step (connected, shutting down).
    Info,
    /// Every report and answer.
    Debug,
}

/// Receives the uploader's diagnostics. It must not block and must not write to the same spool
/// through the uploader (that would loop).
pub type Diagnostics = Arc<dyn Fn(Level, &str) + Send + Sync>;

/// Turns a claimed entry's body into the JSON that goes on the wire (for example: symbolizes a raw
/// signal report), and may record what it made in the entry ([`Claim::rewrite`]) so that a resend
/// does not prepare it again. An `Err` quarantines the entry with that reason.
pub type Prepare = Arc<dyn Fn(&mut Claim) -> Result<Prepared, String> + Send + Sync>;

/// What [`Prepare`] made of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Send this JSON body.
    Send(Vec<u8>),
    /// Do not send it: delete it, counted (a crash loop's repeat, or dropped by `before_send`).
    Skip(String),
}

/// Loss counters kept by the application (the spool keeps its own eviction and quarantine counts).
#[derive(Debug, Default)]
pub struct LossCounters {
    /// Log records dropped because the log queue was full.
    pub logs_dropped: AtomicU64,
    /// Crash reports not stored because the same crash repeated too often, by this process. (The
    /// `hello` reports the spool's own count, since its creation: `counters/crash_loop_suppressed`.)
    pub crash_loop_suppressed: AtomicU64,
}

/// How the uploader connects and behaves. Build with [`UploaderConfig::new`] and the setters.
#[derive(Clone)]
pub struct UploaderConfig {
    /// Collector URLs (`ws://` or `wss://`), tried in order; the next one is used when one fails.
    /// A URL without a path gets `/ingest`.
    pub urls: Vec<String>,
    /// The bearer token.
    pub token: Option<String>,
    /// The application name sent in `hello`.
    pub app: String,
    /// The release sent in `hello`.
    pub release: Option<String>,
    /// The host name sent in `hello`.
    pub host: Option<String>,
    /// The agent sent in `hello`.
    pub agent: Software,
    /// How many reports may be unanswered at once (also capped by the collector's `max_in_flight`).
    /// This is the N of the reliability promise. Default 256: a window that keeps the collector's
    /// group commit busy while the next entries are read from the spool (see agent/benches/drain.rs).
    pub window: usize,
    /// Bound on the bytes of the entries claimed and unanswered at once (their bodies are held in
    /// memory until answered): no more entries are claimed while it is reached, and at least one
    /// always is. Default 8 MiB.
    pub window_bytes: usize,
    /// Bound on TCP connect plus websocket handshake plus hello/welcome. Default 10 s.
    pub connect_timeout: Duration,
    /// With reports in flight, a connection on which nothing arrives for this long is dead. Default 30 s.
    pub answer_timeout: Duration,
    /// Ping the collector after this long without sending anything. Default 15 s.
    pub keepalive: Duration,
    /// First backoff ceiling after a failed connection. Default 200 ms.
    pub backoff_initial: Duration,
    /// Largest backoff ceiling. Default 30 s.
    pub backoff_max: Duration,
    /// Rescan the spool at least this often, as a safety net behind file-system notifications.
    /// Default 30 s.
    pub rescan_interval: Duration,
    /// Close the connection after this long with nothing to send. Default 10 s.
    pub idle_close: Duration,
    /// Watch `ready/` for new entries (inotify through `notify`). Default true.
    pub watch: bool,
    /// Bound on the close handshake after the shutdown deadline. Default 500 ms.
    pub close_bound: Duration,
    /// What `Drop` of the [`Uploader`] gives the shutdown phases. Default 2 s.
    pub drop_grace: Duration,
    /// A PEM file of CA certificates trusted for `wss://`, in addition to the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Application-side loss counters, sent in `hello`.
    pub losses: Arc<LossCounters>,
    /// Body transformation before sending.
    pub prepare: Option<Prepare>,
    /// Where diagnostics go (none by default).
    pub diagnostics: Option<Diagnostics>,
}

impl std::fmt::Debug for UploaderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploaderConfig")
            .field("urls", &self.urls)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("app", &self.app)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl UploaderConfig {
    /// A configuration for `app` sending to `urls`, with the defaults documented on each field.
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>, app: impl Into<String>) -> Self {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            token: None,
            app: app.into(),
            release: None,
            host: None,
            agent: Software { name: "lastword".into(), version: env!("CARGO_PKG_VERSION").into() },
            window: 256,
            window_bytes: 8 << 20,
            connect_timeout: Duration::from_secs(10),
            answer_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(15),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            rescan_interval: Duration::from_secs(30),
            idle_close: Duration::from_secs(10),
            watch: true,
            close_bound: Duration::from_millis(500),
            drop_grace: Duration::from_secs(2),
            ca_file: None,
            losses: Arc::new(LossCounters::default()),
            prepare: None,
            diagnostics: None,
        }
    }

    /// Sets the bearer token.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the window N of unanswered reports.
    #[must_use]
    pub fn window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }
}

/// What the uploader did, returned by [`Uploader::shutdown`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Entries the collector answered `accepted` or `duplicate`, and that were deleted.
    pub delivered: u64,
    /// Of `delivered`, those answered `duplicate`.
    pub duplicates: u64,
    /// Entries quarantined (rejected by the collector, or not sendable).
    pub quarantined: u64,
    /// Entries this uploader claimed and did not deliver or quarantine: they are back in `ready/`.
    pub put_back: u64,
    /// Connections opened.
    pub connections: u64,
    /// True when the uploader thread did not finish its phases within the deadline plus the close
    /// bound (for example, stuck in a disk operation); the claims it still holds go back to `ready/`
    /// when it finishes or when the process exits.
    pub incomplete: bool,
}

impl Summary {
    /// Whether everything this uploader claimed was delivered (or quarantined): exit code 0.
    pub fn all_delivered(&self) -> bool {
        self.put_back == 0 && !self.incomplete
    }
}

/// Why a flush did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// The deadline passed with entries still in the spool.
    #[error("flush timed out with entries left in the spool")]
    Timeout,
    /// The uploader has stopped.
    #[error("the uploader has stopped")]
    Stopped,
}

pub(crate) enum Control {
    Wake,
    Flush { deadline: Instant, crashes_only: bool, reply: mpsc::Sender<Result<(), FlushError>> },
    Shutdown { deadline: Instant },
}

/// Live counters shared between the uploader thread and its handle.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub quarantined: AtomicU64,
    pub connections: AtomicU64,
    pub outstanding: AtomicU64,
    pub connected: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// The shutdown deadline, set by the owner before it sends `Control::Shutdown`, so that a send
    /// blocked on a stalled connection is bounded by it too.
    pub stop_at: Mutex<Option<Instant>>,
}

impl Progress {
    fn summary(&self, incomplete: bool) -> Summary {
        Summary {
            delivered: self.delivered.load(Ordering::SeqCst),
            duplicates: self.duplicates.load(Ordering::SeqCst),
            quarantined: self.quarantined.load(Ordering::SeqCst),
            put_back: self.outstanding.load(Ordering::SeqCst),
            connections: self.connections.load(Ordering::SeqCst),
            incomplete,
        }
    }
}

/// A handle on a running uploader. Dropping it runs [`Uploader::shutdown`] with
/// [`UploaderConfig::drop_grace`].
#[must_use = "dropping the uploader shuts it down"]
pub struct Uploader {
    control: tokio::sync::mpsc::UnboundedSender<Control>,
    done: Mutex<mpsc::Receiver<Summary>>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
    drop_grace: Duration,
    close_bound: Duration,
}

impl Uploader {
    /// Starts the uploader on its own thread, draining `spool` to the collectors in `config`.
    pub fn start(spool: Spool, config: UploaderConfig) -> std::io::Result<Self> {
        if config.urls.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no collector URL given"));
        }
        // A URL that can never work is a configuration error now, not a reconnection loop later.
        for url in &config.urls {
            connection::request(url, config.token.as_deref())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (control, rx) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done) = mpsc::channel();
        let progress = Arc::new(Progress::default());
        let drop_grace = config.drop_grace;
        let close_bound = config.close_bound;
        let watcher = if config.watch { watch::watch_ready(spool.path(), control.clone()) } else { None };
        let worker = worker::Worker::new(spool, config, rx, progress.clone());
        let thread = std::thread::Builder::new().name("lastword-uploader".into()).spawn(move || {
            let _watcher = watcher;
            // A panic in the worker unwinds through its claims, which go back to ready/; the handle
            // then reports an incomplete summary.
            let summary = runtime.block_on(worker.run());
            // Every spool operation was awaited inside `run`; what may be left is a detached name
            // lookup. The owner gets the summary now, not after it.
            let _ = done_tx.send(summary);
            runtime.shutdown_background();
        })?;
        Ok(Self { control, done: Mutex::new(done), thread: Some(thread), progress, drop_grace, close_bound })
    }

    /// Tells the uploader that new entries were written (it also learns it from the file system).
    pub fn wake(&self) {
        let _ = self.control.send(Control::Wake);
    }

    /// Delivers everything in the spool now, without stopping: returns when the spool has nothing
    /// ready and nothing in flight, or when `timeout` has passed. Blocks the calling thread (from
    /// async code, call it in `spawn_blocking`).
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        self.flush_scope(timeout, false)
    }

    /// Like [`Uploader::flush`], but returns as soon as no crash report is waiting or in flight (crash
    /// reports are sent first). The panic hook uses it to get a crash out before the process goes on.
    pub fn flush_crashes(&self, timeout: Duration) -> Result<(), FlushError> {
        self.flush_scope(timeout, true)
    }

    fn flush_scope(&self, timeout: Duration, crashes_only: bool) -> Result<(), FlushError> {
        let deadline = Instant::now() + timeout;
        let (reply, answer) = mpsc::channel();
        self.control
            .send(Control::Flush { deadline, crashes_only, reply })
            .map_err(|_| FlushError::Stopped)?;
        match answer.recv_timeout(timeout + self.close_bound) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(FlushError::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(FlushError::Stopped),
        }
    }

    /// What the uploader has done so far.
    pub fn progress(&self) -> Summary {
        self.progress.summary(false)
    }

    /// Whether a connection to a collector is open now.
    pub fn is_connected(&self) -> bool {
        self.progress.connected.load(Ordering::SeqCst)
    }

    /// The last connection or spool error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.progress.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Runs the shutdown phases (see the module doc) and returns what happened. Returns by `grace`
    /// plus the close bound plus a little, whatever the collector or the network do. Blocks the
    /// calling thread.
    pub fn shutdown(mut self, grace: Duration) -> Summary {
        self.stop(grace)
    }

    fn stop(&mut self, grace: Duration) -> Summary {
        let deadline = Instant::now() + grace;
        if let Ok(mut stop_at) = self.progress.stop_at.lock() {
            *stop_at = Some(deadline);
        }
        let _ = self.control.send(Control::Shutdown { deadline });
        // The worker returns by the deadline plus the close bound; allow some scheduling slack.
        let wait = grace + self.close_bound + Duration::from_millis(500);
        let received = match self.done.lock() {
            Ok(done) => done.recv_timeout(wait),
            Err(_) => Err(mpsc::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(summary) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
                summary
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.thread.take();
                self.progress.summary(true)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Leave the thread to finish on its own; its claims are guards.
                self.thread.take();
                self.progress.summary(true)
            }
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let grace = self.drop_grace;
            self.stop(grace);
        }
    }
}
