//! The shielded uploader: drains a spool to a collector on its own thread and runtime.
//!
//! Nothing the host application does can cancel an upload that has started: the uploader has its own
//! OS thread and its own tokio runtime, and it stops only when its owner asks, through
//! [`Uploader::shutdown`], which runs the phases in order:
//!
//! 1. stop claiming new entries;
//! 2. wait for the collector's answers to what is in flight, until the deadline;
//! 3. put back (release to `ready/`) every claim that was not answered;
//! 4. close the websocket cleanly, and let the deletes of delivered entries finish, both bounded by
//!    the close bound (a stalled connection is dropped);
//! 5. return a [`Summary`] of what happened.
//!
//! Claims are spool guards, so every other way out (a lost connection, an error, a panic on the
//! uploader thread) puts the unanswered entries back as well.
//!
//! Every decision (what to claim, when to connect, when a flush is answered, what to put back) is
//! taken by a pure state machine (`machine.rs`); `worker.rs` is the I/O around it.
//!
//! # How long each call waits
//!
//! | call | returns by |
//! |---|---|
//! | [`Uploader::flush`] | its timeout (earlier when done, or on a configuration error) |
//! | [`Uploader::flush_at_exit`], [`Uploader::flush_crashes`] | their timeout; at once when waiting cannot help |
//! | [`Uploader::shutdown`] | `grace` plus [`UploaderConfig::close_bound`] |
//! | [`Uploader::finish`] | its limit, everything included |
//! | `Drop` | [`UploaderConfig::drop_grace`] plus the close bound |
//!
//! The bounds hold whatever the collector, the network or the disk do; the calling thread may be
//! scheduled late, which no bound can include.

mod backoff;
mod connection;
mod machine;
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
pub enum DiagnosticLevel {
    /// A configuration error: nothing can be delivered until a person changes the configuration (a
    /// refused token, a wrong path, an unusable CA file). Said once. Without a diagnostics callback
    /// it goes to `tracing` (or `log`), like the others.
    Error,
    /// Something failed (a connection, a spool operation).
    Warn,
    /// A notable step (connected, shutting down).
    Info,
    /// Every report and answer.
    Debug,
}

/// Receives the uploader's diagnostics. It must not block and must not write to the same spool
/// through the uploader (that would loop).
pub type Diagnostics = Arc<dyn Fn(DiagnosticLevel, &str) + Send + Sync>;

/// Turns a claimed entry's body into the JSON that goes on the wire (for example: symbolizes a raw
/// signal report), and may record what it made in the entry ([`Claim::rewrite`]) so that a resend
/// does not prepare it again. An `Err` quarantines the entry with that reason.
pub type Prepare = Arc<dyn Fn(&mut Claim) -> Result<Prepared, String> + Send + Sync>;

/// What [`Prepare`] made of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Send this JSON body.
    Send(Vec<u8>),
    /// Send the claimed entry's body as it is (it is already the JSON that goes on the wire): what
    /// most entries are, and it costs no copy.
    AsIs,
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
    /// This is the N of the reliability promise. Default 1024 (the collector's default
    /// `max_in_flight`): a window that keeps the collector's group commit busy while the next
    /// entries are read from the spool, and the spool busy while earlier ones are committed (see
    /// agent/benches/drain.rs).
    pub window: usize,
    /// Bound on the bytes held for the entries claimed and unanswered at once (each one's message,
    /// held in memory until answered; a body over 8 KiB is sent deflated): no more entries are
    /// claimed while it is reached, and at least one always is. Default 8 MiB.
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
    /// Watch `ready/` for new entries (an inotify watch on that directory). Default true.
    pub watch: bool,
    /// What the shutdown phases get after the deadline of the answers: putting back what is
    /// unanswered, the deletes of delivered entries and the close handshake, together. Default 500 ms.
    pub close_bound: Duration,
    /// What `Drop` of the [`Uploader`] gives the shutdown phases. Default 2 s.
    pub drop_grace: Duration,
    /// A PEM file of CA certificates trusted for `wss://`, in addition to the system's roots. A file
    /// that cannot be read is a configuration error: nothing is sent (see [`FlushError::Misconfigured`]).
    pub ca_file: Option<std::path::PathBuf>,
    /// Application-side loss counters, sent in `hello`.
    pub losses: Arc<LossCounters>,
    /// Body transformation before sending.
    pub prepare: Option<Prepare>,
    /// Where diagnostics go. None by default: then to `tracing` (or `log`) under the target
    /// [`crate::DIAGNOSTICS_TARGET`].
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
            window: 1024,
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

