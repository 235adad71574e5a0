//! The state machine's transitions, without I/O: the window, `window_bytes`, `retry_later` and the
//! pause, flush answers, connection failures and configuration errors, and the shutdown phases; then
//! a property test that drives it with a simulated spool, collector and shell and checks the
//! invariants after every step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Fake {
    id: EntryId,
    size: usize,
    crash: bool,
}

impl Held for Fake {
    fn id(&self) -> EntryId {
        self.id
    }
    fn size(&self) -> usize {
        self.size
    }
    fn is_crash(&self) -> bool {
        self.crash
    }
}

fn fake(size: usize) -> Fake {
    Fake { id: EntryId::generate(), size, crash: false }
}

fn settings() -> Settings {
    Settings {
        urls: 1,
        window: 8,
        window_bytes: 1_000_000,
        answer_timeout: Duration::from_secs(30),
        keepalive: Duration::from_secs(15),
        rescan_interval: Duration::from_secs(30),
        idle_close: Duration::from_secs(10),
        close_bound: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(30),
        seed: 1,
    }
}

const MS: Duration = Duration::from_millis(1);

/// A machine and a clock.
struct T {
    m: Machine<Fake>,
    now: Instant,
}

impl T {
    fn new(s: Settings) -> (Self, Vec<Action<Fake>>) {
        let now = Instant::now();
        let (m, first) = Machine::new(s, now);
        (Self { m, now }, first)
    }

    fn on(&mut self, event: Event<Fake>) -> Vec<Action<Fake>> {
        self.m.handle(event, self.now)
    }

    fn at(&mut self, after: Duration, event: Event<Fake>) -> Vec<Action<Fake>> {
        self.now += after;
        self.on(event)
    }

    /// From start to a connected session with work waiting: returns the first `Claim`'s want.
    fn connected(s: Settings) -> (Self, usize) {
        let (mut t, first) = Self::new(s);
        assert!(matches!(first[..], [Action::Check { rescan: false }]), "{first:?}");
        let a = t.on(Event::Checked(Ok(Work { ready: true, ..Work::default() })));
        assert!(matches!(a[..], [Action::Connect { url: 0, .. }]), "{a:?}");
        let a = t.on(Event::Connected { max_in_flight: 64, losses: Losses::default() });
        let want = claim_of(&a).expect("a claim starts").0;
        (t, want)
    }

    /// Answers the checks among `actions` (and those their answers ask for) with `ready`; returns
    /// the other actions.
    fn answer_checks(&mut self, actions: Vec<Action<Fake>>, ready: bool) -> Vec<Action<Fake>> {
        let mut rest = Vec::new();
        let mut queue: std::collections::VecDeque<_> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Check { .. } => {
                    queue.extend(self.on(Event::Checked(Ok(Work { ready, ..Work::default() }))))
                }
                other => rest.push(other),
            }
        }
        rest
    }

    fn in_flight(&self) -> usize {
        self.m.in_flight.len()
    }
}

fn claim_of(actions: &[Action<Fake>]) -> Option<(usize, usize)> {
    actions.iter().find_map(|a| match a {
        Action::Claim { want, bytes } => Some((*want, *bytes)),
        _ => None,
    })
}

fn sends(actions: Vec<Action<Fake>>) -> Vec<Fake> {
    actions
        .into_iter()
        .filter_map(|a| if let Action::Send(c) = a { Some(c) } else { None })
        .flatten()
        .collect()
}

fn replies(actions: &[Action<Fake>]) -> Vec<(u64, Result<(), FlushError>)> {
    actions
        .iter()
        .filter_map(|a| if let Action::Reply(id, r) = a { Some((*id, r.clone())) } else { None })
        .collect()
}

fn has(actions: &[Action<Fake>], pred: impl Fn(&Action<Fake>) -> bool) -> bool {
    actions.iter().any(pred)
}

fn sent_all(claims: Vec<Fake>) -> Event<Fake> {
    Event::Sent(SendOutcome { sent: claims, ..SendOutcome::default() })
}

fn flush(id: u64, deadline: Instant, at_exit: bool) -> Event<Fake> {
    Event::Flush(FlushRequest { id, deadline, scope: Scope::All, at_exit })
}

// ---------------------------------------------------------------------------------------------
// Looking for work, connecting
// ---------------------------------------------------------------------------------------------

#[test]
fn it_looks_at_the_spool_first_and_connects_only_when_there_is_work() {
    let (mut t, first) = T::new(settings());
    assert!(matches!(first[..], [Action::Check { rescan: false }]), "the spool's view is fresh at start");
    let a = t.on(Event::Checked(Ok(Work::default())));
    assert!(a.is_empty(), "an empty spool: nothing to do: {a:?}");
    let a = t.at(MS, Event::Wake);
    assert!(matches!(a[..], [Action::Check { rescan: true }]), "a wake-up looks again: {a:?}");
    let a = t.on(Event::Checked(Ok(Work { ready: true, ..Work::default() })));
    assert!(matches!(a[..], [Action::Connect { url: 0, .. }]), "{a:?}");
}

#[test]
fn losses_not_yet_reported_are_a_reason_to_connect_and_once_welcomed_are_not() {
    let (mut t, _) = T::new(settings());
    let losses = Losses { crash_loop_suppressed: 3, ..Losses::default() };
    let a = t.on(Event::Checked(Ok(Work { ready: false, first_crash: false, losses })));
    assert!(
        matches!(a[..], [Action::Connect { losses: l, .. }] if l == losses),
        "the hello carries them: {a:?}"
    );
    let a = t.on(Event::Connected { max_in_flight: 64, losses });
    assert!(claim_of(&a).is_none(), "nothing to claim: the spool was seen empty");
    // Idle until the idle close; then, back to idle, no new connection for the same losses.
    let a = t.at(Duration::from_secs(10), Event::Tick);
    assert!(has(&a, |a| matches!(a, Action::Close)), "{a:?}");
    let a = t.at(MS, Event::StreamEnded("closed".into()));
    assert!(!has(&a, |a| matches!(a, Action::Connect { .. })), "{a:?}");
}

