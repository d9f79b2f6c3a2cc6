//! What a local sandbox shows: one table of mounts (sandbox path → host directory, writable or
//! not) and a list of hidden host paths. The same table lays out bubblewrap's mount namespace
//! and resolves the file tools' paths, so `read_file` / `write_file` see exactly what a command
//! in the sandbox sees.
//!
//! Paths are resolved one component at a time on directory file descriptors, never through a
//! host path: `..` is folded and every symlink is read and resolved again in the *sandbox's*
//! namespace, so a link to `/etc` means the sandbox's read-only `/etc`, and a link to a hidden
//! or unmapped place (`/root`, the suite, `/proc`) is not found. The final open uses
//! `O_NOFOLLOW | O_NONBLOCK` and the opened file must be a regular file: FIFOs, sockets and
//! devices are refused without blocking, and a symlink swapped in mid-way is refused rather
//! than followed.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::normalize;

/// Symlinks followed in one resolution before giving up (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Host system directories a bubblewrap sandbox shows, read-only (those that exist). Everything
/// else of the host (`/root`, `/home`, `/run`, `/tmp`, `/var`, `/opt`, `/srv`, `/mnt`, `/media`,
/// `/sys`, ...) is not there.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

#[derive(Debug, Clone)]
pub struct Mount {
    /// Absolute path inside the sandbox.
    pub at: String,
    /// The host directory shown there.
    pub host: PathBuf,
    pub writable: bool,
}

#[derive(Debug, Clone, Default)]
pub struct View {
    pub mounts: Vec<Mount>,
    /// Sandbox paths (equal to host paths under the system mounts) that must not be visible:
    /// the suite, the harness repository, where trial directories live.
    pub hidden: Vec<String>,
}

fn err(kind: io::ErrorKind, msg: &str) -> io::Error {
    io::Error::new(kind, msg.to_string())
}

fn not_found() -> io::Error {
    err(io::ErrorKind::NotFound, "no such file in the sandbox")
}

fn under(path: &str, dir: &str) -> Option<usize> {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        return Some(0);
    }
    let rest = path.strip_prefix(dir)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(dir.len())
}

/// What an opened file is.
fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::Symlink => "a symbolic link",
        _ => "not a regular file",
    }
}

fn refuse(t: FileType) -> io::Error {
    err(
        io::ErrorKind::InvalidInput,
        &format!(
            "is {}; the file tools read and write regular files only (use bash)",
            kind_name(t)
        ),
    )
}

fn readable_without_capabilities(st: &rustix::fs::Stat) -> bool {
    let mode = st.st_mode;
    if st.st_uid == rustix::process::geteuid().as_raw() {
        mode & 0o400 != 0
    } else if st.st_gid == rustix::process::getegid().as_raw() {
        mode & 0o040 != 0
    } else {
        mode & 0o004 != 0
    }
}

/// Where a resolved path ends: the directory holding it and the final name.
struct Located {
    dir: OwnedFd,
    name: String,
    writable: bool,
}

impl View {
    fn mount_of(&self, path: &str) -> Option<(&Mount, usize)> {
        self.mounts
            .iter()
            .filter_map(|m| under(path, &m.at).map(|n| (m, n)))
            .max_by_key(|(_, n)| *n)
    }

    fn is_hidden(&self, path: &str) -> bool {
        self.hidden.iter().any(|h| under(path, h).is_some())
    }

    /// Resolve `path` (absolute in the sandbox, or relative to `cwd`) to its parent directory
    /// and final name. With `create_dirs`, missing directories on the way are made (inside
    /// writable mounts only).
    fn locate(&self, cwd: &str, path: &str, create_dirs: bool) -> io::Result<Located> {
        let mut full = normalize(cwd, path);
        let mut links = 0;
        'restart: loop {
            let (m, n) = self.mount_of(&full).ok_or_else(not_found)?;
            // Hidden paths lie in what the sandbox shows read-only (the host, its system
            // directories); the trial's own writable directories are never hidden.
            let hidden = |p: &str| !m.writable && self.is_hidden(p);
            if hidden(&full) {
                return Err(not_found());
            }
            let rest: Vec<&str> = full[n..].split('/').filter(|c| !c.is_empty()).collect();
            let Some((last, dirs)) = rest.split_last() else {
                return Err(refuse(FileType::Directory));
            };
            let mut dir = rustix::fs::open(
                &m.host,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let mut here = m.at.trim_end_matches('/').to_string();
            for (i, c) in dirs.iter().enumerate() {
                let next = format!("{here}/{c}");
                if hidden(&next) {
                    return Err(not_found());
                }
                match rustix::fs::statat(&dir, *c, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                        FileType::Symlink => {
                            links += 1;
                            if links > MAX_LINKS {
                                return Err(err(io::ErrorKind::Other, "too many symbolic links"));
                            }
                            let target = rustix::fs::readlinkat(&dir, *c, Vec::new())?;
                            let target = target.to_string_lossy().into_owned();
                            let mut again = normalize(&here, &target);
                            for r in &rest[i + 1..] {
                                again.push('/');
                                again.push_str(r);
                            }
                            full = normalize("/", &again);
                            continue 'restart;
                        }
                        FileType::Directory => {}
                        _ => return Err(err(io::ErrorKind::NotADirectory, "not a directory")),
                    },
                    Err(rustix::io::Errno::NOENT) if create_dirs && m.writable => {
                        rustix::fs::mkdirat(&dir, *c, Mode::from_raw_mode(0o755))?;
                    }
                    Err(e) => return Err(e.into()),
                }
                dir = rustix::fs::openat(
                    &dir,
                    *c,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                here = next;
            }
            let target = format!("{here}/{last}");
            if hidden(&target) {
                return Err(not_found());
            }
            if self.mounts.iter().any(|o| o.at == target) {
                return Err(refuse(FileType::Directory));
            }
            // The final component: a symlink is followed in the sandbox's namespace too.
            if let Ok(st) = rustix::fs::statat(&dir, *last, AtFlags::SYMLINK_NOFOLLOW)
                && FileType::from_raw_mode(st.st_mode) == FileType::Symlink
            {
                links += 1;
                if links > MAX_LINKS {
                    return Err(err(io::ErrorKind::Other, "too many symbolic links"));
                }
                let t = rustix::fs::readlinkat(&dir, *last, Vec::new())?;
                full = normalize(&here, &t.to_string_lossy());
                continue 'restart;
            }
            return Ok(Located {
                dir,
                name: last.to_string(),
                writable: m.writable,
            });
        }
    }

