//! `lastword run` (drain continuously until SIGTERM/SIGINT) and `lastword drain` (deliver what is
//! there now and exit).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use lastword::spool::Spool;
use lastword::upload::{DiagnosticLevel, FlushError, Summary, Uploader, UploaderConfig};

use crate::exit;
use crate::spool_arg::UploadSpoolArgs;

/// How to reach the collector; shared by `run` and `drain`.
#[derive(Args, Debug, Clone)]
pub struct UploadArgs {
    #[command(flatten)]
    spool: UploadSpoolArgs,
    /// Collector URL, ws://HOST:PORT/PATH or wss://HOST:PORT/PATH, the port written out (repeat, or a
    /// comma-separated list, for failover; spaces around the URLs are ignored).
    #[arg(
        long = "url",
        env = "LASTWORD_URL",
        value_delimiter = ',',
        required = true,
        value_parser = lastword_agent::cli::collector_url
    )]
    urls: Vec<String>,
    /// File holding the bearer token (first line). Takes precedence over LASTWORD_TOKEN.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The bearer token itself; prefer --token-file (a command line is visible to other users).
    #[arg(long = "token", env = "LASTWORD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How many reports may be claimed and unanswered at once (the N of the reliability promise;
    /// also capped by the collector's max_in_flight).
    #[arg(long, default_value_t = 1024, value_parser = lastword_agent::cli::window)]
    window: usize,
    /// PEM file of extra CA certificates to trust for wss://.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// `lastword run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    upload: UploadArgs,
    /// After SIGTERM or SIGINT, how long to wait for answers to reports in flight.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

/// `lastword drain`.
#[derive(Args, Debug)]
pub struct DrainArgs {
    #[command(flatten)]
    upload: UploadArgs,
    /// Give up delivering after this long (then the shutdown phases run, bounded by --grace).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    deadline: Duration,
    /// After the deadline, how long to wait for answers to reports in flight.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

fn start(args: &UploadArgs, verbose: u8) -> Result<(Spool, Uploader)> {
    let (spool, spool_path) = args.spool.open(verbose)?;
    let token = match &args.token_file {
        Some(file) => {
            let token = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the token file {}", file.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            // Not "no token": the collector would refuse every connection.
            if token.is_empty() {
                bail!("the token file {} is empty (the token is its first line)", file.display());
            }
            Some(token)
        }
        None => args.token.clone(),
    };
    // Reports carry their own app in their body; hello names the app of --app, if any.
    let app = args.spool.app().unwrap_or_else(|| "unknown".into());
    let mut config = UploaderConfig::new(args.urls.clone(), app).window(args.window);
    config.token = token.filter(|t| !t.is_empty());
    config.host = lastword::host_name();
    config.ca_file = args.ca_file.clone();
    config.agent.name = "lastword-agent".into();
    config.prepare = Some(lastword::prepare_for_upload(&spool_path));
    let min_level = match verbose {
        0 => DiagnosticLevel::Warn,
        1 => DiagnosticLevel::Info,
        _ => DiagnosticLevel::Debug,
    };
    config.diagnostics = Some(Arc::new(move |level, message: &str| {
        // A configuration error ends the command with its own line (see `misconfigured`).
        if level != DiagnosticLevel::Error && level <= min_level {
            eprintln!("lastword: {message}");
        }
    }));
    let uploader = Uploader::start(spool.clone(), config).context("cannot start the uploader")?;
    Ok((spool, uploader))
}

fn report(summary: &Summary) {
    eprintln!(
        "lastword: delivered {} ({} duplicates), skipped {}, quarantined {}, deferred {}, put back {}{}",
        summary.delivered,
        summary.duplicates,
        summary.skipped,
        summary.quarantined,
        summary.deferred,
        summary.put_back,
        if summary.incomplete { " (shutdown incomplete)" } else { "" }
    );
}

/// A configuration error ends `run` and `drain` with exit 1 and one line (nothing was claimed: the
/// uploader never connected), instead of retrying until a deadline or a signal.
fn misconfigured(uploader: Uploader, reason: &str) -> anyhow::Error {
    let _ = uploader.shutdown(Duration::ZERO);
    anyhow::anyhow!("configuration error: {reason}")
}

fn code(summary: &Summary) -> u8 {
    if summary.all_delivered() { exit::OK } else { exit::PUT_BACK }
}

/// Runs the sidecar until SIGTERM or SIGINT, then the shutdown phases.
pub fn run(args: &RunArgs, verbose: u8) -> Result<u8> {
    let (_spool, uploader) = start(&args.upload, verbose)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let misconfigured_now = uploader.misconfigured();
    let signal = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok::<_, std::io::Error>(Ok("SIGTERM")),
            _ = int.recv() => Ok(Ok("SIGINT")),
            reason = misconfigured_now => Ok(Err(reason)),
        }
    })?;
    let signal = match signal {
        Ok(signal) => signal,
        Err(reason) => return Err(misconfigured(uploader, &reason)),
    };
    if verbose > 0 {
        eprintln!("lastword: {signal}: shutting down (grace {:?})", args.grace);
    }
    let summary = uploader.shutdown(args.grace);
    report(&summary);
    Ok(code(&summary))
}

/// Delivers what is in the spool now, then exits.
pub fn drain(args: &DrainArgs, verbose: u8) -> Result<u8> {
    let (spool, uploader) = start(&args.upload, verbose)?;
    let tty = std::io::stderr().is_terminal();
    let done = std::sync::atomic::AtomicBool::new(false);
    let flushed = std::thread::scope(|scope| {
        if tty {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let p = uploader.progress();
                    eprint!("\rlastword: delivered {}, {} waiting    ", p.delivered, spool.ready_count());
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
        let result = uploader.flush(args.deadline);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        result
    });
    if tty {
        eprintln!();
    }
    if let Err(FlushError::Misconfigured(reason)) = &flushed {
        return Err(misconfigured(uploader, reason));
    }
    let summary = uploader.shutdown(args.grace);
    report(&summary);
    match flushed {
        Ok(()) => Ok(code(&summary)),
        // The deadline passed (or the uploader stopped) with entries left: `retry_later` answers and
        // an unreachable collector are waited out until the deadline. Entries the collector deferred
        // are among those left, not put back.
        Err(_) if summary.all_answered() => {
            let left =
                spool.view().stats().map(|s| s.totals.values().map(|c| c.entries).sum::<u64>()).unwrap_or(0);
            eprintln!("lastword: the deadline passed with {left} entries left in the spool");
            Ok(exit::NOT_DRAINED)
        }
        Err(_) => Ok(exit::PUT_BACK),
    }
}
