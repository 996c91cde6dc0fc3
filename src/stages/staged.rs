//! Staged mode (Calico 3.30+): the stages written as Calico's staged policies
//! (StagedGlobalNetworkPolicy, StagedNetworkPolicy), which Felix evaluates and reports in flow
//! logs but never enforces, and the staged deletion of the safety net (`stagedAction: Delete`).
//! A staged object has the name of the policy it previews, so `promote` knows what it becomes.
//! Pure: rendering, reading back what was staged, and the release check.
//!
//! What staged policies preview, read in Calico v3.31.0's code:
//!
//! - Felix never programs a staged policy into the dataplane (felix/rules/policy.go
//!   `PolicyToIptablesChains` returns no chains for one; felix/rules/endpoints.go skips them in
//!   the policy-group and endpoint chains).
//! - Felix's flow-log collector evaluates staged policies (its "pending" rule traces) only at a
//!   flow's local *workload* endpoint (felix/collector/collector.go
//!   `evaluatePendingRuleTraceForLocalEp` requires `!IsHostEndpoint()`, and
//!   `lookupProtoWorkloadEndpoint` finds workload endpoints only), and it drops flows whose local
//!   endpoint is a host endpoint altogether (`getDataAndUpdateEndpoints`: "Ignore HEP
//!   reporters"). No staged policy is evaluated for host endpoints.
//! - A staged deletion never reaches Felix: libcalico-go's syncer
//!   (libcalico-go/lib/backend/syncersv1/updateprocessors/stagedglobalnetworkpolicyprocessor.go
//!   `ConvertStagedGlobalNetworkPolicyV3ToV1Value`, and its NetworkPolicy twin) turns a
//!   `stagedAction: Delete` into "no policy", so flow logs keep reporting the enforced policy it
//!   would delete.
//!
//! So a staged lockdown records the intended deletion (reviewable, promotable, undoable) but
//! previews nothing by itself; what a lockdown would cut is seen in the workload flows that only
//! the safety net allows, and for hosts only in `check --after lockdown` and a canary.

use serde_json::{Value, json};

use super::{DesiredObject, MANAGED_BY_LABEL, MANAGED_BY_VALUE, STAGE_LABEL, StageId};
use crate::calico::policy::CalicoKind;
use crate::error::Error;
use crate::facts::parse_version;

/// The first Calico release with staged policies in its open-source edition.
pub const FIRST_STAGED_RELEASE: (u64, u64, u64) = (3, 30, 0);

/// The label calico-apiserver adds to every policy; not part of what a staged object becomes.
const TIER_LABEL: &str = "projectcalico.org/tier";

/// What `up --staged` previews, in words for its output and help.
pub const STAGED_POLICIES_PREVIEW: &str = "staged policies are evaluated for workloads only: Felix reports in its flow logs what each staged policy would do to pod traffic, and evaluates none for host endpoints (Calico v3.31.0, felix/collector/collector.go), so the host paths (nodes -> API server, kubelet, typha, calico-apiserver) are previewed by `kubectl calico-harden check`, not by flow logs";

/// What `lockdown --staged` does and does not preview.
pub const STAGED_LOCKDOWN_PREVIEW: &str = "a staged lockdown previews nothing in flow logs: Felix never receives a staged deletion (Calico v3.31.0's syncer drops stagedAction Delete) and evaluates no staged policy for host endpoints; it records the intended deletion for review and `promote`. What lockdown would cut shows as the workload flows only the safety net allows (flow logs) and, for hosts, in `kubectl calico-harden check --after lockdown` and a canary `lockdown --nodes`";

/// `spec.stagedAction` of a staged policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagedAction {
    /// Create or replace the enforced policy with this spec.
    Set,
    /// Delete the enforced policy of this name.
    Delete,
}

impl StagedAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Set => "Set",
            Self::Delete => "Delete",
        }
    }
}

/// Staged policies need Calico 3.30 or newer: refuse, naming the release found and where, before
/// anything is written. An unknown release is refused too: writing kinds the server may not
/// serve would fail half-way.
pub fn require_staged_support(version: Option<(&str, &str)>) -> Result<(), Error> {
    let hint = "staged policies (StagedGlobalNetworkPolicy, StagedNetworkPolicy) exist from Calico 3.30; upgrade Calico, or run without --staged";
    match version {
        Some((found, source)) => match parse_version(found) {
            Some(release) if release >= FIRST_STAGED_RELEASE => Ok(()),
            _ => Err(Error::refused(
                format!(
                    "--staged needs Calico 3.30 or newer; this cluster runs Calico {found} (from {source}); nothing was changed"
                ),
                Some(hint.into()),
            )),
        },
        None => Err(Error::refused(
            "--staged needs Calico 3.30 or newer, and this cluster's Calico release is unknown (no ClusterInformation, Installation or image tag says); nothing was changed",
            Some(hint.into()),
        )),
    }
}

