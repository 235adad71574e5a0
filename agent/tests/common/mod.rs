//! What the collector's end-to-end tests share: a small protocol client, an in-process server, the real
//! binary as a child process, and looks into the SQLite file.

#![allow(dead_code, reason = "each test binary uses a part of this module")]
#![allow(clippy::unwrap_used, reason = "test support: a failure here is a test failure")]

use std::collections::HashSet;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use lastword::protocol::{
    ClientMessage, Hello, Losses, PROTOCOL_VERSION, Report, SUBPROTOCOL, ServerMessage, Software, Welcome,
    bearer,
};
use lastword_collector::server::{self as collect, CollectError, Config, Limits, Tokens};
use lastword_collector::store::{self, SqliteStore, Waits};
use lastword_spool::{EntryId, Kind};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The token the tests' servers accept.
pub const TOKEN: &str = "test-token-1";
/// A second valid token.
pub const TOKEN_2: &str = "test-token-2";
/// The longest any single wait in a test may take.
pub const STEP: Duration = Duration::from_secs(15);

/// A websocket client stream.
pub type Ws<S = TcpStream> = WebSocketStream<S>;

/// An upgrade request for `url` with the subprotocol and, if given, the bearer token.
pub fn request(url: &str, token: Option<&str>) -> Request {
    let mut req = url.into_client_request().expect("a valid test URL");
    let headers = req.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
    if let Some(token) = token {
        headers.insert("Authorization", HeaderValue::from_str(&bearer(token)).unwrap());
    }
    req
}

/// Connects to `ws://addr/ingest` with `token`.
pub async fn connect(addr: SocketAddr, token: Option<&str>) -> Result<Ws, WsError> {
    connect_request(addr, request(&format!("ws://{addr}/ingest"), token)).await
}

/// Connects with a request of one's own.
pub async fn connect_request(addr: SocketAddr, req: Request) -> Result<Ws, WsError> {
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr)).await.expect("connect in time")?;
    let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("handshake in time")?;
    Ok(ws)
}

/// The HTTP status of a refused handshake.
pub fn refused_status(result: Result<Ws, WsError>) -> (u16, Option<String>) {
    match result {
        Err(WsError::Http(response)) => (
            response.status().as_u16(),
            response.headers().get("Retry-After").and_then(|v| v.to_str().ok()).map(str::to_owned),
        ),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got a websocket"),
    }
}

/// A hello message for `app`.
pub fn hello_text(app: &str) -> String {
    ClientMessage::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        agent: Software { name: "lastword-test".into(), version: "0".into() },
        app: app.into(),
        release: Some("1.0".into()),
        host: Some("test-host".into()),
        losses: Losses {
            logs_dropped: 1,
            evicted: 2,
            quarantined: 3,
            crash_loop_suppressed: 4,
            events_dropped: 5,
        },
    })
    .to_json()
}

/// A crash body whose fingerprint is `group`.
pub fn crash_body(group: usize, n: usize) -> String {
    format!(
        r#"{{"message":"crash {group}","n":{n},"frames":[{{"function":"f{group}"}},{{"function":"main"}}]}}"#
    )
}

/// A report message.
pub fn report_text(id: EntryId, kind: Kind, body: &str) -> String {
    ClientMessage::Report(Report::new(id, kind, 1_764_165_000_000, body.as_bytes()).unwrap()).to_json()
}

/// Sends a text message.
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>, text: String) {
    tokio::time::timeout(STEP, ws.send(Message::text(text))).await.expect("send in time").expect("send");
}

