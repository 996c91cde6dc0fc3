//! Revisions as ConfigMaps `calico-harden.v<N>` (one per revision, like Helm's release
//! Secrets), labelled so one LIST finds them all.

use serde_json::{Value, json};

use super::{Revision, RevisionState, TouchedObject};
use crate::cluster::Cluster;
use crate::cluster::errors::Target;
use crate::error::{Error, Result};
use crate::plan::Change;
use crate::stages::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

pub const REVISION_LABEL: &str = "kubectl-calico-harden/revision";
pub const STATE_LABEL: &str = "kubectl-calico-harden/state";
const DATA_KEY: &str = "revision.json";
const CREATE_ATTEMPTS: u64 = 5;

pub fn configmap_name(revision: u64) -> String {
    format!("calico-harden.v{revision}")
}

pub struct Store<'a> {
    cluster: &'a Cluster,
    namespace: String,
    max: u32,
}

fn target(verb: &'static str, namespace: &str, name: Option<String>) -> Target {
    Target {
        verb,
        resource: "configmaps".into(),
        namespace: Some(namespace.to_string()),
        name,
    }
}

fn history_error(err: Error) -> Error {
    match err {
        Error::Cluster {
            context,
            message,
            hint,
            status,
        } => Error::Cluster {
            context: format!("{context} (the change history; nothing was changed)"),
            message,
            hint,
            status,
        },
        other => other,
    }
}

impl<'a> Store<'a> {
    pub fn new(cluster: &'a Cluster, namespace: &str, max: u32) -> Self {
        Self {
            cluster,
            namespace: namespace.to_string(),
            max: max.max(1),
        }
    }

    fn collection_path(&self) -> String {
        format!("/api/v1/namespaces/{}/configmaps", self.namespace)
    }

    /// Every stored revision, oldest first.
    pub async fn list(&self) -> Result<Vec<Revision>> {
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{REVISION_LABEL}");
        let items = self
            .cluster
            .api
            .list(
                &self.collection_path(),
                Some(&selector),
                &target("list", &self.namespace, None),
            )
            .await?
            .unwrap_or_default();
        let mut revisions: Vec<Revision> = items
            .iter()
            .filter_map(|cm| {
                cm.pointer(&format!("/data/{DATA_KEY}"))
                    .and_then(Value::as_str)
            })
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect();
        revisions.sort_by_key(|r| r.revision);
        Ok(revisions)
    }