/// The staged copy of an enforced policy: same name, namespace, labels and spec, with
/// `stagedAction: Set`. None for objects that are not policies.
pub fn staged_set(object: &DesiredObject) -> Option<DesiredObject> {
    let kind = object.kind.staged()?;
    let mut manifest = object.manifest.clone();
    manifest["kind"] = json!(kind.as_str());
    manifest["spec"]["stagedAction"] = json!(StagedAction::Set.as_str());
    Some(DesiredObject {
        kind,
        manifest,
        ..object.clone()
    })
}

/// The staged deletion of an enforced policy, on behalf of `stage`: only `stagedAction: Delete`
/// in the spec (Calico refuses any other field but the tier with it).
pub fn staged_delete(object: &DesiredObject, stage: StageId) -> Option<DesiredObject> {
    let kind = object.kind.staged()?;
    let mut metadata = json!({
        "name": object.name,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, STAGE_LABEL: stage.name()},
    });
    if let Some(namespace) = &object.namespace {
        metadata["namespace"] = json!(namespace);
    }
    Some(DesiredObject {
        stage,
        kind,
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        manifest: json!({
            "apiVersion": object.manifest["apiVersion"],
            "kind": kind.as_str(),
            "metadata": metadata,
            "spec": {"stagedAction": StagedAction::Delete.as_str()},
        }),
    })
}

/// A staged policy this tool wrote, read back from the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedPolicy {
    /// The stage it was written for (`lockdown` for the staged deletion of the safety net).
    pub stage: StageId,
    /// Its own kind (StagedGlobalNetworkPolicy or StagedNetworkPolicy).
    pub kind: CalicoKind,
    pub namespace: Option<String>,
    pub name: String,
    pub action: StagedAction,
    /// The object as the server returned it.
    pub live: Value,
}

