//! Typed Calico objects (`projectcalico.org/v3`) as this tool reads and writes them: the fields it
//! decides on are typed, everything else is kept in `extra` at every level, so an object read,
//! changed and written back keeps what a user set. Policy specs live in [`super::policy`].
//!
//! Types follow Calico's API (`api/pkg/apis/projectcalico/v3`); the API server validates them, so
//! a live object that does not deserialise here is one no Calico release serves.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::policy::PolicySpec;

/// Fields of an object or spec this tool does not model, kept as read.
pub type Extra = Map<String, Value>;

/// The object metadata this tool reads.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Metadata {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// One Calico object: metadata, a typed spec and (for kinds that report one) a typed status.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object<Spec, Status = Value> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: Spec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

impl<Spec, Status> Object<Spec, Status>
where
    Spec: DeserializeOwned + Serialize + Default,
    Status: DeserializeOwned + Serialize + Default,
{
    /// The object as typed; an error names what Calico's schema would have refused.
    pub fn from_value(value: &Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(value)
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("Calico objects always serialise")
    }
}

pub type GlobalNetworkPolicy = Object<PolicySpec>;
pub type NetworkPolicy = Object<PolicySpec>;
pub type HostEndpoint = Object<HostEndpointSpec>;
pub type FelixConfiguration = Object<FelixConfigurationSpec>;
pub type KubeControllersConfiguration =
    Object<KubeControllersConfigurationSpec, KubeControllersConfigurationStatus>;
pub type ClusterInformation = Object<ClusterInformationSpec>;
pub type Tier = Object<TierSpec>;
pub type IpPool = Object<IpPoolSpec>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HostEndpointSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    #[serde(rename = "expectedIPs", skip_serializing_if = "Vec::is_empty")]
    pub expected_ips: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// The FelixConfiguration fields this tool reads; every other setting stays in `extra`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FelixConfigurationSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failsafe_inbound_host_ports: Option<Vec<FailsafePort>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failsafe_outbound_host_ports: Option<Vec<FailsafePort>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_listening_port: Option<u64>,
    #[serde(rename = "wireguardEnabledV6", skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled_v6: Option<bool>,
    #[serde(
        rename = "wireguardListeningPortV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_listening_port_v6: Option<u64>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

impl FelixConfigurationSpec {
    /// Whether this configuration sets either failsafe list (an empty list counts: it clears).
    pub fn sets_failsafe(&self) -> bool {
        self.failsafe_inbound_host_ports.is_some() || self.failsafe_outbound_host_ports.is_some()
    }
}

/// One failsafe entry (Calico's `ProtoPort`): traffic Felix lets through before any policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailsafePort {
    /// `TCP`, `UDP` or `SCTP`; Felix reads a missing one as TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub port: u16,
    /// Only traffic from (inbound) or to (outbound) this CIDR; all addresses when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
}

impl FailsafePort {
    /// The protocol in lower case, as Felix's defaults spell it: `tcp`.
    pub fn protocol_name(&self) -> String {
        self.protocol.as_deref().unwrap_or("tcp").to_lowercase()
    }
}

/// `tcp:6443`, the form this tool reports failsafe ports in (the net is not part of it).
impl fmt::Display for FailsafePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol_name(), self.port)
    }
}

impl FromStr for FailsafePort {
    type Err = String;

    /// `protocol:port`, as [`fmt::Display`] writes it.
    fn from_str(entry: &str) -> Result<Self, String> {
        let (protocol, port) = entry
            .split_once(':')
            .ok_or_else(|| format!("failsafe port {entry:?} is not protocol:port"))?;
        let port = port
            .trim()
            .parse()
            .map_err(|_| format!("failsafe port {entry:?} has no port number"))?;
        Ok(Self {
            protocol: Some(protocol.to_string()),
            port,
            net: None,
        })
    }
}

/// `autoCreate` of the node controller's host endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AutoCreate {
    Enabled,
    #[default]
    Disabled,
}

