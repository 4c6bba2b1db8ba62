//! What the fuzz targets share: an allocation meter, and reference encoders and
//! decoders of the wire formats masking rewrites (written from PostgreSQL's own
//! rules, independently of the code under test, so that they can judge it).

pub mod alloc;
pub mod archive;
pub mod masks;
pub mod pgcopy;
