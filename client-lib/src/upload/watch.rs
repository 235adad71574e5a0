//! Wakes the uploader when an entry arrives in `ready/`, through a raw inotify watch on that one
//! directory. A slow periodic rescan in the worker is the safety net, and the only way where no
//! watch can be had (no inotify, or no watch left: `max_user_watches`).
//!
//! The watch asks the kernel for entries created in `ready/` or moved into it (`Spool::write`'s
//! rename, a signal slot's commit, a put-back, a recovery) and nothing else: the claims that move
//! entries out of `ready/` (ours and other uploaders') queue no event at all, so a draining uploader
//! is not woken once per claim. One thread of its own reads the events; all the events of one read
//! make one wake-up. Removing the watch (the drop of [`ReadyWatch`]) makes the kernel queue
//! `IN_IGNORED`, which ends the thread's read and the thread.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use tokio::sync::mpsc::UnboundedSender;

use super::Control;

/// What the watch asks for: an entry created in `ready/` or moved into it. The kernel adds
/// `IN_IGNORED` (the watch is gone), `IN_UNMOUNT` and `IN_Q_OVERFLOW` by itself.
const NEW_WORK: WatchFlags = WatchFlags::CREATE.union(WatchFlags::MOVED_TO).union(WatchFlags::ONLYDIR);

/// The size of the buffer events are read into: many events per read (one is 16 bytes and the
/// entry's name, about 60 bytes).
const EVENT_BUFFER: usize = 8 << 10;

/// An inotify watch on `spool/ready` and the thread that reads it. Dropping it removes the watch,
/// which ends the thread.
#[derive(Debug)]
pub(crate) struct ReadyWatch {
    fd: Arc<OwnedFd>,
    wd: i32,
}

/// What one read of the watch found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Seen {
    /// Events that may mean a new entry (or that some were lost: a queue overflow).
    new_work: usize,
    /// Other events (none, with the watch's mask).
    other: usize,
    /// The watch is gone (removed, `ready/` deleted, or its file system unmounted): no event comes
    /// again.
    gone: bool,
}

impl ReadyWatch {
    /// Watches `spool/ready` and sends [`Control::Wake`] on `control` once for each batch of new
    /// entries. `None` if the platform cannot watch (the periodic rescan then does the job). Made
    /// before the uploader's first look at the spool, so that no entry arriving after that look goes
    /// unseen.
    pub(crate) fn start(spool: &Path, control: UnboundedSender<Control>) -> Option<Self> {
        let (fd, wd) = watch_fd(spool, CreateFlags::CLOEXEC).ok()?;
        let fd = Arc::new(fd);
        let reader = fd.clone();
        std::thread::Builder::new()
            .name("lastword-watch".into())
            .spawn(move || read_until_gone(&reader, &control))
            .ok()?;
        Some(Self { fd, wd })
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        // The kernel answers with IN_IGNORED, the thread's last event. If the watch is gone already,
        // the thread has read its IN_IGNORED and ended.
        let _ = inotify::remove_watch(&*self.fd, self.wd);
    }
}

/// An inotify descriptor with `flags` watching `spool/ready` for new entries, and the watch.
fn watch_fd(spool: &Path, flags: CreateFlags) -> io::Result<(OwnedFd, i32)> {
    let fd = inotify::init(flags)?;
    let wd = inotify::add_watch(&fd, spool.join("ready"), NEW_WORK)?;
    Ok((fd, wd))
}

/// The watch's thread: reads (blocking) until the watch is gone or the uploader is (the channel is
/// closed), and wakes the uploader once per read that found new entries.
fn read_until_gone(fd: &OwnedFd, control: &UnboundedSender<Control>) {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); EVENT_BUFFER];
    loop {
        let seen = match read_events(fd, &mut buf) {
            Ok(seen) => seen,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Nothing more can be learnt from it: the periodic rescan goes on.
            Err(_) => return,
        };
        if seen.new_work > 0 && control.send(Control::Wake).is_err() {
            return;
        }
        if seen.gone {
            return;
        }
    }
}

