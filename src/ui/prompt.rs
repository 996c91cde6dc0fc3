//! Confirmation prompts behind a trait, so tests script the answers.
//!
//! At a terminal every answer is a line: `y`/`yes` or `n`/`no` and Enter, Enter alone being the
//! safe default ("no"). A prompt that reacted to single keys let keystrokes typed ahead answer
//! the next question (`y` and Enter answered two prompts), so each prompt first discards what
//! was typed before it appeared, and re-asks on anything it does not understand. While a prompt
//! reads, the terminal does not turn Ctrl-C into a signal: the prompt sees the key and cancels
//! cleanly (exit 130), as it does on Ctrl-D. Without a terminal and without --yes we refuse with
//! a clear message instead of hanging or guessing.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use rustix::termios::{self, LocalModes, OptionalActions, QueueSelector, SpecialCodeIndex};

use crate::error::{Error, Result};

pub trait Prompter: Send + Sync {
    /// Yes/no, "no" unless the operator says yes. Err(Cancelled) on Ctrl-C or Ctrl-D.
    fn confirm(&self, question: &str) -> Result<bool>;
    /// The operator must type `expected` exactly (lockdown types the context name).
    fn type_to_confirm(&self, question: &str, expected: &str) -> Result<bool>;
    /// Yes within `timeout`, else false (commit-confirmed lockdown). Err(Cancelled) on Ctrl-C or
    /// Ctrl-D: the caller undoes what it is waiting to have confirmed.
    fn confirm_within(&self, question: &str, timeout: Duration) -> Result<bool>;
}

/// --yes: every question answers itself.
pub struct AssumeYes;

impl Prompter for AssumeYes {
    fn confirm(&self, _: &str) -> Result<bool> {
        Ok(true)
    }
    fn type_to_confirm(&self, _: &str, _: &str) -> Result<bool> {
        Ok(true)
    }
    fn confirm_within(&self, _: &str, _: Duration) -> Result<bool> {
        Ok(true)
    }
}

/// No terminal and no --yes: refuse before anything changes.
pub struct NoTerminal {
    /// Which of stdin and stderr is not a terminal, for the message.
    pub missing: &'static str,
}

impl NoTerminal {
    fn refusal(&self) -> Error {
        Error::refused(
            format!(
                "refusing to change the cluster without confirmation: {} not a terminal",
                self.missing
            ),
            Some("review the changes with --dry-run, then re-run with --yes".into()),
        )
    }
}

impl Prompter for NoTerminal {
    fn confirm(&self, _: &str) -> Result<bool> {
        Err(self.refusal())
    }
    fn type_to_confirm(&self, _: &str, _: &str) -> Result<bool> {
        Err(self.refusal())
    }
    fn confirm_within(&self, _: &str, _: Duration) -> Result<bool> {
        Err(self.refusal())
    }
}

/// The prompter this run uses. The question goes to stderr and the answer comes from stdin, so
/// both must be a terminal: a prompt nobody can see is not a confirmation.
pub fn for_run(yes: bool) -> Box<dyn Prompter> {
    if yes {
        return Box::new(AssumeYes);
    }
    let missing = match (
        std::io::stdin().is_terminal(),
        std::io::stderr().is_terminal(),
    ) {
        (true, true) => return Box::new(TerminalPrompter),
        (false, true) => "stdin is",
        (true, false) => "stderr is",
        (false, false) => "stdin and stderr are",
    };
    Box::new(NoTerminal { missing })
}

/// What a yes/no answer means: `None` asks again. Enter alone takes `default`.
pub fn parse_yes_no(typed: &str, default: bool) -> Option<bool> {
    match typed.trim().to_lowercase().as_str() {
        "" => Some(default),
        "y" | "yes" => Some(true),
        "n" | "no" => Some(false),
        _ => None,
    }
}

/// The choices after a question, the default in capitals (`[y/N]`).
fn choices(default: bool) -> &'static str {
    if default { "[Y/n]" } else { "[y/N]" }
}

const REASK: &str = "please answer y (yes) or n (no); Enter alone means no";

/// An interactive terminal: stdin and stderr.
pub struct TerminalPrompter;

impl Prompter for TerminalPrompter {
    fn confirm(&self, question: &str) -> Result<bool> {
        // Without a deadline there is always an answer; no is the safe reading of none.
        Ok(ask_yes_no(question, None)?.unwrap_or(false))
    }

