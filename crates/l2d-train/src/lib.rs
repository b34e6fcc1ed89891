//! `l2d-train`: part of the [l2d](https://crates.io/crates/l2d) workspace.
#![warn(missing_docs)]
