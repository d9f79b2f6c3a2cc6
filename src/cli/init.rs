//! `git harness init`: create (or adopt) a harness repository.

use git_harness::Result;

use super::Ui;

/// Create a harness repository from a template and commit it.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to create or adopt (default: the current directory).
    pub dir: Option<std::path::PathBuf>,
}

pub fn run(_ui: &mut Ui, _args: Args) -> Result<i32> {
    Err(git_harness::Error::usage("init is being written"))
}
