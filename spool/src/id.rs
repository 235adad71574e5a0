//! Entry ids: 128-bit, time-ordered, unique without coordination between processes.
//!
//! The layout is the ULID one: 48 bits of milliseconds since the Unix epoch, then 80 bits that are
//! random per process and advanced by a per-process counter. The text form is 26 characters of
//! Crockford base32 and sorts like the number.
//!
//! The generator's state belongs to one process: a child made by `fork()` starts from fresh random
//! bits of its own instead of going on from the copy of its parent's state (which would hand out the
//! parent's next ids), and does not wait for a lock that a thread of the parent held when it forked.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of an id's text form.
pub const ID_TEXT_LEN: usize = 26;
const RANDOM_BITS: u32 = 80;
const RANDOM_MASK: u128 = (1u128 << RANDOM_BITS) - 1;

/// The id of a spool entry (and of a spool session).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(u128);

/// Why a text is not an entry id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an entry id ({reason}): {text:?}")]
pub struct ParseIdError {
    /// The text that was given, cut to 64 characters.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl EntryId {
    /// A new id, greater than every id made before it in this process.
    pub fn generate() -> Self {
        let me = std::process::id();
        let _held = LAST.lock(me);
        // Another process's state (this one is a forked child): start afresh.
        let (last_ms, last_random) = if LAST.pid.load(Ordering::Relaxed) == me {
            let random = (u128::from(LAST.hi.load(Ordering::Relaxed)) << 64)
                | u128::from(LAST.lo.load(Ordering::Relaxed));
            (LAST.millis.load(Ordering::Relaxed), random)
        } else {
            (0, 0)
        };
        let now = now_millis();
        let (ms, random) = if now > last_ms {
            (now, fresh_random())
        } else if last_random < RANDOM_MASK {
            (last_ms, last_random + 1)
        } else {
            (last_ms + 1, fresh_random())
        };
        LAST.millis.store(ms, Ordering::Relaxed);
        LAST.hi.store((random >> 64) as u64, Ordering::Relaxed);
        LAST.lo.store(random as u64, Ordering::Relaxed);
        LAST.pid.store(me, Ordering::Relaxed);
        Self::from_parts(ms, random)
    }

    /// The id made of a millisecond timestamp (48 bits kept) and 80 random bits.
    pub const fn from_parts(millis: u64, random: u128) -> Self {
        Self((((millis as u128) & 0xFFFF_FFFF_FFFF) << RANDOM_BITS) | (random & RANDOM_MASK))
    }

    /// The id as a number.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The id of a number.
    pub const fn from_u128(value: u128) -> Self {
        Self(value)
    }

    /// Milliseconds since the Unix epoch when the id was made.
    pub const fn millis(self) -> u64 {
        (self.0 >> RANDOM_BITS) as u64
    }

    /// The 80 bits after the timestamp.
    pub const fn random(self) -> u128 {
        self.0 & RANDOM_MASK
    }

    /// Writes the 26-character text form into `out`.
    ///
    /// Async-signal-safe: arithmetic on the given buffer only.
    pub fn encode(self, out: &mut [u8; ID_TEXT_LEN]) {
        let mut value = self.0;
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(value & 31) as usize];
            value >>= 5;
        }
    }

    /// Parses the 26-character text form (upper or lower case).
    pub fn parse(text: &str) -> Result<Self, ParseIdError> {
        let fail = |reason| ParseIdError { text: text.chars().take(64).collect(), reason };
        let bytes = text.as_bytes();
        if bytes.len() != ID_TEXT_LEN {
            return Err(fail("length is not 26"));
        }
        // 26 * 5 = 130 bits: the first character carries only the top 3 bits.
        if decode_char(bytes[0]).is_none_or(|v| v > 7) {
            return Err(fail("first character out of range"));
        }
        let mut value: u128 = 0;
        for &b in bytes {
            let digit = decode_char(b).ok_or_else(|| fail("character outside Crockford base32"))?;
            value = (value << 5) | u128::from(digit);
        }
        Ok(Self(value))
    }
}

/// The generator's last id and the process it belongs to, under a lock that names its holder's pid.
struct Last {
    /// 0 when free, else the pid of the process whose thread holds it.
    lock: AtomicU32,
    /// The process whose ids `millis`, `hi` and `lo` are.
    pid: AtomicU32,
    millis: AtomicU64,
    hi: AtomicU64,
    lo: AtomicU64,
}

static LAST: Last = Last {
    lock: AtomicU32::new(0),
    pid: AtomicU32::new(0),
    millis: AtomicU64::new(0),
    hi: AtomicU64::new(0),
    lo: AtomicU64::new(0),
};

/// Holds a [`Last`]'s lock; gives it back when dropped.
struct Held<'a>(&'a AtomicU32);

