//! Reports: terminal tables live in the CLI; markdown for pull requests here.

pub mod markdown;
