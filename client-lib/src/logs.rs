//! Log records: every record enters the breadcrumb ring; records at or above the configured level
//! also go, through a bounded queue, to a background writer that stores them in the spool in batches
//! (one `log` entry per batch).
//!
//! The caller's cost is formatting the message, one short critical section on the breadcrumb ring,
//! and a `try_send` on the queue: it never waits for the disk or for the writer. When the queue is
//! full the record is dropped and counted, and the count travels in the next batch and in `hello`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lastword_spool::{FLAG_JSON, Kind, Spool};

use crate::report::{Breadcrumb, Context, LogBatch, Scope};
use crate::upload::{DiagnosticLevel, Diagnostics, LossCounters};

/// Severity of a log record, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Errors.
    Error,
    /// Warnings.
    Warn,
    /// Information.
    Info,
    /// Debugging detail.
    Debug,
    /// Tracing detail.
    Trace,
}

impl Level {
    /// 0 for `Error` … 4 for `Trace`.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    /// The level's name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }
}

/// The last N records, for crash reports.
#[derive(Debug)]
pub(crate) struct Breadcrumbs {
    ring: Mutex<VecDeque<Breadcrumb>>,
    capacity: usize,
}

impl Breadcrumbs {
    pub fn new(capacity: usize) -> Self {
        Self { ring: Mutex::new(VecDeque::with_capacity(capacity)), capacity }
    }

    pub fn push(&self, crumb: Breadcrumb) {
        if self.capacity == 0 {
            return;
        }
        if let Ok(mut ring) = self.ring.lock() {
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(crumb);
        }
    }

    /// The records, oldest first. Never waits: a panic hook calls it, and the panicking thread may be
    /// the one holding the lock. Returns nothing in that case.
    pub fn snapshot(&self) -> Vec<Breadcrumb> {
        match self.ring.try_lock() {
            Ok(ring) => ring.iter().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }
}

enum Msg {
    /// A record, and the scope it was made in.
    Record(Breadcrumb, Option<Arc<Scope>>),
    Flush(mpsc::Sender<()>),
    Stop,
}

/// Where log records go.
pub(crate) struct LogPipe {
    tx: SyncSender<Msg>,
    level: Level,
    pub breadcrumbs: Breadcrumbs,
    losses: Arc<LossCounters>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The process the writer thread runs in: a child forked without it has nobody to flush.
    pid: u32,
}

/// How log batches are made.
#[derive(Clone, Debug)]
pub(crate) struct BatchPolicy {
    pub queue: usize,
    pub max_records: usize,
    pub max_delay: Duration,
}

impl LogPipe {
    pub fn start(
        spool: Spool,
        context: Context,
        level: Level,
        breadcrumbs: usize,
        policy: BatchPolicy,
        losses: Arc<LossCounters>,
        diagnostics: Option<Diagnostics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(policy.queue.max(1));
        let writer_losses = losses.clone();
        let writer = std::thread::Builder::new().name("lastword-logs".into()).spawn(move || {
            write_batches(&spool, &context, &rx, &policy, &writer_losses, diagnostics.as_ref())
        })?;
        Ok(Self {
            tx,
            level,
            breadcrumbs: Breadcrumbs::new(breadcrumbs),
            losses,
            writer: Mutex::new(Some(writer)),
            pid: std::process::id(),
        })
    }

    /// Records one log record. Never blocks on the writer or the disk.
    pub fn record(&self, level: Level, target: &str, message: String) {
        let ts_ms = crate::now_millis();
        // For a fatal signal's report: the handler cannot take the ring's lock below.
        crate::signal::crumbs::RING.push(ts_ms, level.code(), target, &message);
        let crumb =
            Breadcrumb { ts_ms, level: level.as_str().to_owned(), target: target.to_owned(), message };
        if level <= self.level {
            self.breadcrumbs.push(crumb.clone());
            match self.tx.try_send(Msg::Record(crumb, crate::scope::current())) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.losses.logs_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            self.breadcrumbs.push(crumb);
        }
    }

    /// Writes what is queued now into the spool; waits at most `timeout`. True when it was written.
    #[cfg(test)]
    pub fn flush(&self, timeout: Duration) -> bool {
        self.flush_until(Instant::now() + timeout)
    }

    /// Writes what is queued now into the spool; waits until `deadline` at most (a full queue is
    /// retried until then rather than blocked on). True when it was written.
    pub fn flush_until(&self, deadline: Instant) -> bool {
        flush_queue(self.pid, &self.tx, Msg::Flush, deadline)
    }

