//! Typed Calico policy resources (`projectcalico.org/v3`). Field order follows the tutorial's
//! manifests so rendered YAML reads like them; empty fields are omitted so what we render is what
//! a person would write. Fields this tool does not model are kept in `extra` at every level, so
//! a live object read and written back loses nothing a user set.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

pub const API_GROUP: &str = "projectcalico.org";
pub const API_VERSION: &str = "projectcalico.org/v3";

/// The Calico kinds this tool reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CalicoKind {
    GlobalNetworkPolicy,
    NetworkPolicy,
    KubeControllersConfiguration,
    FelixConfiguration,
    HostEndpoint,
    /// Calico 3.30+: a GlobalNetworkPolicy that is evaluated and reported in flow logs, never
    /// enforced (`spec.stagedAction` Set or Delete).
    StagedGlobalNetworkPolicy,
    /// Calico 3.30+: the staged form of a NetworkPolicy.
    StagedNetworkPolicy,
}

impl CalicoKind {
    pub fn plural(self) -> &'static str {
        match self {
            Self::GlobalNetworkPolicy => "globalnetworkpolicies",
            Self::NetworkPolicy => "networkpolicies",
            Self::KubeControllersConfiguration => "kubecontrollersconfigurations",
            Self::FelixConfiguration => "felixconfigurations",
            Self::HostEndpoint => "hostendpoints",
            Self::StagedGlobalNetworkPolicy => "stagedglobalnetworkpolicies",
            Self::StagedNetworkPolicy => "stagednetworkpolicies",
        }
    }

    pub fn namespaced(self) -> bool {
        matches!(self, Self::NetworkPolicy | Self::StagedNetworkPolicy)
    }

    /// The staged kind that previews this policy kind (Calico 3.30+); None for other kinds.
    pub fn staged(self) -> Option<Self> {
        match self {
            Self::GlobalNetworkPolicy => Some(Self::StagedGlobalNetworkPolicy),
            Self::NetworkPolicy => Some(Self::StagedNetworkPolicy),
            _ => None,
        }
    }

    /// The policy kind a staged kind becomes when it is enforced; None for other kinds.
    pub fn enforced(self) -> Option<Self> {
        match self {
            Self::StagedGlobalNetworkPolicy => Some(Self::GlobalNetworkPolicy),
            Self::StagedNetworkPolicy => Some(Self::NetworkPolicy),
            _ => None,
        }
    }

    /// The pseudo-resource calico-apiserver authorizes policy requests against, per tier
    /// (Calico's tiered RBAC): `tier.<plural>`, named `<tier>.*` for the whole tier. None for
    /// kinds that are not tiered.
    pub fn tier_scoped_plural(self) -> Option<&'static str> {
        match self {
            Self::GlobalNetworkPolicy => Some("tier.globalnetworkpolicies"),
            Self::NetworkPolicy => Some("tier.networkpolicies"),
            Self::StagedGlobalNetworkPolicy => Some("tier.stagedglobalnetworkpolicies"),
            Self::StagedNetworkPolicy => Some("tier.stagednetworkpolicies"),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            Self::NetworkPolicy => "NetworkPolicy",
            Self::KubeControllersConfiguration => "KubeControllersConfiguration",
            Self::FelixConfiguration => "FelixConfiguration",
            Self::HostEndpoint => "HostEndpoint",
            Self::StagedGlobalNetworkPolicy => "StagedGlobalNetworkPolicy",
            Self::StagedNetworkPolicy => "StagedNetworkPolicy",
        }
    }

    pub fn from_kind(kind: &str) -> Option<Self> {
        [
            Self::GlobalNetworkPolicy,
            Self::NetworkPolicy,
            Self::KubeControllersConfiguration,
            Self::FelixConfiguration,
            Self::HostEndpoint,
            Self::StagedGlobalNetworkPolicy,
            Self::StagedNetworkPolicy,
        ]
        .into_iter()
        .find(|k| k.as_str() == kind)
    }

    /// `globalnetworkpolicies.projectcalico.org`, as kubectl and RBAC name it.
    pub fn resource(self) -> String {
        format!("{}.{}", self.plural(), API_GROUP)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Deny,
    Log,
    Pass,
}

/// A port, a "from:to" range, or a named port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Port {
    Number(u16),
    Name(String),
}

