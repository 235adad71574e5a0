//! `lastword collect` and `lastword store`: run the reference collector, query its store.

use std::io::Write as _;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use lastword_collector::query::{self, Format, Query};
use lastword_collector::server::{self, CollectError, Config, Limits, Tokens, tls_server_config};
use lastword_collector::store::{GroupFilter, ReportFilter, StoreLocation};
use lastword_collector::symbolize::Symbols;
use lastword_collector::ui::{self, Access};
use lastword_spool::{EntryId, Kind};
use tokio_util::sync::CancellationToken;

/// The arguments of `lastword collect`.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = "Tokens: --token-file (one a line, # comments) and/or the environment variable \
LASTWORD_TOKENS (comma-separated). At least one is required.\n\nThe first line on stdout is \
`listening on ws://ADDR/ingest` (or wss://) with the address actually bound (use port 0 to let the OS \
choose). SIGINT or SIGTERM: stop accepting, commit and answer what was received, close every connection \
with 1001, exit 0.")]
pub struct CollectArgs {
    /// Address and port to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8700", value_parser = lastword_agent::cli::listen_addr)]
    pub listen: String,
    /// The store: a directory (created if missing; the data is DIR/lastword.sqlite), or a
    /// postgres://user@host/db URL of a database that several collectors may share (schema created or
    /// migrated at start). TLS to it by libpq's ?sslmode=disable|prefer|require|verify-ca|verify-full
    /// (default prefer) and &sslrootcert=FILE (PEM roots; default the system's).
    #[arg(long, value_name = "DIR|URL", env = "LASTWORD_STORE")]
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub store: String,
    /// File of accepted bearer tokens, one a line.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain: serve wss:// (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Limits and batching.
    #[command(flatten)]
    pub limits: LimitsArgs,
}

impl CollectArgs {
    /// The configuration these arguments describe; `env_tokens` is the value of `LASTWORD_TOKENS`.
    /// Reads the token and TLS files.
    pub fn config(&self, env_tokens: Option<&str>) -> Result<Config, CollectError> {
        let limits = self.limits.to_limits();
        limits.validate()?;
        let tokens = Tokens::load(self.token_file.as_deref(), env_tokens)?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(tls_server_config(cert, key)?),
            _ => None,
        };
        Ok(Config { tokens, tls, limits, symbols: None })
    }
}

/// The collector's limits and batching on the command line ([`Limits`]).
#[derive(Clone, Debug, clap::Args)]
pub struct LimitsArgs {
    /// Longest report message read and stored; longer ones up to twice this are answered
    /// rejected/too_large, beyond that the connection is closed (1009).
    #[arg(long, default_value_t = server::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Longest body a compressed report may inflate to (stated in the welcome); longer ones are
    /// answered rejected/too_large. At least --max-message-bytes, at most --queue-bytes.
    #[arg(long, default_value_t = server::DEFAULT_MAX_INFLATED_BYTES)]
    pub max_inflated_bytes: usize,
    /// Authenticated sessions served at once (counted from an upgrade request with a valid token); the
    /// next one is refused with HTTP 503.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections in their unauthenticated part (TLS and websocket handshakes) at once; one more is
    /// closed at once. Each takes a file descriptor: keep it and --max-connections under `ulimit -n`.
    #[arg(long, default_value_t = server::DEFAULT_MAX_HANDSHAKES)]
    pub max_handshakes: usize,
    /// Reports a connection may have unanswered; one more closes it (1008).
    #[arg(long, default_value_t = server::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: u32,
    /// Time from TCP accept to the end of the TLS and websocket handshakes (the unauthenticated part).
    #[arg(long, default_value_t = server::DEFAULT_HANDSHAKE_TIMEOUT_MS)]
    pub handshake_timeout_ms: u64,
    /// Time from the handshake to the hello (4408 after it).
    #[arg(long, default_value_t = server::DEFAULT_STEP_TIMEOUT_MS)]
    pub hello_timeout_ms: u64,
    /// A connection on which nothing (no message, no ping) arrives for this long is closed (4408).
    #[arg(long, default_value_t = server::DEFAULT_IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,
    /// Time allowed to hand answers to a peer that does not read; after it the connection is dropped.
    #[arg(long, default_value_t = server::DEFAULT_STEP_TIMEOUT_MS)]
    pub write_timeout_ms: u64,
    /// Bytes a connection may have waiting to be written.
    #[arg(long, default_value_t = server::DEFAULT_MAX_WRITE_BUFFER_BYTES)]
    pub max_write_buffer_bytes: usize,
    /// Most reports committed in one transaction.
    #[arg(long, default_value_t = server::DEFAULT_BATCH_MAX)]
    pub batch_max: usize,
    /// Bytes of report bodies waiting for the store, all connections together; beyond it reports are
    /// answered retry_later.
    #[arg(long, default_value_t = server::DEFAULT_QUEUE_BYTES)]
    pub queue_bytes: usize,
    /// The delay asked for in retry_later answers.
    #[arg(long, default_value_t = server::DEFAULT_RETRY_DELAY_MS)]
    pub retry_delay_ms: u64,
}