    /// Who is running this: the server's answer where it supports SelfSubjectReview.
    pub async fn whoami(&self) -> String {
        let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        let t = Target {
            verb: "create",
            resource: "selfsubjectreviews.authentication.k8s.io".into(),
            namespace: None,
            name: None,
        };
        match self
            .cluster
            .api
            .post(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                &review,
                &t,
            )
            .await
        {
            Ok(Some(answer)) => answer
                .pointer("/status/userInfo/username")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| self.cluster.kubeconfig_user.clone()),
            Ok(None) => self.cluster.kubeconfig_user.clone(),
            Err(err) => {
                tracing::warn!(
                    "cannot create selfsubjectreviews.authentication.k8s.io ({err}); recording the kubeconfig user"
                );
                self.cluster.kubeconfig_user.clone()
            }
        }
    }

    /// The Calico release as `plan` reads it first: ClusterInformation, else the operator's
    /// Installation. None when neither is readable; the revision is written all the same.
    async fn calico_version(&self) -> Option<String> {
        let sources = [
            (
                "/apis/projectcalico.org/v3/clusterinformations/default",
                "clusterinformations.projectcalico.org",
                "/spec/calicoVersion",
            ),
            (
                "/apis/operator.tigera.io/v1/installations/default",
                "installations.operator.tigera.io",
                "/status/calicoVersion",
            ),
        ];
        for (path, resource, field) in sources {
            let t = Target {
                verb: "get",
                resource: resource.into(),
                namespace: None,
                name: Some("default".into()),
            };
            match self.cluster.api.get(path, &t).await {
                Ok(Some(object)) => {
                    if let Some(version) = object
                        .pointer(field)
                        .and_then(Value::as_str)
                        .filter(|v| !v.is_empty())
                    {
                        return Some(version.to_string());
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::debug!("cannot get {resource}/default ({err})"),
            }
        }
        None
    }

    fn configmap(&self, revision: &Revision) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": configmap_name(revision.revision),
                "namespace": self.namespace,
                "labels": {
                    MANAGED_BY_LABEL: MANAGED_BY_VALUE,
                    REVISION_LABEL: revision.revision.to_string(),
                    STATE_LABEL: revision.state.as_str(),
                },
            },
            "data": {DATA_KEY: serde_json::to_string(revision).expect("revisions serialise")},
        })
    }

    /// Write a new revision as pending before the first change. Fails (and the command changes
    /// nothing) when the history cannot be written.
    pub async fn begin(
        &self,
        command: &str,
        changes: &[Change],
        undoes: Vec<u64>,
    ) -> Result<Recorder<'a>> {
        let existing = self.list().await.map_err(history_error)?;
        let mut number = existing.last().map_or(1, |r| r.revision + 1);
        let mut revision = Revision {
            revision: number,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            command: command.to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            user: self.whoami().await,
            calico_version: self.calico_version().await,
            state: RevisionState::Pending,
            objects: changes.iter().map(TouchedObject::planned).collect(),
            undoes,
            message: None,
        };
        for attempt in 1..=CREATE_ATTEMPTS {
            revision.revision = number;
            let body = self.configmap(&revision);
            let t = target("create", &self.namespace, Some(configmap_name(number)));
            match self
                .cluster
                .api
                .create(&self.collection_path(), &body, false, &t)
                .await
            {
                Ok(_) => {
                    return Ok(Recorder {
                        cluster: self.cluster,
                        namespace: self.namespace.clone(),
                        max: self.max,
                        revision,
                    });
                }
                Err(err) if err.status() == Some(409) && attempt < CREATE_ATTEMPTS => {
                    // Our own create whose answer was lost (and retried), or another operator
                    // who took this number at the same moment: then take the next one.
                    let path = format!("{}/{}", self.collection_path(), configmap_name(number));
                    let existing = self
                        .cluster
                        .api
                        .get(
                            &path,
                            &target("get", &self.namespace, Some(configmap_name(number))),
                        )
                        .await
                        .map_err(history_error)?;
                    if existing.as_ref().and_then(|cm| cm.get("data")) == Some(&body["data"]) {
                        return Ok(Recorder {
                            cluster: self.cluster,
                            namespace: self.namespace.clone(),
                            max: self.max,
                            revision,
                        });
                    }
                    number += 1;
                }
                Err(err) => return Err(history_error(err)),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Mark a revision's state (e.g. rolled back).
    pub async fn set_state(&self, revision: &Revision, state: RevisionState) -> Result<()> {
        let mut updated = revision.clone();
        updated.state = state;
        self.patch(&updated).await
    }

    async fn patch(&self, revision: &Revision) -> Result<()> {
        let name = configmap_name(revision.revision);
        let body = self.configmap(revision);
        let patch =
            json!({"metadata": {"labels": body["metadata"]["labels"]}, "data": body["data"]});
        let path = format!("{}/{name}", self.collection_path());
        self.cluster
            .api
            .merge_patch(
                &path,
                &patch,
                false,
                &target("patch", &self.namespace, Some(name)),
            )
            .await
            .map(|_| ())
    }

    /// Keep the newest `max` revisions; pending ones are never pruned.
    async fn prune(&self) -> Result<()> {
        let revisions = self.list().await?;
        let excess = revisions.len().saturating_sub(self.max as usize);
        for revision in revisions
            .iter()
            .take(excess)
            .filter(|r| r.state != RevisionState::Pending)
        {
            let name = configmap_name(revision.revision);
            let path = format!("{}/{name}", self.collection_path());
            self.cluster
                .api
                .delete(
                    &path,
                    None,
                    false,
                    &target("delete", &self.namespace, Some(name)),
                )
                .await?;
        }
        Ok(())
    }
}

/// An open revision: records each write as it happens, then its final state.
pub struct Recorder<'a> {
    cluster: &'a Cluster,
    namespace: String,
    max: u32,
    pub revision: Revision,
}

impl Recorder<'_> {
    fn store(&self) -> Store<'_> {
        Store {
            cluster: self.cluster,
            namespace: self.namespace.clone(),
            max: self.max,
        }
    }

    /// Object `index` was written; `result` is what the server returned.
    pub async fn record(&mut self, index: usize, result: Option<Value>) -> Result<()> {
        if let Some(object) = self.revision.objects.get_mut(index) {
            object.applied = true;
            object.after = result;
        }
        self.store().patch(&self.revision).await
    }

    pub async fn finish(&mut self, state: RevisionState, message: Option<String>) -> Result<()> {
        self.revision.state = state;
        self.revision.message = message;
        let store = self.store();
        store.patch(&self.revision).await?;
        store.prune().await
    }
}
