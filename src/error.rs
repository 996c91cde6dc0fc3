//! Errors at the boundaries. Each variant knows its exit status, and cluster errors carry the
//! context of the call that failed plus a hint that says what to do next.
//!
//! Plain data: turning an API server's answer into an [`Error::Cluster`] is the cluster layer's
//! job (`cluster::errors`), so this module depends on nothing but the exit codes.

use crate::exit::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line input: reported before any request is sent.
    #[error("{0}")]
    Usage(String),

    /// The cluster said no, or could not be reached.
    #[error("failed to {context}: {message}")]
    Cluster {
        context: String,
        message: String,
        hint: Option<String>,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
    },

    /// A check or a safety rule refused to go on; nothing (more) was changed.
    #[error("{message}")]
    Refused {
        message: String,
        hint: Option<String>,
    },

    /// The operator declined or interrupted.
    #[error("{0}")]
    Cancelled(String),

    /// Reading the kubeconfig failed.
    #[error("{message}")]
    Config {
        message: String,
        hint: Option<String>,
    },
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    pub fn refused(message: impl Into<String>, hint: Option<String>) -> Self {
        Self::Refused {
            message: message.into(),
            hint,
        }
    }

    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Usage(_) | Self::Config { .. } => ExitStatus::Usage,
            Self::Cluster { .. } | Self::Refused { .. } => ExitStatus::Failure,
            Self::Cancelled(_) => ExitStatus::Cancelled,
        }
    }

    /// The API server's HTTP status for a cluster error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Cluster { status, .. } => *status,
            _ => None,
        }
    }

    /// The same error with `extra` appended to its hint.
    pub fn with_hint(self, extra: &str) -> Self {
        match self {
            Self::Cluster {
                context,
                message,
                hint,
                status,
            } => Self::Cluster {
                context,
                message,
                hint: Some(match hint {
                    Some(h) => format!("{h}; {extra}"),
                    None => extra.to_string(),
                }),
                status,
            },
            other => other,
        }
    }

    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::Cluster { hint, .. } | Self::Refused { hint, .. } | Self::Config { hint, .. } => {
                hint.as_deref()
            }
            Self::Usage(_) | Self::Cancelled(_) => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