    /// Writes what is queued and stops the writer thread, by `deadline`: a writer still busy then
    /// (a slow disk) finishes on its own, and is not waited for.
    pub fn stop(&self, deadline: Instant) {
        self.flush_until(deadline);
        stop_writer(&self.tx, Msg::Stop, &self.writer);
    }
}

/// Asks the writer thread of a queue (logs, events) to write what is queued, with the message
/// `flush` makes, and waits for its answer until `deadline` at most (a full queue is retried until
/// then rather than blocked on). False in a child forked without the writer thread (`pid` is the
/// process that started it): nobody would answer.
pub(crate) fn flush_queue<M>(
    pid: u32,
    tx: &SyncSender<M>,
    flush: fn(mpsc::Sender<()>) -> M,
    deadline: Instant,
) -> bool {
    if std::process::id() != pid {
        return false;
    }
    let (ack, done) = mpsc::channel();
    let mut msg = flush(ack);
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return false,
        }
    }
    done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
}

/// Tells a queue's writer thread to stop, and joins it if it has finished already (one still busy
/// finishes on its own, and is not waited for).
pub(crate) fn stop_writer<M>(tx: &SyncSender<M>, stop: M, writer: &Mutex<Option<JoinHandle<()>>>) {
    let _ = tx.try_send(stop);
    if let Ok(mut writer) = writer.lock()
        && let Some(handle) = writer.take()
        && handle.is_finished()
    {
        let _ = handle.join();
    }
}

