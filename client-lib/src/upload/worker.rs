//! The uploader's thread: the I/O shell around the state machine of `machine.rs`.
//!
//! The shell turns what happens (a control from the handle, a claim or delete task finishing, a
//! connection attempt ending, messages on the connection, a timer) into [`Event`]s, and carries out
//! the machine's [`Action`]s in order: spool work on the blocking pool (claims and deletes in the
//! background, overlapping the sends and answers), sends awaited one after the other, never inside
//! `select!` (a send is not cancel-safe), each bounded by the answer timeout and the shutdown's hard
//! end. It decides nothing itself.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use lastword_spool::{Claim, EntryId, FLAG_JSON, Kind, Spool};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::connection::{self, ConnectError, Connected, Ws, connect};
use super::machine::{
    Action, Event, Failure, FlushRequest, Held, Machine, SendOutcome, Settings, Settle, Verdict, Work,
};
use super::{Control, DiagnosticLevel, FlushError, Prepared, Progress, Summary, UploaderConfig};
use crate::protocol::{ClientMessage, Losses, ServerMessage};

type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

/// How many batches of deletes may run in the background at once.
const MAX_SETTLE_TASKS: usize = 6;

/// The most messages read in one go, so that their deletes share one disk batch.
const MAX_READ_BATCH: usize = 1024;

/// How long a claim task whose credit ran out (the window full) waits for more before it ends. Answers
/// usually free the window within a commit of the collector; a task that goes on then saves what
/// starting the next one costs (a blocking thread woken, a first chunk, the machine's round), which
/// on a busy core left it idle for a tenth of a drain. A task told to stop ends at once.
const CLAIM_LINGER: Duration = Duration::from_millis(20);

/// A claim task hands on what it took in parts ([`Event::ClaimedSome`]), so that they are sent while
/// it goes on: the first of [`FIRST_CLAIM_PART`] claims, each next one twice as large, up to this.
/// Each part wakes the uploader's thread; on a drain with the cores busy, parts of 16 cost 8% of its
/// time against parts of 64 (tmpfs, the cores split: 229 against 211 ms for 10,000 entries, the
/// median of 9 interleaved drains each; context switches 14.7k against 6.2k for 5 drains). Larger
/// parts (256) were slower again: the sends wait longer for their claims.
const CLAIM_PART: usize = 64;

/// The size of a claim task's first part: the first sends (a crash report first of all) wait for
/// this many claims only.
const FIRST_CLAIM_PART: usize = 8;

/// A claim, and what the prepare step made of it. Prepared on the blocking pool right after it was
/// claimed, inside the claim task: preparing may symbolize a crash report and rewrite its entry
/// (disk work, and seconds of CPU in a debug build), which must not hold up the runtime thread that
/// reads answers and keeps the deadlines.
pub(crate) struct Taken {
    claim: Claim,
    /// The report message's text, the prepare hook's decision not to send it, or why it cannot be
    /// sent (it is quarantined with that reason).
    prepared: Result<Encoded, String>,
}

impl Held for Taken {
    fn id(&self) -> EntryId {
        self.claim.id()
    }

    /// The message held (the claim's body is dropped once the message is made: [`prepare`]), and a
    /// body still held, if any.
    fn size(&self) -> usize {
        let text = match &self.prepared {
            Ok(Encoded::Text(text)) => text.len(),
            _ => 0,
        };
        self.claim.body().len() + text
    }

    fn is_crash(&self) -> bool {
        self.claim.kind() == Kind::Crash
    }
}

/// What a claim task shares with the shell while it runs, so that a task that outlives its session
/// can be told to stop and what it holds counted.
#[derive(Default)]
struct ClaimProgress {
    stop: AtomicBool,
    /// Claims taken so far.
    taken: AtomicUsize,
    /// A claim is under way (set before the stop flag is read).
    busy: AtomicBool,
    /// How many more claims the task may take (its want, and what [`Action::ExtendClaim`] adds).
    credit: Mutex<Credit>,
    /// Signalled when credit is added or the task is told to stop (a task out of credit waits on it).
    more: Condvar,
}

#[derive(Default)]
struct Credit {
    left: usize,
    /// The task took its last claim: an extension now comes too late, and is dropped (the machine
    /// learns of the end from the task's [`Event::Claimed`]).
    closed: bool,
}

impl ClaimProgress {
    fn credit(&self) -> MutexGuard<'_, Credit> {
        self.credit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the task to stop, waking it if it waits for credit.
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Taken once after the store: a task that read the flag as unset under the lock is waiting
        // by now, and gets the notification.
        drop(self.credit());
        self.more.notify_all();
    }
}

/// What a claim task took.
struct Claimed {
    claims: Vec<Taken>,
    /// The spool had no more ready entries (as this handle sees it).
    empty: bool,
    /// The next entry waiting is a crash report.
    first_crash: bool,
}

/// Claims being taken from the spool on the blocking pool (one task at a time), handed on as they
/// are taken.
struct ClaimTask {
    handle: JoinHandle<Result<Claimed, String>>,
    progress: Arc<ClaimProgress>,
    /// What the task took so far, in parts of up to [`CLAIM_PART`].
    parts: UnboundedReceiver<Vec<Taken>>,
    /// Claims received in parts (the machine has them).
    received: usize,
}

