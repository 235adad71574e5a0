//! What the web UI reads from a store, whichever the backend: the pages' rows and queries, and the
//! counts that both backends compute the same way here, fed by each in the way that suits it: the
//! overview's [`Tally`], a group's list details ([`GroupDetails`]) and the [`StatsTally`] of its page.
//!
//! Lists of reports are paged by a cursor (`seq`, the position of arrival: SQLite's rowid, PostgreSQL's
//! `seq` column), never by an offset, so a page costs the same at the end of a store of 100,000 reports
//! as at its start.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Group, LossesRow, ReportRow};

/// Hours in the overview's chart.
pub const CHART_HOURS: usize = 24;
/// Days in a crash group's trend.
pub const TREND_DAYS: usize = 7;
/// Days in the chart of a crash group's page.
pub const GROUP_CHART_DAYS: usize = 30;
/// The newest occurrences of a group that its page's chart and breakdowns count: a page load reads at
/// most this many rows, whatever the size of the group.
pub const GROUP_STATS_LIMIT: u32 = 10_000;
pub(crate) const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// A report row and its place in the order of arrival.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The position of arrival: larger is later. The cursor of paged lists.
    pub seq: i64,
    /// The row.
    pub row: ReportRow,
}

/// A log batch (or any report) with its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedBody {
    /// The row and its place.
    pub listed: Listed,
    /// The body, JSON text.
    pub body: String,
}

/// One page of a list ordered by arrival, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor of the next (older) page, if there is one: pass it as `before`.
    pub next_before: Option<i64>,
}

/// How crash groups are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupSort {
    /// Most recently seen first.
    #[default]
    LastSeen,
    /// Earliest first seen first... or last, with `descending`.
    FirstSeen,
    /// By number of reports.
    Count,
    /// By title.
    Title,
}

impl GroupSort {
    /// The name used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LastSeen => "last_seen",
            Self::FirstSeen => "first_seen",
            Self::Count => "count",
            Self::Title => "title",
        }
    }

    /// The sort named in a URL; the default for anything else.
    pub fn parse(s: &str) -> Self {
        match s {
            "first_seen" => Self::FirstSeen,
            "count" => Self::Count,
            "title" => Self::Title,
            _ => Self::LastSeen,
        }
    }

    /// The column of `groups` this sort orders by.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::LastSeen => "last_seen_ms",
            Self::FirstSeen => "first_seen_ms",
            Self::Count => "count",
            Self::Title => "title",
        }
    }
}

/// Which crash groups to list.
#[derive(Clone, Debug, Default)]
pub struct GroupQuery {
    /// Only this application's.
    pub app: Option<String>,
    /// Only groups with a report of this release.
    pub release: Option<String>,
    /// Only groups of this `type` (of their latest report): `panic`, `signal` or `event`.
    pub kind: Option<String>,
    /// Only groups with a report that carries this scope tag (key, value).
    pub tag: Option<Tag>,
    /// The order.
    pub sort: GroupSort,
    /// Largest first (the default of the UI).
    pub descending: bool,
    /// Groups skipped (groups are few: one per distinct crash).
    pub offset: u32,
    /// At most this many.
    pub limit: u32,
}

/// A scope tag a list is filtered by: reports whose scope has `key` set to `value` (the
/// `report_tags` table of both stores).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The tag's key.
    pub key: String,
    /// Its value.
    pub value: String,
}

impl Tag {
    /// The tag of `KEY=VALUE` (split at the first `=`; the key not empty), as the pages' forms and
    /// `lastword store --tag` write it.
    pub fn parse(text: &str) -> Option<Self> {
        let (key, value) = text.split_once('=')?;
        let key = key.trim();
        (!key.is_empty()).then(|| Self { key: key.to_owned(), value: value.trim().to_owned() })
    }

    /// `KEY=VALUE`, as [`parse`](Self::parse) reads it.
    pub fn as_param(&self) -> String {
        format!("{}={}", self.key, self.value)
    }
}

/// A crash or event group with what its row in the list shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupItem {
    /// The group.
    pub group: Group,
    /// `panic`, `signal` or `event` (the `type` of its latest report), if known.
    pub kind: Option<String>,
    /// The releases of its reports.
    pub releases: Vec<String>,
    /// Reports per day (by the sender's clock) over the last [`TREND_DAYS`] days, oldest first.
    pub trend: [u64; TREND_DAYS],
}

/// Which log batches to list.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    /// Only this application's.
    pub app: Option<String>,
    /// Only batches with a record of one of these levels (upper case).
    pub levels: Vec<String>,
    /// Only batches written at or after this time (ms since the Unix epoch).
    pub from_ms: Option<u64>,
    /// Only batches written before this time.
    pub to_ms: Option<u64>,
    /// Only batches whose text contains this (case-insensitive for ASCII).
    pub text: Option<String>,
    /// Only batches that arrived before this cursor.
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// A crash group that is new or rising, for the overview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Movement {
    /// The group.
    pub group: Group,
    /// Reports received in the last 24 hours.
    pub last_day: u64,
    /// Reports received in the 24 hours before.
    pub day_before: u64,
    /// First seen in the last 24 hours.
    pub new: bool,
}

