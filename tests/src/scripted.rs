//! A scripted collector for the uploader's tests: it speaks protocol v1 and can be told to stall,
//! answer late, ask for a retry, reject, or drop the connection, which the real collector never does
//! on purpose. Exactly-once storage is checked on its record of ids.
//!
//! Test support: it panics on anything unexpected, which is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err, missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use lastword::protocol::{
    ClientMessage, PROTOCOL_VERSION, RejectReason, SUBPROTOCOL, ServerMessage, Software, Welcome,
    parse_bearer,
};
use lastword::spool::EntryId;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

/// What the collector does with each report it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Store and answer accepted (or duplicate).
    Accept,
    /// Read and never answer.
    Stall,
    /// Answer retry_later with this delay the first time an id is seen, then accept.
    RetryOnce(u64),
    /// Answer retry_later (with `delay_ms`) the first `times` times an id is seen, then accept.
    RetryTimes { times: usize, delay_ms: u64 },
    /// Answer rejected.
    Reject,
    /// Store the first n reports of each connection, then drop the connection without answering.
    DropAfter(usize),
    /// Answer accepted after this many milliseconds.
    Slow(u64),
    // Behaviours of the flush, exit and configuration-error tests (tests/tests/flush.rs, exit.rs).
    /// Answer retry_later with this delay to every report, every time: nothing is ever stored.
    RetryAlways(u64),
}

#[derive(Default)]
pub struct Record {
    /// Ids stored (the value is always 1: a copy is not stored again).
    pub stored: HashMap<EntryId, u32>,
    /// The body of each stored report, as JSON text (inflated if it came compressed).
    pub bodies: HashMap<EntryId, String>,
    /// Copies answered duplicate.
    pub duplicates: u32,
    /// Every report received, in order, with its arrival time.
    pub received: Vec<(EntryId, Instant)>,
    /// Connections accepted.
    pub connections: u32,
    /// Most reports unanswered at once on one connection.
    pub max_unanswered: usize,
    /// Hellos received.
    pub hellos: Vec<lastword::protocol::Hello>,
    /// Websocket handshakes attempted, refused ones (a wrong token or path) included.
    pub handshakes: u32,
}

pub struct TestCollector {
    pub addr: SocketAddr,
    pub record: Arc<Mutex<Record>>,
    behaviour: Arc<Mutex<Behaviour>>,
    runtime: Option<tokio::runtime::Runtime>,
}

pub const TOKEN: &str = "test-token";

impl TestCollector {
    pub fn start(behaviour: Behaviour) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), behaviour)
    }

    pub fn start_on(addr: SocketAddr, behaviour: Behaviour) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind(addr)).unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (r, b) = (record.clone(), behaviour.clone());
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                tokio::spawn(serve(tcp, r.clone(), b.clone()));
            }
        });
        Self { addr, record, behaviour, runtime: Some(runtime) }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ingest", self.addr)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn stored_ids(&self) -> HashMap<EntryId, u32> {
        self.record.lock().unwrap().stored.clone()
    }

    pub fn received(&self) -> usize {
        self.record.lock().unwrap().received.len()
    }

    /// Waits until `f` holds on the record, or panics after `limit`.
    pub fn wait_for(&self, limit: Duration, what: &str, f: impl Fn(&Record) -> bool) {
        let start = Instant::now();
        while !f(&self.record.lock().unwrap()) {
            assert!(start.elapsed() < limit, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops listening and drops every connection.
    pub fn stop(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn serve(tcp: tokio::net::TcpStream, record: Arc<Mutex<Record>>, behaviour: Arc<Mutex<Behaviour>>) {
    let counter = record.clone();
    let check = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        counter.lock().unwrap().handshakes += 1;
        // PROTOCOL.md: another path than /ingest is refused with 404.
        if req.uri().path() != "/ingest" {
            let mut e = ErrorResponse::new(Some("no such path".into()));
            *e.status_mut() = StatusCode::NOT_FOUND;
            return Err(e);
        }
        let token = req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(parse_bearer);
        if token != Some(TOKEN) {
            let mut e = ErrorResponse::new(Some("bad token".into()));
            *e.status_mut() = StatusCode::UNAUTHORIZED;
            return Err(e);
        }
        resp.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(SUBPROTOCOL));
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else { return };
    record.lock().unwrap().connections += 1;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ServerMessage>();
    // One task owns the sink.
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(Message::text(serde_json::to_string(&m).unwrap())).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let unanswered = Arc::new(Mutex::new(0usize));
    let mut on_this_connection = 0usize;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        match ClientMessage::from_json(text.as_str()).unwrap() {
            ClientMessage::Hello(h) => {
                record.lock().unwrap().hellos.push(h);
                let _ = tx.send(ServerMessage::Welcome(Welcome {
                    protocol: PROTOCOL_VERSION,
                    server: Software { name: "test".into(), version: "0".into() },
                    max_message_bytes: 1 << 20,
                    max_in_flight: 64,
                    idle_timeout_ms: 60_000,
                    max_inflated_bytes: None,
                }));
            }
            ClientMessage::Report(r) => {
                on_this_connection += 1;
                let id = r.id;
                let body = r.body_json().unwrap();
                let behaviour = *behaviour.lock().unwrap();
                {
                    let mut rec = record.lock().unwrap();
                    rec.received.push((id, Instant::now()));
                    let mut u = unanswered.lock().unwrap();
                    *u += 1;
                    rec.max_unanswered = rec.max_unanswered.max(*u);
                }
                let store = move |record: &Arc<Mutex<Record>>| {
                    let mut rec = record.lock().unwrap();
                    // Exactly-once in the store: a second copy is answered duplicate and not stored.
                    if rec.stored.insert(id, 1).is_none() {
                        rec.bodies.insert(id, body.clone());
                        ServerMessage::Accepted { id }
                    } else {
                        rec.duplicates += 1;
                        ServerMessage::Duplicate { id }
                    }
                };
                let answer = match behaviour {
                    Behaviour::Accept => Some(store(&record)),
                    Behaviour::Stall => None,
                    Behaviour::RetryOnce(delay_ms) => {
                        let seen = record.lock().unwrap().received.iter().filter(|(i, _)| *i == id).count();
                        if seen == 1 {
                            Some(ServerMessage::RetryLater { id, delay_ms })
                        } else {
                            Some(store(&record))
                        }
                    }
                    Behaviour::RetryTimes { times, delay_ms } => {
                        let seen = record.lock().unwrap().received.iter().filter(|(i, _)| *i == id).count();
                        if seen <= times {
                            Some(ServerMessage::RetryLater { id, delay_ms })
                        } else {
                            Some(store(&record))
                        }
                    }
                    Behaviour::Reject => Some(ServerMessage::Rejected {
                        id,
                        reason: RejectReason::Malformed,
                        detail: "test".into(),
                    }),
                    Behaviour::DropAfter(n) => {
                        if on_this_connection > n {
                            writer.abort();
                            return;
                        }
                        Some(store(&record))
                    }
                    Behaviour::RetryAlways(delay_ms) => Some(ServerMessage::RetryLater { id, delay_ms }),
                    Behaviour::Slow(ms) => {
                        let (tx, record, unanswered) = (tx.clone(), record.clone(), unanswered.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            let answer = store(&record);
                            *unanswered.lock().unwrap() -= 1;
                            let _ = tx.send(answer);
                        });
                        None
                    }
                };
                if let Some(a) = answer {
                    *unanswered.lock().unwrap() -= 1;
                    let _ = tx.send(a);
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
