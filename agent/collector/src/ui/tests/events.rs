//! Events in the web UI (issue 19), on both backends: event groups listed beside crash groups and
//! filtered by kind; an event's report page with its error chain, its scope (tags, user, extra as
//! escaped JSON) and its frames; groups and a group's reports filtered by a scope tag, whose links
//! on the pages lead to that filter. The real event is a fixture made by a real program (the event
//! app: fixtures/README.md).

use super::*;

/// A real event of the event app (`scope-threads`: `load_config(3)`'s `ConfigError`, with the
/// process-wide scope region=eu-west-1, user 42 and extra build), as the collector stored it.
pub(in crate::ui) const EVENT_FIXTURE: &str = include_str!("fixtures/event.json");

/// The real event, stored as the collector would (its digest: summary, fingerprint).
pub(in crate::ui) struct RealEvent {
    pub id: EntryId,
    pub app: String,
    pub fingerprint: String,
}

/// Stores `body` (an event's JSON) as the collector would, received `ago_ms` before now.
fn event_report(body: &str, release: &str, ago_ms: u64) -> (NewReport, String) {
    let digest = crate::fingerprint::digest(Kind::Event, body);
    let fingerprint = digest.fingerprint.clone().expect("an event has a fingerprint");
    let now = now_ms();
    let r = NewReport {
        id: EntryId::generate(),
        kind: Kind::Event,
        origin: origin(&digest.app.clone().unwrap_or_else(|| "shop".into()), release),
        created_ms: now - ago_ms,
        received_ms: now - ago_ms,
        fingerprint: Some(fingerprint.clone()),
        summary: digest.summary,
        body: body.to_owned(),
        waits: Vec::new(),
    };
    (r, fingerprint)
}

/// Adds the real event to `filled`'s store.
pub(in crate::ui) async fn add_real_event(filled: &Filled) -> RealEvent {
    let (r, fingerprint) = event_report(EVENT_FIXTURE, "1.0.0", 60_000);
    let event = RealEvent { id: r.id, app: r.origin.app.clone(), fingerprint };
    filled.store.write(Batch { reports: vec![r], losses: vec![] }).await.expect("the batch is written");
    event
}

/// A message event of app `shop` with the scope tags `tags`.
fn message_event(message: &str, tags: serde_json::Value) -> String {
    json!({
        "type": "event", "version": 1, "level": "WARN", "message": message, "ts_ms": now_ms(),
        "thread": {"name": "main", "id": 1}, "frames": [], "symbolized": true, "fingerprint": "",
        "context": {"app": "shop", "release": "1.1", "os": "linux", "arch": "x86_64"},
        "scope": {"tags": tags}
    })
    .to_string()
}

/// The tests' event groups beside `filled`'s crashes: "slow checkout" (app shop), three times, two
/// with tier=gold and one with tier=silver; "cache full" once, without tags; and the real event.
struct Events {
    real: RealEvent,
    slow_fp: String,
    gold: Vec<EntryId>,
    silver: EntryId,
}

async fn add_events(filled: &Filled) -> Events {
    let real = add_real_event(filled).await;
    let (g1, slow_fp) =
        event_report(&message_event("slow checkout 2300 ms", json!({"tier": "gold"})), "1.1", 50_000);
    let (g2, _) = event_report(
        &message_event("slow checkout 1800 ms", json!({"tier": "gold", "region": "eu"})),
        "1.1",
        40_000,
    );
    let (s, other_fp) =
        event_report(&message_event("slow checkout 950 ms", json!({"tier": "silver"})), "1.1", 30_000);
    assert_eq!(slow_fp, other_fp, "messages group without their digits");
    let (plain, _) = event_report(&message_event("cache 12 of 40 full", json!({})), "1.1", 20_000);
    let events = Events { real, slow_fp, gold: vec![g1.id, g2.id], silver: s.id };
    filled.store.write(Batch { reports: vec![g1, g2, s, plain], losses: vec![] }).await.expect("written");
    events
}

/// Links of `class` in `page` (`<a class="..." href="...">`), `&amp;` read back as `&`.
fn hrefs(page: &str, class: &str) -> Vec<String> {
    let needle = format!("<a class=\"{class}\" href=\"");
    page.split(&needle).skip(1).filter_map(|s| s.split('"').next()).map(|h| h.replace("&amp;", "&")).collect()
}

