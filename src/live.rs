//! What the cluster held when we read it: the inventory the facts come from plus the live Calico
//! policies. Plain data, so the engine, the plan and the checks work on a snapshot without
//! depending on the code that fetched it; `cluster::inventory::fetch` is the one producer.

use serde_json::Value;

use crate::calico::policy::CalicoKind;
use crate::facts::Inventory;

/// The inventory plus the live Calico policies, as the server returned them.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    pub inventory: Inventory,
    pub global_network_policies: Vec<Value>,
    pub network_policies: Vec<Value>,
}

impl LiveState {
    /// The live object with this identity, if any.
    pub fn find(&self, kind: CalicoKind, namespace: Option<&str>, name: &str) -> Option<&Value> {
        let pool = match kind {
            CalicoKind::GlobalNetworkPolicy => &self.global_network_policies,
            CalicoKind::NetworkPolicy => &self.network_policies,
            CalicoKind::HostEndpoint => &self.inventory.host_endpoints,
            CalicoKind::KubeControllersConfiguration => {
                return self
                    .inventory
                    .kube_controllers_configuration
                    .as_ref()
                    .filter(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name));
            }
            CalicoKind::FelixConfiguration => {
                return self
                    .inventory
                    .felix_configuration
                    .as_ref()
                    .filter(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name));
            }
        };
        pool.iter().find(|o| {
            o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                && (!kind.namespaced()
                    || o.pointer("/metadata/namespace").and_then(Value::as_str) == namespace)
        })
    }
}
