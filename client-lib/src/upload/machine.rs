//! The uploader's decisions as a pure state machine: `(state, event) → (state, actions)`.
//!
//! [`Machine::handle`] takes one [`Event`] (a control from the handle, the result of a claim, a send,
//! a delete, a connection attempt, answers from the collector, or the passing of time) with the time
//! it happened, changes the state, and returns the [`Action`]s to carry out, in order. It does no I/O,
//! reads no clock and draws no random number of its own (the backoff's jitter comes from a seeded
//! generator in the state), so every decision can be tested without a network, a disk or a runtime.
//! The I/O shell around it is `worker.rs`.
//!
//! The machine holds the claims themselves (any type that says its id, size and kind: [`Held`]). A
//! claim is always in exactly one place: in the machine (in flight, waiting for its answer), or in an
//! action on its way to be sent ([`Action::Send`], which comes back as [`Event::Sent`]), settled
//! ([`Action::Settle`]: deleted after an acknowledgement or a counted skip, or quarantined) or put back
//! ([`Action::PutBack`]). So nothing the machine took can be forgotten, and the invariants of
//! ARCHITECTURE.md are properties of this file:
//!
//! - at most `window` claims are held (in flight, being sent, or being claimed: a claim task counts
//!   its `want` from the moment it starts, and what [`Action::ExtendClaim`] adds from the moment it
//!   is added), and no claim starts or is extended while the bytes held reach `window_bytes` (one
//!   always may, when nothing is held);
//! - nothing is sent after a shutdown began; every unanswered claim is put back by the deadline;
//! - a flush is answered Ok only when nothing is left to send: no claim held, no delete pending, and a
//!   look at `ready/` *after* the last reason to look again (a wake-up, a put-back, a flush, a rescan)
//!   found it empty. A spool error is never such a look.

use std::collections::{HashMap, HashSet};

/// A map keyed by entry id. foldhash's seeded hash, not SipHash: a drain looks an id up several
/// times per entry, and the keys are ids this process claimed (an answer's id only looks one up).
pub type IdMap<V> = HashMap<EntryId, V, foldhash::fast::RandomState>;
/// A set of entry ids, hashed as [`IdMap`].
pub type IdSet = HashSet<EntryId, foldhash::fast::RandomState>;
use std::time::{Duration, Instant};

use lastword_spool::EntryId;

use super::DiagnosticLevel;
use super::FlushError;
use super::backoff::Backoff;
use crate::protocol::Losses;

/// The most entries a claim task starts with: a quarter of the window, at most this many. The task
/// hands on what it takes as it goes ([`Event::ClaimedSome`]), so sending starts while the rest is
/// still being read from disk, and it goes on as long as the window has room
/// ([`Action::ExtendClaim`]): one task claims without a pause while answers keep coming.
pub(crate) const MAX_CLAIM_CHUNK: usize = 64;

/// How long to wait before looking at the spool again after it failed a scan or a claim.
pub(crate) const SPOOL_RETRY: Duration = Duration::from_secs(1);

/// The longest `retry_later` delay honoured (a larger one is cut to this).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// How long to wait before trying again after a configuration error (at least; the backoff's
/// maximum if that is longer): not a loop, but the collector's side may be what changes (a token
/// added to its list).
pub(crate) const MISCONFIGURED_RETRY: Duration = Duration::from_secs(60);

/// What the machine needs to know of a claim.
pub(crate) trait Held {
    /// The entry's id.
    fn id(&self) -> EntryId;
    /// The bytes it holds in memory (its message, and its body while it has one).
    fn size(&self) -> usize;
    /// Whether it is a crash report (a crashes-only flush waits for these).
    fn is_crash(&self) -> bool;
}

/// The settings the decisions depend on (from [`super::UploaderConfig`]).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// How many collector URLs there are (tried in turn).
    pub urls: usize,
    pub window: usize,
    pub window_bytes: usize,
    pub answer_timeout: Duration,
    pub keepalive: Duration,
    pub rescan_interval: Duration,
    pub idle_close: Duration,
    pub close_bound: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Seed of the backoff's jitter.
    pub seed: u64,
}

/// What a flush waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Nothing left to send.
    All,
    /// No crash report left to send.
    Crashes,
}

/// A flush request, identified by `id` in the answer ([`Action::Reply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlushRequest {
    pub id: u64,
    pub deadline: Instant,
    pub scope: Scope,
    /// Give up as soon as waiting cannot help, instead of waiting out the deadline: when nothing is
    /// held and the collector cannot be reached, or asked to retry after the deadline.
    pub at_exit: bool,
}

/// Why a connection attempt failed, as far as what to do next is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Cannot reach the collector now (refused, DNS, TLS, timeout): try again after a backoff.
    Unreachable,
    /// At its connection limit: try again after a backoff, and not before `Retry-After`.
    Busy(Option<Duration>),
    /// It will not work until a person changes the configuration (a refused token, a wrong path).
    Config,
}

