//! SHA-256, the one hash of the tool: cache keys, task checksums, the experiment fingerprint,
//! seeds, run ids of imported jobs, image tags. Each caller frames its own input (a version
//! line, separators), and that framing is part of what it stores: change it and stored keys miss.

use sha2::{Digest as _, Sha256};

/// An incremental SHA-256.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: impl AsRef<[u8]>) -> &mut Self {
        self.0.update(bytes.as_ref());
        self
    }

    /// The 32 bytes of the digest.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }

    /// The digest in lowercase hex (64 characters).
    pub fn hex(self) -> String {
        hex::encode(self.finish())
    }
}

/// The digest of one byte string.
pub fn sha256(bytes: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(bytes.as_ref()).into()
}

/// The digest of one byte string, hex.
pub fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(sha256(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = Hasher::new();
        h.update(b"ab").update("c");
        assert_eq!(h.hex(), sha256_hex(b"abc"));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
