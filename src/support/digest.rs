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

/// A digest of the files below `roots` as the file system describes them: each file's path,
/// kind, mode, size and modification time (a symlink's target), the way git's index notices a
/// change without reading contents. Any edit, or a reinstall, changes it; reading hundreds of
/// megabytes of installed packages on every run would not pay. A root that cannot be read
/// enters as such.
pub fn stat_tree(roots: &[std::path::PathBuf]) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut h = Hasher::new();
    h.update(b"git-harness stat tree v1\0");
    for root in roots {
        h.update(root.as_os_str().as_encoded_bytes());
        h.update([0]);
        let mut stack = vec![root.clone()];
        let mut entries = Vec::new();
        while let Some(dir) = stack.pop() {
            let Ok(read) = std::fs::read_dir(&dir) else {
                entries.push((dir, "unreadable".to_string()));
                continue;
            };
            for e in read.flatten() {
                let path = e.path();
                let Ok(md) = std::fs::symlink_metadata(&path) else {
                    entries.push((path, "unreadable".to_string()));
                    continue;
                };
                let ft = md.file_type();
                let line = if ft.is_dir() {
                    stack.push(path.clone());
                    continue;
                } else if ft.is_symlink() {
                    let target = std::fs::read_link(&path).unwrap_or_default();
                    format!("link {}", target.display())
                } else {
                    format!(
                        "file {:o} {} {}.{}",
                        md.mode(),
                        md.size(),
                        md.mtime(),
                        md.mtime_nsec()
                    )
                };
                entries.push((path, line));
            }
        }
        entries.sort();
        for (path, line) in entries {
            h.update(path.as_os_str().as_encoded_bytes());
            h.update([0]);
            h.update(line.as_bytes());
            h.update([0]);
        }
    }
    h.hex()
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
