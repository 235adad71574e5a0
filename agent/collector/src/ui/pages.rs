//! The HTML of each page, as maud templates: compiled into the binary, and every `(value)` escaped, so
//! text from reports (messages, log lines, frame names) is shown as text, never as markup.

use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::query::utc;
use crate::store::{Group, ReportRow, StoredReport};

use crate::crash_view::{CrashView, FrameView, without_fault_address};
use crate::store::reads::{
    CHART_HOURS, GROUP_CHART_DAYS, GroupItem, GroupQuery, GroupSort, GroupStats, Listed, ListedBody,
    LogQuery, Overview, Page, TREND_DAYS, Tag,
};

/// Which tab is highlighted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Groups,
    Logs,
    DebugFiles,
    None,
}

tokio::task_local! {
    /// Whether the request being answered came with the cookie of a live login session (set by the
    /// UI's guard around each handler): only then has the page a "Log out" button. HTTP basic auth
    /// and an open UI have no session a button could end; a page made outside a request has none.
    pub static SIGNED_IN: bool;
}

/// The frame of every page.
pub fn layout(title: &str, tab: Tab, content: Markup) -> Markup {
    let signed_in = SIGNED_IN.try_with(|s| *s).unwrap_or(false);
    let nav = [
        (Tab::Overview, "/", "Overview"),
        (Tab::Groups, "/groups", "Groups"),
        (Tab::Logs, "/logs", "Logs"),
        (Tab::DebugFiles, "/debug-files", "Debug files"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · lastword" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header {
                    a.brand href="/" { "lastword" }
                    nav {
                        @for (t, href, name) in nav {
                            a href=(href) class=[(t == tab).then_some("active")] { (name) }
                        }
                    }
                    // A POST (state-changing, so under the CSRF check).
                    @if signed_in {
                        form.logout method="post" action="/logout" { button type="submit" { "Log out" } }
                    }
                }
                main { (content) }
            }
        }
    }
}

/// A query string from pairs, leaving out empty values.
pub fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            out.push(if out.is_empty() { '?' } else { '&' });
            out.push_str(k);
            out.push('=');
            out.push_str(&percent_encode(v));
        }
    }
    out
}

/// What [`percent_encode`] leaves as it is: the unreserved characters of RFC 3986.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes everything but unreserved characters (a query value, a path segment).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// The link of a group's page.
pub fn group_href(app: &str, fingerprint: &str) -> String {
    group_href_tagged(app, fingerprint, None)
}

/// The link of a group's page, with only its occurrences that carry `tag` when one is given.
pub fn group_href_tagged(app: &str, fingerprint: &str, tag: Option<&Tag>) -> String {
    format!(
        "/group{}",
        query_string(&[
            ("app", Some(app.into())),
            ("fp", Some(fingerprint.into())),
            ("tag", tag.map(Tag::as_param)),
        ])
    )
}

/// The link of the groups with a report that carries `tag`.
pub fn groups_with_tag_href(tag: &Tag) -> String {
    format!("/groups{}", query_string(&[("tag", Some(tag.as_param()))]))
}

fn report_href(row: &ReportRow) -> String {
    format!("/reports/{}", row.id)
}

/// Bars of a small SVG chart, with a title (tooltip) per bar.
fn bars(values: &[u64], labels: &[String], width: u32, height: u32, class: &str) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let n = u32::try_from(values.len()).unwrap_or(1).max(1);
    let step = width / n;
    let viewbox = format!("0 0 {width} {height}");
    html! {
        svg class=(class) viewBox=(viewbox) preserveAspectRatio="none" role="img" {
            @for (i, (v, label)) in values.iter().zip(labels).enumerate() {
                @let h = if *v == 0 { 0 } else { (u64::from(height) * v / max).max(1) };
                @let x = u32::try_from(i).unwrap_or(0) * step;
                rect x=(x) y=(u64::from(height) - h) width=(step.saturating_sub(1).max(1)) height=(h) {
                    title { (label) ": " (v) }
                }
            }
        }
    }
}