#[test]
fn a_failed_round_backs_off_and_fails_over_to_the_next_url_at_once() {
    let (mut t, _) = T::new(Settings { urls: 2, ..settings() });
    t.on(Event::Checked(Ok(Work { ready: true, ..Work::default() })));
    let a = t.on(Event::ConnectFailed { failure: Failure::Unreachable, reason: "refused".into() });
    assert!(
        matches!(a[..], [Action::Error(_), Action::Connect { url: 1, .. }]),
        "the next URL at once: {a:?}"
    );
    let a = t.on(Event::ConnectFailed { failure: Failure::Unreachable, reason: "refused".into() });
    assert!(!has(&a, |a| matches!(a, Action::Connect { .. })), "a whole round failed: back off: {a:?}");
    let wake = t.m.next_wake(t.now);
    assert!(wake <= t.now + Duration::from_millis(200), "the first backoff is at most 200 ms");
    let a = t.at(wake - t.now, Event::Tick);
    assert!(has(&a, |a| matches!(a, Action::Connect { url: 2, .. })), "{a:?}");
}

#[test]
fn busy_is_retried_not_before_retry_after_and_is_not_a_configuration_error() {
    let (mut t, _) = T::new(settings());
    t.on(Event::Checked(Ok(Work { ready: true, ..Work::default() })));
    let a = t.on(Event::ConnectFailed {
        failure: Failure::Busy(Some(Duration::from_secs(5))),
        reason: "busy (HTTP 503)".into(),
    });
    assert!(!has(&a, |a| matches!(a, Action::Say(DiagnosticLevel::Error, _))));
    assert!(t.m.misconfigured().is_none());
    let a = t.at(Duration::from_millis(4999), Event::Tick);
    assert!(!has(&a, |a| matches!(a, Action::Connect { .. })), "not before Retry-After");
    let a = t.at(MS, Event::Tick);
    assert!(has(&a, |a| matches!(a, Action::Connect { .. })), "{a:?}");
}

#[test]
fn a_configuration_error_is_said_once_answers_every_flush_and_is_not_retried_in_a_loop() {
    let (mut t, _) = T::new(settings());
    let deadline = t.now + Duration::from_secs(20);
    let a = t.on(Event::Checked(Ok(Work { ready: true, ..Work::default() })));
    assert!(matches!(a[..], [Action::Connect { .. }]));
    let a = t.on(flush(1, deadline, false));
    assert!(replies(&a).is_empty());
    let a = t
        .on(Event::ConnectFailed { failure: Failure::Config, reason: "refused the token (HTTP 401)".into() });
    let said: Vec<_> = a.iter().filter(|a| matches!(a, Action::Say(DiagnosticLevel::Error, _))).collect();
    assert_eq!(said.len(), 1, "{a:?}");
    assert!(
        matches!(&replies(&a)[..], [(1, Err(FlushError::Misconfigured(r)))] if r.contains("401")),
        "{a:?}"
    );
    let a = t.answer_checks(a, true);
    assert!(!has(&a, |a| matches!(a, Action::Connect { .. })), "{a:?}");
    // An exit flush too, at once.
    let a = t.on(flush(2, deadline, true));
    assert!(matches!(&replies(&a)[..], [(2, Err(FlushError::Misconfigured(_)))]), "{a:?}");
    t.answer_checks(a, true);
    // Not retried before a minute (the looks at the spool meanwhile do not connect).
    let mut connected_at = None;
    for second in 1..=61 {
        let a = t.at(Duration::from_secs(1), Event::Tick);
        let a = t.answer_checks(a, true);
        if has(&a, |a| matches!(a, Action::Connect { .. })) {
            connected_at = Some(second);
            break;
        }
    }
    assert_eq!(connected_at, Some(60), "tried again after a minute");
    let a = t
        .on(Event::ConnectFailed { failure: Failure::Config, reason: "refused the token (HTTP 401)".into() });
    assert!(!has(&a, |a| matches!(a, Action::Say(DiagnosticLevel::Error, _))), "said once, not again: {a:?}");
}

#[test]
fn an_unusable_ca_file_stops_every_connection_and_answers_flushes() {
    let (mut t, _) = T::new(settings());
    let a = t.on(Event::Broken("the CA file /x: not found".into()));
    assert!(has(&a, |a| matches!(a, Action::Say(DiagnosticLevel::Error, _))));
    let a = t.on(Event::Checked(Ok(Work { ready: true, ..Work::default() })));
    assert!(!has(&a, |a| matches!(a, Action::Connect { .. })), "{a:?}");
    let a = t.on(flush(1, t.now + Duration::from_secs(5), false));
    assert!(matches!(&replies(&a)[..], [(1, Err(FlushError::Misconfigured(_)))]), "{a:?}");
}

// ---------------------------------------------------------------------------------------------
// The window
// ---------------------------------------------------------------------------------------------

#[test]
fn never_more_than_the_window_is_claimed_and_unanswered() {
    let (mut t, want) = T::connected(settings());
    assert_eq!(want, 2, "a quarter of the window of 8 at a time");
    let mut want = Some(want);
    let mut sent = Vec::new();
    while let Some(w) = want {
        let batch: Vec<Fake> = (0..w).map(|_| fake(10)).collect();
        let a = t.on(Event::Claimed { claims: batch, empty: false, first_crash: false });
        let next = claim_of(&a);
        let held = t.in_flight() + t.m.sending.map_or(0, |s| s.0) + next.map_or(0, |c| c.0);
        assert!(held <= 8, "held {held}");
        let batch = sends(a);
        sent.extend(batch.iter().map(|c| c.id));
        let a = t.on(sent_all(batch));
        assert!(claim_of(&a).is_none(), "the next claim started before the send");
        want = next.map(|c| c.0);
    }
    assert_eq!(t.in_flight(), 8, "the window is used");
    // An answer frees a place: a claim for one more.
    let a = t.on(Event::Received(vec![(sent[0], Verdict::Accepted)]));
    assert!(has(&a, |a| matches!(a, Action::Settle(s) if s.len() == 1 && s[0].1 == Settle::Deliver)));
    assert_eq!(claim_of(&a).map(|c| c.0), Some(1), "{a:?}");
}

