//! The `tracing` integration: a layer that records every event into lastword, and, when configured
//! so, turns an ERROR event that carries an error into a lastword event with the error's chain.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use crate::logs::Level;
use crate::report::ErrorInfo;

/// A `tracing_subscriber` layer that feeds lastword's breadcrumbs and log batches with every event:
/// the `message` field, then the other fields as `name=value`.
///
/// With [`Layer::errors_as_events`], an event at ERROR level with a field named `error` recorded as
/// an error (`tracing::error!(error = &e as &dyn std::error::Error, "…")`) also becomes an event
/// ([`crate::capture_error`]'s kind): the error's type (best effort, from its `Debug`), its
/// `Display` and its whole `source()` chain, the caller's backtrace, and the event's message.
///
/// ```no_run
/// use tracing_subscriber::layer::SubscriberExt;
/// let _guard = lastword::init(lastword::Config::new("app"))?;
/// let layer = lastword::Layer::default().errors_as_events(true);
/// tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))?;
/// tracing::warn!(user = 7, "login failed");
/// let e = std::io::Error::other("disk gone");
/// tracing::error!(error = &e as &dyn std::error::Error, "could not save");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Layer {
    errors_as_events: bool,
}

impl Layer {
    /// Whether an ERROR event with an `error` field becomes an event too (off by default).
    #[must_use]
    pub fn errors_as_events(mut self, on: bool) -> Self {
        self.errors_as_events = on;
        self
    }
}

struct Message {
    text: String,
    /// The `message` field alone, for an event made of it.
    message: Option<String>,
    /// Read only when asked for: the `error` field's error.
    error: Option<ErrorInfo>,
    want_error: bool,
}

impl Message {
    fn field(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.text);
            let _ = write!(self.text, "{value:?}");
            if self.want_error {
                self.message = Some(self.text.clone());
            }
            if !fields.is_empty() {
                self.text.push(' ');
                self.text.push_str(&fields);
            }
        } else {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            let _ = write!(self.text, "{}={value:?}", field.name());
        }
    }
}

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.field(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.want_error && field.name() == "error" && self.error.is_none() {
            self.error = Some(crate::event::error_info(None, value));
        }
        // In the log record as tracing's default does: its Display.
        self.field(field, &format_args!("{value}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // lastword's own diagnostics (a log batch the spool refused, say) are not logs of the app.
        if meta.target() == crate::diagnostics::TARGET {
            return;
        }
        let level = match *meta.level() {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::TRACE => Level::Trace,
        };
        let want_error = self.errors_as_events && level == Level::Error;
        let mut message = Message { text: String::new(), message: None, error: None, want_error };
        event.record(&mut message);
        if let Some(error) = message.error {
            let text = message.message.unwrap_or_else(|| error.message.clone());
            crate::event::capture_error_info(Level::Error, text, error);
        }
        crate::log(level, meta.target(), message.text);
    }
}
