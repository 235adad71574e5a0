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
