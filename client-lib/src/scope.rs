//! The scope: tags, a user, extra context and the environment that reports carry
//! ([`crate::report::Scope`]). Set process-wide with [`configure_scope`]; overridden for a block on
//! one thread with [`with_scope`] or [`push_scope`], and for one future (a tokio task, or any
//! future on any executor) with [`scoped`]. Every crash, event and log batch carries the scope of
//! the time it was made.
//!
//! A block's scope is a snapshot: the scope in force when the block starts, with the block's
//! changes. Process-wide changes made while it runs apply to reports made after it ends. A future's
//! scope is in force only while that future is polled, on whichever thread polls it: a task's scope
//! never leaks into another task, nor into a task it spawns (which starts from the process-wide
//! scope).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use crate::report::Scope;

/// The process-wide scope.
static PROCESS: RwLock<Option<Arc<Scope>>> = RwLock::new(None);
/// Held by [`configure_scope`] while it changes the process-wide scope.
static WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Ids of the layers of the threads' stacks.
static NEXT_LAYER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's layers, innermost last: each one is a whole scope (a snapshot with changes).
    static LAYERS: RefCell<Vec<(u64, Arc<Scope>)>> = const { RefCell::new(Vec::new()) };
}

/// Changes the process-wide scope: what every thread's reports carry outside a block of their own.
/// A fatal-signal report carries the process-wide scope as it is after this returns.
///
/// ```
/// lastword::configure_scope(|scope| {
///     scope.set_tag("region", "eu-west-1");
///     scope.set_user(Some(lastword::report::User { id: Some("42".into()), ..Default::default() }));
/// });
/// ```
///
/// Changes are made one at a time (calling `configure_scope` inside `change` would wait for
/// itself); readers never wait for `change`: until it returns they see the scope before it.
pub fn configure_scope(change: impl FnOnce(&mut Scope)) {
    let _one_at_a_time = WRITER.lock().unwrap_or_else(PoisonError::into_inner);
    let mut scope =
        PROCESS.read().unwrap_or_else(PoisonError::into_inner).as_deref().cloned().unwrap_or_default();
    change(&mut scope);
    crate::signal::scope_line::LINE.publish(&scope);
    *PROCESS.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(scope));
}

/// Runs `body` with the current scope changed by `change`, on this thread: reports made by `body`
/// carry it (those of other threads and tasks do not).
///
/// ```
/// let total = lastword::with_scope(|s| { s.set_tag("job", "nightly"); }, || {
///     // lastword::capture_error(...) here carries job=nightly
///     2 + 2
/// });
/// # assert_eq!(total, 4);
/// ```
pub fn with_scope<R>(change: impl FnOnce(&mut Scope), body: impl FnOnce() -> R) -> R {
    let _guard = push_scope(change);
    body()
}

/// Changes the current scope on this thread until the guard is dropped ([`with_scope`] as a
/// guard). The guard cannot be sent to another thread; guards dropped out of order each take their
/// own layer away.
pub fn push_scope(change: impl FnOnce(&mut Scope)) -> ScopeGuard {
    let layer = layer(change);
    ScopeGuard { id: enter(layer), _not_send: std::marker::PhantomData }
}

/// The scope of [`push_scope`], in force until dropped.
#[must_use = "the scope ends when the guard is dropped"]
pub struct ScopeGuard {
    id: u64,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        leave(self.id);
    }
}

/// Wraps `future` so that while it is polled the current scope is the one in force now, changed by
/// `change`: for a tokio task, `tokio::spawn(lastword::scoped(|s| { s.set_tag("request", id); },
/// handle(request)))`. Works on any executor; costs one allocation (the future is boxed).
pub fn scoped<F: Future>(change: impl FnOnce(&mut Scope), future: F) -> Scoped<F> {
    Scoped { layer: layer(change), future: Box::pin(future) }
}

