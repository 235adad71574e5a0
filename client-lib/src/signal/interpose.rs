//! The two C library functions that lastword stands in front of, in dynamically linked glibc
//! programs without a sanitizer, with the `interpose` feature on, and not under Miri (`build.rs`
//! decides: the cfg `lastword_interposer`; elsewhere the stand-ins below do nothing):
//!
//! - `pthread_create`: every new thread starts through a trampoline that gives it an alternate
//!   signal stack once init is done (`stacks`).
//! - `sigaction`: while this thread hands a signal to the handler that was installed before lastword
//!   (`first_chance` in `mod.rs`), a change that handler makes to that signal's disposition is held
//!   back and handed to lastword, instead of applied to the whole process at once. std's SIGSEGV
//!   handler puts SIG_DFL in place for every fault that is not a stack overflow of its own; applied
//!   at once, a second thread faulting while lastword writes the report of the first would meet
//!   SIG_DFL and end the process before any report exists. Held back, the disposition stays
//!   lastword's until the report is written, then becomes what that handler set. Every other call
//!   goes to the C library's `sigaction` unchanged. (`signal()` and other calls that glibc makes to
//!   its internal `sigaction` are not seen, nor calls on a thread without an alternate signal stack:
//!   for those lastword puts its own disposition back as soon as the previous handler returns, which
//!   leaves the handler's own short run as a window.) A handler that leaves with `longjmp` leaves
//!   nothing held: a later call is held back only from inside a first-chance call, below its frame
//!   on the alternate stack.
//!
//! The C library's functions are looked up once, by a constructor in `.init_array` that runs when
//! the program is loaded (a call made earlier, from another library's constructor, looks them up
//! then), with `dlsym(RTLD_NEXT)`, which finds them in any dynamically linked glibc program: never a
//! failed `dlsym` at a thread's creation, whose `dlerror` would allocate.
//!
//! Why the conditions: a sanitizer's runtime (rustc links it statically) intercepts both functions
//! itself, and `dlsym` cannot find its interceptors, so the C library's would be called behind the
//! sanitizer's back (crash-handling's interposer broke AddressSanitizer that way,
//! EmbarkStudios/crash-handling#123: "Joining already joined thread"); statically linked programs
//! have nothing behind the definition (crash-handling#98); and a program that links another crate
//! defining `pthread_create` (crash-handler) cannot link two, which is what the feature is for.

pub(super) use imp::{HandOver, handing, held_back, real_sigaction};

/// How many nested first-chance calls on one thread hold back a disposition change (deeper ones let
/// it through).
#[cfg_attr(not(all(lastword_interposer, not(miri))), allow(dead_code))]
const DEPTH_MAX: usize = 4;

#[cfg(all(lastword_interposer, not(miri)))]
mod imp {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::DEPTH_MAX;
    use crate::signal::stacks::give_new_thread;

    thread_local! {
        /// How many first-chance calls are under way on this thread.
        static DEPTH: Cell<usize> = const { Cell::new(0) };
        /// The signal handed to the previous handler at each depth.
        static HANDING: [Cell<libc::c_int>; DEPTH_MAX] = const { [const { Cell::new(0) }; DEPTH_MAX] };
        /// What that handler set for it, held back.
        static HELD: [Cell<Option<libc::sigaction>>; DEPTH_MAX] =
            const { [const { Cell::new(None) }; DEPTH_MAX] };
        /// Where the stack was when the call began: a call that the handler left with `longjmp`
        /// (never ended) is recognised by it.
        static FRAME: [Cell<usize>; DEPTH_MAX] = const { [const { Cell::new(0) }; DEPTH_MAX] };
    }

    /// Whether this thread runs on its alternate signal stack now (in a signal handler).
    fn on_alternate_stack() -> bool {
        // SAFETY: all-zero is a valid stack_t; sigaltstack with a null new stack only reads.
        let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe {
            libc::sigaltstack(std::ptr::null(), &raw mut current) == 0
                && current.ss_flags & libc::SS_ONSTACK != 0
        }
    }