fn ago_label(hours_ago: usize) -> String {
    if hours_ago == 0 { "this hour".into() } else { format!("{hours_ago} h ago") }
}

/// The overview page.
pub fn overview(o: &Overview) -> Markup {
    let labels: Vec<String> = (0..CHART_HOURS).map(|i| ago_label(CHART_HOURS - 1 - i)).collect();
    let total: u64 = o.hourly.iter().sum();
    let content = html! {
        h1 { "Overview" }
        section.card {
            h2 { "Reports received per hour, last 24 hours" }
            p.muted { (total) " reports in the last 24 hours; " (o.group_count) " groups of crashes and events in the store." }
            (bars(&o.hourly, &labels, 480, 80, "chart"))
            div.axis { span { "24 h ago" } span { "now" } }
        }
        section.card {
            h2 { "New or rising groups" }
            @if o.moving.is_empty() {
                p.muted { "No group is new or rising in the last 24 hours." }
            } @else {
                div.scroll { table {
                    thead { tr { th { "Group" } th { "App" } th.num { "Last 24 h" } th.num { "Day before" } th { "" } } }
                    tbody {
                        @for m in &o.moving {
                            tr {
                                td { a href=(group_href(&m.group.app, &m.group.fingerprint)) { (title_of(&m.group)) } }
                                td { (m.group.app) }
                                td.num { (m.last_day) }
                                td.num { (m.day_before) }
                                td { @if m.new { span.tag.new { "new" } } @else { span.tag.rising { "rising" } } }
                            }
                        }
                    }
                } }
            }
        }
        section.card {
            h2 { "Applications and releases, last 48 hours" }
            @if o.apps.is_empty() {
                p.muted { "No report received in the last 48 hours." }
            } @else {
                div.scroll { table {
                    thead { tr { th { "App" } th.num { "Reports" } th { "Releases (reports)" } } }
                    tbody {
                        @for a in &o.apps {
                            tr {
                                td { a href={"/groups" (query_string(&[("app", Some(a.app.clone()))]))} { (a.app) } }
                                td.num { (a.reports) }
                                td { @for (release, n) in &a.releases {
                                    span.tag { @if release.is_empty() { "(none)" } @else { (release) } " (" (n) ")" } " "
                                } }
                            }
                        }
                    }
                } }
            }
        }
        section.card {
            h2 { "What agents could not deliver" }
            p.muted { "The counters of each agent's latest connection (totals since its spool was created)." }
            @if o.losses.is_empty() {
                p.muted { "No agent has connected yet." }
            } @else {
                div.scroll { table {
                    thead { tr {
                        th { "App" } th { "Host" } th { "Release" } th.num { "Logs dropped" } th.num { "Events dropped" }
                        th.num { "Evicted" }
                        th.num { "Quarantined" } th.num { "Crash-loop suppressed" } th { "Reported (UTC)" }
                    } }
                    tbody {
                        @for l in &o.losses {
                            @let lost = l.losses.logs_dropped + l.losses.events_dropped + l.losses.evicted + l.losses.quarantined + l.losses.crash_loop_suppressed;
                            tr class=[(lost > 0).then_some("loss")] {
                                td { (l.app) } td { (l.host) } td { (l.release.as_deref().unwrap_or("")) }
                                td.num { (l.losses.logs_dropped) } td.num { (l.losses.events_dropped) }
                                td.num { (l.losses.evicted) }
                                td.num { (l.losses.quarantined) } td.num { (l.losses.crash_loop_suppressed) }
                                td { (utc(l.reported_ms)) }
                            }
                        }
                    }
                } }
            }
        }
    };
    layout("Overview", Tab::Overview, content)
}

fn title_of(g: &Group) -> String {
    // A signal group's title is its first report's message: its fault address changes every run.
    let title = without_fault_address(&g.title);
    if title.is_empty() { format!("(untitled {})", g.fingerprint) } else { title.to_owned() }
}

