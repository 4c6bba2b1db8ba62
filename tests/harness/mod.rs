//! End-to-end test harness: a real PostgreSQL started per test, a development
//! token issuer, and the gateway running in-process on a free port; real
//! NATS and S3-compatible (moto) servers for the tests that need them.
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

pub mod clients;
pub mod evidence;
pub mod gateway;
pub mod kafka;
pub mod nats;
pub mod pg;
pub mod raw;
pub mod s3;

pub use clients::*;
pub use gateway::*;
pub use pg::*;
pub use raw::*;
