//! Acked entries, deleted in the background (FORMAT.md, "Ack").
//!
//! An ack renames the claimed entry to `claimed/<sid>/.acked.<name>` (a rename inside one directory:
//! no block is freed, so no discard is issued) and hands the new name to this session's reaper,
//! threads that unlink acked files one after the other (relative to the directory held open), at the
//! lowest CPU priority. The unlink, which on a file system mounted with `discard` waits for a
//! synchronous discard of the entry's blocks (100–180 µs on ext4, about 60 µs of it CPU on this VM),
//! is then off the path of whoever acks, in time and in CPU. An acked file is never sent again: names starting with `.` are not
//! entries to any reader (also one of format 1.0), and recovery deletes what a dead session acked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::fsio::{self, Dir};

/// What an acked entry's name starts with, in its session's `claimed/<sid>/`.
pub(crate) const ACKED_PREFIX: &str = ".acked.";

/// How long a clean close waits for the reaper to delete what is still acked. What is left then is
/// deleted by the next recovery (the session's directory stays until then), so that closing a
/// session never waits long for a disk that deletes slowly.
pub(crate) const CLOSE_BOUND: Duration = Duration::from_secs(1);

/// The name an acked entry named `file_name` takes in its `claimed/<sid>/`.
pub(crate) fn acked_name(file_name: &str) -> String {
    format!("{ACKED_PREFIX}{file_name}")
}

/// An acked file to delete: its directory and its name.
pub(crate) type Acked = (Arc<Dir>, String);

/// Whether a file name in a `claimed/<sid>/` directory is an acked entry.
pub(crate) fn is_acked(file_name: &[u8]) -> bool {
    file_name.starts_with(ACKED_PREFIX.as_bytes())
}

/// Acked files handed to the thread at once: the thread is woken for a full batch, or after
/// [`GATHER`] for a smaller one, not for every file (a wake-up per ack would cost more CPU than the
/// unlink it saves where unlinks are cheap, on a tmpfs).
const BATCH: usize = 64;
/// How long a thread lets a batch gather once it holds a first file.
const GATHER: Duration = Duration::from_millis(5);
/// Threads per session: unlinks of one directory overlap where the file system lets them (freeing
/// the blocks, and a synchronous discard on some mounts, runs outside the directory's lock).
const THREADS: usize = 4;

/// The nice value of the threads: the lowest priority. An unlink is CPU as well as waiting (on ext4
/// mounted with `discard` on a VM, about 60 µs of CPU per 1 KiB entry for the discard's submission,
/// more than the claim and the ack together), and nobody waits for it: at the lowest priority it takes
/// the cores that claims, sends and the collector leave idle, instead of a share of their time. A
/// thread at nice 19 still gets a small share of a busy core (the scheduler starves nobody), so the
/// deletes lag behind a busy drain but never stop.
const NICE: i32 = 19;

/// One session's background deleter, started at the first ack.
#[derive(Debug, Default)]
pub(crate) struct Reaper {
    running: Mutex<Option<Running>>,
    /// Test hook: the threads delete nothing until the close ([`Reaper::hold`]).
    held: AtomicBool,
}

#[derive(Debug)]
struct Running {
    /// The process that started the thread: a forked child has no such thread, and acks by unlinking.
    pid: u32,
    queue: Arc<Queue>,
    /// Says once the thread has deleted everything it was given and was told to finish.
    finished: Receiver<()>,
}

/// What the acks hand over, and whether the thread is to finish once it is empty.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    paths: Vec<Acked>,
    finish: bool,
    /// Delete nothing before `finish` (a test hook).
    held: bool,
    /// Stop at once, deleting nothing more: the session was abandoned (a test's simulated death).
    abandoned: bool,
    /// Threads still running.
    threads: usize,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Not closed through `finish` (a session whose start failed halfway): let the threads end
        // once they have deleted what they hold.
        if let Some(r) = self.lock().take() {
            r.queue.lock().finish = true;
            r.queue.wake.notify_all();
        }
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands an acked file to the thread, starting it first if need be. Returns it back when there
    /// is no thread to take it (a forked child, a thread that cannot be started): the caller deletes
    /// it then.
    pub fn delete_later(&self, path: Acked) -> Result<(), Acked> {
        let pid = std::process::id();
        let queue = {
            let mut running = self.lock();
            match running.as_ref() {
                Some(r) if r.pid == pid => {}
                // Forked: the parent's thread is not in this process. A child does its own deletes.
                Some(_) => return Err(path),
                None => match start(self.held.load(Ordering::SeqCst)) {
                    Some(r) => *running = Some(r),
                    None => return Err(path),
                },
            }
            running.as_ref().expect("started above").queue.clone()
        };
        let mut pending = queue.lock();
        pending.paths.push(path);
        // The first file starts the thread's gathering; a full batch ends it.
        if pending.paths.len() % BATCH == 1 || pending.paths.len() % BATCH == 0 {
            queue.wake.notify_one();
        }
        Ok(())
    }

    /// Test hook: from now on the threads delete nothing before the session closes, so that a test
    /// can see acked files and kill the process while they are there.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
        if let Some(r) = self.lock().as_ref() {
            r.queue.lock().held = true;
        }
    }

    /// The session was abandoned (a test's simulated death): the threads stop without deleting
    /// anything more, as they would if the process died.
    pub fn abandon(&self) {
        if let Some(r) = self.lock().take() {
            r.queue.lock().abandoned = true;
            r.queue.wake.notify_all();
        }
    }

    /// Lets the thread finish what it was given, waiting at most `bound`. Returns whether nothing it
    /// was given is left to delete (also when it never started).
    pub fn finish(&self, bound: Duration) -> bool {
        let Some(Running { pid, queue, finished }) = self.lock().take() else { return true };
        if pid != std::process::id() {
            // The parent's thread, which is not in this process: nothing to wait for.
            return true;
        }
        queue.lock().finish = true;
        queue.wake.notify_all();
        match finished.recv_timeout(bound) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        }
    }
}

