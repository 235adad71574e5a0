//! `lastword demo`: the whole job on embedded defaults, in a few seconds. A collector with a SQLite
//! store in a temporary directory (or `--dir`, kept and reused), the example application (a real
//! separate process: this binary, run as `lastword demo-app`) that logs, panics in a thread and dies
//! of a real SIGSEGV, the sidecar that delivers its reports, and the collector's answer: each report
//! stored once, crashes symbolized. It prints its collector's URL and token, so that an application of
//! the user's can report to it too.
//!
//! The collector's web UI serves the same store next to it, on a free loopback port (open, loopback
//! only); the demo prints its address (`web UI on http://127.0.0.1:PORT/`). Without `--serve` both stop
//! after the summary and the demo exits; with `--serve` they keep running until SIGINT (Ctrl-C) or
//! SIGTERM, then stop gracefully. Either way the exit code is the demo's verdict: 0 only if every
//! report the application wrote reached the store once.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use lastword::spool::{EntryId, EntryState, SpoolView};
use lastword_collector::crash_view::CrashView;
use lastword_collector::server::{self as collect, Config, Limits, Tokens};
use lastword_collector::store::SqliteStore;
use lastword_collector::ui::{self, Access};
use tokio_util::sync::CancellationToken;

use crate::exit;

/// `lastword demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Work in this directory instead of a new one under the temporary directory. It is kept
    /// afterwards, so that you can look at the spool and the store; give it again to run the demo on
    /// the same spool and store (the reports accumulate, the collector keeps its token).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// After the summary, keep the collector and its web UI running, to look at the reports in a
    /// browser, until Ctrl-C (SIGINT) or SIGTERM. The exit code is still the demo's verdict.
    #[arg(long)]
    serve: bool,
}

fn step(n: u32, text: &str) {
    println!("\n[{n}/6] {text}");
}