    fn type_to_confirm(&self, question: &str, expected: &str) -> Result<bool> {
        let terminal = Terminal::open()?;
        show(format!("{question}: "))?;
        let Line::Typed(typed) = terminal.read_line(None)? else {
            return Ok(false);
        };
        Ok(typed.trim() == expected)
    }

    fn confirm_within(&self, question: &str, timeout: Duration) -> Result<bool> {
        let answer = ask_yes_no(question, Some(Instant::now() + timeout))?;
        if answer.is_none() {
            show(format!("\nno answer within {}s\n", timeout.as_secs()))?;
        }
        Ok(answer.unwrap_or(false))
    }
}

/// Ask until the answer is clear; `None` when `deadline` passes first.
fn ask_yes_no(question: &str, deadline: Option<Instant>) -> Result<Option<bool>> {
    let terminal = Terminal::open()?;
    loop {
        show(format!("{question} {} ", choices(false)))?;
        let Line::Typed(typed) = terminal.read_line(deadline)? else {
            return Ok(None);
        };
        match parse_yes_no(&typed, false) {
            Some(answer) => return Ok(Some(answer)),
            None => show(format!("{REASK}\n"))?,
        }
    }
}

/// How reading an answer ended, short of a cancellation.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Typed(String),
    TimedOut,
}

/// Ctrl-C: the terminal hands it over as a key while a prompt reads.
const CTRL_C: u8 = 0x03;
/// Ctrl-D: end of input.
const CTRL_D: u8 = 0x04;
const CTRL_U: u8 = 0x15;
const BACKSPACE: u8 = 0x08;
const DELETE: u8 = 0x7f;
const ESCAPE: u8 = 0x1b;

/// What one key does to the line being typed.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Keep reading; show these bytes (the echo, or what erases a character).
    Show(Vec<u8>),
    Enter(String),
    Interrupt,
    EndOfInput,
}

/// Where the editor is within an escape sequence (arrow keys and the like), which it ignores.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Started,
    /// After `ESC [` or `ESC O`, until a final byte.
    Sequence,
}

/// The line typed so far, edited as a terminal in canonical mode would: printable text is
/// echoed, Backspace and Ctrl-U erase, Enter ends the line. Kept free of I/O to test it.
#[derive(Debug, Default)]
struct LineEditor {
    typed: Vec<u8>,
    escape: Escape,
}

impl LineEditor {
    fn feed(&mut self, byte: u8) -> Step {
        match self.escape {
            Escape::Started => {
                self.escape = if byte == b'[' || byte == b'O' {
                    Escape::Sequence
                } else {
                    Escape::None
                };
                return Step::Show(Vec::new());
            }
            Escape::Sequence => {
                if (0x40..=0x7e).contains(&byte) {
                    self.escape = Escape::None;
                }
                return Step::Show(Vec::new());
            }
            Escape::None => {}
        }
        match byte {
            b'\r' | b'\n' => {
                Step::Enter(String::from_utf8_lossy(&std::mem::take(&mut self.typed)).into_owned())
            }
            CTRL_C => Step::Interrupt,
            CTRL_D => Step::EndOfInput,
            BACKSPACE | DELETE => Step::Show(self.erase_last()),
            CTRL_U => {
                let mut erase = Vec::new();
                while !self.typed.is_empty() {
                    erase.extend(self.erase_last());
                }
                Step::Show(erase)
            }
            ESCAPE => {
                self.escape = Escape::Started;
                Step::Show(Vec::new())
            }
            byte if byte < 0x20 => Step::Show(Vec::new()),
            byte => {
                self.typed.push(byte);
                Step::Show(vec![byte])
            }
        }
    }

    /// Drop the last character (all bytes of it) and say how to erase it on screen.
    fn erase_last(&mut self) -> Vec<u8> {
        let Some(last_start) = self
            .typed
            .iter()
            .rposition(|byte| byte & 0b1100_0000 != 0b1000_0000)
        else {
            self.typed.clear();
            return Vec::new();
        };
        self.typed.truncate(last_start);
        b"\x08 \x08".to_vec()
    }
}

/// stdin switched to reading key by key (no echo, no line editing, no signal on Ctrl-C) for
/// one prompt; the previous mode comes back on drop.
struct Terminal {
    saved: termios::Termios,
}