impl StagedPolicy {
    /// A staged policy of `kind` as listed, if this tool wrote it (its managed-by and stage
    /// labels); staged policies made by others are left alone.
    pub fn read(kind: CalicoKind, live: &Value) -> Option<Self> {
        kind.enforced()?;
        let labels = live.pointer("/metadata/labels")?;
        if labels.get(MANAGED_BY_LABEL).and_then(Value::as_str) != Some(MANAGED_BY_VALUE) {
            return None;
        }
        let stage = labels.get(STAGE_LABEL).and_then(Value::as_str)?;
        let stage = StageId::ALL.into_iter().find(|s| s.name() == stage)?;
        let action = match live.pointer("/spec/stagedAction").and_then(Value::as_str) {
            Some("Delete") => StagedAction::Delete,
            // Calico's default when the field is absent.
            _ => StagedAction::Set,
        };
        Some(Self {
            stage,
            kind,
            namespace: live
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string),
            name: live.pointer("/metadata/name")?.as_str()?.to_string(),
            action,
            live: live.clone(),
        })
    }

    /// The enforced kind this staged policy sets or deletes.
    pub fn enforced_kind(&self) -> CalicoKind {
        self.kind
            .enforced()
            .expect("read() keeps staged kinds only")
    }

    /// For `stagedAction: Set`, the enforced policy it becomes: the staged spec without
    /// `stagedAction`, the staged labels without the tier label calico-apiserver adds.
    pub fn enforced(&self) -> Option<DesiredObject> {
        if self.action != StagedAction::Set {
            return None;
        }
        let kind = self.enforced_kind();
        let mut labels = self
            .live
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if let Some(map) = labels.as_object_mut() {
            map.remove(TIER_LABEL);
        }
        let mut spec = self.live.get("spec").cloned().unwrap_or_else(|| json!({}));
        if let Some(map) = spec.as_object_mut() {
            map.remove("stagedAction");
        }
        let mut metadata = json!({"name": self.name, "labels": labels});
        if let Some(namespace) = &self.namespace {
            metadata["namespace"] = json!(namespace);
        }
        Some(DesiredObject {
            stage: self.stage,
            kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            manifest: json!({
                "apiVersion": crate::calico::policy::API_VERSION,
                "kind": kind.as_str(),
                "metadata": metadata,
                "spec": spec,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::ClusterFacts;
    use crate::stages::{StageOptions, StageRender, render};

    fn rendered(stage: StageId) -> Vec<DesiredObject> {
        match render(
            stage,
            &ClusterFacts::tutorial_lab(),
            &StageOptions::with_defaults(),
        ) {
            StageRender::Objects(objects) => objects,
            StageRender::NotApplicable(why) => panic!("{why}"),
        }
    }

    #[test]
    fn a_staged_copy_keeps_name_labels_and_spec_and_sets_the_staged_action() {
        for stage in [StageId::Localhost, StageId::CalicoApiserverToKapi] {
            let enforced = &rendered(stage)[0];
            let staged = staged_set(enforced).unwrap();
            assert_eq!(staged.kind, enforced.kind.staged().unwrap());
            assert_eq!(staged.name, enforced.name);
            assert_eq!(staged.namespace, enforced.namespace);
            assert_eq!(staged.manifest["kind"], staged.kind.as_str());
            assert_eq!(staged.manifest["spec"]["stagedAction"], "Set");
            assert_eq!(
                staged.manifest["metadata"], enforced.manifest["metadata"],
                "{stage}"
            );
            let mut spec = staged.manifest["spec"].clone();
            spec.as_object_mut().unwrap().remove("stagedAction");
            assert_eq!(spec, enforced.manifest["spec"]);
        }
    }

    #[test]
    fn a_staged_deletion_carries_nothing_but_the_action() {
        for enforced in rendered(StageId::SafetyNet) {
            let staged = staged_delete(&enforced, StageId::Lockdown).unwrap();
            assert_eq!(staged.kind, CalicoKind::StagedGlobalNetworkPolicy);
            assert_eq!(staged.manifest["spec"], json!({"stagedAction": "Delete"}));
            assert_eq!(
                staged.manifest["metadata"]["labels"][STAGE_LABEL],
                "lockdown"
            );
        }
    }

    #[test]
    fn promoting_gives_back_the_enforced_policy_as_rendered() {
        let enforced = rendered(StageId::ControllersToCalicoApiserver).remove(0);
        let mut live = staged_set(&enforced).unwrap().manifest;
        // What calico-apiserver adds.
        live["metadata"]["labels"][TIER_LABEL] = json!("default");
        live["metadata"]["resourceVersion"] = json!("7");
        live["spec"]["tier"] = json!("default");
        let staged = StagedPolicy::read(CalicoKind::StagedNetworkPolicy, &live).unwrap();
        assert_eq!(staged.stage, StageId::ControllersToCalicoApiserver);
        assert_eq!(staged.action, StagedAction::Set);
        let back = staged.enforced().unwrap();
        assert_eq!(back.kind, CalicoKind::NetworkPolicy);
        assert_eq!(back.namespace, enforced.namespace);
        assert_eq!(
            back.manifest["metadata"]["labels"],
            enforced.manifest["metadata"]["labels"]
        );
        let mut spec = back.manifest["spec"].clone();
        assert_eq!(
            spec.as_object_mut().unwrap().remove("tier"),
            Some(json!("default"))
        );
        assert_eq!(spec, enforced.manifest["spec"]);
    }

    #[test]
    fn only_our_staged_policies_are_read() {
        let mut live =
            json!({"metadata": {"name": "x", "labels": {}}, "spec": {"stagedAction": "Delete"}});
        assert!(StagedPolicy::read(CalicoKind::StagedGlobalNetworkPolicy, &live).is_none());
        live["metadata"]["labels"] =
            json!({MANAGED_BY_LABEL: MANAGED_BY_VALUE, STAGE_LABEL: "lockdown"});
        let staged = StagedPolicy::read(CalicoKind::StagedGlobalNetworkPolicy, &live).unwrap();
        assert_eq!(staged.action, StagedAction::Delete);
        assert!(staged.enforced().is_none());
        assert!(StagedPolicy::read(CalicoKind::GlobalNetworkPolicy, &live).is_none());
    }

    #[test]
    fn staged_mode_needs_calico_3_30() {
        assert!(require_staged_support(Some(("v3.30.0", "ClusterInformation default"))).is_ok());
        assert!(require_staged_support(Some(("v3.31.2", "calico-node image"))).is_ok());
        let old = require_staged_support(Some(("v3.29.4", "ClusterInformation default")))
            .unwrap_err()
            .to_string();
        assert!(
            old.contains("v3.29.4") && old.contains("ClusterInformation default"),
            "{old}"
        );
        assert!(require_staged_support(Some(("main", "calico-node image"))).is_err());
        assert!(require_staged_support(None).is_err());
    }
}