/// The groups page: crash and event groups, filtered by app, release, kind and tag.
pub fn groups(q: &GroupQuery, items: &[GroupItem], more: bool) -> Markup {
    let base = |sort: GroupSort, descending: bool, offset: u32| {
        format!(
            "/groups{}",
            query_string(&[
                ("app", q.app.clone()),
                ("release", q.release.clone()),
                ("kind", q.kind.clone()),
                ("tag", q.tag.as_ref().map(Tag::as_param)),
                ("sort", Some(sort.as_str().into())),
                ("order", Some(if descending { "desc" } else { "asc" }.into())),
                ("offset", (offset > 0).then(|| offset.to_string())),
            ])
        )
    };
    let head = |sort: GroupSort, name: &str, class: &str| {
        let active = q.sort == sort;
        let descending = if active { !q.descending } else { sort != GroupSort::Title };
        let arrow = if !active {
            ""
        } else if q.descending {
            " ▼"
        } else {
            " ▲"
        };
        html! { th class=(class) { a href=(base(sort, descending, 0)) { (name) (arrow) } } }
    };
    let day_labels: Vec<String> =
        (0..TREND_DAYS).map(|i| format!("{} days ago", TREND_DAYS - 1 - i)).collect();
    let content = html! {
        h1 { "Groups of crashes and events" }
        form.filters method="get" action="/groups" {
            label { "App " input name="app" value=[q.app.as_deref()]; }
            label { "Release " input name="release" value=[q.release.as_deref()]; }
            label { "Kind "
                select name="kind" {
                    option value="" { "any" }
                    @for k in super::KINDS {
                        option value=(k) selected[q.kind.as_deref() == Some(k)] { (k) }
                    }
                }
            }
            label { "Tag (KEY=VALUE) "
                input name="tag" placeholder="region=eu-west-1" value=[q.tag.as_ref().map(Tag::as_param)];
            }
            input type="hidden" name="sort" value=(q.sort.as_str());
            input type="hidden" name="order" value=(if q.descending { "desc" } else { "asc" });
            button type="submit" { "Filter" }
        }
        p.muted.hint { "A tag filter is KEY=VALUE, split at the first =: the groups with a report whose scope has that tag." }
        @if items.is_empty() {
            p.muted { "No group matches." }
        } @else {
            div.scroll { table.groups {
                thead { tr {
                    (head(GroupSort::Title, "Title", ""))
                    th { "App" } th { "Kind" }
                    (head(GroupSort::Count, "Count", "num"))
                    (head(GroupSort::FirstSeen, "First seen (UTC)", ""))
                    (head(GroupSort::LastSeen, "Last seen (UTC)", ""))
                    th { "Releases" } th { "Last 7 days" }
                } }
                tbody {
                    @for it in items {
                        tr {
                            td.title { a href=(group_href(&it.group.app, &it.group.fingerprint)) { (title_of(&it.group)) } }
                            td { (it.group.app) }
                            td { (it.kind.as_deref().unwrap_or("")) }
                            td.num.count { (it.group.count) }
                            td { (utc(it.group.first_seen_ms)) }
                            td { (utc(it.group.last_seen_ms)) }
                            td { @for r in &it.releases { span.tag { (r) } " " } }
                            td { (bars(&it.trend, &day_labels, 70, 18, "trend")) }
                        }
                    }
                }
            } }
        }
        nav.pager {
            @if q.offset > 0 {
                a rel="prev" href=(base(q.sort, q.descending, q.offset.saturating_sub(q.limit))) { "← Previous" }
            }
            @if more {
                a rel="next" href=(base(q.sort, q.descending, q.offset + q.limit)) { "Next →" }
            }
        }
    };
    layout("Groups", Tab::Groups, content)
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// One frame: its place in the stack, the function (or the address in its module) and file:line.
fn frame_item(f: &FrameView, unsymbolized_reason: &str) -> Markup {
    html! {
        li class={"frame " (f.whose.class())} {
            span.idx { "#" (f.index) } " "
            @if let Some(function) = &f.function {
                span.fn { (function) }
                @if let Some(place) = &f.place { " " span.loc { (place) } }
                @if f.by_collector { " " span.muted title="named on the collector from an uploaded debug file" { "(collector)" } }
            } @else {
                span.addr { (f.address.as_deref().unwrap_or("?")) }
                @if let Some(module) = &f.module { " " span.loc { "in " (module) } }
                " " span.reason { "(unsymbolized: " (unsymbolized_reason) ")" }
            }
        }
    }
}

/// A crash's frames, the first thing under its title: the application's own frames emphasized, the
/// others (std, dependencies, libc) folded behind one `<details>` line that opens them, no script.
fn crash_frames(view: &CrashView) -> Markup {
    // An event's frames are those of the code that captured it (REPORT.md "Event").
    let heading =
        if view.kind == "event" { "Frames where it was captured" } else { "Frames of the crashing thread" };
    let (shown, folded) = view.split_frames();
    let reason = view.symbolization_error.as_deref().unwrap_or("no symbol for this address");
    html! {
        section.card.stack {
            h2 { (heading) }
            @if let Some(err) = &view.symbolization_error {
                p.warn { "Partly unsymbolized: " (err) }
            }
            @for m in view.missing_symbols() {
                p.warn.missing-symbols {
                    (m.frames) @if m.frames == 1 { " frame" } @else { " frames" } " without a name in "
                    span.mono { (m.module) } ": upload the debug file of build id "
                    span.mono.build-id { (m.build_id) }
                }
            }
            @if view.named_by_collector() > 0 {
                @let n = view.named_by_collector();
                p.muted { (n) @if n == 1 { " frame" } @else { " frames" } " named on the collector from uploaded debug files" }
            }
            @if view.frames.is_empty() { p.muted { "No frames." } } @else {
                ol.frames.shown { @for f in &shown { (frame_item(f, reason)) } }
                @if !folded.is_empty() {
                    details.folded {
                        summary { "+ " (CrashView::folded_summary(&folded)) }
                        ol.frames { @for f in &folded { (frame_item(f, reason)) } }
                    }
                }
            }
        }
    }
}

/// A crash's facts: message, culprit, location, signal, thread, crash loop.
fn crash_facts(view: &CrashView) -> Markup {
    html! {
        section.card {
            h2 { (view.kind) }
            @if !view.message.is_empty() { pre.message { (view.message) } }
            dl.crash {
                @if let Some(f) = view.culprit_frame() { dt { "Culprit" } dd.mono { (f.name()) } }
                @if let Some(at) = &view.location { dt { "Location" } dd.mono { (at) } }
                @if let Some(signal) = &view.signal { dt { "Signal" } dd.mono { (signal) } }
                @if let Some(thread) = &view.thread { dt { "Thread" } dd { (thread) } }
                @if view.crash_loop_suppressed > 0 {
                    dt { "Crash-loop suppressed" }
                    dd { (view.crash_loop_suppressed) " same crashes before this one were counted, not stored" }
                }
            }
        }
    }
}

fn records_table(records: &[Value]) -> Markup {
    html! {
        div.scroll { table.records {
            thead { tr { th { "Time (UTC)" } th { "Level" } th { "Target" } th { "Message" } } }
            tbody {
                @for r in records {
                    @let level = str_field(r, "level").unwrap_or("");
                    tr class={"level-" (level.to_ascii_lowercase())} {
                        td.nowrap { (r.get("ts_ms").and_then(Value::as_u64).map(utc).unwrap_or_default()) }
                        td { (level) }
                        td.mono { (str_field(r, "target").unwrap_or("")) }
                        td { pre.line { (str_field(r, "message").unwrap_or("")) } }
                    }
                }
            }
        } }
    }
}

/// The breadcrumbs as a list that wraps on a narrow screen: time, level and target on one line, the
/// message under them.
fn breadcrumbs(view: &CrashView) -> Markup {
    html! {
        section.card.breadcrumbs {
            h2 { "Breadcrumbs (last log records before the crash, UTC)" }
            @if view.breadcrumbs.is_empty() { p.muted { "None." } } @else {
                ol.crumbs {
                    @for b in &view.breadcrumbs {
                        li class={"level-" (b.level.to_ascii_lowercase())} {
                            span.time { (b.time.as_deref().unwrap_or("?")) } " "
                            span.level { (b.level) } " "
                            span.target { (b.target) }
                            pre.line { (b.message) }
                        }
                    }
                }
            }
        }
    }
}

fn pairs_card(heading: &str, pairs: &[(String, String)]) -> Markup {
    html! {
        section.card {
            h2 { (heading) }
            @if pairs.is_empty() { p.muted { "None." } } @else {
                dl.context { @for (k, v) in pairs { dt { (k) } dd { (v) } } }
            }
        }
    }
}

fn report_facts(row: &ReportRow) -> Markup {
    html! {
        dl.facts {
            dt { "Report" } dd.mono { (row.id) }
            dt { "Kind" } dd { (row.kind) }
            dt { "App" } dd { (row.app) }
            dt { "Release" } dd { (row.release.as_deref().unwrap_or("")) }
            dt { "Host" } dd { (row.host.as_deref().unwrap_or("")) }
            dt { "Created (UTC)" } dd { (utc(row.created_ms)) }
            dt { "Received (UTC)" } dd { (utc(row.received_ms)) }
            @if let Some(fp) = &row.fingerprint {
                dt { "Group" } dd { a href=(group_href(&row.app, fp)) { (fp) } }
            }
        }
    }
}

/// A stored report's body, and its reading if it is a crash report or an event (read as a crash is:
/// its message, its frames, its thread and context).
fn read_body(report: &StoredReport) -> (Value, Option<CrashView>) {
    let body: Value = serde_json::from_str(&report.body).unwrap_or(Value::Null);
    let view = match report.row.kind {
        lastword_spool::Kind::Crash | lastword_spool::Kind::Event => CrashView::from_json(&body),
        _ => None,
    };
    (body, view)
}

/// The scope tags of a report body (`scope.tags`), in key order; values that are not strings are
/// left out (REPORT.md: both are strings).
fn scope_tags(body: &Value) -> Vec<Tag> {
    body.pointer("/scope/tags")
        .and_then(Value::as_object)
        .map(|tags| {
            tags.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| Tag { key: k.clone(), value: v.to_owned() }))
                .collect()
        })
        .unwrap_or_default()
}