/// An application and the releases it was seen with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSeen {
    /// The application.
    pub app: String,
    /// Its releases, with reports received in the window.
    pub releases: BTreeMap<String, u64>,
    /// Reports received in the window.
    pub reports: u64,
}

/// What the overview shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overview {
    /// Reports received per hour, oldest first; the last is the current hour.
    pub hourly: [u64; CHART_HOURS],
    /// Crash groups first seen in the last day, or with more reports in it than in the day before.
    pub moving: Vec<Movement>,
    /// Applications and releases that sent reports in the last two days.
    pub apps: Vec<AppSeen>,
    /// The latest loss counters of every agent.
    pub losses: Vec<LossesRow>,
    /// Crash groups in the store.
    pub group_count: u64,
}

/// A crash group's occurrences per day and by release and host, for its page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Occurrences (by creation time) per UTC day, the oldest of [`GROUP_CHART_DAYS`] days first,
    /// today last.
    pub daily: Vec<u64>,
    /// Occurrences per release, the most first (`""` for reports without one).
    pub releases: Vec<(String, u64)>,
    /// Occurrences per host, the most first (`""` for reports without one).
    pub hosts: Vec<(String, u64)>,
    /// The occurrences counted: at most [`GROUP_STATS_LIMIT`], the newest.
    pub counted: u64,
    /// Whether the group has more occurrences than were counted.
    pub capped: bool,
}

/// Counts a group's occurrences into [`GroupStats`], the same for both backends.
pub(crate) struct StatsTally {
    chart_start: u64,
    daily: Vec<u64>,
    releases: HashMap<String, u64>,
    hosts: HashMap<String, u64>,
    counted: u64,
}

impl StatsTally {
    /// Nothing counted yet, for the page at `now_ms`.
    pub(crate) fn new(now_ms: u64) -> Self {
        Self {
            chart_start: (now_ms / DAY_MS + 1).saturating_sub(GROUP_CHART_DAYS as u64) * DAY_MS,
            daily: vec![0; GROUP_CHART_DAYS],
            releases: HashMap::new(),
            hosts: HashMap::new(),
            counted: 0,
        }
    }

    /// Counts one occurrence.
    pub(crate) fn add(&mut self, release: Option<&str>, host: Option<&str>, created: u64) {
        self.counted += 1;
        *self.releases.entry(release.unwrap_or_default().to_owned()).or_default() += 1;
        *self.hosts.entry(host.unwrap_or_default().to_owned()).or_default() += 1;
        if created >= self.chart_start
            && let Ok(day) = usize::try_from((created - self.chart_start) / DAY_MS)
            && let Some(n) = self.daily.get_mut(day)
        {
            *n += 1;
        }
    }

    /// The stats of rows read with a limit of `limit`.
    pub(crate) fn finish(self, limit: u32) -> GroupStats {
        let sorted = |m: HashMap<String, u64>| {
            let mut v: Vec<(String, u64)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v
        };
        GroupStats {
            capped: self.counted >= u64::from(limit),
            daily: self.daily,
            releases: sorted(self.releases),
            hosts: sorted(self.hosts),
            counted: self.counted,
        }
    }
}

pub(crate) const GROUP_COLUMNS: &str = "app, fingerprint, title, count, first_seen_ms, last_seen_ms";

/// `LIKE` pattern of "contains `text`", with `\` as the escape character.
pub(crate) fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The reports of a group read for its row in the list (releases and trend), newest first.
pub(crate) const DETAILS_LIMIT: u32 = 10_000;

/// The overview's counts of the reports received in its window, the last two days (`since ..= now`),
/// fed by every backend in the way that suits it (SQLite: each report, read from the covering index
/// `reports_by_received`; PostgreSQL: counts aggregated by the server), so that both show the same
/// overview of the same reports.
pub(crate) struct Tally {
    now_ms: u64,
    since: u64,
    hourly: [u64; CHART_HOURS],
    /// app -> fingerprint -> (reports in the last day, in the day before).
    per_group: HashMap<String, HashMap<String, (u64, u64)>>,
    apps: BTreeMap<String, AppSeen>,
}

impl Tally {
    /// Empty counts for the overview at `now_ms`.
    pub(crate) fn new(now_ms: u64) -> Self {
        Self {
            now_ms,
            since: now_ms.saturating_sub(2 * DAY_MS),
            hourly: [0; CHART_HOURS],
            per_group: HashMap::new(),
            apps: BTreeMap::new(),
        }
    }

    /// The window: reports received from `since` to `now`, both included (collector's clock).
    pub(crate) fn window(&self) -> (u64, u64) {
        (self.since, self.now_ms)
    }

    /// The start of the last day: reports received after it (not at it) are in the last day and in
    /// the chart.
    pub(crate) fn last_day_after(&self) -> u64 {
        self.now_ms.saturating_sub(DAY_MS)
    }

