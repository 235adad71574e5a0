//! `lastword collect` and `lastword store`: run the reference collector, query its store.

use std::io::Write as _;

use anyhow::Context as _;
use lastword_agent::collect::{self, CollectArgs, query::StoreArgs};

/// Runs the collector until SIGINT or SIGTERM.
pub fn collect_command(args: CollectArgs) -> anyhow::Result<()> {
    let env_tokens = std::env::var("LASTWORD_TOKENS").ok();
    let config = args.config(env_tokens.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = args.store.open().await?;
        // Signal handlers first: a SIGTERM right after the listening line must find them in place.
        let shutdown = shutdown_signal()?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if config.tls.is_some() { "wss" } else { "ws" };
        if config.tls.is_none() {
            eprintln!(
                "lastword collect: serving ws:// without TLS: tokens and reports cross the network in clear \
                 text (give --tls-cert and --tls-key for wss://)"
            );
        }
        eprintln!("lastword collect: store {}", args.store);
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {scheme}://{addr}/ingest")?;
        stdout.flush()?;
        drop(stdout);
        collect::run(listener, config, store, shutdown).await?;
        eprintln!("lastword collect: stopped; everything received was answered");
        Ok(())
    })
}

/// Completes on the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("lastword collect: shutting down");
    })
}

/// Answers one query on a store.
pub fn store_command(args: StoreArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut stdout = std::io::stdout().lock();
        collect::query::run(args, &mut stdout).await?;
        stdout.flush()?;
        Ok(())
    })
}