#[test]
fn the_collector_s_max_in_flight_caps_the_window() {
    let (mut t, _) = T::new(Settings { window: 256, ..settings() });
    t.on(Event::Checked(Ok(Work { ready: true, ..Work::default() })));
    let a = t.on(Event::Connected { max_in_flight: 4, losses: Losses::default() });
    assert_eq!(claim_of(&a).map(|c| c.0), Some(1), "a quarter of 4");
}

#[test]
fn window_bytes_stops_claiming_until_answers_free_bytes_and_one_is_always_allowed() {
    let (mut t, _) = T::connected(Settings { window_bytes: 1000, ..settings() });
    let a = t.on(Event::Claimed {
        claims: vec![fake(400), fake(400), fake(400)],
        empty: false,
        first_crash: false,
    });
    assert!(claim_of(&a).is_none(), "1200 bytes held reach the bound of 1000: {a:?}");
    let batch = sends(a);
    let ids: Vec<_> = batch.iter().map(|c| c.id).collect();
    t.on(sent_all(batch));
    let a = t.on(Event::Received(vec![(ids[0], Verdict::Accepted)]));
    assert_eq!(claim_of(&a), Some((2, 200)), "800 held: 200 more bytes may be claimed");
    // One entry larger than the bound alone is still claimed when nothing is held.
    let (mut t, _) = T::connected(Settings { window_bytes: 100, ..settings() });
    let a = t.on(Event::Claimed { claims: vec![fake(500)], empty: false, first_crash: false });
    let batch = sends(a);
    let id = batch[0].id;
    t.on(sent_all(batch));
    let a = t.on(Event::Received(vec![(id, Verdict::Accepted)]));
    assert_eq!(claim_of(&a).map(|c| c.0), Some(2), "nothing held: a claim may start: {a:?}");
}

// ---------------------------------------------------------------------------------------------
// retry_later and the pause
// ---------------------------------------------------------------------------------------------

#[test]
fn retry_later_puts_the_entry_back_pauses_claims_and_resumes_after_the_delay() {
    let (mut t, _) = T::connected(settings());
    let a = t.on(Event::Claimed { claims: vec![fake(10)], empty: true, first_crash: false });
    let batch = sends(a);
    let id = batch[0].id;
    t.on(sent_all(batch));
    let a = t.on(Event::Received(vec![(id, Verdict::RetryLater(Duration::from_millis(400)))]));
    assert!(has(&a, |a| matches!(a, Action::PutBack(c) if c[0].id == id)), "{a:?}");
    assert!(claim_of(&a).is_none(), "paused");
    assert!(t.m.deferred().contains(&id) && !t.m.outstanding().contains(&id));
    assert_eq!(t.m.next_wake(t.now), t.now + Duration::from_millis(400));
    let a = t.at(Duration::from_millis(399), Event::Tick);
    assert!(claim_of(&a).is_none());
    let a = t.at(MS, Event::Tick);
    assert!(claim_of(&a).is_some(), "the delay passed: claim again: {a:?}");
}

#[test]
fn claims_that_arrive_during_a_pause_go_back_unsent() {
    let (mut t, _) = T::connected(settings());
    let a = t.on(Event::Claimed { claims: vec![fake(10)], empty: false, first_crash: false });
    let batch = sends(a);
    let id = batch[0].id;
    t.on(sent_all(batch));
    // A claim task is under way when the retry_later comes.
    t.on(Event::Received(vec![(id, Verdict::RetryLater(Duration::from_secs(1)))]));
    let unsent = fake(10);
    let a = t.on(Event::Claimed { claims: vec![unsent.clone()], empty: false, first_crash: false });
    assert!(has(&a, |a| matches!(a, Action::PutBack(_))) && sends(a).is_empty());
    assert!(!t.m.outstanding().contains(&unsent.id), "given back as it was found: not counted");
    assert!(t.m.deferred().contains(&id), "the deferred one stays deferred");
}

fn extension_of(actions: &[Action<Fake>]) -> Option<usize> {
    actions.iter().find_map(|a| match a {
        Action::ExtendClaim { more } => Some(*more),
        _ => None,
    })
}

#[test]
fn a_claim_task_hands_on_what_it_took_and_goes_on_as_answers_free_the_window() {
    let (mut t, want) = T::connected(settings());
    assert_eq!(want, 2);
    // The first claim of the task: sent at once, and the task may take the rest of the window.
    let a = t.on(Event::ClaimedSome(vec![fake(10)]));
    assert!(claim_of(&a).is_none(), "one claim task at a time");
    assert_eq!(extension_of(&a), Some(6), "{a:?}");
    let sent = sends(a);
    assert_eq!(sent.len(), 1);
    let a = t.on(sent_all(sent.clone()));
    assert_eq!(extension_of(&a), None, "the window is held: 1 in flight, 7 being claimed");
    // An answer while the task runs: the task is let take one more, no new task waits for its end.
    let a = t.on(Event::Received(vec![(sent[0].id, Verdict::Accepted)]));
    assert!(claim_of(&a).is_none(), "{a:?}");
    assert_eq!(extension_of(&a), Some(1), "{a:?}");
    // The task's end carries the rest; a new task starts only then.
    let rest: Vec<Fake> = (0..8).map(|_| fake(10)).collect();
    let a = t.on(Event::Claimed { claims: rest, empty: false, first_crash: false });
    assert_eq!(sends(a).len(), 8);
    assert_eq!(t.m.outstanding().len(), 9, "every claim handed on is counted once");
}