    /// One first-chance call: while it lives, this thread's `sigaction` calls for its signal are
    /// held back. **Async-signal-safe** (constant-initialized thread-locals without destructors).
    pub(in crate::signal) struct HandOver {
        depth: usize,
    }

    impl HandOver {
        /// `frame` is the address of a local of the caller, which then calls the previous handler:
        /// that handler's frames are all below it.
        pub(in crate::signal) fn begin(sig: libc::c_int, frame: usize) -> Self {
            let here = frame;
            let mut depth = DEPTH.get();
            // Calls whose handler jumped out with `longjmp` were never ended: a call that is still
            // under way began further up the stack than this one (nested handlers go deeper).
            while depth > 0 && depth <= DEPTH_MAX && FRAME.with(|f| f[depth - 1].get()) <= here {
                depth -= 1;
            }
            if depth < DEPTH_MAX {
                HANDING.with(|h| h[depth].set(sig));
                HELD.with(|h| h[depth].set(None));
                FRAME.with(|f| f[depth].set(here));
            }
            DEPTH.set(depth + 1);
            Self { depth }
        }

        /// Ends the call; returns whether the handler set a disposition, which [`held_back`] then
        /// gives.
        pub(in crate::signal) fn end(self) -> Option<usize> {
            DEPTH.set(self.depth);
            (self.depth < DEPTH_MAX && HELD.with(|h| h[self.depth].get().is_some())).then_some(self.depth)
        }
    }

    /// What the previous handler set at `depth` (from [`HandOver::end`] or [`handing`]), taken.
    pub(in crate::signal) fn held_back(depth: usize) -> Option<libc::sigaction> {
        HELD.with(|h| h.get(depth).and_then(Cell::take))
    }

    /// The depth of the innermost first-chance call on this thread, if it hands `sig`.
    pub(in crate::signal) fn handing(sig: libc::c_int) -> Option<usize> {
        let depth = DEPTH.get();
        (depth > 0 && depth <= DEPTH_MAX && HANDING.with(|h| h[depth - 1].get()) == sig).then(|| depth - 1)
    }

    /// The C library's functions behind ours; 0 until looked up, 1 when not found.
    static REAL_PTHREAD_CREATE: AtomicUsize = AtomicUsize::new(0);
    static REAL_SIGACTION: AtomicUsize = AtomicUsize::new(0);
    /// Whether [`look_up_at_load`] ran.
    static LOOKED_UP_AT_LOAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// Looks a C library function up (`RTLD_NEXT`: the next definition after this object's, which
    /// always exists in a dynamically linked glibc program, so `dlerror` has nothing to record).
    fn look_up(name: &std::ffi::CStr, ours: usize, into: &AtomicUsize) -> usize {
        // SAFETY: dlsym with a valid handle and a NUL-terminated name.
        let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        let found = if found == 0 || found == ours { 1 } else { found };
        into.store(found, Ordering::Release);
        found
    }

    fn real(name: &std::ffi::CStr, ours: usize, into: &AtomicUsize) -> Option<usize> {
        let mut found = into.load(Ordering::Acquire);
        if found == 0 {
            // Called from a constructor that ran before ours.
            found = look_up(name, ours, into);
        }
        (found > 1).then_some(found)
    }

    /// Runs when the program is loaded, before `main` and before any thread of the program's own.
    extern "C" fn look_up_at_load() {
        look_up(c"pthread_create", pthread_create as *const () as usize, &REAL_PTHREAD_CREATE);
        look_up(c"sigaction", sigaction as *const () as usize, &REAL_SIGACTION);
        LOOKED_UP_AT_LOAD.store(true, Ordering::SeqCst);
    }

    #[used]
    #[unsafe(link_section = ".init_array")]
    static LOOK_UP_AT_LOAD: extern "C" fn() = look_up_at_load;