/// The collector's answer to one report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accepted,
    Duplicate,
    Rejected(String),
    RetryLater(Duration),
}

/// What to do with a claim that leaves the machine for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// The collector acknowledged it: delete it.
    Deliver,
    /// Deliberately not sent (a counted decision of the prepare hook): delete it.
    Skip(String),
    /// Never sendable (rejected for good, or cannot be encoded): quarantine it with the reason.
    Quarantine(String),
}

/// What a look at the spool found (before connecting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Work {
    /// `ready/` holds entries.
    pub ready: bool,
    /// The next entry a claim would take is a crash report.
    pub first_crash: bool,
    /// The loss counters to send in `hello`.
    pub losses: Losses,
}

/// What came of an [`Action::Send`].
#[derive(Debug)]
pub(crate) struct SendOutcome<C> {
    /// Sent: they wait for their answers.
    pub sent: Vec<C>,
    /// Not sent by a counted decision of the prepare hook, with its reason.
    pub skipped: Vec<(C, String)>,
    /// Cannot be sent (the prepare hook failed, too large), with the reason.
    pub unsendable: Vec<(C, String)>,
    /// Not sent because the connection failed (`error`).
    pub unsent: Vec<C>,
    /// The connection failed during the send.
    pub error: Option<String>,
}

impl<C> Default for SendOutcome<C> {
    fn default() -> Self {
        Self {
            sent: Vec::new(),
            skipped: Vec::new(),
            unsendable: Vec::new(),
            unsent: Vec::new(),
            error: None,
        }
    }
}

/// Something that happened.
#[derive(Debug)]
pub(crate) enum Event<C> {
    /// Time passed: the moment [`Machine::next_wake`] asked for (or any moment; ticks are harmless).
    Tick,
    /// New entries may be in `ready/` (a file-system notification, [`super::Uploader::wake`]).
    Wake,
    /// A flush was asked for.
    Flush(FlushRequest),
    /// The owner asked for the shutdown phases: answers until `deadline`, everything over by `hard`.
    Shutdown { deadline: Instant, hard: Instant },
    /// The configuration cannot work at all (an unusable CA file): nothing will be sent.
    Broken(String),
    /// The result of [`Action::Check`].
    Checked(Result<Work, String>),
    /// The connection asked for by [`Action::Connect`] is open; the collector takes at most
    /// `max_in_flight` unanswered reports; `losses` went in the welcomed hello.
    Connected { max_in_flight: usize, losses: Losses },
    /// The connection attempt failed.
    ConnectFailed { failure: Failure, reason: String },
    /// The result of [`Action::Claim`]: the claims, whether `ready/` was found empty, and whether the
    /// next entry waiting is a crash report.
    Claimed { claims: Vec<C>, empty: bool, first_crash: bool },
    /// Claims the claim task under way took so far; it goes on (its [`Event::Claimed`] comes at its
    /// end, with the rest).
    ClaimedSome(Vec<C>),
    /// [`Action::Claim`] failed (the spool): whatever it took was put back.
    ClaimFailed(String),
    /// The result of [`Action::Send`].
    Sent(SendOutcome<C>),
    /// Messages arrived on the connection (possibly none but a ping): these answers.
    Received(Vec<(EntryId, Verdict)>),
    /// Settles of [`Action::Settle`] that finished, each with its outcome. A failed one put its entry
    /// back in `ready/` (or left it in this session's `claimed/`, where recovery finds it).
    Settled(Vec<(EntryId, Result<(), String>)>),
    /// The connection ended or failed (a read error, the peer's close, a failed ping).
    StreamEnded(String),
}

/// Something to do, in order.
#[derive(Debug)]
pub(crate) enum Action<C> {
    /// Look at the spool (rescan `ready/` first if `rescan`) and read the loss counters: answer
    /// [`Event::Checked`].
    Check { rescan: bool },
    /// Connect to URL number `url` (modulo the number of URLs), with `losses` (from the latest look at
    /// the spool) in the hello: answer [`Event::Connected`] or [`Event::ConnectFailed`].
    Connect { url: usize, losses: Losses },
    /// Start a claim task for up to `want` entries, stopping once their bodies reach `bytes` (the
    /// first is always taken): answer [`Event::ClaimedSome`] as it goes, then [`Event::Claimed`] or
    /// [`Event::ClaimFailed`].
    Claim { want: usize, bytes: usize },
    /// Let the claim task under way take up to `more` entries beyond its `want`, if it has not
    /// stopped taking yet (if it has, this is dropped: its [`Event::Claimed`] is on its way).
    ExtendClaim { more: usize },
    /// Encode and send these claims, with one flush: answer [`Event::Sent`]. Never inside `select!`.
    Send(Vec<C>),
    /// Settle these claims in the background: answer [`Event::Settled`] as they finish.
    Settle(Vec<(C, Settle)>),
    /// Give these claims back to `ready/` now.
    PutBack(Vec<C>),
    /// Send a websocket ping (bounded); a failure is [`Event::StreamEnded`].
    Ping,
    /// Send the close frame (1000) and go on reading until the peer's close ([`Event::StreamEnded`]).
    Close,
    /// Drop the connection (or the connection attempt) now.
    Disconnect,
    /// The claim task under way outlived the session: tell it to stop, and count what it holds as
    /// put back (its claims go back to `ready/` when it ends; nobody receives them).
    AbandonClaim,
    /// Answer flush `id`.
    Reply(u64, Result<(), FlushError>),
    /// A diagnostic.
    Say(DiagnosticLevel, String),
    /// A failure to record as the last error (and say at `Warn`).
    Error(String),
    /// The shutdown phases are over: return the summary.
    Stop,
}

