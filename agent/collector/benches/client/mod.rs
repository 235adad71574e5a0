//! The benchmarks' client side: 1 KiB crash reports sent over websocket connections with the window
//! uploaders use, and every answer awaited. Shared by the ingest and scale-out benchmarks.

#![allow(dead_code, reason = "each benchmark uses a part of this module")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use lastword_collector::server as collect;
use lastword_protocol::{SUBPROTOCOL, bearer};
use lastword_spool::EntryId;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub const TOKEN: &str = "bench-token";
/// Reports a connection keeps unanswered: what the collector's welcome allows by default.
pub const WINDOW: u64 = collect::DEFAULT_MAX_IN_FLIGHT as u64;

/// A websocket client stream.
pub type Ws = WebSocketStream<TcpStream>;

/// A report message of about 1 KiB (the body is a crash with a message and frames), split around its id
/// so that making one costs the client little: the figures are the servers', not the client's.
pub struct Template {
    head: String,
    tail: String,
}

impl Template {
    pub fn new() -> Self {
        let frames: Vec<String> =
            (0..12).map(|i| format!(r#"{{"function":"app::module::function_{i}","line":{i}}}"#)).collect();
        let tail = format!(
            r#"","kind":"crash","created_ms":1764165000000,"body":{{"message":"panicked at src/worker.rs:17: index out of bounds","thread":"worker-3","frames":[{}],"pad":"{}"}}}}"#,
            frames.join(","),
            "p".repeat(330)
        );
        Self { head: r#"{"type":"report","id":""#.to_owned(), tail }
    }

    pub fn report(&self) -> String {
        let mut id = [0u8; 26];
        EntryId::generate().encode(&mut id);
        let mut text = String::with_capacity(self.head.len() + 26 + self.tail.len());
        text.push_str(&self.head);
        text.push_str(std::str::from_utf8(&id).unwrap());
        text.push_str(&self.tail);
        text
    }
}

/// Connects, says hello and reads the welcome.
pub async fn connect(addr: SocketAddr) -> Ws {
    let mut request = format!("ws://{addr}/ingest").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
    request.headers_mut().insert("Authorization", HeaderValue::from_str(&bearer(TOKEN)).unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    let hello = r#"{"type":"hello","protocol":1,"agent":{"name":"bench","version":"0"},"app":"bench"}"#;
    ws.send(Message::text(hello)).await.unwrap();
    ws.next().await.unwrap().unwrap(); // the welcome (or the echo's answer)
    ws
}

/// Sends `n` reports on `ws` with up to WINDOW unanswered, and waits for every answer.
pub async fn pump(mut ws: Ws, n: u64, expect_accepted: bool) -> Ws {
    static TEMPLATE: std::sync::LazyLock<Template> = std::sync::LazyLock::new(Template::new);
    let (mut sent, mut answered) = (0, 0);
    while answered < n {
        while sent < n && sent - answered < WINDOW {
            ws.feed(Message::text(TEMPLATE.report())).await.unwrap();
            sent += 1;
        }
        ws.flush().await.unwrap();
        let mut check = |m: Message| {
            let text = m.into_text().unwrap();
            assert!(!expect_accepted || text.starts_with(r#"{"type":"accepted""#), "{text}");
            answered += 1;
        };
        check(ws.next().await.unwrap().unwrap());
        while let Some(Some(Ok(m))) = ws.next().now_or_never() {
            check(m);
        }
    }
    ws
}

/// Sends `total` reports spread over the connections; returns the time it took.
pub async fn round(pool: &mut Vec<Ws>, total: u64, expect_accepted: bool) -> Duration {
    let k = pool.len() as u64;
    let start = Instant::now();
    let tasks: Vec<_> = pool
        .drain(..)
        .enumerate()
        .map(|(i, ws)| {
            let n = total / k + u64::from((i as u64) < total % k);
            tokio::spawn(pump(ws, n, expect_accepted))
        })
        .collect();
    for t in tasks {
        pool.push(t.await.unwrap());
    }
    start.elapsed()
}
