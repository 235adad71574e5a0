//! The UI served from a store filled by the test, asked over real HTTP on a loopback port. Every page
//! test runs on both backends (`sqlite::...` and `postgres::...`, a throwaway server of the test's own):
//! the same reports go in through the `Store` trait, and the same pages must come out.

use std::sync::Arc;

use lastword_protocol::{Losses, Software};
use lastword_spool::{EntryId, Kind};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;
use crate::store::{AgentLosses, Batch, NewReport, Origin, Store};
use crate::store::{AnyStore, PostgresStore, SqliteStore};
use lastword_tests::postgres::TempPostgres;

/// Each case as a test on each backend: `sqlite::case` and `postgres::case` (defined before the
/// submodules, which use it too).
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Sqlite).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

mod browser;
mod events;
mod hostile;
mod reading;

pub(super) const XSS: &str = "<script>alert(1)</script><b>bold</b>";

fn origin(app: &str, release: &str) -> Arc<Origin> {
    Arc::new(Origin {
        agent: Software { name: "lastword".into(), version: "0.1.0".into() },
        app: app.into(),
        release: Some(release.into()),
        host: Some("web-3".into()),
    })
}

fn report(
    kind: Kind,
    app: &str,
    release: &str,
    fp: Option<&str>,
    ms: u64,
    summary: &str,
    body: serde_json::Value,
) -> NewReport {
    NewReport {
        id: EntryId::generate(),
        kind,
        origin: origin(app, release),
        created_ms: ms,
        received_ms: ms,
        fingerprint: fp.map(Into::into),
        summary: summary.into(),
        body: body.to_string(),
        waits: Vec::new(),
    }
}

fn panic_body(message: &str, function: &str) -> serde_json::Value {
    json!({
        "type": "panic", "message": message,
        "location": {"file": "src/parse.rs", "line": 42, "column": 9},
        "thread": {"name": "worker", "id": 7},
        "frames": [
            {"function": function, "file": "src/parse.rs", "line": 17, "address": "0x55d1c0a1b2c3"},
            {"function": "shop::main", "file": "src/main.rs", "line": 5, "address": "0x55d1c0a1b000"}
        ],
        "context": {"app": "shop", "release": "1.1", "os": "linux", "arch": "x86_64", "host": "web-3"},
        "breadcrumbs": [
            {"ts_ms": 1_764_165_000_000_u64, "level": "WARN", "target": "shop::db", "message": "slow query <img src=x onerror=alert(2)>"}
        ]
    })
}

/// Which store the test fills and the UI reads.
#[derive(Clone, Copy, Debug)]
pub(super) enum Backend {
    /// The embedded store, in the test's temporary directory.
    Sqlite,
    /// The shared store, on a PostgreSQL server of the test's own.
    Postgres,
}

/// What the tests' store holds.
pub(super) struct Filled {
    pub dir: tempfile::TempDir,
    pub store: AnyStore,
    pub panic_id: EntryId,
    pub signal_id: EntryId,
    pub xss_id: EntryId,
    /// The server of a PostgreSQL store, stopped when the test ends (after the store: declared last).
    _postgres: Option<TempPostgres>,
}

async fn open_store(backend: Backend, dir: &std::path::Path) -> (AnyStore, Option<TempPostgres>) {
    match backend {
        Backend::Sqlite => (AnyStore::Sqlite(SqliteStore::open(dir).expect("a new store")), None),
        Backend::Postgres => {
            let pg = tokio::task::spawn_blocking(TempPostgres::start).await.expect("the server starts");
            let url = pg.create_database("ui");
            let store = PostgresStore::open(&url).await.expect("a new database store");
            (AnyStore::Postgres(store), Some(pg))
        }
    }
}