    /// Counts one report received at `received`; one outside the window is not counted.
    pub(crate) fn add(&mut self, app: &str, release: Option<&str>, fingerprint: Option<&str>, received: u64) {
        if received < self.since || received > self.now_ms {
            return;
        }
        let age = self.now_ms - received;
        self.add_hour(age / HOUR_MS, 1);
        self.add_reports(app, release, fingerprint, age < DAY_MS, 1);
    }

    /// Counts `n` reports received `hours_ago` whole hours before now; none past the chart.
    pub(crate) fn add_hour(&mut self, hours_ago: u64, n: u64) {
        if let Ok(hours_ago) = usize::try_from(hours_ago)
            && hours_ago < CHART_HOURS
        {
            self.hourly[CHART_HOURS - 1 - hours_ago] += n;
        }
    }

    /// Counts `n` reports of the window of this app, release and (for crashes) group, received in
    /// the last day or in the day before; not in the chart (that is [`add_hour`](Self::add_hour)).
    pub(crate) fn add_reports(
        &mut self,
        app: &str,
        release: Option<&str>,
        fingerprint: Option<&str>,
        last_day: bool,
        n: u64,
    ) {
        if let Some(fp) = fingerprint {
            let per_app = match self.per_group.get_mut(app) {
                Some(per_app) => per_app,
                None => self.per_group.entry(app.to_owned()).or_default(),
            };
            let counts = match per_app.get_mut(fp) {
                Some(counts) => counts,
                None => per_app.entry(fp.to_owned()).or_default(),
            };
            if last_day {
                counts.0 += n;
            } else {
                counts.1 += n;
            }
        }
        let seen = match self.apps.get_mut(app) {
            Some(seen) => seen,
            None => self.apps.entry(app.to_owned()).or_insert_with(|| AppSeen {
                app: app.to_owned(),
                releases: BTreeMap::new(),
                reports: 0,
            }),
        };
        seen.reports += n;
        let release = release.unwrap_or_default();
        match seen.releases.get_mut(release) {
            Some(count) => *count += n,
            None => {
                seen.releases.insert(release.to_owned(), n);
            }
        }
    }

    /// The `(app, fingerprint)` of the crash groups with reports in the two days.
    pub(crate) fn group_keys(&self) -> impl Iterator<Item = (&String, &String)> {
        self.per_group.iter().flat_map(|(app, fps)| fps.keys().map(move |fp| (app, fp)))
    }

    /// The overview, given the rows of the groups of [`group_keys`](Self::group_keys) that the store
    /// has, its losses and its number of groups.
    pub(crate) fn finish(self, groups: Vec<Group>, losses: Vec<LossesRow>, group_count: u64) -> Overview {
        let mut moving = Vec::new();
        for group in groups {
            let Some(&(last_day, day_before)) =
                self.per_group.get(&group.app).and_then(|fps| fps.get(&group.fingerprint))
            else {
                continue;
            };
            let new = group.first_seen_ms + DAY_MS >= self.now_ms;
            if new || last_day > day_before {
                moving.push(Movement { group, last_day, day_before, new });
            }
        }
        moving.sort_by(|a, b| {
            (b.last_day.saturating_sub(b.day_before), b.last_day)
                .cmp(&(a.last_day.saturating_sub(a.day_before), a.last_day))
        });
        moving.truncate(20);
        Overview { hourly: self.hourly, moving, apps: self.apps.into_values().collect(), losses, group_count }
    }
}

/// What a crash group's row in the list shows of its reports, fed with them newest first (at most
/// [`DETAILS_LIMIT`]).
pub(crate) struct GroupDetails {
    trend_start: u64,
    releases: BTreeSet<String>,
    trend: [u64; TREND_DAYS],
}

impl GroupDetails {
    /// Nothing seen yet, for the list at `now_ms`.
    pub(crate) fn new(now_ms: u64) -> Self {
        Self {
            trend_start: (now_ms / DAY_MS + 1).saturating_sub(TREND_DAYS as u64) * DAY_MS,
            releases: BTreeSet::new(),
            trend: [0; TREND_DAYS],
        }
    }

    /// Counts one report of the group.
    pub(crate) fn add(&mut self, release: Option<String>, created: u64) {
        if let Some(release) = release {
            self.releases.insert(release);
        }
        if created >= self.trend_start
            && let Ok(day) = usize::try_from((created - self.trend_start) / DAY_MS)
            && day < TREND_DAYS
        {
            self.trend[day] += 1;
        }
    }

    /// The group's row in the list.
    pub(crate) fn item(self, group: Group, kind: Option<String>) -> GroupItem {
        GroupItem { group, kind, releases: self.releases.into_iter().collect(), trend: self.trend }
    }
}

/// The page of `limit` items out of `items`, which holds one more when an older page follows.
pub(crate) fn page<T>(mut items: Vec<T>, limit: u32, seq: impl Fn(&T) -> i64) -> Page<T> {
    let next_before = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(seq)
    } else {
        None
    };
    Page { items, next_before }
}
