//! Wakes the uploader when an entry appears in `ready/`, through the file system's change
//! notifications (inotify on Linux). A slow periodic rescan in the worker is the safety net.

use std::path::Path;

use notify::{EventKind, RecursiveMode, Watcher};

use super::Control;

/// Watches `spool/ready` and sends [`Control::Wake`] on every entry created or moved in. `None` if
/// the platform cannot watch (the periodic rescan then does the job).
pub(crate) fn watch_ready(
    spool: &Path,
    control: tokio::sync::mpsc::UnboundedSender<Control>,
) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_))
        {
            let _ = control.send(Control::Wake);
        }
    })
    .ok()?;
    watcher.watch(&spool.join("ready"), RecursiveMode::NonRecursive).ok()?;
    Some(watcher)
}
