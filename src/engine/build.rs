//! From what the cluster returned (JSON, one LIST per kind) to the [`Network`] and the [`Engine`]:
//! nodes and their host endpoints, pods as workload endpoints with the labels Calico gives them,
//! namespaces with the labels namespaceSelector sees, policies compiled and ordered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::calico::objects::{HostEndpoint, IpPool, IpPoolSpec, Tier};
use crate::facts::ClusterFacts;
use crate::live::LiveState;

use super::eval::{Engine, Failsafe, TierSettings, Tunnels};
use super::k8s_policy::compile_k8s_object;
use super::model::{
    Endpoint, EndpointKind, Labels, NAMESPACE_NAME_LABEL, Network, Node, POD_NAMESPACE_LABEL,
    POD_ORCHESTRATOR_LABEL, POD_SERVICE_ACCOUNT_LABEL, Protocol, Side,
};
use super::policy::{CompiledPolicy, PolicyKind, compile_object};

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn labels_of(v: &Value) -> Labels {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn ips(values: impl IntoIterator<Item = Option<String>>) -> Vec<IpAddr> {
    values
        .into_iter()
        .flatten()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn named_ports(pod: &Value) -> Vec<(String, Protocol, u16)> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?.to_string();
            let protocol =
                Protocol::parse(p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"))?;
            let port = u16::try_from(p.get("containerPort")?.as_u64()?).ok()?;
            Some((name, protocol, port))
        })
        .collect()
}

/// Nodes, host endpoints, pods and namespaces, as policy sees them.
pub fn network(live: &LiveState) -> Network {
    let inv = &live.inventory;
    let mut net = Network::default();
    for node in &inv.nodes {
        add_node(&mut net, node);
    }
    for ns in &inv.namespaces {
        let Some(name) = str_at(ns, "/metadata/name") else {
            continue;
        };
        let mut labels = labels_of(ns);
        labels.insert(NAMESPACE_NAME_LABEL.into(), name.to_string());
        net.namespaces.insert(name.to_string(), labels);
    }
    for pod in &inv.pods {
        add_pod(&mut net, pod);
    }
    // Host endpoints after pods, so a pod's index is the same with or without them.
    for hep in &inv.host_endpoints {
        add_host_endpoint(&mut net, hep);
    }
    net
}

/// A Kubernetes Node, with its InternalIPs as the host's addresses.
fn add_node(net: &mut Network, node: &Value) {
    let Some(name) = str_at(node, "/metadata/name") else {
        return;
    };
    let node_ips = ips(node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| str_at(a, "/type") == Some("InternalIP"))
        .map(|a| str_at(a, "/address").map(str::to_string)));
    net.nodes_by_name.insert(name.to_string(), net.nodes.len());
    for ip in &node_ips {
        net.sides_by_ip.insert(*ip, Side::Host(net.nodes.len()));
    }
    net.nodes.push(Node {
        name: name.to_string(),
        labels: labels_of(node),
        ips: node_ips,
        host_endpoint: None,
    });
}

/// A pod that runs: host-networked ones are their node's, others are workload endpoints with
/// the labels and profiles Calico gives them.
fn add_pod(net: &mut Network, pod: &Value) {
    let phase = str_at(pod, "/status/phase").unwrap_or("Running");
    if matches!(phase, "Succeeded" | "Failed") {
        return;
    }
    let (Some(namespace), Some(name)) = (
        str_at(pod, "/metadata/namespace"),
        str_at(pod, "/metadata/name"),
    ) else {
        return;
    };
    let key = format!("{namespace}/{name}");
    let node = str_at(pod, "/spec/nodeName").and_then(|n| net.nodes_by_name.get(n).copied());
    if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
        if let Some(node) = node {
            net.host_network_pods.insert(key, node);
        }
        return;
    }
    let service_account = str_at(pod, "/spec/serviceAccountName")
        .unwrap_or("default")
        .to_string();
    let mut labels = labels_of(pod);
    labels.insert(POD_NAMESPACE_LABEL.into(), namespace.to_string());
    labels.insert(POD_ORCHESTRATOR_LABEL.into(), "k8s".into());
    labels.insert(POD_SERVICE_ACCOUNT_LABEL.into(), service_account.clone());
    let index = net.endpoints.len();
    let endpoint = Endpoint {
        kind: EndpointKind::Workload {
            namespace: namespace.to_string(),
            pod: name.to_string(),
            node,
            service_account: service_account.clone(),
        },
        labels,
        ips: ips(pod_ips(pod)),
        profiles: vec![
            format!("kns.{namespace}"),
            format!("ksa.{namespace}.{service_account}"),
        ],
        named_ports: named_ports(pod),
    };
    for ip in &endpoint.ips {
        net.sides_by_ip.insert(*ip, Side::Pod(index));
    }
    net.endpoints.push(endpoint);
    net.pods_by_name.insert(key, index);
}

