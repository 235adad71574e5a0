//! What the collector reads from a report's body: a one-line summary for people and, for crashes, the
//! fingerprint that groups the same crash together (PROTOCOL.md, "report"; STORE.md, "Fingerprints").
//!
//! The body's schema belongs to its kind; this module reads only three fields and tolerates anything
//! else: a body that is not an object, or whose fields have other types, simply has no such field.

use lastword_spool::Kind;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

/// How many frames from the top the fingerprint of a crash without one hashes.
pub const FRAMES_HASHED: usize = 5;
/// The longest summary kept, in characters.
pub const SUMMARY_CHARS: usize = 200;

/// What the collector keeps from a body besides the body itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// For crashes, the group key; `None` for other kinds.
    pub fingerprint: Option<String>,
    /// The first line of the body's `message`, else (crashes) the top frame's function, else empty.
    pub summary: String,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(default, borrow)]
    fingerprint: Option<&'a RawValue>,
    #[serde(default, borrow)]
    frames: Option<&'a RawValue>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(default)]
    function: Option<String>,
}

fn string_of(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
}

/// The function names of the first [`FRAMES_HASHED`] frames (`None` for a frame without one), or an
/// empty list when `frames` is not an array.
fn top_functions(raw: Option<&RawValue>) -> Vec<Option<String>> {
    let Some(frames) = raw.and_then(|r| serde_json::from_str::<Vec<&RawValue>>(r.get()).ok()) else {
        return Vec::new();
    };
    frames
        .iter()
        .take(FRAMES_HASHED)
        .map(|f| serde_json::from_str::<Frame>(f.get()).ok().and_then(|f| f.function))
        .collect()
}

fn hex_sha256(domain: &str, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    hash.update(domain.as_bytes());
    for part in parts {
        hash.update(b"\n");
        hash.update(part.as_bytes());
    }
    // 128 bits of the hash: plenty to keep distinct crashes apart, short enough to read.
    hash.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().chars().take(SUMMARY_CHARS).collect()
}

/// Reads the summary and, for a crash, the fingerprint of a body (JSON text).
pub fn digest(kind: Kind, body: &str) -> Digest {
    let fields = serde_json::from_str::<Fields<'_>>(body).unwrap_or(Fields {
        fingerprint: None,
        frames: None,
        message: None,
    });
    let message = string_of(fields.message);
    if kind != Kind::Crash {
        return Digest { fingerprint: None, summary: message.as_deref().map(first_line).unwrap_or_default() };
    }
    let functions = top_functions(fields.frames);
    let summary = match (&message, functions.iter().flatten().next()) {
        (Some(m), _) if !first_line(m).is_empty() => first_line(m),
        (_, Some(f)) => first_line(f),
        _ => String::new(),
    };
    let fingerprint = match string_of(fields.fingerprint).filter(|f| !f.is_empty()) {
        Some(given) => given,
        None if functions.iter().any(Option::is_some) => {
            let names: Vec<&str> = functions.iter().map(|f| f.as_deref().unwrap_or("")).collect();
            hex_sha256("frames", &names)
        }
        None => hex_sha256("message", &[message.as_deref().unwrap_or("")]),
    };
    Digest { fingerprint: Some(fingerprint), summary }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_fingerprint_is_used_as_is() {
        let d = digest(Kind::Crash, r#"{"fingerprint":"db-timeout","message":"boom\nmore"}"#);
        assert_eq!(d.fingerprint.as_deref(), Some("db-timeout"));
        assert_eq!(d.summary, "boom");
    }

    #[test]
    fn crashes_with_the_same_top_five_functions_group_together() {
        let a = r#"{"message":"a","frames":[{"function":"f1"},{"function":"f2"},{"function":"f3"},
            {"function":"f4"},{"function":"f5"},{"function":"main"}]}"#;
        let b = r#"{"message":"b","frames":[{"function":"f1"},{"function":"f2"},{"function":"f3"},
            {"function":"f4"},{"function":"f5"},{"function":"other"}]}"#;
        let c = r#"{"message":"a","frames":[{"function":"f1"},{"function":"x"}]}"#;
        let (a, b, c) = (digest(Kind::Crash, a), digest(Kind::Crash, b), digest(Kind::Crash, c));
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_eq!(a.fingerprint.as_ref().map(String::len), Some(32));
    }

    #[test]
    fn without_frames_the_message_is_hashed() {
        let a = digest(Kind::Crash, r#"{"message":"out of memory"}"#);
        let b = digest(Kind::Crash, r#"{"message":"out of memory","frames":[{"address":"0x1"}]}"#);
        let c = digest(Kind::Crash, r#"{"message":"disk full"}"#);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_eq!(b.summary, "out of memory");
    }

    #[test]
    fn odd_bodies_still_get_a_fingerprint_and_never_panic() {
        for body in ["[]", "3", r#"{"frames":7,"message":[1]}"#, r#"{"frames":[1,"x",null]}"#, "{}"] {
            let d = digest(Kind::Crash, body);
            assert!(d.fingerprint.is_some(), "{body}");
        }
    }

    #[test]
    fn other_kinds_have_a_summary_but_no_fingerprint() {
        let d = digest(Kind::Event, r#"{"message":"user signed up"}"#);
        assert_eq!(d, Digest { fingerprint: None, summary: "user signed up".into() });
        assert_eq!(digest(Kind::Log, "[1,2]").summary, "");
    }
}
