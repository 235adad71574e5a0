//! A real browser for the web UI's tests: Debian's headless Chromium loads a page, and either prints
//! the DOM it rendered (`--dump-dom`) or saves a screenshot (`--screenshot`) under
//! [`screenshots_dir`]. If Chromium is missing or cannot start, the caller panics with the command that
//! installs it: a browser test never passes, or skips, without a browser.
//!
//! Synchronous (a child process waited for with a bounded deadline); from async code, call it through
//! `spawn_blocking`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// What to install when it is missing.
pub const INSTALL: &str = "apt-get install -y chromium";
/// How long one page load may take.
const BOUND: Duration = Duration::from_secs(90);

/// `target/ui-screenshots`, beside the test binary's `target/<profile>/deps`; created if missing.
pub fn screenshots_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe.ancestors().nth(3).expect("target/<profile>/deps/<binary>");
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshots directory");
    dir
}

/// Headless Chromium with a profile directory of its own.
#[derive(Debug)]
pub struct Chromium {
    profile: PathBuf,
}

impl Chromium {
    /// A browser whose profile lives in `profile` (a directory of the test's, created on first use).
    /// Panics with the install command if [`CHROMIUM`] is missing.
    pub fn new(profile: impl Into<PathBuf>) -> Self {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing: the browser test needs it; install it with `{INSTALL}`"
        );
        Self { profile: profile.into() }
    }

    /// The DOM Chromium rendered for `url`.
    pub fn dump_dom(&self, url: &str) -> String {
        self.run(&["--dump-dom".into(), url.into()])
    }

    /// Saves a screenshot of `url` at `width`×`height` to `png` (replacing an older one) and checks that
    /// it is not empty.
    pub fn screenshot(&self, url: &str, png: &Path, (width, height): (u32, u32)) {
        let _ = std::fs::remove_file(png);
        self.run(&[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
            url.into(),
        ]);
        let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "the screenshot {} is missing or empty ({size} bytes)", png.display());
    }

    /// Runs Chromium with `args` within [`BOUND`]; its standard output.
    fn run(&self, args: &[String]) -> String {
        let mut child = Command::new(CHROMIUM)
            .args([
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
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM} ({e}); install it with `{INSTALL}`"));
        // Read both pipes on threads of their own: a large DOM must not fill a pipe and stall Chromium.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + BOUND;
        let status = loop {
            match child.try_wait().expect("waiting for chromium") {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{CHROMIUM} did not finish within {BOUND:?}: {args:?}");
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let stdout = stdout.join().expect("the stdout reader");
        let stderr = stderr.join().expect("the stderr reader");
        assert!(
            status.success(),
            "{CHROMIUM} {args:?} failed ({status}): {}",
            String::from_utf8_lossy(&stderr)
        );
        String::from_utf8(stdout).expect("the DOM is UTF-8")
    }
}