/// `status.podIPs`, else `status.podIP`.
fn pod_ips(pod: &Value) -> Vec<Option<String>> {
    let mut pod_ips: Vec<Option<String>> = pod
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| str_at(p, "/ip").map(str::to_string))
        .collect();
    if pod_ips.is_empty() {
        pod_ips.push(str_at(pod, "/status/podIP").map(str::to_string));
    }
    pod_ips
}

/// A live HostEndpoint as the endpoint of its node; one on an unknown node, or one Calico's
/// schema would refuse, polices nothing.
fn add_host_endpoint(net: &mut Network, hep: &Value) {
    let Ok(hep) = HostEndpoint::from_value(hep) else {
        return;
    };
    let Some(node) = hep
        .spec
        .node
        .as_deref()
        .and_then(|n| net.nodes_by_name.get(n).copied())
    else {
        return;
    };
    let index = net.endpoints.len();
    let all_interfaces = hep.spec.interface_name.as_deref() == Some("*");
    net.endpoints.push(Endpoint {
        kind: EndpointKind::Host {
            node,
            hep_name: hep.metadata.name,
        },
        labels: hep.metadata.labels.into_iter().collect(),
        ips: ips(hep.spec.expected_ips.into_iter().map(Some)),
        profiles: hep.spec.profiles,
        named_ports: Vec::new(),
    });
    // An all-interfaces endpoint polices every interface; otherwise the first one found.
    let slot = &mut net.nodes[node].host_endpoint;
    if slot.is_none() || all_interfaces {
        *slot = Some(index);
    }
}

/// Encapsulation from the IPPools: VXLAN (on Felix's `vxlan_port`) or IPIP when any pool uses
/// it (CrossSubnet counts, it encapsulates across subnets); unknown pools mean VXLAN is assumed,
/// with a note.
pub fn tunnels(ip_pools: Option<&[Value]>, vxlan_port: u16, notes: &mut Vec<String>) -> Tunnels {
    let Some(pools) = ip_pools else {
        notes.push(format!(
            "IPPools could not be read: VXLAN (udp/{vxlan_port}) between nodes is assumed"
        ));
        return Tunnels {
            vxlan_port: Some(vxlan_port),
            ipip: false,
        };
    };
    let pools: Vec<IpPoolSpec> = pools
        .iter()
        .filter_map(|p| Some(IpPool::from_value(p).ok()?.spec))
        .collect();
    let uses = |mode: fn(&IpPoolSpec) -> Option<&str>| {
        pools.iter().any(|p| IpPoolSpec::encapsulates(mode(p)))
    };
    Tunnels {
        vxlan_port: uses(|p| p.vxlan_mode.as_deref()).then_some(vxlan_port),
        ipip: uses(|p| p.ipip_mode.as_deref()),
    }
}

