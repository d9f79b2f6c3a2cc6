//! Support code the pipeline shares: YAML with located errors, the embedded assets, SHA-256,
//! secret redaction at the storage boundary, and process-owner marks for sweeping leftovers.

pub mod assets;
pub mod digest;
pub mod owner;
pub mod secrets;
pub mod yaml;