impl ClaimTask {
    /// Waits for the next part the task in `slot` hands on ([`Event::ClaimedSome`]) or for its end;
    /// at the end, empties the slot, and the parts it handed on that were not received yet come
    /// first.
    ///
    /// # Cancel safety
    /// Cancel-safe: a part is taken from the channel only in the poll that returns it, and the slot is
    /// emptied in the same poll that takes the task's result, so if this future is dropped first the
    /// task goes on and is still in the slot.
    async fn next(slot: &mut Option<ClaimTask>) -> Vec<Event<Taken>> {
        let Some(task) = slot.as_mut() else { return std::future::pending().await };
        let result = tokio::select! {
            biased;
            Some(part) = task.parts.recv() => {
                task.received += part.len();
                return vec![Event::ClaimedSome(part)];
            }
            result = &mut task.handle => result,
        };
        let mut early = Vec::new();
        while let Ok(part) = task.parts.try_recv() {
            early.extend(part);
        }
        *slot = None;
        match result {
            Ok(Ok(Claimed { claims, empty, first_crash })) => {
                early.extend(claims);
                vec![Event::Claimed { claims: early, empty, first_crash }]
            }
            Ok(Err(e)) if early.is_empty() => vec![Event::ClaimFailed(e)],
            Ok(Err(e)) => vec![Event::ClaimedSome(early), Event::ClaimFailed(e)],
            // A failed task dropped its claims, which put them back.
            Err(e) => vec![Event::ClaimFailed(format!("claim task failed: {e}"))],
        }
    }
}

type SettleResults = Vec<(EntryId, Result<(), String>)>;

/// A connection attempt, with the losses its hello carries.
type Connecting = Pin<Box<dyn Future<Output = (Result<Connected, ConnectError>, Losses)> + Send>>;

/// An open connection.
struct Connection {
    sink: Sink,
    stream: Stream,
    max_bytes: usize,
}

/// What the shell waited for.
enum Got {
    Control(Option<Control>),
    Event(Event<Taken>),
    Events(Vec<Event<Taken>>),
    Settled(Result<(tokio::task::Id, SettleResults), tokio::task::JoinError>),
    /// Boxed: an open websocket is large.
    Connected(Box<(Result<Connected, ConnectError>, Losses)>),
    Read(Vec<Option<Result<Message, tokio_tungstenite::tungstenite::Error>>>),
}

pub(crate) struct Worker {
    spool: Spool,
    config: UploaderConfig,
    rx: UnboundedReceiver<Control>,
    progress: Arc<Progress>,
    claiming: Option<ClaimTask>,
    /// Deletes and quarantines running in the background, and the entries of each.
    settles: JoinSet<SettleResults>,
    settling: HashMap<tokio::task::Id, Vec<EntryId>>,
    connecting: Option<Connecting>,
    conn: Option<Connection>,
    /// The connector for `wss://`, made at the first use.
    tls: Option<Connector>,
    replies: HashMap<u64, mpsc::Sender<Result<(), FlushError>>>,
    next_flush: u64,
    /// [`Control::Finish`]: the flush whose answer starts the shutdown phases, and their deadlines.
    finish: Option<(u64, std::time::Instant, std::time::Instant)>,
    /// Claims held by claim tasks that outlived their session: they go back when those tasks end.
    lingering: u64,
    /// The losses read before the runtime started, for the first look.
    prefetched: Option<Losses>,
    /// [`Spool::quarantined_at_claim`] when this uploader started: those after it are its own.
    quarantined_at_claim: u64,
    /// Check every body as JSON before it is sent, `FLAG_JSON` or not ([`prepare`]): set for the rest
    /// of this uploader's life once a collector closed a connection because a message was not valid
    /// (code 1007), so that the entry whose flag lied is quarantined when it is claimed again instead
    /// of ending every connection it is sent on.
    check_bodies: Arc<AtomicBool>,
}

