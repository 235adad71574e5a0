//! Handled errors and messages as events: [`capture_error`], [`capture_message`], and the bounded
//! writer that stores them in the spool (one `event` entry per event, REPORT.md "Event").
//!
//! The caller's cost is the raw capture (the return addresses of its stack, the modules they are
//! in, the error's `Display` and its `source()` chain) and a `try_send` on a bounded queue: it never
//! waits for the disk. A background thread writes each event, flagged `FLAG_UNSYMBOLIZED`; the
//! uploader's prepare step symbolizes it, fingerprints it and decides the event-loop limit and
//! `before_send_event` there, once ([`crate::symbolize`]). When the queue is full the event is
//! dropped and counted (`counters/events_dropped` in the spool, and `dropped_before` in the next
//! event stored). The queue is written out by the guard's drop, by `std::process::exit` (the
//! `atexit` hook), and by [`flush`].

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lastword_spool::{EntryId, FLAG_JSON, FLAG_UNSYMBOLIZED, Kind, Spool};

use crate::logs::Level;
use crate::report::{Context, EVENT_VERSION, ErrorCause, ErrorInfo, EventReport, ThreadInfo};

/// The spool counter of events dropped because the event queue was full (or the spool refused them).
pub(crate) const DROPPED_COUNTER: &str = "events_dropped";
/// The most frames an event keeps (the innermost, its caller's, first).
const MAX_FRAMES: usize = 128;
/// The most causes of a `source()` chain kept (a cycle would otherwise never end).
const MAX_CHAIN: usize = 64;

/// Reports a handled error as an event: its type name, its `Display`, its whole `source()` chain,
/// and the caller's backtrace (raw now, symbolized when the event is prepared for upload). Returns
/// the event's id, which is its spool entry's id and the report's id in the collector.
///
/// Never blocks on the disk: the event is handed to a background writer through a bounded queue
/// ([`crate::Config::event_queue`]); if the queue is full, the event is dropped and counted, and
/// the id returned is never stored. The queue is written out when the guard is dropped, at
/// `std::process::exit`, and by [`flush`]. Before [`crate::init`] (or after a failed one) the event
/// goes nowhere; an id is still returned.
///
/// The type name is `std::any::type_name::<E>()` of the type given; for a `&dyn Error` it is the
/// leading name of the error's `Debug` output (best effort).
///
/// ```no_run
/// # let _guard = lastword::init(lastword::Config::new("my-app"))?;
/// if let Err(e) = std::fs::read("settings.toml") {
///     let id = lastword::capture_error(&e);
///     eprintln!("could not read the settings (reported as {id})");
/// }
/// # Ok::<(), lastword::InitError>(())
/// ```
#[inline(always)]
pub fn capture_error<E: Error + ?Sized>(error: &E) -> EntryId {
    let name = std::any::type_name::<E>();
    // `&E` is a sized error (std's `impl Error for &E`) whose Display, Debug and source are the
    // error's own: it makes a `&dyn Error` of any `E`, sized or not.
    capture_error_named((!name.starts_with("dyn ")).then_some(name), &error)
}

/// Reports an `anyhow::Error` as [`capture_error`] does, with its chain (`anyhow`'s context layers
/// and the error they wrap) and, when the error captured one (`RUST_BACKTRACE` or
/// `RUST_LIB_BACKTRACE` set), its own backtrace as text in `error.backtrace`. The type name is
/// absent: `anyhow` hides it.
#[cfg(feature = "anyhow")]
#[inline(always)]
pub fn capture_anyhow(error: &anyhow::Error) -> EntryId {
    let backtrace = error.backtrace();
    let text =
        (backtrace.status() == std::backtrace::BacktraceStatus::Captured).then(|| backtrace.to_string());
    capture_error_with(None, error.as_ref(), text)
}

