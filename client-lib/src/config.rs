//! The configuration of [`crate::init`], with documented defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lastword_spool::Limits;

use crate::logs::Level;
use crate::report::CrashReport;

/// Changes or drops a crash report: return `false` to drop it. Runs once per report, where it is
/// first prepared, and its decision holds on every resend (REPORT.md, "decided once"): in the panic
/// hook for panics, before the report is stored (its frames are addresses and modules then; names come
/// when it is symbolized, after it is durable); for fatal signals (never in the signal handler) when
/// this application's uploader first prepares the raw report for upload, on the symbolized report. A
/// sidecar (`lastword run`) has no access to it.
pub type BeforeSend = Arc<dyn Fn(&mut CrashReport) -> bool + Send + Sync>;

/// What [`crate::init`] sets up. `Config::new("my-app")` gives the defaults below; the setters
/// change one thing each.
#[derive(Clone)]
pub struct Config {
    pub(crate) app: String,
    pub(crate) release: Option<String>,
    pub(crate) environment: Option<String>,
    pub(crate) spool: Option<PathBuf>,
    pub(crate) limits: Limits,
    pub(crate) urls: Vec<String>,
    pub(crate) token: Option<String>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) exit_deadline: Duration,
    pub(crate) panic_delivery: Duration,
    pub(crate) breadcrumbs: usize,
    pub(crate) log_level: Level,
    pub(crate) log_queue: usize,
    pub(crate) log_batch: usize,
    pub(crate) log_delay: Duration,
    pub(crate) crash_loop_per_hour: u32,
    pub(crate) signals: bool,
    pub(crate) before_send: Option<BeforeSend>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("app", &self.app)
            .field("release", &self.release)
            .field("spool", &self.spool)
            .field("urls", &self.urls)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The defaults for `app`:
    ///
    /// | setting | default |
    /// |---|---|
    /// | spool | `$LASTWORD_SPOOL`, else `<data dir of app>/lastword-spool` (the `directories` crate) |
    /// | limits | 64 MiB, 10,000 entries |
    /// | url | `$LASTWORD_URL` (comma-separated), else none: spool only, a sidecar or the next start delivers |
    /// | token | `$LASTWORD_TOKEN`, else none |
    /// | exit deadline | 2 s: what the guard's drop gives delivery |
    /// | panic delivery | 1 s: how long a panic waits for its report to reach the collector |
    /// | breadcrumbs | the last 100 log records |
    /// | log level stored | `Warn` and above go to the spool; every level becomes a breadcrumb |
    /// | log queue | 4,096 records; more are dropped and counted |
    /// | log batch | 500 records or 1 s, whichever first |
    /// | crash loop | the same crash stored at most 10 times an hour; more are counted |
    /// | signals | fatal-signal handlers installed |
    pub fn new(app: impl Into<String>) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            app: app.into(),
            release: None,
            environment: None,
            spool: env("LASTWORD_SPOOL").map(PathBuf::from),
            limits: Limits::default(),
            urls: env("LASTWORD_URL")
                .map(|v| v.split(',').map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect())
                .unwrap_or_default(),
            token: env("LASTWORD_TOKEN"),
            ca_file: None,
            exit_deadline: Duration::from_secs(2),
            panic_delivery: Duration::from_secs(1),
            breadcrumbs: 100,
            log_level: Level::Warn,
            log_queue: 4096,
            log_batch: 500,
            log_delay: Duration::from_secs(1),
            crash_loop_per_hour: 10,
            signals: true,
            before_send: None,
        }
    }

    /// The application's release (version).
    #[must_use]
    pub fn release(mut self, release: impl Into<String>) -> Self {
        self.release = Some(release.into());
        self
    }

    /// The environment (production, staging, ...).
    #[must_use]
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The spool directory.
    #[must_use]
    pub fn spool(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool = Some(dir.into());
        self
    }

    /// The spool's limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// A collector URL (`ws://` or `wss://`). Call again to add failover collectors.
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// No collector: reports stay in the spool for a sidecar (or a later start with a URL).
    #[must_use]
    pub fn no_url(mut self) -> Self {
        self.urls.clear();
        self
    }

    /// The bearer token for the collector.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A PEM file of CA certificates to trust for `wss://`.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// How long the guard's drop gives delivery before the process exits.
    #[must_use]
    pub fn exit_deadline(mut self, deadline: Duration) -> Self {
        self.exit_deadline = deadline;
        self
    }

    /// How long a panic waits for its report to reach the collector (zero: do not wait).
    #[must_use]
    pub fn panic_delivery(mut self, timeout: Duration) -> Self {
        self.panic_delivery = timeout;
        self
    }

    /// How many recent log records panic reports carry. Fatal-signal reports carry the last 16 at
    /// most (the handler reads them from a fixed, lock-free ring; REPORT.md); 0 turns both off.
    #[must_use]
    pub fn breadcrumbs(mut self, n: usize) -> Self {
        self.breadcrumbs = n;
        self
    }

    /// The least severe level stored in the spool as logs.
    #[must_use]
    pub fn log_level(mut self, level: Level) -> Self {
        self.log_level = level;
        self
    }

    /// The log queue's capacity (records beyond it are dropped and counted).
    #[must_use]
    pub fn log_queue(mut self, records: usize) -> Self {
        self.log_queue = records;
        self
    }

    /// The most times the same crash (fingerprint) is stored per clock hour of the crashes' own time;
    /// more are counted (`losses.crash_loop_suppressed`) and not stored.
    #[must_use]
    pub fn crash_loop_per_hour(mut self, n: u32) -> Self {
        self.crash_loop_per_hour = n;
        self
    }

    /// Whether to install the fatal-signal handlers.
    #[must_use]
    pub fn signals(mut self, install: bool) -> Self {
        self.signals = install;
        self
    }

    /// A hook that may scrub, change or drop each crash report, once per report (see [`BeforeSend`]).
    #[must_use]
    pub fn before_send(mut self, hook: impl Fn(&mut CrashReport) -> bool + Send + Sync + 'static) -> Self {
        self.before_send = Some(Arc::new(hook));
        self
    }
}
