//! The store's record of reports waiting for debug files (store/waits.rs), on both backends: a
//! report stored with the build ids it waits for is listed for each; symbolized again, it moves to
//! its new group exactly once, even when the same result is applied twice (a retry, or two
//! collectors of one PostgreSQL database), and waits only for what it still lacks.

#![allow(clippy::unwrap_used, reason = "test helpers: a failure is a test failure")]

use std::sync::Arc;

use lastword::protocol::Software;
use lastword_collector::store::waits::{Changed, Resymbolized};
use lastword_collector::store::{Batch, NewReport, Origin, PostgresStore, SqliteStore, Store, Waits};
use lastword_spool::{EntryId, Kind};
use lastword_tests::postgres::TempPostgres;

fn crash(id: EntryId, fingerprint: &str, created_ms: u64, waits: &[&str]) -> NewReport {
    NewReport {
        id,
        kind: Kind::Crash,
        origin: Arc::new(Origin {
            agent: Software { name: "lastword".into(), version: "0".into() },
            app: "app".into(),
            release: None,
            host: Some("h".into()),
        }),
        created_ms,
        received_ms: created_ms,
        fingerprint: Some(fingerprint.into()),
        summary: "raw".into(),
        body: format!(r#"{{"n":{created_ms}}}"#),
        waits: waits.iter().map(|w| (*w).to_owned()).collect(),
    }
}

async fn count(store: &impl Store, fingerprint: &str) -> u64 {
    store.group("app".into(), fingerprint.into()).await.unwrap().map_or(0, |g| g.count)
}

async fn moves_once(store: impl Waits) {
    let (a, b) = (EntryId::generate(), EntryId::generate());
    let batch = Batch {
        reports: vec![crash(a, "code", 10, &["aa11", "bb22"]), crash(b, "code", 20, &["aa11"])],
        losses: vec![],
    };
    store.write(batch).await.unwrap();
    let mut waited = store.waited_build_ids().await.unwrap();
    waited.sort();
    assert_eq!(waited, ["aa11", "bb22"]);
    assert_eq!(store.wait_counts(10).await.unwrap(), [("aa11".to_owned(), 2), ("bb22".to_owned(), 1)]);
    let waiting = store.waiting_for("aa11".into(), 500).await.unwrap();
    assert_eq!(waiting.len(), 2);
    assert_eq!(count(&store, "code").await, 2);

    // The file of aa11 names a; b's frames it does not name (stays, stops waiting for aa11).
    let done: Vec<Resymbolized> = waiting
        .into_iter()
        .map(|w| {
            let changed = (w.id == a).then(|| Changed {
                body: r#"{"named":true}"#.into(),
                fingerprint: Some("functions".into()),
                summary: "named".into(),
            });
            let waits = if w.id == a { vec!["bb22".into(), "aa11".into()] } else { vec![] };
            Resymbolized { waiting: w, changed, waits }
        })
        .collect();
    let applied = store.resymbolized("aa11".into(), done.clone()).await.unwrap();
    assert_eq!((applied.rewritten, applied.moved), (1, 1));
    assert_eq!((count(&store, "code").await, count(&store, "functions").await), (1, 1));
    let moved = store.report(a).await.unwrap().unwrap();
    assert_eq!(moved.row.fingerprint.as_deref(), Some("functions"));
    assert_eq!(moved.body, r#"{"named":true}"#);
    assert!(store.waiting_for("aa11".into(), 500).await.unwrap().is_empty(), "never waits for what came");
    assert_eq!(store.waited_build_ids().await.unwrap(), ["bb22"]);

    // The same result again (a retry, another collector): nothing moves twice.
    let again = store.resymbolized("aa11".into(), done).await.unwrap();
    assert_eq!((again.rewritten, again.moved), (0, 0));
    assert_eq!((count(&store, "code").await, count(&store, "functions").await), (1, 1));

    // The last report of a group leaves it: the group is gone.
    let w = store.waiting_for("bb22".into(), 500).await.unwrap();
    assert_eq!(w.len(), 1, "a waits for bb22 still");
    let b_row = store.report(b).await.unwrap().unwrap();
    let b_waiting = lastword_collector::store::waits::Waiting {
        id: b,
        kind: Kind::Crash,
        app: "app".into(),
        fingerprint: b_row.row.fingerprint.clone(),
        created_ms: 20,
        body: b_row.body,
    };
    let last = Resymbolized {
        waiting: b_waiting,
        changed: Some(Changed {
            body: "{}".into(),
            fingerprint: Some("functions".into()),
            summary: "s".into(),
        }),
        waits: vec![],
    };
    store.resymbolized("cc33".into(), vec![last]).await.unwrap();
    assert_eq!(store.group("app".into(), "code".into()).await.unwrap(), None);
    assert_eq!(count(&store, "functions").await, 2);
}

#[tokio::test]
async fn sqlite_moves_a_symbolized_report_to_its_group_once() {
    let dir = tempfile::tempdir().unwrap();
    moves_once(SqliteStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn postgres_moves_a_symbolized_report_to_its_group_once() {
    let pg = TempPostgres::start();
    let url = pg.create_database("waits");
    moves_once(PostgresStore::open(&url).await.unwrap()).await;
}
