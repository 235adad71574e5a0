//! README.md's systemd unit, run the way it says: the sidecar as the unit's `User=` (here `nobody`,
//! standing for `my-app`; root if the unit named none) with the unit's environment and command line,
//! then the application as its user on the same `LASTWORD_SPOOL`: its `init` succeeds on the spool
//! the sidecar made, and its crash reaches the collector. (A sidecar run as root makes a root-owned
//! spool that the application refuses: no capture at all.) Needs root, for `setpriv`.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

const BIN: &str = env!("CARGO_BIN_EXE_lastword");
/// Set in a child: it plays the application.
const ROLE_ENV: &str = "LASTWORD_TEST_README_APP";
/// The user the test runs the unit's `User=` as.
const NOBODY: u32 = 65534;

/// What the unit in README.md says.
struct Unit {
    user: Option<String>,
    env: Vec<(String, String)>,
    exec: Vec<String>,
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

fn unit() -> Unit {
    let readme = readme();
    let start = readme.find("# /etc/systemd/system/").expect("README shows a systemd unit");
    let block = &readme[start..readme[start..].find("```").map_or(readme.len(), |end| start + end)];
    let mut unit = Unit { user: None, env: Vec::new(), exec: Vec::new() };
    for line in block.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        if let Some(user) = line.strip_prefix("User=") {
            unit.user = Some(user.to_owned());
        } else if let Some(pair) = line.strip_prefix("Environment=") {
            let (k, v) = pair.split_once('=').expect("Environment=NAME=VALUE");
            unit.env.push((k.to_owned(), v.to_owned()));
        } else if let Some(exec) = line.strip_prefix("ExecStart=") {
            unit.exec = exec.split_whitespace().map(str::to_owned).collect();
        }
    }
    unit
}

/// The entry point of the child application; passes at once in an ordinary test run.
#[test]
fn child_application() {
    if std::env::var_os(ROLE_ENV).is_none() {
        return;
    }
    let guard = lastword::init(lastword::Config::new("my-app").no_url().signals(false));
    let _guard = guard.unwrap_or_else(|e| {
        eprintln!("init failed: {e}");
        std::process::exit(70)
    });
    let joined = std::thread::spawn(|| panic!("boom in my-app")).join();
    assert!(joined.is_err());
}

/// `program` as uid and gid `NOBODY`, with an environment of its own.
fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"), "--clear-groups".into()])
        .arg(program)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null());
    c
}

/// A child, killed on drop if it still runs.
struct Running(Option<Child>);

impl Running {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Waits at most 30 s for the child to exit.
    fn output(mut self) -> std::process::Output {
        let mut child = self.0.take().unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("did not exit within 30 s: {:?}", child.wait_with_output().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "waited 30 s for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn readmes_systemd_unit_runs_the_sidecar_as_the_applications_user_on_the_applications_spool() {
    let unit = unit();
    // The application runs as its own user (nobody here); the sidecar as the unit's User=, which
    // stands for the same user, and as root when the unit names none.
    let as_the_unit = unit.user.as_deref().is_some_and(|u| u != "root");
    let spool_setting = unit.env.iter().find(|(k, _)| k == "LASTWORD_SPOOL").expect("the unit names a spool");
    assert!(unit.exec.first().is_some_and(|p| p.ends_with("/lastword")), "{:?}", unit.exec);

    // The unit's directories, under a temporary one that the unit's user owns (StateDirectory=).
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = base.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    let spool = state.join(Path::new(&spool_setting.1).file_name().unwrap());
    let token = base.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let collector = TestCollector::start(Behaviour::Accept);

    let mut sidecar = if as_the_unit { as_nobody(Path::new(BIN)) } else { Command::new(BIN) };
    let mut args = unit.exec[1..].iter();
    while let Some(arg) = args.next() {
        sidecar.arg(arg);
        if arg == "--token-file" {
            args.next();
            sidecar.arg(&token);
        }
    }
    for (k, v) in &unit.env {
        let v: PathBuf = match k.as_str() {
            "LASTWORD_SPOOL" => spool.clone(),
            "LASTWORD_URL" => collector.url().into(),
            _ => v.into(),
        };
        sidecar.env(k, v);
    }
    let sidecar = Running(Some(sidecar.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()));
    wait_for("the sidecar to make the spool", || spool.join("VERSION").is_file());

    let mut app = as_nobody(&std::env::current_exe().unwrap());
    app.args(["--exact", "child_application", "--nocapture", "-q"])
        .env(ROLE_ENV, "1")
        .env("LASTWORD_SPOOL", &spool)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = app.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the application's init takes the sidecar's spool: {err}");
    collector.wait_for(Duration::from_secs(30), "the application's crash", |r| r.stored.len() == 1);

    let status = Command::new("kill").args(["-TERM", &sidecar.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = sidecar.output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("draining spool {} (LASTWORD_SPOOL, created)", spool.display())), "{err}");
    assert!(
        readme().contains("Give the application the same `LASTWORD_SPOOL`"),
        "README tells that the application must be given the unit's spool"
    );
}