#[test]
fn claims_handed_on_after_the_shutdown_began_go_back_unsent_and_the_task_is_not_extended() {
    let (mut t, _) = T::connected(settings());
    let deadline = t.now + Duration::from_secs(2);
    t.on(Event::Shutdown { deadline, hard: deadline + Duration::from_millis(500) });
    let unsent = fake(10);
    let a = t.on(Event::ClaimedSome(vec![unsent.clone()]));
    assert_eq!(extension_of(&a), None, "{a:?}");
    assert!(has(&a, |a| matches!(a, Action::PutBack(_))) && sends(a).is_empty());
    assert!(!t.m.outstanding().contains(&unsent.id), "given back as it was found: not counted");
}

// ---------------------------------------------------------------------------------------------
// Flush answers
// ---------------------------------------------------------------------------------------------

#[test]
fn a_flush_is_not_answered_ok_while_an_entry_answered_retry_later_waits() {
    // The bug of the old session: a claim that found ready/ empty, then a retry_later put an entry
    // back, and the flush was answered Ok from the stale "empty".
    let (mut t, _) = T::connected(settings());
    let deadline = t.now + Duration::from_secs(10);
    let a = t.on(flush(7, deadline, false));
    assert!(replies(&a).is_empty());
    let a = t.on(Event::Claimed { claims: vec![fake(10)], empty: true, first_crash: false });
    // The claim started before the flush: it is sent, and ready/ is looked at again.
    assert!(claim_of(&a).is_some());
    let batch = sends(a);
    let entry = batch[0].clone();
    t.on(sent_all(batch));
    let a = t.on(Event::Claimed { claims: Vec::new(), empty: true, first_crash: false });
    assert!(replies(&a).is_empty(), "the entry is in flight: {a:?}");
    let a = t.on(Event::Received(vec![(entry.id, Verdict::RetryLater(Duration::from_millis(300)))]));
    assert!(replies(&a).is_empty(), "it is back in ready/: {a:?}");
    assert!(claim_of(&a).is_none(), "paused");
    let a = t.at(Duration::from_millis(300), Event::Tick);
    assert!(claim_of(&a).is_some() && replies(&a).is_empty());
    let a = t.on(Event::Claimed { claims: vec![entry.clone()], empty: true, first_crash: false });
    assert!(replies(&a).is_empty(), "it is being sent: {a:?}");
    t.on(sent_all(sends(a)));
    let a = t.on(Event::Received(vec![(entry.id, Verdict::Accepted)]));
    assert!(replies(&a).is_empty(), "the delete is pending: {a:?}");
    let a = t.on(Event::Settled(vec![(entry.id, Ok(()))]));
    assert_eq!(replies(&a), vec![(7, Ok(()))]);
    assert_eq!(t.m.counts().delivered, 1);
}

#[test]
fn an_empty_seen_by_a_claim_that_started_before_a_wake_up_does_not_answer_a_flush() {
    let (mut t, _) = T::connected(settings());
    t.on(flush(1, t.now + Duration::from_secs(10), false));
    // The claim task started before the flush (generation bumped): its "empty" is stale.
    let a = t.on(Event::Claimed { claims: Vec::new(), empty: true, first_crash: false });
    assert!(replies(&a).is_empty(), "{a:?}");
    assert!(claim_of(&a).is_some(), "looks again");
    let a = t.on(Event::Claimed { claims: Vec::new(), empty: true, first_crash: false });
    assert_eq!(replies(&a), vec![(1, Ok(()))]);
}

#[test]
fn a_spool_error_never_answers_a_flush_ok_and_the_deadline_answers_timeout() {
    let (mut t, _) = T::new(settings());
    t.on(Event::Checked(Err("spool: EIO".into())));
    let deadline = t.now + Duration::from_secs(2);
    let a = t.on(flush(1, deadline, false));
    assert!(replies(&a).is_empty());
    let a = t.at(SPOOL_RETRY, Event::Tick);
    assert!(has(&a, |a| matches!(a, Action::Check { .. })), "looks again after a pause: {a:?}");
    let a = t.on(Event::Checked(Err("spool: EIO".into())));
    assert!(replies(&a).is_empty());
    let a = t.at(deadline - t.now, Event::Tick);
    assert_eq!(replies(&a), vec![(1, Err(FlushError::Timeout))]);
    // In a session: a failed claim is not "empty" either.
    let (mut t, _) = T::connected(settings());
    t.on(flush(2, t.now + Duration::from_secs(2), false));
    let a = t.on(Event::ClaimFailed("spool: EIO".into()));
    assert!(replies(&a).is_empty() && claim_of(&a).is_none(), "{a:?}");
    let a = t.at(SPOOL_RETRY, Event::Tick);
    assert!(claim_of(&a).is_some(), "{a:?}");
}

#[test]
fn an_exit_flush_gives_up_at_once_when_the_collector_cannot_be_reached_and_a_flush_waits() {
    let (mut t, _) = T::new(settings());
    let deadline = t.now + Duration::from_secs(2);
    let a = t.on(Event::Checked(Ok(Work { ready: true, ..Work::default() })));
    assert!(has(&a, |a| matches!(a, Action::Connect { .. })));
    t.on(flush(1, deadline, false));
    let a = t.on(flush(2, deadline, true));
    assert!(replies(&a).is_empty(), "a connection attempt is under way: {a:?}");
    let a = t.on(Event::ConnectFailed { failure: Failure::Unreachable, reason: "refused".into() });
    assert!(matches!(&replies(&a)[..], [(2, Err(FlushError::Unreachable(r)))] if r == "refused"), "{a:?}");
    let a = t.at(deadline - t.now, Event::Tick);
    let a = t.answer_checks(a, true);
    let r = replies(&a);
    assert!(r.contains(&(1, Err(FlushError::Timeout))), "a plain flush waits out its deadline: {a:?}");
}

