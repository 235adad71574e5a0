//! What the collector reads from a report's body: a one-line summary for people and, for crashes and
//! events, the fingerprint that groups the same crash or event together, and the scope's tags (PROTOCOL.md, "report"; STORE.md, "Fingerprints").
//!
//! The body's schema belongs to its kind; this module reads only a few fields (`fingerprint`,
//! `message`, the `function` of the top `frames`, `context.app` and `context.release`) and tolerates
//! anything else: a body that is not an object, or whose fields have other types, simply has no such
//! field.

use std::borrow::Cow;
use std::collections::BTreeMap;

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
pub struct Derived {
    /// For crashes, the group key; `None` for other kinds.
    pub fingerprint: Option<String>,
    /// The first line of the body's `message`, else (crashes) the top frame's function, else empty.
    pub summary: String,
    /// The body's `context.app`, which names the application better than the connection's `hello`
    /// (one sidecar may drain a spool shared by several applications).
    pub app: Option<String>,
    /// The body's `context.release`.
    pub release: Option<String>,
}

/// The members `keys` of the JSON object `text`, each as raw JSON text, read in one pass: every other
/// member is skipped without being built, and of a key given twice the last one counts (serde's
/// derived structs would refuse the whole body). `None` when `text` is not an object.
fn members<'a, const N: usize>(text: &'a str, keys: [&'static str; N]) -> Option<[Option<&'a RawValue>; N]> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

    struct Members<const N: usize>([&'static str; N]);

    impl<'de, const N: usize> Visitor<'de> for Members<N> {
        type Value = [Option<&'de RawValue>; N];

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = [None; N];
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                match self.0.iter().position(|k| *k == key) {
                    Some(i) => found[i] = Some(map.next_value::<&'de RawValue>()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }

    impl<'de, const N: usize> DeserializeSeed<'de> for Members<N> {
        type Value = [Option<&'de RawValue>; N];

        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    let mut de = serde_json::Deserializer::from_str(text);
    let found = Members(keys).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(found)
}

/// `raw` read as a `T`; absent when there is none or it has another type.
fn read<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Option<T> {
    raw.and_then(|raw| serde_json::from_str(raw.get()).ok())
}

/// What this module reads of a body; a field of another type than expected counts as absent.
#[derive(Default)]
struct Fields {
    fingerprint: Option<String>,
    message: Option<String>,
    /// The `function` of each of the first [`FRAMES_HASHED`] frames (`None` for a frame without one).
    functions: Vec<Option<String>>,
    /// `context.app` and `context.release`.
    app: Option<String>,
    release: Option<String>,
}

impl Fields {
    fn read(body: &str) -> Self {
        let Some([fingerprint, message, frames, context]) =
            members(body, ["fingerprint", "message", "frames", "context"])
        else {
            return Fields::default();
        };
        let frames: Vec<&RawValue> = read(frames).unwrap_or_default();
        let functions = frames
            .iter()
            .take(FRAMES_HASHED)
            .map(|frame| members(frame.get(), ["function"]).and_then(|[function]| read(function)))
            .collect();
        let [app, release] = context.and_then(|c| members(c.get(), ["app", "release"])).unwrap_or_default();
        Fields {
            fingerprint: read(fingerprint),
            message: read(message),
            functions,
            app: read(app),
            release: read(release),
        }
    }
}

fn hex_sha256(domain: &str, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    hash.update(domain.as_bytes());
    for part in parts {
        hash.update(b"\n");
        hash.update(part.as_bytes());
    }
    // 128 bits of the hash: plenty to keep distinct crashes apart, short enough to read.
    hex::encode(&hash.finalize()[..16])
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().chars().take(SUMMARY_CHARS).collect()
}

/// Reads the summary and, for a crash, the fingerprint of a body (JSON text).
pub fn digest(kind: Kind, body: &str) -> Derived {
    let fields = Fields::read(body);
    let message = fields.message;
    let (app, release) = (fields.app.filter(|a| !a.is_empty()), fields.release);
    if kind == Kind::Log {
        let summary = message.as_deref().map(first_line).unwrap_or_default();
        return Derived { fingerprint: None, summary, app, release };
    }
    let functions = fields.functions;
    if kind == Kind::Event {
        // The client's own fingerprint (the error type and its in-app frames, or the message
        // without digits: REPORT.md); for an event without one, the top functions, else the message
        // without its digits.
        let summary = message.as_deref().map(first_line).unwrap_or_default();
        let fingerprint = match fields.fingerprint.filter(|f| !f.is_empty()) {
            Some(given) => given,
            None if functions.iter().any(Option::is_some) => {
                let names: Vec<&str> = functions.iter().map(|f| f.as_deref().unwrap_or("")).collect();
                hex_sha256("event-frames", &names)
            }
            None => {
                let text: String =
                    message.as_deref().unwrap_or("").chars().filter(|c| !c.is_ascii_digit()).collect();
                hex_sha256("event-message", &[&text])
            }
        };
        return Derived { fingerprint: Some(fingerprint), summary, app, release };
    }
    let summary = match (&message, functions.iter().flatten().next()) {
        (Some(m), _) if !first_line(m).is_empty() => first_line(m),
        (_, Some(f)) => first_line(f),
        _ => String::new(),
    };
    let fingerprint = match fields.fingerprint.filter(|f| !f.is_empty()) {
        Some(given) => given,
        None if functions.iter().any(Option::is_some) => {
            let names: Vec<&str> = functions.iter().map(|f| f.as_deref().unwrap_or("")).collect();
            hex_sha256("frames", &names)
        }
        None => hex_sha256("message", &[message.as_deref().unwrap_or("")]),
    };
    Derived { fingerprint: Some(fingerprint), summary, app, release }
}

/// The most tags of one report the store keeps, and the longest key and value (in characters).
pub const TAGS_MAX: usize = 64;
/// See [`TAGS_MAX`].
pub const TAG_CHARS: usize = 200;

/// The tags of a body's scope (`scope.tags`, REPORT.md "Scope"), for the store's tag index: at most
/// [`TAGS_MAX`], keys and values cut to [`TAG_CHARS`]. A body whose scope is not of that shape has
/// none. Never panics.
pub fn tags(body: &str) -> Vec<(String, String)> {
    let cut = |s: &str| s.chars().take(TAG_CHARS).collect::<String>();
    let scope = members(body, ["scope"]).and_then(|[scope]| scope);
    // A scope that is not an object, or tags with a value that is not a string: no tags.
    let tags: Option<BTreeMap<String, String>> =
        scope.and_then(|scope| members(scope.get(), ["tags"])).and_then(|[tags]| read(tags));
    let mut tags: Vec<(String, String)> =
        tags.unwrap_or_default().iter().take(TAGS_MAX).map(|(k, v)| (cut(k), cut(v))).collect();
    tags.dedup_by(|a, b| a.0 == b.0);
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_group_by_their_own_fingerprint_else_by_the_message_without_digits() {
        let d = digest(Kind::Event, r#"{"type":"event","message":"boom","fingerprint":"5d0c2b7a9e41f3a8"}"#);
        assert_eq!((d.fingerprint.as_deref(), d.summary.as_str()), (Some("5d0c2b7a9e41f3a8"), "boom"));
        let a = digest(Kind::Event, r#"{"message":"cache 12 of 40 full"}"#);
        let b = digest(Kind::Event, r#"{"message":"cache 3 of 7 full","fingerprint":""}"#);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, digest(Kind::Event, r#"{"message":"disk full"}"#).fingerprint);
        assert_ne!(a.fingerprint, digest(Kind::Crash, r#"{"message":"cache 12 of 40 full"}"#).fingerprint);
        assert_eq!(digest(Kind::Log, r#"{"message":"m","fingerprint":"x"}"#).fingerprint, None);
    }

    #[test]
    fn the_tags_of_a_scope_are_read_and_odd_scopes_have_none() {
        let body = r#"{"type":"event","scope":{"tags":{"region":"eu","tier":"gold"},"user":{"id":"1"}}}"#;
        assert_eq!(tags(body), [("region".into(), "eu".into()), ("tier".into(), "gold".into())]);
        for odd in ["[]", "3", "{}", r#"{"scope":7}"#, r#"{"scope":{"tags":{"a":1}}}"#, "not json"] {
            assert!(tags(odd).is_empty(), "{odd}");
        }
        let long = format!(r#"{{"scope":{{"tags":{{"k":"{}"}}}}}}"#, "v".repeat(500));
        assert_eq!(tags(&long)[0].1.len(), TAG_CHARS);
    }

    #[test]
    fn of_a_key_given_twice_the_last_counts_and_nothing_else_is_lost() {
        let d = digest(
            Kind::Crash,
            r#"{"message":"first","frames":[{"function":"a"}],"message":"second","pad":{"deep":[1,{"x":"y"}]},
               "context":{"app":"old"},"context":{"app":"shop","app":"store"}}"#,
        );
        assert_eq!(d.summary, "second");
        assert_eq!(d.app.as_deref(), Some("store"));
        assert_eq!(d.fingerprint, digest(Kind::Crash, r#"{"frames":[{"function":"a"}]}"#).fingerprint);
        let body = r#"{"scope":{"tags":{"a":"1"}},"scope":{"tags":{"b":"2"},"tags":{"c":"3"}}}"#;
        assert_eq!(tags(body), [("c".into(), "3".into())]);
        // Text after the object: not a body, so none of its fields count.
        assert_eq!(digest(Kind::Log, r#"{"message":"m"} x"#).summary, "");
    }

    #[test]
    fn the_body_context_names_the_app_and_release() {
        let d =
            digest(Kind::Crash, r#"{"message":"m","context":{"app":"shop","release":"2.1","os":"linux"}}"#);
        assert_eq!((d.app.as_deref(), d.release.as_deref()), (Some("shop"), Some("2.1")));
        let d = digest(Kind::Log, r#"{"context":{"app":7}}"#);
        assert_eq!(d.app, None, "a field of another type counts as absent");
        assert_eq!(digest(Kind::Log, r#"{"context":"x"}"#).app, None);
    }

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
        for body in [
            "[]",
            r#"["fingerprint-looking","x"]"#,
            "3",
            r#"{"frames":7,"message":[1]}"#,
            r#"{"frames":[1,"x",null,[2],{"function":3}],"fingerprint":{"a":1}}"#,
            r#"{"frames":{"function":"f"},"message":null}"#,
            "{}",
        ] {
            let d = digest(Kind::Crash, body);
            assert_eq!(d, digest(Kind::Crash, "{}"), "{body}: nothing usable, so the empty message's hash");
        }
        let mixed = digest(Kind::Crash, r#"{"frames":[7,{"function":"f"},{"x":1}],"other":{"frames":[]}}"#);
        let plain = digest(Kind::Crash, r#"{"frames":[{},{"function":"f"},{}]}"#);
        assert_eq!(mixed, plain);
    }

    #[test]
    fn log_batches_have_a_summary_but_no_fingerprint() {
        let d = digest(Kind::Log, r#"{"message":"user signed up"}"#);
        assert_eq!(
            d,
            Derived { fingerprint: None, summary: "user signed up".into(), app: None, release: None }
        );
        assert_eq!(digest(Kind::Log, "[1,2]").summary, "");
    }

    proptest::proptest! {
        #[test]
        fn digest_never_panics_on_any_text(text in "\\PC{0,200}") {
            for kind in Kind::ALL {
                let _ = digest(kind, &text);
            }
        }

        #[test]
        fn digest_of_a_crash_always_has_a_fingerprint(
            message in proptest::option::of("[a-z \n]{0,40}"),
            functions in proptest::collection::vec(proptest::option::of("[a-z:_]{1,12}"), 0..8),
        ) {
            let frames: Vec<serde_json::Value> = functions
                .iter()
                .map(|f| f.as_ref().map_or(serde_json::json!({"address": 1}), |f| serde_json::json!({"function": f})))
                .collect();
            let body = serde_json::json!({"message": message, "frames": frames}).to_string();
            let d = digest(Kind::Crash, &body);
            proptest::prop_assert!(d.fingerprint.is_some_and(|f| f.len() == 32));
            proptest::prop_assert!(d.summary.chars().count() <= SUMMARY_CHARS);
        }
    }
}