/// What the uploader did, returned by [`Uploader::shutdown`]. Every entry it claimed to send is
/// counted in exactly one of `delivered`, `skipped`, `quarantined`, `deferred` and `put_back`, by
/// where it ended (claims given back unsent, because a shutdown or a `retry_later` pause came while
/// they were read, are given back as they were found and not counted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Entries the collector answered `accepted` or `duplicate`, and that were deleted.
    pub delivered: u64,
    /// Of `delivered`, those answered `duplicate`.
    pub duplicates: u64,
    /// Entries deleted unsent by a counted decision of the prepare hook ([`Prepared::Skip`]: a crash
    /// loop's repeat, a report `before_send` dropped).
    pub skipped: u64,
    /// Entries quarantined (rejected by the collector, or not sendable), and the damaged entries the
    /// spool quarantined while this uploader claimed (`Spool::quarantined_at_claim`).
    pub quarantined: u64,
    /// Entries the collector answered `retry_later` (a store that is down, a rate limit) that are
    /// back in `ready/` waiting for the next attempt: not stored, and known not to be.
    pub deferred: u64,
    /// Entries this uploader claimed and sent (or began to send) and did not deliver, skip,
    /// quarantine or defer, and entries still held by a task at the end: they are back in
    /// `ready/`, or go back when the task that still holds them ends (a claim or a delete still
    /// running at the deadline; if the process exits first, the next scan of the spool recovers them).
    pub put_back: u64,
    /// Connections opened.
    pub connections: u64,
    /// True when the uploader thread did not finish its phases within the deadline plus the close
    /// bound (for example, stuck in a disk operation); the claims it still holds go back to `ready/`
    /// when it finishes or when the process exits.
    pub incomplete: bool,
}

impl Summary {
    /// Whether everything this uploader claimed was delivered, deliberately skipped, or quarantined
    /// after a permanent rejection: exit code 0.
    pub fn all_delivered(&self) -> bool {
        self.put_back == 0 && self.deferred == 0 && !self.incomplete
    }

    /// Whether every claim was answered or settled: nothing was put back unanswered and the phases
    /// finished (what is not delivered was deferred by the collector's own `retry_later`).
    pub fn all_answered(&self) -> bool {
        self.put_back == 0 && !self.incomplete
    }
}

/// Why a flush did not finish. Whatever the reason, nothing was lost: what was not delivered is in
/// the spool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// The deadline passed with entries still in the spool (or a spool error kept it from seeing
    /// that it was empty).
    #[error("flush timed out with entries left in the spool")]
    Timeout,
    /// The uploader has stopped.
    #[error("the uploader has stopped")]
    Stopped,
    /// A configuration error: nothing can be delivered until a person fixes it (a refused token,
    /// a wrong path, an unusable CA file). Answered at once, by every kind of flush.
    #[error("configuration error: {0}")]
    Misconfigured(String),
    /// Only from the flushes at exit: nothing was in flight and no collector could be reached
    /// (refused, not resolved, timed out); the entries go at the next start or with a sidecar.
    #[error("no collector can be reached now: {0}")]
    Unreachable(String),
    /// Only from the flushes at exit: the collector asked to be sent the reports again after this
    /// long, later than the timeout.
    #[error("the collector asked to retry in {0:?}, after the timeout")]
    RetryLater(Duration),
}

pub(crate) enum Control {
    Wake,
    Flush {
        deadline: Instant,
        scope: machine::Scope,
        at_exit: bool,
        reply: mpsc::Sender<Result<(), FlushError>>,
    },
    /// Answers until `deadline`; every phase over by `hard`.
    Shutdown {
        deadline: Instant,
        hard: Instant,
    },
    /// [`Uploader::finish`]: an exit flush until `deadline`, then at once the shutdown phases
    /// (answers until `deadline`, over by `hard`), without a round trip through the handle between.
    Finish {
        deadline: Instant,
        hard: Instant,
    },
}