#[test]
fn an_exit_flush_honours_a_retry_later_that_fits_and_gives_up_on_one_that_does_not() {
    for (delay, fits) in [(Duration::from_millis(500), true), (Duration::from_secs(5), false)] {
        let (mut t, _) = T::connected(settings());
        let deadline = t.now + Duration::from_secs(2);
        let a = t.on(Event::Claimed { claims: vec![fake(10)], empty: true, first_crash: false });
        let batch = sends(a);
        let entry = batch[0].clone();
        t.on(sent_all(batch));
        let a = t.on(flush(1, deadline, true));
        assert!(claim_of(&a).is_some());
        t.on(Event::Claimed { claims: Vec::new(), empty: true, first_crash: false });
        let a = t.on(Event::Received(vec![(entry.id, Verdict::RetryLater(delay))]));
        if fits {
            assert!(replies(&a).is_empty(), "waits for the delay: {a:?}");
            let a = t.at(delay, Event::Tick);
            assert!(claim_of(&a).is_some(), "{a:?}");
            let a = t.on(Event::Claimed { claims: vec![entry.clone()], empty: true, first_crash: false });
            t.on(sent_all(sends(a)));
            t.on(Event::Received(vec![(entry.id, Verdict::Accepted)]));
            let a = t.on(Event::Settled(vec![(entry.id, Ok(()))]));
            assert_eq!(replies(&a), vec![(1, Ok(()))]);
        } else {
            assert!(matches!(&replies(&a)[..], [(1, Err(FlushError::RetryLater(_)))]), "{a:?}");
        }
    }
}

#[test]
fn a_crashes_flush_is_answered_once_no_crash_is_waiting_or_in_flight() {
    let (mut t, _) = T::connected(settings());
    let deadline = t.now + Duration::from_secs(2);
    t.on(Event::Flush(FlushRequest { id: 1, deadline, scope: Scope::Crashes, at_exit: true }));
    let crash = Fake { crash: true, ..fake(10) };
    let a = t.on(Event::Claimed { claims: vec![crash.clone()], empty: false, first_crash: false });
    assert!(replies(&a).is_empty(), "the crash is being sent");
    t.on(sent_all(sends(a)));
    let a = t.on(Event::Claimed { claims: vec![fake(10)], empty: false, first_crash: false });
    assert!(replies(&a).is_empty(), "the crash is in flight");
    t.on(sent_all(sends(a)));
    let a = t.on(Event::Received(vec![(crash.id, Verdict::Accepted)]));
    assert_eq!(replies(&a), vec![(1, Ok(()))], "a log still in flight does not matter: {a:?}");
}

#[test]
fn a_skip_is_counted_as_skipped_and_an_unsendable_entry_as_quarantined() {
    let (mut t, _) = T::connected(settings());
    let (a, b) = (fake(1), fake(1));
    let out = t.on(Event::Claimed { claims: vec![a.clone(), b.clone()], empty: true, first_crash: false });
    let _ = sends(out);
    let out = t.on(Event::Sent(SendOutcome {
        skipped: vec![(a.clone(), "crash loop".into())],
        unsendable: vec![(b.clone(), "too large".into())],
        ..SendOutcome::default()
    }));
    assert!(has(&out, |x| matches!(x, Action::Settle(s) if s.len() == 2)));
    t.on(Event::Settled(vec![(a.id, Ok(())), (b.id, Ok(()))]));
    let c = t.m.counts();
    assert_eq!((c.delivered, c.skipped, c.quarantined), (0, 1, 1));
    assert!(t.m.outstanding().is_empty());
}

#[test]
fn a_failed_delete_keeps_the_entry_outstanding_and_looks_again() {
    let (mut t, _) = T::connected(settings());
    let e = fake(1);
    let out = t.on(Event::Claimed { claims: vec![e.clone()], empty: true, first_crash: false });
    t.on(sent_all(sends(out)));
    t.on(Event::Received(vec![(e.id, Verdict::Accepted)]));
    let out = t.on(Event::Settled(vec![(e.id, Err("EIO".into()))]));
    assert!(has(&out, |a| matches!(a, Action::Error(_))));
    assert!(claim_of(&out).is_some(), "the entry is back in ready/: look again: {out:?}");
    assert!(t.m.outstanding().contains(&e.id));
    assert_eq!(t.m.counts().delivered, 0);
}

// ---------------------------------------------------------------------------------------------
// Failures and the idle close
// ---------------------------------------------------------------------------------------------

#[test]
fn no_answer_within_the_answer_timeout_ends_the_session_and_puts_back() {
    let (mut t, _) = T::connected(settings());
    let out = t.on(Event::Claimed { claims: vec![fake(1)], empty: true, first_crash: false });
    t.on(sent_all(sends(out)));
    let out = t.at(Duration::from_secs(15), Event::Tick);
    assert!(has(&out, |a| matches!(a, Action::Ping)), "a keepalive ping: {out:?}");
    let out = t.at(Duration::from_secs(15), Event::Tick);
    assert!(has(&out, |a| matches!(a, Action::PutBack(c) if c.len() == 1)), "{out:?}");
    assert!(has(&out, |a| matches!(a, Action::Disconnect)));
    assert!(!t.m.is_connected());
}

