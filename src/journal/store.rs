//! Revisions as ConfigMaps `calico-harden.v<N>` (one per revision, like Helm's release
//! Secrets), labelled so one LIST finds them all.

use serde_json::{Value, json};

use super::{Revision, RevisionState, TouchedObject};
use crate::cluster::Cluster;
use crate::cluster::errors::Target;
use crate::cluster::write::ConfigMaps;
use crate::error::{Error, Result};
use crate::facts::{self, Inventory};
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

fn history_error(err: Error) -> Error {
    err.with_context("(the change history; nothing was changed)")
}

impl<'a> Store<'a> {
    pub fn new(cluster: &'a Cluster, namespace: &str, max: u32) -> Self {
        Self {
            cluster,
            namespace: namespace.to_string(),
            max: max.max(1),
        }
    }

    /// The history's ConfigMaps, written through the cluster's one write path.
    fn configmaps(&self) -> ConfigMaps<'a> {
        ConfigMaps::new(self.cluster, &self.namespace)
    }

    /// Every stored revision, oldest first.
    pub async fn list(&self) -> Result<Vec<Revision>> {
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{REVISION_LABEL}");
        let items = self.configmaps().list(&selector).await?;
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

    /// The Calico release by the chain `plan` uses ([`ClusterFacts::calico_version`]):
    /// ClusterInformation, else the operator's Installation, else calico-node's image tag, each
    /// read only when the ones before name no version. None when nothing names one; the revision
    /// is written all the same.
    ///
    /// [`ClusterFacts::calico_version`]: crate::facts::ClusterFacts::calico_version
    async fn calico_version(&self) -> Option<String> {
        let recorded = |inventory: &Inventory| {
            facts::detect(inventory)
                .calico_version()
                .map(|(version, _)| version.to_string())
        };
        let mut inventory = Inventory {
            cluster_information: self
                .read_quietly(
                    "/apis/projectcalico.org/v3/clusterinformations/default",
                    "clusterinformations.projectcalico.org",
                )
                .await,
            ..Inventory::default()
        };
        if recorded(&inventory).is_none() {
            inventory.installation = self
                .read_quietly(
                    "/apis/operator.tigera.io/v1/installations/default",
                    "installations.operator.tigera.io",
                )
                .await;
        }
        if recorded(&inventory).is_none() {
            // One calico-node pod carries the image tag.
            let pods = self
                .read_quietly(
                    "/api/v1/pods?labelSelector=k8s-app%3Dcalico-node&limit=1",
                    "pods",
                )
                .await;
            inventory.system_pods = pods
                .as_ref()
                .and_then(|list| list.get("items"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .into();
        }
        recorded(&inventory)
    }

    /// GET `path`; None (logged at debug level) when it is absent or cannot be read.
    async fn read_quietly(&self, path: &str, resource: &str) -> Option<Value> {
        let t = Target {
            verb: "get",
            resource: resource.into(),
            namespace: None,
            name: None,
        };
        match self.cluster.api.get(path, &t).await {
            Ok(object) => object,
            Err(err) => {
                tracing::debug!("cannot get {resource} for the recorded Calico version ({err})");
                None
            }
        }
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

    /// Read what a new revision needs (the history, the user, the Calico release unless the
    /// command's observation already named it), all at once; nothing is written yet, so the
    /// command may check its permissions meanwhile. Fails when the history cannot be read.
    pub async fn prepare(
        &self,
        command: &str,
        changes: &[Change],
        undoes: Vec<u64>,
        version: KnownVersion,
    ) -> Result<Prepared> {
        let calico_version = async {
            match version {
                KnownVersion::Observed(version) => version,
                KnownVersion::Unknown => self.calico_version().await,
            }
        };
        let (existing, user, calico_version) =
            tokio::join!(self.list(), self.cluster.whoami(), calico_version);
        let history = existing.map_err(history_error)?;
        let revision = Revision {
            revision: history.last().map_or(1, |r| r.revision + 1),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            command: command.to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            user,
            calico_version,
            state: RevisionState::Pending,
            objects: changes.iter().map(TouchedObject::planned).collect(),
            undoes,
            message: None,
        };
        Ok(Prepared { revision, history })
    }

    /// Write the prepared revision as pending before the first change. Fails (and the command
    /// changes nothing) when the history cannot be written.
    pub async fn begin(&self, prepared: Prepared) -> Result<Recorder<'a>> {
        let Prepared { revision, history } = prepared;
        let number = revision.revision;
        let revision = self.create_pending(revision, number).await?;
        Ok(Recorder {
            cluster: self.cluster,
            namespace: self.namespace.clone(),
            max: self.max,
            revision,
            history,
        })
    }

    /// Create the pending revision's ConfigMap under the first free number from `number` on.
    async fn create_pending(&self, mut revision: Revision, mut number: u64) -> Result<Revision> {
        let configmaps = self.configmaps();
        for attempt in 1..=CREATE_ATTEMPTS {
            revision.revision = number;
            let body = self.configmap(&revision);
            match configmaps.create(&body).await {
                Ok(_) => return Ok(revision),
                Err(err) if err.is_conflict() && attempt < CREATE_ATTEMPTS => {
                    // Our own create whose answer was lost (and retried), or another operator
                    // who took this number at the same moment: then take the next one.
                    let existing = configmaps
                        .get(&configmap_name(number))
                        .await
                        .map_err(history_error)?;
                    if existing.as_ref().and_then(|cm| cm.get("data")) == Some(&body["data"]) {
                        return Ok(revision);
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
        self.configmaps().merge_patch(&name, &patch).await
    }

    /// Keep the newest `max` of `revisions` (the history, oldest first); pending ones are never
    /// pruned.
    async fn prune(&self, revisions: &[Revision]) -> Result<()> {
        let excess = revisions.len().saturating_sub(self.max as usize);
        for revision in revisions
            .iter()
            .take(excess)
            .filter(|r| r.state != RevisionState::Pending)
        {
            self.configmaps()
                .delete(&configmap_name(revision.revision))
                .await?;
        }
        Ok(())
    }
}

/// The Calico release a new revision records.
#[derive(Debug, Clone)]
pub enum KnownVersion {
    /// What the command's observation read, by the same chain
    /// ([`ClusterFacts::calico_version`]): the journal does not ask again.
    ///
    /// [`ClusterFacts::calico_version`]: crate::facts::ClusterFacts::calico_version
    Observed(Option<String>),
    /// Not read yet: the journal reads it ([`Store::prepare`]).
    Unknown,
}

/// A revision ready to be written as pending, with the history read alongside it.
pub struct Prepared {
    revision: Revision,
    history: Vec<Revision>,
}

/// An open revision: records each write as it happens, then its final state.
pub struct Recorder<'a> {
    cluster: &'a Cluster,
    namespace: String,
    max: u32,
    pub revision: Revision,
    /// The history as read before this revision was created: what the cleanup at the end
    /// prunes from, without listing it again.
    history: Vec<Revision>,
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
        self.mark_written(index, result);
        self.store().patch(&self.revision).await
    }

    /// Note that object `index` was written without storing it yet: the next patch
    /// ([`Self::record`] or [`Self::finish`]) carries it.
    pub fn mark_written(&mut self, index: usize, result: Option<Value>) {
        if let Some(object) = self.revision.objects.get_mut(index) {
            object.applied = true;
            object.after = result;
        }
    }

    pub async fn finish(&mut self, state: RevisionState, message: Option<String>) -> Result<()> {
        self.revision.state = state;
        self.revision.message = message;
        let mut revisions = std::mem::take(&mut self.history);
        revisions.retain(|r| r.revision != self.revision.revision);
        revisions.push(self.revision.clone());
        revisions.sort_by_key(|r| r.revision);
        let store = self.store();
        store.patch(&self.revision).await?;
        store.prune(&revisions).await
    }
}
