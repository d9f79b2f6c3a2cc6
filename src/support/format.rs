//! Format versions of the records git-harness stores (docs/formats.md). Every record carries a
//! `format:` number. A record written before formats were numbered has none and reads as
//! version 1; a record of a version newer than this build knows is refused with a typed error
//! naming the record and both versions, never half-read.

use crate::error::{Error, Result};

/// The `format` of a record that has none: written before formats were numbered.
pub fn v1() -> u32 {
    1
}

/// A stored record with a format version.
pub trait Versioned {
    /// What the record is called in messages (`run record`, `harness note`, ...).
    const RECORD: &'static str;
    /// The newest version this build reads and the one it writes.
    const FORMAT: u32;
    /// The version the stored record declares.
    fn format(&self) -> u32;
}

/// Refuse `record`, read from `place`, when its version is newer than this build knows.
pub fn check<T: Versioned>(record: &T, place: &str) -> Result<()> {
    let found = record.format();
    if found > T::FORMAT {
        return Err(Error::Format {
            record: T::RECORD,
            place: place.to_string(),
            found,
            known: T::FORMAT,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R(u32);
    impl Versioned for R {
        const RECORD: &'static str = "test record";
        const FORMAT: u32 = 2;
        fn format(&self) -> u32 {
            self.0
        }
    }

    #[test]
    fn older_and_current_versions_read_newer_ones_are_named() {
        assert!(check(&R(1), "here").is_ok());
        assert!(check(&R(2), "here").is_ok());
        let e = check(&R(3), "refs/x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "test record at refs/x has format 3; this git-harness reads formats up to 2"
        );
        assert_eq!(e.kind(), crate::error::Kind::Usage);
        assert!(e.hint().is_some_and(|h| h.contains("newer git-harness")));
    }
}
