//! The one hermetic environment of git and the binary in the tests, and `Out`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Once, OnceLock};

/// The fixed date of every commit the binary and git make in tests.
pub const DATE: &str = "@1700000000 +0000";

/// The built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_git-harness"))
}

/// The output of one command.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn ok(self) -> Out {
        self.code(0)
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Out {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl From<std::process::Output> for Out {
    fn from(o: std::process::Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Variables of the machine a test command still sees: where the Docker engine is (tests of
/// the Docker runner use the developer's engine) and where temp files go.
const PASSED_THROUGH: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "TMPDIR",
];

/// Make `cmd` see nothing of the machine but `PASSED_THROUGH`: every other inherited variable
/// is removed; HOME is `home`, no global or system git config, a fixed identity and date,
/// UTC, the C locale, no colour, CI (no progress bars), and the binary's directory first on
/// PATH. What the test set on `cmd` itself, before or after, stays.
pub fn hermetic_in<'a>(cmd: &'a mut Command, home: &Path) -> &'a mut Command {
    let set: Vec<OsString> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
    for (k, _) in std::env::vars_os() {
        if !set.contains(&k) && !PASSED_THROUGH.iter().any(|p| k == *p) {
            cmd.env_remove(&k);
        }
    }
    let fixed: [(&str, OsString); 16] = [
        ("PATH", path_with_bin()),
        ("HOME", home.into()),
        ("XDG_CONFIG_HOME", home.join(".config").into()),
        ("GIT_CONFIG_GLOBAL", "/dev/null".into()),
        ("GIT_CONFIG_NOSYSTEM", "1".into()),
        ("GIT_AUTHOR_NAME", "Ada Tester".into()),
        ("GIT_AUTHOR_EMAIL", "ada@example.com".into()),
        ("GIT_COMMITTER_NAME", "Ada Tester".into()),
        ("GIT_COMMITTER_EMAIL", "ada@example.com".into()),
        ("GIT_AUTHOR_DATE", DATE.into()),
        ("GIT_COMMITTER_DATE", DATE.into()),
        ("TZ", "UTC".into()),
        ("LC_ALL", "C".into()),
        ("CI", "true".into()),
        ("NO_COLOR", "1".into()),
        ("GIT_TERMINAL_PROMPT", "0".into()),
    ];
    for (k, v) in fixed {
        if !set.iter().any(|s| s == k) {
            cmd.env(k, v);
        }
    }
    hermetic_libgit2();
    cmd
}

/// `hermetic_in` with an empty HOME shared by the commands that belong to no repository.
pub fn hermetic(cmd: &mut Command) -> &mut Command {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    let home = HOME.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("gh-test-home-")
            .tempdir()
            .expect("create the shared empty home")
    });
    hermetic_in(cmd, home.path())
}

/// Run `cmd` hermetically and collect its output.
pub fn output(cmd: &mut Command) -> Out {
    hermetic(cmd).output().expect("run command").into()
}

/// libgit2 inside the test process must not read the developer's config either.
fn hermetic_libgit2() {
    static EMPTY: OnceLock<tempfile::TempDir> = OnceLock::new();
    static ONCE: Once = Once::new();
    let empty = EMPTY.get_or_init(|| tempfile::tempdir().expect("create empty dir"));
    ONCE.call_once(|| {
        for level in [
            git2::ConfigLevel::System,
            git2::ConfigLevel::XDG,
            git2::ConfigLevel::Global,
            git2::ConfigLevel::ProgramData,
        ] {
            // SAFETY: called once, before this process uses libgit2 configuration.
            unsafe { git2::opts::set_search_path(level, empty.path()) }
                .expect("set libgit2 config search path");
        }
    });
}

fn path_with_bin() -> OsString {
    let dir = bin().parent().expect("bin dir").to_path_buf();
    let mut paths = vec![dir];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).expect("join PATH")
}
