//! The `log` crate integration: a `log::Log` that records into lastword, optionally passing every
//! record on to another logger (so the console output the program had stays).

use crate::logs::Level;

/// A `log::Log` that feeds lastword's breadcrumbs and log batches.
///
/// ```no_run
/// let _guard = lastword::init(lastword::Config::new("app"))?;
/// lastword::LogBridge::new(log::LevelFilter::Info).install()?;
/// log::warn!("disk almost full"); // a breadcrumb, and stored (Warn is the default stored level)
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LogBridge {
    max: log::LevelFilter,
    inner: Option<Box<dyn log::Log>>,
}

impl LogBridge {
    /// Records up to `max` (more verbose records are ignored).
    pub fn new(max: log::LevelFilter) -> Self {
        Self { max, inner: None }
    }

    /// Also passes every record to `inner` (for example the program's console logger).
    #[must_use]
    pub fn wrapping(mut self, inner: Box<dyn log::Log>) -> Self {
        self.inner = Some(inner);
        self
    }

    /// Installs this as the `log` crate's logger; fails if one is installed already.
    pub fn install(self) -> Result<(), log::SetLoggerError> {
        let max = self.max;
        log::set_boxed_logger(Box::new(self))?;
        log::set_max_level(max);
        Ok(())
    }
}

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.max
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warn,
            log::Level::Info => Level::Info,
            log::Level::Debug => Level::Debug,
            log::Level::Trace => Level::Trace,
        };
        // lastword's own diagnostics (a log batch the spool refused, say) are not logs of the app.
        if record.target() != crate::diagnostics::TARGET {
            crate::log(level, record.target(), record.args().to_string());
        }
        if let Some(inner) = &self.inner {
            inner.log(record);
        }
    }

    fn flush(&self) {
        if let Some(inner) = &self.inner {
            inner.flush();
        }
    }
}