#[test]
fn an_idle_session_closes_cleanly_after_idle_close() {
    let (mut t, _) = T::connected(settings());
    t.on(Event::Claimed { claims: Vec::new(), empty: true, first_crash: false });
    let out = t.at(Duration::from_millis(9999), Event::Tick);
    assert!(!has(&out, |a| matches!(a, Action::Close)));
    let out = t.at(MS, Event::Tick);
    assert!(has(&out, |a| matches!(a, Action::Close)), "{out:?}");
    // The peer's close never comes: dropped at the close bound.
    let out = t.at(Duration::from_millis(500), Event::Tick);
    assert!(has(&out, |a| matches!(a, Action::Disconnect)), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// Stopping
// ---------------------------------------------------------------------------------------------

#[test]
fn shutdown_claims_nothing_more_waits_for_answers_until_the_deadline_then_puts_back_and_closes() {
    let (mut t, _) = T::connected(settings());
    let out = t.on(Event::Claimed { claims: vec![fake(1), fake(1)], empty: false, first_crash: false });
    let batch = sends(out);
    let ids: Vec<_> = batch.iter().map(|c| c.id).collect();
    t.on(sent_all(batch));
    let deadline = t.now + Duration::from_secs(1);
    let hard = deadline + Duration::from_millis(500);
    let out = t.on(Event::Shutdown { deadline, hard });
    assert!(!has(&out, |a| matches!(a, Action::PutBack(_) | Action::Close)), "waits for answers: {out:?}");
    // The claim task under way returns: its claims go back unsent.
    let out = t.on(Event::Claimed { claims: vec![fake(1)], empty: false, first_crash: false });
    assert!(sends(out).is_empty());
    let out = t.at(Duration::from_millis(100), Event::Received(vec![(ids[0], Verdict::Accepted)]));
    assert!(claim_of(&out).is_none(), "nothing is claimed after the shutdown began");
    let out = t.at(deadline - t.now, Event::Tick);
    assert!(has(&out, |a| matches!(a, Action::PutBack(c) if c.len() == 1 && c[0].id == ids[1])), "{out:?}");
    assert!(has(&out, |a| matches!(a, Action::Close)));
    let out = t.at(MS, Event::StreamEnded("closed".into()));
    assert!(!has(&out, |a| matches!(a, Action::Stop)), "the delete is still running: {out:?}");
    let out = t.at(MS, Event::Settled(vec![(ids[0], Ok(()))]));
    assert!(has(&out, |a| matches!(a, Action::Stop)), "{out:?}");
    assert!(t.m.is_stopped());
}

#[test]
fn shutdown_ends_by_the_hard_deadline_whatever_is_still_running() {
    let (mut t, _) = T::connected(settings());
    // A claim task that never returns, and a delete that never ends.
    let e = fake(1);
    let out = t.on(Event::Claimed { claims: vec![e.clone()], empty: false, first_crash: false });
    t.on(sent_all(sends(out)));
    t.on(Event::Received(vec![(e.id, Verdict::Accepted)]));
    let deadline = t.now + Duration::from_secs(1);
    let hard = deadline + Duration::from_millis(500);
    t.on(Event::Shutdown { deadline, hard });
    let out = t.at(deadline - t.now, Event::Tick);
    assert!(has(&out, |a| matches!(a, Action::AbandonClaim)), "{out:?}");
    assert!(has(&out, |a| matches!(a, Action::Close)));
    assert!(!t.m.is_stopped());
    let wake = t.m.next_wake(t.now);
    assert_eq!(wake, hard);
    let out = t.at(hard - t.now, Event::Tick);
    assert!(has(&out, |a| matches!(a, Action::Disconnect)));
    assert!(has(&out, |a| matches!(a, Action::Stop)), "{out:?}");
    assert!(t.m.outstanding().contains(&e.id), "the pending delete counts as put back");
}

#[test]
fn shutdown_while_connecting_stops_trying_and_answers_flushes_stopped() {
    let (mut t, _) = T::new(settings());
    t.on(Event::Checked(Ok(Work { ready: true, ..Work::default() })));
    t.on(flush(3, t.now + Duration::from_secs(5), false));
    let now = t.now;
    let out = t.on(Event::Shutdown { deadline: now, hard: now + Duration::from_millis(500) });
    assert!(has(&out, |a| matches!(a, Action::Disconnect)));
    assert!(replies(&out).contains(&(3, Err(FlushError::Stopped))));
    assert!(has(&out, |a| matches!(a, Action::Stop)));
    // A connection that still completes is dropped.
    let out = t.on(Event::Connected { max_in_flight: 8, losses: Losses::default() });
    assert!(claim_of(&out).is_none());
}

// ---------------------------------------------------------------------------------------------
// A model: a simulated spool, collector and shell around the machine
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Write {
        size: usize,
        crash: bool,
    },
    FinishClaim {
        fail: bool,
    },
    /// The claim task hands on up to this many of what it takes, and goes on.
    PartClaim(usize),
    FinishConnect(u8),
    Answer {
        pick: usize,
        verdict: u8,
        delay_ms: u64,
    },
    FinishSettle {
        pick: usize,
        fail: bool,
    },
    Advance(u64),
    Flush {
        at_exit: bool,
        crashes: bool,
        timeout_ms: u64,
    },
    StreamEnd,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..600, any::<bool>()).prop_map(|(size, crash)| Op::Write { size, crash }),
        4 => (prop::bool::weighted(0.1)).prop_map(|fail| Op::FinishClaim { fail }),
        2 => (1usize..4).prop_map(Op::PartClaim),
        2 => (0u8..4).prop_map(Op::FinishConnect),
        4 => (any::<usize>(), 0u8..5, 0u64..3000).prop_map(|(pick, verdict, delay_ms)| Op::Answer { pick, verdict, delay_ms }),
        3 => (any::<usize>(), prop::bool::weighted(0.1)).prop_map(|(pick, fail)| Op::FinishSettle { pick, fail }),
        3 => (0u64..20_000).prop_map(Op::Advance),
        1 => (any::<bool>(), any::<bool>(), 0u64..5000).prop_map(|(at_exit, crashes, timeout_ms)| Op::Flush { at_exit, crashes, timeout_ms }),
        1 => Just(Op::StreamEnd),
    ]
}

