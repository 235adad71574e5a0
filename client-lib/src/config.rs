//! The configuration of [`crate::init`], with documented defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lastword_spool::Limits;

use crate::logs::Level;
use crate::report::{CrashReport, EventReport};

/// Changes or drops a crash report: return `false` to drop it. Runs once per report, where it is
/// first prepared, and its decision holds on every resend (REPORT.md, "decided once"): in the panic
/// hook for panics, before the report is stored (its frames are addresses and modules then; names come
/// when it is symbolized, after it is durable); for fatal signals (never in the signal handler) when
/// this application's uploader first prepares the raw report for upload, on the symbolized report. A
/// sidecar (`lastword run`) has no access to it.
pub type BeforeSend = Arc<dyn Fn(&mut CrashReport) -> bool + Send + Sync>;

/// Changes or drops an event ([`crate::capture_error`], [`crate::capture_message`]): return `false`
/// to drop it. Runs once per event, where it is first prepared (this application's uploader, after
/// the event is symbolized and fingerprinted, after the event-loop limit), and its decision holds on
/// every resend. A sidecar (`lastword run`) has no access to it: an event it prepares is sent as it
/// is.
pub type BeforeSendEvent = Arc<dyn Fn(&mut EventReport) -> bool + Send + Sync>;

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
    pub(crate) event_queue: usize,
    pub(crate) event_loop_per_hour: u32,
    pub(crate) before_send_event: Option<BeforeSendEvent>,
    pub(crate) diagnostics: Option<crate::upload::Diagnostics>,
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
    /// | spool | `$LASTWORD_SPOOL`, else [`crate::default_spool`]: `~/.local/share/lastword/spools/<app>` on Linux, where `lastword ... --app <app>` finds it |
    /// | limits | 64 MiB, 10,000 entries |
    /// | url | `$LASTWORD_URL` (comma-separated), else none: spool only, a sidecar or the next start delivers |
    /// | token | `$LASTWORD_TOKEN`, else none |
    /// | exit deadline | 2 s: the guard's drop returns within it (logs stored, delivery, shutdown) |
    /// | panic delivery | 1 s: the most a panic waits for its report to reach the collector |
    /// | breadcrumbs | the last 100 log records |
    /// | log level stored | `Warn` and above go to the spool; every level becomes a breadcrumb |
    /// | log queue | 4,096 records; more are dropped and counted |
    /// | log batch | 500 records or 1 s, whichever first |
    /// | crash loop | the same crash stored at most 10 times an hour; more are counted |
    /// | event queue | 1,024 events waiting for the disk; more are dropped and counted |
    /// | event loop | the same event (fingerprint) sent at most 100 times an hour; more are counted |
    /// | signals | fatal-signal handlers installed |
    pub fn new(app: impl Into<String>) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            app: app.into(),
            release: None,
            environment: None,
            spool: env("LASTWORD_SPOOL").map(PathBuf::from),
            limits: Limits::default(),
            urls: env("LASTWORD_URL").map(|v| collector_urls(&v)).unwrap_or_default(),
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
            event_queue: 1024,
            event_loop_per_hour: 100,
            before_send_event: None,
            diagnostics: None,
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

    /// A collector URL, `ws://HOST:PORT/PATH` or `wss://HOST:PORT/PATH`, the port written out (no
    /// path: `/ingest`). Call again to add failover collectors. [`crate::init`] refuses a URL of
    /// another scheme, without a host or without a port ([`crate::InitError::BadUrl`]).
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

    /// The bound of the guard's drop, everything included: the queued log records are stored first
    /// (durable), then what is in the spool is delivered, then the uploader's shutdown phases run
    /// (their part, the last 100 ms of the deadline or a quarter of it if that is less, comes out of
    /// the deadline, not on top of it: [`crate::upload::Uploader::finish`]). The drop returns within
    /// it, whatever the collector or the network do (only the scheduling of the exiting thread is not
    /// included).
    ///
    /// It does not wait when waiting cannot help: with nothing in flight and no collector that can
    /// be reached (connection refused, a name that does not resolve, a refused token), or a collector
    /// that asks to retry later than the deadline, the drop returns at once; the reports are durable
    /// in the spool and go at the next start or with a sidecar. A `retry_later` delay that fits in
    /// the deadline is waited for, and the report sent again.
    ///
    /// On `std::process::exit` the guard is not dropped: the records still queued are then stored
    /// (within this deadline too), not delivered.
    #[must_use]
    pub fn exit_deadline(mut self, deadline: Duration) -> Self {
        self.exit_deadline = deadline;
        self
    }

    /// The most a panic waits for its report to reach the collector (zero: do not wait). The report
    /// is durable in the spool before this wait starts; the wait ends when the collector has stored
    /// it, at once when no collector can be reached, and by `timeout` in any case (not counting the
    /// capture and symbolization of the report before it).
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

    /// The event queue's capacity: events captured and not yet written to the spool (more are
    /// dropped and counted, `counters/events_dropped`).
    #[must_use]
    pub fn event_queue(mut self, events: usize) -> Self {
        self.event_queue = events;
        self
    }

    /// The most times the same event (fingerprint) is sent per clock hour of the events' own time;
    /// more are counted (`counters/event_loop_suppressed`) and not sent. Decided once, where the
    /// event is first prepared.
    #[must_use]
    pub fn event_loop_per_hour(mut self, n: u32) -> Self {
        self.event_loop_per_hour = n;
        self
    }

    /// Whether to install the fatal-signal handlers.
    #[must_use]
    pub fn signals(mut self, install: bool) -> Self {
        self.signals = install;
        self
    }

    /// Where the library's diagnostics go: the uploader's (connections, failures, and configuration
    /// errors such as a refused token, at [`crate::upload::DiagnosticLevel::Error`]) and a crash report or log
    /// batch the spool refused. None by default: then they go to `tracing` (the `tracing` feature;
    /// else `log`) under the target [`crate::DIAGNOSTICS_TARGET`]. The library never prints.
    #[must_use]
    pub fn diagnostics(
        mut self,
        callback: impl Fn(crate::upload::DiagnosticLevel, &str) + Send + Sync + 'static,
    ) -> Self {
        self.diagnostics = Some(std::sync::Arc::new(callback));
        self
    }

    /// A hook that may scrub, change or drop each crash report, once per report (see [`BeforeSend`]).
    #[must_use]
    pub fn before_send(mut self, hook: impl Fn(&mut CrashReport) -> bool + Send + Sync + 'static) -> Self {
        self.before_send = Some(Arc::new(hook));
        self
    }

    /// A hook that may scrub, change or drop each event, once per event (see [`BeforeSendEvent`]).
    #[must_use]
    pub fn before_send_event(
        mut self,
        hook: impl Fn(&mut EventReport) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.before_send_event = Some(Arc::new(hook));
        self
    }
}

