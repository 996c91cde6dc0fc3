//! Turn API errors into one clear line plus a hint that says what to do next.

use crate::error::Error;

/// The request that failed, for the message and the `kubectl auth can-i` hint.
#[derive(Debug, Clone)]
pub struct Target {
    pub verb: &'static str,
    /// `globalnetworkpolicies.projectcalico.org`, `nodes`, ...
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Target {
    pub fn describe(&self) -> String {
        let mut text = format!("{} {}", self.verb, self.resource);
        if let Some(name) = &self.name {
            text.push('/');
            text.push_str(name);
        }
        if let Some(ns) = &self.namespace {
            text.push_str(&format!(" in namespace {ns}"))
        }
        text
    }

    fn can_i(&self) -> String {
        let mut command = format!("kubectl auth can-i {} {}", self.verb, self.resource);
        if let Some(ns) = &self.namespace {
            command.push_str(&format!(" -n {ns}"));
        }
        command
    }
}

pub fn describe(context: &str, err: kube::Error) -> Error {
    let context = context.to_string();
    match err {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            Error::Cluster {
                context,
                message,
                hint: None,
                status: Some(status.code),
            }
        }
        other => Error::Cluster {
            context,
            message: transport_message(&other),
            hint: Some(
                "check that the API server is reachable with `kubectl cluster-info` (wrong --context, VPN down, or an expired credential)".into(),
            ),
            status: None,
        },
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

/// An API error for a request on `target`, with the hint that fits its status code.
pub fn api_error(target: &Target, status: &kube::core::Status) -> Error {
    let context = target.describe();
    let message = if status.message.is_empty() {
        format!("{} ({})", status.reason, status.code)
    } else {
        status.message.clone()
    };
    let hint = match status.code {
        401 => Some("the credentials were rejected: log in again or pick another --context".to_string()),
        403 => Some(format!(
            "your user may not {} {}; check with `{}`, and see `kubectl calico-harden rbac` for the role this tool needs",
            target.verb,
            target.resource,
            target.can_i()
        )),
        404 if target.resource.ends_with("projectcalico.org") => Some(
            "the projectcalico.org/v3 API does not serve this kind: install the Calico API server (operator: create an APIServer resource named default) or Calico >= 3.32 with native v3 CRDs".to_string(),
        ),
        409 => Some(
            "someone changed or created this object after it was read: nothing was overwritten; run the command again to see the new diff".to_string(),
        ),
        422 => {
            let causes: Vec<String> = status
                .details
                .iter()
                .flat_map(|d| d.causes.iter())
                .map(|c| {
                    if c.field.is_empty() {
                        c.message.clone()
                    } else {
                        format!("{}: {}", c.field, c.message)
                    }
                })
                .collect();
            (!causes.is_empty()).then(|| format!("the server rejected: {}", causes.join("; ")))
        }
        429 | 500..=599 => Some("the API server is overloaded or failing; retry later".to_string()),
        _ => None,
    };
    Error::Cluster {
        context: context.clone(),
        message,
        hint,
        status: Some(status.code),
    }
}
