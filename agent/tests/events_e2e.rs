//! Events end to end: an application (this test binary, re-executed as the child) reports handled
//! errors and messages with a scope; its own uploader delivers them to a real `lastword collect`;
//! `lastword store` shows them grouped and filtered by kind and by tag, as tables and as JSON.

#![allow(clippy::unwrap_used, reason = "test helpers: a failure is a test failure")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Collector, TOKEN, binary};

#[derive(Debug)]
struct LookupError(std::num::ParseIntError);

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "order 17 not found")
    }
}

impl std::error::Error for LookupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[inline(never)]
fn failing_lookup() -> lastword::spool::EntryId {
    let error = LookupError("x17".parse::<u32>().unwrap_err());
    lastword::capture_error(&error)
}

/// The application; a no-op when run as a test.
#[test]
fn events_child() {
    let Ok(spool) = std::env::var("EVENTS_CHILD_SPOOL") else { return };
    let config = lastword::Config::new("shop").spool(spool).token(TOKEN).signals(false);
    let config = match std::env::var("EVENTS_CHILD_URL") {
        Ok(url) => config.url(url),
        Err(_) => config.no_url(),
    };
    let config = config.exit_deadline(Duration::from_secs(20));
    let guard = lastword::init(config).unwrap();
    lastword::configure_scope(|s| {
        s.set_tag("region", "eu");
        s.set_user(Some(lastword::report::User { id: Some("u-1".into()), ..Default::default() }));
        s.set_extra("cart", serde_json::json!({"items": 3}));
    });
    println!("error {}", failing_lookup());
    println!("error {}", failing_lookup());
    lastword::with_scope(
        |s| {
            s.set_tag("tier", "gold");
        },
        || println!("gold {}", lastword::capture_message(lastword::Level::Warn, "slow checkout 2300 ms")),
    );
    println!("plain {}", lastword::capture_message(lastword::Level::Warn, "slow checkout 900 ms"));
    drop(guard);
}

fn store_json(store: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(binary())
        .arg("store")
        .args(args)
        .arg("--store")
        .arg(store)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "lastword store {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids_of(rows: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> =
        rows.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[test]
fn events_reach_a_real_collector_grouped_and_found_by_kind_and_tag() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let collector = Collector::start(&store, &[]);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "events_child", "--nocapture", "--test-threads=1", "--quiet"])
        .env("EVENTS_CHILD_SPOOL", dir.path().join("spool"))
        .env("EVENTS_CHILD_URL", &collector.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let ids = |label: &str| -> Vec<String> {
        printed.lines().filter_map(|l| l.strip_prefix(&format!("{label} "))).map(str::to_owned).collect()
    };
    let (errors, gold, plain) = (ids("error"), ids("gold"), ids("plain"));
    assert_eq!((errors.len(), gold.len(), plain.len()), (2, 1, 1), "{printed}");
    let mut all: Vec<String> = [errors.clone(), gold.clone(), plain.clone()].concat();
    all.sort();

    // The guard's drop delivered them before the child exited: they are stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids_of(&store_json(&store, &["reports", "--kind", "event"])) != all {
        assert!(Instant::now() < deadline, "the four events in the store");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Groups: the two errors in one, the two messages (their numbers aside) in another.
    let groups = store_json(&store, &["groups", "--kind", "event"]);
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert!(groups.iter().all(|g| g["kind"] == "event" && g["count"] == 2), "{groups:?}");
    assert!(groups.iter().any(|g| g["title"] == "order 17 not found"), "{groups:?}");
    assert!(store_json(&store, &["groups", "--kind", "crash"]).as_array().unwrap().is_empty());

    // By tag: the process-wide tag is on all four, the block's on its one event only.
    assert_eq!(ids_of(&store_json(&store, &["reports", "--tag", "region=eu"])), all);
    assert_eq!(ids_of(&store_json(&store, &["reports", "--tag", "tier=gold"])), gold);
    let gold_groups = store_json(&store, &["groups", "--tag", "tier=gold"]);
    assert_eq!(gold_groups.as_array().unwrap().len(), 1);
    assert!(gold_groups[0]["title"].as_str().unwrap().starts_with("slow checkout"));
    assert!(store_json(&store, &["reports", "--tag", "tier=silver"]).as_array().unwrap().is_empty());

    // One event shown whole: its chain, frames, scope.
    let shown = store_json(&store, &["show", &errors[0]]);
    let body = &shown["body"];
    assert_eq!(body["type"], "event");
    assert_eq!(body["error"]["type"], "events_e2e::LookupError");
    assert_eq!(body["error"]["chain"][0]["message"], "invalid digit found in string");
    assert!(body["frames"][0]["function"].as_str().unwrap().contains("failing_lookup"), "{body}");
    assert_eq!(body["scope"]["tags"]["region"], "eu");
    assert_eq!(body["scope"]["user"]["id"], "u-1");
    assert_eq!(body["scope"]["extra"]["cart"]["items"], 3);
    assert_eq!(shown["fingerprint"], body["fingerprint"], "the client's fingerprint groups it");

    // The table shows the kind too.
    let table = Command::new(binary()).args(["store", "groups", "--store"]).arg(&store).output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("KIND") && table.contains("event"), "{table}");
    drop(collector);
}

#[test]
fn lastword_show_gives_an_event_in_the_spool_as_it_will_be_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "events_child", "--nocapture", "--test-threads=1", "--quiet"])
        .env("EVENTS_CHILD_SPOOL", &spool)
        .env_remove("EVENTS_CHILD_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let id = printed.lines().find_map(|l| l.strip_prefix("error ")).unwrap();
    let shown = Command::new(binary()).args(["show", id, "--json", "--spool"]).arg(&spool).output().unwrap();
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let body = &shown["body"];
    assert_eq!((shown["kind"].as_str(), body["type"].as_str()), (Some("event"), Some("event")));
    assert_eq!(body["error"]["chain"][0]["message"], "invalid digit found in string");
    assert!(body["frames"][0]["function"].as_str().unwrap().contains("failing_lookup"), "{body}");
    assert_eq!(body["fingerprint"].as_str().unwrap().len(), 16, "fingerprinted as when uploaded");
    assert_eq!(body["scope"]["tags"]["region"], "eu");
}
