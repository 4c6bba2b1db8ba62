//! Gatehouse's policy: parse SQL with sqlparser (PostgreSQL dialect), classify each
//! statement, match it against rules, and return a verdict.

pub mod analysis;
pub mod callees;
pub mod claims;
pub mod classify;
pub mod engine;
pub mod handle;
pub mod lineage;
pub mod policy;
pub mod results;
pub mod service;
pub mod shape;
pub mod values;

pub use analysis::*;
pub use classify::analyze;
pub use engine::{Explanation, Query};
pub use handle::PolicyHandle;
pub use policy::{Policy, PolicyError};
pub use shape::shape;
