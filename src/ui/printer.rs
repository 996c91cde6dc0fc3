//! The only place that writes to stdout and stderr. Data goes to stdout, messages to stderr, so
//! `-o yaml | kubectl apply -f -` pipes cleanly. A closed stdout (`| head`) is not an error.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};

/// `-o`: structured data on stdout instead of the human table or diff. Derives clap's
/// `ValueEnum` so the command line takes these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
    Dim,
    Bold,
    Added,
    Removed,
    Header,
}

#[derive(Debug, Clone)]
pub struct Printer {
    pub color: bool,
    pub output: Option<OutputFormat>,
}

impl Printer {
    /// Colour only for a terminal, never with --no-color or NO_COLOR set.
    pub fn new(no_color: bool, output: Option<OutputFormat>) -> Self {
        let color = !no_color
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stderr().is_terminal();
        Self { color, output }
    }

    pub fn paint(&self, tone: Tone, text: &str) -> String {
        if !self.color || tone == Tone::Plain {
            return text.to_string();
        }
        let code = match tone {
            Tone::Plain => "0",
            Tone::Good | Tone::Added => "32",
            Tone::Warn => "33",
            Tone::Bad | Tone::Removed => "31",
            Tone::Dim => "2",
            Tone::Bold => "1",
            Tone::Header => "36",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// Data for stdout (tables, manifests, JSON).
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }

    /// A message for the operator, on stderr.
    pub fn say(&self, text: &str) {
        eprintln!("{text}");
    }

    pub fn say_tone(&self, tone: Tone, text: &str) {
        eprintln!("{}", self.paint(tone, text));
    }

    pub fn warn(&self, text: &str) {
        eprintln!("{} {text}", self.paint(Tone::Warn, "warning:"));
    }

    pub fn error(&self, text: &str) {
        eprintln!("{} {text}", self.paint(Tone::Bad, "error:"));
    }

    pub fn hint(&self, text: &str) {
        eprintln!("{} {text}", self.paint(Tone::Dim, "hint:"));
    }

    /// Serialise `value` as the chosen -o format on stdout.
    pub fn structured<T: serde::Serialize>(&self, value: &T) {
        match self.output {
            Some(OutputFormat::Json) => {
                self.data(&serde_json::to_string_pretty(value).expect("serialisable"))
            }
            Some(OutputFormat::Yaml) | None => self.data(&crate::yaml::to_yaml(value)),
        }
    }
}