    /// Read at most `limit` bytes of a regular file; returns them and the file's size.
    pub fn read(&self, cwd: &str, path: &str, limit: u64) -> io::Result<(Vec<u8>, u64)> {
        let l = self.locate(cwd, path, false)?;
        let st = rustix::fs::statat(&l.dir, l.name.as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        let t = FileType::from_raw_mode(st.st_mode);
        if t != FileType::RegularFile {
            return Err(refuse(t));
        }
        let fd = rustix::fs::openat(
            &l.dir,
            l.name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        let t = FileType::from_raw_mode(st.st_mode);
        if t != FileType::RegularFile {
            return Err(refuse(t));
        }
        // A command in the sandbox holds no capabilities: of the host's files it reads only
        // what its permission bits allow, and so does the tool, even when the runtime is root.
        if !l.writable && !readable_without_capabilities(&st) {
            return Err(err(io::ErrorKind::PermissionDenied, "permission denied"));
        }
        let mut data = Vec::new();
        std::fs::File::from(fd).take(limit).read_to_end(&mut data)?;
        let size = (st.st_size.max(0) as u64).max(data.len() as u64);
        Ok((data, size))
    }

    /// Create or replace a regular file, making missing directories on the way.
    pub fn write(&self, cwd: &str, path: &str, data: &[u8]) -> io::Result<()> {
        let l = self.locate(cwd, path, true)?;
        if !l.writable {
            return Err(err(
                io::ErrorKind::ReadOnlyFilesystem,
                "is on a read-only part of the sandbox",
            ));
        }
        match rustix::fs::statat(&l.dir, l.name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile => {
                return Err(refuse(FileType::from_raw_mode(st.st_mode)));
            }
            _ => {}
        }
        let fd = rustix::fs::openat(
            &l.dir,
            l.name.as_str(),
            OFlags::WRONLY
                | OFlags::CREATE
                | OFlags::NOFOLLOW
                | OFlags::NONBLOCK
                | OFlags::CLOEXEC
                | OFlags::NOCTTY,
            Mode::from_raw_mode(0o644),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        let t = FileType::from_raw_mode(st.st_mode);
        if t != FileType::RegularFile {
            return Err(refuse(t));
        }
        // Truncate only once the file is known to be regular.
        rustix::fs::ftruncate(&fd, 0)?;
        std::fs::File::from(fd).write_all(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(root: &std::path::Path) -> View {
        View {
            mounts: vec![
                Mount {
                    at: "/app".into(),
                    host: root.join("work"),
                    writable: true,
                },
                Mount {
                    at: "/etc".into(),
                    host: root.join("etc"),
                    writable: false,
                },
            ],
            hidden: vec!["/etc/secret".into()],
        }
    }

    #[test]
    fn links_resolve_inside_the_view() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["work", "etc/secret", "outside"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("etc/os"), "os").unwrap();
        std::fs::write(r.join("etc/secret/key"), "key").unwrap();
        std::fs::write(r.join("outside/x"), "host").unwrap();
        let v = view(r);
        std::os::unix::fs::symlink("/etc", r.join("work/e")).unwrap();
        std::os::unix::fs::symlink(r.join("outside"), r.join("work/o")).unwrap();
        std::os::unix::fs::symlink("../etc/secret/key", r.join("work/k")).unwrap();
        assert_eq!(v.read("/app", "e/os", 10).unwrap().0, b"os");
        assert!(v.read("/app", "o/x", 10).is_err());
        assert!(v.read("/app", "k", 10).is_err());
        assert!(v.write("/app", "e/new", b"x").is_err());
        assert!(!r.join("etc/new").exists());
        v.write("/app", "d/f.txt", b"hi").unwrap();
        assert_eq!(std::fs::read(r.join("work/d/f.txt")).unwrap(), b"hi");
        assert_eq!(
            v.read("/app", "../app/d/f.txt", 1).unwrap(),
            (b"h".to_vec(), 2)
        );
    }
}
