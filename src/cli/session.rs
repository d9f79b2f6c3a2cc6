//! The set-up every command that evaluates shares: the workspace, the runtime, the evaluation
//! context with its warnings shown, and the interrupt channel. One `Session` per command, so a
//! new subcommand gets the same order of steps (and the same signal handling) as the others.

use std::future::Future;

use git_harness::eval::context::{Context, Overrides, open_context};
use git_harness::workspace::Workspace;
use git_harness::{Error, Result, method};

use super::Ui;

pub struct Session {
    // Declared first so it is dropped first: the runtime's tasks (and their sandboxes' drop
    // guards) end before the workspace they use goes.
    rt: tokio::runtime::Runtime,
    pub ws: Workspace,
}

impl Session {
    /// Opens the workspace of the current directory, finishing an interrupted promotion and
    /// sweeping stale run journals first (`method::open_workspace`).
    pub fn open() -> Result<Session> {
        Session::with(method::open_workspace()?)
    }

    /// A session on a workspace opened by the caller (without the recovery `open` does).
    pub fn with(ws: Workspace) -> Result<Session> {
        Ok(Session { rt: runtime()?, ws })
    }

    /// Overrides that hand the context the interrupt channel, installing the SIGINT/SIGTERM
    /// handler: for commands that run trials.
    pub fn interruptible() -> Overrides {
        super::signal::overrides()
    }

    /// Runs the command's asynchronous part to its end.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The evaluation context of the workspace, its warnings shown.
    pub async fn context(&self, ui: &mut Ui, overrides: &Overrides) -> Result<Context> {
        let ctx = open_context(&self.ws, overrides).await?;
        for w in &ctx.warnings {
            ui.warn(w);
        }
        Ok(ctx)
    }

    /// The evaluation context without showing its warnings (for commands that only read what
    /// was recorded).
    pub async fn quiet_context(&self, overrides: &Overrides) -> Result<Context> {
        open_context(&self.ws, overrides).await
    }
}

/// The multi-threaded runtime commands run on, also for those that need no workspace.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("start the async runtime: {e}")))
}
