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
        other => {
            eprintln!("event-app: unknown case {other:?}");
            std::process::exit(64);
        }
    }
    drop(guard);
}