    type SigactionFn =
        unsafe extern "C" fn(libc::c_int, *const libc::sigaction, *mut libc::sigaction) -> libc::c_int;

    /// The C library's `sigaction`, for lastword's own calls. **Async-signal-safe.**
    ///
    /// # Safety
    /// `sigaction`'s contract.
    pub(in crate::signal) unsafe fn real_sigaction(
        sig: libc::c_int,
        act: *const libc::sigaction,
        old: *mut libc::sigaction,
    ) -> libc::c_int {
        let Some(f) = real(c"sigaction", sigaction as *const () as usize, &REAL_SIGACTION) else {
            // SAFETY: errno is this thread's.
            unsafe { *libc::__errno_location() = libc::ENOSYS };
            return -1;
        };
        // SAFETY: the address of a function with sigaction's signature; the caller's arguments.
        unsafe { std::mem::transmute::<usize, SigactionFn>(f)(sig, act, old) }
    }

    /// Stands in for the C library's `sigaction` (see the module docs): a change to the signal this
    /// thread is handing to a previous handler is held back; everything else passes through.
    /// **Async-signal-safe**, as the C library's.
    ///
    /// # Safety
    /// The caller's contract is `sigaction`'s.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn sigaction(
        sig: libc::c_int,
        act: *const libc::sigaction,
        old: *mut libc::sigaction,
    ) -> libc::c_int {
        let marker = 0u8;
        let here = std::hint::black_box(&raw const marker) as usize;
        let depth = DEPTH.get();
        // Held back only from inside the call: below its frame, on the alternate stack that
        // lastword's handler runs on (not after a `longjmp` out of the handler).
        if !act.is_null()
            && depth > 0
            && depth <= DEPTH_MAX
            && HANDING.with(|h| h[depth - 1].get()) == sig
            && here < FRAME.with(|f| f[depth - 1].get())
            && on_alternate_stack()
        {
            // SAFETY: the caller's `old` (valid or null); reading the current disposition only.
            if !old.is_null() && unsafe { real_sigaction(sig, std::ptr::null(), old) } != 0 {
                return -1;
            }
            // SAFETY: `act` is the caller's valid action.
            let act = unsafe { *act };
            HELD.with(|h| h[depth - 1].set(Some(act)));
            return 0;
        }
        // SAFETY: the caller's arguments, passed on unchanged.
        unsafe { real_sigaction(sig, act, old) }
    }

    /// What [`start`] runs, given by [`pthread_create`].
    struct Start {
        routine: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
        arg: *mut libc::c_void,
    }

    /// The start routine of every thread made through `pthread_create`: once init is done, installs
    /// the thread's stack; then runs the routine the thread was created with.
    extern "C" fn start(data: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `data` is the `Start` boxed by `pthread_create` for this thread, taken once.
        let Start { routine, arg } = *unsafe { Box::from_raw(data.cast::<Start>()) };
        give_new_thread();
        routine(arg)
    }

    type PthreadCreate = unsafe extern "C" fn(
        *mut libc::pthread_t,
        *const libc::pthread_attr_t,
        extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
        *mut libc::c_void,
    ) -> libc::c_int;

    /// Stands in for the C library's `pthread_create` (see the module docs): the new thread runs
    /// [`start`] first, which gives it an alternate signal stack once init is done.
    ///
    /// # Safety
    /// The caller's contract is `pthread_create`'s.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn pthread_create(
        thread: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        routine: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
        arg: *mut libc::c_void,
    ) -> libc::c_int {
        let Some(real) = real(c"pthread_create", pthread_create as *const () as usize, &REAL_PTHREAD_CREATE)
        else {
            return libc::EAGAIN;
        };
        // SAFETY: the address of a function with pthread_create's signature.
        let real = unsafe { std::mem::transmute::<usize, PthreadCreate>(real) };
        let data = Box::into_raw(Box::new(Start { routine, arg }));
        // SAFETY: the caller's thread and attributes; `start` takes `data` back exactly once, in the
        // new thread, which exists only if the call succeeds.
        let rc = unsafe { real(thread, attr, start, data.cast()) };
        if rc != 0 {
            // SAFETY: no thread was made, so `data` was not taken.
            drop(unsafe { Box::from_raw(data) });
        }
        rc
    }

    #[cfg(test)]
    mod tests {
        use std::sync::atomic::Ordering;

        #[test]
        fn the_real_functions_were_found_when_the_program_was_loaded() {
            assert!(super::LOOKED_UP_AT_LOAD.load(Ordering::SeqCst), "the .init_array constructor ran");
            assert!(super::REAL_PTHREAD_CREATE.load(Ordering::Acquire) > 1);
            assert!(super::REAL_SIGACTION.load(Ordering::Acquire) > 1);
        }
    }
}

