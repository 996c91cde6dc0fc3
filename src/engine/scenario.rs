//! The cluster as it would be after a stage: live objects plus what the stage renders (replacing
//! live objects of the same identity); after `enable-hep`, the host endpoints kube-controllers
//! would create; after `lockdown`, the live state without the safety net and with those host
//! endpoints. Pure: nothing is sent to the cluster.

use serde_json::{Value, json};

use crate::calico::policy::CalicoKind;
use crate::facts::ClusterFacts;
use crate::live::LiveState;
use crate::stages::{self, StageId, StageOptions, StageRender};

pub const AUTO_HEP_SUFFIX: &str = "-auto-hep";
pub const CREATED_BY_LABEL: &str = "projectcalico.org/created-by";
pub const CREATED_BY_VALUE: &str = "calico-kube-controllers";

fn same_identity(object: &Value, namespace: Option<&str>, name: &str) -> bool {
    object.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
        && object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            == namespace
}

/// The `<node>-auto-hep` endpoints for nodes that have no host endpoint yet, as
/// kube-controllers creates them: the node's labels, its InternalIPs, interface `*`, profile
/// projectcalico-default-allow.
pub fn auto_host_endpoints(live: &LiveState) -> Vec<Value> {
    let has_hep = |node: &str| {
        live.inventory
            .host_endpoints
            .iter()
            .any(|h| h.pointer("/spec/node").and_then(Value::as_str) == Some(node))
    };
    live.inventory
        .nodes
        .iter()
        .filter_map(|node| {
            let name = node.pointer("/metadata/name")?.as_str()?;
            if has_hep(name) {
                return None;
            }
            let mut labels = node
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or_else(|| json!({}));
            labels[CREATED_BY_LABEL] = json!(CREATED_BY_VALUE);
            let ips: Vec<&Value> = node
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
                .filter_map(|a| a.get("address"))
                .collect();
            Some(json!({
                "apiVersion": crate::calico::policy::API_VERSION,
                "kind": "HostEndpoint",
                "metadata": {"name": format!("{name}{AUTO_HEP_SUFFIX}"), "labels": labels},
                "spec": {
                    "node": name,
                    "interfaceName": "*",
                    "expectedIPs": ips,
                    "profiles": ["projectcalico-default-allow"],
                },
            }))
        })
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
