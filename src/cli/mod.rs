//! The command line. One file per subcommand: an `Args` struct and a `run` function. All
//! printing lives here.

mod bisect;
mod check;
mod ci;
mod demo;
mod estimate;
mod evolve;
mod export;
mod image;
mod import;
mod init;
mod install_man;
mod log;
mod mine;
mod output;
mod progress;
mod promote;
mod propose;
mod report;
mod report_final;
mod run;
mod show;
mod split;
mod status;
mod tasks;
mod trace;
mod validate;
mod why;

use clap::{Parser, Subcommand};

use git_harness::Error;
use git_harness::exit;

pub use output::Ui;

#[derive(Parser, Debug)]
#[command(
    name = "git-harness",
    bin_name = "git harness",
    version,
    about = "Keep an LLM-agent harness in git and improve it one validated branch at a time",
    after_help = exit::TABLE
)]
pub struct Cli {
    /// Run as if started in DIR.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub chdir: Option<std::path::PathBuf>,
    /// When to colour output.
    #[arg(long, global = true, value_enum, default_value_t = output::ColorChoice::Auto)]
    pub color: output::ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Init(init::Args),
    Split(split::Args),
    Status(status::Args),
    Log(log::Args),
    Show(show::Args),
    Promote(promote::Args),
    Run(run::Args),
    Import(import::Args),
    Mine(mine::Args),
    Propose(propose::Args),
    Validate(validate::Args),
    Evolve(evolve::Args),
    Estimate(estimate::Args),
    Check(check::Args),
    Ci(ci::Args),
    Bisect(bisect::Args),
    Demo(demo::Args),
    Tasks(tasks::Args),
    Image(image::Args),
    Export(export::Args),
    Trace(trace::Args),
    Report(report::Args),
    Why(why::Args),
    InstallMan(install_man::Args),
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            };
            let _ = e.print();
            return code;
        }
    };
    let mut ui = Ui::new(cli.color);
    if let Some(dir) = &cli.chdir
        && let Err(e) = std::env::set_current_dir(dir)
    {
        ui.error(&Error::io(dir, e));
        return exit::USAGE;
    }
    let result = match cli.command {
        Command::Init(a) => init::run(&mut ui, a),
        Command::Split(a) => split::run(&mut ui, a),
        Command::Status(a) => status::run(&mut ui, a),
        Command::Log(a) => log::run(&mut ui, a),
        Command::Show(a) => show::run(&mut ui, a),
        Command::Promote(a) => promote::run(&mut ui, a),
        Command::Run(a) => run::run(&mut ui, a),
        Command::Import(a) => import::run(&mut ui, a),
        Command::Mine(a) => mine::run(&mut ui, a),
        Command::Propose(a) => propose::run(&mut ui, a),
        Command::Validate(a) => validate::run(&mut ui, a),
        Command::Evolve(a) => evolve::run(&mut ui, a),
        Command::Estimate(a) => estimate::run(&mut ui, a),
        Command::Check(a) => check::run(&mut ui, a),
        Command::Ci(a) => ci::run(&mut ui, a),
        Command::Bisect(a) => bisect::run(&mut ui, a),
        Command::Demo(a) => demo::run(&mut ui, a),
        Command::Tasks(a) => tasks::run(&mut ui, a),
        Command::Image(a) => image::run(&mut ui, a),
        Command::Export(a) => export::run(&mut ui, a),
        Command::Trace(a) => trace::run(&mut ui, a),
        Command::Report(a) => report::run(&mut ui, a),
        Command::Why(a) => why::run(&mut ui, a),
        Command::InstallMan(a) => install_man::run(&mut ui, a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            ui.error(&e);
            e.exit_code()
        }
    }
}
