//! Finding and opening a spool, as a person meets it: `lastword run` and `drain` refuse a spool that
//! does not exist (unless asked to create it), the library's default spool of an app is the one that
//! `lastword ... --app NAME` finds, a spool that is not found says where it was looked for, and a spool
//! that a dead session left damaged is still drained. Real processes: the `lastword` binary, and this
//! test binary re-executed as an application that links lastword.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lastword::spool::{EntryState, Kind, Spool, SpoolOptions, SpoolView};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

const BIN: &str = env!("CARGO_BIN_EXE_lastword");
/// Set in a child: it plays the application, with this app name.
const APP_ENV: &str = "LASTWORD_TEST_APP_NAME";
/// The app name the tests use.
const APP: &str = "shop-floor";

/// A home of its own for each test, so that the default spools are the test's.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    /// Where the default spool of `app` must be (the layout README.md documents).
    fn default_spool(&self, app: &str) -> PathBuf {
        self.data().join("lastword").join("spools").join(app)
    }
    /// `command` with this home, and no spool, app, URL or token from the test's environment.
    fn env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.data())
            .env_remove("LASTWORD_SPOOL")
            .env_remove("LASTWORD_APP")
            .env_remove("LASTWORD_URL")
            .env_remove("LASTWORD_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
    }
    fn lastword(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args);
        self.env(&mut c);
        c
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wait_exit(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("lastword did not exit within {limit:?}: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// The entry point of the child application; passes at once in an ordinary test run.
#[test]
fn child_application_panics_with_its_default_spool() {
    let Ok(app) = std::env::var(APP_ENV) else { return };
    let _guard = lastword::init(lastword::Config::new(app).no_url().signals(false)).unwrap();
    let joined = std::thread::spawn(|| panic!("boom on the shop floor")).join();
    assert!(joined.is_err());
}

/// Runs this test binary as an application named `app` that panics once, with `home`'s defaults.
fn run_app(home: &Home, app: &str) {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_application_panics_with_its_default_spool", "--nocapture", "-q"]);
    home.env(&mut c).env(APP_ENV, app);
    let out = c.output().unwrap();
    assert!(out.status.success(), "the application ran: {}", stderr(&out));
}

#[test]
fn drain_and_run_on_a_spool_that_does_not_exist_exit_1_in_one_line_and_create_nothing() {
    let home = Home::new();
    let missing = home.dir.path().join("typo").join("spool");
    let empty = home.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for path in [&missing, &empty] {
        for command in [&["drain", "--deadline", "1s"][..], &["run"][..]] {
            let child = home
                .lastword(command)
                .arg("--spool")
                .arg(path)
                .args(["--url", "ws://127.0.0.1:1/ingest"])
                .spawn()
                .unwrap();
            let out = wait_exit(child, Duration::from_secs(20));
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{command:?} on {}: {err}", path.display());
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            if path == &empty {
                let said = format!("{} is an empty directory, not a spool", path.display());
                assert!(err.contains(&said), "says what is there: {err}");
            } else {
                assert!(err.contains(&format!("no spool at {}", path.display())), "{err}");
            }
            assert!(err.contains("--create"), "says how to create it: {err}");
        }
    }
    assert!(!missing.exists() && !missing.parent().unwrap().exists(), "nothing was created");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "the empty directory is left alone");

    // Asked to, drain creates it.
    let out = home
        .lastword(&["drain", "--create", "--deadline", "1s", "--url", "ws://127.0.0.1:1/ingest", "--spool"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(SpoolView::open(&missing).unwrap().list().unwrap().is_empty());
}

#[test]
fn the_librarys_default_spool_of_an_app_is_the_one_lastword_finds_by_its_name() {
    let home = Home::new();
    run_app(&home, APP);
    let spool = home.default_spool(APP);
    let listed =
        SpoolView::open(&spool).expect("the library wrote to the documented default spool").list().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0].id.unwrap().to_string();

    let ok = |mut c: Command| {
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let ls: serde_json::Value =
        serde_json::from_str(&ok(home.lastword(&["ls", "--json", "--app", APP]))).unwrap();
    assert_eq!(ls[0]["id"], id.as_str(), "ls --app finds the app's spool: {ls}");
    let mut stats = home.lastword(&["stats", "--json"]);
    stats.env("LASTWORD_APP", APP);
    let stats: serde_json::Value = serde_json::from_str(&ok(stats)).unwrap();
    assert_eq!(stats["totals"]["ready"]["entries"], 1, "LASTWORD_APP finds it too: {stats}");
    let show = ok(home.lastword(&["show", &id, "--app", APP]));
    assert!(show.contains("boom on the shop floor"), "{show}");

    // The sidecar of that app, started the way README.md shows, delivers what the app left.
    let collector = TestCollector::start(Behaviour::Accept);
    let mut drain = home.lastword(&["drain", "--deadline", "20s", "--app", APP, "--url", &collector.url()]);
    drain.env("LASTWORD_TOKEN", TOKEN);
    ok(drain);
    assert_eq!(collector.stored_ids().len(), 1, "the app's crash reached the collector");
    assert_eq!(collector.record.lock().unwrap().hellos[0].app, APP, "hello names the app");
    let mut run = home.lastword(&["run", "--grace", "1s", "--url", &collector.url()]);
    run.env("LASTWORD_APP", APP).env("LASTWORD_TOKEN", TOKEN);
    run_app(&home, APP);
    let child = run.spawn().unwrap();
    collector.wait_for(Duration::from_secs(20), "the second crash", |r| r.stored.len() == 2);
    sigterm(&child);
    let out = wait_exit(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_spool_not_found_by_app_name_says_where_it_looked_and_which_apps_have_one() {
    let home = Home::new();
    run_app(&home, APP);
    for command in [&["ls", "--app", "shop-flor"][..], &["stats", "--app", "shop-flor"][..]] {
        let out = home.lastword(command).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(&home.default_spool("shop-flor").display().to_string()), "names where: {err}");
        assert!(err.contains(APP), "names the apps that have a spool: {err}");
    }
    let out =
        home.lastword(&["drain", "--app", "shop-flor", "--url", "ws://127.0.0.1:1/ingest"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&home.default_spool("shop-flor").display().to_string()), "{err}");
    assert!(!home.default_spool("shop-flor").exists(), "not created");
    let out = home.lastword(&["ls"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--spool DIR or --app NAME") && err.contains(APP), "{err}");
}

/// A spool with `n` crash entries and the `writing/` folder of a dead session with a directory in it.
fn damaged_spool(dir: &Path, n: usize) {
    let spool = Spool::open(dir, SpoolOptions::default()).unwrap();
    for i in 0..n {
        spool.write(Kind::Crash, format!(r#"{{"i":{i}}}"#).as_bytes()).unwrap();
    }
    let stray = dir.join("writing/01HZZZZZZZZZZZZZZZZZZDEAD0/0-01HZZZZZZZZZZZZZZZZZZZZZZZ-48.crash");
    std::fs::create_dir_all(stray).unwrap();
}

#[test]
fn drain_and_run_deliver_what_they_can_from_a_spool_a_dead_session_left_damaged() {
    let home = Home::new();
    let collector = TestCollector::start(Behaviour::Accept);
    let drained = home.dir.path().join("drained");
    damaged_spool(&drained, 5);
    let mut drain = home.lastword(&["drain", "--deadline", "20s", "--url", &collector.url(), "--spool"]);
    drain.arg(&drained).env("LASTWORD_TOKEN", TOKEN);
    let out = drain.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("recovered 1 dead session ("), "says what it recovered: {err}");
    assert!(err.contains("quarantined 1 damaged file (lastword ls --state quarantined)"), "{err}");
    let recovery = err.lines().find(|l| l.starts_with("lastword: spool ")).unwrap_or_default();
    assert!(!recovery.contains("skipped"), "nothing was skipped, and it says nothing about it: {err}");
    assert_eq!(collector.stored_ids().len(), 5);
    let left = SpoolView::open(&drained).unwrap().list().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].state, EntryState::Quarantined);

    let ran = home.dir.path().join("ran");
    damaged_spool(&ran, 3);
    let mut run = home.lastword(&["run", "--grace", "1s", "--url", &collector.url(), "--spool"]);
    run.arg(&ran).env("LASTWORD_TOKEN", TOKEN);
    let child = run.spawn().unwrap();
    collector.wait_for(Duration::from_secs(20), "the run's entries", |r| r.stored.len() == 8);
    sigterm(&child);
    let out = wait_exit(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("quarantined 1 damaged file"), "{}", stderr(&out));
}

#[test]
fn the_spool_given_wins_over_the_apps_default_and_run_and_drain_say_which_spool_they_drain() {
    let home = Home::new();
    let collector = TestCollector::start(Behaviour::Accept);
    // The sidecar of README's systemd unit: LASTWORD_SPOOL, and an --app added for hello.
    let given = home.dir.path().join("given");
    Spool::open(&given, SpoolOptions::default()).unwrap().write(Kind::Crash, b"{\"i\":1}").unwrap();
    let drain = |args: &[&str], spool_env: Option<&Path>| {
        let mut c = home.lastword(&["drain", "--deadline", "20s", "--url", &collector.url()]);
        c.args(args).env("LASTWORD_TOKEN", TOKEN);
        if let Some(spool) = spool_env {
            c.env("LASTWORD_SPOOL", spool);
        }
        let out = c.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        err
    };
    let err = drain(&["--app", APP, "--create"], Some(&given));
    assert_eq!(collector.stored_ids().len(), 1, "the spool of LASTWORD_SPOOL was drained: {err}");
    assert_eq!(collector.record.lock().unwrap().hellos[0].app, APP, "--app still names the app in hello");
    assert!(!home.default_spool(APP).exists(), "the app's default spool was not made: {err}");
    assert!(
        err.contains(&format!("lastword: draining spool {} (LASTWORD_SPOOL)\n", given.display())),
        "{err}"
    );

    // --spool wins over LASTWORD_SPOOL; --create says it made the spool.
    let flag = home.dir.path().join("flag");
    let err = drain(&["--app", APP, "--create", "--spool", flag.to_str().unwrap()], Some(&given));
    assert!(
        err.contains(&format!("lastword: draining spool {} (--spool, created)", flag.display())),
        "{err}"
    );
    // Without a spool given, the app's default spool.
    let err = drain(&["--app", APP, "--create"], None);
    let default = home.default_spool(APP);
    assert!(
        err.contains(&format!("draining spool {} (the default spool of --app, created)", default.display())),
        "{err}"
    );
    // The queries find the spool the same way.
    let mut stats = home.lastword(&["stats", "--app", APP]);
    stats.env("LASTWORD_SPOOL", &given);
    let out = stats.output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.starts_with(&format!("spool {}\n", given.display())), "{shown}{}", stderr(&out));
}

#[test]
fn apps_are_listed_by_the_names_app_takes_and_a_long_name_has_a_default_spool_too() {
    let home = Home::new();
    let long: String = std::iter::repeat_n('漢', 90).collect();
    for app in ["my app", long.as_str()] {
        run_app(&home, app);
        let out = home.lastword(&["ls", "--json", "--app", app]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{app}: {}", stderr(&out));
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{app}: the app's crash: {listed}");
    }
    let out = home.lastword(&["ls", "--app", "my-app"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("\"my app\""), "named as --app takes it: {err}");
    assert!(!err.contains("%20"), "{err}");
    // A long name is shown as much as its directory keeps of it: 11 of its 90 characters.
    let shown: String = std::iter::repeat_n('漢', 11).collect();
    assert!(err.contains(&format!("\"{shown}…\"")), "{err}");
}
