//! The uploader's thread: connection loop, the session with its window of unanswered reports, and the
//! shutdown phases.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use lastword_spool::{Claim, EntryId, Spool};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::backoff::Backoff;
use super::connection::{ConnectError, Connected, Ws, connect};
use super::{Control, FlushError, Level, Prepared, Progress, Summary, UploaderConfig};
use crate::protocol::{ClientMessage, Losses, Report, ServerMessage};

type Sink = SplitSink<Ws, Message>;
/// Deletes of acknowledged entries running on the blocking pool: each id with its outcome.
type AckTask = tokio::task::JoinHandle<Vec<(EntryId, Result<(), String>)>>;
type Stream = SplitStream<Ws>;

/// The most entries one claim task takes: a window is filled in chunks of a quarter of it, at most
/// this many, so that sending starts while the rest of the window is still being read from disk.
const MAX_CLAIM_CHUNK: usize = 64;

/// How long the session waits before claiming again after the spool failed a claim.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// How many batches of deletes may run in the background at once.
const MAX_ACK_TASKS: usize = 6;

/// Batches of deletes running in the background, oldest first.
#[derive(Default)]
struct AckTasks {
    tasks: std::collections::VecDeque<AckTask>,
}

impl AckTasks {
    /// The oldest batch if it is done, or if `adding` more would make more than [`MAX_ACK_TASKS`].
    fn pop_front_if_finished_or_full(&mut self, adding: usize) -> Option<AckTask> {
        let front = self.tasks.front()?;
        if front.is_finished() || self.tasks.len() + adding > MAX_ACK_TASKS {
            self.tasks.pop_front()
        } else {
            None
        }
    }
}

/// What a claim task took.
#[derive(Default)]
struct Claimed {
    claims: Vec<Claim>,
    /// The spool had no more ready entries (as this handle sees it).
    empty: bool,
    /// The session's count of reasons to look for work when the task started: an `empty` is stale
    /// if a wake-up (a new entry, a flush, a rescan) came while the task ran.
    generation: u64,
}

/// Claims being taken from the spool on the blocking pool. Only one runs at a time, started for at
/// most the window's free places: its entries count in the window from the moment it starts.
struct ClaimTask(tokio::task::JoinHandle<Result<Claimed, String>>);

impl ClaimTask {
    /// Waits for the task in `slot` and empties the slot; pending forever when there is none (for
    /// `select!`).
    ///
    /// # Cancel safety
    /// Cancel-safe: the slot is emptied in the same poll that takes the result, so if this future is
    /// dropped first the task goes on and is still in the slot.
    async fn finish(slot: &mut Option<ClaimTask>) -> Result<Claimed, String> {
        let Some(task) = slot.as_mut() else { return std::future::pending().await };
        let result = (&mut task.0).await.map_err(|e| format!("claim task failed: {e}"));
        *slot = None;
        result.and_then(|r| r)
    }

    /// Waits for the task until `limit`; the claims it took, or none when it failed (a failed task
    /// dropped its claims, which put them back) or is still running at `limit` (it goes on by
    /// itself, and its claims go back to ready/ when it ends: nobody receives them).
    async fn join(self, limit: Instant) -> Result<Vec<Claim>, String> {
        match tokio::time::timeout_at(limit, self.0).await {
            Ok(Ok(Ok(claimed))) => Ok(claimed.claims),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(e)) => Err(format!("claim task failed: {e}")),
            Err(_) => Err("the claim task did not end in time; its claims go back when it does".into()),
        }
    }
}

pub(crate) struct Worker {
    spool: Spool,
    config: UploaderConfig,
    rx: UnboundedReceiver<Control>,
    progress: Arc<Progress>,
    /// Set by the owner's shutdown: the deadline of the phases.
    stopping: Option<Instant>,
    flushes: Vec<Flush>,
    woken: bool,
    backoff: Backoff,
    url_index: usize,
    pause_until: Option<Instant>,
    /// Entries claimed by this uploader and neither delivered nor quarantined yet.
    outstanding: HashSet<EntryId>,
    last_rescan: Instant,
    /// Deletes of acknowledged entries running in the background, oldest first.
    pending_acks: AckTasks,
}