/// The scope a report carries (REPORT.md "Scope"): its tags, each a link to its filter (`tag_href`),
/// the user, the environment, and the extra context as JSON (escaped like every value).
fn scope_card(body: &Value, tag_href: &dyn Fn(&Tag) -> String) -> Markup {
    let tags = scope_tags(body);
    let user: Vec<(&str, String)> = ["id", "name", "ip"]
        .into_iter()
        .filter_map(|k| {
            body.pointer(&format!("/scope/user/{k}")).filter(|v| !v.is_null()).map(|v| (k, json_text(v)))
        })
        .collect();
    let environment = body.pointer("/scope/environment").and_then(Value::as_str);
    let extra = body.pointer("/scope/extra").and_then(Value::as_object).filter(|e| !e.is_empty());
    html! {
        section.card.scope {
            h2 { "Scope" }
            @if tags.is_empty() && user.is_empty() && environment.is_none() && extra.is_none() {
                p.muted { "None: no tag, user or extra context was set." }
            } @else {
                dl.context {
                    @if !tags.is_empty() {
                        dt { "Tags" }
                        dd.tags {
                            @for t in &tags {
                                a.tag href=(tag_href(t)) title="Filter by this tag" { (t.key) "=" (t.value) } " "
                            }
                        }
                    }
                    @if !user.is_empty() {
                        dt { "User" }
                        dd.user { @for (k, v) in &user { span.tag { (k) ": " (v) } " " } }
                    }
                    @if let Some(env) = environment { dt { "Environment" } dd { (env) } }
                    @if let Some(extra) = extra {
                        dt { "Extra" }
                        dd { pre.extra { (serde_json::to_string_pretty(extra).unwrap_or_default()) } }
                    }
                }
            }
        }
    }
}

