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
    /// Colour on stderr, where messages go.
    pub color: bool,
    /// Colour on stdout, where data goes: only when stdout itself is a terminal, so that
    /// `... | less` or a file never gets escape codes.
    pub color_stdout: bool,
    pub output: Option<OutputFormat>,
}

impl Printer {
    /// Colour only for a terminal, never with --no-color or NO_COLOR set.
    pub fn new(no_color: bool, output: Option<OutputFormat>) -> Self {
        let allowed = !no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Self {
            color: allowed && std::io::stderr().is_terminal(),
            color_stdout: allowed && std::io::stdout().is_terminal(),
            output,
        }
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

    /// Data for stdout (tables, manifests, JSON). Text painted for the terminal loses its colour
    /// codes when stdout is not one.
    pub fn data(&self, text: &str) {
        let plain;
        let text = if self.color && !self.color_stdout {
            plain = without_colour_codes(text);
            plain.as_str()
        } else {
            text
        };
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
            // Streamed: a fleet's flow report is tens of megabytes, never held as one string
            // (JSON escapes control characters, so there are no colour codes to remove).
            Some(OutputFormat::Json) => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                match serde_json::to_writer_pretty(&mut out, value) {
                    Ok(()) => {
                        let _ = out.write_all(b"\n");
                        let _ = out.flush();
                    }
                    // A closed pipe (`| head`) ends the output, as in `data`.
                    Err(err) => assert!(err.is_io(), "serialisable: {err}"),
                }
            }
            Some(OutputFormat::Yaml) | None => self.data(&crate::yaml::to_yaml(value)),
        }
    }
}

/// `text` without the SGR escape sequences `paint` adds (`ESC [ digits m`).
fn without_colour_codes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("\x1b[") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let digits = after
            .find(|c: char| !c.is_ascii_digit() && c != ';')
            .unwrap_or(after.len());
        if after[digits..].starts_with('m') {
            rest = &after[digits + 1..];
        } else {
            out.push_str("\x1b[");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod colour_tests {
    use super::*;

    #[test]
    fn colour_codes_are_removed_and_other_text_kept() {
        let painter = Printer {
            color: true,
            color_stdout: false,
            output: None,
        };
        let painted = format!(
            "{} and {}",
            painter.paint(Tone::Added, "+ kind: X"),
            painter.paint(Tone::Bold, "b")
        );
        assert_eq!(without_colour_codes(&painted), "+ kind: X and b");
        assert_eq!(without_colour_codes("a \x1b[ b"), "a \x1b[ b");
        assert_eq!(without_colour_codes("plain"), "plain");
    }
}
