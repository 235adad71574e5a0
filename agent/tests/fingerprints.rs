//! The fingerprints and summaries the collector reads from report bodies, as fixed values. The stores
//! key crash and event groups by the fingerprint, so a change of how bodies are read must not change
//! one of them: these values were computed by the code as it was before its serde visitors were
//! replaced by derived types (and checked against an independent implementation of STORE.md's
//! "Fingerprints"), on ordinary bodies and on odd ones (repeated keys, escaped keys, fields of other
//! types, bodies that are not objects).

use lastword_collector::fingerprint::{Derived, digest};
use lastword_spool::Kind;

type Case =
    (Kind, &'static str, Option<&'static str>, &'static str, Option<&'static str>, Option<&'static str>);

/// (kind, body, fingerprint, summary, app, release).
const CASES: &[Case] = &[
    (
        Kind::Crash,
        r##"{"message":"index out of bounds: the len is 3 but the index is 7\nat src/main.rs:10","frames":[{"function":"app::parse","file":"src/parse.rs","line":12},{"function":"app::load"},{"function":"app::run"},{"function":"app::main"},{"function":"std::rt::lang_start"},{"function":"main"}],"context":{"app":"shop","release":"2.1.0","os":"linux"}}"##,
        Some("fb00ef08d121ddcfdf88f5b41edba58a"),
        "index out of bounds: the len is 3 but the index is 7",
        Some("shop"),
        Some("2.1.0"),
    ),
    (
        Kind::Crash,
        r##"{"fingerprint":"db-timeout","message":"boom\nmore","frames":[{"function":"f"}]}"##,
        Some("db-timeout"),
        "boom",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"message":"out of memory"}"##,
        Some("617fac04ef98a0e7d810f3b308fa0cdd"),
        "out of memory",
        None,
        None,
    ),
    (Kind::Crash, r##"{}"##, Some("00cf20e07aa9699f6c4f934230eeff8f"), "", None, None),
    (Kind::Crash, r##"[1,2]"##, Some("00cf20e07aa9699f6c4f934230eeff8f"), "", None, None),
    (Kind::Crash, r##""just a string""##, Some("00cf20e07aa9699f6c4f934230eeff8f"), "", None, None),
    (
        Kind::Crash,
        r##"{"frames":[7,{"function":"f"},{"x":1}],"other":{"frames":[]}}"##,
        Some("07f3d51afcaf260a4af0691e8dccfcdb"),
        "f",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"frames":[{"function":3},null,[1]],"message":"only odd frames"}"##,
        Some("caee76de9a343337945227ed40dba67b"),
        "only odd frames",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"message":"first","message":"second"}"##,
        Some("1a8d912c2b0284807b8bdd1485ab74e9"),
        "second",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"mess\u0061ge":"escaped key","fr\u0061mes":[{"function":"esc"}]}"##,
        Some("2fd0d9a9814e614ec3e7743994138db3"),
        "escaped key",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"frames":[{"function":"a"}],"frames":[{"function":"b"}]}"##,
        Some("1941a7a752f0fd09b52731a14b0e4a6d"),
        "b",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"frames":[{"function":"a","function":"b"}]}"##,
        Some("1941a7a752f0fd09b52731a14b0e4a6d"),
        "b",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"message":"","frames":[{"address":"0x1"},{"function":"top::fn\nsecond line"}]}"##,
        Some("74355cc8370b2cd694ee45d41a82c4f8"),
        "top::fn",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"message":"   \n","frames":[]}"##,
        Some("173a9b357c456d9aa3568f1f3ede66c6"),
        "",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"fingerprint":"","message":"empty fingerprint"}"##,
        Some("5001502c3190df45483d2e940e06fb02"),
        "empty fingerprint",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"fingerprint":{"a":1},"message":null}"##,
        Some("00cf20e07aa9699f6c4f934230eeff8f"),
        "",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"extra":{"a":[[[{"b":1}]]],"message":"not this"},"message":"deep","context":{"app":"","release":""}}"##,
        Some("64b16f0302cb094172559fe5dd61e55f"),
        "deep",
        None,
        Some(""),
    ),
    (
        Kind::Crash,
        r##"{"message":"ünïcödé ☃ crash\r\nline two","context":{"app":"a1","app":"a2","release":7}}"##,
        Some("fa366a698fc830b9b6bdcdcd2ebc19b2"),
        "ünïcödé ☃ crash",
        Some("a2"),
        None,
    ),
    (
        Kind::Crash,
        r##"{"message":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"##,
        Some("b77dda031c0929aa89d1234aa0da39df"),
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        None,
        None,
    ),
    (
        Kind::Crash,
        r##"{"context":"not an object","message":"ctx"}"##,
        Some("ea2d39a63aded6c4a749e941e8d7609b"),
        "ctx",
        None,
        None,
    ),
    (
        Kind::Event,
        r##"{"type":"event","message":"boom","fingerprint":"5d0c2b7a9e41f3a8"}"##,
        Some("5d0c2b7a9e41f3a8"),
        "boom",
        None,
        None,
    ),
    (
        Kind::Event,
        r##"{"message":"cache 12 of 40 full"}"##,
        Some("8faf9efeae888b3ff24751d92e996f0a"),
        "cache 12 of 40 full",
        None,
        None,
    ),
    (
        Kind::Event,
        r##"{"message":"cache 3 of 7 full","fingerprint":""}"##,
        Some("8faf9efeae888b3ff24751d92e996f0a"),
        "cache 3 of 7 full",
        None,
        None,
    ),
    (
        Kind::Event,
        r##"{"message":"with frames","frames":[{"function":"e1"},{"function":"e2"}]}"##,
        Some("ddbaf4aae889aaab4f2cb7e4dbc61b4c"),
        "with frames",
        None,
        None,
    ),
    (
        Kind::Event,
        r##"{"frames":[{"nofn":1}],"message":"frames without functions 42"}"##,
        Some("c76ffaf3643c58b61e0089f7ba668e8a"),
        "frames without functions 42",
        None,
        None,
    ),
    (Kind::Event, r##"[]"##, Some("e00dd7e7b310092d12326fcdef0e04cc"), "", None, None),
    (
        Kind::Event,
        r##"{"message":7,"context":{"app":"svc","release":"9"}}"##,
        Some("e00dd7e7b310092d12326fcdef0e04cc"),
        "",
        Some("svc"),
        Some("9"),
    ),
    (
        Kind::Log,
        r##"{"message":"user signed up","fingerprint":"ignored"}"##,
        None,
        "user signed up",
        None,
        None,
    ),
    (
        Kind::Log,
        r##"{"records":[{"message":"x"}],"context":{"app":"logger"}}"##,
        None,
        "",
        Some("logger"),
        None,
    ),
    (Kind::Log, r##"[1,2]"##, None, "", None, None),
];

#[test]
fn fingerprints_and_summaries_are_those_computed_before_the_derived_reader() {
    let mut wrong = Vec::new();
    for &(kind, body, fingerprint, summary, app, release) in CASES {
        let expected = Derived {
            fingerprint: fingerprint.map(str::to_owned),
            summary: summary.to_owned(),
            app: app.map(str::to_owned),
            release: release.map(str::to_owned),
        };
        let got = digest(kind, body);
        if got != expected {
            wrong.push(format!("{kind:?} {body}\n  expected {expected:?}\n  got      {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} changed:\n{}", wrong.len(), CASES.len(), wrong.join("\n"));
}
