//! The host endpoints calico-kube-controllers creates, predicted from the same inputs it reads.
//!
//! Replicates Calico v3.31.0's node controller (`kube-controllers/pkg/controllers/node/
//! hostendpoints.go`, `syncHostEndpointsForNode`) and how it sees a Kubernetes Node
//! (`libcalico-go/lib/backend/k8s/resources/node.go`, `K8sNodeToCalico`): which endpoints, their
//! names, labels, `expectedIPs` (in Calico's order) and `interfaceName`. `enable-hep --wait`
//! waits for exactly this set, `plan` compares it with the live one, and `check` and lockdown's
//! preflight evaluate it where kube-controllers has not created the endpoints yet.
//!
//! Assumed as Calico's defaults: the Calico IPAM (no `USE_POD_CIDR`, so tunnel addresses come
//! from the node annotations, not from `spec.podCIDR`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use super::objects::HostEndpointTemplate;
use super::objects::{
    AutoCreate, AutoHostEndpointConfig, HostEndpoint as LiveHostEndpoint,
    KubeControllersConfiguration,
};
use super::selector;

pub const CREATED_BY_LABEL: &str = "projectcalico.org/created-by";
pub const CREATED_BY_VALUE: &str = "calico-kube-controllers";
pub const DEFAULT_ALLOW_PROFILE: &str = "projectcalico-default-allow";
const NAME_SUFFIX: &str = "auto-hep";
/// The default endpoint covers every interface of its node.
const ALL_INTERFACES: &str = "*";
/// Kubernetes' DNS-1123 subdomain limit, which Calico hashes longer names into.
const MAX_NAME_LEN: usize = 253;

/// The node annotations calico-node writes and `K8sNodeToCalico` reads; the inventory keeps
/// only these of a node's annotations.
pub const NODE_ANNOTATIONS: &[&str] = &[
    ANNOTATION_IPV4_ADDRESS,
    ANNOTATION_IPV6_ADDRESS,
    ANNOTATION_IPIP_TUNNEL,
    ANNOTATION_VXLAN_V4_TUNNEL,
    ANNOTATION_VXLAN_V6_TUNNEL,
    ANNOTATION_WIREGUARD_V4,
    ANNOTATION_WIREGUARD_V6,
    ANNOTATION_INTERFACES,
    ANNOTATION_CALICO_LABELS,
];
const ANNOTATION_IPV4_ADDRESS: &str = "projectcalico.org/IPv4Address";
const ANNOTATION_IPV6_ADDRESS: &str = "projectcalico.org/IPv6Address";
const ANNOTATION_IPIP_TUNNEL: &str = "projectcalico.org/IPv4IPIPTunnelAddr";
const ANNOTATION_VXLAN_V4_TUNNEL: &str = "projectcalico.org/IPv4VXLANTunnelAddr";
const ANNOTATION_VXLAN_V6_TUNNEL: &str = "projectcalico.org/IPv6VXLANTunnelAddr";
const ANNOTATION_WIREGUARD_V4: &str = "projectcalico.org/IPv4WireguardInterfaceAddr";
const ANNOTATION_WIREGUARD_V6: &str = "projectcalico.org/IPv6WireguardInterfaceAddr";
const ANNOTATION_INTERFACES: &str = "projectcalico.org/Interfaces";
const ANNOTATION_CALICO_LABELS: &str = "projectcalico.org/labels";

/// What the node controller runs with for host endpoints (kube-controllers'
/// `AutoHostEndpointConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KccHostEndpointConfig {
    pub auto_create: bool,
    pub create_default_host_endpoint: bool,
    pub templates: Vec<HostEndpointTemplate>,
}

impl Default for KccHostEndpointConfig {
    /// kube-controllers' defaults: nothing created, the default endpoint on once enabled.
    fn default() -> Self {
        Self {
            auto_create: false,
            create_default_host_endpoint: true,
            templates: Vec::new(),
        }
    }
}

impl KccHostEndpointConfig {
    /// What kube-controllers runs with for this KubeControllersConfiguration
    /// (`mergeAutoHostEndpoints`): the AUTO_HOST_ENDPOINTS environment variable, when it reports
    /// one in `status.environmentVars`, replaces the whole spec (`enabled`: the default endpoint
    /// only, no templates); otherwise `spec.controllers.node.hostEndpoint`. A configuration
    /// Calico's schema would refuse counts as absent.
    pub fn running(kcc: Option<&Value>) -> Self {
        let Some(kcc) = kcc.and_then(|k| KubeControllersConfiguration::from_value(k).ok()) else {
            return Self::default();
        };
        if let Some(env) = kcc.auto_host_endpoints_env() {
            return Self {
                auto_create: AutoCreate::from_env(env).is_enabled(),
                ..Self::default()
            };
        }
        Self::from_spec(kcc.spec.host_endpoint())
    }

