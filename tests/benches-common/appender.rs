//! The baseline side of the client-lib's log and event benchmarks: `tracing_subscriber::fmt` formatting
//! each event on the caller's thread and handing the line to `tracing_appender::non_blocking`, whose
//! worker appends it to a file that counts its lines. Included by path (`#[path]`), like the rest of
//! benches-common.

#![allow(dead_code, reason = "each benchmark uses a part of this module")]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::Dispatch;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt as _;

/// The appender, its worker and what it has written.
pub struct Appender {
    /// The dispatch that formats events and queues them for the worker.
    pub dispatch: Dispatch,
    worker: Option<WorkerGuard>,
    errors: ErrorCounter,
    /// Lines the worker has written to the file.
    written: Arc<AtomicU64>,
    /// Lines handed to the appender so far.
    pub sent: u64,
    /// The file (opened in append mode), emptied between chunks.
    file: File,
}

impl Appender {
    /// An appender writing `dir/appender.log`.
    pub fn new(dir: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("appender.log"))
            .expect("create the appender's file");
        let written = Arc::new(AtomicU64::new(0));
        let writer = LineCounter {
            file: file.try_clone().expect("clone the appender's file handle"),
            lines: written.clone(),
        };
        let (non_blocking, worker): (NonBlocking, WorkerGuard) = tracing_appender::non_blocking(writer);
        let errors = non_blocking.error_counter();
        let dispatch = Dispatch::new(
            tracing_subscriber::registry()
                .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(non_blocking)),
        );
        Self { dispatch, worker: Some(worker), errors, written, sent: 0, file }
    }

    /// Waits (at most `timeout`) until the worker has written every line sent, then empties its file.
    pub fn drain(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let dropped = || self.errors.dropped_lines() as u64;
        while self.written.load(Ordering::Acquire) + dropped() < self.sent {
            assert!(Instant::now() < deadline, "the appender's worker did not catch up");
            std::thread::sleep(Duration::from_micros(200));
        }
        self.file.set_len(0).expect("empty the appender's file");
    }

    /// Stops the worker; returns the line that says what the appender lost.
    pub fn finish(&mut self) -> String {
        drop(self.worker.take());
        format!(
            "appender: {} lines sent, {} written, {} dropped (queue full)",
            self.sent,
            self.written.load(Ordering::Acquire),
            self.errors.dropped_lines()
        )
    }
}

/// How long `f` took.
pub fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// The appender's file, counting the lines its worker writes.
struct LineCounter {
    file: File,
    lines: Arc<AtomicU64>,
}

impl Write for LineCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        let lines = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        self.lines.fetch_add(lines, Ordering::Release);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
