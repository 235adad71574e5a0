//! A real browser: headless Chromium (Debian's `chromium`; .ci/run installs it) loads the overview, a
//! group and a report, the test checks the DOM it rendered and saves screenshots under
//! `target/ui-screenshots/`. If Chromium is missing or cannot start, the test fails: it never skips.
//! On the SQLite store only: the pages are the same on both (tests.rs checks them on both).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// `target/ui-screenshots`, beside the test binary's `target/debug/deps`.
fn screenshots_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe.ancestors().nth(3).expect("target/<profile>/deps/<binary>");
    target.join("ui-screenshots")
}

async fn chromium(profile: &Path, args: &[String]) -> String {
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{CHROMIUM} did not finish within 90 s: {args:?}"))
        .unwrap_or_else(|e| {
            panic!("cannot start {CHROMIUM} ({e}); install it with `apt-get install chromium`")
        });
    assert!(
        out.status.success(),
        "{CHROMIUM} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the DOM is UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_overview_a_group_and_a_report() {
    let filled = filled(Backend::Sqlite).await;
    let ui = serve_ui(&filled, Access::Open).await;
    let profile = filled.dir.path().join("chromium-profile");
    let shots = screenshots_dir();
    std::fs::create_dir_all(&shots).expect("the screenshots directory");
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
    for (name, url, expected) in &pages {
        let dom = chromium(&profile, &["--dump-dom".into(), url.clone()]).await;
        for e in expected {
            assert!(dom.contains(e), "{e:?} not in the DOM Chromium rendered for {url}:\n{dom}");
        }
        // The script text stayed text: Chromium built no script element from it.
        assert!(!dom.contains("<script"), "a script element in the DOM of {url}");
        assert!(!dom.contains("<b>bold"), "report HTML became markup in {url}");
        let png = shots.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&png);
        chromium(
            &profile,
            &[format!("--screenshot={}", png.display()), "--window-size=1280,900".into(), url.clone()],
        )
        .await;
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "the screenshot {} is missing or empty ({size} bytes)", png.display());
    }
    // A phone's width: the crash groups page.
    let phone = shots.join("groups-phone.png");
    let _ = std::fs::remove_file(&phone);
    chromium(
        &profile,
        &[
            format!("--screenshot={}", phone.display()),
            "--window-size=390,844".into(),
            format!("{base}/groups"),
        ],
    )
    .await;
    assert!(std::fs::metadata(&phone).map(|m| m.len()).unwrap_or(0) > 10_000, "no phone screenshot");
}