/// Live counters shared between the uploader thread and its handle.
#[derive(Debug)]
pub(crate) struct Progress {
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub skipped: AtomicU64,
    pub quarantined: AtomicU64,
    pub deferred: AtomicU64,
    pub connections: AtomicU64,
    pub outstanding: AtomicU64,
    pub connected: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// The hard end of the shutdown phases, set by the owner before it sends `Control::Shutdown`, so
    /// that a send blocked on a stalled connection is bounded by it too.
    pub stop_at: Mutex<Option<Instant>>,
    /// The configuration error that keeps the uploader from delivering, while it lasts.
    pub misconfigured: tokio::sync::watch::Sender<Option<String>>,
}

impl Progress {
    fn new() -> Self {
        Self {
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            last_error: Mutex::new(None),
            stop_at: Mutex::new(None),
            misconfigured: tokio::sync::watch::Sender::new(None),
        }
    }

    fn summary(&self, incomplete: bool) -> Summary {
        Summary {
            delivered: self.delivered.load(Ordering::SeqCst),
            duplicates: self.duplicates.load(Ordering::SeqCst),
            skipped: self.skipped.load(Ordering::SeqCst),
            quarantined: self.quarantined.load(Ordering::SeqCst),
            deferred: self.deferred.load(Ordering::SeqCst),
            put_back: self.outstanding.load(Ordering::SeqCst),
            connections: self.connections.load(Ordering::SeqCst),
            incomplete,
        }
    }
}

/// When the worker must be done so that its summary reaches a handle that waits until `hard`: a
/// little before (at most 20 ms, at most a quarter of the time after `deadline`).
fn worker_end(deadline: Instant, hard: Instant) -> Instant {
    let after = hard.saturating_duration_since(deadline);
    hard - (after / 4).min(Duration::from_millis(20))
}

