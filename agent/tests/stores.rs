//! One suite of store tests, run against both stores: the embedded SQLite store and the PostgreSQL
//! store on a throwaway server (tests/src/postgres.rs). Then what only the shared store has: schema
//! versions, and several writers on one database.

#![allow(clippy::unwrap_used, reason = "test helpers: a failure is a test failure")]

use std::sync::Arc;

use lastword::protocol::{Losses, Software};
use lastword_collector::store::{AgentLosses, Batch, NewReport, Origin, Outcome, ReportFilter, StoreError};
use lastword_collector::store::{PostgresStore, SqliteStore, Store};
use lastword_spool::{EntryId, Kind};
use lastword_tests::postgres::TempPostgres;

/// The PostgreSQL schema version this program writes (each issue's migration raises it).
const PG_VERSION: i64 = lastword_collector::store::postgres::SCHEMA_VERSION;

fn origin(app: &str, release: &str, host: Option<&str>) -> Arc<Origin> {
    Arc::new(Origin {
        agent: Software { name: "lastword".into(), version: "0.1.0".into() },
        app: app.into(),
        release: Some(release.into()),
        host: host.map(Into::into),
    })
}

fn report(id: EntryId, app: &str, kind: Kind, fingerprint: Option<&str>, created_ms: u64) -> NewReport {
    NewReport {
        id,
        kind,
        origin: origin(app, "1.0", Some("h")),
        created_ms,
        received_ms: created_ms + 1,
        fingerprint: fingerprint.map(Into::into),
        summary: format!("summary {}", fingerprint.unwrap_or("-")),
        body: format!(r#"{{"message":"m{created_ms}"}}"#),
        waits: Vec::new(),
    }
}

fn crash(id: EntryId, fingerprint: &str, created_ms: u64) -> NewReport {
    report(id, "app", Kind::Crash, Some(fingerprint), created_ms)
}

fn batch(reports: Vec<NewReport>) -> Batch {
    Batch { reports, losses: vec![] }
}

async fn a_report_id_is_stored_once_and_its_group_counted_once(store: impl Store) {
    let (a, b) = (EntryId::generate(), EntryId::generate());
    let outcomes =
        store.write(batch(vec![crash(a, "g", 10), crash(a, "g", 10), crash(b, "g", 30)])).await.unwrap();
    assert_eq!(outcomes, [Outcome::Inserted, Outcome::Duplicate, Outcome::Inserted]);
    let again = store.write(batch(vec![crash(b, "g", 30), crash(a, "g", 10)])).await.unwrap();
    assert_eq!(again, [Outcome::Duplicate, Outcome::Duplicate]);
    let groups = store.groups(None, 10).await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!((groups[0].count, groups[0].first_seen_ms, groups[0].last_seen_ms), (2, 10, 30));
    assert_eq!(groups[0].title, "summary g");
    let shown = store.report(a).await.unwrap().unwrap();
    assert_eq!(shown.body, r#"{"message":"m10"}"#);
    assert_eq!((shown.row.release.as_deref(), shown.row.host.as_deref()), (Some("1.0"), Some("h")));
    assert_eq!(shown.row.received_ms, 11);
    assert!(store.report(EntryId::generate()).await.unwrap().is_none());
}

async fn group_counts_follow_only_inserted_crashes(store: impl Store) {
    let ids: Vec<EntryId> = (0..20).map(|_| EntryId::generate()).collect();
    let first: Vec<NewReport> =
        ids.iter().enumerate().map(|(n, id)| crash(*id, ["x", "y"][n % 2], n as u64)).collect();
    store.write(batch(first.clone())).await.unwrap();
    // Half of them again, with new ones and an event: only the new crashes count.
    let mut second: Vec<NewReport> = first[..10].to_vec();
    second.push(crash(EntryId::generate(), "x", 100));
    second.push(report(EntryId::generate(), "app", Kind::Event, None, 101));
    let outcomes = store.write(batch(second)).await.unwrap();
    assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Inserted).count(), 2);
    let mut groups = store.groups(None, 10).await.unwrap();
    groups.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    assert_eq!(
        groups.iter().map(|g| (g.fingerprint.as_str(), g.count)).collect::<Vec<_>>(),
        [("x", 11), ("y", 10)]
    );
    assert_eq!((groups[0].first_seen_ms, groups[0].last_seen_ms), (0, 100));
}

