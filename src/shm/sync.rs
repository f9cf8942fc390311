//! The atomics the rings use: the standard ones, or loom's when the ring's park/wake protocol
//! is model-checked (`RUSTFLAGS="--cfg loom"` test builds: loom is a dev-dependency; see
//! `src/SUPERVISOR.md`).

#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