/// Without the interposer: nothing is held back, lastword calls the C library's `sigaction`.
#[cfg(not(all(lastword_interposer, not(miri))))]
mod imp {
    pub(in crate::signal) struct HandOver;

    impl HandOver {
        pub(in crate::signal) fn begin(_sig: libc::c_int, _frame: usize) -> Self {
            Self
        }

        pub(in crate::signal) fn end(self) -> Option<usize> {
            None
        }
    }

    pub(in crate::signal) fn held_back(_depth: usize) -> Option<libc::sigaction> {
        None
    }

    pub(in crate::signal) fn handing(_sig: libc::c_int) -> Option<usize> {
        None
    }

    /// # Safety
    /// `sigaction`'s contract.
    pub(in crate::signal) unsafe fn real_sigaction(
        sig: libc::c_int,
        act: *const libc::sigaction,
        old: *mut libc::sigaction,
    ) -> libc::c_int {
        // SAFETY: the caller's arguments.
        unsafe { libc::sigaction(sig, act, old) }
    }
}

#[cfg(test)]
mod tests {
    /// The address `name` resolves to for the program and its libraries.
    fn resolved(name: &std::ffi::CStr) -> usize {
        // SAFETY: dlsym with a valid handle and a NUL-terminated name.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
    }

    /// The C library's own `name`.
    fn libc_own(name: &std::ffi::CStr) -> usize {
        // SAFETY: dlopen of the already loaded C library (no load happens), then dlsym in it.
        unsafe {
            let handle = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            assert!(!handle.is_null(), "the C library is loaded");
            libc::dlsym(handle, name.as_ptr()) as usize
        }
    }

    /// With the interposer built (the default), the program's `pthread_create` and `sigaction` are
    /// lastword's; without it (the `interpose` feature off, a sanitizer, Miri) the C library's.
    #[test]
    fn the_functions_are_interposed_exactly_when_the_interposer_is_built() {
        for name in [c"pthread_create", c"sigaction"] {
            if cfg!(all(lastword_interposer, not(miri))) {
                assert_ne!(resolved(name), libc_own(name), "lastword's {name:?} stands in front");
            } else {
                assert_eq!(resolved(name), libc_own(name), "no {name:?} of lastword's");
            }
        }
    }

    /// Outside a first-chance call, `sigaction` passes through: a change is made and read back.
    #[test]
    fn sigaction_passes_through_outside_a_first_chance_call() {
        // SAFETY: SIGUSR2's disposition set to SIG_IGN and back, read through `libc::sigaction`
        // (lastword's when interposed).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            let mut ignore: libc::sigaction = std::mem::zeroed();
            ignore.sa_sigaction = libc::SIG_IGN;
            assert_eq!(libc::sigaction(libc::SIGUSR2, &raw const ignore, &raw mut old), 0);
            let mut now: libc::sigaction = std::mem::zeroed();
            assert_eq!(libc::sigaction(libc::SIGUSR2, std::ptr::null(), &raw mut now), 0);
            assert_eq!(now.sa_sigaction, libc::SIG_IGN);
            assert_eq!(libc::sigaction(libc::SIGUSR2, &raw const old, std::ptr::null_mut()), 0);
        }
    }
}
