//! Turn API errors into one clear line plus a hint that says what to do next.

use crate::error::{ClusterCause, Error};

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

/// A request on `target` that got no answer: kube's transport error, kept whole.
pub fn transport_error(target: &Target, err: kube::Error) -> Error {
    Error::Cluster {
        context: target.describe(),
        cause: ClusterCause::Transport(Box::new(err)),
        hint: Some(
            "check that the API server is reachable with `kubectl cluster-info` (wrong --context, VPN down, or an expired credential)".into(),
        ),
    }
}

/// The namespace a 404 says is missing: writing into a namespace that does not exist answers
/// NotFound for the namespace, not for the kind.
fn missing_namespace(status: &kube::core::Status) -> Option<&str> {
    let details = status.details.as_ref()?;
    (details.kind == "namespaces").then_some(details.name.as_str())
}

/// What to check after a 403. Calico policies are also behind Calico's tiered RBAC, which
/// calico-apiserver checks on top of the resource's own verbs and `kubectl auth can-i` cannot
/// show: say which pseudo-resource it needs.
fn forbidden_hint(target: &Target) -> String {
    let tiered = match target.resource.as_str() {
        "globalnetworkpolicies.projectcalico.org" => Some("tier.globalnetworkpolicies"),
        "networkpolicies.projectcalico.org" => Some("tier.networkpolicies"),
        "stagedglobalnetworkpolicies.projectcalico.org" => Some("tier.stagedglobalnetworkpolicies"),
        "stagednetworkpolicies.projectcalico.org" => Some("tier.stagednetworkpolicies"),
        _ => None,
    };
    let tiers = tiered
        .map(|pseudo| {
            format!(
                "; Calico's tiered RBAC also needs get on tiers.projectcalico.org/default and {} on {pseudo}.projectcalico.org (named default.* to write)",
                target.verb
            )
        })
        .unwrap_or_default();
    format!(
        "your user may not {} {}; check with `{}`{tiers}, and see `kubectl calico-harden rbac` for the role this tool needs",
        target.verb,
        target.resource,
        target.can_i()
    )
}

/// An API error for a request on `target`, with the hint that fits its status code.
pub fn api_error(target: &Target, status: &kube::core::Status) -> Error {
    let hint = match status.code {
        401 => Some("the credentials were rejected: log in again or pick another --context".to_string()),
        403 => Some(forbidden_hint(target)),
        404 if missing_namespace(status).is_some() => missing_namespace(status).map(|ns| format!(
            "namespace {ns} does not exist: create it, or point the stage at the namespace where the component runs (-n)"
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
        context: target.describe(),
        cause: ClusterCause::Status(Box::new(status.clone())),
        hint,
    }
}