/// The collector URLs of a comma-separated list, as `LASTWORD_URL` gives them: each one trimmed,
/// empty ones dropped.
pub(crate) fn collector_urls(list: &str) -> Vec<String> {
    list.split(',').map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect()
}

/// Checks a collector URL before anything is started: the scheme is `ws` or `wss`, and there is a host
/// and a port from 1 to 65535, written out (a URL without one is refused rather than sent to port 80
/// or 443 by surprise: the collector's default is 8700). Returns what is wrong with it, and for a
/// missing port the URL with it written out. [`init`](crate::init) refuses such a URL with this
/// reason; the `lastword` binary checks its `--url` values with it too.
pub fn check_url(url: &str) -> Result<(), String> {
    use tokio_tungstenite::tungstenite::http::Uri;
    let example = "ws://HOST:PORT/ingest or wss://HOST:PORT/ingest";
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(format!("no scheme: a collector URL looks like {example}"));
    };
    if !matches!(scheme, "ws" | "wss") {
        return Err(format!("the scheme must be ws:// or wss://, not {scheme}://"));
    }
    let uri: Uri =
        url.parse().map_err(|e| format!("not a URL ({e}): a collector URL looks like {example}"))?;
    let host = match uri.host() {
        Some(host) if !host.is_empty() => host,
        _ => return Err(format!("no host: a collector URL looks like {example}")),
    };
    let written =
        uri.authority().and_then(|a| a.as_str().rsplit_once(':')).is_some_and(|(_, p)| !p.ends_with(']'));
    match uri.port_u16() {
        Some(0) => Err("port 0 cannot be connected to".into()),
        Some(_) => Ok(()),
        None if written => Err("the port is not a number from 1 to 65535".into()),
        None => {
            let port = if scheme == "wss" { 443 } else { 80 };
            let path = uri.path_and_query().map_or("", |p| p.as_str());
            Err(format!(
                "no port: write it out, e.g. {scheme}://{host}:{port}{path} (the collector listens on 8700 by default)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{check_url, collector_urls};

    fn reason(url: &str) -> String {
        check_url(url).expect_err(url)
    }

    #[test]
    fn collector_urls_need_a_websocket_scheme_a_host_and_a_port() {
        for good in [
            "ws://127.0.0.1:8700/ingest",
            "wss://collector.example:443/ingest",
            "ws://[::1]:8700",
            "ws://h:1/",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("http://127.0.0.1:8700/ingest", "the scheme must be ws:// or wss://, not http://"),
            ("WS://127.0.0.1:8700/ingest", "the scheme must be"),
            ("127.0.0.1:8700/ingest", "no scheme"),
            ("collector:8700", "no scheme"),
            ("", "no scheme"),
            ("ws://collector.example/ingest", "no port: write it out, e.g. ws://collector.example:80/ingest"),
            (
                "wss://collector.example/a?b=c",
                "no port: write it out, e.g. wss://collector.example:443/a?b=c",
            ),
            ("wss://collector.example", "no port"),
            ("ws://:8700/ingest", "no host"),
            ("ws://host:0/ingest", "port 0"),
            ("ws://host:99999/ingest", "the port is not a number"),
            ("ws://[::1]/ingest", "no port"),
            ("ws://two words:8700/", "not a URL"),
        ] {
            let reason = reason(bad);
            assert!(reason.starts_with(why), "{bad:?}: {reason}");
        }
    }

    #[test]
    fn a_missing_port_is_shown_written_out() {
        let err = reason("ws://localhost/ingest");
        assert!(err.starts_with("no port: write it out, e.g. ws://localhost:80/ingest"), "{err}");
        assert!(reason("ws://[::1]/ingest").contains("ws://[::1]:80/ingest"));
    }

    #[test]
    fn a_list_of_urls_is_split_at_commas_and_trimmed() {
        assert_eq!(
            collector_urls(" ws://a:1/ingest, ws://b:2/ingest ,,"),
            ["ws://a:1/ingest", "ws://b:2/ingest"]
        );
        assert!(collector_urls(" , ").is_empty());
    }
}