/// A store with: a panic group of 3 reports over releases 1.0 and 1.1; a signal crash with raw frames;
/// a report made of HTML and script; 55 crashes of one group (paging); 52 small groups of app `bulk`;
/// two log batches; one agent's losses.
pub(super) async fn filled(backend: Backend) -> Filled {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (store, postgres) = open_store(backend, dir.path()).await;
    let now = now_ms();
    let mut reports = Vec::new();
    let mut first = None;
    for (i, release) in ["1.0", "1.1", "1.1"].iter().enumerate() {
        let r = report(
            Kind::Crash,
            "shop",
            release,
            Some("fp-parse"),
            now - 3_600_000 * (3 - i as u64),
            "index out of bounds",
            panic_body("index out of bounds: the len is 3 but the index is 7", "shop::parse::field"),
        );
        first.get_or_insert(r.id);
        reports.push(r);
    }
    let panic_id = reports.last().map(|r| r.id).expect("three reports");
    let signal = report(
        Kind::Crash,
        "shop",
        "1.1",
        Some("fp-segv"),
        now - 60_000,
        "SIGSEGV",
        json!({
            "type": "signal", "message": "fatal signal SIGSEGV",
            "signal": {"number": 11, "name": "SIGSEGV", "code": 1, "address": "0xdeadbeef"},
            "frames": [{"address": "0x7f00000012ab", "module": "/usr/lib/libshop.so"}],
            "symbolized": false, "symbolization_error": "libshop.so changed since the crash (build id differs)",
            "context": {"app": "shop", "release": "1.1", "os": "linux", "arch": "x86_64"}
        }),
    );
    let signal_id = signal.id;
    reports.push(signal);
    let xss = report(
        Kind::Crash,
        "shop",
        "1.1",
        Some("fp-xss"),
        now - 30_000,
        XSS,
        panic_body(XSS, "<svg onload=alert(3)>"),
    );
    let xss_id = xss.id;
    reports.push(xss);
    for i in 0..55 {
        reports.push(report(
            Kind::Crash,
            "many",
            "2.0",
            Some("fp-many"),
            now - 1000 - i,
            "many times",
            panic_body("many times", "many::f"),
        ));
    }
    for i in 0..52 {
        let fp = format!("fp-bulk-{i:02}");
        reports.push(report(
            Kind::Crash,
            "bulk",
            "0.1",
            Some(&fp),
            now - 10 * DAY - i,
            &format!("bulk {i:02}"),
            panic_body("bulk", "bulk::f"),
        ));
    }
    let logs = |message: &str, level: &str, ms: u64| {
        json!({"type": "logs", "context": {"app": "shop"}, "dropped_before": 2,
               "records": [{"ts_ms": ms, "level": level, "target": "shop::disk", "message": message}]})
    };
    reports.push(report(
        Kind::Log,
        "shop",
        "1.1",
        None,
        now - 7_200_000,
        "",
        logs("disk full on /var", "ERROR", now - 7_200_000),
    ));
    reports.push(report(
        Kind::Log,
        "shop",
        "1.1",
        None,
        now - 5_000,
        "",
        logs(&format!("started {XSS}"), "INFO", now - 5_000),
    ));
    reports.push(report(
        Kind::Log,
        "other",
        "3.0",
        None,
        now - 4_000,
        "",
        logs("other app says hello", "INFO", now - 4_000),
    ));
    let losses = vec![AgentLosses {
        origin: origin("shop", "1.1"),
        losses: Losses {
            logs_dropped: 11,
            evicted: 3,
            quarantined: 2,
            crash_loop_suppressed: 5,
            events_dropped: 9,
        },
        received_ms: now,
    }];
    // Stored in the order of arrival, as the collector does, with ids made in that order, as the
    // senders' would be: the PostgreSQL store inserts a batch in id order.
    reports.sort_by_key(|r| r.received_ms);
    let mut renamed = std::collections::HashMap::new();
    for r in &mut reports {
        let id = EntryId::generate();
        renamed.insert(r.id, id);
        r.id = id;
    }
    let (panic_id, signal_id, xss_id) = (renamed[&panic_id], renamed[&signal_id], renamed[&xss_id]);
    store.write(Batch { reports, losses }).await.expect("the batch is written");
    Filled { dir, store, panic_id, signal_id, xss_id, _postgres: postgres }
}

const DAY: u64 = 86_400_000;

/// A UI served on a loopback port until the sender is dropped or fired.
pub(super) struct Served {
    pub addr: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
}

pub(super) async fn serve_ui(filled: &Filled, access: Access) -> Served {
    // As `lastword collect --ui` does: the UI's own reader of the collector's store.
    let ui_store = filled.store.reader().await.expect("the store opens read-only");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, ui_store, access, async move {
        let _ = stopped.await;
    }));
    Served { addr, _stop: stop }
}

