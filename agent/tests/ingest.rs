//! The collector served in this process: protocol behaviour, limits against bad clients, concurrency and
//! the store's guarantees.

#![allow(clippy::unwrap_used, reason = "test helpers: a failure is a test failure")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use lastword::protocol::{RejectReason, ServerMessage, close};
use lastword_collector::server::Limits;
use lastword_collector::store::reads::{
    GroupItem, GroupQuery, GroupStats, Listed, ListedBody, LogQuery, Overview, Page, Tag,
};
use lastword_collector::store::waits::{Applied, Resymbolized, Waiting};
use lastword_collector::store::{
    Batch, Group, GroupFilter, KindGroup, LossesRow, Outcome, ReportFilter, ReportRow, Store, StoreError,
    StoredReport,
};
use lastword_collector::store::{SqliteStore, Waits};
use lastword_spool::{EntryId, Kind};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

fn limits() -> Limits {
    Limits { max_message_bytes: 64 * 1024, ..Limits::default() }
}

/// A SQLite store whose writes of reports wait until the test opens the gate, or (`broken`) fail as
/// on a broken disk; reads go to the SQLite store.
struct Faulty {
    inner: SqliteStore,
    /// `None`: every write fails.
    gate: Option<Arc<Semaphore>>,
    /// How many reports have reached the gate.
    waiting: Arc<AtomicUsize>,
}

impl Faulty {
    fn gated(dir: &std::path::Path, gate: &Arc<Semaphore>, waiting: &Arc<AtomicUsize>) -> Self {
        Self {
            inner: SqliteStore::open(dir).unwrap(),
            gate: Some(Arc::clone(gate)),
            waiting: Arc::clone(waiting),
        }
    }

    fn broken(dir: &std::path::Path) -> Self {
        Self { inner: SqliteStore::open(dir).unwrap(), gate: None, waiting: Arc::default() }
    }
}

impl Waits for Faulty {
    async fn waited_build_ids(&self) -> Result<Vec<String>, StoreError> {
        self.inner.waited_build_ids().await
    }
    async fn waiting_for(&self, build_id: String, limit: u32) -> Result<Vec<Waiting>, StoreError> {
        self.inner.waiting_for(build_id, limit).await
    }
    async fn wait_counts(&self, limit: u32) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.wait_counts(limit).await
    }
    async fn resymbolized(&self, build_id: String, done: Vec<Resymbolized>) -> Result<Applied, StoreError> {
        self.inner.resymbolized(build_id, done).await
    }
}

