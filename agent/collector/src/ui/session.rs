//! Logins of the web UI: random session ids kept in memory with an expiry, the token compared in
//! constant time, and a per-address limit on wrong passwords.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Sessions kept at most; past it the oldest are forgotten first (their people log in again).
const MAX_SESSIONS: usize = 10_000;
/// Addresses whose failures are remembered at most; past it, the oldest windows are dropped.
const MAX_ADDRESSES: usize = 10_000;

/// Whether `given` is `token`, in constant time and without telling its length: both are hashed to
/// one length first.
pub(super) fn token_matches(given: &str, token: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let token = Sha256::digest(token.as_bytes());
    bool::from(given[..].ct_eq(&token[..]))
}

/// The logins in progress: session id (32 random bytes, hex) → when it expires. Kept in memory
/// only: a restart of the collector logs everyone out.
pub(super) struct Sessions {
    ttl: Duration,
    live: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    pub(super) fn new(ttl: Duration) -> Self {
        Self { ttl, live: Mutex::new(HashMap::new()) }
    }

    /// How long a session lasts.
    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session id, or `None` when the system has no randomness to give.
    pub(super) fn open(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut bytes) {
            tracing::error!("web UI: no random bytes for a session id: {e}");
            return None;
        }
        let id = hex::encode(bytes);
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if live.len() >= MAX_SESSIONS {
            live.retain(|_, expiry| *expiry > now);
        }
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(id, _)| id.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), now + self.ttl);
        Some(id)
    }

    /// Whether `id` is a live session (an expired one is forgotten).
    pub(super) fn valid(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match live.get(id) {
            Some(expiry) if *expiry > now => true,
            Some(_) => {
                live.remove(id);
                false
            }
            None => false,
        }
    }

    /// Ends the session `id`.
    pub(super) fn close(&self, id: &str) {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
    }
}

/// Wrong passwords per client address: after `max` failures within `window` (counted from the
/// first), every password from that address, right or wrong, is refused until the window ends.
pub(super) struct Throttle {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    pub(super) fn new(max: u32, window: Duration) -> Self {
        Self { max, window, failures: Mutex::new(HashMap::new()) }
    }

    /// Whether `addr` may try a password now.
    pub(super) fn allows(&self, addr: IpAddr) -> bool {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match failures.get(&addr) {
            Some((start, _)) if now.duration_since(*start) >= self.window => {
                failures.remove(&addr);
                true
            }
            Some((_, count)) => *count < self.max,
            None => true,
        }
    }

    /// Counts a wrong password from `addr`.
    pub(super) fn failed(&self, addr: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&addr) {
            let window = self.window;
            failures.retain(|_, (start, _)| now.duration_since(*start) < window);
            if failures.len() >= MAX_ADDRESSES
                && let Some(oldest) = failures.iter().min_by_key(|(_, (s, _))| *s).map(|(a, _)| *a)
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(addr).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_themselves() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3cret ", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn a_session_lives_until_closed_or_expired() {
        let sessions = Sessions::new(Duration::from_secs(2));
        let a = sessions.open().expect("an id");
        let b = sessions.open().expect("an id");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(sessions.valid(&a) && sessions.valid(&b));
        sessions.close(&a);
        assert!(!sessions.valid(&a) && sessions.valid(&b));
        std::thread::sleep(Duration::from_millis(2200));
        assert!(!sessions.valid(&b), "expired");
    }
}
