//! The harness of the mutation suites (`l2d-models/tests/mutation.rs` and
//! `l2d-train/tests/mutation.rs`, which includes this file by path): a global allocator that
//! refuses any single allocation above [`MAX_ALLOCATION`], and [`run_cases`], which runs
//! [`CASES`] seeded mutations and fails on a panic or a case slower than [`MAX_CASE_TIME`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// The system allocator, refusing any single allocation above [`MAX_ALLOCATION`]: a size
/// read from a file and trusted would show up as an abort of the suite. A suite installs it
/// with `#[global_allocator] static ALLOCATOR: Bounded = Bounded;`.
pub struct Bounded;

/// The largest single allocation a mutated input may cause.
pub const MAX_ALLOCATION: usize = 1 << 30;

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Mutations per input kind.
pub const CASES: usize = 2000;

/// The longest a single case may take.
pub const MAX_CASE_TIME: Duration = Duration::from_secs(5);

/// Runs `case` for each of [`CASES`] mutations of the input kind `what`, counting those that
/// were accepted (`Ok`) and refused (`Err`, a typed error); fails on a panic or a slow case.
pub fn run_cases(what: &str, mut case: impl FnMut(usize) -> Result<(), String>) {
    let (mut ok, mut refused) = (0, 0);
    let mut failures = Vec::new();
    for i in 0..CASES {
        let start = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| case(i))) {
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => refused += 1,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("case {i}: panic: {msg}"));
            }
        }
        if start.elapsed() > MAX_CASE_TIME {
            failures.push(format!("case {i}: took {:?}", start.elapsed()));
        }
    }
    println!("{what}: {CASES} mutations, {ok} accepted, {refused} refused");
    assert!(
        failures.is_empty(),
        "{what}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