impl LimitsArgs {
    /// The limits these flags give.
    pub fn to_limits(&self) -> Limits {
        let Self {
            max_message_bytes,
            max_inflated_bytes,
            max_connections,
            max_handshakes,
            max_in_flight,
            handshake_timeout_ms,
            hello_timeout_ms,
            idle_timeout_ms,
            write_timeout_ms,
            max_write_buffer_bytes,
            batch_max,
            queue_bytes,
            retry_delay_ms,
        } = *self;
        Limits {
            max_message_bytes,
            max_inflated_bytes,
            max_connections,
            max_handshakes,
            max_in_flight,
            handshake_timeout_ms,
            hello_timeout_ms,
            idle_timeout_ms,
            write_timeout_ms,
            max_write_buffer_bytes,
            batch_max,
            queue_bytes,
            retry_delay_ms,
        }
    }
}

/// The arguments of `lastword collect` about the UI.
#[derive(Clone, Debug, clap::Args)]
pub struct UiArgs {
    /// Serve the read-only web UI on this address (e.g. 127.0.0.1:8701). Off loopback it requires a
    /// login: a token from --ui-token-file or LASTWORD_UI_TOKEN.
    #[arg(long, value_name = "ADDR", value_parser = lastword_agent::cli::listen_addr)]
    pub ui: Option<String>,
    /// File whose first line (not empty, not a # comment) is the UI token.
    #[arg(long, value_name = "FILE")]
    pub ui_token_file: Option<PathBuf>,
    /// A host name people reach the UI by (NAME or NAME:PORT; without a port, any port), besides IP
    /// addresses and localhost with the bound port; requests for any other name get 421 (DNS
    /// rebinding). Repeatable.
    #[arg(long, value_name = "NAME")]
    pub ui_host: Vec<String>,
    /// PEM certificate chain: serve the UI over HTTPS (needs --ui-tls-key).
    #[arg(long, value_name = "FILE", requires = "ui_tls_key")]
    pub ui_tls_cert: Option<PathBuf>,
    /// PEM private key of --ui-tls-cert.
    #[arg(long, value_name = "FILE", requires = "ui_tls_cert")]
    pub ui_tls_key: Option<PathBuf>,
    /// The UI's limits.
    #[command(flatten)]
    pub limits: UiLimitsArgs,
}

/// The web UI's limits on the command line ([`ui::UiLimits`]; SECURITY.md lists them).
#[derive(Clone, Debug, clap::Args)]
pub struct UiLimitsArgs {
    /// Time a client has to send a request's head (and to finish a TLS handshake), from its connection
    /// or the end of its previous request; then the connection is closed.
    #[arg(long, default_value_t = ui::DEFAULT_HEADER_TIMEOUT_MS)]
    pub ui_header_timeout_ms: u64,
    /// Connections to the UI open at once; one more is closed as soon as it is accepted.
    #[arg(long, default_value_t = ui::DEFAULT_MAX_CONNECTIONS)]
    pub ui_max_connections: usize,
    /// Connections to the UI open at once from one client address; one more is closed at once.
    #[arg(long, default_value_t = ui::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)]
    pub ui_max_connections_per_address: usize,
    /// Largest request head (line and headers) read; a larger one gets 431. At least 8192.
    #[arg(long, default_value_t = ui::DEFAULT_MAX_HEAD_BYTES)]
    pub ui_max_head_bytes: usize,
    /// Largest request body read (the login form); a larger one gets 413.
    #[arg(long, default_value_t = ui::DEFAULT_MAX_BODY_BYTES)]
    pub ui_max_body_bytes: usize,
    /// How long a login lasts.
    #[arg(long, default_value_t = ui::DEFAULT_SESSION_TTL_MS)]
    pub ui_session_ttl_ms: u64,
    /// Wrong UI tokens (login form and basic auth) one address may give within
    /// --ui-login-window-ms; past them every token from it gets 429 until the window ends.
    #[arg(long, default_value_t = ui::DEFAULT_LOGIN_FAILURES)]
    pub ui_login_failures: u32,
    /// The window of --ui-login-failures, counted from an address's first wrong token.
    #[arg(long, default_value_t = ui::DEFAULT_LOGIN_WINDOW_MS)]
    pub ui_login_window_ms: u64,
}

