//! The `lastword` binary: the sidecar uploader, queries on a spool, and the reference collector.
//! A thin shell over `lastword_collector` (the collector) and `lastword` (the uploader).

mod collect_cmd;
mod debug_files_cmd;
mod demo;
mod exit;
mod inspect;
mod sidecar;
mod spool_arg;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// lastword: crash and log reporting: deliver a spool of reports to a collector, look into a spool,
/// run the collector
///
/// Exit codes: 0 everything it took was delivered; 1 error; 2 usage; 3 some claims were put back into
/// the spool for later; 4 (drain) the deadline passed with entries left.
//
// The first paragraph is the one-line description of `lastword`, `lastword -h` and `lastword --help`
// alike: no `about` attribute (without a value it would take Cargo.toml's description instead), and
// no final period (clap drops it from the short help only).
#[derive(Parser)]
#[command(name = "lastword", version, propagate_version = true)]
struct Cli {
    /// More diagnostics on stderr (-v: steps, -vv: every report).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drain a spool to a collector continuously, until SIGTERM or SIGINT.
    Run(sidecar::RunArgs),
    /// Deliver what is in a spool now, then exit.
    Drain(sidecar::DrainArgs),
    /// List the entries of a spool.
    Ls(inspect::LsArgs),
    /// Show one entry of a spool.
    Show(inspect::ShowArgs),
    /// Count what is in a spool, per state and kind.
    Stats(inspect::StatsArgs),
    /// Delete entries from a spool on purpose.
    Purge(inspect::PurgeArgs),
    /// See the whole job work: a collector, an application that crashes, the sidecar, the store.
    Demo(demo::DemoArgs),
    /// Run the reference collector: receive reports over ws:// or wss:// and store them; with --ui,
    /// serve a read-only web UI of the store.
    // Boxed: its flags (ingest and UI limits, debug files) make it much larger than the other commands.
    Collect(Box<collect_cmd::CollectCommand>),
    /// Debug files: say what an ELF file holds (check), upload them to a collector (upload).
    DebugFiles(debug_files_cmd::DebugFilesArgs),
    /// Query a collector's store: recent reports, crash groups, one report, agents' losses.
    Store(collect_cmd::StoreArgs),
    /// The example application of `lastword demo`, which runs it as a child process: it logs, panics
    /// in a thread, then dies of SIGSEGV.
    #[command(name = demo::DEMO_APP_COMMAND, hide = true)]
    DemoApp,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    let result = match cli.command {
        Command::Run(a) => sidecar::run(&a, cli.verbose),
        Command::Drain(a) => sidecar::drain(&a, cli.verbose),
        Command::Ls(a) => inspect::ls(&a),
        Command::Show(a) => inspect::show(&a),
        Command::Stats(a) => inspect::stats(&a),
        Command::Purge(a) => inspect::purge(&a),
        Command::Demo(a) => demo::demo(&a),
        Command::Collect(a) => collect_cmd::collect_command(*a).map(|()| exit::OK),
        Command::Store(a) => collect_cmd::store_command(a).map(|()| exit::OK),
        Command::DebugFiles(a) => debug_files_cmd::debug_files(a),
        Command::DemoApp => lastword_agent::demo_app::main(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lastword: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}