    /// What kube-controllers runs with once `enable-hep` has set autoCreate to Enabled: the
    /// running configuration with autoCreate on, unless the environment variable decides.
    pub fn once_enabled(kcc: Option<&Value>) -> Self {
        let overridden = kcc
            .and_then(|k| KubeControllersConfiguration::from_value(k).ok())
            .is_some_and(|k| k.auto_host_endpoints_env().is_some());
        let mut config = Self::running(kcc);
        if !overridden {
            config.auto_create = true;
        }
        config
    }

    /// From `spec.controllers.node.hostEndpoint`; an empty createDefaultHostEndpoint is Enabled.
    pub fn from_spec(host_endpoint: Option<&AutoHostEndpointConfig>) -> Self {
        let Some(spec) = host_endpoint else {
            return Self::default();
        };
        Self {
            auto_create: spec.auto_create.is_some_and(AutoCreate::is_enabled),
            create_default_host_endpoint: spec.create_default_host_endpoint
                != Some(AutoCreate::Disabled),
            templates: spec.templates.clone(),
        }
    }
}

/// A network interface calico-node reported in the `projectcalico.org/Interfaces` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInterface {
    pub name: String,
    pub addresses: Vec<String>,
}

/// What the node controller sees of one node: the libcalico Node `K8sNodeToCalico` makes of a
/// Kubernetes Node. Addresses are kept as written (Calico compares them as strings).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeFacts {
    pub name: String,
    /// Calico's labels (`projectcalico.org/labels`) overlaid with the Kubernetes labels.
    pub labels: BTreeMap<String, String>,
    pub bgp_ipv4_address: Option<String>,
    pub bgp_ipv6_address: Option<String>,
    pub ipip_tunnel_address: Option<String>,
    pub vxlan_tunnel_v4_address: Option<String>,
    pub vxlan_tunnel_v6_address: Option<String>,
    pub wireguard_v4_address: Option<String>,
    pub wireguard_v6_address: Option<String>,
    pub internal_ips: Vec<String>,
    pub interfaces: Vec<NodeInterface>,
}