/// Calico's own tiers as the release creates them (projectcalico/api tier.go, Calico 3.29–3.31;
/// 3.32 names the ClusterNetworkPolicy ones kube-admin and kube-baseline): what the model assumes
/// when the cluster's tiers could not be read.
pub const BUILT_IN_TIERS: &[(&str, f64, bool)] = &[
    ("adminnetworkpolicy", 1_000.0, true),
    ("kube-admin", 1_000.0, true),
    ("default", 1_000_000.0, false),
    ("baselineadminnetworkpolicy", 10_000_000.0, true),
    ("kube-baseline", 10_000_000.0, true),
];

/// The cluster's tiers (order, defaultAction); Calico's built-in ones, with a note, when they
/// could not be read.
pub fn tiers(listed: Option<&[Value]>, notes: &mut Vec<String>) -> HashMap<String, TierSettings> {
    let Some(listed) = listed else {
        notes.push(
            "tiers could not be read (cannot list tiers.projectcalico.org): Calico's own tiers are assumed with their built-in order and default action".into(),
        );
        return BUILT_IN_TIERS
            .iter()
            .map(|&(name, order, pass_at_end)| {
                (
                    name.to_string(),
                    TierSettings {
                        order: Some(order),
                        pass_at_end,
                    },
                )
            })
            .collect();
    };
    listed
        .iter()
        .filter_map(|tier| {
            let tier = Tier::from_value(tier).ok()?;
            if tier.metadata.name.is_empty() {
                return None;
            }
            let settings = TierSettings {
                order: tier.spec.order,
                pass_at_end: tier.spec.default_action.as_deref() == Some("Pass"),
            };
            Some((tier.metadata.name, settings))
        })
        .collect()
}

/// Every live GlobalNetworkPolicy, NetworkPolicy and Kubernetes NetworkPolicy, compiled; ones we
/// cannot read become notes.
pub fn policies(live: &LiveState, notes: &mut Vec<String>) -> Vec<CompiledPolicy> {
    let mut out = Vec::new();
    for (kind, list) in [
        (PolicyKind::Global, &live.global_network_policies),
        (PolicyKind::Namespaced, &live.network_policies),
    ] {
        for object in list {
            match compile_object(kind, object) {
                Ok(p) => out.push(p),
                Err(e) => notes.push(e),
            }
        }
    }
    if live.inventory.k8s_network_policies_unread {
        notes.push(
            "Kubernetes NetworkPolicies (order 1000) could not be read (cannot list networkpolicies.networking.k8s.io): the model assumes there are none".into(),
        );
    }
    for object in &live.inventory.k8s_network_policies {
        match compile_k8s_object(object) {
            Ok(p) => out.push(p),
            Err(e) => notes.push(e),
        }
    }
    out
}

/// The engine for a cluster state.
pub fn engine(live: &LiveState, facts: &ClusterFacts) -> Engine {
    engine_over(Arc::new(network(live)), live, facts)
}

/// The engine for a cluster state whose [`network`] is already built: a state that differs
/// from another only in its policies has the same network, and at fleet scale building it
/// again from every pod costs as much as the rest of the report.
pub fn engine_over(network: Arc<Network>, live: &LiveState, facts: &ClusterFacts) -> Engine {
    let mut notes = Vec::new();
    let policies = policies(live, &mut notes);
    let tunnels = tunnels(
        live.inventory.ip_pools.as_deref(),
        facts.felix.vxlan_port,
        &mut notes,
    );
    let tiers = tiers(live.inventory.tiers.as_deref(), &mut notes);
    let node_failsafe: HashMap<usize, Failsafe> = facts
        .felix
        .node_failsafe
        .iter()
        .filter_map(|(node, failsafe)| {
            Some((
                *network.nodes_by_name.get(node)?,
                Failsafe::from_facts(failsafe),
            ))
        })
        .collect();
    let mut engine = Engine::new(
        network,
        policies,
        &tiers,
        Failsafe::from_facts(&facts.failsafe),
        tunnels,
        notes,
    );
    engine.node_failsafe = node_failsafe;
    engine.wireguard_ports = [facts.felix.wireguard_port, facts.felix.wireguard_port_v6]
        .into_iter()
        .flatten()
        .collect();
    engine
}
