//! `lastword::init`, the process-wide state it sets up, and the guard that shuts it down.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use lastword_spool::{EntryId, FLAG_UNSYMBOLIZED, Kind, Spool, SpoolError, SpoolOptions};

use crate::config::{BeforeSend, Config};
use crate::crashloop::{Admit, CrashLoop};
use crate::logs::{BatchPolicy, Level, LogPipe};
use crate::report::{Context, CrashReport};
use crate::upload::{FlushError, LossCounters, Uploader, UploaderConfig};

static STARTED: AtomicBool = AtomicBool::new(false);
static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

/// What [`Shared::store_crash`] did with a report.
pub(crate) enum Stored {
    /// Stored, under this id.
    Entry(EntryId),
    /// Deliberately not stored: beyond the crash-loop limit (counted), or dropped by `before_send`.
    Decided,
    /// Not stored: encoding or the spool failed.
    Failed,
}

/// The state the hooks and the guard share.
pub(crate) struct Shared {
    pub spool: Spool,
    context: Context,
    started: Instant,
    pub logs: LogPipe,
    uploader: RwLock<Option<Uploader>>,
    before_send: Option<BeforeSend>,
    panic_delivery: Duration,
    crash_loop: CrashLoop,
    pub losses: Arc<LossCounters>,
}

/// The state, once `init` has run.
pub(crate) fn shared() -> Option<Arc<Shared>> {
    SHARED.get().cloned()
}

/// Why `init` failed. Nothing was installed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `init` was called before in this process.
    #[error("lastword::init was already called in this process")]
    AlreadyInitialized,
    /// No spool directory was given and there is no home directory to put the default one in.
    #[error("no spool directory: set Config::spool or LASTWORD_SPOOL")]
    NoSpoolDirectory,
    /// The spool could not be opened.
    #[error("cannot open the spool: {0}")]
    Spool(#[from] SpoolError),
    /// A background thread could not be started.
    #[error("cannot start a lastword thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Sets lastword up for this process: the spool, the log writer, the uploader (when a URL is
/// configured: it also delivers what earlier runs left in the spool), the panic hook and the
/// fatal-signal handlers. Returns a guard that must live as long as the program: its drop delivers
/// what it can within the exit deadline.
///
/// Returns an error (never panics) if the spool cannot be opened or `init` already ran.
pub fn init(config: Config) -> Result<Guard, InitError> {
    if STARTED.swap(true, Ordering::SeqCst) {
        return Err(InitError::AlreadyInitialized);
    }
    let result = start(config);
    if result.is_err() {
        STARTED.store(false, Ordering::SeqCst);
    }
    result
}

fn start(config: Config) -> Result<Guard, InitError> {
    let spool_dir = match &config.spool {
        Some(dir) => dir.clone(),
        None => default_spool(&config.app).ok_or(InitError::NoSpoolDirectory)?,
    };
    let spool = Spool::open(&spool_dir, SpoolOptions { limits: config.limits, ..SpoolOptions::default() })?;
    let context = Context {
        app: config.app.clone(),
        release: config.release.clone(),
        environment: config.environment.clone(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        host: crate::host_name(),
        pid: std::process::id(),
        executable: std::env::current_exe().ok().map(|p| p.display().to_string()),
        uptime_ms: 0,
        lastword: env!("CARGO_PKG_VERSION").into(),
    };
    let losses = Arc::new(LossCounters::default());
    let policy =
        BatchPolicy { queue: config.log_queue, max_records: config.log_batch, max_delay: config.log_delay };
    let logs = LogPipe::start(
        spool.clone(),
        context.clone(),
        config.log_level,
        config.breadcrumbs,
        policy,
        losses.clone(),
    )?;
    let uploader = if config.urls.is_empty() {
        None
    } else {
        let mut up = UploaderConfig::new(config.urls.clone(), config.app.clone());
        up.token = config.token.clone();
        up.release = config.release.clone();
        up.host = context.host.clone();
        up.ca_file = config.ca_file.clone();
        up.losses = losses.clone();
        up.prepare = Some(crate::symbolize::prepare_with(
            spool_dir.clone(),
            config.crash_loop_per_hour,
            losses.clone(),
            config.before_send.clone(),
        ));
        up.drop_grace = config.exit_deadline;
        Some(Uploader::start(spool.clone(), up)?)
    };
    let shared = Arc::new(Shared {
        crash_loop: CrashLoop::new(&spool_dir, config.crash_loop_per_hour),
        spool,
        context,
        started: Instant::now(),
        logs,
        uploader: RwLock::new(uploader),
        before_send: config.before_send.clone(),
        panic_delivery: config.panic_delivery,
        losses,
    });
    // Only one init can get here (STARTED), so the cell is empty.
    let _ = SHARED.set(shared.clone());
    crate::panic::install();
    if config.signals {
        crate::signal::install(&shared)?;
        if config.breadcrumbs > 0 {
            crate::signal::crumbs::RING.enable();
        }
    }
    Ok(Guard { shared, exit_deadline: config.exit_deadline })
}

/// The default spool of an app: `$LASTWORD_SPOOL` is read by [`Config::new`]; this is the fallback,
/// `<data dir of the app>/lastword-spool`.
pub fn default_spool(app: &str) -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", app).map(|d| d.data_local_dir().join("lastword-spool"))
}

impl Shared {
    /// The context with the uptime filled in.
    pub fn context_now(&self) -> Context {
        let mut c = self.context.clone();
        c.uptime_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        c
    }

    /// The context as it was at init (for the signal handler's pre-built text).
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Decides once for a report the panic hook made (the crash-loop limit, then `before_send`),
    /// then stores it durably: flagged `FLAG_UNSYMBOLIZED` when its frames are still addresses, for
    /// the uploader to symbolize, and never decided again. A suppressed crash is counted in the
    /// spool's `crash_loop_suppressed` counter. Never panics; failures are told on stderr (the spool
    /// may be what failed).
    pub fn store_crash(&self, mut report: CrashReport) -> Stored {
        match self.crash_loop.admit(&report.fingerprint, crate::now_millis(), None) {
            Admit::Store { suppressed_before } => report.crash_loop_suppressed = suppressed_before,
            Admit::Suppress => {
                self.losses.crash_loop_suppressed.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.spool.add_to_counter(crate::crashloop::SUPPRESSED_COUNTER, 1) {
                    eprintln!("lastword: could not count a crash the crash-loop limit suppressed: {e}");
                }
                return Stored::Decided;
            }
        }
        if let Some(hook) = &self.before_send
            && !hook(&mut report)
        {
            return Stored::Decided;
        }
        let body = match serde_json::to_vec(&report) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("lastword: could not encode the crash report: {e}");
                return Stored::Failed;
            }
        };
        let flags = if report.symbolized { 0 } else { FLAG_UNSYMBOLIZED };
        match self.spool.write_flagged(Kind::Crash, flags, &body) {
            Ok(id) => Stored::Entry(id),
            Err(e) => {
                eprintln!("lastword: could not store the crash report: {e}");
                Stored::Failed
            }
        }
    }

    /// Gives the uploader a bounded time to deliver the crash just stored (the process may be about
    /// to die). Skipped on the uploader's own thread, and when no collector has been reachable.
    pub fn deliver_now(&self, _id: EntryId) {
        if self.panic_delivery.is_zero() || std::thread::current().name() == Some("lastword-uploader") {
            return;
        }
        let Ok(guard) = self.uploader.try_read() else { return };
        if let Some(uploader) = guard.as_ref()
            && (uploader.is_connected() || uploader.last_error().is_none())
        {
            uploader.wake();
            let _ = uploader.flush_crashes(self.panic_delivery);
        }
    }
}