/// A JSON value as text: a string as it is, anything else as JSON.
fn json_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// An event's level and error chain (REPORT.md "Event"): the error's type and `Display`, then each
/// of its sources, the error's own backtrace folded; for a message, its level alone.
fn event_card(body: &Value) -> Markup {
    let error = body.get("error").filter(|e| e.is_object());
    let chain =
        error.and_then(|e| e.get("chain")).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let counted = |key: &str| body.get(key).and_then(Value::as_u64).filter(|n| *n > 0);
    html! {
        section.card.event {
            h2 { @if error.is_some() { "Error" } @else { "Message" } }
            dl.crash {
                @if let Some(level) = str_field(body, "level") { dt { "Level" } dd { (level) } }
                @if let Some(n) = counted("loop_suppressed") {
                    dt { "Event-loop suppressed" }
                    dd { (n) " same events before this one were counted, not stored" }
                }
                @if let Some(n) = counted("dropped_before") {
                    dt { "Dropped before" } dd.warn { (n) " events dropped (queue full) before this one" }
                }
            }
            @if let Some(error) = error {
                ol.chain {
                    li {
                        span.type { (str_field(error, "type").unwrap_or("(unknown type)")) } ": "
                        span.msg { (str_field(error, "message").unwrap_or("")) }
                    }
                    @for cause in chain {
                        li {
                            span.muted { "caused by " }
                            span.type { (str_field(cause, "type").unwrap_or("(unknown type)")) } ": "
                            span.msg { (str_field(cause, "message").unwrap_or("")) }
                        }
                    }
                }
                @if let Some(bt) = str_field(error, "backtrace").filter(|b| !b.trim().is_empty()) {
                    details.folded { summary { "The error's own backtrace" } pre.backtrace { (bt) } }
                }
            }
        }
    }
}

