//! Events are grouped by fingerprint like crashes, in both stores, and reports and groups are
//! filtered by kind and by a tag of their scope.

#![allow(clippy::unwrap_used, reason = "test helpers: a failure is a test failure")]

use std::sync::Arc;

use lastword::protocol::Software;
use lastword_collector::store::{Batch, GroupFilter, NewReport, Origin, ReportFilter};
use lastword_collector::store::{PostgresStore, SqliteStore, Store};
use lastword_spool::{EntryId, Kind};
use lastword_tests::postgres::TempPostgres;

fn report(kind: Kind, fingerprint: &str, created_ms: u64, tags: &str) -> NewReport {
    let body = format!(
        r#"{{"type":"event","message":"m","fingerprint":"{fingerprint}","scope":{{"tags":{tags}}}}}"#
    );
    let digest = lastword_collector::fingerprint::digest(kind, &body);
    NewReport {
        id: EntryId::generate(),
        kind,
        origin: Arc::new(Origin {
            agent: Software { name: "lastword".into(), version: "0.1.0".into() },
            app: "app".into(),
            release: None,
            host: None,
        }),
        created_ms,
        received_ms: created_ms,
        fingerprint: digest.fingerprint,
        summary: digest.summary,
        body,
        waits: Vec::new(),
    }
}

async fn events_group_like_crashes_and_filter_by_kind_and_tag(store: impl Store) {
    let e1 = report(Kind::Event, "ev-a", 10, r#"{"region":"eu","tier":"gold"}"#);
    let e2 = report(Kind::Event, "ev-a", 20, r#"{"region":"us"}"#);
    let e3 = report(Kind::Event, "ev-b", 30, r#"{}"#);
    let c1 = report(Kind::Crash, "cr-a", 40, r#"{"region":"eu"}"#);
    let ids: Vec<EntryId> = [&e1, &e2, &e3, &c1].iter().map(|r| r.id).collect();
    store.write(Batch { reports: vec![e1, e2, e3, c1.clone()], losses: vec![] }).await.unwrap();
    // A resend is a duplicate: no second tag row, no second count.
    store.write(Batch { reports: vec![c1], losses: vec![] }).await.unwrap();

    let groups = |kind: Option<Kind>, tag: Option<(&str, &str)>| {
        let filter = GroupFilter {
            kind,
            tag: tag.map(|(k, v)| (k.to_owned(), v.to_owned())),
            limit: 10,
            ..GroupFilter::default()
        };
        let store = &store;
        async move {
            let mut found: Vec<(Kind, String, u64)> = store
                .groups_of(filter)
                .await
                .unwrap()
                .into_iter()
                .map(|g| (g.kind, g.group.fingerprint, g.group.count))
                .collect();
            found.sort_by(|a, b| a.1.cmp(&b.1));
            found
        }
    };
    assert_eq!(
        groups(None, None).await,
        [(Kind::Crash, "cr-a".into(), 1), (Kind::Event, "ev-a".into(), 2), (Kind::Event, "ev-b".into(), 1)]
    );
    assert_eq!(groups(Some(Kind::Event), None).await.len(), 2);
    assert_eq!(groups(Some(Kind::Crash), None).await, [(Kind::Crash, "cr-a".into(), 1)]);
    assert_eq!(
        groups(None, Some(("region", "eu"))).await,
        [(Kind::Crash, "cr-a".into(), 1), (Kind::Event, "ev-a".into(), 2)],
        "a group with a report of that tag"
    );
    assert_eq!(groups(Some(Kind::Event), Some(("tier", "gold"))).await, [(Kind::Event, "ev-a".into(), 2)]);
    assert!(groups(None, Some(("region", "mars"))).await.is_empty());

    let reports = |kind: Option<Kind>, tag: Option<(&str, &str)>| {
        let filter = ReportFilter {
            kind,
            tag: tag.map(|(k, v)| (k.to_owned(), v.to_owned())),
            limit: 10,
            ..ReportFilter::default()
        };
        let store = &store;
        async move {
            let mut found: Vec<EntryId> =
                store.reports(filter).await.unwrap().into_iter().map(|r| r.id).collect();
            found.sort();
            found
        }
    };
    assert_eq!(reports(None, Some(("region", "eu"))).await, [ids[0], ids[3]]);
    assert_eq!(reports(Some(Kind::Event), Some(("region", "eu"))).await, [ids[0]]);
    assert_eq!(reports(Some(Kind::Event), None).await, [ids[0], ids[1], ids[2]]);
}

#[tokio::test]
async fn sqlite_store_groups_events_and_filters_by_kind_and_tag() {
    let dir = tempfile::tempdir().unwrap();
    events_group_like_crashes_and_filter_by_kind_and_tag(SqliteStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn postgres_store_groups_events_and_filters_by_kind_and_tag() {
    let pg = TempPostgres::start();
    let url = pg.create_database("events");
    events_group_like_crashes_and_filter_by_kind_and_tag(PostgresStore::open(&url).await.unwrap()).await;
}