impl NodeFacts {
    /// From a Kubernetes Node as the API returns it. Annotations that fail Calico's validators
    /// are ignored, as `getAnnotation` does.
    pub fn from_node(node: &Value) -> Self {
        let annotation = |key: &str| {
            node.pointer("/metadata/annotations")
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        let validated = |key: &str, valid: fn(&str) -> bool| {
            annotation(key).filter(|v| valid(v)).map(str::to_string)
        };
        let mut labels: BTreeMap<String, String> = annotation(ANNOTATION_CALICO_LABELS)
            .and_then(|raw| serde_json::from_str(raw).ok())
            .unwrap_or_default();
        labels.extend(string_map(node.pointer("/metadata/labels")));
        let internal_ips = node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
            .filter_map(|a| a.get("address").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        Self {
            name: node
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            labels,
            bgp_ipv4_address: validated(ANNOTATION_IPV4_ADDRESS, |v| {
                cidr_or_ip_version(v) == Some(4)
            }),
            bgp_ipv6_address: validated(ANNOTATION_IPV6_ADDRESS, |v| {
                cidr_or_ip_version(v) == Some(6)
            }),
            ipip_tunnel_address: validated(ANNOTATION_IPIP_TUNNEL, |v| {
                masked_network_version(v) == Some(4)
            }),
            vxlan_tunnel_v4_address: validated(ANNOTATION_VXLAN_V4_TUNNEL, |v| {
                masked_network_version(v) == Some(4)
            }),
            vxlan_tunnel_v6_address: validated(ANNOTATION_VXLAN_V6_TUNNEL, |v| {
                masked_network_version(v) == Some(6)
            }),
            wireguard_v4_address: validated(ANNOTATION_WIREGUARD_V4, |v| {
                masked_network_version(v) == Some(4)
            }),
            wireguard_v6_address: validated(ANNOTATION_WIREGUARD_V6, |v| {
                masked_network_version(v) == Some(6)
            }),
            internal_ips,
            interfaces: annotation(ANNOTATION_INTERFACES)
                .map(parse_interfaces)
                .unwrap_or_default(),
        }
    }

    /// Every known IP of the node in Calico's order (`getExpectedIPs`): BGP IPv4 and IPv6
    /// addresses (without their prefix), the IPIP tunnel, the VXLAN v4 and v6 tunnels, the
    /// WireGuard interface addresses, then InternalIPs and interface addresses not already
    /// listed; entries that do not parse are dropped.
    pub fn expected_ips(&self) -> Vec<String> {
        let mut ips: Vec<String> = Vec::new();
        for bgp in [&self.bgp_ipv4_address, &self.bgp_ipv6_address]
            .into_iter()
            .flatten()
        {
            if let Some(ip) = parse_cidr_or_ip(bgp) {
                ips.push(go_ip_string(ip));
            }
        }
        // Calico appends these without checking for duplicates.
        ips.extend(
            [
                &self.ipip_tunnel_address,
                &self.vxlan_tunnel_v4_address,
                &self.vxlan_tunnel_v6_address,
                &self.wireguard_v4_address,
                &self.wireguard_v6_address,
            ]
            .into_iter()
            .flatten()
            .cloned(),
        );
        let mut seen: BTreeSet<String> = ips.iter().cloned().collect();
        let later = self.internal_ips.iter().chain(
            self.interfaces
                .iter()
                .flat_map(|interface| &interface.addresses),
        );
        for address in later {
            if seen.insert(address.clone()) {
                ips.push(address.clone());
            }
        }
        ips.retain(|ip| parse_cidr_or_ip(ip).is_some());
        ips
    }
}

/// A HostEndpoint as kube-controllers writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostEndpoint {
    pub name: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub expected_ips: Vec<String>,
    /// `*` for the default endpoint, the interface for an interfacePattern template, else empty.
    pub interface_name: String,
    pub profiles: Vec<String>,
}

impl HostEndpoint {
    /// The `projectcalico.org/v3` object (empty fields left out, as Calico's `omitempty` does).
    pub fn to_manifest(&self) -> Value {
        let mut spec = json!({"node": self.node, "profiles": self.profiles});
        if !self.interface_name.is_empty() {
            spec["interfaceName"] = json!(self.interface_name);
        }
        if !self.expected_ips.is_empty() {
            spec["expectedIPs"] = json!(self.expected_ips);
        }
        json!({
            "apiVersion": super::policy::API_VERSION,
            "kind": "HostEndpoint",
            "metadata": {"name": self.name, "labels": self.labels},
            "spec": spec,
        })
    }

    /// A live HostEndpoint object read back into the fields kube-controllers sets.
    pub fn from_manifest(object: &Value) -> Self {
        let live = LiveHostEndpoint::from_value(object).unwrap_or_default();
        Self {
            name: live.metadata.name,
            node: live.spec.node.unwrap_or_default(),
            labels: live.metadata.labels,
            expected_ips: live.spec.expected_ips,
            interface_name: live.spec.interface_name.unwrap_or_default(),
            profiles: live.spec.profiles,
        }
    }
}

/// True when kube-controllers manages this live HostEndpoint (`isAutoHostEndpoint`).
pub fn is_automatic(object: &Value) -> bool {
    object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(CREATED_BY_LABEL))
        .and_then(Value::as_str)
        == Some(CREATED_BY_VALUE)
}

/// The live automatic host endpoints against a prediction, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// Predicted and live exactly as predicted (labels, expected IPs, interface, profiles).
    pub in_place: Vec<String>,
    pub missing: Vec<String>,
    /// Live under a predicted name, but not yet as predicted.
    pub different: Vec<String>,
    /// Automatic endpoints not predicted: kube-controllers deletes them.
    pub extra: Vec<String>,
}

impl Comparison {
    pub fn matches(&self) -> bool {
        self.missing.is_empty() && self.different.is_empty() && self.extra.is_empty()
    }
}

/// Compare `live` HostEndpoint objects (only kube-controllers' own count) with `predicted`.
pub fn compare(predicted: &[HostEndpoint], live: &[Value]) -> Comparison {
    let automatic: BTreeMap<String, HostEndpoint> = live
        .iter()
        .filter(|h| is_automatic(h))
        .map(HostEndpoint::from_manifest)
        .map(|h| (h.name.clone(), h))
        .collect();
    let mut comparison = Comparison::default();
    for hep in predicted {
        match automatic.get(&hep.name) {
            Some(live) if live == hep => comparison.in_place.push(hep.name.clone()),
            Some(_) => comparison.different.push(hep.name.clone()),
            None => comparison.missing.push(hep.name.clone()),
        }
    }
    comparison.extra = automatic
        .into_keys()
        .filter(|name| !predicted.iter().any(|h| &h.name == name))
        .collect();
    comparison
}

