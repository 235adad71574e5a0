//! The report and group pages as a person reads them (issue 18, "Reading a crash"), on both backends:
//! real crash reports (the fixtures, made by real crashing children: fixtures/README.md) get a title
//! with the culprit and the location and no address, their application's frames before the one
//! `<details>` that folds the rest, and a group's page has its occurrences per day over 30 days and
//! its breakdown by release and host.

use super::*;

/// A real crash report of the crash app, as the collector stored it.
pub(in crate::ui) struct RealCrash {
    /// `panic`, `segv` or `overflow`.
    pub name: &'static str,
    pub id: EntryId,
    pub fingerprint: String,
    /// What its title must say: the culprit and where.
    pub culprit: &'static str,
    pub location: &'static str,
}

/// The three fixtures' bodies.
pub(in crate::ui) const FIXTURES: [(&str, &str, &str, &str); 3] = [
    (
        "panic",
        include_str!("fixtures/panic.json"),
        "lastword_crash_app::main::{{closure}}",
        "crash_app.rs:74:76",
    ),
    ("segv", include_str!("fixtures/segv.json"), "lastword_crash_app::null_deref", "crash_app.rs:188"),
    ("overflow", include_str!("fixtures/overflow.json"), "lastword_crash_app::recurse", "crash_app.rs:262"),
];

/// Stores the fixtures in `filled`'s store, as the collector would (its digest: summary, fingerprint),
/// received a minute ago.
pub(in crate::ui) async fn add_real_crashes(filled: &Filled) -> Vec<RealCrash> {
    let now = now_ms();
    let mut reports = Vec::new();
    let mut crashes = Vec::new();
    for (name, body, culprit, location) in FIXTURES {
        let digest = crate::fingerprint::digest(Kind::Crash, body);
        let fingerprint = digest.fingerprint.clone().expect("a crash has a fingerprint");
        let r = NewReport {
            id: EntryId::generate(),
            kind: Kind::Crash,
            origin: origin(&digest.app.clone().unwrap_or_default(), "1.0.0"),
            created_ms: now - 60_000,
            received_ms: now - 60_000,
            fingerprint: Some(fingerprint.clone()),
            summary: digest.summary,
            body: body.to_owned(),
            waits: Vec::new(),
        };
        crashes.push(RealCrash { name, id: r.id, fingerprint, culprit, location });
        reports.push(r);
    }
    filled.store.write(Batch { reports, losses: vec![] }).await.expect("the batch is written");
    crashes
}

/// The text of the first `<tag ...>...</tag>` of `html`.
fn element<'a>(html: &'a str, tag: &str) -> &'a str {
    let start = html.find(&format!("<{tag}")).unwrap_or_else(|| panic!("no <{tag}> in:\n{html}"));
    let open_end = start + html[start..].find('>').expect("the tag ends");
    let end = open_end + html[open_end..].find(&format!("</{tag}>")).expect("the element ends");
    &html[open_end + 1..end]
}

/// Checks a page of `crash`: the title and the heading, the app's frame before the fold.
fn assert_reads(page: &str, crash: &RealCrash) {
    for (what, text) in [("title", element(page, "title")), ("h1", element(page, "h1"))] {
        assert!(text.contains(crash.culprit), "{}: the culprit in the {what}: {text:?}", crash.name);
        assert!(text.contains(crash.location), "{}: the location in the {what}: {text:?}", crash.name);
        assert!(!text.contains("0x"), "{}: no address in the {what}: {text:?}", crash.name);
    }
    let first_app =
        page.find("<li class=\"frame app\">").unwrap_or_else(|| panic!("{}: an app frame", crash.name));
    match page.find("<details class=\"folded\">") {
        Some(fold) => {
            assert!(first_app < fold, "{}: the app's frames come before the fold", crash.name);
            let folded = &page[fold..fold + page[fold..].find("</details>").expect("the fold ends")];
            assert!(!folded.contains("<li class=\"frame app\">"), "{}: no app frame is folded", crash.name);
            assert!(folded.contains("frame std"), "{}: std's frames are folded", crash.name);
            assert!(!folded.contains("/rustc/"), "{}: std paths are shortened", crash.name);
            assert!(folded.contains("std/std/src/"), "{}: std paths read std/...", crash.name);
        }
        // The stack overflow's report has two frames, both the app's: nothing to fold.
        None => assert_eq!(crash.name, "overflow", "{}: the other frames are folded", crash.name),
    }
}

async fn real_crashes_read_with_culprit_location_and_folded_frames(backend: Backend) {
    let filled = filled(backend).await;
    let crashes = add_real_crashes(&filled).await;
    let ui = serve_ui(&filled, Access::Open).await;
    for crash in &crashes {
        let report = get(ui.addr, &format!("/reports/{}", crash.id), "").await;
        assert_eq!(report.status, 200, "{}", report.body);
        assert_reads(&report.body, crash);
        let group = get(ui.addr, &pages::group_href("crash-app", &crash.fingerprint), "").await;
        assert_eq!(group.status, 200, "{}", group.body);
        assert_reads(&group.body, crash);
    }
}

async fn a_group_page_charts_30_days_and_breaks_down_by_release_and_host(backend: Backend) {
    let filled = filled(backend).await;
    let ui = serve_ui(&filled, Access::Open).await;
    // fp-parse: 3 reports, 3, 2 and 1 hours ago, releases 1.0, 1.1, 1.1, all from web-3.
    let ui_store = filled.store.reader().await.expect("the store opens read-only");
    let now = now_ms();
    let stats = ui_store.group_stats("shop".into(), "fp-parse".into(), now).await.expect("the stats");
    assert_eq!(stats.daily.len(), 30);
    let today = (1..=3).filter(|h| (now - h * 3_600_000) / DAY == now / DAY).count() as u64;
    assert_eq!(stats.daily[29], today, "{stats:?}");
    assert_eq!(stats.daily[28], 3 - today, "{stats:?}");
    assert_eq!(stats.releases, vec![("1.1".to_owned(), 2), ("1.0".to_owned(), 1)]);
    assert_eq!(stats.hosts, vec![("web-3".to_owned(), 3)]);
    assert_eq!((stats.counted, stats.capped), (3, false));
    // A group of 10 days ago: on the tenth day back.
    let bulk = ui_store.group_stats("bulk".into(), "fp-bulk-00".into(), now).await.expect("the stats");
    let day = 29 - usize::try_from(now / DAY - (now - 10 * DAY) / DAY).unwrap();
    assert_eq!(bulk.daily.iter().sum::<u64>(), 1);
    assert_eq!(bulk.daily[day], 1, "{bulk:?}");

    let page = get(ui.addr, "/group?app=shop&fp=fp-parse", "").await;
    assert_eq!(page.status, 200);
    assert_in(&page.body, &["Occurrences per day, last 30 days", "By release and host"]);
    let chart = element(&page.body[page.body.find("class=\"card daily\"").expect("the chart")..], "svg");
    assert_eq!(chart.matches("<rect").count(), 30, "{chart}");
    assert!(chart.contains(&format!("<title>today: {today}</title>")), "{chart}");
    let breakdowns = &page.body[page.body.find("By release and host").expect("the breakdowns")..];
    assert_in(breakdowns, &["<td>1.1</td><td class=\"num\">2</td>", "<td>1.0</td><td class=\"num\">1</td>"]);
    assert_in(breakdowns, &["<td>web-3</td><td class=\"num\">3</td>"]);
}

on_both_stores!(
    real_crashes_read_with_culprit_location_and_folded_frames,
    a_group_page_charts_30_days_and_breaks_down_by_release_and_host,
);