/// The counts of what happened, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub delivered: u64,
    pub duplicates: u64,
    pub skipped: u64,
    pub quarantined: u64,
    pub connections: u64,
}

/// Why the collector is not being reached, after a failed round of connection attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Blocked {
    Unreachable(String),
    Misconfigured(String),
}

/// What the latest look at `ready/` (a check or a claim) saw, and at which generation.
#[derive(Clone, Copy, Debug)]
struct Seen {
    generation: u64,
    ready: bool,
    first_crash: bool,
}

#[derive(Clone, Copy, Debug)]
struct Stopping {
    deadline: Instant,
    hard: Instant,
}

#[derive(Debug)]
struct Session {
    window: usize,
    last_recv: Instant,
    last_send: Instant,
    last_work: Instant,
    /// An answer came that settles a report (accepted or duplicate): the connection works.
    progressed: bool,
}

#[derive(Debug)]
enum Phase {
    /// Not connected: look for work, connect when there is some.
    Idle,
    /// A connection attempt is under way.
    Connecting,
    /// Connected.
    Connected(Session),
    /// The close frame is sent; waiting for the peer's close until `until`.
    Closing { until: Instant },
    /// The shutdown phases are over.
    Stopped,
}

/// The state of one uploader. See the module doc.
#[derive(Debug)]
pub(crate) struct Machine<C> {
    s: Settings,
    phase: Phase,
    stopping: Option<Stopping>,
    flushes: Vec<FlushRequest>,
    // --- connecting
    url: usize,
    backoff: Backoff,
    round_failures: usize,
    round_config_errors: usize,
    blocked: Option<Blocked>,
    broken: Option<String>,
    /// No connection attempt before this (the backoff after a failed round).
    reconnect_at: Option<Instant>,
    /// The configuration error already said (said once).
    said: Option<String>,
    // --- work
    /// Bumped at every reason to look at `ready/` again; a look counts only for its generation.
    generation: u64,
    seen: Option<Seen>,
    rescan_due: bool,
    last_rescan: Instant,
    /// A check is under way, started at this generation.
    checking: Option<u64>,
    /// A claim task is under way, started at this generation for `want` entries.
    claiming: Option<(u64, usize)>,
    /// No claim or check before this (the spool failed).
    spool_retry_at: Option<Instant>,
    /// No claim before this (`retry_later`).
    pause_until: Option<Instant>,
    /// The losses of the last hello a collector welcomed, and the latest read.
    reported: Losses,
    losses: Losses,
    // --- what is held
    in_flight: IdMap<C>,
    held_bytes: usize,
    /// Claims handed to [`Action::Send`]: (count, bytes, any crash).
    sending: Option<(usize, usize, bool)>,
    settling: IdMap<Settled>,
    /// Every entry claimed to be sent and neither delivered, skipped, quarantined nor deferred yet
    /// (claims given back unsent are not counted).
    outstanding: IdSet,
    /// Entries answered `retry_later` and put back, not claimed again since.
    deferred: IdSet,
    counts: Counts,
}

/// What a settle counts as once it succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    Delivered,
    Skipped,
    Quarantined,
}

impl<C: Held> Machine<C> {
    /// A machine that has done nothing yet, and the actions to start with.
    pub fn new(s: Settings, now: Instant) -> (Self, Vec<Action<C>>) {
        let backoff = Backoff::new(s.backoff_initial, s.backoff_max, s.seed);
        let mut m = Self {
            phase: Phase::Idle,
            stopping: None,
            flushes: Vec::new(),
            url: 0,
            backoff,
            round_failures: 0,
            round_config_errors: 0,
            blocked: None,
            broken: None,
            reconnect_at: None,
            said: None,
            generation: 0,
            seen: None,
            // The spool handle's view is fresh from its open: the first look needs no rescan.
            rescan_due: false,
            last_rescan: now,
            checking: None,
            claiming: None,
            spool_retry_at: None,
            pause_until: None,
            reported: Losses::default(),
            losses: Losses::default(),
            in_flight: IdMap::default(),
            held_bytes: 0,
            sending: None,
            settling: IdMap::default(),
            outstanding: IdSet::default(),
            deferred: IdSet::default(),
            counts: Counts::default(),
            s,
        };
        let mut out = Vec::new();
        m.step(now, &mut out);
        (m, out)
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The entries claimed and not settled (nor deferred).
    pub fn outstanding(&self) -> &IdSet {
        &self.outstanding
    }

    /// The entries answered `retry_later`, back in `ready/`, and not claimed again.
    pub fn deferred(&self) -> &IdSet {
        &self.deferred
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected(_))
    }

