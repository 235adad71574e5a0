//! Handled errors and messages as events, end to end: a real application (the event app) captures
//! them, its spool holds them, an uploader (the app's own, or the sidecar's) prepares them
//! (symbolized, fingerprinted, decided once) and a collector stores them.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lastword::report::EventReport;
use lastword::spool::{EntryId, Spool, SpoolOptions};
use lastword::upload::{Uploader, UploaderConfig};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

const APP: &str = env!("CARGO_BIN_EXE_lastword-event-app");

/// Runs the event app's `case` to its end; returns the event ids it printed.
fn event_app(case: &str, spool: &Path, url: Option<&str>, env: &[(&str, &str)]) -> Vec<EntryId> {
    let mut command = Command::new(APP);
    command.arg(case).envs(env.iter().copied()).env("LASTWORD_SPOOL", spool).env("LASTWORD_TOKEN", TOKEN);
    match url {
        Some(url) => command.env("LASTWORD_URL", url),
        None => command.env_remove("LASTWORD_URL"),
    };
    let out = command.output().unwrap();
    assert!(out.status.success(), "{case}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("event "))
        .map(|id| id.parse().unwrap())
        .collect()
}

/// The events the collector stored, in the order of the ids given.
fn stored_events(collector: &TestCollector, ids: &[EntryId]) -> Vec<EventReport> {
    let record = collector.record.lock().unwrap();
    ids.iter().map(|id| serde_json::from_str(&record.bodies[id]).unwrap()).collect()
}

#[test]
fn an_error_event_carries_its_type_its_chain_and_the_callers_frames_and_groups_by_them() {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(Behaviour::Accept);
    let ids = event_app("error", &dir.path().join("spool"), Some(&collector.url()), &[]);
    assert_eq!(ids.len(), 5);
    // The guard's drop delivered them all (within its deadline).
    collector
        .wait_for(Duration::from_secs(30), "five events", |r| ids.iter().all(|id| r.stored.contains_key(id)));
    let events = stored_events(&collector, &ids);
    let [first, second, boxed, msg_a, msg_b] = &events[..] else { unreachable!() };

    assert_eq!((first.kind.as_str(), first.version, first.level.as_str()), ("event", 1, "ERROR"));
    assert_eq!(first.message, "bad port in /etc/app-1.toml");
    let error = first.error.as_ref().unwrap();
    assert_eq!(error.type_name.as_deref(), Some("lastword_event_app::ConfigError"));
    assert_eq!(error.chain.len(), 1, "{error:?}");
    assert_eq!(error.chain[0].message, "invalid digit found in string");
    assert_eq!(error.chain[0].type_name.as_deref(), Some("ParseIntError"));
    // Raw-first, symbolized when prepared: the caller of capture_error is the first frame, in-app.
    assert!(first.symbolized, "{:?}", first.symbolization_error);
    let top = &first.frames[0];
    assert!(top.function.as_deref().unwrap().contains("load_config"), "{:?}", first.frames);
    assert!(top.in_app);
    assert!(first.frames.iter().all(|f| !f.function.as_deref().unwrap_or("").contains("capture_error")));
    assert_eq!(first.context.app, "event-app");
    assert_eq!(first.fingerprint.len(), 16);
    assert_eq!(first.fingerprint, second.fingerprint, "the same type and in-app frames");

    // A dyn Error of a private type: no type name that pretends, its message, another group.
    let boxed_error = boxed.error.as_ref().unwrap();
    assert_eq!((boxed_error.type_name.as_deref(), boxed.message.as_str()), (None, "plain text error"));
    assert_ne!(boxed.fingerprint, first.fingerprint);

    // Messages: no error, their level, grouped by the text without its digits.
    assert!(msg_a.error.is_none() && msg_a.frames.is_empty());
    assert_eq!(msg_a.level, "WARN");
    assert_eq!(msg_a.fingerprint, msg_b.fingerprint);
    assert_ne!(msg_a.fingerprint, first.fingerprint);
}

#[test]
fn before_send_event_scrubs_or_drops_an_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let collector = TestCollector::start(Behaviour::Accept);
    let ids = event_app("scrub", &spool, Some(&collector.url()), &[("EVENT_APP_SCRUB", "1")]);
    collector.wait_for(Duration::from_secs(30), "the scrubbed event", |r| r.stored.contains_key(&ids[0]));
    assert_eq!(stored_events(&collector, &ids[..1])[0].message, "the [scrubbed] is out");
    assert!(!collector.stored_ids().contains_key(&ids[1]), "dropped by the hook");
    let view = lastword::spool::SpoolView::open(&spool).unwrap();
    assert!(view.list().unwrap().is_empty(), "the dropped event is gone, not left to be sent again");
}

