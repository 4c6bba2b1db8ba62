//! The wire protocol after startup, as the gateway reads it: framing of
//! client messages ([`codec`]), decoders of the backend messages it reads
//! ([`messages`]), the session's one queue of what went upstream and what
//! answers to expect ([`pipeline`]), and the one registry of its names
//! ([`names`]).

pub mod codec;
pub mod messages;
pub mod names;
pub mod pipeline;
