//! Confirmation prompts behind a trait, so tests script the answers. dialoguer refuses
//! non-terminals; without a terminal and without --yes we refuse with a clear message instead of
//! hanging or guessing.

use std::io::IsTerminal;
use std::time::Duration;

use crate::error::{Error, Result};

pub trait Prompter: Send + Sync {
    /// Yes/no. Err(Cancelled) on Ctrl-C.
    fn confirm(&self, question: &str) -> Result<bool>;
    /// The operator must type `expected` exactly (lockdown types the context name).
    fn type_to_confirm(&self, question: &str, expected: &str) -> Result<bool>;
    /// Yes within `timeout`, else false (commit-confirmed lockdown).
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
pub struct NoTerminal;

fn no_terminal() -> Error {
    Error::refused(
        "refusing to change the cluster without confirmation: stdin is not a terminal",
        Some("review the changes with --dry-run, then re-run with --yes".into()),
    )
}

impl Prompter for NoTerminal {
    fn confirm(&self, _: &str) -> Result<bool> {
        Err(no_terminal())
    }
    fn type_to_confirm(&self, _: &str, _: &str) -> Result<bool> {
        Err(no_terminal())
    }
    fn confirm_within(&self, _: &str, _: Duration) -> Result<bool> {
        Err(no_terminal())
    }
}

/// An interactive terminal.
pub struct TerminalPrompter;

fn interrupted(err: dialoguer::Error) -> Error {
    Error::Cancelled(format!(
        "cancelled at the prompt ({err}); nothing was changed by it"
    ))
}

impl Prompter for TerminalPrompter {
    fn confirm(&self, question: &str) -> Result<bool> {
        dialoguer::Confirm::new()
            .with_prompt(question)
            .default(false)
            .interact()
            .map_err(interrupted)
    }

    fn type_to_confirm(&self, question: &str, expected: &str) -> Result<bool> {
        let typed: String = dialoguer::Input::new()
            .with_prompt(question)
            .allow_empty(true)
            .interact_text()
            .map_err(interrupted)?;
        Ok(typed.trim() == expected)
    }

    fn confirm_within(&self, question: &str, timeout: Duration) -> Result<bool> {
        let question = question.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        // The prompt thread is abandoned on timeout; the process is about to restore and exit.
        std::thread::spawn(move || {
            let answer = dialoguer::Confirm::new()
                .with_prompt(question)
                .default(false)
                .interact()
                .map_err(interrupted);
            let _ = tx.send(answer);
        });
        let deadline = std::time::Instant::now() + timeout;
        // Ctrl-C while waiting counts as "not confirmed": the caller restores.
        while !crate::interrupt::requested() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(answer) => return answer,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(false),
            }
        }
        Ok(false)
    }
}

/// The prompter this run uses.
pub fn for_run(yes: bool) -> Box<dyn Prompter> {
    if yes {
        Box::new(AssumeYes)
    } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        Box::new(TerminalPrompter)
    } else {
        Box::new(NoTerminal)
    }
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
