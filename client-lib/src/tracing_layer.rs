//! The `tracing` integration: a layer that records every event into lastword, and, when configured
//! so, turns an ERROR event that carries an error into a lastword event with the error's chain, and
//! makes the fields of the spans entered the scope's tags.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

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
/// With [`Layer::span_fields_as_tags`], the fields of a span (and of its parents) are tags of the
/// scope while the span is entered: a lastword event, a panic or a log record made inside it
/// carries them (`request_id=r-7`), as if it ran in [`crate::with_scope`].
///
/// The layer needs a subscriber that keeps spans, such as `tracing_subscriber::registry()`.
///
/// ```no_run
/// use tracing_subscriber::layer::SubscriberExt;
/// let _guard = lastword::init(lastword::Config::new("app"))?;
/// let layer = lastword::Layer::default().errors_as_events(true).span_fields_as_tags(true);
/// tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))?;
/// tracing::warn!(user = 7, "login failed");
/// let _request = tracing::info_span!("request", request_id = "r-7").entered();
/// let e = std::io::Error::other("disk gone");
/// // An event with the chain, tagged request_id=r-7.
/// tracing::error!(error = &e as &dyn std::error::Error, "could not save");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Layer {
    errors_as_events: bool,
    span_fields_as_tags: bool,
}

impl Layer {
    /// Whether an ERROR event with an `error` field becomes an event too (off by default).
    #[must_use]
    pub fn errors_as_events(mut self, on: bool) -> Self {
        self.errors_as_events = on;
        self
    }

    /// Whether the fields of the spans entered become tags of the current scope (off by default).
    ///
    /// A span's tags are its own fields and its parents' (the span's own win on a shared name),
    /// each value as text: a string as it is, anything else as its `Debug` (`7`, `true`); a field
    /// recorded later (`span.record`) counts from the span's next entry. While the span is entered
    /// on a thread, that thread's scope is the scope in force when it was entered with these tags
    /// added (a [`crate::push_scope`] of its own, taken away when the span is exited): a span
    /// entered inside [`crate::scoped`] or [`crate::with_scope`] keeps their tags too. Each entry
    /// copies the current scope (one allocation); a fatal-signal report carries the process-wide
    /// scope only, as ever.
    #[must_use]
    pub fn span_fields_as_tags(mut self, on: bool) -> Self {
        self.span_fields_as_tags = on;
        self
    }
}

/// A span's fields as tags (its parents' included), kept in the span's extensions.
#[derive(Clone, Debug, Default)]
struct SpanTags(BTreeMap<String, String>);

impl Visit for SpanTags {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

thread_local! {
    /// The scopes of the spans entered on this thread, innermost last, each with its span's id.
    static ENTERED: RefCell<Vec<(span::Id, crate::ScopeGuard)>> = const { RefCell::new(Vec::new()) };
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

impl<S> tracing_subscriber::Layer<S> for Layer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if !self.span_fields_as_tags {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // The parent's tags (its own parents' already in them), then this span's own fields.
        let mut tags = span
            .parent()
            .and_then(|parent| parent.extensions().get::<SpanTags>().cloned())
            .unwrap_or_default();
        attrs.record(&mut tags);
        span.extensions_mut().insert(tags);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if !self.span_fields_as_tags {
            return;
        }
        if let Some(span) = ctx.span(id)
            && let Some(tags) = span.extensions_mut().get_mut::<SpanTags>()
        {
            values.record(tags);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if !self.span_fields_as_tags {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let Some(tags) = span.extensions().get::<SpanTags>().filter(|t| !t.0.is_empty()).cloned() else {
            return;
        };
        let guard = crate::push_scope(|scope| {
            for (key, value) in tags.0 {
                scope.set_tag(key, value);
            }
        });
        // A thread being torn down has no list: its scope goes with it.
        let _ = ENTERED.try_with(|entered| {
            if let Ok(mut entered) = entered.try_borrow_mut() {
                entered.push((id.clone(), guard));
            }
        });
    }

    fn on_exit(&self, id: &span::Id, _ctx: Context<'_, S>) {
        if !self.span_fields_as_tags {
            return;
        }
        // The innermost entry of this span (a span may be entered again inside itself); the guard
        // is dropped after the list is let go, as dropping it touches the scope's own list.
        let guard = ENTERED
            .try_with(|entered| {
                let mut entered = entered.try_borrow_mut().ok()?;
                let at = entered.iter().rposition(|(entered_id, _)| entered_id == id)?;
                Some(entered.remove(at))
            })
            .ok()
            .flatten();
        drop(guard);
    }

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