#[test]
fn ten_thousand_errors_then_exit_are_all_delivered_or_counted() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let ids = event_app("burst-then-exit", &spool_dir, None, &[]);
    assert_eq!(ids.len(), 10_000);
    // A sidecar delivers what the app's exit left in the spool (its event-loop limit: 100 an hour).
    let collector = TestCollector::start(Behaviour::Accept);
    let spool = Spool::open(&spool_dir, SpoolOptions::default()).unwrap();
    let mut config = UploaderConfig::new([collector.url()], "event-app").token(TOKEN);
    config.prepare = Some(lastword::prepare_for_upload(&spool_dir));
    let uploader = Uploader::start(spool.clone(), config).unwrap();
    uploader.flush(Duration::from_secs(300)).unwrap();
    let summary = uploader.shutdown(Duration::from_secs(5));
    let delivered: HashSet<EntryId> = collector.stored_ids().into_keys().collect();
    let printed: HashSet<EntryId> = ids.iter().copied().collect();
    assert!(delivered.is_subset(&printed), "only the app's events");
    let dropped = spool.add_to_counter("events_dropped", 0).unwrap();
    let suppressed = spool.add_to_counter("event_loop_suppressed", 0).unwrap();
    // The limit of one fingerprint, 100 an hour of the events' own time (200 if the burst crossed
    // an hour's end).
    assert!((100..=200).contains(&delivered.len()), "{} delivered: {summary:?}", delivered.len());
    assert_eq!(
        delivered.len() as u64 + dropped + suppressed,
        10_000,
        "delivered {} + dropped {dropped} + suppressed {suppressed}",
        delivered.len()
    );
    // The drops travel with the events too.
    let record = collector.record.lock().unwrap();
    let travelled: u64 =
        record.bodies.values().map(|b| serde_json::from_str::<EventReport>(b).unwrap().dropped_before).sum();
    assert!(travelled <= dropped);
}

#[test]
fn an_anyhow_error_carries_its_context_chain_and_its_own_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(Behaviour::Accept);
    let ids = event_app(
        "anyhow",
        &dir.path().join("spool"),
        Some(&collector.url()),
        &[("RUST_LIB_BACKTRACE", "1")],
    );
    collector.wait_for(Duration::from_secs(30), "the event", |r| r.stored.contains_key(&ids[0]));
    let event = &stored_events(&collector, &ids)[0];
    assert_eq!(event.message, "loading the config");
    let error = event.error.as_ref().unwrap();
    let chain: Vec<&str> = error.chain.iter().map(|c| c.message.as_str()).collect();
    assert_eq!(chain, ["reading the port", "invalid digit found in string"]);
    assert!(error.backtrace.as_deref().is_some_and(|b| b.contains("event_app")), "{:?}", error.backtrace);
    let top = event.frames[0].function.as_deref().unwrap();
    assert!(top.contains("report_anyhow"), "{:?}", event.frames);
}