/// Reports a message as an event at `level` (no error, no backtrace): grouped by the message with
/// its digits removed. Never blocks on the disk (see [`capture_error`]).
///
/// ```no_run
/// # let _guard = lastword::init(lastword::Config::new("my-app"))?;
/// lastword::capture_message(lastword::Level::Warn, "cache full, evicting");
/// # Ok::<(), lastword::InitError>(())
/// ```
pub fn capture_message(level: Level, message: &str) -> EntryId {
    let id = EntryId::generate();
    let Some(shared) = crate::init::shared() else { return id };
    let report = EventReport {
        level: level.as_str().to_owned(),
        message: message.to_owned(),
        ..EventReport::default()
    };
    shared.events.send_pending(id, pending(&shared, report));
    id
}

/// Writes the events and log records captured so far into the spool, then delivers everything in
/// the spool (when a collector is configured), waiting at most `timeout`: what
/// [`crate::Guard::flush`] does, for code that has no guard at hand. `Err` when it could not within
/// `timeout`, or before `init`.
pub fn flush(timeout: Duration) -> Result<(), crate::upload::FlushError> {
    match crate::init::shared() {
        Some(shared) => shared.flush(timeout),
        None => Err(crate::upload::FlushError::Stopped),
    }
}

/// The non-generic part of [`capture_error`], inlined into it like it.
#[inline(always)]
fn capture_error_named(type_name: Option<&str>, error: &dyn Error) -> EntryId {
    capture_error_with(type_name, error, None)
}

/// What every `capture_*` of an error does, with the error's own backtrace as text; inlined into
/// its callers like them.
#[inline(always)]
fn capture_error_with(type_name: Option<&str>, error: &dyn Error, backtrace: Option<String>) -> EntryId {
    let info = ErrorInfo { backtrace, ..error_info(type_name, error) };
    capture_error_info(Level::Error, info.message.clone(), info)
}

/// Captures an event of an error already read ([`error_info`]) with the caller's backtrace: never
/// inlined, its frame is where the caller's backtrace is cut (the `capture_*` above it are inlined
/// into the caller, and cut by name when the event is symbolized). The `tracing` layer calls it.
#[inline(never)]
pub(crate) fn capture_error_info(level: Level, message: String, error: ErrorInfo) -> EntryId {
    let id = EntryId::generate();
    let Some(shared) = crate::init::shared() else { return id };
    let addresses = capture();
    let report = EventReport {
        level: level.as_str().to_owned(),
        message,
        error: Some(error),
        ..EventReport::default()
    };
    let mut pending = pending(&shared, report);
    pending.addresses = addresses;
    shared.events.send_pending(id, pending);
    id
}

/// What the caller's thread hands to the writer: the event with what must be taken at the time
/// (when, which thread, the scope), and the raw addresses; the writer makes the frames, the
/// modules and the context, off the caller's thread.
pub(crate) struct Pending {
    report: EventReport,
    addresses: Vec<usize>,
    scope: Option<Arc<crate::report::Scope>>,
    uptime_ms: u64,
}

/// `report` with what every event has.
fn pending(shared: &crate::init::Shared, report: EventReport) -> Pending {
    let current = std::thread::current();
    Pending {
        report: EventReport {
            ts_ms: crate::now_millis(),
            thread: ThreadInfo {
                name: current.name().map(str::to_owned),
                id: Some(crate::panic::thread_id()),
            },
            ..report
        },
        addresses: Vec::new(),
        scope: crate::scope::current(),
        uptime_ms: shared.uptime_ms(),
    }
}

/// The event the writer stores: frames, modules, context and scope filled in.
fn complete(pending: Pending, context: &Context) -> EventReport {
    let Pending { mut report, addresses, scope, uptime_ms } = pending;
    if !addresses.is_empty() {
        (report.frames, report.modules) = crate::panic::raw_frames(&addresses);
    }
    report.kind = "event".into();
    report.version = EVENT_VERSION;
    report.context = Context { uptime_ms, ..context.clone() };
    if let Some(scope) = scope {
        crate::scope::apply_environment(&scope, &mut report.context);
        report.scope = (*scope).clone();
    }
    report
}