/// How often a waiting prompt looks at its deadline and at a Ctrl-C delivered as a signal.
const TICK: Duration = Duration::from_millis(100);

impl Terminal {
    fn open() -> Result<Self> {
        let stdin = std::io::stdin();
        let fd = stdin.as_fd();
        let saved =
            termios::tcgetattr(fd).map_err(|e| terminal_error("read the terminal mode", e))?;
        let mut keys = saved.clone();
        keys.local_modes
            .remove(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG | LocalModes::IEXTEN);
        keys.special_codes[SpecialCodeIndex::VMIN] = 1;
        keys.special_codes[SpecialCodeIndex::VTIME] = 0;
        termios::tcsetattr(fd, OptionalActions::Now, &keys)
            .map_err(|e| terminal_error("set the terminal mode", e))?;
        let terminal = Self { saved };
        // Now that input is not held back in lines, a partly typed line counts too.
        let typed_ahead = rustix::io::ioctl_fionread(fd).unwrap_or(0) > 0;
        termios::tcflush(fd, QueueSelector::IFlush)
            .map_err(|e| terminal_error("discard input typed ahead", e))?;
        if typed_ahead {
            show("(ignored what was typed before this question)\n")?;
        }
        Ok(terminal)
    }

    /// One answer, up to Enter. Ctrl-C, Ctrl-D and a closed terminal cancel.
    fn read_line(&self, deadline: Option<Instant>) -> Result<Line> {
        let stdin = std::io::stdin();
        let fd = stdin.as_fd();
        let mut editor = LineEditor::default();
        loop {
            if crate::interrupt::requested() {
                return Err(cancelled("Ctrl-C"));
            }
            let wait = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Line::TimedOut);
                    }
                    left.min(TICK)
                }
                None => TICK,
            };
            if !key_waiting(fd, wait)? {
                continue;
            }
            let mut key = [0u8; 1];
            match rustix::io::read(fd, &mut key) {
                Ok(0) => return Err(cancelled("end of input")),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                Err(e) => return Err(terminal_error("read the answer", e)),
            }
            match editor.feed(key[0]) {
                Step::Show(bytes) => show(bytes)?,
                Step::Enter(typed) => {
                    show("\n")?;
                    return Ok(Line::Typed(typed));
                }
                Step::Interrupt => return Err(cancelled("Ctrl-C")),
                Step::EndOfInput => return Err(cancelled("Ctrl-D")),
            }
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// Ctrl-C, Ctrl-D or a closed terminal at a prompt; the line ends so the message stands alone.
fn cancelled(how: &str) -> Error {
    let _ = show("\n");
    Error::Cancelled(format!(
        "cancelled at the prompt ({how}): what it asked about was not done"
    ))
}

/// Text for the operator, on stderr, where the questions are.
fn show(text: impl AsRef<[u8]>) -> Result<()> {
    let mut stderr = std::io::stderr().lock();
    stderr
        .write_all(text.as_ref())
        .and_then(|()| stderr.flush())
        .map_err(|e| Error::Cancelled(format!("cancelled: cannot write the prompt: {e}")))
}

/// Whether a key can be read within `wait`.
fn key_waiting(fd: BorrowedFd<'_>, wait: Duration) -> Result<bool> {
    let timeout = rustix::event::Timespec::try_from(wait).unwrap_or(rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    });
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(ready) => Ok(ready > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(terminal_error("wait for the answer", e)),
    }
}

fn terminal_error(what: &str, err: rustix::io::Errno) -> Error {
    Error::Cancelled(format!(
        "cancelled: cannot {what} ({}); nothing was changed by the prompt",
        std::io::Error::from(err)
    ))
}

/// Answers from a list, for tests.
pub struct Scripted(pub std::sync::Mutex<Vec<bool>>);

impl Scripted {
    pub fn new(answers: &[bool]) -> Self {
        Self(std::sync::Mutex::new(
            answers.iter().rev().copied().collect(),
        ))
    }
    fn next(&self) -> Result<bool> {
        self.0
            .lock()
            .expect("not poisoned")
            .pop()
            .ok_or_else(|| Error::Cancelled("no scripted answer left".into()))
    }
}

