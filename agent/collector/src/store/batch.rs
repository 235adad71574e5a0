//! What a batch changes beyond its report rows, decided here once for every backend: which reports
//! count as new, what each group gains, which loss counters are kept. A backend inserts the rows (its
//! own SQL), tells [`effects`] which were really inserted, and writes what it returns in the same
//! transaction.

use std::collections::{HashMap, HashSet};

use super::{AgentLosses, NewReport, Outcome};

/// One group's share of a batch: what its row gains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupGain<'a> {
    /// The group's application.
    pub app: &'a str,
    /// The group's fingerprint.
    pub fingerprint: &'a str,
    /// The title of a new group: the summary of its first report in the batch.
    pub title: &'a str,
    /// The reports of the batch that were new.
    pub count: i64,
    /// The earliest `created_ms` of those.
    pub first_ms: u64,
    /// The latest `created_ms` of those.
    pub last_ms: u64,
}

/// The outcome of each report, in the batch's order, and the gains of the groups.
#[derive(Debug)]
pub(crate) struct Effects<'a> {
    /// One per report of the batch.
    pub outcomes: Vec<Outcome>,
    /// One per group that gained a report, in no particular order.
    pub gains: Vec<GroupGain<'a>>,
}

/// The rule every backend keeps: a report is [`Outcome::Inserted`] only if the store really inserted
/// its row (`inserted(i)` of the report at index `i`: its id was new to the store) and it is the first
/// report of the batch with that id; only those raise their group's count. A duplicate, whether stored
/// before, earlier in the batch, or by another collector first, counts nothing.
pub(crate) fn effects<'a>(reports: &'a [NewReport], inserted: impl Fn(usize) -> bool) -> Effects<'a> {
    let mut seen = HashSet::with_capacity(reports.len());
    let mut gains: HashMap<(&str, &str), GroupGain<'a>> = HashMap::new();
    let mut outcomes = Vec::with_capacity(reports.len());
    for (i, r) in reports.iter().enumerate() {
        let new = seen.insert(r.id) && inserted(i);
        if new && let Some(fingerprint) = &r.fingerprint {
            let gain = gains.entry((r.origin.app.as_str(), fingerprint.as_str())).or_insert(GroupGain {
                app: &r.origin.app,
                fingerprint,
                title: &r.summary,
                count: 0,
                first_ms: r.created_ms,
                last_ms: r.created_ms,
            });
            gain.count += 1;
            gain.first_ms = gain.first_ms.min(r.created_ms);
            gain.last_ms = gain.last_ms.max(r.created_ms);
        }
        outcomes.push(if new { Outcome::Inserted } else { Outcome::Duplicate });
    }
    Effects { outcomes, gains: gains.into_values().collect() }
}

/// The loss counters a batch keeps: the latest of each app and host (an upsert may not touch a row
/// twice in one statement), in no particular order.
pub(crate) fn latest_losses(losses: &[AgentLosses]) -> Vec<&AgentLosses> {
    let mut latest: HashMap<(&str, &str), &AgentLosses> = HashMap::new();
    for l in losses {
        latest.insert((l.origin.app.as_str(), l.origin.host.as_deref().unwrap_or("")), l);
    }
    latest.into_values().collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lastword_protocol::{Losses, Software};
    use lastword_spool::{EntryId, Kind};

    use super::*;
    use crate::store::Origin;

    fn origin(app: &str, host: &str) -> Arc<Origin> {
        Arc::new(Origin {
            agent: Software { name: "lastword".into(), version: "0".into() },
            app: app.into(),
            release: None,
            host: Some(host.into()),
        })
    }

    fn report(id: EntryId, fingerprint: Option<&str>, created_ms: u64) -> NewReport {
        NewReport {
            id,
            kind: Kind::Crash,
            origin: origin("app", "h"),
            created_ms,
            received_ms: created_ms,
            fingerprint: fingerprint.map(str::to_owned),
            summary: format!("at {created_ms}"),
            body: "{}".into(),
            waits: Vec::new(),
        }
    }

    #[test]
    fn only_reports_really_inserted_and_first_of_their_id_raise_their_group() {
        let (a, b, c) = (EntryId::generate(), EntryId::generate(), EntryId::generate());
        let reports = [
            report(a, Some("f"), 30),
            report(a, Some("f"), 31),
            report(b, Some("f"), 10),
            report(c, Some("f"), 50),
        ];
        // The store inserted a (first time) and b; c was stored before.
        let effects = effects(&reports, |i| i != 3);
        use Outcome::{Duplicate, Inserted};
        assert_eq!(effects.outcomes, [Inserted, Duplicate, Inserted, Duplicate]);
        assert_eq!(
            effects.gains,
            [GroupGain { app: "app", fingerprint: "f", title: "at 30", count: 2, first_ms: 10, last_ms: 30 }]
        );
    }

    #[test]
    fn a_report_without_a_fingerprint_is_stored_but_raises_no_group() {
        let reports = [report(EntryId::generate(), None, 1)];
        let effects = effects(&reports, |_| true);
        assert_eq!(effects.outcomes, [Outcome::Inserted]);
        assert!(effects.gains.is_empty());
    }

    #[test]
    fn the_latest_losses_of_each_app_and_host_are_kept() {
        let l = |app, host, n| AgentLosses {
            origin: origin(app, host),
            losses: Losses { evicted: n, ..Losses::default() },
            received_ms: n,
        };
        let all = [l("a", "h", 1), l("a", "h", 2), l("a", "other", 3), l("b", "h", 4)];
        let mut kept: Vec<u64> = latest_losses(&all).iter().map(|l| l.losses.evicted).collect();
        kept.sort_unstable();
        assert_eq!(kept, [2, 3, 4]);
    }
}
