//! Errors at the boundaries. Each variant knows its exit status, and cluster errors carry the
//! context of the call that failed plus a hint that says what to do next.
//!
//! Plain data: a cluster error keeps what kube reported (the API server's status with its code
//! and reason, or the transport error), so a 409 is recognised by its code, never by its text.
//! Turning a request's failure into an [`Error::Cluster`] with its hint is the cluster layer's
//! job (`cluster::errors`); this module depends on nothing of the crate but the exit codes.

use crate::exit::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line input: reported before any request is sent.
    #[error("{0}")]
    Usage(String),

    /// The cluster said no, or could not be reached.
    #[error("failed to {context}: {cause}")]
    Cluster {
        /// The call that failed: `list nodes`, `create configmaps/x in namespace y`.
        context: String,
        cause: ClusterCause,
        hint: Option<String>,
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

/// Why a cluster call failed, with what kube reported kept whole.
#[derive(Debug)]
pub enum ClusterCause {
    /// The API server answered with an error status: code, reason, message and details.
    Status(Box<kube::core::Status>),
    /// No answer: the connection, TLS or a timeout failed.
    Transport(Box<kube::Error>),
    /// An answer this tool cannot use.
    Unreadable(String),
}

impl std::fmt::Display for ClusterCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(status) if status.message.is_empty() => {
                write!(f, "{} ({})", status.reason, status.code)
            }
            Self::Status(status) => f.write_str(&status.message),
            Self::Transport(err) => f.write_str(&transport_message(err)),
            Self::Unreadable(message) => f.write_str(message),
        }
    }
}

/// kube's transport errors nest the useful part several sources deep; keep the chain short.
fn transport_message(err: &kube::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        let text = inner.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = inner.source();
    }
    parts.join(": ")
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

    /// A cluster call whose answer this tool cannot use.
    pub fn unreadable(context: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Cluster {
            context: context.into(),
            cause: ClusterCause::Unreadable(message.into()),
            hint: None,
        }
    }

    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Usage(_) | Self::Config { .. } => ExitStatus::Usage,
            Self::Cluster { .. } | Self::Refused { .. } => ExitStatus::Failure,
            Self::Cancelled(_) => ExitStatus::Cancelled,
        }
    }

    /// The API server's HTTP status for a cluster error it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Cluster {
                cause: ClusterCause::Status(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }

    /// A 409: the object exists already, or changed since it was read.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// The same error with `extra` appended to its hint.
    pub fn with_hint(self, extra: &str) -> Self {
        match self {
            Self::Cluster {
                context,
                cause,
                hint,
            } => Self::Cluster {
                context,
                cause,
                hint: Some(match hint {
                    Some(h) => format!("{h}; {extra}"),
                    None => extra.to_string(),
                }),
            },
            other => other,
        }
    }

    /// The same error with `extra` after the context of a cluster call.
    pub fn with_context(self, extra: &str) -> Self {
        match self {
            Self::Cluster {
                context,
                cause,
                hint,
            } => Self::Cluster {
                context: format!("{context} {extra}"),
                cause,
                hint,
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