/// A protocol name (TCP, UDP, ICMP, SCTP, UDPLite, ICMPv6) or number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Protocol {
    Number(u8),
    Name(String),
}

impl Protocol {
    pub fn tcp() -> Self {
        Self::Name("TCP".into())
    }
    pub fn udp() -> Self {
        Self::Name("UDP".into())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EntityRule {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceMatch>,
    /// Fields not modelled here (`serviceAccounts`, ...), kept as read.
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// `services`: the endpoints of a Kubernetes Service (destination) or its pods (source).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceMatch {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl EntityRule {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
    /// Fields not modelled here (`http`, `icmp`, `metadata`, ...), kept as read.
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Rule {
    pub fn new(action: Action) -> Self {
        Self {
            action,
            protocol: None,
            not_protocol: None,
            ip_version: None,
            source: EntityRule::default(),
            destination: EntityRule::default(),
            extra: Map::new(),
        }
    }

    pub fn allow() -> Self {
        Self::new(Action::Allow)
    }

    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    pub fn to_nets(mut self, nets: impl IntoIterator<Item = String>) -> Self {
        self.destination.nets = nets.into_iter().collect();
        self
    }

    pub fn to_selector(mut self, selector: impl Into<String>) -> Self {
        self.destination.selector = Some(selector.into());
        self
    }

    pub fn to_namespace_selector(mut self, selector: impl Into<String>) -> Self {
        self.destination.namespace_selector = Some(selector.into());
        self
    }

    pub fn from_selector(mut self, selector: impl Into<String>) -> Self {
        self.source.selector = Some(selector.into());
        self
    }

    pub fn to_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.destination.ports = ports.into_iter().map(Port::Number).collect();
        self
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicySpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_selector: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_on_forward: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_dnat: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub do_not_track: Option<bool>,
    /// Fields not modelled here (`performanceHints`, `stagedAction`, ...), kept as read.
    #[serde(flatten, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl PolicySpec {
    pub fn order(order: u32) -> Self {
        Self {
            order: Some(Number::from(order)),
            ..Self::default()
        }
    }

    pub fn order_value(&self) -> Option<f64> {
        self.order.as_ref().and_then(Number::as_f64)
    }

    /// Calico's default when `types` is empty: Egress is added when there are egress rules,
    /// Ingress otherwise (also with no rules at all).
    pub fn effective_types(&self) -> Vec<PolicyType> {
        if !self.types.is_empty() {
            return self.types.clone();
        }
        let mut types = Vec::new();
        if !self.ingress.is_empty() || self.egress.is_empty() {
            types.push(PolicyType::Ingress);
        }
        if !self.egress.is_empty() {
            types.push(PolicyType::Egress);
        }
        types
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("policy specs always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_default_follows_calico() {
        let mut spec = PolicySpec::order(1);
        assert_eq!(spec.effective_types(), vec![PolicyType::Ingress]);
        spec.egress.push(Rule::allow());
        assert_eq!(spec.effective_types(), vec![PolicyType::Egress]);
        spec.ingress.push(Rule::allow());
        assert_eq!(
            spec.effective_types(),
            vec![PolicyType::Ingress, PolicyType::Egress]
        );
    }

    #[test]
    fn rendering_omits_empty_fields_and_keeps_integer_orders() {
        let mut spec = PolicySpec::order(1001);
        spec.egress
            .push(Rule::allow().protocol(Protocol::tcp()).to_ports([5443]));
        assert_eq!(
            spec.to_value(),
            json!({"order": 1001, "egress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [5443]}}]})
        );
    }

    #[test]
    fn reads_live_specs_with_fields_we_do_not_model() {
        let live = json!({"order": 1000.5, "selector": "all()", "performanceHints": ["x"],
                          "ingress": [{"action": "Deny", "protocol": 6, "http": {}, "destination": {"ports": ["80:90", "http"]}}]});
        let spec: PolicySpec = serde_json::from_value(live).unwrap();
        assert_eq!(spec.order_value(), Some(1000.5));
        assert_eq!(spec.ingress[0].protocol, Some(Protocol::Number(6)));
        assert_eq!(
            spec.ingress[0].destination.ports,
            vec![Port::Name("80:90".into()), Port::Name("http".into())]
        );
    }
}
