//! The single write path. Every change any command makes goes through [`Writer::apply`], which
//! is where the journal records it and where dry-run modes are honoured.

use serde_json::Value;

use super::Cluster;
use super::api::{calico_path, calico_target};
use crate::error::Result;
use crate::plan::{Change, ChangeKind};

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
            Err(err) if err.status() == Some(409) && self.dry_run == DryRun::None => {
                match self.live(change).await? {
                    Some(live)
                        if crate::journal::same_essence(Some(&live), change.after.as_ref()) =>
                    {
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
            return Ok(change.after.clone());
        }
        let server_dry_run = self.dry_run == DryRun::Server;
        let (kind, ns) = (change.object_kind, change.namespace.as_deref());
        let name = Some(change.name.as_str());
        let target = calico_target(change.kind.verb(), kind, ns, name);
        let collection = change.kind == ChangeKind::Create;
        let path = calico_path(kind, ns, if collection { None } else { name });
        let api = &self.cluster.api;
        let body = || change.body.as_ref().expect("only a delete has no body");
        match change.kind {
            ChangeKind::Create => api
                .create(&path, body(), server_dry_run, &target)
                .await
                .map(Some),
            ChangeKind::Update | ChangeKind::Adopt => api
                .replace(&path, body(), server_dry_run, &target)
                .await
                .map(Some),
            ChangeKind::Patch => api
                .merge_patch(&path, body(), server_dry_run, &target)
                .await
                .map(Some),
            ChangeKind::Delete => api
                .delete(&path, change.resource_version(), server_dry_run, &target)
                .await
                .map(|_| None),
        }
    }
}
