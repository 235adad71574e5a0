//! A real browser: headless Chromium (Debian's `chromium`; .ci/run installs it) loads the overview, a
//! group and a report, the test checks the DOM it rendered and saves screenshots under
//! `target/ui-screenshots/`. If Chromium is missing or cannot start, the test fails: it never skips.
//! On the SQLite store only: the pages are the same on both (tests.rs checks them on both). The browser
//! itself is `lastword_tests::chromium`, shared with the demo's test (agent/tests/demo.rs).

use lastword_tests::chromium::{Chromium, screenshots_dir};

use super::*;

/// Runs `f` with the browser on a blocking thread: the UI under test answers on the runtime's.
async fn with_browser<T: Send + 'static>(
    browser: &std::sync::Arc<Chromium>,
    f: impl FnOnce(&Chromium) -> T + Send + 'static,
) -> T {
    let browser = std::sync::Arc::clone(browser);
    tokio::task::spawn_blocking(move || f(&browser)).await.expect("the browser's thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_overview_a_group_and_a_report() {
    let filled = filled(Backend::Sqlite).await;
    let ui = serve_ui(&filled, Access::Open).await;
    let browser = std::sync::Arc::new(Chromium::new(filled.dir.path().join("chromium-profile")));
    let shots = screenshots_dir();
    let base = format!("http://{}", ui.addr);
    let pages = [
        (
            "overview",
            format!("{base}/"),
            vec!["Reports received per hour", "What agents could not deliver", "<rect"],
        ),
        (
            "group",
            format!("{base}/group?app=shop&fp=fp-parse"),
            vec!["Occurrences", "shop::parse::field", "slow query"],
        ),
        (
            "report",
            format!("{base}/reports/{}", filled.xss_id),
            vec![
                "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;",
                "&lt;svg onload=alert(3)&gt;",
                "Breadcrumbs",
            ],
        ),
    ];
    for (name, url, expected) in pages {
        let png = shots.join(format!("{name}.png"));
        let (dom, url) = with_browser(&browser, move |b| {
            let dom = b.dump_dom(&url);
            b.screenshot(&url, &png, (1280, 900));
            (dom, url)
        })
        .await;
        for e in &expected {
            assert!(dom.contains(e), "{e:?} not in the DOM Chromium rendered for {url}:\n{dom}");
        }
        // The script text stayed text: Chromium built no script element from it.
        assert!(!dom.contains("<script"), "a script element in the DOM of {url}");
        assert!(!dom.contains("<b>bold"), "report HTML became markup in {url}");
    }
    // A phone's width: the crash groups page.
    let phone = shots.join("groups-phone.png");
    with_browser(&browser, move |b| b.screenshot(&format!("{base}/groups"), &phone, (390, 844))).await;
}

/// The viewport of the phone test: 400 px wide, one screen of a common phone high.
const PHONE: (u32, u32) = (400, 740);

/// Measures, in Chromium, where `page` (HTML the UI served) lays out its first app frame in a phone's
/// viewport. Headless Chromium's window is at least 500 px wide whatever `--window-size` asks, so the
/// page is laid out in an `<iframe>` of exactly the phone's size (its own viewport: the stylesheet's
/// media queries see 400 px), with its stylesheet from the UI (`<base>`). The wrapper's script (the
/// UI's own answers forbid scripts; the wrapper is the test's) measures the frame's document once it
/// has loaded and writes the measures into the wrapper's DOM as JSON, which `--dump-dom` prints.
fn measure_on_a_phone(b: &Chromium, page: &str, base: &str, file: &std::path::Path) -> serde_json::Value {
    const SCRIPT: &str = r#"<script>
      const frame = document.getElementById('phone');
      frame.addEventListener('load', () => {
        const doc = frame.contentDocument;
        const app = doc.querySelector('ol.frames li.app');
        const r = app ? app.getBoundingClientRect() : null;
        const out = document.createElement('pre');
        out.id = 'measured';
        out.textContent = JSON.stringify({
          width: frame.contentWindow.innerWidth, height: frame.contentWindow.innerHeight,
          scrollWidth: doc.documentElement.scrollWidth,
          appTop: r && r.top, appBottom: r && r.bottom,
          appFolded: app ? app.closest('details') !== null : null,
          foldOpen: [...doc.querySelectorAll('details.folded')].map(d => d.open),
          crumbsRight: [...doc.querySelectorAll('ol.crumbs li')].map(li => li.getBoundingClientRect().right),
          styled: getComputedStyle(doc.body).margin === '0px',
        });
        document.body.appendChild(out);
      });
    </script>"#;
    let page = page.replacen("<head>", &format!("<head><base href=\"{base}/\">"), 1);
    let srcdoc = page.replace('&', "&amp;").replace('"', "&quot;");
    let (w, h) = PHONE;
    let wrapper = format!(
        "<!DOCTYPE html><html><body style=\"margin:0\"><iframe id=\"phone\" width=\"{w}\" height=\"{h}\" \
         style=\"border:0\" srcdoc=\"{srcdoc}\"></iframe>{SCRIPT}</body></html>"
    );
    std::fs::write(file, wrapper).expect("the wrapper page is written");
    let dom = b.dump_dom(&format!("file://{}", file.display()));
    let start = dom.find("<pre id=\"measured\">").expect("the script ran and wrote its measures") + 19;
    let end = start + dom[start..].find("</pre>").expect("the measures end");
    serde_json::from_str(&dom[start..end].replace("&quot;", "\"").replace("&amp;", "&"))
        .expect("the measures are JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_real_crashes_folded_titled_and_readable_on_a_phone() {
    let filled = filled(Backend::Sqlite).await;
    let crashes = super::reading::add_real_crashes(&filled).await;
    let ui = serve_ui(&filled, Access::Open).await;
    let browser = std::sync::Arc::new(Chromium::new(filled.dir.path().join("chromium-profile")));
    let shots = screenshots_dir();
    let base = format!("http://{}", ui.addr);
    for crash in &crashes {
        for (page, path) in [
            ("report", format!("/reports/{}", crash.id)),
            ("group", pages::group_href("crash-app", &crash.fingerprint)),
        ] {
            let url = format!("{base}{path}");
            let served = get(ui.addr, &path, "").await;
            assert_eq!(served.status, 200, "{url}: {}", served.body);
            let name = format!("{}-{page}", crash.name);
            let copy = filled.dir.path().join(format!("{name}.html"));
            let png = shots.join(format!("{name}-phone.png"));
            let body = served.body.clone();
            let base = base.clone();
            let (dom, measured) = with_browser(&browser, move |b| {
                let dom = b.dump_dom(&url);
                b.screenshot(&url, &png, PHONE);
                (dom, measure_on_a_phone(b, &body, &base, &copy))
            })
            .await;

            // The title: the culprit and the location, never an address.
            let title =
                &dom[dom.find("<title>").expect("a title") + 7..dom.find("</title>").expect("its end")];
            assert!(title.contains(crash.culprit) && title.contains(crash.location), "{name}: {title:?}");
            assert!(!title.contains("0x"), "{name}: an address in the title {title:?}");
            // The folded frames, as Chromium built them: one <details>, closed, the app's frames outside.
            let folds = dom.matches("<details class=\"folded\">").count();
            let first_app = dom.find("<li class=\"frame app\">").expect("an app frame in the DOM");
            if crash.name == "overflow" {
                assert_eq!(folds, 0, "{name}: the overflow's two frames are both the app's: nothing to fold");
            } else {
                assert_eq!(folds, 1, "{name}: one fold");
                assert!(first_app < dom.find("<details").expect("the fold"), "{name}: the app frame first");
                assert_eq!(measured["foldOpen"], serde_json::json!([false]), "{name}: folded until opened");
            }
            assert!(!dom.contains("<script"), "{name}: the UI's page has no script");

            // On a phone (400 px wide): the first app frame is on the first screen, not folded, and
            // nothing makes the page scroll sideways, the breadcrumbs included.
            assert_eq!(measured["width"], 400, "{name}: the phone's viewport: {measured}");
            assert_eq!(measured["styled"], true, "{name}: laid out with the UI's stylesheet: {measured}");
            let height = measured["height"].as_f64().expect("the height");
            let top = measured["appTop"].as_f64().expect("the app frame's position");
            let bottom = measured["appBottom"].as_f64().expect("the app frame's bottom");
            assert!(
                top >= 0.0 && bottom <= height,
                "{name}: the first app frame within the first screen: {measured}"
            );
            assert_eq!(measured["appFolded"], false, "{name}: {measured}");
            assert!(
                measured["scrollWidth"].as_f64() <= Some(400.0),
                "{name}: no sideways scroll: {measured}"
            );
            let crumbs = measured["crumbsRight"].as_array().expect("the breadcrumbs");
            assert!(!crumbs.is_empty(), "{name}: breadcrumbs shown: {measured}");
            assert!(crumbs.iter().all(|r| r.as_f64() <= Some(400.0)), "{name}: breadcrumbs wrap: {measured}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_a_real_events_chain_and_follows_its_tag_to_the_filtered_groups() {
    let filled = filled(Backend::Sqlite).await;
    let event = super::events::add_real_event(&filled).await;
    let ui = serve_ui(&filled, Access::Open).await;
    let browser = std::sync::Arc::new(Chromium::new(filled.dir.path().join("chromium-profile")));
    let shots = screenshots_dir();
    let base = format!("http://{}", ui.addr);

    let url = format!("{base}/reports/{}", event.id);
    let png = shots.join("event-report.png");
    let dom = with_browser(&browser, move |b| {
        let dom = b.dump_dom(&url);
        b.screenshot(&url, &png, (1280, 900));
        dom
    })
    .await;
    // The chain as Chromium built it: the error, then its source, in one list.
    let chain = &dom[dom.find("<ol class=\"chain\">").expect("the error chain in the DOM")..];
    let chain = &chain[..chain.find("</ol>").expect("its end")];
    let (error, source) = (chain.find("ConfigError"), chain.find("ParseIntError"));
    assert!(error.is_some() && error < source, "the error, then its source:\n{chain}");
    assert!(chain.contains("invalid digit found in string"), "{chain}");
    assert!(dom.contains("<li class=\"frame app\">"), "the app's frames are shown");
    assert!(!dom.contains("<script"), "a script element in the event's page");

    // Its tag, a link in the DOM, leads to the groups with that tag: the event's group alone.
    let link = "<a class=\"tag\" href=\"";
    let start = dom.find(link).expect("a tag link") + link.len();
    let href = dom[start..start + dom[start..].find('"').expect("the link ends")].replace("&amp;", "&");
    assert_eq!(href, "/groups?tag=region%3Deu-west-1");
    let url = format!("{base}{href}");
    let png = shots.join("groups-by-tag.png");
    let groups = with_browser(&browser, move |b| {
        let dom = b.dump_dom(&url);
        b.screenshot(&url, &png, (1280, 900));
        dom
    })
    .await;
    assert_eq!(rows(&groups, "groups"), 1, "{groups}");
    assert!(groups.contains("bad port in /etc/app-3.toml"), "{groups}");
    assert!(groups.contains("value=\"region=eu-west-1\""), "the form shows the filter:\n{groups}");
    assert!(groups.contains(&pages::group_href(&event.app, &event.fingerprint).replace('&', "&amp;")));
}
