//! Fault injection for the shared-memory protocols (tests only).
//!
//! Every protocol step on the table calls `point()` right after each store to shared memory.
//! In release builds it is empty. In unit tests a thread can give itself a budget of stores:
//! when it runs out, `point()` unwinds with `Died`, which is how the tests simulate a process
//! killed between any two stores (see `table::tests::die_safe`).

/// The unwind payload of a simulated death.
#[cfg(test)]
pub struct Died;

#[cfg(test)]
thread_local! {
    static BUDGET: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// A place where a process may die: after a store to shared memory.
#[inline(always)]
pub fn point() {
    #[cfg(test)]
    BUDGET.with(|b| match b.get() {
        Some(0) => std::panic::panic_any(Died),
        Some(n) => b.set(Some(n - 1)),
        None => {}
    });
}

/// Runs `f` as a process that dies after `stores` stores (None: never). True if it died.
#[cfg(test)]
pub fn run_dying_after(stores: Option<u32>, f: impl FnOnce()) -> bool {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        // Simulated deaths are expected: print only real panics.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Died>() {
                default(info);
            }
        }));
    });
    BUDGET.with(|b| b.set(stores));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    BUDGET.with(|b| b.set(None));
    match r {
        Ok(()) => false,
        Err(p) if p.is::<Died>() => true,
        Err(p) => std::panic::resume_unwind(p),
    }
}

#[cfg(test)]
thread_local! {
    static OVERTAKE: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
}

/// A place where a lock-free reader may be overtaken by a writer: between checking that an
/// entry is stable and checking it again. In release builds it is empty; in unit tests it
/// runs the writer that `overtake_next_read` planted, once.
#[inline(always)]
pub fn overtaken() {
    #[cfg(test)]
    if let Some(writer) = OVERTAKE.with(|o| o.borrow_mut().take()) {
        writer();
    }
}

/// Makes the next `overtaken()` of this thread run `writer` (tests only).
#[cfg(test)]
pub fn overtake_next_read(writer: impl FnOnce() + 'static) {
    OVERTAKE.with(|o| *o.borrow_mut() = Some(Box::new(writer)));
}
