//! `lastword::init`, the process-wide state it sets up, and the guard that shuts it down.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use lastword_spool::{EntryId, FLAG_JSON, FLAG_UNSYMBOLIZED, Kind, Spool, SpoolError, SpoolOptions};

use crate::config::{BeforeSend, Config};
use crate::crashloop::{Admit, CrashLoop};
use crate::logs::{BatchPolicy, Level, LogPipe};
use crate::report::{Context, CrashReport};
use crate::upload::{DiagnosticLevel, Diagnostics, FlushError, LossCounters, Uploader, UploaderConfig};

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
    pub events: crate::event::EventPipe,
    uploader: RwLock<Option<Uploader>>,
    before_send: Option<BeforeSend>,
    panic_delivery: Duration,
    /// The bound of the guard's drop, and of the log writer's last flush at `exit`.
    exit_deadline: Duration,
    crash_loop: CrashLoop,
    pub losses: Arc<LossCounters>,
    /// Where failures to store a crash report go (`Config::diagnostics`, else `tracing`).
    diagnostics: Option<Diagnostics>,
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
    /// A collector URL can never work: another scheme than `ws://` or `wss://`, no host, no port.
    #[error("invalid collector URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as it was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The spool could not be opened. Its error is in the message, so it is not also the
    /// `source()`: a chain printed whole says it once.
    #[error("cannot open the spool: {0}")]
    Spool(SpoolError),
    /// A background thread could not be started (the OS error is in the message, as above).
    #[error("cannot start a lastword thread: {0}")]
    Thread(std::io::Error),
}

impl From<SpoolError> for InitError {
    fn from(error: SpoolError) -> Self {
        InitError::Spool(error)
    }
}

impl From<std::io::Error> for InitError {
    fn from(error: std::io::Error) -> Self {
        InitError::Thread(error)
    }
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

/// Sets everything up in two phases, so that a failure leaves nothing installed and a retried `init`
/// starts clean: first every step that can fail (the spool, the signal slot and the rest of what the
/// handlers need, the log writer, the uploader), each undone by dropping it; then what cannot fail
/// and is process-wide (the signal handlers, the shared state, the panic hook).
fn start(config: Config) -> Result<Guard, InitError> {
    for url in &config.urls {
        crate::config::check_url(url).map_err(|reason| InitError::BadUrl { url: url.clone(), reason })?;
    }
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
    let signals = if config.signals { Some(crate::signal::prepare(&spool, &context)?) } else { None };
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
        config.diagnostics.clone(),
    )?;
    let events = crate::event::EventPipe::start(spool.clone(), config.event_queue, context.clone())?;
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
            crate::symbolize::EventPolicy {
                per_hour: config.event_loop_per_hour,
                before_send: config.before_send_event.clone(),
            },
        ));
        up.drop_grace = config.exit_deadline;
        up.diagnostics = config.diagnostics.clone();
        Some(Uploader::start(spool.clone(), up)?)
    };
    let shared = Arc::new(Shared {
        crash_loop: CrashLoop::new(&spool_dir, config.crash_loop_per_hour),
        spool,
        context,
        started: Instant::now(),
        logs,
        events,
        uploader: RwLock::new(uploader),
        before_send: config.before_send.clone(),
        panic_delivery: config.panic_delivery,
        exit_deadline: config.exit_deadline,
        losses,
        diagnostics: config.diagnostics.clone(),
    });
    // Installed from here on. The signal handlers first: their install puts back what it did if
    // `sigaction` fails (it cannot for these signals), before anything else is in place.
    if let Some(signals) = signals {
        signals.install()?;
        if config.breadcrumbs > 0 {
            crate::signal::crumbs::RING.enable();
        }
    }
    // Only one init can get here (STARTED), and a failed one never set the cell: it is empty.
    let _ = SHARED.set(shared.clone());
    crate::signal::atexit::register(at_exit);
    crate::panic::install();
    Ok(Guard { shared, exit_deadline: config.exit_deadline })
}

/// The default spool of an app, the same for the library and the `lastword` binary (`--app NAME` or
/// `LASTWORD_APP`): `<data dir>/lastword/spools/<app>`, where `<data dir>` is the user's local data
/// directory (the `directories` crate's `data_local_dir`: `$XDG_DATA_HOME`, else `~/.local/share`, on
/// Linux). One spool per app: one app's flood of logs never evicts another's reports, and a sidecar per
/// app (`lastword run --app NAME`) drains its own. Bytes of the name other than letters, digits, `-`,
/// `_` and `.` (and a leading `.`) are written `%XX`; an empty name is `_`. A name longer than 120
/// bytes so written (a file name may have 255) keeps its first characters, up to 100 bytes, followed by
/// `~` and the first 16 hex digits of the SHA-256 of the whole name. `$LASTWORD_SPOOL`, read by
/// [`Config::new`], wins over it. `None` when there is no home directory.
pub fn default_spool(app: &str) -> Option<PathBuf> {
    default_spools_dir().map(|dir| dir.join(spool_dir_name(app)))
}

