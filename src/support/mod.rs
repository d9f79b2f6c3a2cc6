//! Support code the pipeline shares: YAML with located errors, the embedded assets, SHA-256,
//! secret redaction at the storage boundary, process-owner marks for sweeping leftovers, and
//! the format versions of stored records.

pub mod assets;
pub mod digest;
pub mod format;
pub mod owner;
pub mod secrets;
pub mod yaml;
