//! Typed errors of the library. The CLI turns them into a message, a hint and an exit code.

use std::path::PathBuf;

use crate::exit;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What class of failure an error is; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The user asked for something invalid, or a config file is malformed.
    Usage,
    /// A negative answer (rejected, bad, refused).
    Negative,
    /// The gate could not decide.
    Indecisive,
    /// Infrastructure failed: sandbox, model API, verifier.
    Infra,
    /// Interrupted by the user.
    Interrupted,
    /// A bug or an unexpected condition of the environment (I/O, git object store).
    Internal,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage => exit::USAGE,
            Kind::Negative => exit::NEGATIVE,
            Kind::Indecisive => exit::INDECISIVE,
            Kind::Infra => exit::CANNOT_TEST,
            Kind::Interrupted => exit::INTERRUPTED,
            // Internal failures are "could not test" for bisect; never >= 128.
            Kind::Internal => exit::CANNOT_TEST,
        }
    }
}

/// Every error of the library. Messages are lowercase fragments that read after "failed to" or
/// stand alone; hints say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file (harness.yaml, experiment.yaml, splits.yaml, a surface file) is invalid.
    #[error("{}{}: {field}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config {
        file: PathBuf,
        line: Option<usize>,
        field: String,
        message: String,
        hint: Option<String>,
    },
    /// The user asked for something that cannot be done as asked.
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },
    /// A negative answer that is not an accident: refused promotion, rejected candidate.
    #[error("{message}")]
    Negative {
        message: String,
        hint: Option<String>,
    },
    /// The gate could not decide.
    #[error("{message}")]
    Indecisive {
        message: String,
        hint: Option<String>,
    },
    /// Infrastructure failure (sandbox, model API, verifier).
    #[error("{message}")]
    Infra {
        message: String,
        hint: Option<String>,
    },
    /// Interrupted by a signal; `run` is the unfinished run whose journal keeps what finished.
    #[error("interrupted{}", run.as_ref().map(|r| format!(": run {r} is unfinished")).unwrap_or_default())]
    Interrupted { run: Option<String> },
    /// A git operation failed.
    #[error("{context}: {source}")]
    Git {
        context: String,
        #[source]
        source: git2::Error,
    },
    /// A compare-and-swap ref update lost a race.
    #[error("ref {refname} moved from {expected} to {actual} while this command ran")]
    RefMoved {
        refname: String,
        expected: String,
        actual: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored record of a format version newer than this build reads.
    #[error("{record} at {place} has format {found}; this git-harness reads formats up to {known}")]
    Format {
        record: &'static str,
        place: String,
        found: u32,
        known: u32,
    },
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Config { .. } | Error::Usage { .. } | Error::Format { .. } => Kind::Usage,
            Error::Negative { .. } | Error::RefMoved { .. } => Kind::Negative,
            Error::Indecisive { .. } => Kind::Indecisive,
            Error::Infra { .. } => Kind::Infra,
            Error::Interrupted { .. } => Kind::Interrupted,
            Error::Git { .. } | Error::Io { .. } | Error::Internal(_) => Kind::Internal,
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }

    /// What the user can do about it, when we know.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Config { hint, .. }
            | Error::Usage { hint, .. }
            | Error::Negative { hint, .. }
            | Error::Indecisive { hint, .. }
            | Error::Infra { hint, .. } => hint.clone(),
            Error::RefMoved { .. } => Some(
                "another command updated it concurrently; re-run to work on the new tip".into(),
            ),
            Error::Interrupted { run: None } => None,
            Error::Interrupted { run: Some(r) } => Some(format!(
                "resume it with `git harness run --resume {r}`; running the same command again \
                 also reuses its finished trials"
            )),
            Error::Format { .. } => Some(
                "it was written by a newer git-harness; use that version (or newer) here".into(),
            ),
            Error::Git { .. } => None,
            Error::Io { .. } => None,
            Error::Internal(_) => {
                Some("this is a bug; please report it with the command you ran".into())
            }
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: None,
        }
    }

    pub fn usage_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn negative(message: impl Into<String>, hint: Option<String>) -> Self {
        Error::Negative {
            message: message.into(),
            hint,
        }
    }

    pub fn infra(message: impl Into<String>) -> Self {
        Error::Infra {
            message: message.into(),
            hint: None,
        }
    }

    pub fn config(
        file: impl Into<PathBuf>,
        line: Option<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Config {
            file: file.into(),
            line,
            field: field.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Attach a context to git errors: `repo.find_commit(id).git("read commit")?`.
pub trait GitContext<T> {
    fn git(self, context: impl Into<String>) -> Result<T>;
}

impl<T> GitContext<T> for std::result::Result<T, git2::Error> {
    fn git(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Git {
            context: context.into(),
            source,
        })
    }
}

/// Attach a path to I/O errors.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, std::io::Error> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