impl Store for Faulty {
    async fn write(&self, batch: Batch) -> Result<Vec<Outcome>, StoreError> {
        let Some(gate) = &self.gate else {
            return Err(StoreError::Backend { op: "write a batch", source: "disk I/O error".into() });
        };
        if !batch.reports.is_empty() {
            self.waiting.fetch_add(batch.reports.len(), Ordering::SeqCst);
            gate.acquire().await.expect("gate open").forget();
        }
        self.inner.write(batch).await
    }
    async fn reports(&self, filter: ReportFilter) -> Result<Vec<ReportRow>, StoreError> {
        self.inner.reports(filter).await
    }
    async fn report(&self, id: EntryId) -> Result<Option<StoredReport>, StoreError> {
        self.inner.report(id).await
    }
    async fn groups(&self, app: Option<String>, limit: u32) -> Result<Vec<Group>, StoreError> {
        self.inner.groups(app, limit).await
    }
    async fn groups_of(&self, filter: GroupFilter) -> Result<Vec<KindGroup>, StoreError> {
        self.inner.groups_of(filter).await
    }
    async fn losses(&self) -> Result<Vec<LossesRow>, StoreError> {
        self.inner.losses().await
    }
    async fn overview(&self, now_ms: u64) -> Result<Overview, StoreError> {
        self.inner.overview(now_ms).await
    }
    async fn group_page(&self, query: GroupQuery, now_ms: u64) -> Result<(Vec<GroupItem>, bool), StoreError> {
        self.inner.group_page(query, now_ms).await
    }
    async fn group(&self, app: String, fingerprint: String) -> Result<Option<Group>, StoreError> {
        self.inner.group(app, fingerprint).await
    }
    async fn group_reports(
        &self,
        app: String,
        fingerprint: String,
        tag: Option<Tag>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<Listed>, StoreError> {
        self.inner.group_reports(app, fingerprint, tag, before, limit).await
    }
    async fn group_stats(
        &self,
        app: String,
        fingerprint: String,
        now_ms: u64,
    ) -> Result<GroupStats, StoreError> {
        self.inner.group_stats(app, fingerprint, now_ms).await
    }
    async fn logs(&self, query: LogQuery) -> Result<Page<ListedBody>, StoreError> {
        self.inner.logs(query).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_states_the_limits_and_a_resent_report_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(limits(), dir.path()).await;
    let mut ws = connect(server.addr, Some(TOKEN_2)).await.unwrap();
    let welcome = hello(&mut ws, "app").await;
    assert_eq!(
        (welcome.max_message_bytes, welcome.max_in_flight, welcome.idle_timeout_ms),
        (65536, lastword_collector::server::DEFAULT_MAX_IN_FLIGHT, 60_000)
    );
    let id = EntryId::generate();
    let text = report_text(id, Kind::Crash, &crash_body(1, 1));
    send(&mut ws, text.clone()).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Accepted { id });
    send(&mut ws, text.clone()).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Duplicate { id });
    bye(ws).await;
    // Again on a new connection, as after a lost connection.
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "app").await;
    send(&mut ws, text).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Duplicate { id });
    bye(ws).await;
    server.stop().await.unwrap();
    assert_eq!(scalar(dir.path(), "SELECT count(*) FROM reports"), 1);
    assert_eq!(scalar(dir.path(), "SELECT count FROM groups"), 1);
    assert_eq!(scalar(dir.path(), "SELECT evicted FROM losses WHERE app = 'app' AND host = 'test-host'"), 2);
    assert_eq!(
        scalar(dir.path(), "SELECT events_dropped FROM losses WHERE app = 'app' AND host = 'test-host'"),
        5,
        "the hello's events dropped are stored beside its logs dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_get_their_http_status_before_any_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(limits(), dir.path()).await;
    let addr = server.addr;
    assert_eq!(refused_status(connect(addr, None).await).0, 401);
    assert_eq!(refused_status(connect(addr, Some("wrong")).await).0, 401);
    let other_path = request(&format!("ws://{addr}/other"), Some(TOKEN));
    assert_eq!(refused_status(connect_request(addr, other_path).await).0, 404);
    let mut no_protocol = request(&format!("ws://{addr}/ingest"), Some(TOKEN));
    no_protocol.headers_mut().remove("Sec-WebSocket-Protocol");
    assert_eq!(refused_status(connect_request(addr, no_protocol).await).0, 400);
    assert_served(addr).await;
    server.stop().await.unwrap();
    assert_eq!(scalar(dir.path(), "SELECT count(*) FROM losses"), 1, "only the good client said hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_the_connection_limit_gets_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(Limits { max_connections: 1, ..limits() }, dir.path()).await;
    let mut first = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut first, "first").await;
    let (status, retry_after) = refused_status(connect(server.addr, Some(TOKEN)).await);
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    bye(first).await;
    // The slot is given back when the first connection ends; wait for that with a deadline.
    let deadline = tokio::time::Instant::now() + STEP;
    let mut ws = loop {
        match connect(server.addr, Some(TOKEN)).await {
            Ok(ws) => break ws,
            Err(_) if tokio::time::Instant::now() < deadline => tokio::task::yield_now().await,
            Err(e) => panic!("never admitted again: {e}"),
        }
    };
    hello(&mut ws, "second").await;
    bye(ws).await;
    server.stop().await.unwrap();
}