pub(super) struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One HTTP/1.0 request (no chunked answers, the connection closes at the end).
pub(super) async fn get(addr: std::net::SocketAddr, path: &str, extra: &str) -> Answer {
    request(addr, &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}\r\n")).await
}

pub(super) async fn request(addr: std::net::SocketAddr, text: &str) -> Answer {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("the UI accepts");
    tcp.write_all(text.as_bytes()).await.expect("the request is sent");
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), tcp.read_to_end(&mut raw))
        .await
        .expect("the UI answers in time")
        .expect("the answer is read");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    Answer { status, head: head.to_owned(), body: body.to_owned() }
}

fn assert_in(body: &str, needles: &[&str]) {
    for n in needles {
        assert!(body.contains(n), "{n:?} not in the page:\n{body}");
    }
}

fn rows(body: &str, class: &str) -> usize {
    // Rows of the first table with this class.
    let Some(start) = body.find(&format!("<table class=\"{class}\"")) else { return 0 };
    let table = &body[start..body[start..].find("</table>").map_or(body.len(), |e| start + e)];
    table.matches("<tr").count().saturating_sub(1)
}

async fn each_page_shows_the_stores_content(backend: Backend) {
    let filled = filled(backend).await;
    let ui = serve_ui(&filled, Access::Open).await;

    let home = get(ui.addr, "/", "").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert_in(&home.head.to_ascii_lowercase(), &["content-security-policy: default-src 'none'"]);
    assert_in(
        &home.body,
        &[
            "Reports received per hour",
            "<svg",
            "index out of bounds",
            "SIGSEGV",
            "shop",
            "1.1 (",
            "many",
            "What agents could not deliver",
        ],
    );
    // The losses: logs dropped and events dropped side by side, evicted, quarantined, crash-loop
    // suppressed.
    assert_in(
        &home.body,
        &[
            "<th class=\"num\">Logs dropped</th><th class=\"num\">Events dropped</th>",
            "<td class=\"num\">11</td><td class=\"num\">9</td>",
            "<td class=\"num\">3</td>",
            "<td class=\"num\">2</td>",
            "<td class=\"num\">5</td>",
        ],
    );
    // 3 + 1 + 1 + 55 crashes and 3 log batches in the last 24 hours; the bulk is 10 days old.
    assert_in(&home.body, &["63 reports in the last 24 hours", "56 groups of crashes and events"]);
    assert!(!home.body.contains("bulk 0"), "old groups are not rising");

    let groups = get(ui.addr, "/groups?app=shop", "").await;
    assert_eq!(groups.status, 200);
    assert_eq!(rows(&groups.body, "groups"), 3);
    assert_in(
        &groups.body,
        &["index out of bounds", "<td class=\"num count\">3</td>", "1.0", "panic", "signal"],
    );

    let group = get(ui.addr, "/group?app=shop&fp=fp-parse", "").await;
    assert_eq!(group.status, 200);
    assert_eq!(rows(&group.body, "reports"), 3);
    assert_in(
        &group.body,
        &[
            "Latest report",
            &filled.panic_id.to_string(),
            "shop::parse::field",
            "src/parse.rs:42:9",
            "slow query",
        ],
    );

    let panic = get(ui.addr, &format!("/reports/{}", filled.panic_id), "").await;
    assert_eq!(panic.status, 200);
    assert_in(
        &panic.body,
        &[
            "index out of bounds: the len is 3 but the index is 7",
            "<span class=\"fn\">shop::parse::field</span>",
            "src/parse.rs:17",
            "shop::db",
            "x86_64",
            &format!("/reports/{}/raw.json", filled.panic_id),
        ],
    );

    let signal = get(ui.addr, &format!("/reports/{}", filled.signal_id), "").await;
    assert_in(&signal.body, &["SIGSEGV (11)", "0xdeadbeef", "0x7f00000012ab", "build id differs"]);

    let raw = get(ui.addr, &format!("/reports/{}/raw.json", filled.signal_id), "").await;
    assert_eq!(raw.status, 200);
    assert_in(&raw.head.to_ascii_lowercase(), &["content-type: application/json", "attachment"]);
    let parsed: serde_json::Value = serde_json::from_str(&raw.body).expect("the raw body is JSON");
    assert_eq!(parsed["signal"]["address"], "0xdeadbeef");

    let logs = get(ui.addr, "/logs", "").await;
    assert_eq!(logs.status, 200);
    assert_in(&logs.body, &["disk full on /var", "other app says hello", "2 dropped before this batch"]);

    assert_eq!(get(ui.addr, &format!("/reports/{}", EntryId::generate()), "").await.status, 404);
    assert_eq!(get(ui.addr, "/group?app=shop&fp=nope", "").await.status, 404);
    assert_eq!(get(ui.addr, "/nowhere", "").await.status, 404);
}

