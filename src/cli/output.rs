//! Where the CLI writes: results to stdout, diagnostics to stderr, colour only on a terminal.

use std::io::{IsTerminal, Write};

use git_harness::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

pub struct Ui {
    pub color: bool,
    /// Progress bars and spinners: only on a terminal and outside CI.
    pub progress: bool,
}

impl Ui {
    #[allow(
        clippy::disallowed_methods,
        reason = "NO_COLOR and CI are the terminal's settings, read by the CLI"
    )]
    pub fn new(choice: ColorChoice) -> Self {
        let stdout_tty = std::io::stdout().is_terminal();
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => stdout_tty && std::env::var_os("NO_COLOR").is_none(),
        };
        let progress = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        Ui { color, progress }
    }

    /// A line of results on stdout.
    pub fn out(&mut self, line: impl AsRef<str>) {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{}", line.as_ref());
    }

    /// A line of diagnostics on stderr.
    pub fn note(&mut self, line: impl AsRef<str>) {
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "{}", line.as_ref());
    }

    pub fn warn(&mut self, line: impl AsRef<str>) {
        self.note(format!("warning: {}", line.as_ref()));
    }

    pub fn error(&mut self, err: &Error) {
        let mut msg = format!("error: {err}");
        let mut source = std::error::Error::source(err);
        // Our Git/Io variants already print their source; deeper causes are worth a line each.
        if let Some(s) = source {
            source = s.source();
        }
        while let Some(s) = source {
            msg.push_str(&format!("\n  caused by: {s}"));
            source = s.source();
        }
        self.note(msg);
        if let Some(h) = err.hint() {
            self.note(format!("hint: {h}"));
        }
    }

    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}