/// The host endpoints kube-controllers keeps for `nodes` under `config`, node by node in the
/// given order: the default endpoint first, then each template's in template order.
pub fn predict(config: &KccHostEndpointConfig, nodes: &[NodeFacts]) -> Vec<HostEndpoint> {
    if !config.auto_create {
        return Vec::new();
    }
    let mut out = Vec::new();
    for node in nodes {
        if config.create_default_host_endpoint {
            out.push(endpoint(
                node,
                &BTreeMap::new(),
                endpoint_name(&node.name, "", ""),
                node.expected_ips(),
                ALL_INTERFACES,
            ));
        }
        for template in &config.templates {
            // kube-controllers stops at a selector that does not parse, skipping the node's
            // remaining templates (and its clean-up).
            let Ok(node_selector) = selector::parse(&template.node_selector) else {
                break;
            };
            if !node_selector.matches(&node.labels) {
                continue;
            }
            out.extend(template_endpoints(node, template));
        }
    }
    out
}

/// The endpoints one template makes for a node it selects: one with the template's CIDR
/// matches, or one per interface matching its pattern.
fn template_endpoints(node: &NodeFacts, template: &HostEndpointTemplate) -> Vec<HostEndpoint> {
    let expected_ips = expected_ips_in_cidrs(node, &template.interface_cidrs);
    if template.interface_pattern.is_empty() {
        // An endpoint without an interface needs an expected IP to be valid.
        if expected_ips.is_empty() {
            return Vec::new();
        }
        let name = endpoint_name(&node.name, &template.generate_name, "");
        return vec![endpoint(node, &template.labels, name, expected_ips, "")];
    }
    // kube-controllers' regexp.MustCompile would panic on a bad pattern; the API server's
    // validation keeps it out, so nothing is predicted for one.
    let Ok(pattern) = regex::Regex::new(&template.interface_pattern) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for interface in node.interfaces.iter().filter(|i| pattern.is_match(&i.name)) {
        let mut ips = expected_ips.clone();
        for address in &interface.addresses {
            if !ips.contains(address) {
                ips.push(address.clone());
            }
        }
        out.push(endpoint(
            node,
            &template.labels,
            endpoint_name(&node.name, &template.generate_name, &interface.name),
            ips,
            &interface.name,
        ));
    }
    out
}

fn endpoint(
    node: &NodeFacts,
    template_labels: &BTreeMap<String, String>,
    name: String,
    expected_ips: Vec<String>,
    interface_name: &str,
) -> HostEndpoint {
    let mut labels = node.labels.clone();
    labels.extend(template_labels.clone());
    labels.insert(CREATED_BY_LABEL.into(), CREATED_BY_VALUE.into());
    HostEndpoint {
        name,
        node: node.name.clone(),
        labels,
        expected_ips,
        interface_name: interface_name.to_string(),
        profiles: vec![DEFAULT_ALLOW_PROFILE.into()],
    }
}

/// `generateAutoHostEndpointName`: `<node>-auto-hep`, `<node>-<template>-auto-hep`,
/// `<node>-<template>-<interface>-auto-hep`, hashed when longer than 253 characters.
pub fn endpoint_name(node: &str, template: &str, interface: &str) -> String {
    let name = match (template.is_empty(), interface.is_empty()) {
        (true, _) => format!("{node}-{NAME_SUFFIX}"),
        (false, true) => format!("{node}-{template}-{NAME_SUFFIX}"),
        (false, false) => format!("{node}-{template}-{interface}-{NAME_SUFFIX}"),
    };
    hash_name_if_too_long(name)
}

/// `hashNameIfTooLong`: the SHA-256 of the name, unpadded URL-safe base64 without `-`, `_`
/// and `.`, lower-cased, with `-auto-hep`, cut at 253 characters.
fn hash_name_if_too_long(name: String) -> String {
    if name.len() <= MAX_NAME_LEN {
        return name;
    }
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(digest)
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .collect();
    let mut hashed = format!("{hash}-{NAME_SUFFIX}").to_lowercase();
    hashed.truncate(MAX_NAME_LEN);
    hashed
}