/// Starts the threads, or `None` if the OS gives none.
fn start(held: bool) -> Option<Running> {
    let queue = Arc::new(Queue::default());
    let (done, finished) = mpsc::channel();
    let mut started = 0;
    for _ in 0..THREADS {
        let (shared, done) = (queue.clone(), done.clone());
        match std::thread::Builder::new().name("lastword-reaper".into()).spawn(move || reap(&shared, &done)) {
            Ok(_) => started += 1,
            Err(_) => break,
        }
    }
    if started == 0 {
        return None;
    }
    queue.lock().threads = started;
    queue.lock().held = held;
    Some(Running { pid: std::process::id(), queue, finished })
}

/// A thread: deletes what it is given, a batch at a time, until told to finish and nothing is left;
/// the last one to end says so.
fn reap(queue: &Queue, done: &mpsc::Sender<()>) {
    // Per thread on Linux. A failure (a sandbox that forbids it) leaves the thread at its priority.
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE);
    let mut pending = queue.lock();
    loop {
        if pending.abandoned {
            break;
        }
        if pending.paths.is_empty() || (pending.held && !pending.finish) {
            if pending.finish {
                break;
            }
            pending = queue.wake.wait(pending).unwrap_or_else(|poisoned| poisoned.into_inner());
            continue;
        }
        if pending.paths.len() < BATCH && !pending.finish {
            // Let the batch gather (a full one, or the close, wakes this earlier).
            pending = queue
                .wake
                .wait_timeout(pending, GATHER)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        let keep = pending.paths.len().saturating_sub(BATCH);
        let batch = pending.paths.split_off(keep);
        if !pending.paths.is_empty() {
            // More than a batch: another thread takes the rest, so that the unlinks (and the discards
            // behind them) overlap.
            queue.wake.notify_one();
        }
        drop(pending);
        for (dir, name) in batch {
            // A failure leaves the file where the session's close or the next recovery deletes it;
            // an acked file is never an entry again, wherever it stays.
            let _ = fsio::unlink_at(&dir, &name);
        }
        pending = queue.lock();
    }
    pending.threads -= 1;
    let last = pending.threads == 0;
    drop(pending);
    if last {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::{Deletes, Kind, Spool, SpoolOptions};

    /// The nice value of thread `tid` of this process (field 19 of its `stat`), and its name.
    fn thread(tid: &str) -> Option<(String, i32)> {
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        // The name (field 2) is in parentheses and may hold spaces: count from after it (field 3).
        let after = &stat[stat.rfind(')')? + 1..];
        let nice = after.split_whitespace().nth(16)?.parse().ok()?;
        Some((comm.trim().to_owned(), nice))
    }

    fn reaper_nices() -> Vec<i32> {
        let tasks = std::fs::read_dir("/proc/self/task").expect("list this process's threads");
        tasks
            .filter_map(|t| thread(t.ok()?.file_name().to_str()?))
            .filter(|(name, _)| name == "lastword-reaper")
            .map(|(_, nice)| nice)
            .collect()
    }

    #[test]
    fn reaper_threads_delete_at_the_lowest_priority() {
        let dir = tempfile::tempdir().unwrap();
        let options = SpoolOptions { deletes: Deletes::Background, ..SpoolOptions::default() };
        let spool = Spool::open(dir.path(), options).unwrap();
        spool.write(Kind::Log, b"{}").unwrap();
        // The first ack starts the threads.
        spool.claim().unwrap().expect("the entry").ack().unwrap();
        let own = thread(&rustix::thread::gettid().as_raw_nonzero().to_string()).map(|(_, n)| n);
        // Each thread lowers its own priority as it starts: wait for every one of them to have.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let nices = reaper_nices();
            if !nices.is_empty() && nices.iter().all(|n| *n == super::NICE) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "reaper threads at nice {nices:?}, want {} (this test's thread: {own:?})",
                super::NICE
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_ne!(own, Some(super::NICE), "the test runs above the lowest priority, so it tells");
    }
}