async fn event_groups_are_listed_beside_crash_groups_and_filtered_by_kind(backend: Backend) {
    let filled = filled(backend).await;
    let events = add_events(&filled).await;
    let ui = serve_ui(&filled, Access::Open).await;

    let all = get(ui.addr, "/groups?app=shop", "").await;
    assert_eq!(all.status, 200, "{}", all.body);
    // The three crash groups of `filled` and the two event groups of shop.
    assert_eq!(rows(&all.body, "groups"), 5, "{}", all.body);
    assert_in(&all.body, &["index out of bounds", "slow checkout", "<td>event</td>", "<td>panic</td>"]);
    assert_in(&all.body, &["<option value=\"event\">event</option>"]);

    let only_events = get(ui.addr, "/groups?app=shop&kind=event", "").await;
    assert_eq!(rows(&only_events.body, "groups"), 2, "{}", only_events.body);
    assert_in(
        &only_events.body,
        &["slow checkout", "cache 12 of 40 full", "<option value=\"event\" selected>"],
    );
    assert!(!only_events.body.contains("index out of bounds"), "a crash among the events");

    let panics = get(ui.addr, "/groups?app=shop&kind=panic", "").await;
    assert_eq!(rows(&panics.body, "groups"), 2, "{}", panics.body);
    assert!(!panics.body.contains("slow checkout"), "an event among the panics");

    // The real event's group, of its own app.
    let real = get(ui.addr, &format!("/groups?app={}&kind=event", events.real.app), "").await;
    assert_eq!(rows(&real.body, "groups"), 1, "{}", real.body);
    assert_in(&real.body, &["bad port in /etc/app-3.toml"]);
}

async fn an_event_report_shows_its_error_chain_scope_and_frames(backend: Backend) {
    let filled = filled(backend).await;
    let events = add_events(&filled).await;
    let ui = serve_ui(&filled, Access::Open).await;
    let page = get(ui.addr, &format!("/reports/{}", events.real.id), "").await;
    assert_eq!(page.status, 200, "{}", page.body);
    // The title: the message, the culprit (the app's own function) and where.
    let title = &page.body[page.body.find("<h1").expect("a heading")..];
    let title = &title[..title.find("</h1>").expect("its end")];
    assert!(title.contains("bad port in /etc/app-3.toml") && title.contains("load_config"), "{title}");
    // The error chain: the error's type and Display, then its source's.
    assert_in(
        &page.body,
        &[
            "<span class=\"type\">lastword_event_app::ConfigError</span>",
            "<span class=\"msg\">bad port in /etc/app-3.toml</span>",
            "caused by",
            "<span class=\"type\">ParseIntError</span>",
            "<span class=\"msg\">invalid digit found in string</span>",
            "<dt>Level</dt><dd>ERROR</dd>",
        ],
    );
    let error = page.body.find("<section class=\"card event\">").expect("the error's card");
    assert!(
        page.body[error..].find("ConfigError") < page.body[error..].find("ParseIntError"),
        "the error before its source"
    );
    // The frames, as a crash's: the app's own first, the rest folded.
    assert_in(&page.body, &["<li class=\"frame app\">", "lastword_event_app::load_config", "event_app.rs:"]);
    assert!(page.body.contains("<details class=\"folded\">"), "std's frames folded");
    assert_in(&page.body, &["<h2>Frames where it was captured</h2>"]);
    // The scope: the tag as a link to the groups with it, the user, the extra context as JSON.
    assert_eq!(hrefs(&page.body, "tag"), vec!["/groups?tag=region%3Deu-west-1".to_owned()]);
    assert_in(
        &page.body,
        &["<span class=\"tag\">id: 42</span>", "&quot;sha&quot;: &quot;abc123&quot;", "&quot;n&quot;: 7"],
    );
    // The raw JSON is still there.
    assert_in(&page.body, &[&format!("/reports/{}/raw.json", events.real.id)]);

    // A message: its level, no error chain.
    let group = get(ui.addr, &pages::group_href("shop", &events.slow_fp), "").await;
    assert_eq!(group.status, 200, "{}", group.body);
    assert_in(&group.body, &["<h2>Message</h2>", "<dt>Level</dt><dd>WARN</dd>", "slow checkout"]);
    assert!(!group.body.contains("class=\"chain\""), "a message has no chain");
}

