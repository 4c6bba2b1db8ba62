//! Gatehouse's policy: parse SQL with sqlparser (PostgreSQL dialect), classify each
//! statement, match it against rules, and return a verdict.

pub mod claims;