/// A future with its own scope ([`scoped`]).
pub struct Scoped<F> {
    layer: Arc<Scope>,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let id = enter(this.layer.clone());
        // Left on every path, a panic of the future included.
        struct Leave(u64);
        impl Drop for Leave {
            fn drop(&mut self) {
                leave(self.0);
            }
        }
        let _leave = Leave(id);
        this.future.as_mut().poll(cx)
    }
}

/// The scope in force on this thread now (its innermost block's, else the process-wide one).
pub fn current_scope() -> Scope {
    current().as_deref().cloned().unwrap_or_default()
}

/// The scope in force on this thread, shared; `None` when nothing was ever set. Never waits: a
/// panic hook calls it, and the panicking thread may hold the process-wide scope's lock (a panic
/// inside `configure_scope`'s closure), in which case the process-wide scope is left out.
pub(crate) fn current() -> Option<Arc<Scope>> {
    let innermost = LAYERS.try_with(|layers| layers.try_borrow().ok()?.last().map(|(_, s)| s.clone()));
    if let Ok(Some(scope)) = innermost {
        return Some(scope);
    }
    match PROCESS.try_read() {
        Ok(process) => process.clone(),
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().clone(),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// The current scope changed by `change`.
fn layer(change: impl FnOnce(&mut Scope)) -> Arc<Scope> {
    let mut scope = current_scope();
    change(&mut scope);
    Arc::new(scope)
}

fn enter(layer: Arc<Scope>) -> u64 {
    let id = NEXT_LAYER.fetch_add(1, Ordering::Relaxed);
    let _ = LAYERS.try_with(|layers| {
        if let Ok(mut layers) = layers.try_borrow_mut() {
            layers.push((id, layer));
        }
    });
    id
}

fn leave(id: u64) {
    let _ = LAYERS.try_with(|layers| {
        if let Ok(mut layers) = layers.try_borrow_mut()
            && let Some(at) = layers.iter().rposition(|(i, _)| *i == id)
        {
            layers.remove(at);
        }
    });
}

/// Applies a scope's environment to a report's context.
pub(crate) fn apply_environment(scope: &Scope, context: &mut crate::report::Context) {
    if let Some(environment) = &scope.environment {
        context.environment = Some(environment.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_overrides_the_scope_on_its_thread_only_and_ends_with_it() {
        let tag = |key: &str| current_scope().tags.get(key).cloned();
        with_scope(
            |s| {
                s.set_tag("unit-block", "outer");
            },
            || {
                assert_eq!(tag("unit-block").as_deref(), Some("outer"));
                let other = std::thread::spawn(move || current_scope().tags.get("unit-block").cloned());
                assert_eq!(other.join().unwrap(), None, "another thread does not see it");
                let inner = push_scope(|s| {
                    s.set_tag("unit-block", "inner");
                });
                assert_eq!(tag("unit-block").as_deref(), Some("inner"));
                drop(inner);
                assert_eq!(tag("unit-block").as_deref(), Some("outer"));
            },
        );
        assert_eq!(tag("unit-block"), None);
    }

    #[test]
    fn a_future_carries_its_scope_only_while_it_is_polled() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let seen = rt.block_on(async {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let a = tokio::spawn(scoped(
                |s| {
                    s.set_tag("unit-task", "a");
                },
                async move {
                    let before = current_scope().tags.get("unit-task").cloned();
                    let _ = rx.await; // the other task runs on this same thread meanwhile
                    let after = current_scope().tags.get("unit-task").cloned();
                    (before, after)
                },
            ));
            let b = tokio::spawn(async move {
                let seen = current_scope().tags.get("unit-task").cloned();
                let _ = tx.send(());
                seen
            });
            (a.await.unwrap(), b.await.unwrap())
        });
        assert_eq!(seen.0, (Some("a".into()), Some("a".into())));
        assert_eq!(seen.1, None, "the other task never sees it");
        assert_eq!(current_scope().tags.get("unit-task"), None);
    }
}