/// A report below its frames: its facts and raw JSON, then the crash's or event's facts (an event's
/// error chain), breadcrumbs, scope, context and tags, or a log batch's records, or another body as
/// JSON. A scope tag links to `tag_href`.
fn report_rest(
    report: &StoredReport,
    body: &Value,
    view: Option<&CrashView>,
    tag_href: &dyn Fn(&Tag) -> String,
) -> Markup {
    let event = report.row.kind == lastword_spool::Kind::Event;
    html! {
        section.card {
            (report_facts(&report.row))
            p { a.button href={(report_href(&report.row)) "/raw.json"} download { "Download the raw JSON" } }
        }
        @if let Some(view) = view {
            @if event { (event_card(body)) }
            (crash_facts(view))
            @if !event || !view.breadcrumbs.is_empty() { (breadcrumbs(view)) }
            (scope_card(body, tag_href))
            (pairs_card("Context", &view.context))
            @if !view.tags.is_empty() { (pairs_card("Tags", &view.tags)) }
        } @else if str_field(body, "type") == Some("logs") {
            section.card { h2 { "Records" }
                (records_table(body.get("records").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])))
            }
        } @else {
            section.card { h2 { "Body" } pre.message { (serde_json::to_string_pretty(body).unwrap_or_default()) } }
        }
    }
}

/// The report page: a crash's title (what happened, the culprit, the location) and its frames first.
pub fn report(report: &StoredReport) -> Markup {
    let (body, view) = read_body(report);
    let title = match &view {
        Some(v) => v.title(),
        None if report.row.summary.is_empty() => report.row.id.to_string(),
        None => report.row.summary.clone(),
    };
    let content = html! {
        h1.wrap { (title) }
        @if let Some(v) = &view { (crash_frames(v)) }
        (report_rest(report, &body, view.as_ref(), &groups_with_tag_href))
    };
    layout(&title, Tab::None, content)
}

fn report_list(items: &[Listed]) -> Markup {
    html! {
        div.scroll { table.reports {
            thead { tr { th { "Received (UTC)" } th { "Release" } th { "Host" } th { "Summary" } } }
            tbody {
                @for l in items {
                    tr {
                        td.nowrap { a href=(report_href(&l.row)) { (utc(l.row.received_ms)) } }
                        td { (l.row.release.as_deref().unwrap_or("")) }
                        td { (l.row.host.as_deref().unwrap_or("")) }
                        td { (l.row.summary) }
                    }
                }
            }
        } }
    }
}

