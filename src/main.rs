//! The `git-harness` binary: parse arguments, run the command, map errors to exit codes.

mod cli;

fn main() {
    let code = cli::main();
    std::process::exit(code);
}