async fn html_and_script_in_reports_are_shown_as_text(backend: Backend) {
    let filled = filled(backend).await;
    let ui = serve_ui(&filled, Access::Open).await;
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;";
    for path in [
        format!("/reports/{}", filled.xss_id),
        "/group?app=shop&fp=fp-xss".to_owned(),
        "/groups".to_owned(),
        "/logs?q=started".to_owned(),
        "/".to_owned(),
    ] {
        let page = get(ui.addr, &path, "").await;
        assert_eq!(page.status, 200, "{path}");
        assert_in(&page.body, &[escaped]);
        for raw in ["<script", "<b>bold", "<img", "<svg onload"] {
            assert!(!page.body.contains(raw), "{raw} unescaped in {path}:\n{}", page.body);
        }
    }
    let report = get(ui.addr, &format!("/reports/{}", filled.xss_id), "").await;
    assert_in(&report.body, &["&lt;svg onload=alert(3)&gt;", "&lt;img src=x onerror=alert(2)&gt;"]);
}

async fn lists_are_paged(backend: Backend) {
    let filled = filled(backend).await;
    let ui = serve_ui(&filled, Access::Open).await;
    let first = get(ui.addr, "/group?app=many&fp=fp-many", "").await;
    assert_eq!(rows(&first.body, "reports"), 50);
    let next = first
        .body
        .split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a next link");
    let second = get(ui.addr, &next.replace("&amp;", "&"), "").await;
    assert_eq!(second.status, 200);
    assert_eq!(rows(&second.body, "reports"), 5);
    assert!(!second.body.contains("rel=\"next\""));

    let groups = get(ui.addr, "/groups?app=bulk&sort=title&order=asc", "").await;
    assert_eq!(rows(&groups.body, "groups"), 50);
    assert!(groups.body.find("bulk 00").expect("first") < groups.body.find("bulk 49").expect("last"));
    assert!(!groups.body.contains("bulk 50"));
    let rest = get(ui.addr, "/groups?app=bulk&sort=title&order=asc&offset=50", "").await;
    assert_eq!(rows(&rest.body, "groups"), 2);
    assert_in(&rest.body, &["bulk 50", "bulk 51", "rel=\"prev\""]);
}

async fn filters_and_sorting_narrow_the_lists(backend: Backend) {
    let filled = filled(backend).await;
    let ui = serve_ui(&filled, Access::Open).await;
    let signals = get(ui.addr, "/groups?kind=signal", "").await;
    assert_eq!(rows(&signals.body, "groups"), 1);
    assert_in(&signals.body, &["SIGSEGV"]);
    let release = get(ui.addr, "/groups?release=1.0", "").await;
    assert_eq!(rows(&release.body, "groups"), 1);
    assert_in(&release.body, &["index out of bounds"]);
    let by_count = get(ui.addr, "/groups?sort=count&order=desc", "").await;
    assert!(
        by_count.body.find("many times").expect("many")
            < by_count.body.find("index out of bounds").expect("parse")
    );

    let errors = get(ui.addr, "/logs?level=WARN", "").await;
    assert_in(&errors.body, &["disk full on /var"]);
    assert!(!errors.body.contains("other app says hello"));
    let other = get(ui.addr, "/logs?app=other", "").await;
    assert_in(&other.body, &["other app says hello"]);
    assert!(!other.body.contains("disk full"));
    let text = get(ui.addr, "/logs?q=DISK+FULL", "").await;
    assert_in(&text.body, &["disk full on /var"]);
    assert!(!text.body.contains("other app says hello"));
    // LIKE's wildcards are searched for as text: nothing here holds a % or an _.
    for wild in ["%25", "disk_full", "%25disk"] {
        let none = get(ui.addr, &format!("/logs?q={wild}"), "").await;
        assert_eq!(none.status, 200);
        for message in ["disk full on /var", "other app says hello", "started"] {
            assert!(!none.body.contains(message), "{message:?} matched q={wild}");
        }
    }
    let to = utc_input(now_ms() - 3_600_000);
    let old = get(ui.addr, &format!("/logs?to={to}"), "").await;
    assert_in(&old.body, &["disk full on /var"]);
    assert!(!old.body.contains("other app says hello"));
}

