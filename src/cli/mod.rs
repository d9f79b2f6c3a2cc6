//! The command line. One file per subcommand: an `Args` struct and a `run` function. All
//! printing lives here.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the command line is the one place that prints"
)]

mod args;
mod bisect;
mod check;
mod ci;
mod demo;
mod estimate;
mod evolve;
mod export;
mod forward;
mod image;
mod import;
mod init;
mod install_man;
mod log;
mod mine;
mod noise;
mod output;
mod progress;
mod promote;
mod propose;
mod regrade;
mod report;
mod report_final;
mod revalidate;
mod run;
mod session;
mod show;
mod signal;
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
    /// Diagnostics on stderr: -v the library's debug messages (model retries among them), -vv
    /// everything. RUST_LOG, when set, decides instead.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
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
    Regrade(regrade::Args),
    Mine(mine::Args),
    Propose(propose::Args),
    Validate(validate::Args),
    Evolve(evolve::Args),
    Estimate(estimate::Args),
    Check(check::Args),
    Noise(noise::Args),
    Revalidate(revalidate::Args),
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
    #[command(name = "__forward", hide = true)]
    Forward(forward::Args),
    #[command(name = "__tunnel", hide = true)]
    Tunnel(forward::TunnelArgs),
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
    diagnostics(cli.verbose);
    let mut ui = Ui::new(cli.color);
    if let Some(dir) = &cli.chdir
        && let Err(e) = std::env::set_current_dir(dir)
    {
        ui.error(&Error::io(dir, e));
        return exit::USAGE;
    }
    // A panic is an internal error (70), never Rust's 101; under `check`, which `git bisect
    // run` drives, "cannot test" (125) like every other failure to evaluate, since bisect would
    // read any other code as a bad revision. The hook has printed the message.
    let bisect_contract = matches!(cli.command, Command::Check(_));
    let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        dispatch(&mut ui, cli.command)
    })) {
        Ok(r) => r,
        Err(_) => {
            ui.error(&Error::Internal("the command panicked".into()));
            return if bisect_contract {
                exit::CANNOT_TEST
            } else {
                exit::INTERNAL
            };
        }
    };
    if matches!(result, Err(Error::Interrupted { .. })) {
        // An abort can cut a sandbox's creation short while a blocking task still fills its
        // temp dir; the command's runtime is gone now, so what is left of ours goes.
        git_harness::sandbox::local::sweep_own_temp_dirs(&std::env::temp_dir());
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            ui.error(&e);
            e.exit_code()
        }
    }
}

/// The library's `tracing` events on stderr: off unless asked for, so output stays the same.
fn diagnostics(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => EnvFilter::new(match verbose {
            0 => "off",
            1 => "git_harness=debug",
            _ => "trace",
        }),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn dispatch(ui: &mut Ui, command: Command) -> git_harness::Result<i32> {
    match command {
        Command::Init(a) => init::run(ui, a),
        Command::Split(a) => split::run(ui, a),
        Command::Status(a) => status::run(ui, a),
        Command::Log(a) => log::run(ui, a),
        Command::Show(a) => show::run(ui, a),
        Command::Promote(a) => promote::run(ui, a),
        Command::Run(a) => run::run(ui, a),
        Command::Import(a) => import::run(ui, a),
        Command::Regrade(a) => regrade::run(ui, a),
        Command::Mine(a) => mine::run(ui, a),
        Command::Propose(a) => propose::run(ui, a),
        Command::Validate(a) => validate::run(ui, a),
        Command::Evolve(a) => evolve::run(ui, a),
        Command::Estimate(a) => estimate::run(ui, a),
        Command::Check(a) => check::run(ui, a),
        Command::Noise(a) => noise::run(ui, a),
        Command::Revalidate(a) => revalidate::run(ui, a),
        Command::Ci(a) => ci::run(ui, a),
        Command::Bisect(a) => bisect::run(ui, a),
        Command::Demo(a) => demo::run(ui, a),
        Command::Tasks(a) => tasks::run(ui, a),
        Command::Image(a) => image::run(ui, a),
        Command::Export(a) => export::run(ui, a),
        Command::Trace(a) => trace::run(ui, a),
        Command::Report(a) => report::run(ui, a),
        Command::Why(a) => why::run(ui, a),
        Command::InstallMan(a) => install_man::run(ui, a),
        Command::Forward(a) => forward::run(ui, a),
        Command::Tunnel(a) => forward::tunnel(ui, a),
    }
}