/// The error's type, message and `source()` chain.
pub(crate) fn error_info(type_name: Option<&str>, error: &dyn Error) -> ErrorInfo {
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        if chain.len() == MAX_CHAIN {
            break;
        }
        chain.push(ErrorCause { type_name: debug_type_name(cause), message: cause.to_string() });
        source = cause.source();
    }
    ErrorInfo {
        type_name: type_name.map(str::to_owned).or_else(|| debug_type_name(error)),
        message: error.to_string(),
        chain,
        backtrace: None,
    }
}

/// The leading name of an error's `Debug` output when it looks like a type's (`ParseIntError {
/// kind: InvalidDigit }` gives `ParseIntError`): a path of identifiers that starts with an
/// uppercase letter. A best effort for a `dyn Error`, whose type is not known.
pub(crate) fn debug_type_name(error: &dyn Error) -> Option<String> {
    use std::fmt::Write as _;
    // Only the start of the output is needed: a writer that stops early keeps this cheap.
    struct Head(String);
    impl std::fmt::Write for Head {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let room = 96usize.saturating_sub(self.0.len());
            self.0.extend(s.chars().take(room));
            if self.0.len() >= 96 { Err(std::fmt::Error) } else { Ok(()) }
        }
    }
    let mut head = Head(String::new());
    let _ = write!(head, "{error:?}");
    let name: String =
        head.0.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
    let last = name.rsplit("::").next().unwrap_or("");
    (last.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && !name.ends_with(':')).then_some(name)
}

/// The return addresses of the calling thread below [`capture_error_info`], innermost (the caller
/// of `capture_error`) first. If that frame is not found, every frame is kept.
#[inline(never)]
fn capture() -> Vec<usize> {
    static SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let marker = capture_error_info as fn(Level, String, ErrorInfo) -> EntryId as usize;
    crate::panic::addresses_below(marker, &SEEN, MAX_FRAMES)
}

enum Msg {
    Event(EntryId, Box<Pending>),
    Flush(mpsc::Sender<()>),
    Stop,
}

/// Where events go: a bounded queue to the writer thread.
pub(crate) struct EventPipe {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The process the writer thread runs in: a child forked without it has nobody to flush.
    pid: u32,
}

impl EventPipe {
    pub fn start(spool: Spool, queue: usize, context: Context) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let writer_dropped = dropped.clone();
        let writer = std::thread::Builder::new()
            .name("lastword-events".into())
            .spawn(move || write_events(&spool, &context, &rx, &writer_dropped))?;
        Ok(Self { tx, dropped, writer: Mutex::new(Some(writer)), pid: std::process::id() })
    }

    /// Hands one event to the writer. Never blocks: a full queue drops it, counted.
    pub fn send_pending(&self, id: EntryId, pending: Pending) {
        if self.tx.try_send(Msg::Event(id, Box::new(pending))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`EventPipe::send_pending`] of an event without frames or scope.
    #[cfg(test)]
    pub fn send(&self, id: EntryId, report: EventReport) {
        self.send_pending(id, Pending { report, addresses: Vec::new(), scope: None, uptime_ms: 0 });
    }

    /// Events dropped by this process so far.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes what is queued now into the spool; waits until `deadline` at most (a full queue is
    /// retried until then rather than blocked on). True when it was written.
    pub fn flush_until(&self, deadline: Instant) -> bool {
        crate::logs::flush_queue(self.pid, &self.tx, Msg::Flush, deadline)
    }

    /// Writes what is queued and stops the writer thread, by `deadline` (a writer still busy then
    /// finishes on its own, and is not waited for).
    pub fn stop(&self, deadline: Instant) {
        self.flush_until(deadline);
        crate::logs::stop_writer(&self.tx, Msg::Stop, &self.writer);
    }
}