#[test]
fn events_and_log_batches_carry_the_scope_of_their_thread_at_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(Behaviour::Accept);
    let ids = event_app("scope-threads", &dir.path().join("spool"), Some(&collector.url()), &[]);
    collector.wait_for(Duration::from_secs(30), "the events and two log batches", |r| {
        ids.iter().all(|id| r.stored.contains_key(id)) && r.stored.len() >= ids.len() + 2
    });
    let events = stored_events(&collector, &ids);
    let [process, block, other_thread, after] = &events[..] else { unreachable!() };
    for event in [process, block, other_thread, after] {
        assert_eq!(event.scope.tags.get("region").map(String::as_str), Some("eu-west-1"), "{event:?}");
        assert_eq!(event.scope.user.as_ref().and_then(|u| u.id.as_deref()), Some("42"));
        assert_eq!(event.scope.extra["build"]["sha"], "abc123");
    }
    assert_eq!(block.scope.tags.get("job").map(String::as_str), Some("nightly"));
    assert_eq!(block.context.environment.as_deref(), Some("staging"), "the scope's environment wins");
    assert_eq!(other_thread.scope.tags.get("job"), None, "another thread does not see the block");
    assert_eq!(after.scope.tags.get("job"), None, "the block ended");
    assert_ne!(after.context.environment.as_deref(), Some("staging"));
    // Log batches: one per scope, each carrying its own.
    let record = collector.record.lock().unwrap();
    let batches: Vec<lastword::report::LogBatch> = record
        .bodies
        .values()
        .filter(|b| b.contains(r#""type":"logs""#))
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let scope_of = |message: &str| {
        let batch = batches.iter().find(|b| b.records.iter().any(|r| r.message == message)).unwrap();
        (batch.scope.tags.get("job").cloned(), batch.scope.tags.get("region").cloned())
    };
    assert_eq!(scope_of("a log record in the block"), (Some("nightly".into()), Some("eu-west-1".into())));
    assert_eq!(scope_of("a log record outside"), (None, Some("eu-west-1".into())));
}

#[test]
fn a_scope_set_in_one_tokio_task_does_not_leak_into_another() {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(Behaviour::Accept);
    let ids = event_app("scope-tasks", &dir.path().join("spool"), Some(&collector.url()), &[]);
    collector.wait_for(Duration::from_secs(30), "three events", |r| {
        ids.iter().all(|id| r.stored.contains_key(id))
    });
    let events = stored_events(&collector, &ids);
    let request = |e: &EventReport| e.scope.tags.get("request").cloned();
    assert_eq!(events[0].message, "task a before");
    assert_eq!(request(&events[0]).as_deref(), Some("a"));
    assert_eq!(request(&events[1]).as_deref(), Some("a"), "kept across an await, on any worker");
    assert_eq!(events[2].message, "task b");
    assert_eq!(request(&events[2]), None, "task b never carries task a's scope");
}

#[test]
fn the_event_loop_limit_sends_the_same_event_n_times_an_hour_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let collector = TestCollector::start(Behaviour::Accept);
    let ids = event_app("repeat", &spool_dir, Some(&collector.url()), &[("EVENT_APP_LOOP_LIMIT", "3")]);
    assert_eq!(ids.len(), 10);
    let spool = Spool::open(&spool_dir, SpoolOptions::default()).unwrap();
    let suppressed = || spool.add_to_counter("event_loop_suppressed", 0).unwrap();
    // 3 an hour of the events' own time (6 if the ten crossed an hour's end, a few ms wide).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while collector.stored_ids().len() as u64 + suppressed() < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = collector.stored_ids().len() as u64;
    assert!(sent == 3 || sent == 6, "{sent} sent");
    assert_eq!(sent + suppressed(), 10, "each one sent or counted");
    let first: Vec<EntryId> = ids[..3].to_vec();
    assert!(stored_events(&collector, &first).iter().all(|e| e.loop_suppressed == 0), "the first three go");
    assert!(lastword::spool::SpoolView::open(&spool_dir).unwrap().list().unwrap().is_empty());
    // The crashes' own limit is untouched by events.
    assert_eq!(spool.add_to_counter("crash_loop_suppressed", 0).unwrap(), 0);
}

#[test]
fn a_tracing_error_with_an_error_field_becomes_an_event_with_its_chain_when_the_layer_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(Behaviour::Accept);
    event_app("tracing", &dir.path().join("spool"), Some(&collector.url()), &[]);
    // The guard's drop delivered everything: one event and the log batch.
    collector.wait_for(Duration::from_secs(30), "the event and the log batch", |r| r.stored.len() >= 2);
    let record = collector.record.lock().unwrap();
    let events: Vec<EventReport> = record
        .bodies
        .values()
        .filter(|b| b.contains(r#""type":"event""#))
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "only the ERROR with an error field: {events:?}");
    let event = &events[0];
    assert_eq!((event.level.as_str(), event.message.as_str()), ("ERROR", "lookup failed"));
    let error = event.error.as_ref().unwrap();
    assert_eq!(error.message, "bad port in /etc/app.toml");
    assert_eq!(error.type_name.as_deref(), Some("ConfigError"));
    assert_eq!(error.chain[0].message, "invalid digit found in string");
    assert!(
        event
            .frames
            .iter()
            .any(|f| f.in_app && f.function.as_deref().is_some_and(|n| n.contains("log_with_tracing"))),
        "{:?}",
        event.frames
    );
    // Every record is still a log record.
    let logs: String = record.bodies.values().filter(|b| b.contains(r#""type":"logs""#)).cloned().collect();
    assert!(logs.contains("lookup failed") && logs.contains("only a warning"), "{logs}");
}
