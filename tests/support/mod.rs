//! What the integration tests share: the real model ([`smollm2`]) and the `tracing` lines one
//! test's thread emits.
//!
//! `tracing` caches, per event call site, whether any subscriber wants it. A subscriber set for
//! one thread (`tracing::subscriber::with_default`) races with tests on other threads that reach
//! the same call site with no subscriber: the site can be cached as wanted by nobody, and the
//! capturing test then misses the event. So a test binary that reads lines installs one global
//! subscriber before any event is emitted ([`install`] at the start of each of its tests), and
//! that subscriber writes into the emitting thread's own buffer.

#![allow(dead_code)]

pub mod smollm2;

use std::cell::RefCell;
use std::sync::Once;

use l2d::cli::logging::LineLayer;
use tracing_subscriber::layer::SubscriberExt;

thread_local! {
    /// The lines of the running [`lines_of`] on this thread, if one runs.
    static LINES: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Installs the binary's global subscriber (once; later calls wait for the first to finish).
/// Call it first in every test of a binary that uses [`lines_of`].
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let layer = LineLayer::to(|line| {
            LINES.with(|lines| {
                if let Some(lines) = lines.borrow_mut().as_mut() {
                    lines.push(line.to_string());
                }
            })
        });
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other global subscriber in this test binary");
    });
}

/// Runs `f`, returning its result with the lines its events printed on this thread.
pub fn lines_of<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    install();
    LINES.with(|lines| *lines.borrow_mut() = Some(Vec::new()));
    let out = f();
    let lines = LINES.with(|lines| lines.borrow_mut().take().unwrap_or_default());
    (out, lines)
}
