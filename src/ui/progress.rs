//! A spinner on stderr for work that takes long only on large clusters: reading the inventory
//! page by page, writing changes. It stays invisible for its first second, so a command that is
//! quick on a small cluster shows nothing, and it never draws when stderr is not a terminal
//! (pipes, CI, the test harness), so captured output is the same with or without it.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before the spinner appears.
pub const SHOW_AFTER: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(120);

/// A spinner with a message and per-kind counters ("2000 nodes, 12500 pods").
pub struct Progress {
    bar: ProgressBar,
    title: Cow<'static, str>,
    counts: Mutex<Vec<(&'static str, u64)>>,
    reveal: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Start counting; the spinner shows only if this is still running after [`SHOW_AFTER`]
    /// and stderr is a terminal. Needs a tokio runtime (every command runs inside one).
    pub fn start(title: impl Into<Cow<'static, str>>) -> Self {
        let title = title.into();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
        );
        bar.set_message(title.clone());
        let reveal = std::io::stderr().is_terminal().then(|| {
            let bar = bar.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SHOW_AFTER).await;
                if !bar.is_finished() {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                    bar.enable_steady_tick(TICK);
                }
            })
        });
        Self {
            bar,
            title,
            counts: Mutex::new(Vec::new()),
            reveal,
        }
    }

    /// Add `n` to the counter of `what` (a plural noun) and show the totals.
    pub fn add(&self, what: &'static str, n: usize) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        match counts.iter_mut().find(|(name, _)| *name == what) {
            Some((_, count)) => *count += n as u64,
            None => counts.push((what, n as u64)),
        }
        self.bar.set_message(message(&self.title, &counts));
    }

    /// Replace the message after the title ("3/11 changes").
    pub fn set_detail(&self, detail: &str) {
        self.bar.set_message(format!("{}: {detail}", self.title));
    }

    /// The counters so far, in the order they first appeared.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Progress {
    /// Clear the line, so the command's own messages start on a clean one.
    fn drop(&mut self) {
        if let Some(reveal) = self.reveal.take() {
            reveal.abort();
        }
        self.bar.finish_and_clear();
    }
}

fn message(title: &str, counts: &[(&'static str, u64)]) -> String {
    if counts.is_empty() {
        return title.to_string();
    }
    let parts: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    format!("{title}: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_add_up_per_kind_in_first_seen_order() {
        let progress = Progress::start("reading the cluster");
        progress.add("pods", 500);
        progress.add("nodes", 3);
        progress.add("pods", 250);
        assert_eq!(progress.counts(), vec![("pods", 750), ("nodes", 3)]);
        assert_eq!(
            message("reading the cluster", &progress.counts()),
            "reading the cluster: 750 pods, 3 nodes"
        );
        assert_eq!(message("writing", &[]), "writing");
    }

    #[tokio::test]
    async fn the_spinner_stays_hidden_for_its_first_second() {
        let progress = Progress::start("reading the cluster");
        assert!(progress.bar.is_hidden());
        drop(progress);
    }
}