impl UiLimitsArgs {
    /// The limits these flags give, checked ([`ui::UiLimits::validate`]).
    pub fn to_limits(&self) -> Result<ui::UiLimits, ui::UiError> {
        let Self {
            ui_header_timeout_ms,
            ui_max_connections,
            ui_max_connections_per_address,
            ui_max_head_bytes,
            ui_max_body_bytes,
            ui_session_ttl_ms,
            ui_login_failures,
            ui_login_window_ms,
        } = *self;
        let limits = ui::UiLimits {
            header_timeout: Duration::from_millis(ui_header_timeout_ms),
            max_connections: ui_max_connections,
            max_connections_per_address: ui_max_connections_per_address,
            max_head_bytes: ui_max_head_bytes,
            max_body_bytes: ui_max_body_bytes,
            session_ttl: Duration::from_millis(ui_session_ttl_ms),
            login_failures: ui_login_failures,
            login_window: Duration::from_millis(ui_login_window_ms),
        };
        limits.validate()?;
        Ok(limits)
    }
}

/// The arguments of `lastword store`.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// What to show.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// Where the store is and how to print.
#[derive(Clone, Debug, clap::Args)]
pub struct Output {
    /// The store, as given to `lastword collect --store`: a directory or a postgres:// URL.
    #[arg(long, value_name = "DIR|URL", env = "LASTWORD_STORE")]
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub store: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The queries.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// List reports, the most recently received first.
    Reports {
        /// Where and how.
        #[command(flatten)]
        output: Output,
        /// Only this application's.
        #[arg(long)]
        app: Option<String>,
        /// Only this kind (crash, event or log).
        #[arg(long)]
        kind: Option<Kind>,
        /// Only the crashes (or events) of this group.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Only reports whose scope has this tag.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_tag)]
        tag: Option<(String, String)>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// List groups (one application's crashes, or events, with one fingerprint) with their kind and
    /// counts, the most recently seen first.
    Groups {
        /// Where and how.
        #[command(flatten)]
        output: Output,
        /// Only this application's.
        #[arg(long)]
        app: Option<String>,
        /// Only groups of this kind (crash or event).
        #[arg(long)]
        kind: Option<Kind>,
        /// Only groups with a report whose scope has this tag.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_tag)]
        tag: Option<(String, String)>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one report: a crash as a readable report (the application's frames first, the others
    /// folded), another kind with its body; `--json` gives the stored row and the raw body.
    Show {
        /// The report id.
        id: EntryId,
        /// Every frame of a crash, not only the application's.
        #[arg(long)]
        all: bool,
        /// Where and how.
        #[command(flatten)]
        output: Output,
    },
    /// Show what each agent (app and host) last said it could not deliver.
    Losses {
        /// Where and how.
        #[command(flatten)]
        output: Output,
    },
}

/// `KEY=VALUE` as a tag (the value may hold `=`; the key may not be empty).
fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl StoreCommand {
    /// Where, how, and what to ask.
    fn into_query(self) -> (Output, Query) {
        match self {
            StoreCommand::Reports { output, app, kind, fingerprint, tag, limit } => {
                (output, Query::Reports(ReportFilter { app, kind, fingerprint, tag, limit }))
            }
            StoreCommand::Groups { output, app, kind, tag, limit } => {
                (output, Query::Groups(GroupFilter { app, kind, tag, limit }))
            }
            StoreCommand::Show { id, all, output } => (output, Query::Show { id, all }),
            StoreCommand::Losses { output } => (output, Query::Losses),
        }
    }
}

/// The arguments of `lastword collect`: the collector's and its web UI's.
#[derive(Clone, Debug, clap::Args)]
pub struct CollectCommand {
    #[command(flatten)]
    collect: CollectArgs,
    #[command(flatten)]
    ui: UiArgs,
    #[command(flatten)]
    debug_files: crate::debug_files_cmd::CollectDebugFilesArgs,
}

/// Runs the collector (and its web UI, with `--ui`) until SIGINT or SIGTERM.
pub fn collect_command(
    CollectCommand { collect: args, ui: ui_args, debug_files: debug_args }: CollectCommand,
) -> anyhow::Result<()> {
    print_collector_diagnostics();
    let env_tokens = std::env::var("LASTWORD_TOKENS").ok();
    let mut config = args.config(env_tokens.as_deref())?;
    let ui_limits = ui_args.limits.to_limits()?;
    let ui_token =
        Access::load_token(ui_args.ui_token_file.as_deref(), std::env::var(ui::TOKEN_ENV).ok().as_deref())?;
    let ui_tls = match (&ui_args.ui_tls_cert, &ui_args.ui_tls_key) {
        (Some(cert), Some(key)) => Some(tls_server_config(cert, key).context("the web UI's TLS")?),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let location = store_location(&args.store)?;
        let store = location.open().await?;
        // Debug files: kept beside the SQLite store, or in the PostgreSQL one with a local cache;
        // the ingest server names reports with them, at ingest and when one arrives.
        let debug_files = debug_args.open(&store)?;
        config.symbols = Some(Symbols::new(debug_files.clone()));
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
        eprintln!("lastword collect: store {location}");
        let stop = CancellationToken::new();
        let web = match &ui_args.ui {
            Some(ui_addr) => {
                let ui_listener = tokio::net::TcpListener::bind(ui_addr)
                    .await
                    .with_context(|| format!("cannot listen on {ui_addr} for the web UI"))?;
                let ui_bound = ui_listener.local_addr()?;
                let access = Access::for_addr(ui_bound, ui_token)?;
                let over = if ui_tls.is_some() { "over TLS" } else { "without TLS" };
                match access {
                    Access::Open => eprintln!("lastword collect: web UI open to anyone on loopback, {over}"),
                    Access::Token(_) => eprintln!(
                        "lastword collect: web UI requires a login (the UI token, as HTTP basic auth password \
                         or through /login); served {over}"
                    ),
                }
                let config = ui::UiConfig {
                    hosts: ui_args.ui_host.clone(),
                    tls: ui_tls,
                    debug_files: Some(debug_args.api(debug_files.clone())?),
                    limits: ui_limits,
                    ..ui::UiConfig::new(access)
                };
                let ui_scheme = if config.tls.is_some() { "https" } else { "http" };
                // Its own read-only connection (SQLite) or pool (PostgreSQL): never the collector's.
                let ui_store = store.reader().await?;
                let stopped = stop.clone().cancelled_owned();
                let server = tokio::spawn(ui::serve_with(ui_listener, ui_store, config, stopped));
                Some((ui_bound, ui_scheme, server))
            }
            None => None,
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {scheme}://{addr}/ingest")?;
        if let Some((ui_bound, ui_scheme, _)) = &web {
            writeln!(stdout, "web UI on {ui_scheme}://{ui_bound}/")?;
        }
        stdout.flush()?;
        drop(stdout);
        let stopping = stop.clone();
        let result = server::run(listener, config, store, async move {
            shutdown.await;
            stopping.cancel();
        })
        .await;
        // The UI stops with the collector, whatever ended it.
        stop.cancel();
        if let Some((_, _, server)) = web {
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

/// What `--store` names. Parsed here rather than by clap, whose message of a refused value repeats
/// the value, password and all.
fn store_location(given: &str) -> anyhow::Result<StoreLocation> {
    Ok(given.parse()?)
}

/// Answers one query on a store.
pub fn store_command(args: StoreArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let (output, query) = args.command.into_query();
        let format = if output.json { Format::Json } else { Format::Table };
        let mut stdout = std::io::stdout().lock();
        query::run(&store_location(&output.store)?, query, format, &mut stdout).await?;
        stdout.flush()?;
        Ok(())
    })
}

/// Prints what the collector reports through `tracing` (a failed accept, a store writer's error, a
/// connection closed for a protocol error) on stderr, one line each, as `lastword collect: MESSAGE`.
/// Installed once, by `lastword collect` only; the collector crate itself never prints.
fn print_collector_diagnostics() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let subscriber = tracing_subscriber::registry().with(StderrLines);
    // Only fails if a subscriber is already set: then that one gets the diagnostics.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The layer of [`print_collector_diagnostics`].
struct StderrLines;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StderrLines {
    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        metadata.target().starts_with("lastword_collector") && *metadata.level() <= tracing::Level::INFO
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        eprintln!("lastword collect: {}", message.0);
    }
}
