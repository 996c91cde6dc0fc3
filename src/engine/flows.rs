//! The flows a cluster cannot lose, generated from the inventory and the detected facts.
//!
//! Node-to-node paths (BGP, encapsulation) are a full mesh up to [`FULL_MESH_LIMIT`] nodes; above
//! that each node is checked against its ring neighbours and every control-plane node, which
//! covers every distinct host endpoint on both sides without n² flows.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::facts::{CALICO_NAMESPACES, ClusterFacts, NodeRef};

use super::eval::Engine;
use super::model::{Flow, Network, Protocol, Side};

pub const KUBELET_PORT: u16 = 10250;
pub const BGP_PORT: u16 = 179;
pub const DNS_PORT: u16 = 53;
pub const FULL_MESH_LIMIT: usize = 16;
/// Stands for "an operator outside the cluster" (TEST-NET-3): a label, never dialled.
pub const OPERATOR_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
/// Stands for "an upstream resolver": a label, never dialled.
pub const UPSTREAM_RESOLVER: IpAddr = IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8));
/// Pods in Calico's namespaces reach the API server by address, not by DNS name; these (Whisker's
/// backend dials `goldmane.calico-system.svc`) resolve names.
const CALICO_APPS_USING_DNS: &[&str] = &["whisker"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowCategory {
    NodesToApiserver,
    OperatorToApiserver,
    ApiserverToKubelet,
    NodesToTypha,
    CalicoToApiserver,
    ApiserverToCalicoApiserver,
    PodsToDns,
    DnsToUpstream,
    Bgp,
    Encapsulation,
    Wireguard,
    NodesToGoldmane,
    NodesToDns,
    WhiskerToGoldmane,
    ApiserverToAdmissionWebhooks,
}

impl FlowCategory {
    pub fn title(self) -> &'static str {
        match self {
            Self::NodesToApiserver => "nodes -> API server",
            Self::OperatorToApiserver => "operator outside the cluster -> API server",
            Self::ApiserverToKubelet => "API server -> kubelet (kubectl logs/exec)",
            Self::NodesToTypha => "calico-node -> typha",
            Self::CalicoToApiserver => "Calico pods -> API server",
            Self::ApiserverToCalicoApiserver => "API server -> calico-apiserver",
            Self::PodsToDns => "pods -> cluster DNS",
            Self::DnsToUpstream => "cluster DNS -> upstream resolver",
            Self::Bgp => "BGP between nodes",
            Self::Encapsulation => "encapsulation between nodes",
            Self::Wireguard => "WireGuard between nodes",
            Self::NodesToGoldmane => "Felix -> Goldmane (flow logs)",
            Self::NodesToDns => "calico-node -> cluster DNS (Goldmane's name)",
            Self::WhiskerToGoldmane => "Whisker -> Goldmane",
            Self::ApiserverToAdmissionWebhooks => "API server -> Calico admission webhooks",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriticalFlow {
    pub category: FlowCategory,
    pub flow: Flow,
}

fn node_indices(net: &Network, refs: &[NodeRef]) -> Vec<usize> {
    refs.iter()
        .filter_map(|r| net.nodes_by_name.get(&r.name).copied())
        .collect()
}

/// Node pairs for node-to-node protocols: everything for small clusters, else ring neighbours
/// plus every node with each control-plane node.
fn node_pairs(count: usize, control: &[usize]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    if count <= FULL_MESH_LIMIT {
        for a in 0..count {
            for b in 0..count {
                if a != b {
                    pairs.push((a, b));
                }
            }
        }
        return pairs;
    }
    for a in 0..count {
        let b = (a + 1) % count;
        pairs.push((a, b));
        pairs.push((b, a));
        for &c in control {
            if c != a {
                pairs.push((a, c));
                pairs.push((c, a));
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// Every critical flow for this cluster.
pub fn critical_flows(engine: &Engine, facts: &ClusterFacts) -> Vec<CriticalFlow> {
    let net = &engine.network;
    let mut out = Vec::new();
    let mut add = |category, src, dst, protocol, port| {
        out.push(CriticalFlow {
            category,
            flow: Flow {
                src,
                dst,
                protocol,
                port,
            },
        });
    };
    let control = node_indices(net, &facts.control_plane_nodes);
    let typha = node_indices(net, &facts.typha_nodes);
    let api = facts.apiserver_port;
    let all_nodes = 0..net.nodes.len();

    for n in all_nodes.clone() {
        for &c in &control {
            if n != c {
                add(
                    FlowCategory::NodesToApiserver,
                    Side::Host(n),
                    Side::Host(c),
                    Protocol::TCP,
                    api,
                );
            }
        }
    }
    for &c in &control {
        add(
            FlowCategory::OperatorToApiserver,
            Side::External(OPERATOR_ADDRESS),
            Side::Host(c),
            Protocol::TCP,
            api,
        );
    }
    for &c in &control {
        for n in all_nodes.clone() {
            if n != c {
                add(
                    FlowCategory::ApiserverToKubelet,
                    Side::Host(c),
                    Side::Host(n),
                    Protocol::TCP,
                    KUBELET_PORT,
                );
            }
        }
    }
    for n in all_nodes.clone() {
        for &t in &typha {
            if n != t {
                add(
                    FlowCategory::NodesToTypha,
                    Side::Host(n),
                    Side::Host(t),
                    Protocol::TCP,
                    facts.typha_port,
                );
            }
        }
    }

    let (dns_key, dns_value) = &facts.dns_label;
    let mut dns_pods = Vec::new();
    let mut calico_apiservers = Vec::new();
    let mut calico_pods = Vec::new();
    let mut goldmane_pods = Vec::new();
    let mut whisker_pods = Vec::new();
    for (i, ep) in net.endpoints.iter().enumerate() {
        if ep.is_host() {
            continue;
        }
        let app = ep.labels.get("k8s-app").map(String::as_str);
        if ep.labels.get(dns_key) == Some(dns_value) {
            dns_pods.push(i);
        }
        if app == Some("calico-apiserver") {
            calico_apiservers.push(i);
        }
        if matches!(
            app,
            Some("calico-apiserver" | "calico-kube-controllers" | "calico-typha" | "calico-node")
        ) {
            calico_pods.push(i);
        }
        match app {
            Some("goldmane") => goldmane_pods.push(i),
            Some("whisker") => whisker_pods.push(i),
            _ => {}
        }
    }
    for &p in &calico_pods {
        for &c in &control {
            add(
                FlowCategory::CalicoToApiserver,
                Side::Pod(p),
                Side::Host(c),
                Protocol::TCP,
                api,
            );
        }
    }
    for &c in &control {
        for &p in &calico_apiservers {
            add(
                FlowCategory::ApiserverToCalicoApiserver,
                Side::Host(c),
                Side::Pod(p),
                Protocol::TCP,
                facts.calico_apiserver_port,
            );
        }
    }
    for (i, ep) in net.endpoints.iter().enumerate() {
        let Some(ns) = ep.namespace() else { continue };
        let resolves_names = ep
            .labels
            .get("k8s-app")
            .is_some_and(|app| CALICO_APPS_USING_DNS.contains(&app.as_str()));
        if dns_pods.contains(&i) || (CALICO_NAMESPACES.contains(&ns) && !resolves_names) {
            continue;
        }
        for &d in &dns_pods {
            for protocol in [Protocol::UDP, Protocol::TCP] {
                add(
                    FlowCategory::PodsToDns,
                    Side::Pod(i),
                    Side::Pod(d),
                    protocol,
                    DNS_PORT,
                );
            }
        }
    }
    for &d in &dns_pods {
        for protocol in [Protocol::UDP, Protocol::TCP] {
            add(
                FlowCategory::DnsToUpstream,
                Side::Pod(d),
                Side::External(UPSTREAM_RESOLVER),
                protocol,
                DNS_PORT,
            );
        }
    }
    // Flow logs (Calico 3.30+): Felix on every node dials Goldmane by its Service name, so it
    // needs cluster DNS too; Whisker's backend reads from Goldmane.
    let goldmane_port = facts.observability.goldmane_port;
    for &g in &goldmane_pods {
        for n in all_nodes.clone() {
            add(
                FlowCategory::NodesToGoldmane,
                Side::Host(n),
                Side::Pod(g),
                Protocol::TCP,
                goldmane_port,
            );
        }
        for &w in &whisker_pods {
            add(
                FlowCategory::WhiskerToGoldmane,
                Side::Pod(w),
                Side::Pod(g),
                Protocol::TCP,
                goldmane_port,
            );
        }
    }
    if !goldmane_pods.is_empty() {
        for n in all_nodes.clone() {
            for &d in &dns_pods {
                for protocol in [Protocol::UDP, Protocol::TCP] {
                    add(
                        FlowCategory::NodesToDns,
                        Side::Host(n),
                        Side::Pod(d),
                        protocol,
                        DNS_PORT,
                    );
                }
            }
        }
    }
    // Admission webhooks that fail closed: without them every write they cover fails.
    let webhook_endpoints: BTreeSet<(Side, u16)> = facts
        .admission_webhooks
        .iter()
        .flatten()
        .filter(|w| w.fails_closed)
        .flat_map(|w| &w.endpoints)
        .filter_map(|(address, port)| {
            let ip: IpAddr = address.parse().ok()?;
            let side = net
                .sides_by_ip
                .get(&ip)
                .copied()
                .unwrap_or(Side::External(ip));
            Some((side, *port))
        })
        .collect();
    for &c in &control {
        for &(side, port) in &webhook_endpoints {
            if side != Side::Host(c) {
                add(
                    FlowCategory::ApiserverToAdmissionWebhooks,
                    Side::Host(c),
                    side,
                    Protocol::TCP,
                    port,
                );
            }
        }
    }
    let wireguard_ports: Vec<(u16, bool)> = [
        facts.felix.wireguard_port.map(|p| (p, false)),
        facts.felix.wireguard_port_v6.map(|p| (p, true)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let has_family =
        |node: usize, v6: bool| net.nodes[node].ips.iter().any(|ip| ip.is_ipv6() == v6);
    for (a, b) in node_pairs(net.nodes.len(), &control) {
        for &(port, v6) in &wireguard_ports {
            if has_family(a, v6) && has_family(b, v6) {
                add(
                    FlowCategory::Wireguard,
                    Side::Host(a),
                    Side::Host(b),
                    Protocol::UDP,
                    port,
                );
            }
        }
        add(
            FlowCategory::Bgp,
            Side::Host(a),
            Side::Host(b),
            Protocol::TCP,
            BGP_PORT,
        );
        if let Some(port) = engine.tunnels.vxlan_port {
            add(
                FlowCategory::Encapsulation,
                Side::Host(a),
                Side::Host(b),
                Protocol::UDP,
                port,
            );
        }
        if engine.tunnels.ipip {
            add(
                FlowCategory::Encapsulation,
                Side::Host(a),
                Side::Host(b),
                Protocol::IPIP,
                0,
            );
        }
    }
    out
}
