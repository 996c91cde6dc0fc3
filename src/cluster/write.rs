//! The single write path. Every change to a Calico object goes through [`Writer::apply`], where
//! dry-run modes are honoured; the history's ConfigMaps go through [`ConfigMaps`]. The API's
//! verbs (create, replace, patch, delete) are private to `cluster`: nothing else can write.

use serde_json::Value;

use super::Cluster;
use super::api::{calico_path, calico_target};
use super::errors::Target;
use crate::error::Result;
use crate::plan::{Action, Change};

/// `--dry-run`: `client` sends nothing, `server` asks the API server to validate without
/// persisting, `none` writes. Derives clap's `ValueEnum` so the command line takes these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DryRun {
    #[default]
    None,
    Client,
    Server,
}

pub struct Writer<'a> {
    cluster: &'a Cluster,
    dry_run: DryRun,
}

impl<'a> Writer<'a> {
    pub fn new(cluster: &'a Cluster, dry_run: DryRun) -> Self {
        Self { cluster, dry_run }
    }

    /// Send one change. Returns the object as the server has it afterwards (None after a delete).
    /// With --dry-run=client nothing is sent and the planned result is returned.
    ///
    /// A create answered "already exists" or an update answered "conflict" is accepted when the
    /// live object already says what we sent: that is our own earlier attempt, whose answer was
    /// lost on the way back and retried. Anything else stays a conflict, never a clobber.
    pub async fn apply(&self, change: &Change) -> Result<Option<Value>> {
        match self.send(change).await {
            Err(err) if err.is_conflict() && self.dry_run == DryRun::None => {
                match self.live(change).await? {
                    Some(live) if crate::journal::same_essence(Some(&live), change.after()) => {
                        tracing::info!(object = %change.display_name(), "already as intended after a retried write");
                        Ok(Some(live))
                    }
                    _ => Err(err),
                }
            }
            other => other,
        }
    }

    async fn live(&self, change: &Change) -> Result<Option<Value>> {
        let ns = change.namespace.as_deref();
        let name = Some(change.name.as_str());
        self.cluster
            .api
            .get(
                &calico_path(change.object_kind, ns, name),
                &calico_target("get", change.object_kind, ns, name),
            )
            .await
    }

    async fn send(&self, change: &Change) -> Result<Option<Value>> {
        if self.dry_run == DryRun::Client {
            return Ok(change.after().cloned());
        }
        let server_dry_run = self.dry_run == DryRun::Server;
        let (kind, ns) = (change.object_kind, change.namespace.as_deref());
        let name = Some(change.name.as_str());
        let target = calico_target(change.kind().verb(), kind, ns, name);
        let object_path = calico_path(kind, ns, name);
        let api = &self.cluster.api;
        match &change.action {
            Action::Create { after } => api
                .create(&calico_path(kind, ns, None), after, server_dry_run, &target)
                .await
                .map(Some),
            Action::Update { after, .. } | Action::Adopt { after, .. } => api
                .replace(&object_path, after, server_dry_run, &target)
                .await
                .map(Some),
            Action::Patch { patch, .. } => api
                .merge_patch(&object_path, patch, server_dry_run, &target)
                .await
                .map(Some),
            Action::Delete { .. } => api
                .delete(
                    &object_path,
                    change.resource_version(),
                    server_dry_run,
                    &target,
                )
                .await
                .map(|_| None),
        }
    }
}

/// The history's ConfigMaps in one namespace: besides the Calico objects, the only objects this
/// tool writes (`journal::store` decides what they hold). Never a dry run: dry runs write no
/// history.
pub struct ConfigMaps<'a> {
    cluster: &'a Cluster,
    namespace: String,
}

impl<'a> ConfigMaps<'a> {
    pub fn new(cluster: &'a Cluster, namespace: &str) -> Self {
        Self {
            cluster,
            namespace: namespace.to_string(),
        }
    }

    fn path(&self, name: Option<&str>) -> String {
        let collection = format!("/api/v1/namespaces/{}/configmaps", self.namespace);
        match name {
            Some(name) => format!("{collection}/{name}"),
            None => collection,
        }
    }

    fn target(&self, verb: &'static str, name: Option<&str>) -> Target {
        Target {
            verb,
            resource: "configmaps".into(),
            namespace: Some(self.namespace.clone()),
            name: name.map(str::to_string),
        }
    }

    /// Every ConfigMap with these labels.
    pub async fn list(&self, label_selector: &str) -> Result<Vec<Value>> {
        let target = self.target("list", None);
        let path = self.path(None);
        let items = self.cluster.api.list(&path, Some(label_selector), &target);
        Ok(items.await?.unwrap_or_default())
    }

    pub async fn get(&self, name: &str) -> Result<Option<Value>> {
        let target = self.target("get", Some(name));
        self.cluster.api.get(&self.path(Some(name)), &target).await
    }

    /// Create `body` (named in its metadata); an existing one answers a conflict (409).
    pub async fn create(&self, body: &Value) -> Result<Value> {
        let name = body.pointer("/metadata/name").and_then(Value::as_str);
        let target = self.target("create", name);
        self.cluster
            .api
            .create(&self.path(None), body, false, &target)
            .await
    }

    pub async fn merge_patch(&self, name: &str, patch: &Value) -> Result<()> {
        let target = self.target("patch", Some(name));
        let path = self.path(Some(name));
        self.cluster
            .api
            .merge_patch(&path, patch, false, &target)
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let target = self.target("delete", Some(name));
        let path = self.path(Some(name));
        self.cluster
            .api
            .delete(&path, None, false, &target)
            .await
            .map(|_| ())
    }
}
