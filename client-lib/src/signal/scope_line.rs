//! The process-wide scope for fatal-signal reports: its `scope {json}` line, formatted when the
//! scope changes ([`crate::configure_scope`]) and kept in atomic words that the signal handler reads
//! without a lock and without allocating.
//!
//! Two buffers, each a sequence lock: a change is written into the buffer not in use (its counter
//! odd meanwhile), then that buffer is made the current one. A reader copies the current buffer and
//! keeps the copy only if its counter was even and unchanged around it; if two changes overtook it,
//! it tries again a few times, then leaves the line out. It never waits. Writers take a lock among
//! themselves (they are never in a signal handler). All of it is atomics: no `unsafe`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

use crate::report::Scope;

/// The longest line kept, in bytes, `scope ` and the newline included. A longer scope keeps its
/// tags alone, or, longer still, is left out of fatal-signal reports.
pub(crate) const SCOPE_MAX: usize = 4096;
const WORDS: usize = SCOPE_MAX / 8;

struct Buffer {
    /// Odd while being written.
    seq: AtomicU64,
    len: AtomicUsize,
    data: [AtomicU64; WORDS],
}

impl Buffer {
    const fn new() -> Self {
        Self { seq: AtomicU64::new(0), len: AtomicUsize::new(0), data: [const { AtomicU64::new(0) }; WORDS] }
    }
}

/// The line of one process.
pub(crate) static LINE: ScopeLine = ScopeLine::new();

/// See the module's doc.
pub(crate) struct ScopeLine {
    buffers: [Buffer; 2],
    current: AtomicUsize,
    writer: Mutex<()>,
}

impl ScopeLine {
    const fn new() -> Self {
        Self { buffers: [Buffer::new(), Buffer::new()], current: AtomicUsize::new(0), writer: Mutex::new(()) }
    }

    /// Formats `scope` and makes it the line that fatal-signal reports carry. Not for a signal
    /// handler (it allocates and locks).
    pub(crate) fn publish(&self, scope: &Scope) {
        let line = |scope: &Scope| -> Option<Vec<u8>> {
            let mut line = b"scope ".to_vec();
            serde_json::to_writer(&mut line, scope).ok()?;
            line.push(b'\n');
            (line.len() <= SCOPE_MAX).then_some(line)
        };
        let tags_only = || Scope { tags: scope.tags.clone(), ..Scope::default() };
        let bytes =
            if scope.is_empty() { Some(Vec::new()) } else { line(scope).or_else(|| line(&tags_only())) };
        let bytes = bytes.unwrap_or_default();
        let _held = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let target = 1 - self.current.load(Ordering::Relaxed);
        let Some(buffer) = self.buffers.get(target) else { return };
        let seq = buffer.seq.load(Ordering::Relaxed);
        buffer.seq.store(seq + 1, Ordering::Relaxed);
        // A reader that sees any store below also sees the odd counter in its second look.
        fence(Ordering::Release);
        for (word, chunk) in buffer.data.iter().zip(bytes.chunks(8)) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
        buffer.len.store(bytes.len(), Ordering::Relaxed);
        buffer.seq.store(seq + 2, Ordering::Release);
        self.current.store(target, Ordering::Release);
    }

    /// Copies the current line into `out`; returns its length (0 when there is none, or it changed
    /// too often while being read). **Async-signal-safe**: atomic loads and copies into the
    /// caller's buffer only.
    pub(crate) fn read(&self, out: &mut [u8; SCOPE_MAX]) -> usize {
        for _ in 0..4 {
            let Some(buffer) = self.buffers.get(self.current.load(Ordering::Acquire)) else { return 0 };
            let before = buffer.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                continue;
            }
            let len = buffer.len.load(Ordering::Relaxed);
            for (word, chunk) in buffer.data.iter().zip(out.chunks_exact_mut(8)) {
                chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            }
            fence(Ordering::Acquire);
            if buffer.seq.load(Ordering::Relaxed) == before && len <= SCOPE_MAX {
                return len;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(line: &ScopeLine) -> String {
        let mut out = [0u8; SCOPE_MAX];
        let len = line.read(&mut out);
        String::from_utf8(out[..len].to_vec()).unwrap()
    }

    #[test]
    fn the_last_published_scope_reads_back_as_one_line_and_a_long_one_keeps_its_tags() {
        let line = ScopeLine::new();
        assert_eq!(read(&line), "", "nothing set: no line");
        let mut scope = Scope::default();
        scope.set_tag("region", "eu \"west\"\n");
        line.publish(&scope);
        scope.set_tag("tier", "gold");
        line.publish(&scope);
        let text = read(&line);
        let json = text.strip_prefix("scope ").unwrap().strip_suffix('\n').unwrap();
        assert!(!json.contains('\n'));
        let back: Scope = serde_json::from_str(json).unwrap();
        assert_eq!(back, scope);
        scope.set_extra("blob", "x".repeat(SCOPE_MAX));
        line.publish(&scope);
        let back: Scope =
            serde_json::from_str(read(&line).strip_prefix("scope ").unwrap().trim_end()).unwrap();
        assert_eq!((back.tags.len(), back.extra.len()), (2, 0), "the tags alone");
    }

    #[test]
    fn a_buffer_being_written_is_not_read() {
        let line = ScopeLine::new();
        let mut scope = Scope::default();
        scope.set_tag("a", "b");
        line.publish(&scope);
        let current = line.current.load(Ordering::SeqCst);
        line.buffers[current].seq.fetch_add(1, Ordering::SeqCst);
        assert_eq!(read(&line), "", "odd counter: left out, not waited for");
    }
}