impl AutoCreate {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
        }
    }

    /// The AUTO_HOST_ENDPOINTS environment variable's value (`enabled`, any case) as a setting.
    pub fn from_env(value: &str) -> Self {
        if value.eq_ignore_ascii_case("enabled") {
            Self::Enabled
        } else {
            Self::Disabled
        }
    }

    pub fn is_enabled(self) -> bool {
        self == Self::Enabled
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeControllersConfigurationSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controllers: Option<Controllers>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

impl KubeControllersConfigurationSpec {
    /// `controllers.node.hostEndpoint`, when set.
    pub fn host_endpoint(&self) -> Option<&AutoHostEndpointConfig> {
        self.controllers
            .as_ref()?
            .node
            .as_ref()?
            .host_endpoint
            .as_ref()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Controllers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeController>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeController {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_endpoint: Option<AutoHostEndpointConfig>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// `controllers.node.hostEndpoint`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AutoHostEndpointConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_create: Option<AutoCreate>,
    /// Enabled when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_default_host_endpoint: Option<AutoCreate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<HostEndpointTemplate>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// One entry of `spec.controllers.node.hostEndpoint.templates` (Calico 3.30+; `interfacePattern`
/// 3.31+).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HostEndpointTemplate {
    pub generate_name: String,
    #[serde(rename = "interfaceCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub interface_cidrs: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub interface_pattern: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Fields of later releases, kept as read.
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl HostEndpointTemplate {
    /// The template as the KubeControllersConfiguration spec spells it.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("templates always serialise")
    }
}

/// What calico-kube-controllers reports it runs with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeControllersConfigurationStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_config: Option<KubeControllersConfigurationSpec>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_vars: BTreeMap<String, String>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// The environment variable that, when set on kube-controllers, replaces the host endpoint spec.
pub const AUTO_HOST_ENDPOINTS_ENV: &str = "AUTO_HOST_ENDPOINTS";

impl KubeControllersConfiguration {
    /// AUTO_HOST_ENDPOINTS as kube-controllers reports it, when set.
    pub fn auto_host_endpoints_env(&self) -> Option<&str> {
        self.status
            .as_ref()?
            .environment_vars
            .get(AUTO_HOST_ENDPOINTS_ENV)
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInformationSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calico_version: Option<String>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TierSpec {
    /// None: after every ordered tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    /// `Deny` (Calico's default) or `Pass`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_action: Option<String>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpPoolSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// `Never`, `Always` or `CrossSubnet`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<String>,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

impl IpPoolSpec {
    /// Whether `mode` (ipipMode or vxlanMode) encapsulates: Always, or across subnets.
    pub fn encapsulates(mode: Option<&str>) -> bool {
        matches!(mode, Some("Always" | "CrossSubnet"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A GlobalNetworkPolicy with fields this tool does not model at every level.
    fn rich_policy() -> Value {
        json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {
                "name": "default.allow-dns",
                "labels": {"team": "net"},
                "annotations": {"note": "hand-made"},
                "resourceVersion": "42",
                "uid": "0b6e",
                "creationTimestamp": "2026-01-01T00:00:00Z"
            },
            "spec": {
                "tier": "default",
                "order": 1000.5,
                "selector": "all()",
                "namespaceSelector": "kubernetes.io/metadata.name == 'kube-system'",
                "serviceAccountSelector": "role == 'dns'",
                "types": ["Ingress", "Egress"],
                "performanceHints": ["AssumeNeededOnEveryNode"],
                "ingress": [{
                    "action": "Allow",
                    "protocol": "UDP",
                    "icmp": {"type": 8},
                    "metadata": {"annotations": {"why": "dns"}},
                    "source": {
                        "nets": ["10.0.0.0/8"],
                        "notNets": ["10.1.0.0/16"],
                        "selector": "k8s-app == 'kube-dns'",
                        "notSelector": "x == 'y'",
                        "namespaceSelector": "global()",
                        "serviceAccounts": {"names": ["coredns"]}
                    },
                    "destination": {
                        "ports": [53, "dns", "1000:2000"],
                        "notPorts": [54],
                        "services": {"name": "kube-dns", "namespace": "kube-system", "future": 1}
                    }
                }],
                "egress": [{"action": "Pass", "http": {"methods": ["GET"]}}]
            },
            "status": {"observed": true}
        })
    }

    #[test]
    fn a_policy_round_trips_with_every_field_a_user_set() {
        let live = rich_policy();
        let typed = GlobalNetworkPolicy::from_value(&live).unwrap();
        assert_eq!(typed.metadata.name, "default.allow-dns");
        assert_eq!(typed.metadata.extra["resourceVersion"], json!("42"));
        assert_eq!(typed.spec.order_value(), Some(1000.5));
        assert_eq!(
            typed.spec.extra["performanceHints"],
            json!(["AssumeNeededOnEveryNode"])
        );
        let ingress = &typed.spec.ingress[0];
        assert_eq!(ingress.extra["icmp"], json!({"type": 8}));
        assert_eq!(
            ingress.source.extra["serviceAccounts"],
            json!({"names": ["coredns"]})
        );
        let services = ingress.destination.services.as_ref().unwrap();
        assert_eq!(
            (services.name.as_str(), services.extra["future"].clone()),
            ("kube-dns", json!(1))
        );
        assert_eq!(typed.to_value(), live);
    }

    #[test]
    fn configurations_round_trip_and_read_their_typed_fields() {
        let kcc = json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "KubeControllersConfiguration",
            "metadata": {"name": "default", "generation": 3},
            "spec": {
                "logSeverityScreen": "Info",
                "controllers": {
                    "namespace": {"reconcilerPeriod": "5m"},
                    "node": {
                        "syncLabels": "Enabled",
                        "hostEndpoint": {
                            "autoCreate": "Enabled",
                            "createDefaultHostEndpoint": "Disabled",
                            "templates": [{"generateName": "eth", "interfaceCIDRs": ["10.0.0.0/8"]}]
                        }
                    }
                }
            },
            "status": {
                "environmentVars": {"AUTO_HOST_ENDPOINTS": "disabled"},
                "runningConfig": {"controllers": {"node": {"hostEndpoint": {"autoCreate": "Disabled"}}}}
            }
        });
        let typed = KubeControllersConfiguration::from_value(&kcc).unwrap();
        let host_endpoint = typed.spec.host_endpoint().unwrap();
        assert_eq!(host_endpoint.auto_create, Some(AutoCreate::Enabled));
        assert_eq!(host_endpoint.templates[0].generate_name, "eth");
        assert_eq!(typed.auto_host_endpoints_env(), Some("disabled"));
        assert_eq!(typed.to_value(), kcc);

        let felix = json!({
            "metadata": {"name": "default"},
            "spec": {
                "bpfEnabled": false,
                "failsafeInboundHostPorts": [{"protocol": "TCP", "port": 22}, {"port": 6443, "net": "10.0.0.0/8"}],
                "vxlanPort": 4790
            }
        });
        let typed = FelixConfiguration::from_value(&felix).unwrap();
        let inbound = typed.spec.failsafe_inbound_host_ports.as_ref().unwrap();
        let shown: Vec<String> = inbound.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["tcp:22", "tcp:6443"]);
        assert_eq!(inbound[1].net.as_deref(), Some("10.0.0.0/8"));
        assert!(typed.spec.sets_failsafe());
        assert_eq!(typed.to_value(), felix);
    }

    #[test]
    fn failsafe_ports_parse_what_they_display() {
        let port: FailsafePort = "udp:53".parse().unwrap();
        assert_eq!(port.to_string(), "udp:53");
        assert!("tcp".parse::<FailsafePort>().is_err());
        assert!("tcp:http".parse::<FailsafePort>().is_err());
    }
}