/// The part of [`Uploader::finish`]'s limit kept for the shutdown phases after the last answer:
/// putting back what is unanswered and the close handshake (the rest goes to delivery).
pub const EXIT_CLOSE: Duration = Duration::from_millis(100);

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
    ///
    /// Fails only for what can never work in any form (no URL, a URL that is not `ws://` or
    /// `wss://`, a token a header cannot carry) and for a thread or runtime that cannot be made. A CA
    /// file that cannot be read does not fail the start (an application's crash capture must not
    /// depend on it): it is a configuration error, said once, and nothing is sent.
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
        let progress = Arc::new(Progress::new());
        let drop_grace = config.drop_grace;
        let close_bound = config.close_bound;
        // Made on the uploader's thread, not here: `init` (on the application's thread) should not
        // wait for the file system.
        let watch = config.watch.then(|| (spool.path().to_path_buf(), control.clone()));
        let mut worker = worker::Worker::new(spool, config, rx, progress.clone());
        let thread = std::thread::Builder::new().name("lastword-uploader".into()).spawn(move || {
            // Before the worker's first look at the spool: an entry that arrives after it is seen.
            let _watch = watch.and_then(|(path, control)| watch::ReadyWatch::start(&path, control));
            worker.prefetch_losses();
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

    /// Delivers everything in the spool now, without stopping: returns Ok when the spool has nothing
    /// left to send (nothing ready, nothing in flight, every delete done), or an error when `timeout`
    /// has passed ([`FlushError::Timeout`]: it keeps trying until then, through backoffs and
    /// `retry_later` delays) or a configuration error keeps it from delivering
    /// ([`FlushError::Misconfigured`], at once). Blocks the calling thread (from async code, call it
    /// in `spawn_blocking`) for at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        self.flush_scope(timeout, machine::Scope::All, false)
    }

    /// Like [`Uploader::flush`], but returns as soon as waiting cannot help: when nothing is in
    /// flight and no collector can be reached ([`FlushError::Unreachable`]: the last round of
    /// connection attempts failed, or the next one would come after the timeout), or when the
    /// collector asked to retry later than the timeout allows ([`FlushError::RetryLater`]; a delay
    /// that fits is waited for and the reports are sent again). What is not delivered stays in the
    /// spool for the next start or a sidecar. For the end of a process: an application whose
    /// collector is down exits without waiting.
    pub fn flush_at_exit(&self, timeout: Duration) -> Result<(), FlushError> {
        self.flush_scope(timeout, machine::Scope::All, true)
    }

    /// Like [`Uploader::flush_at_exit`], but returns as soon as no crash report is waiting or in
    /// flight (crash reports are sent first). The panic hook uses it to get a crash out before the
    /// process goes on. Returns by `timeout`.
    pub fn flush_crashes(&self, timeout: Duration) -> Result<(), FlushError> {
        self.flush_scope(timeout, machine::Scope::Crashes, true)
    }

    fn flush_scope(&self, timeout: Duration, scope: machine::Scope, at_exit: bool) -> Result<(), FlushError> {
        let deadline = Instant::now() + timeout;
        let (reply, answer) = mpsc::channel();
        self.control
            .send(Control::Flush { deadline, scope, at_exit, reply })
            .map_err(|_| FlushError::Stopped)?;
        // The worker answers by the deadline; this wait is the bound whatever the worker is doing.
        match answer.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(FlushError::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(FlushError::Stopped),
        }
    }

    /// Resolves when the uploader meets a configuration error (a refused token, a wrong path, an
    /// unusable CA file; see [`FlushError::Misconfigured`]), with its description; pending while
    /// there is none. For a sidecar that should stop rather than wait for a signal.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only watches a value.
    pub fn misconfigured(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut watch = self.progress.misconfigured.subscribe();
        async move {
            let reason = watch.wait_for(Option::is_some).await.map(|r| r.clone().unwrap_or_default());
            match reason {
                Ok(reason) => reason,
                // The uploader is gone: no error will come.
                Err(_) => std::future::pending().await,
            }
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

    /// Runs the shutdown phases (see the module doc) and returns what happened: the answers get
    /// until `grace`, and the rest (put-backs, deletes, the close handshake) the close bound
    /// ([`UploaderConfig::close_bound`], 500 ms by default). Returns by `grace` plus the close bound,
    /// whatever the collector, the network or the disk do (a worker still busy then is left to finish
    /// by itself, and the summary says `incomplete`). Blocks the calling thread.
    pub fn shutdown(mut self, grace: Duration) -> Summary {
        let deadline = Instant::now() + grace;
        self.stop(deadline, deadline + self.close_bound)
    }

    /// Delivers what it can and shuts down, within `limit` for everything: [`Uploader::flush_at_exit`]
    /// (no wait when no collector can be reached), then the shutdown phases. Answers are waited for
    /// until [`EXIT_CLOSE`] before the end of `limit` (or the close bound, or a quarter of `limit`,
    /// whichever is least); the put-backs and the close take that last part (a live connection
    /// closes in far less; a stalled one is dropped at the end). What the guard of `lastword::init`
    /// does at exit.
    pub fn finish(mut self, limit: Duration) -> Summary {
        let hard = Instant::now() + limit;
        let deadline = hard - EXIT_CLOSE.min(self.close_bound).min(limit / 4);
        let end = worker_end(deadline, hard);
        self.stop_with(Control::Finish { deadline, hard: end }, hard)
    }

    fn stop(&mut self, deadline: Instant, hard: Instant) -> Summary {
        let end = worker_end(deadline, hard);
        self.stop_with(Control::Shutdown { deadline, hard: end }, hard)
    }

    /// Sends `control` (a shutdown, or a flush then a shutdown) and waits for the summary until
    /// `hard`.
    fn stop_with(&mut self, control: Control, hard: Instant) -> Summary {
        if let Ok(mut stop_at) = self.progress.stop_at.lock() {
            *stop_at = Some(hard);
        }
        let _ = self.control.send(control);
        let received = match self.done.lock() {
            Ok(done) => done.recv_timeout(hard.saturating_duration_since(Instant::now())),
            Err(_) => Err(mpsc::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(summary) => {
                // The phases are over; the thread only tears its runtime down now: not waited for
                // (at exit, every wake-up of another thread costs time on a loaded machine).
                self.thread.take();
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
            let deadline = Instant::now() + self.drop_grace;
            self.stop(deadline, deadline + self.close_bound);
        }
    }
}