impl Worker {
    pub fn new(
        spool: Spool,
        config: UploaderConfig,
        rx: UnboundedReceiver<Control>,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            quarantined_at_claim: spool.quarantined_at_claim(),
            spool,
            config,
            rx,
            progress,
            claiming: None,
            settles: JoinSet::new(),
            settling: HashMap::new(),
            connecting: None,
            conn: None,
            tls: None,
            replies: HashMap::new(),
            next_flush: 0,
            finish: None,
            lingering: 0,
            prefetched: None,
            check_bodies: Arc::new(AtomicBool::new(false)),
        }
    }

    fn settings(&self) -> Settings {
        let c = &self.config;
        Settings {
            urls: c.urls.len(),
            window: c.window.max(1),
            window_bytes: c.window_bytes,
            answer_timeout: c.answer_timeout,
            keepalive: c.keepalive,
            rescan_interval: c.rescan_interval,
            idle_close: c.idle_close,
            close_bound: c.close_bound,
            backoff_initial: c.backoff_initial,
            backoff_max: c.backoff_max,
            seed: super::backoff::seed(),
        }
    }

    fn diag(&self, level: DiagnosticLevel, message: &str) {
        crate::diagnostics::tell(self.config.diagnostics.as_ref(), level, message);
    }

    fn record_error(&self, message: String) {
        self.diag(DiagnosticLevel::Warn, &message);
        if let Ok(mut last) = self.progress.last_error.lock() {
            *last = Some(message);
        }
    }

    /// Runs until the owner asked for shutdown (or dropped the handle) and the phases are over.
    pub async fn run(mut self) -> Summary {
        let (mut machine, first) = Machine::new(self.settings(), std::time::Instant::now());
        let mut queue: VecDeque<Action<Taken>> = first.into();
        if let Some(path) = &self.config.ca_file
            && let Err(e) = connection::check_ca_file(path)
        {
            queue
                .extend(machine.handle(Event::Broken(format!("the CA file {e}")), std::time::Instant::now()));
        }
        loop {
            while let Some(action) = queue.pop_front() {
                // Once the phases are over, looks and new work decided before are moot (their
                // answers would be ignored); what settles or gives back claims still runs.
                if machine.is_stopped()
                    && matches!(action, Action::Check { .. } | Action::Connect { .. } | Action::Claim { .. })
                {
                    continue;
                }
                for event in self.execute(action).await {
                    queue.extend(machine.handle(event, std::time::Instant::now()));
                }
            }
            self.publish(&machine);
            if machine.is_stopped() {
                break;
            }
            let wake_at = Instant::from_std(machine.next_wake(std::time::Instant::now()));
            for event in self.next_events(wake_at).await {
                queue.extend(machine.handle(event, std::time::Instant::now()));
            }
        }
        // Deletes still running go on by themselves; their entries count as put back unless they are
        // gone from the spool by the summary.
        self.settles.detach_all();
        let mut outstanding = machine.outstanding().clone();
        let mut deferred = machine.deferred().clone();
        self.forget_delivered_by_others(&mut outstanding, &mut deferred).await;
        let counts = machine.counts();
        self.progress.outstanding.store(outstanding.len() as u64 + self.lingering, Ordering::SeqCst);
        self.progress.deferred.store(deferred.len() as u64, Ordering::SeqCst);
        Summary {
            delivered: counts.delivered,
            duplicates: counts.duplicates,
            skipped: counts.skipped,
            quarantined: counts.quarantined + self.quarantined_by_claims(),
            deferred: deferred.len() as u64,
            put_back: outstanding.len() as u64 + self.lingering,
            connections: counts.connections,
            incomplete: false,
        }
    }

    /// The entries the spool quarantined while this uploader claimed (damaged ones it went past):
    /// never claims of the machine, but quarantined by this uploader's work all the same.
    fn quarantined_by_claims(&self) -> u64 {
        self.spool.quarantined_at_claim().saturating_sub(self.quarantined_at_claim)
    }

    /// Makes what the machine knows visible to the handle.
    fn publish(&self, machine: &Machine<Taken>) {
        let counts = machine.counts();
        let p = &self.progress;
        p.delivered.store(counts.delivered, Ordering::SeqCst);
        p.duplicates.store(counts.duplicates, Ordering::SeqCst);
        p.skipped.store(counts.skipped, Ordering::SeqCst);
        p.quarantined.store(counts.quarantined + self.quarantined_by_claims(), Ordering::SeqCst);
        p.connections.store(counts.connections, Ordering::SeqCst);
        p.outstanding.store(machine.outstanding().len() as u64 + self.lingering, Ordering::SeqCst);
        p.deferred.store(machine.deferred().len() as u64, Ordering::SeqCst);
        p.connected.store(machine.is_connected(), Ordering::SeqCst);
        let now = machine.misconfigured().map(str::to_owned);
        p.misconfigured.send_if_modified(|v| {
            let changed = *v != now;
            if changed {
                v.clone_from(&now);
            }
            changed
        });
    }

    // -----------------------------------------------------------------------------------------
    // Waiting for what happens next
    // -----------------------------------------------------------------------------------------

    async fn next_events(&mut self, wake_at: Instant) -> Vec<Event<Taken>> {
        let Self { rx, claiming, settles, connecting, conn, .. } = self;
        let got = tokio::select! {
            c = rx.recv() => Got::Control(c),
            e = ClaimTask::next(claiming), if claiming.is_some() => Got::Events(e),
            Some(r) = settles.join_next_with_id(), if !settles.is_empty() => Got::Settled(r),
            (r, losses) = async { connecting.as_mut().expect("guarded by the condition").await },
                if connecting.is_some() => Got::Connected(Box::new((r, losses))),
            batch = read_batch(conn.as_mut().map(|c| &mut c.stream)), if conn.is_some() => Got::Read(batch),
            () = sleep_until(wake_at) => Got::Event(Event::Tick),
        };
        match got {
            Got::Control(c) => vec![self.control(c)],
            Got::Event(e) => vec![e],
            Got::Events(e) => e,
            Got::Settled(r) => vec![self.settled(r)],
            Got::Connected(connected) => {
                let (r, losses) = *connected;
                self.connecting = None;
                vec![self.connected(r, losses)]
            }
            Got::Read(batch) => self.read(batch).await,
        }
    }

    fn control(&mut self, control: Option<Control>) -> Event<Taken> {
        match control {
            Some(Control::Wake) => Event::Wake,
            Some(Control::Flush { deadline, scope, at_exit, reply }) => {
                let id = self.next_flush;
                self.next_flush += 1;
                self.replies.insert(id, reply);
                Event::Flush(FlushRequest { id, deadline, scope, at_exit })
            }
            Some(Control::Shutdown { deadline, hard }) => Event::Shutdown { deadline, hard },
            Some(Control::Finish { deadline, hard }) => {
                let id = self.next_flush;
                self.next_flush += 1;
                self.finish = Some((id, deadline, hard));
                Event::Flush(FlushRequest { id, deadline, scope: super::machine::Scope::All, at_exit: true })
            }
            // The handle is gone without a shutdown: stop now.
            None => {
                let now = std::time::Instant::now();
                Event::Shutdown { deadline: now, hard: now + self.config.close_bound }
            }
        }
    }

    fn settled(
        &mut self,
        result: Result<(tokio::task::Id, SettleResults), tokio::task::JoinError>,
    ) -> Event<Taken> {
        match result {
            Ok((id, results)) => {
                self.settling.remove(&id);
                Event::Settled(results)
            }
            Err(e) => {
                // The claims of a failed task were dropped with it: back in ready/, still outstanding.
                let ids = self.settling.remove(&e.id()).unwrap_or_default();
                let why = format!("settle task failed: {e}");
                Event::Settled(ids.into_iter().map(|id| (id, Err(why.clone()))).collect())
            }
        }
    }

    fn connected(&mut self, result: Result<Connected, ConnectError>, losses: Losses) -> Event<Taken> {
        match result {
            Ok(Connected { ws, welcome }) => {
                let (sink, stream) = ws.split();
                let max_bytes = usize::try_from(welcome.max_message_bytes).unwrap_or(usize::MAX);
                self.conn = Some(Connection { sink, stream, max_bytes });
                let max_in_flight = usize::try_from(welcome.max_in_flight).unwrap_or(usize::MAX);
                Event::Connected { max_in_flight, losses }
            }
            Err(e) => {
                let failure = match &e {
                    e if e.is_configuration_error() => Failure::Config,
                    ConnectError::Busy { retry_after, .. } => Failure::Busy(*retry_after),
                    _ => Failure::Unreachable,
                };
                Event::ConnectFailed { failure, reason: e.to_string() }
            }
        }
    }

    /// Turns messages read from the connection into events.
    async fn read(
        &mut self,
        batch: Vec<Option<Result<Message, tokio_tungstenite::tungstenite::Error>>>,
    ) -> Vec<Event<Taken>> {
        let mut answers = Vec::new();
        let mut ended = None;
        let mut pong = false;
        for m in batch {
            match m {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(text.as_str()) {
                    Ok(answer) => answers.extend(verdict(answer)),
                    Err(e) => ended = Some(format!("unreadable answer: {e}")),
                },
                // The pong is queued by tungstenite and leaves only on a flush.
                Some(Ok(Message::Ping(_))) => pong = true,
                Some(Ok(Message::Pong(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    if frame.as_ref().is_some_and(|f| f.code == CloseCode::Invalid)
                        && !self.check_bodies.swap(true, Ordering::SeqCst)
                    {
                        self.diag(
                            DiagnosticLevel::Warn,
                            "the collector found a message that is not valid: every report body is checked \
                             as JSON before it is sent from now on",
                        );
                    }
                    ended = Some(format!("the collector closed the connection: {frame:?}"));
                }
                Some(Ok(other)) => ended = Some(format!("unexpected message {other:?}")),
                Some(Err(e)) => ended = Some(e.to_string()),
                None => ended = Some("connection closed".into()),
            }
            if ended.is_some() {
                break;
            }
        }
        if pong
            && ended.is_none()
            && let Some(conn) = self.conn.as_mut()
        {
            let limit =
                send_limit(&self.progress, &self.config).min(Instant::now() + self.config.close_bound);
            let _ = tokio::time::timeout_at(limit, conn.sink.flush()).await;
        }
        let mut events = vec![Event::Received(answers)];
        if let Some(reason) = ended {
            events.push(Event::StreamEnded(reason));
        }
        events
    }

    // -----------------------------------------------------------------------------------------
    // Carrying out actions
    // -----------------------------------------------------------------------------------------

    /// Carries out one action; returns the events it produced at once.
    async fn execute(&mut self, action: Action<Taken>) -> Vec<Event<Taken>> {
        match action {
            Action::Check { rescan } => vec![self.check(rescan).await],
            Action::Connect { url, losses } => self.start_connect(url, losses).into_iter().collect(),
            Action::Claim { want, bytes } => {
                self.claiming = Some(self.start_claims(want, bytes));
                Vec::new()
            }
            Action::ExtendClaim { more } => {
                if let Some(task) = &self.claiming {
                    let mut credit = task.progress.credit();
                    if !credit.closed {
                        credit.left += more;
                        task.progress.more.notify_one();
                    }
                }
                Vec::new()
            }
            Action::Send(claims) => vec![Event::Sent(self.send_claims(claims).await)],
            Action::Settle(settles) => self.settle(settles).await,
            Action::PutBack(claims) => {
                self.put_back(claims).await;
                Vec::new()
            }
            Action::Ping => {
                let Some(conn) = self.conn.as_mut() else { return Vec::new() };
                let ping =
                    timeout(self.config.close_bound, conn.sink.send(Message::Ping(Default::default())));
                if matches!(ping.await, Ok(Ok(()))) {
                    Vec::new()
                } else {
                    vec![Event::StreamEnded("keepalive ping failed".into())]
                }
            }
            Action::Close => {
                let Some(conn) = self.conn.as_mut() else { return vec![Event::StreamEnded("gone".into())] };
                let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                let limit =
                    send_limit(&self.progress, &self.config).min(Instant::now() + self.config.close_bound);
                match tokio::time::timeout_at(limit, conn.sink.send(Message::Close(Some(frame)))).await {
                    // Then read until the peer's close ends the stream (or the machine's bound).
                    Ok(Ok(())) => Vec::new(),
                    _ => vec![Event::StreamEnded("the close frame could not be sent".into())],
                }
            }
            Action::Disconnect => {
                self.conn = None;
                self.connecting = None;
                Vec::new()
            }
            Action::AbandonClaim => {
                if let Some(task) = self.claiming.take() {
                    task.progress.stop();
                    // A claim under way counts too: it may be taking an entry now.
                    let busy = u64::from(task.progress.busy.load(Ordering::SeqCst));
                    // Those received in parts are the machine's (put back by it), not lingering.
                    let taken =
                        task.progress.taken.load(Ordering::SeqCst).saturating_sub(task.received) as u64;
                    self.lingering += taken + busy;
                    self.record_error(format!(
                        "a claim task was still running at the deadline; its {} entries go back when it ends",
                        taken + busy
                    ));
                    // Detached: when it ends, nobody receives its claims and they go back to ready/.
                    drop(task.handle);
                }
                Vec::new()
            }
            Action::Reply(id, result) => {
                if let Some(reply) = self.replies.remove(&id) {
                    let _ = reply.send(result);
                }
                match self.finish {
                    Some((finish, deadline, hard)) if finish == id => {
                        self.finish = None;
                        let deadline = deadline.max(std::time::Instant::now()).min(hard);
                        vec![Event::Shutdown { deadline, hard }]
                    }
                    _ => Vec::new(),
                }
            }
            Action::Say(level, message) => {
                self.diag(level, &message);
                if level == DiagnosticLevel::Error
                    && let Ok(mut last) = self.progress.last_error.lock()
                {
                    *last = Some(message);
                }
                Vec::new()
            }
            Action::Error(message) => {
                self.record_error(message);
                Vec::new()
            }
            Action::Stop => Vec::new(),
        }
    }

    /// Whether `ready/` has entries (rescanned first when asked), and the losses to send in hello.
    async fn check(&mut self, rescan: bool) -> Event<Taken> {
        let spool = self.spool.clone();
        let result = if rescan {
            tokio::task::spawn_blocking(move || {
                spool.rescan()?;
                Ok::<_, lastword_spool::SpoolError>((spool.ready_count(), spool.first_ready_kind()))
            })
            .await
        } else {
            // The handle's index in memory: no disk, no hand-off to the blocking pool.
            Ok(Ok((spool.ready_count(), spool.first_ready_kind())))
        };
        match result {
            Ok(Ok((ready, first))) => {
                let losses = self.losses().await;
                Event::Checked(Ok(Work { ready: ready > 0, first_crash: first == Some(Kind::Crash), losses }))
            }
            Ok(Err(e)) => Event::Checked(Err(format!("spool: {e}"))),
            Err(e) => Event::Checked(Err(format!("spool task failed: {e}"))),
        }
    }

    /// The loss counters to send in hello, read on the blocking pool (or the ones read before the
    /// runtime started, the first time).
    async fn losses(&mut self) -> Losses {
        if let Some(losses) = self.prefetched.take() {
            return losses;
        }
        let view = self.spool.view();
        let app = self.config.losses.clone();
        tokio::task::spawn_blocking(move || read_losses(&view, &app)).await.unwrap_or_default()
    }

    /// Reads the losses for the first look at the spool, on the uploader's thread before its runtime
    /// starts: the first connection attempt of a short-lived process then needs no blocking-pool
    /// thread (an exit with the collector down waits for that attempt).
    pub fn prefetch_losses(&mut self) {
        self.prefetched = Some(read_losses(&self.spool.view(), &self.config.losses));
    }

    /// Starts a connection attempt (bounded by the connect timeout); an immediate failure (TLS
    /// cannot be set up) is returned as its event.
    fn start_connect(&mut self, index: usize, losses: Losses) -> Option<Event<Taken>> {
        let url = self.config.urls[index % self.config.urls.len()].clone();
        let tls = if url.starts_with("wss:") {
            if self.tls.is_none() {
                match connection::tls_connector(&self.config) {
                    Ok(c) => self.tls = Some(c),
                    Err(reason) => {
                        let e = ConnectError::Tls { url, reason };
                        return Some(Event::ConnectFailed {
                            failure: Failure::Config,
                            reason: e.to_string(),
                        });
                    }
                }
            }
            self.tls.clone()
        } else {
            None
        };
        let config = self.config.clone();
        self.diag(DiagnosticLevel::Debug, &format!("connecting to {url}"));
        self.connecting = Some(Box::pin(async move {
            let result = match timeout(config.connect_timeout, connect(&url, &config, losses, tls)).await {
                Ok(r) => r,
                Err(_) => Err(ConnectError::Timeout { url }),
            };
            (result, losses)
        }));
        None
    }

    /// Starts claiming up to `want` entries on the blocking pool, and as many more as
    /// [`Action::ExtendClaim`] allows while it runs, stopping once their bodies reach `bytes` (the
    /// first is always taken), or when told to stop. Each claim is prepared there too, as soon as it
    /// is taken ([`Taken`]), and handed on in parts of [`FIRST_CLAIM_PART`] growing to [`CLAIM_PART`].
    fn start_claims(&self, want: usize, bytes: usize) -> ClaimTask {
        let spool = self.spool.clone();
        let config = self.config.clone();
        let progress = Arc::new(ClaimProgress::default());
        progress.credit().left = want;
        let shared = progress.clone();
        let check = self.check_bodies.clone();
        let (parts_tx, parts) = unbounded_channel();
        let handle = tokio::task::spawn_blocking(move || {
            claim_task(&spool, &config, &shared, &check, bytes, &parts_tx)
        });
        ClaimTask { handle, progress, parts, received: 0 }
    }

    /// Sends prepared claims with one flush. On a failed send the rest are returned unsent.
    async fn send_claims(&mut self, claims: Vec<Taken>) -> SendOutcome<Taken> {
        let mut outcome = SendOutcome::default();
        let limit = send_limit(&self.progress, &self.config);
        let Some(conn) = self.conn.as_mut() else {
            outcome.unsent = claims;
            outcome.error = Some("not connected".into());
            return outcome;
        };
        for claim in claims {
            if outcome.error.is_some() {
                outcome.unsent.push(claim);
                continue;
            }
            let text = match &claim.prepared {
                Ok(Encoded::Skip(reason)) => {
                    let reason = reason.clone();
                    outcome.skipped.push((claim, reason));
                    continue;
                }
                Err(reason) => {
                    let reason = reason.clone();
                    outcome.unsendable.push((claim, reason));
                    continue;
                }
                Ok(Encoded::Text(text)) if text.len() > conn.max_bytes => {
                    let reason = format!(
                        "too large: {} bytes, the collector takes at most {}",
                        text.len(),
                        conn.max_bytes
                    );
                    outcome.unsendable.push((claim, reason));
                    continue;
                }
                Ok(Encoded::Text(text)) => text.clone(),
            };
            // Not inside select!: a send is not cancel-safe. Bounded instead: a stalled send ends the
            // connection and the claim goes back. `feed` queues the frame; one flush below sends the
            // whole batch.
            match tokio::time::timeout_at(limit, conn.sink.feed(Message::Text(text))).await {
                Ok(Ok(())) => outcome.sent.push(claim),
                Ok(Err(e)) => {
                    outcome.error = Some(format!("send failed: {e}"));
                    outcome.unsent.push(claim);
                }
                Err(_) => {
                    outcome.error = Some("send stalled".to_owned());
                    outcome.unsent.push(claim);
                }
            }
        }
        if outcome.error.is_none() && !outcome.sent.is_empty() {
            match tokio::time::timeout_at(limit, conn.sink.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => outcome.error = Some(format!("send failed: {e}")),
                Err(_) => outcome.error = Some("send stalled".to_owned()),
            }
        }
        outcome
    }

    /// Settles claims in the background, so that the next claims and sends overlap the unlinks; at
    /// most [`MAX_SETTLE_TASKS`] batches at once (when full, one is waited for, and its results are
    /// returned). If the process dies before a delete, the entry is sent again and answered
    /// `duplicate`.
    async fn settle(&mut self, settles: Vec<(Taken, Settle)>) -> Vec<Event<Taken>> {
        let mut events = Vec::new();
        while self.settles.len() >= MAX_SETTLE_TASKS {
            match self.settles.join_next_with_id().await {
                Some(r) => events.push(self.settled(r)),
                None => break,
            }
        }
        // One task per batch: an ack is a rename inside the session's `claimed/` (the unlink, with
        // its discard on some mounts, is the spool's reaper's) or, on a tmpfs, an unlink that waits
        // for nothing; either holds that directory's lock, so two tasks of one batch only took turns
        // at it, and with the claims (tmpfs, the cores split: 228 against 216 ms per 10,000-entry
        // drain, medians of 12 interleaved; ext4: 520 against 478 ms of 9).
        if !settles.is_empty() {
            let part = settles;
            let ids = part.iter().map(|(c, _)| c.id()).collect();
            let task = self.settles.spawn_blocking(move || {
                part.into_iter()
                    .map(|(Taken { claim, .. }, how)| {
                        let id = claim.id();
                        let result = match how {
                            Settle::Deliver | Settle::Skip(_) => claim.ack(),
                            Settle::Quarantine(reason) => claim.quarantine(&reason),
                        };
                        (id, result.map_err(|e| e.to_string()))
                    })
                    .collect()
            });
            self.settling.insert(task.id(), ids);
        }
        events
    }

    /// Gives claims back to ready/: disk work, off the runtime. One that cannot be renamed back stays
    /// in this session's claimed/ (where the next scan after this process ends finds it) and counts
    /// as put back, not as delivered.
    async fn put_back(&self, claims: Vec<Taken>) {
        if claims.is_empty() {
            return;
        }
        let failed = tokio::task::spawn_blocking(move || {
            claims
                .into_iter()
                .filter_map(|t| t.claim.release().err().map(|e| e.to_string()))
                .collect::<Vec<_>>()
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

    /// Entries this uploader put back (a lost connection, a `retry_later`) may have been delivered
    /// since by another agent on the same spool. Only those still waiting in the spool count.
    async fn forget_delivered_by_others(
        &self,
        outstanding: &mut super::machine::IdSet,
        deferred: &mut super::machine::IdSet,
    ) {
        if outstanding.is_empty() && deferred.is_empty() {
            return;
        }
        let view = self.spool.view();
        let listed = tokio::task::spawn_blocking(move || view.list()).await;
        if let Ok(Ok(listed)) = listed {
            let waiting: std::collections::HashSet<EntryId> = listed
                .into_iter()
                .filter(|e| {
                    matches!(e.state, lastword_spool::EntryState::Ready | lastword_spool::EntryState::Claimed)
                })
                .filter_map(|e| e.id)
                .collect();
            outstanding.retain(|id| waiting.contains(id));
            deferred.retain(|id| waiting.contains(id));
        }
    }
}

/// A claim task's work (see [`Worker::start_claims`]), on the blocking pool.
fn claim_task(
    spool: &Spool,
    config: &UploaderConfig,
    shared: &ClaimProgress,
    check_bodies: &AtomicBool,
    bytes: usize,
    parts: &UnboundedSender<Vec<Taken>>,
) -> Result<Claimed, String> {
    let mut part_len = FIRST_CLAIM_PART;
    let mut claims: Vec<Taken> = Vec::with_capacity(part_len);
    let mut count = 0usize;
    let mut taken = 0usize;
    let mut empty = false;
    loop {
        {
            let mut credit = shared.credit();
            let within_bytes = count == 0 || taken < bytes;
            if credit.left == 0 && within_bytes && !shared.stop.load(Ordering::SeqCst) {
                // Out of credit: hand on what was taken (it must not wait here), then wait a while
                // for answers to free the window (CLAIM_LINGER).
                if !claims.is_empty() {
                    drop(credit);
                    part_len = (part_len * 2).min(CLAIM_PART);
                    let part = std::mem::replace(&mut claims, Vec::with_capacity(part_len));
                    if parts.send(part).is_err() {
                        // Nobody receives them any more (the task was let go).
                        shared.credit().closed = true;
                        break;
                    }
                    credit = shared.credit();
                }
                credit = shared
                    .more
                    .wait_timeout_while(credit, CLAIM_LINGER, |c| {
                        c.left == 0 && !shared.stop.load(Ordering::SeqCst)
                    })
                    .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
            }
            if credit.left == 0 || !within_bytes {
                credit.closed = true;
                break;
            }
            credit.left -= 1;
        }
        // Busy before the stop flag is read: whoever sets the flag and then reads `busy` counts a
        // claim that starts now.
        shared.busy.store(true, Ordering::SeqCst);
        if shared.stop.load(Ordering::SeqCst) {
            shared.busy.store(false, Ordering::SeqCst);
            break;
        }
        let claimed = spool.claim();
        if let Ok(Some(c)) = &claimed {
            taken += c.body().len();
            count += 1;
            shared.taken.fetch_add(1, Ordering::SeqCst);
        }
        shared.busy.store(false, Ordering::SeqCst);
        match claimed {
            Ok(Some(mut claim)) => {
                let prepared = prepare(config, &mut claim, check_bodies.load(Ordering::Relaxed));
                claims.push(Taken { claim, prepared });
                if claims.len() >= part_len {
                    part_len = (part_len * 2).min(CLAIM_PART);
                    if parts.send(std::mem::replace(&mut claims, Vec::with_capacity(part_len))).is_err() {
                        // Nobody receives them any more (the task was let go): they go back as they
                        // drop.
                        break;
                    }
                }
            }
            Ok(None) => {
                empty = true;
                break;
            }
            Err(e) if claims.is_empty() => {
                shared.credit().closed = true;
                return Err(format!("spool: {e}"));
            }
            // Send what was taken; the next task meets the error again if it lasts.
            Err(_) => break,
        }
    }
    shared.credit().closed = true;
    let first_crash = spool.first_ready_kind() == Some(Kind::Crash);
    Ok(Claimed { claims, empty, first_crash })
}

/// The loss counters to send in hello: the application's, and the spool's evictions and quarantined
/// entries (disk reads: call it off the runtime).
fn read_losses(view: &lastword_spool::SpoolView, app: &super::LossCounters) -> Losses {
    Losses {
        logs_dropped: app.logs_dropped.load(Ordering::Relaxed),
        evicted: view.evicted().unwrap_or(0),
        quarantined: view.quarantined_count().unwrap_or(0),
        // Since the spool was created, by every process on it (PROTOCOL.md).
        crash_loop_suppressed: view.counter(crate::crashloop::SUPPRESSED_COUNTER).unwrap_or(0),
        // Counted by every process on the spool, by the event writer (REPORT.md "Event").
        events_dropped: view.counter(crate::event::DROPPED_COUNTER).unwrap_or(0),
    }
}

/// How long a send may block: the answer timeout, and never past the shutdown's hard end (the owner
/// may have asked while the shell was blocked in the send).
fn send_limit(progress: &Progress, config: &UploaderConfig) -> Instant {
    let mut limit = Instant::now() + config.answer_timeout;
    if let Some(hard) = progress.stop_at.lock().ok().and_then(|s| *s) {
        limit = limit.min(Instant::from_std(hard));
    }
    limit
}

/// Reads the next message, then every message already received, so that their deletes share one
/// disk batch. Pending forever without a stream (for `select!`).
///
/// # Cancel safety
/// Cancel-safe: a message is taken from the stream only in a poll that returns it.
async fn read_batch(
    stream: Option<&mut Stream>,
) -> Vec<Option<Result<Message, tokio_tungstenite::tungstenite::Error>>> {
    let Some(stream) = stream else { return std::future::pending().await };
    let mut batch = vec![stream.next().await];
    while batch.len() < MAX_READ_BATCH && matches!(batch.last(), Some(Some(Ok(_)))) {
        match futures_util::FutureExt::now_or_never(stream.next()) {
            Some(m) => batch.push(m),
            None => break,
        }
    }
    batch
}

/// The machine's view of an answer (`None` for a welcome).
fn verdict(answer: ServerMessage) -> Option<(EntryId, Verdict)> {
    match answer {
        ServerMessage::Accepted { id } => Some((id, Verdict::Accepted)),
        ServerMessage::Duplicate { id } => Some((id, Verdict::Duplicate)),
        ServerMessage::Rejected { id, reason, detail } => {
            Some((id, Verdict::Rejected(format!("{}: {detail}", reason.as_str()))))
        }
        ServerMessage::RetryLater { id, delay_ms } => {
            Some((id, Verdict::RetryLater(std::time::Duration::from_millis(delay_ms))))
        }
        ServerMessage::Welcome(_) => None,
    }
}

/// A claim made ready for the wire.
enum Encoded {
    /// The report message. Shared: the send hands tungstenite a reference, not a copy.
    Text(Utf8Bytes),
    /// The prepare hook decided not to send it (counted), for this reason.
    Skip(String),
}

/// The report message for a claim, made by the prepare hook (which may rewrite the claimed entry:
/// it runs on the blocking pool); `Err` when it cannot be sent (it is quarantined with the reason).
/// The collector's size limit is checked at the send, where it is known.
///
/// The body is checked as one JSON value unless the entry is sent as it was written and its writer
/// flagged it `FLAG_JSON` (its checksum verified by the claim), or `check_all` says not to trust that
/// flag any more. A body a prepare hook made is always checked.
fn prepare(config: &UploaderConfig, claim: &mut Claim, check_all: bool) -> Result<Encoded, String> {
    let prepared;
    let (body, as_written) = match &config.prepare {
        Some(prepare) => match prepare(claim)? {
            Prepared::Send(body) => {
                prepared = body;
                (prepared.as_slice(), false)
            }
            Prepared::AsIs => (claim.body(), true),
            Prepared::Skip(reason) => return Ok(Encoded::Skip(reason)),
        },
        None => (claim.body(), true),
    };
    let (id, kind, created) = (claim.id(), claim.kind(), claim.created_millis());
    let text = if as_written && !check_all && claim.flags() & FLAG_JSON != 0 {
        ClientMessage::report_json_of_json(id, kind, created, body)
    } else {
        ClientMessage::report_json(id, kind, created, body)
    }
    .map_err(|e| e.to_string())?;
    // The message holds the body now: the claim's copy goes while it is hot, on the thread that
    // read it, instead of being carried until the answer.
    drop(claim.take_body());
    Ok(Encoded::Text(text.into()))
}

#[cfg(test)]
mod tests {
    use lastword_spool::SpoolOptions;

    use super::*;

    /// A spool holding `n` log entries, and the configuration of an uploader that never connects.
    fn spool_of(n: usize) -> (tempfile::TempDir, Spool, UploaderConfig) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("spool"), SpoolOptions::default()).unwrap();
        for _ in 0..n {
            spool.write(Kind::Log, br#"{"message":"m"}"#).unwrap();
        }
        (dir, spool, UploaderConfig::new(["ws://127.0.0.1:1/ingest"], "test"))
    }

    /// A body its writer flagged `FLAG_JSON` is sent without a parse; every other body, and every
    /// body once the uploader checks them all, is parsed, and one that is not JSON is not sent.
    #[test]
    fn only_a_body_flagged_json_goes_unparsed_and_only_until_every_body_is_checked() {
        let (_dir, spool, config) = spool_of(0);
        // (flags, body, check every body, whether it may be sent). Each is prepared once: preparing
        // drops the claim's body.
        let cases: [(u16, &[u8], bool, bool); 5] = [
            // Trusted: the flag's promise is the writer's, and this one broke it.
            (FLAG_JSON, br#"{"cut":"#, false, true),
            (FLAG_JSON, br#"{"cut":"#, true, false),
            (0, br#"{"cut":"#, false, false),
            (FLAG_JSON, br#"{"message":"m"}"#, false, true),
            (FLAG_JSON, br#"{"message":"m"}"#, true, true),
        ];
        let ids: Vec<EntryId> = cases
            .iter()
            .map(|(flags, body, ..)| spool.write_flagged(Kind::Log, *flags, body).unwrap())
            .collect();
        let mut claims = HashMap::new();
        while let Some(claim) = spool.claim().unwrap() {
            claims.insert(claim.id(), claim);
        }
        for (i, (id, (_, body, check_all, sendable))) in ids.iter().zip(cases).enumerate() {
            let prepared = prepare(&config, claims.get_mut(id).unwrap(), check_all);
            let text = match prepared {
                Ok(Encoded::Text(text)) => Some(text.as_str().to_owned()),
                Ok(Encoded::Skip(reason)) => panic!("case {i} skipped: {reason}"),
                Err(reason) => {
                    assert!(reason.contains("not JSON"), "case {i}: {reason}");
                    None
                }
            };
            assert_eq!(text.is_some(), sendable, "case {i}: {text:?}");
            if let Some(text) = text {
                let body = std::str::from_utf8(body).unwrap();
                assert!(text.ends_with(&format!(r#""body":{body}}}"#)), "case {i}: {text}");
            }
        }
    }

    /// A claim task out of credit waits for more (CLAIM_LINGER) instead of ending: what it took so
    /// far is handed on first, and credit added meanwhile lets the same task go on.
    #[test]
    fn a_claim_task_out_of_credit_hands_on_what_it_took_and_goes_on_when_given_more() {
        let (_dir, spool, config) = spool_of(5);
        let shared = Arc::new(ClaimProgress::default());
        shared.credit().left = 2;
        let (parts_tx, mut parts) = unbounded_channel();
        let task = {
            let (spool, shared) = (spool.clone(), shared.clone());
            std::thread::spawn(move || {
                claim_task(&spool, &config, &shared, &AtomicBool::new(false), usize::MAX, &parts_tx)
            })
        };
        // The two it may take arrive while it waits, not at its end.
        let first = parts.blocking_recv().expect("the first part, handed on before waiting");
        assert_eq!(first.len(), 2);
        assert!(!task.is_finished(), "the task waits for credit instead of ending");
        {
            let mut credit = shared.credit();
            assert!(!credit.closed);
            credit.left += 2;
        }
        shared.more.notify_one();
        // It takes two more and, out of credit again, waits again: then a stop ends it.
        let second = parts.blocking_recv().expect("the second part");
        assert_eq!(second.len(), 2);
        shared.stop();
        let claimed = task.join().unwrap().unwrap();
        assert!(claimed.claims.is_empty() && !claimed.empty);
        assert!(shared.credit().closed);
        // Four claimed by one task, one still ready.
        assert_eq!(spool.ready_count(), 1);
    }

    /// A claim task hands on a small first part (the first sends wait for few claims), then parts
    /// twice as large up to CLAIM_PART (fewer wake-ups of the uploader's thread), the rest at its
    /// end; each claim holds its message, not the body as well.
    #[test]
    fn a_claim_task_hands_on_parts_growing_from_the_first_to_the_largest() {
        let n = FIRST_CLAIM_PART + 2 * FIRST_CLAIM_PART + 4 * FIRST_CLAIM_PART + 3 * CLAIM_PART + 5;
        let (_dir, spool, config) = spool_of(n);
        let shared = ClaimProgress::default();
        shared.credit().left = usize::MAX;
        let (parts_tx, mut parts) = unbounded_channel();
        let claimed =
            claim_task(&spool, &config, &shared, &AtomicBool::new(false), usize::MAX, &parts_tx).unwrap();
        let mut sizes = Vec::new();
        while let Ok(part) = parts.try_recv() {
            assert!(
                part.iter().all(|t| t.claim.body().is_empty() && matches!(t.prepared, Ok(Encoded::Text(_))))
            );
            sizes.push(part.len());
        }
        let (f, c) = (FIRST_CLAIM_PART, CLAIM_PART);
        let mut expected = vec![f, 2 * f, 4 * f];
        while expected.last() < Some(&c) {
            expected.push((expected[expected.len() - 1] * 2).min(c));
        }
        let handed: usize = expected.iter().sum();
        let full = (n - handed) / c;
        expected.extend(std::iter::repeat_n(c, full));
        assert_eq!(sizes, expected);
        assert_eq!(claimed.claims.len(), n - handed - full * c, "the rest comes with the task's end");
        assert!(claimed.empty);
    }

    /// Without more credit the task ends after CLAIM_LINGER, with nothing left in its hands.
    #[test]
    fn a_claim_task_left_without_credit_ends_after_the_linger() {
        let (_dir, spool, config) = spool_of(3);
        let shared = ClaimProgress::default();
        shared.credit().left = 1;
        let (parts_tx, mut parts) = unbounded_channel();
        let started = std::time::Instant::now();
        let claimed =
            claim_task(&spool, &config, &shared, &AtomicBool::new(false), usize::MAX, &parts_tx).unwrap();
        assert!(started.elapsed() >= CLAIM_LINGER);
        assert_eq!(parts.try_recv().map(|p| p.len()).ok(), Some(1), "handed on before the wait");
        assert!(claimed.claims.is_empty());
        assert!(shared.credit().closed, "an extension now comes too late");
    }
}