/// `getExpectedIPsMatchingInterfaceCIDRs`: the node's expected IPs inside any of the CIDRs, in
/// the node's order and printed as Go prints an IP. Like Calico, a CIDR that does not parse as
/// one (a bare IP, for instance) empties the list as soon as an address is compared with it.
fn expected_ips_in_cidrs(node: &NodeFacts, cidrs: &[String]) -> Vec<String> {
    let mut matched = Vec::new();
    for address in node.expected_ips() {
        let ip: Option<IpAddr> = address.parse().ok();
        for cidr in cidrs {
            let Some(network) = parse_go_cidr(cidr) else {
                return Vec::new();
            };
            if let Some(ip) = ip
                && network.contains(&ip)
            {
                matched.push(go_ip_string(ip));
                break;
            }
        }
    }
    matched
}

/// A CIDR as Go's `net.ParseCIDR` reads it: a prefix is required; host bits may be set.
pub fn parse_go_cidr(cidr: &str) -> Option<ipnet::IpNet> {
    if !cidr.contains('/') {
        return None;
    }
    let network: ipnet::IpNet = cidr.parse().ok()?;
    Some(network)
}

/// Go's `net.IP.String()`: an IPv4-mapped IPv6 address prints as IPv4.
fn go_ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// libcalico's `ParseCIDROrIP`: the IP of `a.b.c.d/n` or of a bare address.
fn parse_cidr_or_ip(text: &str) -> Option<IpAddr> {
    if text.contains('/') {
        text.parse::<ipnet::IpNet>()
            .ok()
            .map(|network| network.addr())
    } else {
        text.parse().ok()
    }
}

fn ip_version(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 4,
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => 4,
        IpAddr::V6(_) => 6,
    }
}

/// `ValidateCIDRv4/v6`: an address or CIDR of that version, host bits allowed.
fn cidr_or_ip_version(text: &str) -> Option<u8> {
    parse_cidr_or_ip(text).map(ip_version)
}

/// `ValidateIPv4Network/IPv6Network`: an address, or a CIDR without host bits.
fn masked_network_version(text: &str) -> Option<u8> {
    let ip = parse_cidr_or_ip(text)?;
    if text.contains('/') {
        let network: ipnet::IpNet = text.parse().ok()?;
        if network.network() != ip {
            return None;
        }
    }
    Some(ip_version(ip))
}

