//! The `tracing` integration: a layer that records every event into lastword.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use crate::logs::Level;

/// A `tracing_subscriber` layer that feeds lastword's breadcrumbs and log batches with every event:
/// the `message` field, then the other fields as `name=value`.
///
/// ```no_run
/// use tracing_subscriber::layer::SubscriberExt;
/// let _guard = lastword::init(lastword::Config::new("app"))?;
/// let subscriber = tracing_subscriber::registry().with(lastword::Layer::default());
/// tracing::subscriber::set_global_default(subscriber)?;
/// tracing::warn!(user = 7, "login failed");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Layer;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            if !fields.is_empty() {
                self.0.push(' ');
                self.0.push_str(&fields);
            }
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::TRACE => Level::Trace,
        };
        let mut message = Message(String::new());
        event.record(&mut message);
        crate::log(level, meta.target(), message.0);
    }
}
