//! A small application that reports handled errors and messages as events, one scenario per run:
//! `lastword-event-app <case>`. The spool is `LASTWORD_SPOOL`; the collector `LASTWORD_URL`. It
//! prints the id of each event it captured, one per line (`event <id>`), for the tests to match.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// An error with a cause, as applications nest them.
#[derive(Debug)]
struct ConfigError {
    path: String,
    source: std::num::ParseIntError,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad port in {}", self.path)
    }
}

impl Error for ConfigError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// The application's own function that meets the error (an in-app frame of the event).
#[inline(never)]
fn load_config(n: u32) -> lastword::spool::EntryId {
    let source = "80x".parse::<u16>().expect_err("not a number");
    let error = ConfigError { path: format!("/etc/app-{n}.toml"), source };
    lastword::capture_error(&error)
}

/// The application's own function that reports an anyhow error.
#[inline(never)]
fn report_anyhow(error: &anyhow::Error) -> lastword::spool::EntryId {
    lastword::capture_anyhow(error)
}

/// The application's own function that logs an error through `tracing`.
#[inline(never)]
fn log_with_tracing() {
    let source = "80x".parse::<u16>().expect_err("not a number");
    let error = ConfigError { path: "/etc/app.toml".into(), source };
    tracing::error!(error = &error as &dyn Error, user = 7, "lookup failed");
}

/// Events, a log record and a panic made inside nested `tracing` spans, with the layer's
/// `span_fields_as_tags` (off with `EVENT_APP_NO_SPAN_TAGS`): each carries the fields of the spans
/// it was made in as tags.
fn tracing_spans() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let span_tags = std::env::var_os("EVENT_APP_NO_SPAN_TAGS").is_none();
    let layer = lastword::Layer::default().errors_as_events(true).span_fields_as_tags(span_tags);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        lastword::configure_scope(|s| {
            s.set_tag("region", "eu-west-1");
        });
        let request = tracing::info_span!("request", request_id = "r-7", attempt = 2);
        let entered = request.enter();
        {
            let db = tracing::info_span!("db", table = "orders", attempt = 3);
            let _db = db.enter();
            // A tracing error as an event, a captured message and a log record, inside both spans.
            log_with_tracing();
            println!("event {}", lastword::capture_message(lastword::Level::Warn, "inside db"));
            tracing::warn!("a log record inside db");
        }
        println!("event {}", lastword::capture_message(lastword::Level::Info, "inside request"));
        // A span entered on another thread (its parent given, not entered there): a panic in it
        // carries both spans' fields.
        let job = tracing::info_span!(parent: &request, "job", job = "export");
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let panicked = std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                let _job = job.enter();
                panic!("boom in a span");
            })
        })
        .join();
        assert!(panicked.is_err(), "the job panicked");
        drop(entered);
        println!("event {}", lastword::capture_message(lastword::Level::Info, "outside the spans"));
    });
}

fn main() {
    let case = std::env::args().nth(1).unwrap_or_default();
    let mut config =
        lastword::Config::new("event-app").release("1.0.0").exit_deadline(Duration::from_secs(20));
    if let Some(n) = std::env::var("EVENT_APP_QUEUE").ok().and_then(|v| v.parse().ok()) {
        config = config.event_queue(n);
    }
    if let Some(n) = std::env::var("EVENT_APP_LOOP_LIMIT").ok().and_then(|v| v.parse().ok()) {
        config = config.event_loop_per_hour(n);
    }
    if std::env::var_os("EVENT_APP_SCRUB").is_some() {
        config = config.before_send_event(|event| {
            event.message = event.message.replace("secret", "[scrubbed]");
            !event.message.contains("drop me")
        });
    }
    let guard = match lastword::init(config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("event-app: lastword::init failed: {e}");
            std::process::exit(70);
        }
    };
    match case.as_str() {
        "error" => {
            println!("event {}", load_config(1));
            println!("event {}", load_config(2));
            let boxed: Box<dyn Error + Send + Sync> = "plain text error".into();
            println!("event {}", lastword::capture_error(boxed.as_ref()));
            println!("event {}", lastword::capture_message(lastword::Level::Warn, "cache 12 of 40 full"));
            println!("event {}", lastword::capture_message(lastword::Level::Warn, "cache 13 of 40 full"));
        }
        "scrub" => {
            println!("event {}", lastword::capture_message(lastword::Level::Info, "the secret is out"));
            println!("event {}", lastword::capture_message(lastword::Level::Info, "drop me"));
        }
        "burst-then-exit" => {
            for n in 0..10_000 {
                println!("event {}", load_config(n));
            }
            // `exit` skips the guard's drop: the atexit hook writes the queue out.
            std::process::exit(0);
        }
        "anyhow" => {
            use anyhow::Context as _;
            let error = "80x".parse::<u16>().context("reading the port").context("loading the config");
            println!("event {}", report_anyhow(&error.expect_err("not a number")));
        }
        "repeat" => {
            for n in 0..10 {
                println!("event {}", load_config(n));
            }
        }
        "scope-threads" => {
            lastword::configure_scope(|s| {
                s.set_tag("region", "eu-west-1");
                s.set_user(Some(lastword::report::User { id: Some("42".into()), ..Default::default() }));
                s.set_extra("build", serde_json::json!({"sha": "abc123", "n": 7}));
            });
            println!("event {}", lastword::capture_message(lastword::Level::Info, "process-wide"));
            lastword::with_scope(
                |s| {
                    s.set_tag("job", "nightly");
                    s.set_environment(Some("staging".into()));
                },
                || {
                    println!("event {}", lastword::capture_message(lastword::Level::Info, "in the block"));
                    // Another thread, while the block runs: the process-wide scope only.
                    let other = std::thread::spawn(|| {
                        lastword::capture_message(lastword::Level::Info, "other thread")
                    });
                    println!("event {}", other.join().expect("thread"));
                    lastword::log(lastword::Level::Warn, "event_app", "a log record in the block");
                },
            );
            println!("event {}", load_config(3));
            lastword::log(lastword::Level::Warn, "event_app", "a log record outside");
        }
        "scope-tasks" => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
            rt.block_on(async {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let a = tokio::spawn(lastword::scoped(
                    |s| {
                        s.set_tag("request", "a");
                    },
                    async move {
                        let first = lastword::capture_message(lastword::Level::Info, "task a before");
                        // Waits for task b, which may run on this very worker thread meanwhile.
                        let _ = rx.await;
                        tokio::task::yield_now().await;
                        (first, lastword::capture_message(lastword::Level::Info, "task a after"))
                    },
                ));
                let b = tokio::spawn(async move {
                    let id = lastword::capture_message(lastword::Level::Info, "task b");
                    let _ = tx.send(());
                    id
                });
                let (a1, a2) = a.await.expect("task a");
                let b = b.await.expect("task b");
                for id in [a1, a2, b] {
                    println!("event {id}");
                }
            });
        }
        "tracing" => {
            use tracing_subscriber::layer::SubscriberExt as _;
            let layer = lastword::Layer::default().errors_as_events(true);
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                log_with_tracing();
                // Not events: an ERROR without an error field, and a WARN with one.
                tracing::error!(code = 3, "failed without an error");
                let e = "y".parse::<u8>().expect_err("not a number");
                tracing::warn!(error = &e as &dyn Error, "only a warning");
            });
        }
        "tracing-spans" => tracing_spans(),
        other => {
            eprintln!("event-app: unknown case {other:?}");
            std::process::exit(64);
        }
    }
    drop(guard);
}
