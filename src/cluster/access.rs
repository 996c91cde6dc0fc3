//! Ask the API server, before the first write, whether every write a command is about to make is
//! permitted (SelfSubjectAccessReview). A missing permission then stops the command with nothing
//! changed, instead of halfway through.

use serde_json::json;

use super::Cluster;
use super::errors::Target;
use crate::error::{ClusterCause, Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub verb: &'static str,
    /// API group ("" for the core group).
    pub group: &'static str,
    pub resource: &'static str,
    pub namespace: Option<String>,
    /// A resource name, for rules that name one (Calico's tier pseudo-resources).
    pub name: Option<String>,
}

impl Permission {
    fn resource_name(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn describe(&self) -> String {
        let mut what = format!("{} {}", self.verb, self.resource_name());
        if let Some(name) = &self.name {
            what.push_str(&format!(" named {name:?}"));
        }
        match &self.namespace {
            Some(ns) => format!("{what} in namespace {ns}"),
            None => what,
        }
    }

    fn can_i(&self) -> String {
        let mut target = self.resource_name();
        if let Some(name) = &self.name {
            target.push('/');
            target.push_str(name);
        }
        let mut command = format!("kubectl auth can-i {} {target}", self.verb);
        if let Some(ns) = &self.namespace {
            command.push_str(&format!(" -n {ns}"));
        }
        command
    }
}

/// Whether the server allows `permission`; None when it cannot say (no SelfSubjectAccessReview).
async fn allowed(cluster: &Cluster, permission: &Permission) -> Option<bool> {
    let mut attributes = json!({
        "verb": permission.verb,
        "group": permission.group,
        "resource": permission.resource,
    });
    if let Some(ns) = &permission.namespace {
        attributes["namespace"] = json!(ns);
    }
    if let Some(name) = &permission.name {
        attributes["name"] = json!(name);
    }
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    });
    let target = Target {
        verb: "create",
        resource: "selfsubjectaccessreviews.authorization.k8s.io".into(),
        namespace: None,
        name: None,
    };
    let answer = cluster
        .api
        .post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &review,
            &target,
        )
        .await
        .ok()??;
    answer.pointer("/status/allowed").and_then(|v| v.as_bool())
}

/// Fail, naming every missing permission, unless all are granted.
pub async fn require(cluster: &Cluster, mut permissions: Vec<Permission>) -> Result<()> {
    permissions.sort();
    permissions.dedup();
    let answers = futures::future::join_all(permissions.iter().map(|p| allowed(cluster, p))).await;
    let denied: Vec<&Permission> = permissions
        .iter()
        .zip(answers)
        .filter(|(_, answer)| *answer == Some(false))
        .map(|(p, _)| p)
        .collect();
    if denied.is_empty() {
        return Ok(());
    }
    let message = format!(
        "forbidden: user {} may not {}; nothing was changed",
        cluster.kubeconfig_user,
        denied
            .iter()
            .map(|p| p.describe())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Err(Error::Cluster {
        context: "check permissions before changing anything".into(),
        // What the server's SelfSubjectAccessReviews answered, as the 403 the writes would get.
        cause: ClusterCause::Status(Box::new(
            kube::core::Status::failure(&message, "Forbidden").with_code(403),
        )),
        hint: Some(format!(
            "check with `{}`; `kubectl calico-harden rbac` prints the role this tool needs",
            denied[0].can_i()
        )),
    })
}