impl Prompter for Scripted {
    fn confirm(&self, _: &str) -> Result<bool> {
        self.next()
    }
    fn type_to_confirm(&self, _: &str, _: &str) -> Result<bool> {
        self.next()
    }
    fn confirm_within(&self, _: &str, _: Duration) -> Result<bool> {
        self.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_and_no_in_any_case_enter_alone_is_the_default_anything_else_asks_again() {
        for yes in ["y", "Y", "yes", "YES", "Yes", " y ", "yes\t"] {
            assert_eq!(parse_yes_no(yes, false), Some(true), "{yes:?}");
        }
        for no in ["n", "N", "no", "NO", " No "] {
            assert_eq!(parse_yes_no(no, true), Some(false), "{no:?}");
        }
        assert_eq!(parse_yes_no("", false), Some(false));
        assert_eq!(parse_yes_no("   ", false), Some(false));
        assert_eq!(parse_yes_no("", true), Some(true));
        for unclear in ["yy", "ye", "yes please", "nope", "j", "1", "y n", "ja"] {
            assert_eq!(parse_yes_no(unclear, false), None, "{unclear:?}");
        }
    }

    #[test]
    fn the_default_is_the_capital_choice() {
        assert_eq!(choices(false), "[y/N]");
        assert_eq!(choices(true), "[Y/n]");
    }

    fn typed(keys: &[u8]) -> (Vec<u8>, Option<Step>) {
        let mut editor = LineEditor::default();
        let mut shown = Vec::new();
        for &key in keys {
            match editor.feed(key) {
                Step::Show(bytes) => shown.extend(bytes),
                end => return (shown, Some(end)),
            }
        }
        (shown, None)
    }

    #[test]
    fn a_line_ends_at_enter_from_either_key() {
        assert_eq!(typed(b"yes\r").1, Some(Step::Enter("yes".into())));
        assert_eq!(typed(b"no\n").1, Some(Step::Enter("no".into())));
        assert_eq!(typed(b"\r").1, Some(Step::Enter(String::new())));
        assert_eq!(typed(b"yes").1, None, "no answer before Enter");
    }

    #[test]
    fn typed_text_is_echoed_and_erased_by_backspace_and_ctrl_u() {
        let (shown, end) = typed(b"yx\x7f\r");
        assert_eq!(end, Some(Step::Enter("y".into())));
        assert_eq!(shown, b"yx\x08 \x08");
        assert_eq!(typed(b"no\x15yes\r").1, Some(Step::Enter("yes".into())));
        assert_eq!(typed(b"\x08\x08y\r").1, Some(Step::Enter("y".into())));
    }

    #[test]
    fn backspace_removes_a_whole_multibyte_character() {
        let keys = ["jä".as_bytes(), b"\x7f\r"].concat();
        assert_eq!(typed(&keys).1, Some(Step::Enter("j".into())));
    }

    #[test]
    fn ctrl_c_and_ctrl_d_end_the_prompt_wherever_they_are_typed() {
        assert_eq!(typed(b"\x03").1, Some(Step::Interrupt));
        assert_eq!(typed(b"ye\x03s\r").1, Some(Step::Interrupt));
        assert_eq!(typed(b"\x04").1, Some(Step::EndOfInput));
        assert_eq!(typed(b"y\x04\r").1, Some(Step::EndOfInput));
    }

    #[test]
    fn arrow_keys_and_other_control_keys_are_ignored() {
        let (shown, end) = typed(b"\x1b[Ay\x1b[D\x1bOB\te\x1b[3~s\r");
        assert_eq!(end, Some(Step::Enter("yes".into())));
        assert_eq!(shown, b"yes");
    }

    #[test]
    fn without_terminals_the_refusal_names_what_is_missing_and_how_to_go_on() {
        let err = NoTerminal {
            missing: "stdin is",
        }
        .confirm("Apply?")
        .unwrap_err();
        assert_eq!(err.exit_status(), crate::exit::ExitStatus::Failure);
        assert!(err.to_string().contains("stdin is not a terminal"), "{err}");
        assert!(err.hint().unwrap().contains("--yes"));
    }

    #[test]
    fn assume_yes_answers_everything() {
        assert!(AssumeYes.confirm("?").unwrap());
        assert!(AssumeYes.type_to_confirm("?", "ctx").unwrap());
        assert!(AssumeYes.confirm_within("?", Duration::ZERO).unwrap());
    }
}
