//! Which process owns a piece of local state (a journal, a sandbox temp dir, a container), so
//! that a later command can sweep what a dead process left without touching what a live one is
//! using. A pid alone can be reused; the pair (pid, start time) names one process.

use std::fmt;

/// A process: its pid and its start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether this very process still runs. Where `/proc` cannot tell, it counts as alive:
    /// sweeping must never touch the state of a live process.
    pub fn is_alive(&self) -> bool {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return true;
        }
        match start_time(self.pid) {
            Some(start) => start == self.start,
            None => false,
        }
    }

    /// `<pid>.<start>`, safe in file names and labels; read back by [`Owner::parse`].
    pub fn parse(s: &str) -> Option<Owner> {
        let (pid, start) = s.trim().split_once('.')?;
        Some(Owner {
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.pid, self.start)
    }
}

/// The start time of a live (non-zombie) process, `None` when there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Field 3 is the state; a zombie has exited.
    if fields.next()? == "Z" {
        return None;
    }
    // Fields 4..=21 come before the start time (field 22).
    fields.nth(18)?.parse().ok()
}

/// An id of this machine, so state kept on a shared engine (Docker) is only judged by the host
/// whose pids it names.
pub fn host_id() -> String {
    for p in ["/etc/machine-id", "/proc/sys/kernel/random/boot_id"] {
        if let Ok(s) = std::fs::read_to_string(p) {
            let s = s.trim();
            if !s.is_empty() {
                return s.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
            }
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_round_trips() {
        let me = Owner::me();
        assert!(me.start > 0);
        assert!(me.is_alive());
        assert_eq!(Owner::parse(&me.to_string()), Some(me));
        let reused = Owner {
            start: me.start + 1,
            ..me
        };
        assert!(!reused.is_alive(), "same pid, other start: another process");
    }

    #[test]
    #[allow(clippy::disallowed_methods, reason = "a test starts a child to reap")]
    fn a_reaped_child_is_dead() {
        let mut c = std::process::Command::new("true").spawn().expect("spawn");
        let o = Owner {
            pid: c.id(),
            start: start_time(c.id()).unwrap_or(1),
        };
        c.wait().expect("wait");
        assert!(!o.is_alive());
    }
}