    /// Whether the shutdown phases are over.
    pub fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped)
    }

    /// The configuration error that stops delivery, if any.
    pub fn misconfigured(&self) -> Option<&str> {
        match (&self.broken, &self.blocked) {
            (Some(reason), _) | (None, Some(Blocked::Misconfigured(reason))) => Some(reason),
            _ => None,
        }
    }

    /// Applies one event that happened at `now`; returns what to do.
    ///
    /// The answers to flushes come first: whoever waits for one need not wait for the disk work
    /// decided at the same moment (an answer never depends on it: an Ok needs nothing held and
    /// nothing put back).
    pub fn handle(&mut self, event: Event<C>, now: Instant) -> Vec<Action<C>> {
        let mut out = Vec::new();
        self.apply(event, now, &mut out);
        let (mut replies, rest): (Vec<_>, Vec<_>) =
            out.into_iter().partition(|a| matches!(a, Action::Reply(..)));
        replies.extend(rest);
        replies
    }

    fn apply(&mut self, event: Event<C>, now: Instant, out: &mut Vec<Action<C>>) {
        if matches!(self.phase, Phase::Stopped) {
            // Nothing is done any more; a claim that still arrives goes back.
            match event {
                Event::Claimed { claims, .. } | Event::ClaimedSome(claims) => self.put_back(claims, out),
                Event::Sent(outcome) => {
                    self.put_back(outcome.sent.into_iter().chain(outcome.unsent).collect(), out);
                }
                _ => {}
            }
            return;
        }
        match event {
            Event::Tick => {}
            Event::Wake => self.look_again(true),
            Event::Flush(request) => {
                self.flushes.push(request);
                self.look_again(true);
            }
            Event::Shutdown { deadline, hard } => {
                let stop = match self.stopping {
                    Some(s) => Stopping { deadline: s.deadline.min(deadline), hard: s.hard.min(hard) },
                    None => Stopping { deadline, hard },
                };
                self.stopping = Some(stop);
                out.push(Action::Say(DiagnosticLevel::Info, "shutting down".into()));
            }
            Event::Broken(reason) => {
                self.say_config_error(&reason, out);
                self.broken = Some(reason);
            }
            Event::Checked(result) => {
                let started = self.checking.take().unwrap_or(self.generation);
                match result {
                    Ok(work) => {
                        self.seen = Some(Seen {
                            generation: started,
                            ready: work.ready,
                            first_crash: work.first_crash,
                        });
                        self.losses = work.losses;
                    }
                    Err(e) => {
                        out.push(Action::Error(e));
                        self.spool_retry_at = Some(now + SPOOL_RETRY);
                    }
                }
            }
            Event::Connected { max_in_flight, losses } => self.connected(max_in_flight, losses, now, out),
            Event::ConnectFailed { failure, reason } => self.connect_failed(failure, reason, now, out),
            Event::Claimed { claims, empty, first_crash } => {
                let started = self.claiming.take().map_or(self.generation, |(g, _)| g);
                self.claimed(claims, Seen { generation: started, ready: !empty, first_crash }, now, out);
                // `claimed` ran the step (so that the next claim starts before this send).
                return;
            }
            Event::ClaimedSome(claims) => {
                if let Some((generation, want)) = self.claiming {
                    self.claiming = Some((generation, want.saturating_sub(claims.len())));
                }
                self.take_claims(claims, now, out);
                return;
            }
            Event::ClaimFailed(e) => {
                self.claiming = None;
                // Not "the spool is empty": a flush must not be answered by it.
                out.push(Action::Error(e));
                self.spool_retry_at = Some(now + SPOOL_RETRY);
            }
            Event::Sent(outcome) => self.sent(outcome, now, out),
            Event::Received(answers) => self.received(answers, now, out),
            Event::Settled(results) => self.settled(results, out),
            Event::StreamEnded(reason) => match self.phase {
                Phase::Closing { .. } => self.phase = Phase::Idle,
                Phase::Connected(_) => self.fail_session(format!("connection lost: {reason}"), now, out),
                _ => {}
            },
        }
        self.step(now, out);
    }

    /// When the machine next needs an [`Event::Tick`] (if nothing else happens first).
    pub fn next_wake(&self, now: Instant) -> Instant {
        let mut times: Vec<Instant> = self.flushes.iter().map(|f| f.deadline).collect();
        times.push(self.last_rescan + self.s.rescan_interval);
        times.extend(self.reconnect_at);
        times.extend(self.spool_retry_at);
        times.extend(self.pause_until);
        if let Some(stop) = self.stopping {
            times.extend([stop.deadline, stop.hard]);
        }
        match &self.phase {
            Phase::Connected(session) => {
                times.push(session.last_send + self.s.keepalive);
                if !self.in_flight.is_empty() {
                    times.push(session.last_recv + self.s.answer_timeout);
                } else {
                    times.push(session.last_work + self.s.idle_close);
                }
            }
            Phase::Closing { until } => times.push(*until),
            _ => {}
        }
        // A moment already past was acted on by the step at `now`.
        times.into_iter().filter(|t| *t > now).min().unwrap_or(now + self.s.rescan_interval)
    }

    // -----------------------------------------------------------------------------------------
    // Events
    // -----------------------------------------------------------------------------------------

    /// Something may have entered `ready/`: what was seen of it no longer counts.
    fn look_again(&mut self, rescan: bool) {
        self.generation += 1;
        self.rescan_due |= rescan;
    }

    fn connected(&mut self, max_in_flight: usize, losses: Losses, now: Instant, out: &mut Vec<Action<C>>) {
        if !matches!(self.phase, Phase::Connecting) {
            out.push(Action::Disconnect);
            return;
        }
        self.counts.connections += 1;
        self.blocked = None;
        self.said = None;
        self.round_failures = 0;
        self.round_config_errors = 0;
        self.reported = losses;
        self.losses = losses;
        let window = self.s.window.min(max_in_flight).max(1);
        self.phase = Phase::Connected(Session {
            window,
            last_recv: now,
            last_send: now,
            last_work: now,
            progressed: false,
        });
        out.push(Action::Say(DiagnosticLevel::Info, format!("connected (window {window})")));
    }

    fn connect_failed(&mut self, failure: Failure, reason: String, now: Instant, out: &mut Vec<Action<C>>) {
        if !matches!(self.phase, Phase::Connecting) {
            return;
        }
        self.phase = Phase::Idle;
        self.round_failures += 1;
        if failure == Failure::Config {
            self.round_config_errors += 1;
            self.say_config_error(&reason, out);
        } else {
            out.push(Action::Error(reason.clone()));
        }
        self.url += 1;
        // Fail over to the next URL at once; after a whole round of failures, back off.
        if self.url % self.s.urls.max(1) == 0 {
            let all_config = self.round_config_errors == self.round_failures;
            let wait = if all_config {
                // Not retried in a loop: it will not work before a person changes something.
                self.s.backoff_max.max(MISCONFIGURED_RETRY)
            } else {
                let after = match failure {
                    Failure::Busy(after) => after.unwrap_or_default(),
                    _ => Duration::ZERO,
                };
                self.backoff.next_wait().max(after)
            };
            self.reconnect_at = Some(now + wait);
            self.blocked =
                Some(if all_config { Blocked::Misconfigured(reason) } else { Blocked::Unreachable(reason) });
            self.round_failures = 0;
            self.round_config_errors = 0;
        }
    }

    /// Says a configuration error once (again only if it changes).
    fn say_config_error(&mut self, reason: &str, out: &mut Vec<Action<C>>) {
        if self.said.as_deref() == Some(reason) {
            out.push(Action::Say(DiagnosticLevel::Debug, reason.to_owned()));
        } else {
            out.push(Action::Say(DiagnosticLevel::Error, format!("configuration error: {reason}")));
            self.said = Some(reason.to_owned());
        }
    }

    fn claimed(&mut self, claims: Vec<C>, seen: Seen, now: Instant, out: &mut Vec<Action<C>>) {
        self.seen = Some(seen);
        self.take_claims(claims, now, out);
    }

    /// Claims that a claim task took: sent, or put back when they cannot be. Runs the step.
    fn take_claims(&mut self, claims: Vec<C>, now: Instant, out: &mut Vec<Action<C>>) {
        let paused = self.pause_until.is_some_and(|p| now < p);
        let sendable = matches!(self.phase, Phase::Connected(_)) && self.stopping.is_none() && !paused;
        if !sendable {
            // A retry_later or a shutdown came while the task ran, or the connection is gone: these
            // wait in ready/ too. Never sent, they are given back as they were taken: not counted
            // (an entry deferred before stays deferred).
            self.put_back(claims, out);
            self.step(now, out);
            return;
        }
        for claim in &claims {
            self.deferred.remove(&claim.id());
            self.outstanding.insert(claim.id());
        }
        if claims.is_empty() {
            self.step(now, out);
            return;
        }
        let bytes: usize = claims.iter().map(Held::size).sum();
        let crash = claims.iter().any(Held::is_crash);
        // One send at a time: the shell carries each out (and reports it) before the next event.
        let (n0, b0, c0) = self.sending.unwrap_or_default();
        self.sending = Some((n0 + claims.len(), b0 + bytes, c0 || crash));
        // The next claim task (if there is room) reads the disk while these are sent.
        self.step(now, out);
        out.push(Action::Send(claims));
    }

    fn sent(&mut self, outcome: SendOutcome<C>, now: Instant, out: &mut Vec<Action<C>>) {
        self.sending = None;
        let mut settles: Vec<(C, Settle)> = Vec::new();
        for (claim, reason) in outcome.skipped {
            out.push(Action::Say(DiagnosticLevel::Info, format!("not sending {}: {reason}", claim.id())));
            settles.push((claim, Settle::Skip(reason)));
        }
        for (claim, reason) in outcome.unsendable {
            settles.push((claim, Settle::Quarantine(reason)));
        }
        self.settle(settles, out);
        let connected = matches!(self.phase, Phase::Connected(_));
        if connected {
            for claim in outcome.sent {
                self.held_bytes += claim.size();
                self.in_flight.insert(claim.id(), claim);
            }
        } else {
            self.put_back(outcome.sent, out);
        }
        self.put_back(outcome.unsent, out);
        if let Phase::Connected(session) = &mut self.phase {
            session.last_send = now;
            session.last_work = now;
        }
        if let Some(error) = outcome.error {
            self.fail_session(error, now, out);
        }
    }

    fn received(&mut self, answers: Vec<(EntryId, Verdict)>, now: Instant, out: &mut Vec<Action<C>>) {
        let Phase::Connected(session) = &mut self.phase else { return };
        session.last_recv = now;
        let mut settles = Vec::new();
        let mut back = Vec::new();
        for (id, verdict) in answers {
            let Some(claim) = self.in_flight.remove(&id) else {
                out.push(Action::Say(
                    DiagnosticLevel::Debug,
                    format!("answer for an id not in flight: {id}"),
                ));
                continue;
            };
            self.held_bytes -= claim.size();
            match verdict {
                Verdict::Accepted => {
                    session.progressed = true;
                    settles.push((claim, Settle::Deliver));
                }
                Verdict::Duplicate => {
                    session.progressed = true;
                    self.counts.duplicates += 1;
                    settles.push((claim, Settle::Deliver));
                }
                Verdict::Rejected(why) => {
                    settles.push((claim, Settle::Quarantine(format!("rejected by the collector: {why}"))));
                }
                Verdict::RetryLater(delay) => {
                    // The collector answered: the entry waits in ready/, nothing about it is uncertain.
                    self.outstanding.remove(&id);
                    self.deferred.insert(id);
                    let until = now + delay.min(MAX_RETRY_DELAY);
                    self.pause_until = Some(self.pause_until.map_or(until, |p| p.max(until)));
                    back.push(claim);
                }
            }
        }
        if session.progressed {
            self.backoff.reset();
        }
        if !settles.is_empty() {
            session.last_work = now;
        }
        self.settle(settles, out);
        self.put_back(back, out);
    }

    fn settled(&mut self, results: Vec<(EntryId, Result<(), String>)>, out: &mut Vec<Action<C>>) {
        let mut failed = 0usize;
        let mut first = None;
        for (id, result) in results {
            let Some(how) = self.settling.remove(&id) else { continue };
            match result {
                Ok(()) => {
                    self.outstanding.remove(&id);
                    match how {
                        Settled::Delivered => self.counts.delivered += 1,
                        Settled::Skipped => self.counts.skipped += 1,
                        Settled::Quarantined => self.counts.quarantined += 1,
                    }
                }
                Err(e) => {
                    failed += 1;
                    first.get_or_insert(format!("{id}: {e}"));
                }
            }
        }
        if let Some(first) = first {
            // The entries went back to ready/ (still outstanding): look again.
            out.push(Action::Error(format!("{failed} entries could not be settled: {first}")));
            self.look_again(false);
        }
    }

    // -----------------------------------------------------------------------------------------
    // What to do next
    // -----------------------------------------------------------------------------------------

    /// Takes the decisions that depend only on the state and the time, after every event.
    fn step(&mut self, now: Instant, out: &mut Vec<Action<C>>) {
        if now >= self.last_rescan + self.s.rescan_interval {
            // The safety net behind the file-system notifications.
            self.last_rescan = now;
            self.look_again(true);
        }
        if self.spool_retry_at.is_some_and(|t| now >= t) {
            self.spool_retry_at = None;
        }
        if self.pause_until.is_some_and(|t| now >= t) {
            self.pause_until = None;
        }
        if self.reconnect_at.is_some_and(|t| now >= t) {
            self.reconnect_at = None;
        }
        // A step may change the phase (a session ends, an idle uploader connects): take the next
        // phase's decisions at the same moment.
        for _ in 0..4 {
            let before = std::mem::discriminant(&self.phase);
            match self.phase {
                Phase::Stopped => return,
                Phase::Idle => self.step_idle(now, out),
                Phase::Connecting => {
                    if self.stopping.is_some() {
                        // Nothing is claimed yet: just stop trying.
                        out.push(Action::Disconnect);
                        self.phase = Phase::Idle;
                    }
                }
                Phase::Connected(_) => self.step_session(now, out),
                Phase::Closing { until } => {
                    let until = self.stopping.map_or(until, |s| until.min(s.hard));
                    if now >= until {
                        out.push(Action::Disconnect);
                        self.phase = Phase::Idle;
                    } else {
                        self.phase = Phase::Closing { until };
                    }
                }
            }
            if std::mem::discriminant(&self.phase) == before {
                break;
            }
        }
        self.answer_flushes(now, out);
    }

    fn step_idle(&mut self, now: Instant, out: &mut Vec<Action<C>>) {
        if let Some(stop) = self.stopping {
            self.abandon_claim_at(stop.deadline, now, out);
            // Deletes of delivered entries get until the hard deadline; then the phases are over.
            if self.claiming.is_none() && (self.settling.is_empty() || now >= stop.hard) {
                self.finish(out);
            }
            return;
        }
        if self.checking.is_some() || self.spool_retry_at.is_some() {
            return;
        }
        let current = self.seen.filter(|s| s.generation == self.generation);
        let Some(seen) = current else {
            let rescan = std::mem::take(&mut self.rescan_due);
            self.checking = Some(self.generation);
            out.push(Action::Check { rescan });
            return;
        };
        let losses_to_report = self.losses != self.reported;
        let work = seen.ready || losses_to_report;
        let paused = self.pause_until.is_some();
        if work && !paused && self.reconnect_at.is_none() && self.broken.is_none() {
            self.phase = Phase::Connecting;
            out.push(Action::Connect { url: self.url, losses: self.losses });
        }
    }

    fn step_session(&mut self, now: Instant, out: &mut Vec<Action<C>>) {
        let Phase::Connected(session) = &mut self.phase else { return };
        if let Some(stop) = self.stopping {
            // Phase 1: claim nothing more (a claim under way is put back when it returns).
            // Phase 2: wait for the answers until the deadline.
            let waiting = !self.in_flight.is_empty() || self.claiming.is_some() || self.sending.is_some();
            if !waiting || now >= stop.deadline {
                self.abandon_claim_at(stop.deadline, now, out);
                self.end_session(true, stop.hard, out);
            }
            return;
        }
        if !self.in_flight.is_empty() && now >= session.last_recv + self.s.answer_timeout {
            let reason = format!("no answer for {:?}", self.s.answer_timeout);
            self.fail_session(reason, now, out);
            return;
        }
        if now >= session.last_send + self.s.keepalive {
            session.last_send = now;
            out.push(Action::Ping);
        }
        let exhausted = self.seen.is_some_and(|s| s.generation == self.generation && !s.ready);
        let paused = self.pause_until.is_some();
        let (sending, sending_bytes) = self.sending.map_or((0, 0), |(n, b, _)| (n, b));
        // A claim task under way holds its want.
        let claiming = self.claiming.map_or(0, |(_, want)| want);
        let held = self.in_flight.len() + sending + claiming;
        let held_bytes = self.held_bytes + sending_bytes;
        let room = !exhausted
            && !paused
            && self.spool_retry_at.is_none()
            && held < session.window
            && (held_bytes < self.s.window_bytes || held == 0);
        match self.claiming {
            Some((generation, want)) if room => {
                // The task under way goes on: it claims while answers free the window, without the
                // pause between two tasks. (Its byte bound stays the one it started with.)
                let more = session.window - held;
                self.claiming = Some((generation, want + more));
                out.push(Action::ExtendClaim { more });
            }
            None if room => {
                // A first chunk, so that the first reports leave while the next ones are read.
                let chunk = (session.window / 4).clamp(1, MAX_CLAIM_CHUNK);
                let want = (session.window - held).min(chunk);
                self.claiming = Some((self.generation, want));
                out.push(Action::Claim { want, bytes: self.s.window_bytes.saturating_sub(held_bytes) });
            }
            _ => {}
        }
        let idle = held == 0 && self.claiming.is_none() && (exhausted || paused);
        if idle && now >= session.last_work + self.s.idle_close {
            let until = now + self.s.close_bound;
            self.end_session(true, until, out);
        }
    }

    /// The claim task under way at the deadline outlived the session: let it go, counted.
    fn abandon_claim_at(&mut self, deadline: Instant, now: Instant, out: &mut Vec<Action<C>>) {
        if self.claiming.is_some() && now >= deadline {
            self.claiming = None;
            out.push(Action::AbandonClaim);
        }
    }

    /// Puts back what is unanswered and closes: cleanly (a close frame, the peer's close awaited until
    /// `until`) or not.
    fn end_session(&mut self, clean: bool, until: Instant, out: &mut Vec<Action<C>>) {
        let unanswered: Vec<C> = self.in_flight.drain().map(|(_, c)| c).collect();
        self.held_bytes = 0;
        if !unanswered.is_empty() {
            out.push(Action::Say(
                DiagnosticLevel::Info,
                format!("putting back {} unanswered entries", unanswered.len()),
            ));
        }
        self.put_back(unanswered, out);
        if clean {
            out.push(Action::Close);
            self.phase = Phase::Closing { until };
        } else {
            out.push(Action::Disconnect);
            self.phase = Phase::Idle;
        }
    }

    /// The connection failed: put back, drop it, try the next URL (after a backoff if this
    /// connection settled nothing).
    fn fail_session(&mut self, reason: String, now: Instant, out: &mut Vec<Action<C>>) {
        let Phase::Connected(session) = &self.phase else { return };
        let progressed = session.progressed;
        out.push(Action::Error(reason));
        self.url += 1;
        if !progressed {
            self.reconnect_at = Some(now + self.backoff.next_wait());
        }
        self.end_session(false, now, out);
    }

    fn put_back(&mut self, claims: Vec<C>, out: &mut Vec<Action<C>>) {
        if claims.is_empty() {
            return;
        }
        // They are in ready/ again: what was seen of it no longer counts.
        self.look_again(false);
        out.push(Action::PutBack(claims));
    }

    fn settle(&mut self, settles: Vec<(C, Settle)>, out: &mut Vec<Action<C>>) {
        if settles.is_empty() {
            return;
        }
        for (claim, how) in &settles {
            let counted = match how {
                Settle::Deliver => Settled::Delivered,
                Settle::Skip(_) => Settled::Skipped,
                Settle::Quarantine(_) => Settled::Quarantined,
            };
            self.settling.insert(claim.id(), counted);
        }
        out.push(Action::Settle(settles));
    }

    fn finish(&mut self, out: &mut Vec<Action<C>>) {
        for flush in self.flushes.drain(..) {
            out.push(Action::Reply(flush.id, Err(FlushError::Stopped)));
        }
        out.push(Action::Say(DiagnosticLevel::Info, "uploader stopped".into()));
        out.push(Action::Stop);
        self.phase = Phase::Stopped;
    }

    // -----------------------------------------------------------------------------------------
    // Flushes
    // -----------------------------------------------------------------------------------------

    fn answer_flushes(&mut self, now: Instant, out: &mut Vec<Action<C>>) {
        if self.flushes.is_empty() || matches!(self.phase, Phase::Stopped) {
            return;
        }
        let flushes = std::mem::take(&mut self.flushes);
        for flush in flushes {
            match self.flush_answer(&flush, now) {
                Some(answer) => out.push(Action::Reply(flush.id, answer)),
                None => self.flushes.push(flush),
            }
        }
    }

    /// The answer to `flush` now, or `None` to go on waiting.
    fn flush_answer(&self, flush: &FlushRequest, now: Instant) -> Option<Result<(), FlushError>> {
        if let Some(reason) = self.misconfigured() {
            return Some(Err(FlushError::Misconfigured(reason.to_owned())));
        }
        let seen = self.seen.filter(|s| s.generation == self.generation);
        let crash_sending = self.sending.is_some_and(|(_, _, crash)| crash);
        let done = match flush.scope {
            Scope::All => {
                let nothing_held = self.in_flight.is_empty()
                    && self.sending.is_none()
                    && self.claiming.is_none()
                    && self.settling.is_empty();
                // Losses wait for a hello, unless the collector cannot be reached now.
                let losses_told = self.losses == self.reported
                    || matches!(self.phase, Phase::Connected(_) | Phase::Closing { .. })
                    || self.blocked.is_some();
                nothing_held && seen.is_some_and(|s| !s.ready) && losses_told
            }
            // A claim task under way started from the `ready/` that was seen (one at a time), so it
            // takes no crash when none was first there: crashes sort first.
            Scope::Crashes => {
                !crash_sending
                    && !self.in_flight.values().any(Held::is_crash)
                    && seen.is_some_and(|s| !s.first_crash)
            }
        };
        if done {
            return Some(Ok(()));
        }
        if now >= flush.deadline {
            return Some(Err(FlushError::Timeout));
        }
        if flush.at_exit && self.in_flight.is_empty() && self.sending.is_none() && self.claiming.is_none() {
            // Waiting cannot help: the entries are durable in the spool and go later.
            if let Some(Blocked::Unreachable(reason)) = &self.blocked {
                return Some(Err(FlushError::Unreachable(reason.clone())));
            }
            if self.reconnect_at.is_some_and(|t| t > flush.deadline) {
                return Some(Err(FlushError::Unreachable("the next connection attempt is too late".into())));
            }
            if let Some(until) = self.pause_until.filter(|t| *t > flush.deadline) {
                return Some(Err(FlushError::RetryLater(until.saturating_duration_since(now))));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
