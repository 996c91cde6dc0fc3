//! Exit codes that mean something, in one place.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Done, or nothing to do.
    Success,
    /// A cluster error, a failed check, or a refusal.
    Failure,
    /// The command line was wrong; nothing was sent to the cluster.
    Usage,
    /// The operator said no or pressed Ctrl-C at a prompt.
    Cancelled,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Usage => 2,
            Self::Cancelled => 130,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}