on_both_stores!(
    each_page_shows_the_stores_content,
    html_and_script_in_reports_are_shown_as_text,
    lists_are_paged,
    filters_and_sorting_narrow_the_lists,
    off_loopback_the_ui_requires_a_login,
);

fn utc_input(ms: u64) -> String {
    crate::query::utc(ms).replacen(' ', "T", 1).replace(':', "%3A")
}

async fn off_loopback_the_ui_requires_a_login(backend: Backend) {
    let anywhere: SocketAddr = "0.0.0.0:8701".parse().expect("an address");
    assert!(matches!(Access::for_addr(anywhere, None), Err(UiError::NoToken { .. })));
    assert!(matches!(
        Access::for_addr("127.0.0.1:8701".parse().expect("an address"), None),
        Ok(Access::Open)
    ));
    assert!(matches!(Access::for_addr("[::1]:8701".parse().expect("an address"), None), Ok(Access::Open)));
    let access = Access::for_addr(anywhere, Some("s3cret".into())).expect("a token is enough");

    let filled = filled(backend).await;
    let ui = serve_ui(&filled, access).await;
    let denied = get(ui.addr, "/", "").await;
    assert_eq!(denied.status, 401);
    assert_in(&denied.head.to_ascii_lowercase(), &["www-authenticate: basic"]);
    assert_in(&denied.body, &["Log in"]);
    assert!(!denied.body.contains("Reports received"));
    assert_eq!(get(ui.addr, &format!("/reports/{}/raw.json", filled.panic_id), "").await.status, 401);
    let wrong = base64::engine::general_purpose::STANDARD.encode("me:guess");
    assert_eq!(get(ui.addr, "/", &format!("Authorization: Basic {wrong}\r\n")).await.status, 401);
    let right = base64::engine::general_purpose::STANDARD.encode("me:s3cret");
    assert_eq!(get(ui.addr, "/", &format!("Authorization: Basic {right}\r\n")).await.status, 200);

    let bad = request(ui.addr, &login_request(ui.addr, "token=nope")).await;
    assert_eq!(bad.status, 401);
    let good = request(ui.addr, &login_request(ui.addr, "token=s3cret")).await;
    assert_eq!(good.status, 303);
    let cookie = good
        .head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .expect("a login cookie")
        .to_owned();
    assert!(!cookie.contains("s3cret"), "the cookie is not the token");
    assert_eq!(get(ui.addr, "/groups", &format!("Cookie: {cookie}\r\n")).await.status, 200);
    assert_eq!(get(ui.addr, "/groups", "Cookie: lastword_ui=forged\r\n").await.status, 401);
}

pub(super) fn login_request(addr: std::net::SocketAddr, form: &str) -> String {
    format!(
        "POST /login HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{form}",
        form.len()
    )
}

#[test]
fn a_token_comes_from_its_file_or_the_environment() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("ui-token");
    std::fs::write(&file, "# the UI token\n\n  abc  \n").expect("written");
    assert_eq!(Access::load_token(Some(&file), Some("env")).expect("read"), Some("abc".into()));
    assert_eq!(Access::load_token(None, Some(" env ")).expect("read"), Some("env".into()));
    assert_eq!(Access::load_token(None, None).expect("read"), None);
    std::fs::write(&file, "# nothing\n").expect("written");
    assert!(Access::load_token(Some(&file), None).is_err());
}