fn write_batches(
    spool: &Spool,
    context: &Context,
    rx: &Receiver<Msg>,
    policy: &BatchPolicy,
    losses: &LossCounters,
    diagnostics: Option<&Diagnostics>,
) {
    let mut batch: Vec<Breadcrumb> = Vec::new();
    // The scope of the records in `batch`: a batch holds the records of one scope.
    let mut batch_scope: Option<Arc<Scope>> = None;
    let mut first_at = Instant::now();
    let mut dropped_reported = 0u64;
    let mut write = |batch: &mut Vec<Breadcrumb>, scope: &Option<Arc<Scope>>| {
        if batch.is_empty() {
            return;
        }
        let dropped = losses.logs_dropped.load(Ordering::Relaxed);
        let mut context = context.clone();
        if let Some(scope) = scope {
            crate::scope::apply_environment(scope, &mut context);
        }
        let body = LogBatch {
            kind: "logs".into(),
            context,
            records: std::mem::take(batch),
            dropped_before: dropped - dropped_reported,
            scope: scope.as_deref().cloned().unwrap_or_default(),
        };
        dropped_reported = dropped;
        match serde_json::to_vec(&body) {
            Ok(bytes) => {
                if let Err(e) = spool.write_flagged(Kind::Log, FLAG_JSON, &bytes) {
                    // Nothing else can be done with a log batch the spool refuses: count it.
                    losses.logs_dropped.fetch_add(body.records.len() as u64, Ordering::Relaxed);
                    let message = format!("could not store {} log records: {e}", body.records.len());
                    crate::diagnostics::tell(diagnostics, DiagnosticLevel::Warn, &message);
                }
            }
            Err(e) => {
                let message = format!("could not encode log records: {e}");
                crate::diagnostics::tell(diagnostics, DiagnosticLevel::Warn, &message);
            }
        }
    };
    loop {
        let wait = if batch.is_empty() {
            Duration::from_secs(3600)
        } else {
            policy.max_delay.saturating_sub(first_at.elapsed())
        };
        let (flush, ack, stop) = match rx.recv_timeout(wait) {
            Ok(Msg::Record(r, scope)) => {
                let same = match (&batch_scope, &scope) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    write(&mut batch, &batch_scope);
                }
                if batch.is_empty() {
                    first_at = Instant::now();
                    batch_scope = scope;
                }
                batch.push(r);
                (batch.len() >= policy.max_records, None, false)
            }
            Ok(Msg::Flush(ack)) => (true, Some(ack), false),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => (true, None, true),
            Err(RecvTimeoutError::Timeout) => (true, None, false),
        };
        if flush {
            write(&mut batch, &batch_scope);
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking_the_caller() {
        let (tx, _rx) = mpsc::sync_channel(4);
        let losses = Arc::new(LossCounters::default());
        let pipe = LogPipe {
            tx,
            level: Level::Info,
            breadcrumbs: Breadcrumbs::new(10),
            losses: losses.clone(),
            writer: Mutex::new(None),
            pid: std::process::id(),
        };
        // Nobody reads the queue: the first 4 records fill it, the rest must be dropped at once.
        let start = Instant::now();
        for i in 0..10 {
            pipe.record(Level::Error, "t", format!("r{i}"));
            pipe.record(Level::Debug, "t", format!("below the level {i}"));
        }
        assert!(start.elapsed() < Duration::from_secs(1), "the caller never waits for the writer");
        assert_eq!(losses.logs_dropped.load(Ordering::Relaxed), 6);
        assert_eq!(pipe.breadcrumbs.snapshot().len(), 10, "every record still enters the ring");
    }

    fn pipe(dir: &std::path::Path, queue: usize, level: Level) -> (Spool, LogPipe) {
        let spool = Spool::open(dir, lastword_spool::SpoolOptions::default()).unwrap();
        let policy = BatchPolicy { queue, max_records: 1000, max_delay: Duration::from_secs(60) };
        let pipe = LogPipe::start(spool.clone(), Context::default(), level, 3, policy, Arc::default(), None)
            .unwrap();
        (spool, pipe)
    }

    #[test]
    fn records_at_or_above_the_level_are_stored_in_one_batch_and_all_become_breadcrumbs() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, pipe) = pipe(dir.path(), 100, Level::Warn);
        pipe.record(Level::Error, "t", "e1".into());
        pipe.record(Level::Info, "t", "i1".into());
        pipe.record(Level::Warn, "t", "w1".into());
        pipe.record(Level::Debug, "t", "d1".into());
        assert!(pipe.flush(Duration::from_secs(5)));
        let claim = spool.claim().unwrap().expect("one log batch");
        assert_eq!((claim.kind(), claim.flags()), (Kind::Log, FLAG_JSON), "a log batch is serde's JSON");
        let batch: LogBatch = serde_json::from_slice(claim.body()).unwrap();
        let messages: Vec<_> = batch.records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(messages, ["e1", "w1"]);
        assert!(spool.claim().unwrap().is_none(), "one entry per batch");
        let crumbs: Vec<_> = pipe.breadcrumbs.snapshot().into_iter().map(|b| b.message).collect();
        assert_eq!(crumbs, ["i1", "w1", "d1"], "the ring keeps the last 3 of every level");
        pipe.stop(Instant::now() + Duration::from_secs(1));
    }

    #[test]
    fn a_batch_holds_the_records_of_one_scope_and_carries_it() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, pipe) = pipe(dir.path(), 100, Level::Warn);
        pipe.record(Level::Error, "t", "outside".into());
        crate::scope::with_scope(
            |s| {
                s.set_tag("logs-unit", "inside");
            },
            || {
                pipe.record(Level::Error, "t", "inside 1".into());
                pipe.record(Level::Error, "t", "inside 2".into());
            },
        );
        assert!(pipe.flush(Duration::from_secs(5)));
        let mut batches = Vec::new();
        while let Some(claim) = spool.claim().unwrap() {
            batches.push(serde_json::from_slice::<LogBatch>(claim.body()).unwrap());
            claim.ack().unwrap();
        }
        batches.sort_by_key(|b| b.records[0].ts_ms);
        let seen: Vec<(Vec<&str>, Option<&str>)> = batches
            .iter()
            .map(|b| {
                let messages = b.records.iter().map(|r| r.message.as_str()).collect();
                (messages, b.scope.tags.get("logs-unit").map(String::as_str))
            })
            .collect();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.contains(&(vec!["outside"], None)), "{seen:?}");
        assert!(seen.contains(&(vec!["inside 1", "inside 2"], Some("inside"))), "{seen:?}");
        pipe.stop(Instant::now() + Duration::from_secs(1));
    }

    #[test]
    fn stop_writes_what_is_queued_and_returns_by_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, pipe) = pipe(dir.path(), 100, Level::Warn);
        pipe.record(Level::Error, "t", "queued".into());
        let deadline = Instant::now() + Duration::from_secs(5);
        pipe.stop(deadline);
        assert!(Instant::now() < deadline);
        let claim = spool.claim().unwrap().expect("the queued record was written");
        assert!(String::from_utf8_lossy(claim.body()).contains("queued"));
        // Stopped: a later flush answers at once, false.
        let start = Instant::now();
        assert!(!pipe.flush(Duration::from_secs(5)));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_flush_without_a_writer_returns_false_at_its_deadline() {
        // A writer that never answers (nobody reads the queue): the wait is the deadline, no more.
        let (tx, _rx) = mpsc::sync_channel(1);
        let pipe = LogPipe {
            tx,
            level: Level::Info,
            breadcrumbs: Breadcrumbs::new(1),
            losses: Arc::default(),
            writer: Mutex::new(None),
            pid: std::process::id(),
        };
        for _ in 0..3 {
            pipe.record(Level::Error, "t", "fills the queue".into());
        }
        let start = Instant::now();
        assert!(!pipe.flush_until(Instant::now() + Duration::from_millis(200)));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "{took:?}");
    }
}