/// Runs the demo; exit code 0 only if every report the application wrote reached the store once. With
/// `--serve`, returns only after SIGINT or SIGTERM, once the collector and the web UI have stopped.
pub fn demo(args: &DemoArgs) -> Result<u8> {
    let work = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("lastword-demo-{}", EntryId::generate())),
    };
    let again = work.join(TOKEN_FILE).is_file();
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let spool = work.join("spool");
    let store_dir = work.join("store");
    let token = demo_token(&work)?;
    if again {
        println!("lastword demo: working in {} again (its spool and store are kept)", work.display());
    } else {
        println!("lastword demo: working in {}", work.display());
    }

    step(1, "starting the collector (SQLite store, a free loopback port) and its web UI (another one)");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // Stops both the collector and the web UI; each waits for it, neither is dropped halfway.
    let stop = CancellationToken::new();
    let store = SqliteStore::open(&store_dir)?;
    // The UI reads the store on a read-only connection of its own, never the collector's.
    let ui_store = store.reader()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("ws://{}/ingest", listener.local_addr()?);
    let ui_listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let ui_url = format!("http://{}/", ui_listener.local_addr()?);
    // Open to anyone who can connect, which on loopback is this machine only.
    let access = Access::for_addr(ui_listener.local_addr()?, None)?;
    let config = Config {
        tokens: Tokens::from_list([token.clone()]),
        tls: None,
        limits: Limits::default(),
        symbols: None,
    };
    let server = runtime.spawn(collect::run(listener, config, store, stop.clone().cancelled_owned()));
    let web = runtime.spawn(ui::serve(ui_listener, ui_store, access, stop.clone().cancelled_owned()));
    println!("      collector listening on {url}, store in {}", store_dir.display());
    println!("      its token: {token} (also in {})", work.join(TOKEN_FILE).display());
    println!("      web UI on {ui_url}");

    step(2, "running the example application: it logs, panics in a thread, then dies of SIGSEGV");
    // The application is this binary, as a separate process (`lastword demo-app`): the one build of
    // `lastword` is everything the demo runs.
    let me = std::env::current_exe().context("cannot find the lastword binary")?;
    let out = Command::new(&me)
        .arg(DEMO_APP_COMMAND)
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} {DEMO_APP_COMMAND}", me.display()))?;
    for line in String::from_utf8_lossy(&out.stderr).lines().filter(|l| !l.trim().is_empty()).take(3) {
        println!("      app: {line}");
    }
    println!("      the application ended: {}", describe(out.status));

    step(3, "what landed in the spool (durable before the crashing code went on)");
    let listed = SpoolView::open(&spool)?.list()?;
    let ids: Vec<EntryId> = listed.iter().filter_map(|e| e.id).collect();
    for e in &listed {
        println!(
            "      {}  {:<5}  {:<11}  {} bytes",
            e.id.map_or_else(|| e.file_name.clone(), |i| i.to_string()),
            e.kind.map_or("?", |k| k.as_str()),
            e.state.as_str(),
            e.size
        );
    }
    if ids.is_empty() {
        bail!("the application wrote nothing to the spool");
    }

    step(4, "the sidecar drains the spool to the collector (`lastword drain`)");
    let drain = Command::new(&me)
        .args(["drain", "--deadline", "20s", "--app", "lastword-demo"])
        .arg("--spool")
        .arg(&spool)
        .args(["--url", &url])
        .env("LASTWORD_TOKEN", &token)
        .output()
        .context("cannot run lastword drain")?;
    for line in String::from_utf8_lossy(&drain.stderr).lines() {
        println!("      {line}");
    }
    println!("      lastword drain exited {}", describe(drain.status));
    let left = SpoolView::open(&spool)?.list()?.iter().filter(|e| e.state != EntryState::Quarantined).count();
    println!("      entries left in the spool: {left}");

    step(5, "what the collector stored");
    let stored: serde_json::Value = query(&me, &store_dir, &["reports", "--limit", "1000"])?;
    let stored = stored.as_array().cloned().unwrap_or_default();
    let mut all_once = true;
    for id in &ids {
        let copies = stored.iter().filter(|r| r["id"] == id.to_string()).count();
        all_once &= copies == 1;
        let row = stored.iter().find(|r| r["id"] == id.to_string());
        let field = |name: &str| row.and_then(|r| r[name].as_str()).unwrap_or("-").to_owned();
        println!("      {id}  {:<5}  app {}  stored {copies} time(s)", field("kind"), field("app"));
    }
    // This run's crashes (a reused --dir holds earlier runs' too).
    let this_run = |r: &&serde_json::Value| ids.iter().any(|id| r["id"] == id.to_string());
    for report in stored.iter().filter(this_run).filter(|r| r["kind"] == "crash") {
        let id = report["id"].as_str().unwrap_or_default();
        let full: serde_json::Value = query(&me, &store_dir, &["show", id])?;
        // The same reading as `lastword store show` gives, indented under the step.
        match CrashView::from_json(&full["body"]) {
            Some(view) => {
                println!("\n      crash {id}:");
                for line in view.to_text(false).lines() {
                    println!("{}", if line.is_empty() { String::new() } else { format!("        {line}") });
                }
            }
            None => println!("\n      crash {id}: (its body does not read as a crash report)"),
        }
    }

    step(6, "look for yourself");
    let spool_s = spool.display();
    let store_s = store_dir.display();
    println!("      the spool:  {spool_s}");
    println!("      the store:  {store_s}");
    println!("      lastword ls --spool {spool_s}");
    println!("      lastword stats --spool {spool_s}");
    println!("      lastword store groups --store {store_s}");
    println!("      lastword store reports --store {store_s}");
    if let Some(id) =
        stored.iter().filter(this_run).find(|r| r["kind"] == "crash").and_then(|r| r["id"].as_str())
    {
        println!("      lastword store show {id} --store {store_s}");
    }
    println!("      again, on the same spool and store: lastword demo --dir {}", work.display());
    if args.serve {
        println!("      in a browser: {ui_url} (the crash groups, the reports, the logs)");
    } else {
        println!(
            "      in a browser: rerun with --serve (`lastword demo --serve`) to keep the collector and"
        );
        println!("      its web UI running after the summary, then open the web UI's address it prints");
    }
    let ok = all_once && left == 0 && drain.status.code() == Some(0);
    println!(
        "\n{}",
        if ok { "every report arrived, once." } else { "NOT every report arrived once: see above." }
    );

    if args.serve {
        // The handlers first: a SIGTERM right after the line below must find them in place.
        let signalled = runtime.block_on(async { crate::collect_cmd::shutdown_signal("lastword demo") })?;
        println!(
            "\nserving the collector on {url} and the web UI on {ui_url} until Ctrl-C (SIGINT) or SIGTERM"
        );
        println!("point an application of yours at this collector:");
        println!("      LASTWORD_URL={url} LASTWORD_TOKEN={token} your-app");
        runtime.block_on(signalled);
    }
    stop.cancel();
    runtime.block_on(server).context("the collector task failed")??;
    runtime.block_on(web).context("the web UI task failed")?.context("the web UI failed")?;
    if args.serve {
        println!("stopped: the collector answered everything it received; the store is kept in {store_s}");
    }
    Ok(if ok { exit::OK } else { exit::ERROR })
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("with code {c}"),
        (None, Some(11)) => "killed by SIGSEGV".into(),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "?".into(),
    }
}

fn query(me: &Path, store: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(me).arg("store").args(args).arg("--store").arg(store).arg("--json").output()?;
    if !out.status.success() {
        bail!("lastword store {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("cannot read lastword store's JSON")
}

/// The hidden command of the `lastword` binary that runs the example application
/// (`lastword_agent::demo_app`).
pub const DEMO_APP_COMMAND: &str = "demo-app";

/// The file in the demo's directory that keeps its collector's token, so that a second run on the
/// same directory serves the applications pointed at the first one.
const TOKEN_FILE: &str = "token";

/// The demo collector's token: the one kept in `work`, or a new random one, kept there (mode 0600).
fn demo_token(work: &Path) -> Result<String> {
    let path = work.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let token = EntryId::generate().to_string();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{token}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}