/// The world around the machine, and the checks of what the machine does in it.
struct Sim {
    t: T,
    ready: BTreeMap<EntryId, Fake>,
    /// The claim task under way: how many more it may take, and the bytes left of its bound.
    claim_task: Option<(usize, usize)>,
    /// What the task under way took so far (its first claim is always taken).
    claim_took: usize,
    connecting: bool,
    connected: bool,
    unanswered: Vec<EntryId>,
    settling: Vec<(Fake, Settle)>,
    settled: HashSet<EntryId>,
    every: HashSet<EntryId>,
    stopping: bool,
    next_flush: u64,
    /// Flushes asked and not answered: (id, scope).
    flushes: Vec<(u64, Scope)>,
}

impl Sim {
    fn new(s: Settings) -> Self {
        let (t, first) = T::new(s);
        let mut sim = Self {
            t,
            ready: BTreeMap::new(),
            claim_task: None,
            claim_took: 0,
            connecting: false,
            connected: false,
            unanswered: Vec::new(),
            settling: Vec::new(),
            settled: HashSet::new(),
            every: HashSet::new(),
            stopping: false,
            next_flush: 0,
            flushes: Vec::new(),
        };
        sim.run(first);
        sim
    }

    fn event(&mut self, event: Event<Fake>) {
        let actions = self.t.on(event);
        self.run(actions);
    }

    /// Carries out the actions as the shell does, and checks each.
    fn run(&mut self, actions: Vec<Action<Fake>>) {
        let mut queue: std::collections::VecDeque<_> = actions.into();
        while let Some(action) = queue.pop_front() {
            let m = &self.t.m;
            let event = match action {
                Action::Check { .. } => {
                    // Crashes sort first in a spool: one waits iff the first entry is one.
                    let first_crash = self.ready.values().any(|f| f.crash);
                    Some(Event::Checked(Ok(Work {
                        ready: !self.ready.is_empty(),
                        first_crash,
                        losses: Losses::default(),
                    })))
                }
                Action::Connect { .. } => {
                    assert!(!self.connecting && !self.connected);
                    self.connecting = true;
                    None
                }
                Action::Claim { want, bytes } => {
                    assert!(self.claim_task.is_none(), "one claim task at a time");
                    assert!(!self.stopping, "no claim after the shutdown began");
                    let sending = m.sending.map_or((0, 0), |s| (s.0, s.1));
                    let held = m.in_flight.len() + sending.0;
                    assert!(held + want <= m.s.window, "window: {held} held + {want}");
                    assert!(held == 0 || m.held_bytes + sending.1 < m.s.window_bytes, "window_bytes");
                    self.claim_task = Some((want, bytes));
                    self.claim_took = 0;
                    None
                }
                Action::ExtendClaim { more } => {
                    assert!(!self.stopping, "no claim after the shutdown began");
                    // An extension of a task that ended is dropped, as the shell drops it.
                    if let Some((want, bytes)) = self.claim_task {
                        let held = m.in_flight.len() + m.sending.map_or(0, |s| s.0) + want;
                        assert!(held + more <= m.s.window, "window: {held} held + {more} more");
                        assert!(
                            m.held_bytes + m.sending.map_or(0, |s| s.1) < m.s.window_bytes,
                            "window_bytes"
                        );
                        self.claim_task = Some((want + more, bytes));
                    }
                    None
                }
                Action::Send(claims) => {
                    assert!(!self.stopping, "nothing is sent after the shutdown began");
                    assert!(self.connected);
                    // Every seventh byte count is skipped by the prepare hook.
                    let (skipped, sent): (Vec<_>, Vec<_>) = claims.into_iter().partition(|c| c.size % 7 == 0);
                    self.unanswered.extend(sent.iter().map(|c| c.id));
                    let skipped = skipped.into_iter().map(|c| (c, "skip".to_owned())).collect();
                    Some(Event::Sent(SendOutcome { sent, skipped, ..SendOutcome::default() }))
                }
                Action::Settle(list) => {
                    self.settling.extend(list);
                    None
                }
                Action::PutBack(claims) => {
                    for c in claims {
                        self.unanswered.retain(|id| *id != c.id);
                        assert!(self.ready.insert(c.id, c).is_none());
                    }
                    None
                }
                Action::Ping | Action::Say(..) | Action::Error(_) => None,
                Action::Close => None,
                Action::Disconnect => {
                    self.connected = false;
                    self.connecting = false;
                    self.unanswered.clear();
                    None
                }
                Action::AbandonClaim => {
                    // The task had taken nothing yet in this model.
                    self.claim_task = None;
                    None
                }
                Action::Reply(id, result) => {
                    let (_, scope) =
                        self.flushes.iter().find(|(f, _)| *f == id).copied().expect("a flush asked");
                    self.flushes.retain(|(f, _)| *f != id);
                    if result.is_ok() {
                        match scope {
                            Scope::All => {
                                assert!(self.ready.is_empty(), "flush Ok with entries ready");
                                assert!(
                                    m.in_flight.is_empty()
                                        && self.settling.is_empty()
                                        && self.claim_task.is_none()
                                );
                            }
                            Scope::Crashes => {
                                assert!(
                                    !self.ready.values().any(|f| f.crash),
                                    "crash flush Ok with a crash ready"
                                );
                                assert!(!m.in_flight.values().any(|f| f.crash));
                            }
                        }
                    }
                    None
                }
                Action::Stop => None,
            };
            if let Some(event) = event {
                queue.extend(self.t.on(event));
            }
        }
        self.check_conservation();
    }

