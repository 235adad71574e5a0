//! The breadcrumbs of a fatal-signal report: the last log records, kept in a fixed ring of atomic words
//! that the log path writes and the signal handler reads without a lock and without allocating.
//!
//! Each slot is a sequence lock: its counter is odd while a record is written into it, and a reader
//! keeps a slot only if the counter was even and unchanged around its copy. A slot being written when
//! the signal arrives (by another thread, or by the crashing thread itself) is skipped, never waited
//! for. Two writers that meet on one slot (the ring wrapped around under a burst of records) do not
//! wait either: the second drops its record from this ring (it is still in the panic path's ring and
//! in the log batches). All of it is atomics: no `unsafe`, no data race.
//!
//! Target and message are cut to [`TARGET_MAX`] and [`MESSAGE_MAX`] bytes at a character boundary.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use super::write::Writer;

/// How many records the ring keeps.
pub(crate) const SLOTS: usize = 16;
/// Longest target kept, in bytes.
pub(crate) const TARGET_MAX: usize = 64;
/// Longest message kept, in bytes.
pub(crate) const MESSAGE_MAX: usize = 256;
const DATA_WORDS: usize = (TARGET_MAX + MESSAGE_MAX) / 8;
/// The longest `crumb` line: every byte escaped as `\u00XX`, plus the keys.
pub(crate) const LINE_MAX: usize = (TARGET_MAX + MESSAGE_MAX) * 6 + 96;

struct Slot {
    /// 0: never written; odd: being written; even: stable.
    seq: AtomicU64,
    ts_ms: AtomicU64,
    /// level code (bits 32..40), target length (bits 16..32), message length (bits 0..16).
    meta: AtomicU64,
    /// Target bytes then message bytes, little-endian in words.
    data: [AtomicU64; DATA_WORDS],
}

impl Slot {
    const fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            ts_ms: AtomicU64::new(0),
            meta: AtomicU64::new(0),
            data: [const { AtomicU64::new(0) }; DATA_WORDS],
        }
    }
}

/// An atomic counter alone on its cache line.
#[repr(align(64))]
struct Padded(AtomicU64);

/// The ring of one process: the log path pushes into it, the signal handler reads it.
pub(crate) static RING: Ring = Ring::new();

/// A ring of [`SLOTS`] records.
pub(crate) struct Ring {
    slots: [Slot; SLOTS],
    /// How many records were ever pushed: the next one goes to slot `head % SLOTS`. On a cache line
    /// of its own: every log call of every thread increments it.
    head: Padded,
    /// Off until `enable`: with breadcrumbs turned off (`Config::breadcrumbs(0)`) nothing is kept.
    enabled: AtomicBool,
}

/// The level names, by code.
const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Ring {
    const fn new() -> Self {
        Self {
            slots: [const { Slot::new() }; SLOTS],
            head: Padded(AtomicU64::new(0)),
            enabled: AtomicBool::new(false),
        }
    }

    /// Starts keeping records (at init, when breadcrumbs are on).
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    /// Keeps a record for the signal handler. Never waits. `level` is an index of `LEVELS`
    /// (`ERROR` = 0 … `TRACE` = 4).
    pub(crate) fn push(&self, ts_ms: u64, level: u8, target: &str, message: &str) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let target = cut(target, TARGET_MAX).as_bytes();
        let message = cut(message, MESSAGE_MAX).as_bytes();
        let index = (self.head.0.fetch_add(1, Ordering::Relaxed) % SLOTS as u64) as usize;
        let Some(slot) = self.slots.get(index) else { return };
        let seq = slot.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || slot.seq.compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            return; // another writer has this slot now
        }
        // A reader that sees any of the stores below also sees the odd counter in its second look.
        fence(Ordering::Release);
        slot.ts_ms.store(ts_ms, Ordering::Relaxed);
        let meta = (u64::from(level) << 32) | ((target.len() as u64) << 16) | message.len() as u64;
        slot.meta.store(meta, Ordering::Relaxed);
        let mut bytes = [0u8; DATA_WORDS * 8];
        bytes[..target.len()].copy_from_slice(target);
        bytes[target.len()..target.len() + message.len()].copy_from_slice(message);
        let used = (target.len() + message.len()).div_ceil(8);
        for (word, chunk) in slot.data.iter().zip(bytes.chunks_exact(8)).take(used) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
        slot.seq.store(seq + 2, Ordering::Release);
    }

    /// Writes one `crumb {json}` line per stable slot, oldest first, into `out`; a line that would not
    /// fit whole is left out. **Async-signal-safe**: atomic loads, copies into `line` (the caller's
    /// buffer, `LINE_MAX` bytes), UTF-8 checks and formatting into fixed buffers.
    pub(super) fn write_lines(&self, out: &mut Writer<'_>, line: &mut [u8; LINE_MAX]) {
        let head = self.head.0.load(Ordering::Acquire);
        for n in head.saturating_sub(SLOTS as u64)..head {
            let Some(slot) = self.slots.get((n % SLOTS as u64) as usize) else { continue };
            let mut data = [0u8; DATA_WORDS * 8];
            let Some((ts_ms, level, target_len, message_len)) = read(slot, &mut data) else { continue };
            let (Some(target), Some(message)) =
                (data.get(..target_len), data.get(target_len..target_len + message_len))
            else {
                continue;
            };
            let (Ok(target), Ok(message)) = (std::str::from_utf8(target), std::str::from_utf8(message))
            else {
                continue;
            };
            let mut w = Writer::new(line);
            w.str("crumb {\"ts_ms\":").int(i64::try_from(ts_ms).unwrap_or(i64::MAX)).str(",\"level\":\"");
            w.str(LEVELS.get(usize::from(level)).copied().unwrap_or("INFO")).str("\",\"target\":");
            w.json_str(target).str(",\"message\":").json_str(message).str("}\n");
            if !w.cut_off() {
                out.whole(w.written());
            }
        }
    }
}