async fn queries_filter_order_and_limit(store: impl Store) {
    let mut written = Vec::new();
    for n in 0..12u64 {
        let id = EntryId::generate();
        let (app, kind, fp) = match n % 3 {
            0 => ("a", Kind::Crash, Some("g1")),
            1 => ("b", Kind::Crash, Some("g2")),
            _ => ("a", Kind::Log, None),
        };
        // One report a batch: the order of receipt is the order of the batches.
        store.write(batch(vec![report(id, app, kind, fp, 1000 + n)])).await.unwrap();
        written.push(id);
    }
    let all = store.reports(ReportFilter { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        written.iter().rev().copied().collect::<Vec<_>>()
    );
    let three = store.reports(ReportFilter { limit: 3, ..Default::default() }).await.unwrap();
    assert_eq!(
        three.iter().map(|r| r.id).collect::<Vec<_>>(),
        all[..3].iter().map(|r| r.id).collect::<Vec<_>>()
    );
    let of_a = store
        .reports(ReportFilter { app: Some("a".into()), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(of_a.len(), 8);
    assert!(of_a.iter().all(|r| r.app == "a"));
    let logs = store
        .reports(ReportFilter { kind: Some(Kind::Log), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(logs.len(), 4);
    assert!(logs.iter().all(|r| r.kind == Kind::Log && r.fingerprint.is_none()));
    let g2 = store
        .reports(ReportFilter { fingerprint: Some("g2".into()), limit: 2, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(g2.len(), 2);
    assert!(g2.iter().all(|r| r.app == "b" && r.fingerprint.as_deref() == Some("g2")));
    let none = store
        .reports(ReportFilter { app: Some("nobody".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert!(none.is_empty());
    let groups = store.groups(None, 10).await.unwrap();
    // Most recently seen first: g2's last crash (n = 10) is newer than g1's (n = 9).
    assert_eq!(
        groups.iter().map(|g| (g.fingerprint.as_str(), g.count)).collect::<Vec<_>>(),
        [("g2", 4), ("g1", 4)]
    );
    assert_eq!(store.groups(None, 1).await.unwrap().len(), 1);
    let of_b = store.groups(Some("b".into()), 10).await.unwrap();
    assert_eq!(of_b.len(), 1);
    assert_eq!(of_b[0].app, "b");
}

async fn the_latest_losses_per_app_and_host_are_kept(store: impl Store) {
    let losses = |n, host| AgentLosses {
        origin: origin("app", "1.0", host),
        losses: Losses { evicted: n, events_dropped: 10 * n, ..Losses::default() },
        received_ms: n,
    };
    let first =
        Batch { reports: vec![], losses: vec![losses(1, None), losses(2, None), losses(5, Some("b"))] };
    store.write(first).await.unwrap();
    store.write(Batch { reports: vec![], losses: vec![losses(7, Some("b"))] }).await.unwrap();
    let rows = store.losses().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].host.as_str(), rows[0].losses.evicted, rows[0].reported_ms), ("", 2, 2));
    assert_eq!((rows[1].host.as_str(), rows[1].losses.evicted), ("b", 7));
    assert_eq!(rows[1].agent.name, "lastword");
    // Events dropped are kept beside the other counters (schema version 4).
    assert_eq!((rows[0].losses.events_dropped, rows[1].losses.events_dropped), (20, 70));
}

async fn an_empty_batch_writes_nothing(store: impl Store) {
    assert!(store.write(Batch::default()).await.unwrap().is_empty());
    assert!(store.reports(ReportFilter { limit: 10, ..Default::default() }).await.unwrap().is_empty());
    assert!(store.groups(None, 10).await.unwrap().is_empty());
    assert!(store.losses().await.unwrap().is_empty());
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        #[tokio::test]
        async fn sqlite_store_passes_the_shared_suite() {
            $(
                let dir = tempfile::tempdir().unwrap();
                $case(SqliteStore::open(dir.path()).unwrap()).await;
            )*
        }

        #[tokio::test]
        async fn postgres_store_passes_the_shared_suite() {
            let pg = TempPostgres::start();
            $(
                let url = pg.create_database(stringify!($case));
                $case(PostgresStore::open(&url).await.unwrap()).await;
            )*
        }
    };
}

suite!(
    a_report_id_is_stored_once_and_its_group_counted_once,
    group_counts_follow_only_inserted_crashes,
    queries_filter_order_and_limit,
    the_latest_losses_per_app_and_host_are_kept,
    an_empty_batch_writes_nothing,
);

#[tokio::test]
async fn postgres_schema_is_migrated_once_and_a_newer_one_is_refused() {
    let pg = TempPostgres::start();
    let url = pg.create_database("versions");
    let missing = PostgresStore::open_read_only(&url).await.unwrap_err();
    assert!(matches!(missing, StoreError::Missing { .. }), "{missing}");
    let id = EntryId::generate();
    {
        let store = PostgresStore::open(&url).await.unwrap();
        store.write(batch(vec![crash(id, "g", 1)])).await.unwrap();
    }
    // Opening again, for writing or reading, keeps the data and the version.
    let again = PostgresStore::open(&url).await.unwrap();
    assert_eq!(again.write(batch(vec![crash(id, "g", 1)])).await.unwrap(), [Outcome::Duplicate]);
    assert!(PostgresStore::open_read_only(&url).await.unwrap().report(id).await.unwrap().is_some());
    assert_eq!(pg.psql("versions", "SELECT version FROM lastword_schema"), PG_VERSION.to_string());
    pg.psql("versions", "UPDATE lastword_schema SET version = 99");
    let refused = PostgresStore::open(&url).await.unwrap_err();
    assert!(matches!(refused, StoreError::Version { found: 99, known: PG_VERSION, .. }), "{refused}");
    let message = refused.to_string();
    assert!(message.contains("99") && !message.contains("password"), "{message}");
    assert!(matches!(PostgresStore::open_read_only(&url).await, Err(StoreError::Version { .. })));
}

#[tokio::test]
async fn a_postgres_store_of_schema_version_1_is_migrated_and_keeps_its_reports() {
    let pg = TempPostgres::start();
    let url = pg.create_database("old");
    let id = EntryId::generate();
    {
        let store = PostgresStore::open(&url).await.unwrap();
        store.write(batch(vec![crash(id, "g", 1)])).await.unwrap();
    }
    // What version 1 made: the same tables without the index of version 2, the tags of 3, the
    // events dropped of 4 and the debug files and symbol waits of 5.
    pg.psql(
        "old",
        "DROP INDEX reports_by_received; DROP TABLE report_tags; ALTER TABLE losses DROP COLUMN events_dropped;
         DROP TABLE debug_files; DROP TABLE debug_file_chunks; DROP TABLE symbol_waits;
         UPDATE lastword_schema SET version = 1",
    );
    assert!(matches!(
        PostgresStore::open_read_only(&url).await,
        Err(StoreError::Version { found: 1, known: PG_VERSION, .. })
    ));
    let store = PostgresStore::open(&url).await.unwrap();
    assert!(store.report(id).await.unwrap().is_some());
    assert_eq!(pg.psql("old", "SELECT version FROM lastword_schema"), PG_VERSION.to_string());
    assert_eq!(
        pg.psql("old", "SELECT count(*) FROM pg_indexes WHERE indexname = 'reports_by_received'"),
        "1"
    );
    assert!(PostgresStore::open_read_only(&url).await.unwrap().report(id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_writers_racing_on_the_same_ids_store_and_count_each_once() {
    let pg = TempPostgres::start();
    let url = pg.create_database("race");
    let (one, two) = tokio::join!(PostgresStore::open(&url), PostgresStore::open(&url));
    let (one, two) = (one.unwrap(), two.unwrap());
    let reports: Vec<NewReport> =
        (0..400).map(|n| crash(EntryId::generate(), ["p", "q", "r"][n % 3], n as u64)).collect();
    let mut tasks = Vec::new();
    for (k, store) in [one.clone(), two.clone(), one, two].into_iter().enumerate() {
        // Each writer sends every report, in batches of different sizes and orders.
        let mut mine = reports.clone();
        if k % 2 == 1 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let mut inserted = 0;
            for chunk in mine.chunks(7 + 13 * k) {
                let outcomes = store.write(batch(chunk.to_vec())).await.unwrap();
                inserted += outcomes.iter().filter(|o| **o == Outcome::Inserted).count();
            }
            inserted
        }));
    }
    let mut inserted = 0;
    for t in tasks {
        inserted += t.await.unwrap();
    }
    assert_eq!(inserted, reports.len(), "each report was answered `inserted` exactly once");
    assert_eq!(pg.psql("race", "SELECT count(*) FROM reports"), "400");
    assert_eq!(pg.psql("race", "SELECT sum(count) FROM groups"), "400");
}

/// A write PostgreSQL refuses says why, in PostgreSQL's words: tokio-postgres's own text of a
/// database error is only "db error", with the server's message in its source.
#[tokio::test]
async fn a_refused_postgres_write_names_the_server_s_reason() {
    let pg = TempPostgres::start();
    let url = pg.create_database("refused");
    let store = PostgresStore::open(&url).await.unwrap();
    pg.psql("refused", "ALTER TABLE reports ADD CONSTRAINT no_crashes_today CHECK (kind <> 'crash')");
    let refused = store.write(batch(vec![crash(EntryId::generate(), "g", 1)])).await.unwrap_err();
    let message = refused.to_string();
    assert!(matches!(refused, StoreError::Backend { .. }), "{message}");
    assert!(message.contains("no_crashes_today"), "the constraint is named: {message}");
    assert!(message.starts_with("the store failed to write a batch: "), "{message}");
    // One line, without the refused row that PostgreSQL's detail quotes (the report's body).
    assert!(
        !message.contains('\n') && !message.contains("Failing row") && !message.contains("m1"),
        "{message}"
    );
}