impl Last {
    /// Takes the lock for the process `me`. A lock held under another pid was taken by a thread of
    /// the parent before this process was forked from it: that thread does not exist here and will
    /// never give it back, so it is taken over.
    fn lock(&self, me: u32) -> Held<'_> {
        loop {
            match self.lock.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Held(&self.lock),
                Err(holder) if holder != 0 && holder != me => {
                    if self.lock.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                        return Held(&self.lock);
                    }
                }
                Err(_) => std::thread::yield_now(),
            }
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

fn decode_char(b: u8) -> Option<u8> {
    let upper = b.to_ascii_uppercase();
    ALPHABET.iter().position(|&a| a == upper).and_then(|p| u8::try_from(p).ok())
}

/// Milliseconds since the Unix epoch, 0 if the clock is before it.
pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// 80 random bits from the OS. If the OS has none to give (it always has on Linux), fall back to
/// bits derived from the time and the pid, which still differ between processes.
pub(crate) fn fresh_random() -> u128 {
    let mut buf = [0u8; 16];
    if getrandom::fill(&mut buf[6..]).is_err() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        return (nanos ^ (u128::from(std::process::id()) << 64)) & RANDOM_MASK;
    }
    u128::from_be_bytes(buf) & RANDOM_MASK
}

/// 80 random bits, from a signal handler: the `getrandom` system call itself (async-signal-safe:
/// no lazy initialisation, no file, no lock), non-blocking; if the kernel has none to give, bits
/// derived from the pid, the thread id and both clocks, which still differ between processes.
pub(crate) fn signal_safe_random() -> u128 {
    use rustix::rand::{GetRandomFlags, getrandom};
    use rustix::time::{ClockId, clock_gettime};
    let mut buf = [0u8; 16];
    if matches!(getrandom(&mut buf[6..], GetRandomFlags::NONBLOCK), Ok(10)) {
        return u128::from_be_bytes(buf) & RANDOM_MASK;
    }
    let (mono, real) = (clock_gettime(ClockId::Monotonic), clock_gettime(ClockId::Realtime));
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u128;
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u128;
    let nanos = |t: rustix::time::Timespec| (t.tv_sec as u128) * 1_000_000_000 + t.tv_nsec as u128;
    (nanos(mono) ^ (nanos(real) << 17) ^ (pid << 48) ^ (tid << 64)) & RANDOM_MASK
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ID_TEXT_LEN];
        self.encode(&mut buf);
        // The alphabet is ASCII, so this is always valid UTF-8.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({self})")
    }
}

impl FromStr for EntryId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for EntryId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EntryId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_increase_strictly_in_one_process() {
        let mut last = EntryId::generate();
        for _ in 0..10_000 {
            let next = EntryId::generate();
            assert!(next > last, "{next} not after {last}");
            last = next;
        }
    }

    #[test]
    fn a_lock_held_under_another_pid_is_taken_over_and_given_back() {
        let last = Last {
            lock: AtomicU32::new(1),
            pid: AtomicU32::new(0),
            millis: AtomicU64::new(0),
            hi: AtomicU64::new(0),
            lo: AtomicU64::new(0),
        };
        // As in a forked child: the parent's thread that held the lock does not exist here.
        let held = last.lock(2);
        assert_eq!(last.lock.load(Ordering::SeqCst), 2);
        drop(held);
        assert_eq!(last.lock.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn signal_safe_random_bits_differ_between_calls() {
        let (a, b) = (signal_safe_random(), signal_safe_random());
        assert_ne!(a, b);
        assert_eq!(a & !RANDOM_MASK, 0);
    }

    #[test]
    fn text_form_sorts_like_the_number() {
        let a = EntryId::from_parts(1, 5);
        let b = EntryId::from_parts(2, 0);
        assert!(a.to_string() < b.to_string());
        assert_eq!(EntryId::from_u128(0).to_string(), "00000000000000000000000000");
        assert_eq!(EntryId::from_u128(u128::MAX).to_string(), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
    }

    #[test]
    fn parse_rejects_bad_text_with_a_reason() {
        assert_eq!(EntryId::parse("abc").unwrap_err().reason, "length is not 26");
        assert!(EntryId::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ").is_err(), "131st bit set");
        assert!(EntryId::parse("0000000000000000000000000U").is_err(), "U is not Crockford");
    }

    proptest! {
        #[test]
        fn text_round_trips(value: u128) {
            let id = EntryId::from_u128(value);
            prop_assert_eq!(EntryId::parse(&id.to_string()).ok(), Some(id));
            prop_assert_eq!(EntryId::parse(&id.to_string().to_lowercase()).ok(), Some(id));
        }

        #[test]
        fn order_of_text_is_order_of_ids(a: u128, b: u128) {
            let (x, y) = (EntryId::from_u128(a), EntryId::from_u128(b));
            prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
        }
    }
}
