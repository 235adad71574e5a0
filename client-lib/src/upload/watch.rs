//! Wakes the uploader when an entry appears in `ready/`, through the file system's change
//! notifications (inotify on Linux). A slow periodic rescan in the worker is the safety net.

use std::path::Path;

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

use super::Control;

/// Watches `spool/ready` and sends [`Control::Wake`] on every entry created or moved in. `None` if
/// the platform cannot watch (the periodic rescan then does the job).
///
/// An entry moved *out* of `ready/` (a claim, ours or another uploader's) is not new work: waking on
/// it would interrupt the session once per claim while it drains.
pub(crate) fn watch_ready(
    spool: &Path,
    control: tokio::sync::mpsc::UnboundedSender<Control>,
) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && is_new_work(event.kind)
        {
            let _ = control.send(Control::Wake);
        }
    })
    .ok()?;
    watcher.watch(&spool.join("ready"), RecursiveMode::NonRecursive).ok()?;
    Some(watcher)
}

/// Whether an event in `ready/` may mean a new entry: created or moved in, not moved out.
fn is_new_work(kind: EventKind) -> bool {
    match kind {
        EventKind::Create(_) => true,
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => false,
        EventKind::Modify(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use notify::event::CreateKind;

    use super::*;

    #[test]
    fn entries_moved_out_of_ready_are_not_new_work() {
        assert!(is_new_work(EventKind::Create(CreateKind::File)));
        assert!(is_new_work(EventKind::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(is_new_work(EventKind::Modify(ModifyKind::Any)));
        assert!(!is_new_work(EventKind::Modify(ModifyKind::Name(RenameMode::From))));
        assert!(!is_new_work(EventKind::Remove(notify::event::RemoveKind::File)));
    }
}
