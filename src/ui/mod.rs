//! Everything users see: the printer (the only place that prints), diffs, and prompts.

pub mod diff;
pub mod printer;
pub mod prompt;

pub use printer::Printer;
pub use prompt::Prompter;