/// The writer thread: one durable entry per event; the drops counted in the spool whenever the
/// queue runs dry (not per event: a counter is a durable write too).
fn write_events(spool: &Spool, context: &Context, rx: &Receiver<Msg>, dropped: &AtomicU64) {
    let mut counted = 0u64;
    let mut reported = 0u64;
    let count = |counted: &mut u64| {
        let now = dropped.load(Ordering::Relaxed);
        if now > *counted && spool.add_to_counter(DROPPED_COUNTER, now - *counted).is_ok() {
            *counted = now;
        }
    };
    loop {
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Empty) => {
                count(&mut counted);
                match rx.recv_timeout(Duration::from_secs(3600)) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            Err(TryRecvError::Disconnected) => {
                count(&mut counted);
                return;
            }
        };
        match msg {
            Msg::Event(id, pending) => {
                let mut report = complete(*pending, context);
                let now = dropped.load(Ordering::Relaxed);
                report.dropped_before = now - reported;
                let stored = serde_json::to_vec(&report).map_err(|e| e.to_string()).and_then(|body| {
                    spool
                        .write_with_id(Kind::Event, FLAG_UNSYMBOLIZED | FLAG_JSON, id, &body)
                        .map_err(|e| e.to_string())
                });
                match stored {
                    Ok(_) => reported = now,
                    // Nothing else can be done with an event the spool refuses: count it.
                    Err(_) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Msg::Flush(ack) => {
                count(&mut counted);
                let _ = ack.send(());
            }
            Msg::Stop => {
                count(&mut counted);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::num::ParseIntError);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bad port in config")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_error_its_type_and_its_whole_chain_are_read() {
        let inner = "x1".parse::<u16>().unwrap_err();
        let info = error_info(Some("my_app::Outer"), &Outer(inner));
        assert_eq!(info.type_name.as_deref(), Some("my_app::Outer"));
        assert_eq!(info.message, "bad port in config");
        assert_eq!(info.chain.len(), 1);
        assert_eq!(info.chain[0].message, "invalid digit found in string");
        assert_eq!(info.chain[0].type_name.as_deref(), Some("ParseIntError"));
        // A dyn Error: the type comes from its Debug output.
        let boxed: Box<dyn Error> = Box::new(Outer("x".parse::<u16>().unwrap_err()));
        assert_eq!(error_info(None, boxed.as_ref()).type_name.as_deref(), Some("Outer"));
        let io: Box<dyn Error> = Box::new(std::io::Error::other("plain"));
        assert_eq!(debug_type_name(io.as_ref()).as_deref(), Some("Custom"), "best effort only");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking_the_caller() {
        let (tx, _rx) = mpsc::sync_channel(2);
        let pipe =
            EventPipe { tx, dropped: Arc::default(), writer: Mutex::new(None), pid: std::process::id() };
        let start = Instant::now();
        for _ in 0..10 {
            pipe.send(EntryId::generate(), EventReport::default());
        }
        assert!(start.elapsed() < Duration::from_secs(1), "the caller never waits for the writer");
        assert_eq!(pipe.dropped(), 8);
    }

    #[test]
    fn queued_events_are_stored_under_their_ids_and_drops_are_counted_in_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), lastword_spool::SpoolOptions::default()).unwrap();
        let pipe = EventPipe::start(spool.clone(), 8, Context::default()).unwrap();
        let id = EntryId::generate();
        pipe.send(id, EventReport { message: "m".into(), ..EventReport::default() });
        pipe.dropped.fetch_add(3, Ordering::Relaxed);
        assert!(pipe.flush_until(Instant::now() + Duration::from_secs(10)));
        let claim = spool.claim().unwrap().expect("the event");
        assert_eq!(
            (claim.kind(), claim.id(), claim.flags()),
            (Kind::Event, id, FLAG_UNSYMBOLIZED | FLAG_JSON)
        );
        let report: EventReport = serde_json::from_slice(claim.body()).unwrap();
        assert_eq!((report.message.as_str(), report.dropped_before), ("m", 3));
        assert_eq!(spool.add_to_counter(DROPPED_COUNTER, 0).unwrap(), 3);
        pipe.stop(Instant::now() + Duration::from_secs(5));
    }
}
