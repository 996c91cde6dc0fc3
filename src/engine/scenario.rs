//! The cluster as it would be after a stage: live objects plus what the stage renders (replacing
//! live objects of the same identity); after `enable-hep`, the host endpoints kube-controllers
//! would create; after `lockdown`, the live state without the safety net and with those host
//! endpoints. Pure: nothing is sent to the cluster.

use serde_json::Value;

use crate::calico::host_endpoints::{self, KccHostEndpointConfig, NodeFacts};
use crate::calico::policy::CalicoKind;
use crate::facts::ClusterFacts;
use crate::live::LiveState;
use crate::stages::{self, StageId, StageOptions, StageRender};

fn same_identity(object: &Value, namespace: Option<&str>, name: &str) -> bool {
    object.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
        && object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            == namespace
}

/// The live state with the safety net narrowed for a canary lockdown: each narrowed policy
/// replaces the live GlobalNetworkPolicy of its name.
pub fn with_narrowed_safety_net(live: &LiveState, narrowed: &[stages::DesiredObject]) -> LiveState {
    let mut after = live.clone();
    for desired in narrowed {
        for object in after.global_network_policies.iter_mut() {
            if same_identity(object, None, &desired.name) {
                *object = desired.manifest.clone();
            }
        }
    }
    after
}

/// The host endpoints kube-controllers keeps once autoCreate is Enabled, as
/// [`host_endpoints::predict`] predicts them from the KubeControllersConfiguration (templates,
/// createDefaultHostEndpoint, an AUTO_HOST_ENDPOINTS override) and the nodes, that are not live
/// yet.
pub fn auto_host_endpoints(live: &LiveState) -> Vec<Value> {
    let inventory = &live.inventory;
    let config =
        KccHostEndpointConfig::once_enabled(inventory.kube_controllers_configuration.as_ref());
    let nodes: Vec<NodeFacts> = inventory.nodes.iter().map(NodeFacts::from_node).collect();
    host_endpoints::predict(&config, &nodes)
        .into_iter()
        .filter(|hep| {
            !inventory
                .host_endpoints
                .iter()
                .any(|live| same_identity(live, None, &hep.name))
        })
        .map(|hep| hep.to_manifest())
        .collect()
}

/// Put a stage's rendered objects into `state`, replacing live objects with the same identity.
fn apply_objects(
    state: &mut LiveState,
    stage: StageId,
    facts: &ClusterFacts,
    options: &StageOptions,
) {
    let StageRender::Objects(objects) = stages::render(stage, facts, options) else {
        return;
    };
    for object in objects {
        let pool = match object.kind {
            CalicoKind::GlobalNetworkPolicy => &mut state.global_network_policies,
            CalicoKind::NetworkPolicy => &mut state.network_policies,
            _ => continue,
        };
        pool.retain(|o| !same_identity(o, object.namespace.as_deref(), &object.name));
        pool.push(object.manifest);
    }
}

/// Whether the state after `stage` has other endpoints than the live state (host endpoints
/// kube-controllers would create), not only other policies.
pub fn changes_endpoints(stage: StageId) -> bool {
    matches!(stage, StageId::EnableHep | StageId::Lockdown)
}

/// The state after `stage`. `None` is the live state itself.
pub fn state_after(
    live: &LiveState,
    facts: &ClusterFacts,
    options: &StageOptions,
    stage: Option<StageId>,
) -> LiveState {
    let mut state = live.clone();
    match stage {
        None => {}
        Some(StageId::EnableHep) => {
            let heps = auto_host_endpoints(&state);
            state.inventory.host_endpoints.extend(heps);
        }
        Some(StageId::Lockdown) => {
            if let StageRender::Objects(safety_net) =
                stages::render(StageId::SafetyNet, facts, options)
            {
                state
                    .global_network_policies
                    .retain(|o| !safety_net.iter().any(|d| same_identity(o, None, &d.name)));
            }
            let heps = auto_host_endpoints(&state);
            state.inventory.host_endpoints.extend(heps);
        }
        Some(policy_stage) => apply_objects(&mut state, policy_stage, facts, options),
    }
    state
}
