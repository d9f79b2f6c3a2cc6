//! `git harness install-man`: manual pages generated from the command-line definitions.

use std::path::PathBuf;

use clap::CommandFactory;
use git_harness::error::IoContext;
use git_harness::{Error, Result, exit};

use super::{Cli, Ui};

/// Install the manual pages, so that `git harness --help` works.
///
/// git answers `git harness --help` with `man git-harness`. This writes git-harness.1 and one
/// page per command (git-harness-run.1, ...), generated from the same definitions as `-h`, into
/// PREFIX/share/man/man1.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Install under PREFIX/share/man [default: ~/.local, which man searches beside
    /// ~/.local/bin].
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
}

#[allow(
    clippy::disallowed_methods,
    reason = "the default prefix is under the user's HOME, which only the CLI reads"
)]
pub fn run(ui: &mut Ui, args: Args) -> Result<i32> {
    let prefix = match args.prefix {
        Some(p) => p,
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".local"))
            .ok_or_else(|| Error::usage_hint("HOME is not set", "pass --prefix DIR"))?,
    };
    let dir = prefix.join("share").join("man").join("man1");
    std::fs::create_dir_all(&dir).at(&dir)?;
    clap_mangen::generate_to(Cli::command(), &dir).at(&dir)?;
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .at(&dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("git-harness") && n.ends_with(".1"))
        .collect();
    pages.sort();
    ui.out(format!(
        "Installed {} manual pages in {}",
        pages.len(),
        dir.display()
    ));
    ui.note(format!(
        "`git harness --help` opens them; if man does not find them, add {} to MANPATH",
        prefix.join("share").join("man").display()
    ));
    Ok(exit::SUCCESS)
}