async fn groups_and_a_groups_reports_are_filtered_by_a_tag(backend: Backend) {
    let filled = filled(backend).await;
    let events = add_events(&filled).await;
    let ui = serve_ui(&filled, Access::Open).await;

    // Groups: those with a report that carries the tag.
    let gold = get(ui.addr, "/groups?tag=tier%3Dgold", "").await;
    assert_eq!(gold.status, 200, "{}", gold.body);
    assert_eq!(rows(&gold.body, "groups"), 1, "{}", gold.body);
    assert_in(&gold.body, &["slow checkout", "value=\"tier=gold\""]);
    let region = get(ui.addr, "/groups?tag=region%3Deu-west-1", "").await;
    assert_eq!(rows(&region.body, "groups"), 1, "{}", region.body);
    assert_in(&region.body, &["bad port in /etc/app-3.toml"]);
    let none = get(ui.addr, "/groups?tag=tier%3Dbronze", "").await;
    assert_eq!(rows(&none.body, "groups"), 0, "{}", none.body);
    assert_in(&none.body, &["No group matches."]);
    // With the kind: an event tag and kind=panic match nothing.
    let panic = get(ui.addr, "/groups?tag=tier%3Dgold&kind=panic", "").await;
    assert_eq!(rows(&panic.body, "groups"), 0, "{}", panic.body);
    // The sort links keep the filter.
    assert_in(&gold.body, &["tag=tier%3Dgold&amp;sort="]);

    // A group's reports: those with the tag, newest first; the others without.
    let href = pages::group_href_tagged("shop", &events.slow_fp, Tag::parse("tier=gold").as_ref());
    let group = get(ui.addr, &href, "").await;
    assert_eq!(group.status, 200, "{}", group.body);
    assert_eq!(rows(&group.body, "reports"), 2, "{}", group.body);
    let listed = &group.body[group.body.find("<table class=\"reports\"").expect("the list")..];
    let listed = &listed[..listed.find("</table>").expect("the list ends")];
    let (newer, older) = (events.gold[1].to_string(), events.gold[0].to_string());
    assert!(listed.find(&newer) < listed.find(&older), "newest first");
    assert!(!listed.contains(&events.silver.to_string()), "the silver one is left out");
    assert_in(&group.body, &["Occurrences with the tag", "All occurrences", "All groups with this tag"]);
    let all = get(ui.addr, &pages::group_href("shop", &events.slow_fp), "").await;
    assert_eq!(rows(&all.body, "reports"), 3, "{}", all.body);
    // The latest report's tags link to this group's reports with that tag.
    assert_eq!(
        hrefs(&all.body, "tag"),
        vec![pages::group_href_tagged("shop", &events.slow_fp, Tag::parse("tier=silver").as_ref())]
    );

    // An address whose tag is not KEY=VALUE is answered 400 with the form's usage.
    for path in ["/groups?tag=gold", "/groups?tag=%3Dgold"] {
        let bad = get(ui.addr, path, "").await;
        assert_eq!(bad.status, 400, "{path}: {}", bad.body);
        assert_in(&bad.body, &["KEY=VALUE"]);
    }
    let bad = get(ui.addr, &format!("{}&tag=gold", pages::group_href("shop", &events.slow_fp)), "").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}

async fn html_in_an_events_chain_and_scope_is_shown_as_text(backend: Backend) {
    let filled = filled(backend).await;
    let body = json!({
        "type": "event", "version": 1, "level": "ERROR", "message": XSS, "ts_ms": now_ms(),
        "error": {"type": "<i>Type</i>", "message": XSS,
                  "chain": [{"type": "Inner", "message": "<img src=x onerror=alert(5)>"}]},
        "frames": [], "symbolized": true, "fingerprint": "fp-event-xss",
        "context": {"app": "shop", "release": "1.1"},
        "scope": {"tags": {"<b>k</b>": "<script>v</script>"},
                  "user": {"name": "<svg onload=alert(6)>"},
                  "extra": {"html": "</pre><script>alert(7)</script>"}}
    })
    .to_string();
    let (r, fingerprint) = event_report(&body, "1.1", 1_000);
    let id = r.id;
    filled.store.write(Batch { reports: vec![r], losses: vec![] }).await.expect("written");
    let ui = serve_ui(&filled, Access::Open).await;
    for path in [format!("/reports/{id}"), pages::group_href("shop", &fingerprint)] {
        let page = get(ui.addr, &path, "").await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert_in(
            &page.body,
            &[
                "&lt;script&gt;alert(1)&lt;/script&gt;",
                "&lt;i&gt;Type&lt;/i&gt;",
                "&lt;img src=x onerror=alert(5)&gt;",
                "&lt;b&gt;k&lt;/b&gt;=&lt;script&gt;v&lt;/script&gt;",
                "&lt;svg onload=alert(6)&gt;",
                "&lt;/pre&gt;&lt;script&gt;alert(7)&lt;/script&gt;",
            ],
        );
        for raw in ["<script", "<b>", "<i>", "<img", "<svg onload"] {
            assert!(!page.body.contains(raw), "{raw} unescaped in {path}:\n{}", page.body);
        }
    }
}

on_both_stores!(
    event_groups_are_listed_beside_crash_groups_and_filtered_by_kind,
    an_event_report_shows_its_error_chain_scope_and_frames,
    groups_and_a_groups_reports_are_filtered_by_a_tag,
    html_in_an_events_chain_and_scope_is_shown_as_text,
);

#[test]
fn a_tag_is_key_equals_value_split_at_the_first_equals_sign() {
    let tag = Tag::parse("build=a=b").expect("a tag");
    assert_eq!((tag.key.as_str(), tag.value.as_str()), ("build", "a=b"));
    assert_eq!(tag.as_param(), "build=a=b");
    assert_eq!(Tag::parse("region=").map(|t| t.value), Some(String::new()));
    assert_eq!(Tag::parse("region"), None);
    assert_eq!(Tag::parse("=eu"), None);
}
