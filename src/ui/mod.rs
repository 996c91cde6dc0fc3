//! Everything users see: the printer (the only place that prints), diffs, prompts, and the
//! progress spinner.

pub mod diff;
pub mod printer;
pub mod progress;
pub mod prompt;

pub use printer::Printer;
pub use prompt::Prompter;
