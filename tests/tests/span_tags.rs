//! `tracing` span fields as scope tags, end to end: the event app (a real process) makes events, a
//! log record and a panic inside nested spans with `Layer::span_fields_as_tags(true)`; they go
//! through its spool and its own uploader to a collector, and each carries the fields of the spans
//! it was made in (and of their parents) as tags, and nothing of the spans it was not in.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};
use serde_json::Value;

const APP: &str = env!("CARGO_BIN_EXE_lastword-event-app");

/// The scope tags of a stored body.
fn tags(body: &Value) -> BTreeMap<String, String> {
    body.pointer("/scope/tags")
        .and_then(Value::as_object)
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect())
        .unwrap_or_default()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Runs the event app's `tracing-spans` case with `env` against a collector that accepts all;
/// returns its spool's directory and the collector, once the app exited 0.
fn run_spans_case(env: &[(&str, &str)]) -> (tempfile::TempDir, TestCollector) {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(Behaviour::Accept);
    let out = Command::new(APP)
        .arg("tracing-spans")
        .envs(env.iter().copied())
        .env("LASTWORD_SPOOL", dir.path().join("spool"))
        .env("LASTWORD_URL", collector.url())
        .env("LASTWORD_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (dir, collector)
}

#[test]
fn events_logs_and_a_panic_made_in_spans_carry_the_spans_fields_as_tags() {
    let (_dir, collector) = run_spans_case(&[]);
    // The guard's drop delivered: four events, the panic and the log batches.
    collector.wait_for(Duration::from_secs(30), "the events, the panic and the logs", |r| {
        let bodies: String = r.bodies.values().cloned().collect();
        ["lookup failed", "inside db", "inside request", "outside the spans", "boom in a span"]
            .iter()
            .all(|m| bodies.contains(m))
            && bodies.contains("a log record inside db")
    });
    let record = collector.record.lock().unwrap();
    let bodies: Vec<Value> = record.bodies.values().map(|b| serde_json::from_str(b).unwrap()).collect();
    let of_type = |kind: &str, message: &str| {
        let found: Vec<&Value> =
            bodies.iter().filter(|b| b["type"] == kind && b["message"] == message).collect();
        assert_eq!(found.len(), 1, "one {kind} {message:?} in {bodies:#?}");
        found[0]
    };

    // Inside request{request_id, attempt=2} > db{table, attempt=3}: both spans' fields, the inner
    // span's own winning on a shared name, beside the process-wide tag.
    let both = map(&[("region", "eu-west-1"), ("request_id", "r-7"), ("attempt", "3"), ("table", "orders")]);
    let traced = of_type("event", "lookup failed");
    assert_eq!(tags(traced), both, "the tracing error's event");
    assert_eq!(traced["error"]["chain"][0]["message"], "invalid digit found in string");
    assert_eq!(tags(of_type("event", "inside db")), both, "capture_message inside both spans");
    // Inside request only: db's fields are gone.
    let request = map(&[("region", "eu-west-1"), ("request_id", "r-7"), ("attempt", "2")]);
    assert_eq!(tags(of_type("event", "inside request")), request);
    // Outside every span: the process-wide scope alone.
    assert_eq!(tags(of_type("event", "outside the spans")), map(&[("region", "eu-west-1")]));

    // A panic in a span entered on another thread, whose parent was not entered there: the span's
    // fields and its parent's.
    let panic = of_type("panic", "boom in a span");
    assert_eq!(
        tags(panic),
        map(&[("region", "eu-west-1"), ("request_id", "r-7"), ("attempt", "2"), ("job", "export")]),
        "{panic:#}"
    );

    // The log record made inside db is in a batch with db's scope.
    let batch = bodies
        .iter()
        .find(|b| {
            b["type"] == "logs"
                && b["records"].as_array().unwrap().iter().any(|r| r["message"] == "a log record inside db")
        })
        .unwrap();
    assert_eq!(tags(batch), both, "{batch:#}");
}

#[test]
fn without_the_option_spans_add_no_tags() {
    let (_dir, collector) = run_spans_case(&[("EVENT_APP_NO_SPAN_TAGS", "1")]);
    collector.wait_for(Duration::from_secs(30), "the events and the panic", |r| {
        let bodies: String = r.bodies.values().cloned().collect();
        ["inside db", "boom in a span"].iter().all(|m| bodies.contains(m))
    });
    let record = collector.record.lock().unwrap();
    for body in record.bodies.values() {
        let body: Value = serde_json::from_str(body).unwrap();
        if body["type"] != "logs" {
            assert_eq!(tags(&body), map(&[("region", "eu-west-1")]), "{body:#}");
        }
    }
}