/// Connects, says hello, sends `frame`, and returns the close the server answers with.
async fn close_after(server: &Server, frame: Message) -> (u16, String) {
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "bad").await;
    tokio::time::timeout(STEP, ws.send(frame)).await.unwrap().unwrap();
    recv_close(&mut ws).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_closes_1007_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(limits(), dir.path()).await;
    let (code, reason) = close_after(&server, Message::text("{not json")).await;
    assert_eq!(code, close::INVALID_PAYLOAD, "{reason}");
    let (code, _) = close_after(&server, Message::text(r#"{"type":"goodbye"}"#)).await;
    assert_eq!(code, close::INVALID_PAYLOAD);
    assert_served(server.addr).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_frame_closes_1003_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(limits(), dir.path()).await;
    let (code, _) = close_after(&server, Message::binary(vec![1, 2, 3])).await;
    assert_eq!(code, close::UNSUPPORTED_DATA);
    assert_served(server.addr).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_with_a_bad_id_or_kind_closes_1007_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(limits(), dir.path()).await;
    let bad_id = r#"{"type":"report","id":"not-an-id","kind":"crash","created_ms":1,"body":{}}"#;
    let (code, reason) = close_after(&server, Message::text(bad_id)).await;
    assert_eq!(code, close::INVALID_PAYLOAD);
    assert!(reason.contains("entry id"), "{reason}");
    let bad_kind = format!(
        r#"{{"type":"report","id":"{}","kind":"dump","created_ms":1,"body":{{}}}}"#,
        EntryId::generate()
    );
    assert_eq!(close_after(&server, Message::text(bad_kind)).await.0, close::INVALID_PAYLOAD);
    assert_served(server.addr).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_twice_the_limit_closes_1009_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(limits(), dir.path()).await;
    // Raw JSON (Report::new would deflate it): 200 KiB against a limit of 64 KiB.
    let huge = format!(
        r#"{{"type":"report","id":"{}","kind":"log","created_ms":1,"body":["{}"]}}"#,
        EntryId::generate(),
        "x".repeat(200 * 1024)
    );
    let (code, reason) = close_after(&server, Message::text(huge)).await;
    assert_eq!(code, close::TOO_BIG, "{reason}");
    assert_served(server.addr).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_between_the_limit_and_twice_it_is_rejected_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(limits(), dir.path()).await;
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "app").await;
    // Incompressible enough to stay over 64 KiB even deflated: raw JSON, sent as is.
    let big_id = EntryId::generate();
    let big = format!(
        r#"{{"type":"report","id":"{big_id}","kind":"log","created_ms":1,"body":["{}"]}}"#,
        "y".repeat(100 * 1024)
    );
    send(&mut ws, big).await;
    match recv(&mut ws).await {
        ServerMessage::Rejected { id, reason: RejectReason::TooLarge, .. } => assert_eq!(id, big_id),
        other => panic!("expected rejected/too_large, got {other:?}"),
    }
    let id = EntryId::generate();
    send(&mut ws, report_text(id, Kind::Event, "{}")).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Accepted { id });
    bye(ws).await;
    server.stop().await.unwrap();
    assert_eq!(stored_ids(dir.path()).into_iter().collect::<Vec<_>>(), [id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflated_bodies_are_stored_inflated_and_broken_ones_rejected_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(limits(), dir.path()).await;
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "app").await;
    let body = serde_json::to_string(&vec!["a log line that repeats"; 1000]).unwrap();
    let id = EntryId::generate();
    let text = report_text(id, Kind::Log, &body);
    assert!(text.contains(r#""encoding":"deflate""#));
    send(&mut ws, text).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Accepted { id });
    let broken_id = EntryId::generate();
    let broken = format!(
        r#"{{"type":"report","id":"{broken_id}","kind":"log","created_ms":1,"encoding":"deflate","body":"AAAA"}}"#
    );
    send(&mut ws, broken).await;
    match recv(&mut ws).await {
        ServerMessage::Rejected { id, reason: RejectReason::Malformed, .. } => assert_eq!(id, broken_id),
        other => panic!("expected rejected/malformed, got {other:?}"),
    }
    bye(ws).await;
    server.stop().await.unwrap();
    let stored: String = db(dir.path())
        .query_row("SELECT body FROM reports WHERE id = ?1", [id.to_string()], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_unanswered_reports_close_1008_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let store = Faulty::gated(dir.path(), &gate, &Arc::default());
    let server = Server::start(Limits { max_in_flight: 2, ..limits() }, store).await;
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    assert_eq!(hello(&mut ws, "greedy").await.max_in_flight, 2);
    for _ in 0..3 {
        send(&mut ws, report_text(EntryId::generate(), Kind::Event, "{}")).await;
    }
    let (code, reason) = recv_close(&mut ws).await;
    assert_eq!(code, close::POLICY, "{reason}");
    gate.add_permits(1_000);
    assert_served(server.addr).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_problems_close_4400_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(limits(), dir.path()).await;
    // A report first.
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    send(&mut ws, report_text(EntryId::generate(), Kind::Event, "{}")).await;
    assert_eq!(recv_close(&mut ws).await.0, close::BAD_HELLO);
    // Not JSON at all.
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    send(&mut ws, "hello?".into()).await;
    assert_eq!(recv_close(&mut ws).await.0, close::BAD_HELLO);
    // Hello twice.
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "app").await;
    send(&mut ws, hello_text("app")).await;
    assert_eq!(recv_close(&mut ws).await.0, close::BAD_HELLO);
    // A protocol this server does not speak.
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    send(&mut ws, hello_text("app").replace(r#""protocol":1"#, r#""protocol":2"#)).await;
    assert_eq!(recv_close(&mut ws).await.0, close::BAD_HELLO);
    assert_served(server.addr).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hello_in_time_or_idle_closes_4408_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::start_sqlite(Limits { hello_timeout_ms: 300, idle_timeout_ms: 1000, ..limits() }, dir.path())
            .await;
    let mut silent = connect(server.addr, Some(TOKEN)).await.unwrap();
    let (code, reason) = recv_close(&mut silent).await;
    assert_eq!(code, close::TIMEOUT, "{reason}");
    let mut idle = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut idle, "idle").await;
    let (code, reason) = recv_close(&mut idle).await;
    assert_eq!((code, reason.as_str()), (close::TIMEOUT, "idle for 1000 ms"));
    // The same server goes on serving a client that is quick enough.
    assert_served(server.addr).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_with_pongs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(limits(), dir.path()).await;
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "app").await;
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    match tokio::time::timeout(STEP, ws.next()).await.unwrap() {
        Some(Ok(Message::Pong(data))) => assert_eq!(&data[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    bye(ws).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_answered_retry_later_never_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(limits(), Faulty::broken(dir.path())).await;
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "app").await;
    let id = EntryId::generate();
    send(&mut ws, report_text(id, Kind::Crash, &crash_body(1, 1))).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::RetryLater { id, delay_ms: 1000 });
    bye(ws).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_clients_each_report_is_stored_exactly_once() {
    const CLIENTS: usize = 100;
    const REPORTS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(limits(), dir.path()).await;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut ws = connect(addr, Some(TOKEN)).await.unwrap();
            hello(&mut ws, &format!("app-{}", c % 5)).await;
            let ids: Vec<EntryId> = (0..REPORTS).map(|_| EntryId::generate()).collect();
            for (n, id) in ids.iter().enumerate() {
                ws.feed(Message::text(report_text(*id, Kind::Crash, &crash_body(n % 3, n)))).await.unwrap();
            }
            ws.flush().await.unwrap();
            let mut answered = std::collections::HashSet::new();
            for _ in 0..REPORTS {
                match recv(&mut ws).await {
                    ServerMessage::Accepted { id } => assert!(answered.insert(id)),
                    other => panic!("expected accepted, got {other:?}"),
                }
            }
            // The first one once more: a duplicate.
            send(&mut ws, report_text(ids[0], Kind::Crash, &crash_body(0, 0))).await;
            assert_eq!(recv(&mut ws).await, ServerMessage::Duplicate { id: ids[0] });
            bye(ws).await;
            ids
        }));
    }
    let mut all = std::collections::HashSet::new();
    for t in tasks {
        all.extend(tokio::time::timeout(STEP * 2, t).await.unwrap().unwrap());
    }
    server.stop().await.unwrap();
    assert_eq!(all.len(), CLIENTS * REPORTS);
    assert_eq!(stored_ids(dir.path()), all);
    assert_store_consistent(dir.path());
    assert_eq!(scalar(dir.path(), "SELECT sum(count) FROM groups"), (CLIENTS * REPORTS) as i64);
    assert_eq!(scalar(dir.path(), "SELECT count(*) FROM groups"), 15, "5 apps x 3 crash groups");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_what_was_read_then_closes_1001() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let waiting = Arc::new(AtomicUsize::new(0));
    let store = Faulty::gated(dir.path(), &gate, &waiting);
    let server = Server::start(limits(), store).await;
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "app").await;
    let ids: Vec<EntryId> = (0..5).map(|_| EntryId::generate()).collect();
    for id in &ids {
        send(&mut ws, report_text(*id, Kind::Event, "{}")).await;
    }
    // Wait until the committer holds a batch (a write waits at the gate), then stop.
    let deadline = tokio::time::Instant::now() + STEP;
    while waiting.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the committer never took a batch");
        tokio::task::yield_now().await;
    }
    let stopping = tokio::spawn(server.stop());
    gate.add_permits(1_000);
    let mut answered = Vec::new();
    let code = loop {
        match tokio::time::timeout(STEP, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => match serde_json::from_str(&t).unwrap() {
                ServerMessage::Accepted { id } => answered.push(id),
                other => panic!("{other:?}"),
            },
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, close::GOING_AWAY);
    // Read on so that our side of the close handshake goes out.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
    stopping.await.unwrap().unwrap();
    let stored = stored_ids(dir.path());
    assert!(answered.iter().all(|id| stored.contains(id)), "every accepted report is stored");
    assert!(!answered.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_handshake_is_dropped_and_others_are_served() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_sqlite(Limits { handshake_timeout_ms: 500, ..limits() }, dir.path()).await;
    // Half a request line, then silence (slowloris).
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /ingest HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(STEP, tcp.read(&mut buf)).await.expect("dropped in time");
    assert!(matches!(read, Ok(0) | Err(_)), "the server closes the connection: {read:?}");
    assert_served(server.addr).await;
    server.stop().await.unwrap();
}