/// The directory that holds every app's default spool: `<data dir>/lastword/spools` (see
/// [`default_spool`]).
pub fn default_spools_dir() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|d| d.data_local_dir().join("lastword").join("spools"))
}

/// The longest directory name [`default_spool`] writes out whole.
const SPOOL_NAME_MAX: usize = 120;
/// How much of a longer name it keeps before the hash.
const SPOOL_NAME_KEPT: usize = 100;

/// The one path component an app's name becomes.
fn spool_dir_name(app: &str) -> String {
    if app.is_empty() {
        return "_".into();
    }
    let mut name = String::with_capacity(app.len());
    let mut cut = None;
    for (i, ch) in app.char_indices() {
        let mut utf8 = [0u8; 4];
        let start = name.len();
        for (j, byte) in ch.encode_utf8(&mut utf8).bytes().enumerate() {
            let plain =
                byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_') || (byte == b'.' && i + j > 0);
            if plain {
                name.push(char::from(byte));
            } else {
                name.push_str(&format!("%{byte:02X}"));
            }
        }
        if cut.is_none() && name.len() > SPOOL_NAME_KEPT {
            cut = Some(start);
        }
    }
    if name.len() <= SPOOL_NAME_MAX {
        return name;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(app.as_bytes());
    name.truncate(cut.unwrap_or(SPOOL_NAME_KEPT));
    name.push('~');
    name.push_str(&hex::encode(&digest[..8]));
    name
}

/// The app whose default spool has the directory name `dir_name` (the inverse of
/// [`default_spool`]'s naming), for showing people which apps have one: `my%20app` is `my app`. A
/// long name that was cut and hashed comes back cut, ending in `…`. `None` for a name that
/// [`default_spool`] does not write.
pub fn default_spool_app(dir_name: &str) -> Option<String> {
    if dir_name == "_" {
        return Some(String::new());
    }
    let (stem, cut) = match dir_name.rsplit_once('~') {
        Some((stem, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => (stem, true),
        Some(_) => return None,
        None => (dir_name, false),
    };
    let mut bytes = Vec::with_capacity(stem.len());
    let mut rest = stem.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).and_then(|h| std::str::from_utf8(h).ok())?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    let mut app = String::from_utf8(bytes).ok()?;
    if cut {
        app.push('…');
    }
    Some(app)
}

impl Shared {
    /// Stores the queued events and log records, then delivers everything in the spool now (when a
    /// collector is configured), waiting at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let deadline = Instant::now() + timeout;
        if !self.events.flush_until(deadline) || !self.logs.flush_until(deadline) {
            return Err(FlushError::Timeout);
        }
        let Ok(guard) = self.uploader.read() else { return Err(FlushError::Stopped) };
        match guard.as_ref() {
            Some(uploader) => uploader.flush(deadline.saturating_duration_since(Instant::now())),
            None => Ok(()),
        }
    }

    /// Milliseconds since `init`.
    pub fn uptime_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The context with the uptime filled in.
    pub fn context_now(&self) -> Context {
        let mut c = self.context.clone();
        c.uptime_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        c
    }

    /// Decides once for a report the panic hook made (the crash-loop limit, then `before_send`),
    /// then stores it durably: flagged `FLAG_UNSYMBOLIZED` when its frames are still addresses, for
    /// the uploader to symbolize, and never decided again. A suppressed crash is counted in the
    /// spool's `crash_loop_suppressed` counter. Never panics; failures go to the diagnostics
    /// (`Config::diagnostics`, else `tracing`: not to the spool, which may be what failed).
    pub fn store_crash(&self, mut report: CrashReport) -> Stored {
        match self.crash_loop.admit(&report.fingerprint, crate::now_millis(), None) {
            Admit::Store { suppressed_before } => report.crash_loop_suppressed = suppressed_before,
            Admit::Suppress => {
                self.losses.crash_loop_suppressed.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.spool.add_to_counter(crate::crashloop::SUPPRESSED_COUNTER, 1) {
                    let message = format!("could not count a crash the crash-loop limit suppressed: {e}");
                    self.tell(DiagnosticLevel::Warn, &message);
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
                self.tell(DiagnosticLevel::Error, &format!("could not encode the crash report: {e}"));
                return Stored::Failed;
            }
        };
        let flags = FLAG_JSON | if report.symbolized { 0 } else { FLAG_UNSYMBOLIZED };
        match self.spool.write_flagged(Kind::Crash, flags, &body) {
            Ok(id) => Stored::Entry(id),
            Err(e) => {
                self.tell(DiagnosticLevel::Error, &format!("could not store the crash report: {e}"));
                Stored::Failed
            }
        }
    }

    fn tell(&self, level: DiagnosticLevel, message: &str) {
        crate::diagnostics::tell(self.diagnostics.as_ref(), level, message);
    }

    /// Gives the uploader a bounded time to deliver the crash just stored (the process may be about
    /// to die): returns within the panic delivery time, at once when no collector can be reached
    /// ([`Uploader::flush_crashes`]). Skipped on the uploader's own thread, and while the guard is
    /// being dropped.
    pub fn deliver_now(&self, _id: EntryId) {
        if self.panic_delivery.is_zero() || std::thread::current().name() == Some("lastword-uploader") {
            return;
        }
        let Ok(guard) = self.uploader.try_read() else { return };
        if let Some(uploader) = guard.as_ref() {
            uploader.wake();
            let _ = uploader.flush_crashes(self.panic_delivery);
        }
    }
}

/// Keeps lastword running. Dropping it stores the queued log records, delivers what it can and runs
/// the uploader's shutdown phases, all within the exit deadline (see [`Config::exit_deadline`]); the
/// panic hook and signal handlers stay installed and keep writing to the spool.
#[must_use = "dropping the guard shuts lastword's delivery down: keep it for the whole program"]
pub struct Guard {
    shared: Arc<Shared>,
    exit_deadline: Duration,
}

impl Guard {
    /// Stores the queued events and log records, then delivers everything in the spool now (when a
    /// collector is configured), waiting at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        self.shared.flush(timeout)
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
    /// One deadline for everything: the log writer's last batch (durable first), then delivery and
    /// the uploader's shutdown in what is left ([`Uploader::finish`]: no wait when no collector can
    /// be reached or it asks to retry after the deadline).
    fn drop(&mut self) {
        let deadline = Instant::now() + self.exit_deadline;
        self.shared.events.stop(deadline);
        self.shared.logs.stop(deadline);
        let uploader = self.shared.uploader.write().ok().and_then(|mut u| u.take());
        if let Some(uploader) = uploader {
            let _ = uploader.finish(deadline.saturating_duration_since(Instant::now()));
        }
    }
}

/// Run by libc when the process exits through `exit` (`std::process::exit`, or the return from
/// `main`), on the exiting thread, with the other threads still running: the events and records
/// still queued for their writers are written out, within the exit deadline. The guard's drop does not run on
/// `std::process::exit`; after a normal drop the writer is stopped and this returns at once.
/// Delivery is left to the next start or the sidecar.
extern "C" fn at_exit() {
    // Nothing may unwind out of a C callback.
    let _ = std::panic::catch_unwind(|| {
        if let Some(shared) = SHARED.get() {
            let deadline = Instant::now() + shared.exit_deadline;
            shared.events.flush_until(deadline);
            shared.logs.flush_until(deadline);
        }
    });
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

#[cfg(test)]
mod tests {
    use super::{SPOOL_NAME_MAX, default_spool_app, spool_dir_name};

    #[test]
    fn an_app_name_becomes_one_plain_path_component() {
        assert_eq!(spool_dir_name("my-app_2.1"), "my-app_2.1");
        assert_eq!(spool_dir_name("../etc"), "%2E.%2Fetc");
        assert_eq!(spool_dir_name("a b/c"), "a%20b%2Fc");
        assert_eq!(spool_dir_name(".."), "%2E.");
        assert_eq!(spool_dir_name("é"), "%C3%A9");
        assert_eq!(spool_dir_name(""), "_");
    }

    #[test]
    fn a_long_app_name_is_cut_and_hashed_into_a_name_the_file_system_takes() {
        let long: String = std::iter::repeat_n('漢', 90).collect();
        let name = spool_dir_name(&long);
        assert!(name.len() <= SPOOL_NAME_MAX, "{} bytes: {name}", name.len());
        assert_eq!(name, spool_dir_name(&long), "the same every time");
        let other: String = std::iter::repeat_n('漢', 91).collect();
        assert_ne!(name, spool_dir_name(&other), "names that share their start differ by the hash");
        let (kept, hash) = name.rsplit_once('~').expect("a hash");
        assert_eq!(hash.len(), 16);
        assert!(kept.starts_with("%E6%BC%A2") && kept.len() <= 100, "{kept}");
        // Long but within the limit: written out whole.
        let ascii = "a".repeat(SPOOL_NAME_MAX);
        assert_eq!(spool_dir_name(&ascii), ascii);
        let base = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir(base.path().join(spool_dir_name(&long))).expect("a name the file system takes");
    }

    #[test]
    fn a_default_spools_directory_name_gives_its_app_back() {
        for app in ["my-app_2.1", "my app", "../etc", "..", "é", "", "a~b"] {
            assert_eq!(default_spool_app(&spool_dir_name(app)).as_deref(), Some(app), "{app:?}");
        }
        let long: String = std::iter::repeat_n('漢', 90).collect();
        let back = default_spool_app(&spool_dir_name(&long)).expect("a cut name");
        assert!(back.ends_with('…') && long.starts_with(back.trim_end_matches('…')), "{back}");
        assert_eq!(default_spool_app("not%zzvalid"), None);
    }
}