/// The `projectcalico.org/Interfaces` annotation (`[{"name": ..., "addresses": [...]}]`);
/// addresses that are not IPs are dropped, an annotation that is not JSON gives none.
fn parse_interfaces(raw: &str) -> Vec<NodeInterface> {
    let Ok(Value::Array(entries)) = serde_json::from_str::<Value>(raw) else {
        return Vec::new();
    };
    entries
        .iter()
        .map(|entry| NodeInterface {
            name: entry
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            addresses: entry
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|a| a.parse::<IpAddr>().is_ok())
                .map(str::to_string)
                .collect(),
        })
        .collect()
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lab node as the seed writes it: the annotations calico-node sets, an InternalIP.
    fn lab_node(name: &str, host: u8, control_plane: bool) -> Value {
        let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
        if control_plane {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
        }
        json!({"metadata": {"name": name, "labels": labels, "annotations": {
                    "projectcalico.org/IPv4Address": format!("10.0.0.{host}/24"),
                    "projectcalico.org/IPv4VXLANTunnelAddr": format!("192.168.{}.1", host - 1),
                    "unrelated": "x"}},
               "status": {"addresses": [{"type": "InternalIP", "address": format!("10.0.0.{host}")},
                                         {"type": "Hostname", "address": name}]}})
    }

    fn lab() -> Vec<NodeFacts> {
        [
            ("control", 1, true),
            ("node1", 2, false),
            ("node2", 3, false),
        ]
        .iter()
        .map(|(name, host, cp)| NodeFacts::from_node(&lab_node(name, *host, *cp)))
        .collect()
    }

    fn enabled() -> KccHostEndpointConfig {
        KccHostEndpointConfig {
            auto_create: true,
            ..Default::default()
        }
    }

    fn template(name: &str, selector: &str, cidrs: &[&str]) -> HostEndpointTemplate {
        HostEndpointTemplate {
            generate_name: name.into(),
            node_selector: selector.into(),
            interface_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
    }

    fn names(heps: &[HostEndpoint]) -> Vec<&str> {
        heps.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn default_endpoint_per_node_with_bgp_then_tunnel_then_new_internal_ips() {
        let heps = predict(&enabled(), &lab());
        assert_eq!(
            names(&heps),
            ["control-auto-hep", "node1-auto-hep", "node2-auto-hep"]
        );
        let control = &heps[0];
        assert_eq!(control.expected_ips, ["10.0.0.1", "192.168.0.1"]);
        assert_eq!(control.interface_name, "*");
        assert_eq!(control.profiles, ["projectcalico-default-allow"]);
        assert_eq!(
            control.labels["projectcalico.org/created-by"],
            "calico-kube-controllers"
        );
        assert_eq!(control.labels["node-role.kubernetes.io/control-plane"], "");
        assert_eq!(
            control.to_manifest()["spec"],
            json!({"node": "control", "profiles": ["projectcalico-default-allow"],
                   "interfaceName": "*", "expectedIPs": ["10.0.0.1", "192.168.0.1"]})
        );
    }

    #[test]
    fn nothing_while_auto_create_is_disabled() {
        assert!(predict(&KccHostEndpointConfig::default(), &lab()).is_empty());
    }

    #[test]
    fn expected_ips_follow_calicos_order_and_deduplication() {
        let node = NodeFacts::from_node(&json!({
            "metadata": {"name": "n", "annotations": {
                "projectcalico.org/IPv4Address": "10.1.0.5/16",
                "projectcalico.org/IPv6Address": "fd00::5/64",
                "projectcalico.org/IPv4IPIPTunnelAddr": "192.168.5.1",
                "projectcalico.org/IPv4VXLANTunnelAddr": "192.168.5.2",
                "projectcalico.org/IPv6VXLANTunnelAddr": "fd10::2",
                "projectcalico.org/IPv4WireguardInterfaceAddr": "192.168.5.3",
                "projectcalico.org/IPv6WireguardInterfaceAddr": "fd10::3",
                "projectcalico.org/Interfaces":
                    r#"[{"name": "eth0", "addresses": ["10.1.0.5", "172.16.0.5"]},
                        {"name": "eth1", "addresses": ["not-an-ip", "172.17.0.5"]}]"#}},
            "status": {"addresses": [
                {"type": "ExternalIP", "address": "203.0.113.5"},
                {"type": "InternalIP", "address": "10.2.0.5"},
                {"type": "InternalIP", "address": "10.1.0.5"}]}}));
        assert_eq!(
            node.expected_ips(),
            [
                "10.1.0.5",
                "fd00::5",
                "192.168.5.1",
                "192.168.5.2",
                "fd10::2",
                "192.168.5.3",
                "fd10::3",
                "10.2.0.5",
                "172.16.0.5",
                "172.17.0.5"
            ]
        );
    }

    #[test]
    fn annotations_failing_calicos_validators_are_ignored() {
        let node = NodeFacts::from_node(&json!({"metadata": {"name": "n", "annotations": {
            // IPv6 in the IPv4 annotation; a tunnel address with host bits set.
            "projectcalico.org/IPv4Address": "fd00::1/64",
            "projectcalico.org/IPv4VXLANTunnelAddr": "192.168.0.1/24",
            "projectcalico.org/IPv4IPIPTunnelAddr": "192.168.0.0/24",
            "projectcalico.org/Interfaces": "not json"}}}));
        assert_eq!(node.bgp_ipv4_address, None);
        assert_eq!(node.vxlan_tunnel_v4_address, None);
        assert_eq!(node.ipip_tunnel_address.as_deref(), Some("192.168.0.0/24"));
        assert!(node.interfaces.is_empty());
        // Calico keeps a masked CIDR as written and lists it (ParseCIDROrIP accepts it).
        assert_eq!(node.expected_ips(), ["192.168.0.0/24"]);
    }

    #[test]
    fn calico_labels_annotation_is_overlaid_by_kubernetes_labels() {
        let node = NodeFacts::from_node(&json!({"metadata": {"name": "n",
            "labels": {"zone": "k8s"},
            "annotations": {"projectcalico.org/labels": r#"{"zone": "calico", "rack": "r1"}"#}}}));
        assert_eq!(node.labels["zone"], "k8s");
        assert_eq!(node.labels["rack"], "r1");
    }

    #[test]
    fn template_selects_nodes_filters_ips_and_adds_labels() {
        let mut cp = template(
            "control-plane",
            "has(node-role.kubernetes.io/control-plane)",
            &["192.168.0.0/16"],
        );
        cp.labels.insert("tier".into(), "control".into());
        // A template label overrides the node's label of the same key.
        cp.labels
            .insert("kubernetes.io/os".into(), "templated".into());
        let config = KccHostEndpointConfig {
            templates: vec![cp],
            ..enabled()
        };
        let heps = predict(&config, &lab());
        assert_eq!(
            names(&heps),
            [
                "control-auto-hep",
                "control-control-plane-auto-hep",
                "node1-auto-hep",
                "node2-auto-hep"
            ]
        );
        let templated = &heps[1];
        assert_eq!(templated.expected_ips, ["192.168.0.1"]);
        assert_eq!(templated.interface_name, "");
        assert_eq!(templated.labels["tier"], "control");
        assert_eq!(templated.labels["kubernetes.io/os"], "templated");
        assert!(
            templated.to_manifest()["spec"]
                .get("interfaceName")
                .is_none()
        );
    }

    #[test]
    fn without_the_default_only_templates_whose_cidrs_match_give_endpoints() {
        let config = KccHostEndpointConfig {
            create_default_host_endpoint: false,
            templates: vec![
                template("nodes", "", &["10.0.0.0/24"]),
                template("nowhere", "all()", &["172.31.0.0/16"]),
                // Neither CIDRs nor a pattern: no expected IP, so nothing.
                template("empty", "", &[]),
            ],
            ..enabled()
        };
        let heps = predict(&config, &lab());
        assert_eq!(
            names(&heps),
            [
                "control-nodes-auto-hep",
                "node1-nodes-auto-hep",
                "node2-nodes-auto-hep"
            ]
        );
        assert_eq!(heps[2].expected_ips, ["10.0.0.3"]);
    }

    #[test]
    fn a_bare_ip_as_interface_cidr_empties_the_match_as_go_parse_cidr_fails() {
        let nodes = lab();
        assert!(expected_ips_in_cidrs(&nodes[0], &["10.0.0.1".into()]).is_empty());
        // Reached only for addresses the first CIDR does not contain.
        assert!(expected_ips_in_cidrs(&nodes[0], &["10.0.0.0/24".into(), "bad".into()]).is_empty());
        assert_eq!(
            expected_ips_in_cidrs(&nodes[0], &["0.0.0.0/0".into(), "bad".into()]),
            ["10.0.0.1", "192.168.0.1"]
        );
    }

    #[test]
    fn a_selector_that_does_not_parse_stops_the_nodes_remaining_templates() {
        let config = KccHostEndpointConfig {
            templates: vec![
                template("a", "has(", &["10.0.0.0/8"]),
                template("b", "", &["10.0.0.0/8"]),
            ],
            ..enabled()
        };
        let heps = predict(&config, &lab()[..1]);
        assert_eq!(names(&heps), ["control-auto-hep"]);
    }

    #[test]
    fn interface_pattern_gives_one_endpoint_per_matching_interface() {
        let mut node = lab_node("w", 9, false);
        node["metadata"]["annotations"]["projectcalico.org/Interfaces"] = json!(
            r#"[{"name": "eth0", "addresses": ["10.0.0.9", "10.0.0.99"]},
                {"name": "eth1", "addresses": ["172.16.0.9"]},
                {"name": "lo", "addresses": ["127.0.0.1"]}]"#
        );
        let config = KccHostEndpointConfig {
            create_default_host_endpoint: false,
            templates: vec![HostEndpointTemplate {
                generate_name: "ifaces".into(),
                interface_pattern: "eth".into(),
                interface_cidrs: vec!["10.0.0.0/24".into()],
                ..Default::default()
            }],
            ..enabled()
        };
        let heps = predict(&config, &[NodeFacts::from_node(&node)]);
        assert_eq!(
            names(&heps),
            ["w-ifaces-eth0-auto-hep", "w-ifaces-eth1-auto-hep"]
        );
        // The node's IPs inside the CIDRs (interface addresses count as node IPs), then the
        // interface's own addresses not yet listed.
        assert_eq!(heps[0].expected_ips, ["10.0.0.9", "10.0.0.99"]);
        assert_eq!(heps[0].interface_name, "eth0");
        assert_eq!(
            heps[1].expected_ips,
            ["10.0.0.9", "10.0.0.99", "172.16.0.9"]
        );
        // Unanchored, as Go's MatchString: "eth" matched eth0 and eth1; "^lo$" only lo. Without
        // CIDRs no node IP is taken, and the endpoint still exists: it names its interface.
        let anchored = KccHostEndpointConfig {
            templates: vec![HostEndpointTemplate {
                interface_pattern: "^lo$".into(),
                interface_cidrs: vec![],
                ..config.templates[0].clone()
            }],
            ..config.clone()
        };
        let heps = predict(&anchored, &[NodeFacts::from_node(&node)]);
        assert_eq!(names(&heps), ["w-ifaces-lo-auto-hep"]);
        assert_eq!(heps[0].expected_ips, ["127.0.0.1"]);
    }

    #[test]
    fn names_longer_than_253_characters_are_hashed_as_kube_controllers_does() {
        assert_eq!(endpoint_name("n", "t", ""), "n-t-auto-hep");
        assert_eq!(endpoint_name("n", "t", "eth0"), "n-t-eth0-auto-hep");
        let exactly = "n".repeat(253 - "-auto-hep".len());
        assert_eq!(
            endpoint_name(&exactly, "", ""),
            format!("{exactly}-auto-hep")
        );
        // Computed with Go's crypto/sha256 and base64.RawURLEncoding as hashNameIfTooLong does.
        assert_eq!(
            endpoint_name(&"n".repeat(250), "", ""),
            "fsetawr4cyeogg79xle7sas6qytoq8j2wa55iiu0owe-auto-hep"
        );
    }

    #[test]
    fn configuration_from_spec_and_environment_override() {
        let kcc = json!({"spec": {"controllers": {"node": {"hostEndpoint": {
            "autoCreate": "Enabled", "createDefaultHostEndpoint": "Disabled",
            "templates": [{"generateName": "t", "nodeSelector": "all()",
                           "interfaceCIDRs": ["10.0.0.0/8"], "labels": {"a": "b"}}]}}}}});
        let running = KccHostEndpointConfig::running(Some(&kcc));
        assert!(running.auto_create);
        assert!(!running.create_default_host_endpoint);
        assert_eq!(running.templates[0].labels["a"], "b");
        assert_eq!(
            running.templates[0].to_value(),
            kcc["spec"]["controllers"]["node"]["hostEndpoint"]["templates"][0]
        );
        // AUTO_HOST_ENDPOINTS=enabled replaces the spec: the default endpoint, no templates.
        let mut env = kcc.clone();
        env["status"] = json!({"environmentVars": {"AUTO_HOST_ENDPOINTS": "enabled"}});
        assert_eq!(
            KccHostEndpointConfig::running(Some(&env)),
            KccHostEndpointConfig {
                auto_create: true,
                create_default_host_endpoint: true,
                templates: vec![]
            }
        );
        env["status"]["environmentVars"]["AUTO_HOST_ENDPOINTS"] = json!("disabled");
        assert!(!KccHostEndpointConfig::once_enabled(Some(&env)).auto_create);
        let disabled = json!({"spec": {"controllers": {"node": {"hostEndpoint": {"autoCreate": "Disabled"}}}}});
        assert!(KccHostEndpointConfig::once_enabled(Some(&disabled)).auto_create);
        assert_eq!(
            KccHostEndpointConfig::running(None),
            KccHostEndpointConfig::default()
        );
    }

    #[test]
    fn comparison_counts_exact_matches_and_leaves_hand_made_endpoints_out() {
        let predicted = predict(&enabled(), &lab()[..2]);
        let exact = predicted[0].to_manifest();
        let mut stale = predicted[1].to_manifest();
        stale["spec"]["expectedIPs"] = json!(["10.0.0.2"]);
        let gone = json!({"metadata": {"name": "old-auto-hep",
            "labels": {"projectcalico.org/created-by": "calico-kube-controllers"}}});
        let by_hand = json!({"metadata": {"name": "by-hand"}, "spec": {"node": "control"}});
        let comparison = compare(&predicted, &[exact.clone(), stale, gone, by_hand.clone()]);
        assert_eq!(comparison.in_place, ["control-auto-hep"]);
        assert_eq!(comparison.different, ["node1-auto-hep"]);
        assert_eq!(comparison.extra, ["old-auto-hep"]);
        assert!(!comparison.matches());
        let partial = compare(&predicted, &[exact, by_hand]);
        assert_eq!(partial.missing, ["node1-auto-hep"]);
        let all = predicted
            .iter()
            .map(HostEndpoint::to_manifest)
            .collect::<Vec<_>>();
        assert!(compare(&predicted, &all).matches());
    }

    #[test]
    fn live_objects_read_back_equal_the_prediction() {
        for hep in predict(&enabled(), &lab()) {
            assert_eq!(HostEndpoint::from_manifest(&hep.to_manifest()), hep);
            assert!(is_automatic(&hep.to_manifest()));
        }
    }
}