/// One read of the watch: the events it returned, counted. Blocks until one is queued, or fails
/// with `WouldBlock` on a non-blocking descriptor.
fn read_events(fd: &OwnedFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<Seen> {
    let mut reader = inotify::Reader::new(fd, buf);
    let mut seen = Seen::default();
    loop {
        let event = reader.next()?;
        let flags = event.events();
        if flags.intersects(ReadFlags::IGNORED | ReadFlags::UNMOUNT) {
            seen.gone = true;
        } else if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO | ReadFlags::QUEUE_OVERFLOW) {
            seen.new_work += 1;
        } else {
            seen.other += 1;
        }
        if reader.is_buffer_empty() {
            return Ok(seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use lastword_spool::{Kind, Spool, SpoolOptions};
    use tokio::sync::mpsc::error::TryRecvError;

    use super::*;

    fn spool() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("spool"), SpoolOptions::default()).unwrap();
        (dir, spool)
    }

    /// The watch, read without blocking.
    fn nonblocking(spool: &Spool) -> OwnedFd {
        watch_fd(spool.path(), CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).unwrap().0
    }

    /// Every event queued now (inotify queues an event in the system call that causes it).
    fn queued(fd: &OwnedFd) -> Seen {
        let mut buf = vec![MaybeUninit::<u8>::uninit(); EVENT_BUFFER];
        let mut seen = Seen::default();
        loop {
            match read_events(fd, &mut buf) {
                Ok(s) => {
                    seen.new_work += s.new_work;
                    seen.other += s.other;
                    seen.gone |= s.gone;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return seen,
                Err(e) => panic!("reading the watch: {e}"),
            }
        }
    }

    /// The next message on `rx`, waited for up to 20 s.
    fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Control>) -> Result<Control, TryRecvError> {
        let start = Instant::now();
        loop {
            match rx.try_recv() {
                Err(TryRecvError::Empty) if start.elapsed() < Duration::from_secs(20) => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                other => return other,
            }
        }
    }

    #[test]
    fn claims_and_acks_queue_no_event_and_a_write_does() {
        let (_dir, spool) = spool();
        for _ in 0..20 {
            spool.write(Kind::Log, b"{}").unwrap();
        }
        let fd = nonblocking(&spool);
        assert_eq!(queued(&fd), Seen::default(), "nothing happened since the watch began");
        // The renames out of ready/ of a drain: not new work, and not even an event to read.
        while let Some(claim) = spool.claim().unwrap() {
            claim.ack().unwrap();
        }
        assert_eq!(queued(&fd), Seen::default(), "claims and acks wake nobody");
        spool.write(Kind::Crash, b"{}").unwrap();
        assert_eq!(
            queued(&fd),
            Seen { new_work: 1, other: 0, gone: false },
            "a write into ready/ is new work"
        );
    }

    #[test]
    fn an_entry_put_back_is_new_work() {
        let (_dir, spool) = spool();
        spool.write(Kind::Log, b"{}").unwrap();
        let fd = nonblocking(&spool);
        let claim = spool.claim().unwrap().unwrap();
        claim.release().unwrap();
        assert_eq!(queued(&fd).new_work, 1, "another uploader may take it");
    }

    #[test]
    fn a_removed_watch_or_ready_directory_ends_the_watch() {
        let (dir, spool) = spool();
        // What the drop of a ReadyWatch does.
        let (fd, wd) = watch_fd(spool.path(), CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).unwrap();
        inotify::remove_watch(&fd, wd).unwrap();
        assert!(queued(&fd).gone);
        // The directory gone (once nothing holds it open: the spool keeps `ready/` open).
        let fd = nonblocking(&spool);
        drop(spool);
        std::fs::remove_dir(dir.path().join("spool/ready")).unwrap();
        assert!(queued(&fd).gone);
    }

    #[test]
    fn no_ready_directory_means_no_watch() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        assert!(ReadyWatch::start(dir.path(), tx).is_none(), "the rescan is the fallback");
    }

    #[test]
    fn the_watch_wakes_the_uploader_for_new_entries_and_its_drop_ends_its_thread() {
        let (_dir, spool) = spool();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watch = ReadyWatch::start(spool.path(), tx).unwrap();
        spool.write(Kind::Log, b"{}").unwrap();
        assert!(matches!(next(&mut rx), Ok(Control::Wake)), "woken by the write");
        spool.write(Kind::Log, b"{}").unwrap();
        assert!(matches!(next(&mut rx), Ok(Control::Wake)), "woken by the next write");
        drop(watch);
        // The thread held the only sender: the channel closes when it ends.
        assert!(matches!(next(&mut rx), Err(TryRecvError::Disconnected)), "the thread ended");
    }
}