/// A pending flush request.
struct Flush {
    deadline: Instant,
    crashes_only: bool,
    reply: mpsc::Sender<Result<(), FlushError>>,
}

/// How a session ended.
enum End {
    /// Idle, or shutting down: a clean close.
    Clean,
    /// The connection failed.
    Failed(String),
}

impl Worker {
    pub fn new(
        spool: Spool,
        config: UploaderConfig,
        rx: UnboundedReceiver<Control>,
        progress: Arc<Progress>,
    ) -> Self {
        let backoff = Backoff::new(config.backoff_initial, config.backoff_max);
        Self {
            spool,
            config,
            rx,
            progress,
            stopping: None,
            flushes: Vec::new(),
            woken: true,
            backoff,
            url_index: 0,
            pause_until: None,
            outstanding: HashSet::new(),
            last_rescan: Instant::now(),
            pending_acks: AckTasks::default(),
        }
    }

    fn diag(&self, level: Level, message: impl FnOnce() -> String) {
        if let Some(d) = &self.config.diagnostics {
            d(level, &message());
        }
    }

    fn record_error(&self, message: String) {
        self.diag(Level::Warn, || message.clone());
        if let Ok(mut last) = self.progress.last_error.lock() {
            *last = Some(message);
        }
    }

    /// The connection loop. Returns when the owner asked for shutdown (or dropped the handle).
    pub async fn run(mut self) -> Summary {
        while self.stopping.is_none() {
            self.expire_flushes();
            if !self.has_work().await {
                self.answer_flushes(Ok(()));
                self.wait_idle(None).await;
                continue;
            }
            if let Some(until) = self.pause_until {
                if Instant::now() < until {
                    self.wait_idle(Some(until)).await;
                    continue;
                }
                self.pause_until = None;
            }
            let url = self.config.urls[self.url_index % self.config.urls.len()].clone();
            let losses = self.losses().await;
            let config = self.config.clone();
            let connected = tokio::select! {
                biased;
                // Shutdown during a connection attempt: nothing is claimed yet, just stop.
                stop = self.next_shutdown() => { self.stopping = Some(stop); break; }
                c = timeout(config.connect_timeout, connect(&url, &config, losses)) => c,
            };
            match connected {
                Ok(Ok(conn)) => {
                    self.progress.connections.fetch_add(1, Ordering::SeqCst);
                    self.progress.connected.store(true, Ordering::SeqCst);
                    self.diag(Level::Info, || format!("connected to {url}"));
                    let delivered_before = self.progress.delivered.load(Ordering::SeqCst);
                    let end = self.session(conn).await;
                    self.progress.connected.store(false, Ordering::SeqCst);
                    let progressed = self.progress.delivered.load(Ordering::SeqCst) > delivered_before;
                    if progressed {
                        self.backoff.reset();
                    }
                    if let End::Failed(reason) = end {
                        self.record_error(format!("connection to {url} lost: {reason}"));
                        self.url_index += 1;
                        if !progressed {
                            self.pause_until = Some(Instant::now() + self.backoff.next_wait());
                        }
                    }
                }
                Ok(Err(e)) => {
                    let retry_after = match &e {
                        ConnectError::Busy { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    self.connect_failed(e.to_string(), retry_after);
                }
                Err(_) => self.connect_failed(format!("timed out connecting to {url}"), None),
            }
        }
        self.answer_flushes(Err(FlushError::Stopped));
        self.forget_delivered_by_others().await;
        self.diag(Level::Info, || "uploader stopped".into());
        self.progress.outstanding.store(self.outstanding.len() as u64, Ordering::SeqCst);
        self.progress.summary(false)
    }

    /// Entries this uploader put back (a lost connection) may have been delivered since by another
    /// agent on the same spool. Only those still waiting in the spool count as put back.
    async fn forget_delivered_by_others(&mut self) {
        if self.outstanding.is_empty() {
            return;
        }
        let view = self.spool.view();
        let listed = tokio::task::spawn_blocking(move || view.list()).await;
        if let Ok(Ok(listed)) = listed {
            let waiting: HashSet<EntryId> = listed
                .into_iter()
                .filter(|e| {
                    matches!(e.state, lastword_spool::EntryState::Ready | lastword_spool::EntryState::Claimed)
                })
                .filter_map(|e| e.id)
                .collect();
            self.outstanding.retain(|id| waiting.contains(id));
        }
    }

    fn connect_failed(&mut self, reason: String, retry_after: Option<Duration>) {
        self.record_error(reason);
        self.url_index += 1;
        // Fail over to the next URL at once; after a whole round of failures, back off.
        if self.url_index % self.config.urls.len() == 0 {
            let wait = self.backoff.next_wait().max(retry_after.unwrap_or_default());
            self.pause_until = Some(Instant::now() + wait);
        }
    }

    /// Waits for the next shutdown request, handling other controls meanwhile.
    async fn next_shutdown(&mut self) -> Instant {
        loop {
            match self.rx.recv().await {
                Some(Control::Shutdown { deadline }) => return Instant::from_std(deadline),
                Some(other) => self.control(other),
                None => return Instant::now(),
            }
        }
    }

    fn control(&mut self, control: Control) {
        match control {
            Control::Wake => self.woken = true,
            Control::Flush { deadline, crashes_only, reply } => {
                self.woken = true;
                self.flushes.push(Flush { deadline: Instant::from_std(deadline), crashes_only, reply });
            }
            Control::Shutdown { deadline } => {
                let deadline = Instant::from_std(deadline);
                self.stopping = Some(self.stopping.map_or(deadline, |d| d.min(deadline)));
            }
        }
    }

    fn on_control(&mut self, control: Option<Control>) {
        match control {
            Some(c) => self.control(c),
            // The handle is gone without a shutdown: stop now.
            None => self.stopping = Some(Instant::now()),
        }
    }

    /// Idle: wait for a control message, the rescan interval, a flush deadline or `until`.
    async fn wait_idle(&mut self, until: Option<Instant>) {
        let mut wake_at = self.last_rescan + self.config.rescan_interval;
        if let Some(u) = until {
            wake_at = wake_at.min(u);
        }
        for flush in &self.flushes {
            wake_at = wake_at.min(flush.deadline);
        }
        tokio::select! {
            c = self.rx.recv() => self.on_control(c),
            () = sleep_until(wake_at) => {}
        }
    }

    fn expire_flushes(&mut self) {
        let now = Instant::now();
        self.flushes.retain(|flush| {
            if flush.deadline <= now {
                let _ = flush.reply.send(Err(FlushError::Timeout));
                false
            } else {
                true
            }
        });
    }

    fn answer_flushes(&mut self, result: Result<(), FlushError>) {
        for flush in self.flushes.drain(..) {
            let _ = flush.reply.send(result.clone());
        }
    }

    /// Answers the crashes-only flushes once no crash report waits in `ready/` or is in flight.
    fn answer_crash_flushes(&mut self, in_flight: &HashMap<EntryId, Claim>) {
        if !self.flushes.iter().any(|f| f.crashes_only) {
            return;
        }
        let crash_in_flight = in_flight.values().any(|c| c.kind() == lastword_spool::Kind::Crash);
        if crash_in_flight || self.spool.first_ready_kind() == Some(lastword_spool::Kind::Crash) {
            return;
        }
        self.flushes.retain(|f| {
            if f.crashes_only {
                let _ = f.reply.send(Ok(()));
            }
            !f.crashes_only
        });
    }

    /// Whether `ready/` has entries, rescanning when woken or when the safety-net interval passed.
    async fn has_work(&mut self) -> bool {
        let force = self.woken || self.last_rescan.elapsed() >= self.config.rescan_interval;
        self.woken = false;
        if force {
            self.last_rescan = Instant::now();
        }
        let spool = self.spool.clone();
        let result = tokio::task::spawn_blocking(move || {
            if force {
                spool.rescan()?;
            }
            Ok::<_, lastword_spool::SpoolError>(spool.ready_count())
        })
        .await;
        match result {
            Ok(Ok(n)) => n > 0,
            Ok(Err(e)) => {
                self.record_error(format!("spool: {e}"));
                false
            }
            Err(e) => {
                self.record_error(format!("spool task failed: {e}"));
                false
            }
        }
    }

    async fn losses(&self) -> Losses {
        let view = self.spool.view();
        let (evicted, quarantined, crash_loop_suppressed) = tokio::task::spawn_blocking(move || {
            (
                view.evicted().unwrap_or(0),
                view.quarantined_count().unwrap_or(0),
                // Since the spool was created, by every process on it (PROTOCOL.md).
                view.counter(crate::crashloop::SUPPRESSED_COUNTER).unwrap_or(0),
            )
        })
        .await
        .unwrap_or((0, 0, 0));
        Losses {
            logs_dropped: self.config.losses.logs_dropped.load(Ordering::Relaxed),
            evicted,
            quarantined,
            crash_loop_suppressed,
        }
    }

    /// One connection: keep up to `window` reports claimed and unanswered, ack on answers, until idle,
    /// failure or shutdown; then put back what is unanswered and close.
    ///
    /// Claims, sends, answers and deletes overlap: the next claims are read from the disk (on the
    /// blocking pool) while earlier reports wait for their answers, and acknowledged entries are
    /// deleted in the background. A claim task counts its entries in the window from the moment it
    /// starts, so this uploader never holds more than `window` claims.
    async fn session(&mut self, conn: Connected) -> End {
        let Connected { ws, welcome } = conn;
        let (mut sink, mut stream) = ws.split();
        let window = self.config.window.min(welcome.max_in_flight as usize).max(1);
        let max_bytes = usize::try_from(welcome.max_message_bytes).unwrap_or(usize::MAX);
        let mut in_flight: HashMap<EntryId, Claim> = HashMap::new();
        let mut claiming: Option<ClaimTask> = None;
        let mut last_recv = Instant::now();
        let mut last_send = Instant::now();
        let mut last_work = Instant::now();
        let mut exhausted = false;
        // Bumped at every reason to look for work again (see `Claimed::generation`).
        let mut generation = 0u64;
        let end = loop {
            self.expire_flushes();
            let now = Instant::now();
            let paused = self.pause_until.is_some_and(|p| now < p);
            if let Some(deadline) = self.stopping {
                // Phase 1: claim nothing more; what a claim task took goes back unsent.
                if let Some(task) = claiming.take() {
                    self.join_and_put_back(task, deadline + self.config.close_bound).await;
                }
                // Phase 2: wait for answers until the deadline.
                if in_flight.is_empty() || now >= deadline {
                    break End::Clean;
                }
            } else if claiming.is_none() && !exhausted && !paused && in_flight.len() < window {
                let held: usize = in_flight.values().map(|c| c.body().len()).sum();
                if held < self.config.window_bytes || in_flight.is_empty() {
                    // In chunks, so that the first reports leave while the next ones are read.
                    let chunk = (window / 4).clamp(1, MAX_CLAIM_CHUNK);
                    let bytes = self.config.window_bytes.saturating_sub(held);
                    let want = (window - in_flight.len()).min(chunk);
                    claiming = Some(self.start_claims(want, bytes, generation));
                }
            }
            if in_flight.is_empty() && claiming.is_none() && exhausted && self.stopping.is_none() {
                self.settle_acks().await;
                self.answer_flushes(Ok(()));
                if now >= last_work + self.config.idle_close {
                    break End::Clean;
                }
            }
            let wake_at = self.session_timer(&in_flight, exhausted, last_send, last_recv, last_work);
            let mut acks = Vec::new();
            let mut failure = None;
            tokio::select! {
                c = self.rx.recv() => {
                    self.on_control(c);
                    exhausted = false;
                    generation += 1;
                }
                claimed = ClaimTask::finish(&mut claiming) => {
                    match claimed {
                        // A retry_later came while the task ran: these wait in ready/ too.
                        Ok(Claimed { claims, .. }) if self.pause_until.is_some_and(|p| Instant::now() < p) => {
                            self.put_back(claims).await;
                        }
                        Ok(Claimed { claims, empty, generation: started }) => {
                            exhausted = empty && started == generation;
                            if let Err(reason) = self.send_claims(&mut sink, &mut in_flight, claims, max_bytes).await {
                                failure = Some(reason);
                            }
                            last_send = Instant::now();
                            last_work = last_send;
                        }
                        Err(e) => {
                            // Not "the spool is empty": a flush must not be answered by it. Try
                            // again after a pause; a flush meanwhile waits, and times out if it lasts.
                            self.record_error(e);
                            self.pause_until = Some(Instant::now() + CLAIM_RETRY);
                        }
                    }
                }
                first = stream.next() => {
                    last_recv = Instant::now();
                    // Take every message already received, so that their acks share one disk batch.
                    let mut batch = vec![first];
                    while batch.len() < 1024 {
                        match futures_util::FutureExt::now_or_never(stream.next()) {
                            Some(m) => batch.push(m),
                            None => break,
                        }
                    }
                    let mut flush = false;
                    for m in batch {
                        match m {
                            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(text.as_str()) {
                                Ok(answer) => acks.extend(self.answer(answer, &mut in_flight)),
                                Err(e) => failure = Some(format!("unreadable answer: {e}")),
                            },
                            // The pong is queued by tungstenite and leaves only on a flush.
                            Some(Ok(Message::Ping(_))) => flush = true,
                            Some(Ok(Message::Pong(_))) => {}
                            Some(Ok(Message::Close(frame))) => {
                                failure = Some(format!("the collector closed the connection: {frame:?}"));
                            }
                            Some(Ok(other)) => failure = Some(format!("unexpected message {other:?}")),
                            Some(Err(e)) => failure = Some(e.to_string()),
                            None => failure = Some("connection closed".into()),
                        }
                        if failure.is_some() {
                            break;
                        }
                    }
                    if flush && failure.is_none() {
                        let limit = self.send_limit().min(Instant::now() + self.config.close_bound);
                        let _ = tokio::time::timeout_at(limit, sink.flush()).await;
                    }
                }
                () = sleep_until(wake_at) => {
                    let now = Instant::now();
                    if !in_flight.is_empty() && now >= last_recv + self.config.answer_timeout {
                        failure = Some(format!("no answer for {:?}", self.config.answer_timeout));
                    } else if self.stopping.is_none() && now >= last_send + self.config.keepalive {
                        let ping = timeout(self.config.close_bound, sink.send(Message::Ping(Default::default())));
                        if !matches!(ping.await, Ok(Ok(()))) {
                            failure = Some("keepalive ping failed".into());
                        }
                        last_send = now;
                    }
                    if now >= self.last_rescan + self.config.rescan_interval {
                        self.last_rescan = now;
                        exhausted = false;
                        generation += 1;
                    }
                }
            }
            if !acks.is_empty() {
                self.ack_batch(acks).await;
                last_work = Instant::now();
            }
            if claiming.is_none() {
                self.answer_crash_flushes(&in_flight);
            }
            if let Some(reason) = failure {
                break End::Failed(reason);
            }
        };
        if let Some(task) = claiming.take() {
            let limit =
                self.stopping.map_or(Instant::now() + self.config.answer_timeout, |d| d.max(Instant::now()))
                    + self.config.close_bound;
            self.join_and_put_back(task, limit).await;
        }
        self.close(sink, stream, in_flight, end).await
    }

    /// How long a send may block: the answer timeout, and never past the owner's shutdown deadline
    /// plus the close bound (the owner may have asked while this task was blocked in the send).
    fn send_limit(&self) -> Instant {
        let mut limit = Instant::now() + self.config.answer_timeout;
        let stop_at = self.progress.stop_at.lock().ok().and_then(|s| *s);
        if let Some(deadline) = stop_at.map(Instant::from_std).or(self.stopping) {
            limit = limit.min(deadline + self.config.close_bound);
        }
        limit
    }

    /// When the session must look at its timers next.
    fn session_timer(
        &self,
        in_flight: &HashMap<EntryId, Claim>,
        exhausted: bool,
        last_send: Instant,
        last_recv: Instant,
        last_work: Instant,
    ) -> Instant {
        let mut wake_at =
            (self.last_rescan + self.config.rescan_interval).min(last_send + self.config.keepalive);
        if !in_flight.is_empty() {
            wake_at = wake_at.min(last_recv + self.config.answer_timeout);
        } else if exhausted {
            wake_at = wake_at.min(last_work + self.config.idle_close);
        }
        if let Some(deadline) = self.stopping {
            wake_at = wake_at.min(deadline);
        }
        if let Some(p) = self.pause_until.filter(|p| *p > Instant::now()) {
            wake_at = wake_at.min(p);
        }
        for flush in &self.flushes {
            wake_at = wake_at.min(flush.deadline);
        }
        wake_at
    }

    /// Starts claiming up to `want` entries on the blocking pool, stopping once their bodies reach
    /// `bytes` (the first is always taken). `generation` is the session's, handed back with the result.
    fn start_claims(&self, want: usize, bytes: usize, generation: u64) -> ClaimTask {
        let spool = self.spool.clone();
        let handle = tokio::task::spawn_blocking(move || {
            let mut claims: Vec<Claim> = Vec::with_capacity(want);
            let mut taken = 0usize;
            while claims.len() < want && (claims.is_empty() || taken < bytes) {
                match spool.claim() {
                    Ok(Some(c)) => {
                        taken += c.body().len();
                        claims.push(c);
                    }
                    Ok(None) => return Ok(Claimed { claims, empty: true, generation }),
                    Err(e) if claims.is_empty() => return Err(format!("spool: {e}")),
                    // Send what was taken; the next task meets the error again if it lasts.
                    Err(_) => break,
                }
            }
            Ok(Claimed { claims, empty: false, generation })
        });
        ClaimTask(handle)
    }

    /// Sends claimed entries with one flush. An error means the connection failed: the claims not
    /// sent go back to ready/ with their guards; the ones sent wait in `in_flight` to be put back.
    async fn send_claims(
        &mut self,
        sink: &mut Sink,
        in_flight: &mut HashMap<EntryId, Claim>,
        claims: Vec<Claim>,
        max_bytes: usize,
    ) -> Result<(), String> {
        let mut result = Ok(());
        let mut fed = 0usize;
        for mut claim in claims {
            let id = claim.id();
            self.outstanding.insert(id);
            if result.is_err() {
                continue; // dropped: back to ready/
            }
            match self.encode(&mut claim, max_bytes) {
                Ok(None) => {
                    // Deliberately not sent (counted by the hook): settle it like a delivery.
                    self.ack_batch(vec![claim]).await;
                }
                Ok(Some(text)) => {
                    // Not inside select!: a send is not cancel-safe. Bounded instead: a stalled send
                    // ends the connection and the claim goes back.
                    // `feed` queues the frame; one flush below sends the whole batch.
                    match tokio::time::timeout_at(self.send_limit(), sink.feed(Message::text(text))).await {
                        Ok(Ok(())) => {
                            in_flight.insert(id, claim);
                            fed += 1;
                        }
                        Ok(Err(e)) => result = Err(format!("send failed: {e}")),
                        Err(_) => result = Err("send stalled".to_owned()),
                    }
                }
                Err(reason) => self.quarantine(claim, reason).await,
            }
        }
        if result.is_ok() && fed > 0 {
            match tokio::time::timeout_at(self.send_limit(), sink.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(format!("send failed: {e}")),
                Err(_) => result = Err("send stalled".to_owned()),
            }
        }
        self.progress.outstanding.store(self.outstanding.len() as u64, Ordering::SeqCst);
        result
    }

    /// Gives claims that were never sent back to ready/: disk work, off the runtime. One that cannot
    /// be renamed back stays in this session's claimed/ (where the next scan after this process ends
    /// finds it) and counts as put back, not as delivered.
    async fn put_back(&mut self, claims: Vec<Claim>) {
        if claims.is_empty() {
            return;
        }
        let n = claims.len();
        self.diag(Level::Info, || format!("putting back {n} entries claimed but not sent"));
        let failed = tokio::task::spawn_blocking(move || {
            claims.into_iter().filter_map(|c| c.release().err().map(|e| e.to_string())).collect::<Vec<_>>()
        })
        .await;
        match failed {
            Ok(errors) => {
                if let Some(first) = errors.first() {
                    self.record_error(format!("{} claims could not be put back: {first}", errors.len()));
                }
            }
            Err(e) => self.record_error(format!("put-back task failed: {e}")),
        }
    }

    /// Waits (until `limit`) for a claim task that will not be sent, and puts its claims back.
    async fn join_and_put_back(&mut self, task: ClaimTask, limit: Instant) {
        match task.join(limit).await {
            Ok(claims) => self.put_back(claims).await,
            Err(e) => self.record_error(e),
        }
    }

    /// Phases 3 and 4: put back what is unanswered, then close the websocket, bounded.
    async fn close(
        &mut self,
        mut sink: Sink,
        mut stream: Stream,
        in_flight: HashMap<EntryId, Claim>,
        end: End,
    ) -> End {
        if !in_flight.is_empty() {
            let n = in_flight.len();
            self.diag(Level::Info, || format!("putting back {n} unanswered entries"));
            let claims: Vec<Claim> = in_flight.into_values().collect();
            // Dropping a claim renames it back into ready/: disk work, off the runtime thread.
            let _ = tokio::task::spawn_blocking(move || drop(claims)).await;
        }
        match self.stopping {
            // Shutting down: the deletes get until the deadline plus the close bound. Any still
            // running then finish by themselves; their entries count as put back unless they are gone
            // from the spool by the summary (`forget_delivered_by_others`).
            Some(deadline) => {
                let limit = deadline.max(Instant::now()) + self.config.close_bound;
                if tokio::time::timeout_at(limit, self.settle_acks()).await.is_err() {
                    self.record_error("deletes of delivered entries did not end by the deadline".into());
                }
            }
            None => self.settle_acks().await,
        }
        let clean = matches!(end, End::Clean);
        let _ = timeout(self.config.close_bound, async {
            if clean {
                let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                if sink.send(Message::Close(Some(frame))).await.is_err() {
                    return;
                }
            }
            // Read until the peer's close arrives and the stream ends, or the bound passes.
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
        end
    }

    /// Applies one answer; returns the claim to ack for accepted and duplicate.
    fn answer(&mut self, answer: ServerMessage, in_flight: &mut HashMap<EntryId, Claim>) -> Option<Claim> {
        let id = answer.answer_id()?;
        let Some(claim) = in_flight.remove(&id) else {
            self.diag(Level::Debug, || format!("answer for an id not in flight: {id}"));
            return None;
        };
        match answer {
            ServerMessage::Accepted { .. } => Some(claim),
            ServerMessage::Duplicate { .. } => {
                self.progress.duplicates.fetch_add(1, Ordering::SeqCst);
                Some(claim)
            }
            ServerMessage::Rejected { reason, detail, .. } => {
                let why = format!("rejected by the collector: {}: {detail}", reason.as_str());
                self.outstanding.remove(&id);
                match claim.quarantine(&why) {
                    Ok(()) => {
                        self.progress.quarantined.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        self.outstanding.insert(id);
                        self.record_error(format!("quarantine {id}: {e}"));
                    }
                }
                None
            }
            ServerMessage::RetryLater { delay_ms, .. } => {
                drop(claim);
                let until = Instant::now() + Duration::from_millis(delay_ms.min(3_600_000));
                self.pause_until = Some(self.pause_until.map_or(until, |p| p.max(until)));
                None
            }
            ServerMessage::Welcome(_) => None,
        }
    }

    /// Deletes acknowledged entries from the spool in the background, so that the next claims and
    /// sends overlap the unlinks; at most [`MAX_ACK_TASKS`] batches at once (the oldest is waited for).
    /// If the process dies before a delete, the entry is sent again and answered `duplicate`.
    async fn ack_batch(&mut self, claims: Vec<Claim>) {
        if claims.is_empty() {
            return;
        }
        while let Some(task) = self.pending_acks.pop_front_if_finished_or_full(2) {
            self.count_acks(task).await;
        }
        // Unlinks of one directory overlap where the file system lets them (freeing the blocks, a
        // synchronous discard on some mounts, runs outside the directory's lock): two tasks per batch.
        let mut claims = claims;
        let half = claims.split_off(claims.len() / 2);
        for part in [claims, half] {
            if part.is_empty() {
                continue;
            }
            self.pending_acks.tasks.push_back(tokio::task::spawn_blocking(move || {
                part.into_iter().map(|c| (c.id(), c.ack().map_err(|e| e.to_string()))).collect::<Vec<_>>()
            }));
        }
        // A flush waits for the deletes: it promises an empty spool, not only stored reports.
        if !self.flushes.is_empty() {
            self.settle_acks().await;
        }
    }

    /// Waits for every background delete and counts them.
    async fn settle_acks(&mut self) {
        while let Some(task) = self.pending_acks.tasks.pop_front() {
            self.count_acks(task).await;
        }
    }

    /// Waits for one batch of deletes and counts it.
    async fn count_acks(&mut self, task: AckTask) {
        let results = match task.await {
            Ok(results) => results,
            Err(e) => {
                // The claims of a failed task were dropped with it: back in ready/, still outstanding.
                self.record_error(format!("ack task failed: {e}"));
                Vec::new()
            }
        };
        for (id, result) in results {
            match result {
                Ok(()) => {
                    self.outstanding.remove(&id);
                    self.progress.delivered.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => self.record_error(format!("ack {id}: {e}")),
            }
        }
        self.progress.outstanding.store(self.outstanding.len() as u64, Ordering::SeqCst);
    }

    /// The report message for a claim; `Ok(None)` when the prepare hook says to skip it.
    fn encode(&self, claim: &mut Claim, max_bytes: usize) -> Result<Option<String>, String> {
        let prepared;
        let body = match &self.config.prepare {
            Some(prepare) => match prepare(claim)? {
                Prepared::Send(body) => {
                    prepared = body;
                    prepared.as_slice()
                }
                Prepared::Skip(reason) => {
                    self.diag(Level::Info, || format!("not sending {}: {reason}", claim.id()));
                    return Ok(None);
                }
            },
            None => claim.body(),
        };
        let report =
            Report::new(claim.id(), claim.kind(), claim.created_millis(), body).map_err(|e| e.to_string())?;
        let text = ClientMessage::Report(report).to_json();
        if text.len() > max_bytes {
            return Err(format!("too large: {} bytes, the collector takes at most {max_bytes}", text.len()));
        }
        Ok(Some(text))
    }

    async fn quarantine(&mut self, claim: Claim, reason: String) {
        let id = claim.id();
        let result =
            tokio::task::spawn_blocking(move || claim.quarantine(&reason).map_err(|e| e.to_string()))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
        match result {
            Ok(()) => {
                self.outstanding.remove(&id);
                self.progress.quarantined.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => self.record_error(format!("quarantine {id}: {e}")),
        }
    }
}