/// Counts by a name (release, host), the most first.
fn breakdown(heading: &str, counts: &[(String, u64)], total: u64) -> Markup {
    html! {
        div.part {
            h3 { (heading) }
            table.breakdown {
                tbody {
                    @for (name, n) in counts.iter().take(BREAKDOWN_ROWS) {
                        tr {
                            td { @if name.is_empty() { span.muted { "(none)" } } @else { (name) } }
                            td.num { (n) }
                            td.share { meter min="0" max=(total.max(1)) value=(n) {} }
                        }
                    }
                    @if counts.len() > BREAKDOWN_ROWS {
                        tr { td.muted { (counts.len() - BREAKDOWN_ROWS) " more" }
                             td.num { (counts.iter().skip(BREAKDOWN_ROWS).map(|(_, n)| n).sum::<u64>()) } td {} }
                    }
                }
            }
        }
    }
}

/// Rows of a group's breakdown by release or host before the rest is summed up.
const BREAKDOWN_ROWS: usize = 10;

/// A group's page: its title, the latest report's frames, its occurrences per day over 30 days and
/// by release and host, a page of its occurrences (those with `tag`, when one is given), then the rest
/// of the latest report, whose tags link to this page filtered by them.
pub fn group(
    g: &Group,
    latest: Option<&StoredReport>,
    stats: &GroupStats,
    page: &Page<Listed>,
    tag: Option<&Tag>,
    before: Option<i64>,
) -> Markup {
    let here = group_href_tagged(&g.app, &g.fingerprint, tag);
    let tag_href = |t: &Tag| group_href_tagged(&g.app, &g.fingerprint, Some(t));
    let latest = latest.map(|r| (r, read_body(r)));
    let title = match latest.as_ref().and_then(|(_, (_, v))| v.as_ref()) {
        Some(v) => v.title(),
        None => title_of(g),
    };
    let days = stats.daily.len();
    let labels: Vec<String> = (0..days)
        .map(|i| match days - 1 - i {
            0 => "today".to_owned(),
            1 => "yesterday".to_owned(),
            n => format!("{n} days ago"),
        })
        .collect();
    let content = html! {
        h1.wrap { (title) }
        p.muted.summary {
            (g.count) @if g.count == 1 { " occurrence" } @else { " occurrences" } " · last seen " (utc(g.last_seen_ms)) " UTC · first seen " (utc(g.first_seen_ms)) " UTC · " (g.app)
        }
        @if let Some((_, (_, Some(view)))) = &latest { (crash_frames(view)) }
        section.card.daily {
            h2 { "Occurrences per day, last " (GROUP_CHART_DAYS) " days (UTC)" }
            (bars(&stats.daily, &labels, 600, 80, "chart"))
            div.axis { span { (GROUP_CHART_DAYS - 1) " days ago" } span { "today" } }
        }
        section.card.breakdowns {
            h2 { "By release and host" }
            @if stats.capped { p.muted { "Of the newest " (stats.counted) " occurrences." } }
            div.parts {
                (breakdown("Release", &stats.releases, stats.counted))
                (breakdown("Host", &stats.hosts, stats.counted))
            }
        }
        section.card {
            dl.facts {
                dt { "App" } dd { (g.app) }
                dt { "Fingerprint" } dd.mono { (g.fingerprint) }
                dt { "Count" } dd.count { (g.count) }
                dt { "First seen (UTC)" } dd { (utc(g.first_seen_ms)) }
                dt { "Last seen (UTC)" } dd { (utc(g.last_seen_ms)) }
            }
        }
        section.card.occurrences {
            @if let Some(t) = tag {
                h2 { "Occurrences with the tag " span.tag { (t.key) "=" (t.value) } }
                p.muted {
                    a href=(group_href(&g.app, &g.fingerprint)) { "All occurrences" } " · "
                    a href=(groups_with_tag_href(t)) { "All groups with this tag" }
                }
            } @else {
                h2 { "Occurrences" }
            }
            @if page.items.is_empty() { p.muted { "No occurrence matches." } } @else { (report_list(&page.items)) }
            nav.pager {
                @if before.is_some() { a href=(here) { "Newest" } }
                @if let Some(next) = page.next_before {
                    a rel="next" href={(here) "&before=" (next)} { "Older →" }
                }
            }
        }
        @if let Some((report, (body, view))) = &latest {
            h2 { "Latest report" }
            (report_rest(report, body, view.as_ref(), &tag_href))
        }
    };
    layout(&title, Tab::Groups, content)
}