    /// What the claim task takes next: up to `want` entries, crashes first (as the spool's order has
    /// it), until their bodies reach `bytes` (its first claim is always taken).
    fn take_ready(&mut self, want: usize, bytes: usize) -> Vec<Fake> {
        let mut claims = Vec::new();
        let mut taken = 0;
        while claims.len() < want && ((self.claim_took == 0 && claims.is_empty()) || taken < bytes) {
            let next = self.ready.values().find(|f| f.crash).or_else(|| self.ready.values().next());
            let Some(id) = next.map(|f| f.id) else { break };
            let f = self.ready.remove(&id).expect("listed");
            taken += f.size;
            claims.push(f);
        }
        claims
    }

    /// Every entry is in exactly one place.
    fn check_conservation(&self) {
        let mut seen = HashSet::new();
        let places = self
            .ready
            .keys()
            .chain(self.t.m.in_flight.keys())
            .chain(self.settling.iter().map(|(c, _)| &c.id))
            .chain(self.settled.iter());
        for id in places {
            assert!(seen.insert(*id), "{id} is in two places");
        }
        assert_eq!(seen, self.every, "every entry is somewhere");
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Write { size, crash } => {
                let f = Fake { id: EntryId::generate(), size, crash };
                self.every.insert(f.id);
                self.ready.insert(f.id, f);
                self.event(Event::Wake);
            }
            Op::FinishClaim { fail } => {
                let Some((want, bytes)) = self.claim_task.take() else { return };
                if fail {
                    self.event(Event::ClaimFailed("EIO".into()));
                    return;
                }
                let claims = self.take_ready(want, bytes);
                let empty = self.ready.is_empty();
                let first_crash = self.ready.values().any(|f| f.crash);
                self.event(Event::Claimed { claims, empty, first_crash });
            }
            Op::PartClaim(n) => {
                let Some((want, bytes)) = self.claim_task else { return };
                let claims = self.take_ready(want.min(n), bytes);
                if claims.is_empty() {
                    return;
                }
                let size: usize = claims.iter().map(|c| c.size).sum();
                self.claim_task = Some((want - claims.len(), bytes.saturating_sub(size)));
                self.claim_took += claims.len();
                self.event(Event::ClaimedSome(claims));
            }
            Op::FinishConnect(how) => {
                if !self.connecting {
                    return;
                }
                self.connecting = false;
                let event = match how {
                    0 | 1 => {
                        self.connected = true;
                        Event::Connected { max_in_flight: 6, losses: Losses::default() }
                    }
                    2 => Event::ConnectFailed { failure: Failure::Unreachable, reason: "refused".into() },
                    _ => Event::ConnectFailed { failure: Failure::Busy(None), reason: "busy".into() },
                };
                self.event(event);
            }
            Op::Answer { pick, verdict, delay_ms } => {
                if self.unanswered.is_empty() {
                    return;
                }
                let id = self.unanswered.remove(pick % self.unanswered.len());
                let verdict = match verdict {
                    0 | 1 => Verdict::Accepted,
                    2 => Verdict::Duplicate,
                    3 => Verdict::Rejected("malformed".into()),
                    _ => Verdict::RetryLater(Duration::from_millis(delay_ms)),
                };
                self.event(Event::Received(vec![(id, verdict)]));
            }
            Op::FinishSettle { pick, fail } => {
                if self.settling.is_empty() {
                    return;
                }
                let (claim, _) = self.settling.remove(pick % self.settling.len());
                let id = claim.id;
                if fail {
                    self.ready.insert(id, claim);
                    self.event(Event::Settled(vec![(id, Err("EIO".into()))]));
                } else {
                    self.settled.insert(id);
                    self.event(Event::Settled(vec![(id, Ok(()))]));
                }
            }
            Op::Advance(ms) => {
                self.t.now += Duration::from_millis(ms);
                self.event(Event::Tick);
            }
            Op::Flush { at_exit, crashes, timeout_ms } => {
                let id = self.next_flush;
                self.next_flush += 1;
                let scope = if crashes { Scope::Crashes } else { Scope::All };
                self.flushes.push((id, scope));
                let deadline = self.t.now + Duration::from_millis(timeout_ms);
                self.event(Event::Flush(FlushRequest { id, deadline, scope, at_exit }));
            }
            Op::StreamEnd => {
                if self.connected {
                    self.connected = false;
                    self.unanswered.clear();
                    self.event(Event::StreamEnded("lost".into()));
                }
            }
        }
    }

    /// The shutdown phases, with the world answering nothing more: they end by the hard deadline,
    /// with nothing left in flight.
    fn shut_down(&mut self) {
        let deadline = self.t.now + Duration::from_secs(2);
        let hard = deadline + Duration::from_millis(500);
        self.stopping = true;
        self.event(Event::Shutdown { deadline, hard });
        let mut guard = 0;
        while !self.t.m.is_stopped() {
            let next = self.t.m.next_wake(self.t.now);
            assert!(next <= hard, "the machine waits past the hard deadline: {:?}", next - hard);
            self.t.now = next;
            self.event(Event::Tick);
            guard += 1;
            assert!(guard < 100, "the shutdown does not end");
        }
        assert!(self.t.now <= hard);
        assert!(self.t.m.in_flight.is_empty(), "every unanswered claim is put back");
        assert!(self.flushes.is_empty(), "every flush is answered");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_machine_keeps_its_invariants_in_any_order_of_events(
        ops in prop::collection::vec(op(), 1..120),
        window in 1usize..10,
        window_bytes in 100usize..3000,
    ) {
        let mut sim = Sim::new(Settings { window, window_bytes, ..settings() });
        for op in ops {
            sim.apply(op);
        }
        sim.shut_down();
        // What the machine counted is what happened.
        let c = sim.t.m.counts();
        prop_assert_eq!((c.delivered + c.skipped + c.quarantined) as usize, sim.settled.len());
    }
}
