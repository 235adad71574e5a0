//! `lastword collect` and `lastword store`: run the reference collector, query its store.

use std::io::Write as _;

use anyhow::Context as _;
use lastword_agent::collect::{self, CollectArgs, query::StoreArgs};
use lastword_agent::ui::{self, Access, AnyUiStore, UiArgs};
use tokio_util::sync::CancellationToken;

/// The arguments of `lastword collect`: the collector's and its web UI's.
#[derive(Clone, Debug, clap::Args)]
pub struct CollectCommand {
    #[command(flatten)]
    collect: CollectArgs,
    #[command(flatten)]
    ui: UiArgs,
}

/// Runs the collector (and its web UI, with `--ui`) until SIGINT or SIGTERM.
pub fn collect_command(CollectCommand { collect: args, ui: ui_args }: CollectCommand) -> anyhow::Result<()> {
    let env_tokens = std::env::var("LASTWORD_TOKENS").ok();
    let config = args.config(env_tokens.as_deref())?;
    let ui_token =
        Access::load_token(ui_args.ui_token_file.as_deref(), std::env::var(ui::TOKEN_ENV).ok().as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = args.store.open().await?;
        // Signal handlers first: a SIGTERM right after the listening line must find them in place.
        let shutdown = shutdown_signal("lastword collect")?;
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
        let stop = CancellationToken::new();
        let web = match &ui_args.ui {
            Some(ui_addr) => {
                let ui_listener = tokio::net::TcpListener::bind(ui_addr)
                    .await
                    .with_context(|| format!("cannot listen on {ui_addr} for the web UI"))?;
                let ui_bound = ui_listener.local_addr()?;
                let access = Access::for_addr(ui_bound, ui_token)?;
                match access {
                    Access::Open => eprintln!("lastword collect: web UI open to anyone on loopback"),
                    Access::Token(_) => eprintln!(
                        "lastword collect: web UI requires a login (the UI token, as HTTP basic auth password \
                         or through /login); served without TLS"
                    ),
                }
                // Its own read-only connection (SQLite) or pool (PostgreSQL): never the collector's.
                let ui_store = AnyUiStore::for_store(&store).await?;
                let stopped = stop.clone().cancelled_owned();
                let server = tokio::spawn(ui::serve(ui_listener, ui_store, access, stopped));
                Some((ui_bound, server))
            }
            None => None,
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {scheme}://{addr}/ingest")?;
        if let Some((ui_bound, _)) = &web {
            writeln!(stdout, "web UI on http://{ui_bound}/")?;
        }
        stdout.flush()?;
        drop(stdout);
        let stopping = stop.clone();
        let result = collect::run(listener, config, store, async move {
            shutdown.await;
            stopping.cancel();
        })
        .await;
        // The UI stops with the collector, whatever ended it.
        stop.cancel();
        if let Some((_, server)) = web {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("lastword collect: the web UI failed: {e}"),
                Err(e) => eprintln!("lastword collect: the web UI failed: {e}"),
            }
        }
        result?;
        eprintln!("lastword collect: stopped; everything received was answered");
        Ok(())
    })
}

/// Completes on the first SIGINT or SIGTERM, and then says on stderr that `who` is shutting down. The
/// handlers are in place when this returns (it must be called inside a tokio runtime); from then on
/// neither signal ends the process by itself.
pub(crate) fn shutdown_signal(who: &'static str) -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("{who}: shutting down");
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