/// Copies a stable slot: (ts_ms, level, target length, message length), with the bytes in `data`.
/// **Async-signal-safe.**
fn read(slot: &Slot, data: &mut [u8; DATA_WORDS * 8]) -> Option<(u64, u8, usize, usize)> {
    let before = slot.seq.load(Ordering::Acquire);
    if before == 0 || before & 1 == 1 {
        return None;
    }
    let ts_ms = slot.ts_ms.load(Ordering::Relaxed);
    let meta = slot.meta.load(Ordering::Relaxed);
    for (word, chunk) in slot.data.iter().zip(data.chunks_exact_mut(8)) {
        chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    fence(Ordering::Acquire);
    if slot.seq.load(Ordering::Relaxed) != before {
        return None; // overwritten while we copied
    }
    let target_len = ((meta >> 16) & 0xffff) as usize;
    let message_len = (meta & 0xffff) as usize;
    (target_len <= TARGET_MAX && message_len <= MESSAGE_MAX).then_some((
        ts_ms,
        ((meta >> 32) & 0xff) as u8,
        target_len,
        message_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_records_come_back_as_json_lines_oldest_first_cut_at_char_boundaries() {
        let ring = Ring::new();
        let push = |ts, level, target: &str, message: &str| ring.push(ts, level, target, message);
        let lines = || {
            let mut out_buf = vec![0u8; SLOTS * LINE_MAX];
            let mut out = Writer::new(&mut out_buf);
            let mut line = [0u8; LINE_MAX];
            ring.write_lines(&mut out, &mut line);
            String::from_utf8(out.written().to_vec()).unwrap()
        };
        // Off until enabled.
        push(1, 0, "t", "before enable");
        assert_eq!(lines(), "");
        ring.enable();
        push(1_764_000_000_000, 1, "shop::db", "slow \"query\"\n\t<b>\u{1}");
        let text = lines();
        let line = text.strip_prefix("crumb ").unwrap().strip_suffix('\n').unwrap();
        let crumb: crate::report::Breadcrumb = serde_json::from_str(line).unwrap();
        assert_eq!(crumb.ts_ms, 1_764_000_000_000);
        assert_eq!((crumb.level.as_str(), crumb.target.as_str()), ("WARN", "shop::db"));
        assert_eq!(crumb.message, "slow \"query\"\n\t<b>\u{1}");

        // Wrap around: the last SLOTS records, oldest first.
        for i in 0..40u64 {
            push(i, 2, "t", &format!("record {i}"));
        }
        let messages: Vec<String> = lines()
            .lines()
            .map(|l| serde_json::from_str::<crate::report::Breadcrumb>(&l["crumb ".len()..]).unwrap().message)
            .collect();
        let expected: Vec<String> = (40 - SLOTS as u64..40).map(|i| format!("record {i}")).collect();
        assert_eq!(messages, expected);

        // Long texts are cut at a character boundary (é is two bytes).
        push(7, 4, &"x".repeat(100), &"é".repeat(200));
        let last = lines().lines().last().unwrap().to_owned();
        let crumb: crate::report::Breadcrumb = serde_json::from_str(&last["crumb ".len()..]).unwrap();
        assert_eq!(crumb.target.len(), TARGET_MAX);
        assert_eq!(crumb.message, "é".repeat(MESSAGE_MAX / 2));
        assert_eq!(crumb.level, "TRACE");
    }

    #[test]
    fn a_slot_being_written_is_skipped() {
        let slot = Slot::new();
        let mut data = [0u8; DATA_WORDS * 8];
        assert!(read(&slot, &mut data).is_none(), "never written");
        slot.seq.store(3, Ordering::SeqCst);
        assert!(read(&slot, &mut data).is_none(), "being written");
        slot.meta.store(2, Ordering::SeqCst);
        slot.seq.store(4, Ordering::SeqCst);
        assert_eq!(read(&slot, &mut data), Some((0, 0, 0, 2)));
        slot.meta.store(u64::from(u16::MAX), Ordering::SeqCst);
        assert!(read(&slot, &mut data).is_none(), "lengths beyond the slot are refused");
    }
}