/// The next protocol message (pings and pongs skipped); panics on a close or an error.
pub async fn recv<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>) -> ServerMessage {
    loop {
        let next = tokio::time::timeout(STEP, ws.next()).await.expect("a message in time");
        match next {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("a server message"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame, then on to the end of the stream so that the client's side of
/// the close handshake goes out; returns the code and reason.
pub async fn recv_close<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>) -> (u16, String) {
    let closed = loop {
        let next = tokio::time::timeout(STEP, ws.next()).await.expect("a close in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => break (u16::from(frame.code), frame.reason.to_string()),
            Some(Ok(Message::Close(None))) => break (1005, String::new()),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
    closed
}

/// Sends the hello and returns the welcome.
pub async fn hello<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>, app: &str) -> Welcome {
    send(ws, hello_text(app)).await;
    match recv(ws).await {
        ServerMessage::Welcome(w) => w,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Ends a connection cleanly: close 1000 and read until the server's close.
pub async fn bye<S: AsyncRead + AsyncWrite + Unpin>(mut ws: Ws<S>) {
    let _ = ws.close(None).await;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
}

/// Checks that a well-behaved client is served: welcome, then `accepted` for a new report.
pub async fn assert_served(addr: SocketAddr) -> EntryId {
    let mut ws = connect(addr, Some(TOKEN)).await.expect("a good client connects");
    hello(&mut ws, "good").await;
    let id = EntryId::generate();
    send(&mut ws, report_text(id, Kind::Event, r#"{"message":"still served"}"#)).await;
    assert_eq!(recv(&mut ws).await, ServerMessage::Accepted { id });
    bye(ws).await;
    id
}

/// A collector running in this process, on a port from the OS.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), CollectError>>,
}

impl Server {
    /// Starts a collector with `limits` over `store`.
    pub async fn start<S: Waits>(limits: Limits, store: S) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config { tokens: Tokens::from_list([TOKEN, TOKEN_2]), tls: None, limits, symbols: None };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(collect::run(listener, config, store, async move {
            let _ = stopped.await;
        }));
        Server { addr, stop: Some(stop), task }
    }

    /// Starts a collector with a SQLite store in `dir`.
    pub async fn start_sqlite(limits: Limits, dir: &Path) -> Server {
        Server::start(limits, SqliteStore::open(dir).unwrap()).await
    }

    /// Triggers the shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), CollectError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(STEP, &mut self.task).await.expect("the server stops in time").expect("no panic")
    }
}

/// Opens the store file of `dir` for checks.
pub fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(store::sqlite::FILE_NAME)).unwrap()
}

/// The ids stored in `dir`.
pub fn stored_ids(dir: &Path) -> HashSet<EntryId> {
    let conn = db(dir);
    let mut stmt = conn.prepare("SELECT id FROM reports").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(|id| id.unwrap().parse().unwrap()).collect()
}

/// One number from the store in `dir`.
pub fn scalar(dir: &Path, sql: &str) -> i64 {
    db(dir).query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Checks the store's own invariants: one row per id, and every group's count equal to the number of
/// its crashes.
pub fn assert_store_consistent(dir: &Path) {
    assert_eq!(
        scalar(dir, "SELECT count(*) FROM reports"),
        scalar(dir, "SELECT count(DISTINCT id) FROM reports")
    );
    let off = scalar(
        dir,
        "SELECT count(*) FROM groups g WHERE g.count != (SELECT count(*) FROM reports r
            WHERE r.app = g.app AND r.fingerprint = g.fingerprint)",
    );
    assert_eq!(off, 0, "every group counts exactly its stored crashes");
}

/// The `lastword collect` binary running as a child process.
pub struct Collector {
    /// The child.
    pub child: Child,
    /// Its address, from its first stdout line.
    pub addr: SocketAddr,
    /// Its URL.
    pub url: String,
    /// The next lines of its stdout (such as `web UI on http://ADDR/`), as it writes them.
    pub stdout: std::sync::mpsc::Receiver<String>,
}

/// The path of the `lastword` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lastword"))
}

/// `lastword drain --deadline DEADLINE --app APP --spool SPOOL` to `collector` with [`TOKEN`], as a
/// deployment runs the sidecar: its exit code and stderr.
pub fn sidecar_drain(
    spool: &Path,
    collector: &Collector,
    app: &str,
    deadline: &str,
) -> (Option<i32>, String) {
    let out = Command::new(binary())
        .args(["drain", "--deadline", deadline, "--app", app, "--url", &collector.url])
        .arg("--spool")
        .arg(spool)
        .env("LASTWORD_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

impl Collector {
    /// Starts `lastword collect --listen 127.0.0.1:0 --store dir` with `extra` arguments and the tokens
    /// in LASTWORD_TOKENS, and waits for its listening line.
    pub fn start(dir: &Path, extra: &[&str]) -> Collector {
        let mut child = Command::new(binary())
            .args(["collect", "--listen", "127.0.0.1:0", "--store"])
            .arg(dir)
            .args(extra)
            .env("LASTWORD_TOKENS", format!("{TOKEN},{TOKEN_2}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the lastword binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx.recv_timeout(STEP).expect("the listening line in time");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("odd first line {line:?}"))
            .to_owned();
        let hostport = url.split("://").nth(1).and_then(|r| r.strip_suffix("/ingest")).unwrap();
        let addr = hostport.parse().unwrap();
        Collector { child, addr, url, stdout: rx }
    }

    /// Waits for the process to exit, at most `STEP`.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "the collector did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
