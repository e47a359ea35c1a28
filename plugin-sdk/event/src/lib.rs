//! Vigil's event model, shared by the daemon and by rules.
//!
//! Layout:
//! - [`model`]: the owned event types (what sources produce and enrichment
//!   fills in; serde with the `serde` feature, for replay files and JSON).
//! - [`packed`]: the packed wire encoding events cross into a rule in, and
//!   zero-copy views over it (what the plugin SDK hands rule functions).
//!
//! Both mirror the records of the WIT package `vigil:rules` (`wit/rules.wit`),
//! which is the schema; this crate is its Rust form.

pub mod model;
pub mod packed;

pub use model::*;
