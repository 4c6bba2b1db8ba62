//! The `gatehouse` binary's library side: what the CLI does beyond starting services.

pub mod approvals_cli;
pub mod approvals_watch;
pub mod archiver;
pub mod audit;
pub mod config_cli;
pub mod connect;
pub mod doctor;
pub mod evidence_cli;
pub mod local_evidence;
pub mod policy_cli;
pub mod token;