/// Keeps lastword running. Dropping it flushes the logs and runs the uploader's shutdown phases
/// within the exit deadline (see [`Config::exit_deadline`]); the panic hook and signal handlers stay
/// installed and keep writing to the spool.
#[must_use = "dropping the guard shuts lastword's delivery down: keep it for the whole program"]
pub struct Guard {
    shared: Arc<Shared>,
    exit_deadline: Duration,
}

impl Guard {
    /// Stores the queued log records, then delivers everything in the spool now (when a collector is
    /// configured), waiting at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let deadline = Instant::now() + timeout;
        if !self.shared.logs.flush(timeout) {
            return Err(FlushError::Timeout);
        }
        let Ok(guard) = self.shared.uploader.read() else { return Err(FlushError::Stopped) };
        match guard.as_ref() {
            Some(uploader) => uploader.flush(deadline.saturating_duration_since(Instant::now())),
            None => Ok(()),
        }
    }

    /// The spool this process writes to.
    pub fn spool(&self) -> &Spool {
        &self.shared.spool
    }

    /// Records one log record (what the `log` and `tracing` integrations call).
    pub fn log(&self, level: Level, target: &str, message: impl Into<String>) {
        self.shared.logs.record(level, target, message.into());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let deadline = Instant::now() + self.exit_deadline;
        self.shared.logs.stop(self.exit_deadline.min(Duration::from_millis(500)));
        let uploader = self.shared.uploader.write().ok().and_then(|mut u| u.take());
        if let Some(uploader) = uploader {
            let _ = uploader.flush(deadline.saturating_duration_since(Instant::now()));
            let grace = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
            let _ = uploader.shutdown(grace);
        }
    }
}

/// Stores `report` as the panic hook does once it has built one: the crash-loop check, `before_send`,
/// then the durable spool write. Exists for the benchmarks in `benches/`, which time the hook apart
/// from its backtrace capture (symbolization); not part of the API, and may change or go. Returns the
/// stored entry's id, or `None` if `init` has not run or the report was not stored.
#[doc(hidden)]
pub fn store_crash_for_bench(report: CrashReport) -> Option<EntryId> {
    match SHARED.get()?.store_crash(report) {
        Stored::Entry(id) => Some(id),
        Stored::Decided | Stored::Failed => None,
    }
}

/// Records one log record, if `init` has run (else it is ignored).
pub fn log(level: Level, target: &str, message: impl Into<String>) {
    if let Some(shared) = SHARED.get() {
        shared.logs.record(level, target, message.into());
    }
}
