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
            Kind::Internal => exit::INTERNAL,
        }
    }
}

/// Which part of the infrastructure failed. Trial results store it (`infra: sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfraClass {
    /// The model API: connection, HTTP status, timeouts, the local sim server.
    Model,
    /// Image build, container start, exec transport, setup.
    Sandbox,
    /// Verifier timed out or crashed, no reward file, unparseable reward.
    Verifier,
    /// None of a trial's parts: the repository's refs under contention, a tool a command
    /// drives, an evaluation that produced no evidence at all.
    Other,
}

impl InfraClass {
    pub fn as_str(self) -> &'static str {
        match self {
            InfraClass::Model => "model",
            InfraClass::Sandbox => "sandbox",
            InfraClass::Verifier => "verifier",
            InfraClass::Other => "other",
        }
    }

    /// An `Error::Infra` of this class; sandbox and verifier messages say which it is.
    pub fn error(self, message: impl AsRef<str>) -> Error {
        Error::Infra {
            class: self,
            message: format!("{}{}", self.prefix(), message.as_ref()),
            hint: None,
        }
    }

    pub fn error_hint(self, message: impl AsRef<str>, hint: impl Into<String>) -> Error {
        Error::Infra {
            class: self,
            message: format!("{}{}", self.prefix(), message.as_ref()),
            hint: Some(hint.into()),
        }
    }

    /// The class of an infrastructure error; `None` for every other error.
    pub fn of(err: &Error) -> Option<InfraClass> {
        match err {
            Error::Infra { class, .. } => Some(*class),
            _ => None,
        }
    }

    /// What a message made by [`InfraClass::error`] starts with: trial results store sandbox
    /// and verifier messages with it, so a reader of a result sees the class too.
    fn prefix(self) -> &'static str {
        match self {
            InfraClass::Sandbox => "sandbox: ",
            InfraClass::Verifier => "verifier: ",
            InfraClass::Model | InfraClass::Other => "",
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
        class: InfraClass,
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

    /// An infrastructure error outside a trial's parts (class `other`); a model, sandbox or
    /// verifier error is made by its class: `InfraClass::Sandbox.error(..)`.
    pub fn infra(message: impl AsRef<str>) -> Self {
        InfraClass::Other.error(message)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_infrastructure_class_is_a_field_not_a_prefix() {
        let e = InfraClass::Verifier.error("no reward file");
        assert_eq!(InfraClass::of(&e), Some(InfraClass::Verifier));
        assert_eq!(e.to_string(), "verifier: no reward file");
        // A message that merely starts like another class keeps its own.
        let e = InfraClass::Model.error("sandbox: a model message");
        assert_eq!(InfraClass::of(&e), Some(InfraClass::Model));
        assert_eq!(InfraClass::of(&Error::Internal("x".into())), None);
        assert_eq!(e.exit_code(), exit::CANNOT_TEST);
        assert_eq!(Error::Internal("x".into()).exit_code(), exit::INTERNAL);
    }
}
