//! The argument enums several commands share, each with its meaning in the library.

use git_harness::experiment::{GateRule, ProposerKind, RunnerKind, Split};

/// `--format` of a command that prints text or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `--format` of a command whose report also fits a pull-request comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Markdown,
}

/// One gated split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    #[value(name = "held_in", alias = "held-in")]
    HeldIn,
    Validation,
}

impl SplitArg {
    pub fn split(self) -> Split {
        match self {
            SplitArg::HeldIn => Split::HeldIn,
            SplitArg::Validation => Split::Validation,
        }
    }
}

/// One gated split, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitsArg {
    #[value(name = "held_in", alias = "held-in")]
    HeldIn,
    Validation,
    All,
}

impl SplitsArg {
    pub fn splits(self) -> Vec<Split> {
        match self {
            SplitsArg::HeldIn => vec![Split::HeldIn],
            SplitsArg::Validation => vec![Split::Validation],
            SplitsArg::All => vec![Split::HeldIn, Split::Validation],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunnerArg {
    Local,
    Docker,
    /// Docker for tasks whose environment needs an image, local otherwise.
    Auto,
    /// One Pod per trial on the cluster of runner.kubernetes.
    Kubernetes,
}

impl RunnerArg {
    pub fn kind(self) -> RunnerKind {
        match self {
            RunnerArg::Local => RunnerKind::Local,
            RunnerArg::Docker => RunnerKind::Docker,
            RunnerArg::Auto => RunnerKind::Auto,
            RunnerArg::Kubernetes => RunnerKind::Kubernetes,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GateArg {
    Paper,
    Strict,
}

impl GateArg {
    pub fn rule(self) -> GateRule {
        match self {
            GateArg::Paper => GateRule::Paper,
            GateArg::Strict => GateRule::Strict,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProposerArg {
    Model,
    Catalog,
}

impl ProposerArg {
    pub fn kind(self) -> ProposerKind {
        match self {
            ProposerArg::Model => ProposerKind::Model,
            ProposerArg::Catalog => ProposerKind::Catalog,
        }
    }
}