/// The filters of the logs page, as the form gave them.
#[derive(Clone, Debug, Default)]
pub struct LogForm {
    pub app: Option<String>,
    pub level: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub q: Option<String>,
}

/// The logs page.
pub fn logs(form: &LogForm, query: &LogQuery, page: &Page<ListedBody>) -> Markup {
    let pairs = |before: Option<i64>| {
        query_string(&[
            ("app", form.app.clone()),
            ("level", form.level.clone()),
            ("from", form.from.clone()),
            ("to", form.to.clone()),
            ("q", form.q.clone()),
            ("before", before.map(|b| b.to_string())),
        ])
    };
    let text = query.text.as_deref().map(str::to_lowercase);
    let content = html! {
        h1 { "Logs" }
        form.filters method="get" action="/logs" {
            label { "App " input name="app" value=[form.app.as_deref()]; }
            label { "Level at least "
                select name="level" {
                    option value="" { "any" }
                    @for l in ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"] {
                        option value=(l) selected[form.level.as_deref() == Some(l)] { (l) }
                    }
                }
            }
            label { "From (UTC) " input type="datetime-local" name="from" value=[form.from.as_deref()]; }
            label { "To (UTC) " input type="datetime-local" name="to" value=[form.to.as_deref()]; }
            label { "Text " input type="search" name="q" value=[form.q.as_deref()]; }
            button type="submit" { "Filter" }
        }
        @if page.items.is_empty() { p.muted { "No log batch matches." } }
        @for b in &page.items {
            @let body: Value = serde_json::from_str(&b.body).unwrap_or(Value::Null);
            @let all = body.get("records").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
            @let shown: Vec<Value> = all.iter().filter(|r| {
                let level_ok = query.levels.is_empty() || str_field(r, "level").is_some_and(|l| query.levels.iter().any(|x| x.eq_ignore_ascii_case(l)));
                let text_ok = text.as_deref().is_none_or(|t| str_field(r, "message").is_some_and(|m| m.to_lowercase().contains(t)) || str_field(r, "target").is_some_and(|m| m.to_lowercase().contains(t)));
                level_ok && text_ok
            }).cloned().collect();
            section.card.batch {
                p.muted {
                    a href=(report_href(&b.listed.row)) { (utc(b.listed.row.created_ms)) }
                    " · " (b.listed.row.app) " " (b.listed.row.release.as_deref().unwrap_or(""))
                    " · " (b.listed.row.host.as_deref().unwrap_or(""))
                    " · " (shown.len()) " of " (all.len()) " records"
                    @if let Some(d) = body.get("dropped_before").and_then(Value::as_u64).filter(|d| *d > 0) {
                        " · " span.warn { (d) " dropped before this batch" }
                    }
                }
                (records_table(&shown))
            }
        }
        nav.pager {
            @if query.before.is_some() { a href={"/logs" (pairs(None))} { "Newest" } }
            @if let Some(next) = page.next_before { a rel="next" href={"/logs" (pairs(Some(next)))} { "Older →" } }
        }
    };
    layout("Logs", Tab::Logs, content)
}

/// The login page.
pub fn login(failed: bool) -> Markup {
    let content = html! {
        h1 { "Log in" }
        @if failed { p.warn { "That token is not accepted." } }
        form.login method="post" action="/login" {
            label { "UI token " input type="password" name="token" autocomplete="current-password" required; }
            button type="submit" { "Log in" }
        }
        p.muted { "The token is in the file given to lastword collect --ui-token-file, or in LASTWORD_UI_TOKEN." }
    };
    layout("Log in", Tab::None, content)
}

/// A page for a missing thing or an error.
pub fn message(title: &str, text: &str) -> Markup {
    layout(title, Tab::None, html! { h1 { (title) } p { (text) } })
}
