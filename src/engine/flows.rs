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
    let mut flows = FlowList {
        engine,
        facts,
        control: node_indices(net, &facts.control_plane_nodes),
        pods: SystemPods::of(net, &facts.dns_label),
        out: Vec::new(),
    };
    flows.kubernetes_control_plane();
    flows.calico_control_plane();
    flows.dns();
    flows.flow_logs();
    flows.admission_webhooks();
    flows.node_to_node();
    flows.out
}

/// The workload endpoints critical flows start or end at, by role.
#[derive(Default)]
struct SystemPods {
    dns: Vec<usize>,
    calico_apiservers: Vec<usize>,
    /// Calico's components that talk to the API server.
    calico: Vec<usize>,
    goldmane: Vec<usize>,
    whisker: Vec<usize>,
}

impl SystemPods {
    fn of(net: &Network, (dns_key, dns_value): &(String, String)) -> Self {
        let mut pods = Self::default();
        for (i, ep) in net.endpoints.iter().enumerate() {
            if ep.is_host() {
                continue;
            }
            let app = ep.labels.get("k8s-app").map(String::as_str);
            if ep.labels.get(dns_key) == Some(dns_value) {
                pods.dns.push(i);
            }
            if app == Some("calico-apiserver") {
                pods.calico_apiservers.push(i);
            }
            if matches!(
                app,
                Some(
                    "calico-apiserver" | "calico-kube-controllers" | "calico-typha" | "calico-node"
                )
            ) {
                pods.calico.push(i);
            }
            match app {
                Some("goldmane") => pods.goldmane.push(i),
                Some("whisker") => pods.whisker.push(i),
                _ => {}
            }
        }
        pods
    }
}

/// The critical flows of one cluster as they are found, family by family.
struct FlowList<'a> {
    engine: &'a Engine,
    facts: &'a ClusterFacts,
    control: Vec<usize>,
    pods: SystemPods,
    out: Vec<CriticalFlow>,
}

impl FlowList<'_> {
    fn add(&mut self, category: FlowCategory, src: Side, dst: Side, protocol: Protocol, port: u16) {
        self.out.push(CriticalFlow {
            category,
            flow: Flow {
                src,
                dst,
                protocol,
                port,
            },
        });
    }

    fn all_nodes(&self) -> std::ops::Range<usize> {
        0..self.engine.network.nodes.len()
    }

    /// Nodes and the operator to the API server, the API server to kubelets, nodes to Typha.
    fn kubernetes_control_plane(&mut self) {
        let api = self.facts.apiserver_port;
        let control = self.control.clone();
        for n in self.all_nodes() {
            for &c in control.iter().filter(|&&c| c != n) {
                let category = FlowCategory::NodesToApiserver;
                self.add(category, Side::Host(n), Side::Host(c), Protocol::TCP, api);
            }
        }
        for &c in &control {
            let operator = Side::External(OPERATOR_ADDRESS);
            let category = FlowCategory::OperatorToApiserver;
            self.add(category, operator, Side::Host(c), Protocol::TCP, api);
        }
        for &c in &control {
            for n in self.all_nodes().filter(|&n| n != c) {
                let category = FlowCategory::ApiserverToKubelet;
                self.add(
                    category,
                    Side::Host(c),
                    Side::Host(n),
                    Protocol::TCP,
                    KUBELET_PORT,
                );
            }
        }
        let typha = node_indices(&self.engine.network, &self.facts.typha_nodes);
        let typha_port = self.facts.typha_port;
        for n in self.all_nodes() {
            for &t in typha.iter().filter(|&&t| t != n) {
                let category = FlowCategory::NodesToTypha;
                self.add(
                    category,
                    Side::Host(n),
                    Side::Host(t),
                    Protocol::TCP,
                    typha_port,
                );
            }
        }
    }

    /// Calico's pods to the API server, the API server to calico-apiserver.
    fn calico_control_plane(&mut self) {
        let api = self.facts.apiserver_port;
        let control = self.control.clone();
        for p in self.pods.calico.clone() {
            for &c in &control {
                let category = FlowCategory::CalicoToApiserver;
                self.add(category, Side::Pod(p), Side::Host(c), Protocol::TCP, api);
            }
        }
        let port = self.facts.calico_apiserver_port;
        for &c in &control {
            for p in self.pods.calico_apiservers.clone() {
                let category = FlowCategory::ApiserverToCalicoApiserver;
                self.add(category, Side::Host(c), Side::Pod(p), Protocol::TCP, port);
            }
        }
    }

    /// Pods to the cluster DNS (Calico's own only where they resolve names), and the DNS pods
    /// to their upstream resolver; UDP and TCP.
    fn dns(&mut self) {
        let dns = self.pods.dns.clone();
        let net = &self.engine.network;
        let clients: Vec<usize> = (0..net.endpoints.len())
            .filter(|&i| {
                let ep = &net.endpoints[i];
                let Some(ns) = ep.namespace() else {
                    return false;
                };
                let resolves_names = ep
                    .labels
                    .get("k8s-app")
                    .is_some_and(|app| CALICO_APPS_USING_DNS.contains(&app.as_str()));
                !(dns.contains(&i) || (CALICO_NAMESPACES.contains(&ns) && !resolves_names))
            })
            .collect();
        for i in clients {
            for &d in &dns {
                for protocol in [Protocol::UDP, Protocol::TCP] {
                    let category = FlowCategory::PodsToDns;
                    self.add(category, Side::Pod(i), Side::Pod(d), protocol, DNS_PORT);
                }
            }
        }
        for &d in &dns {
            for protocol in [Protocol::UDP, Protocol::TCP] {
                let upstream = Side::External(UPSTREAM_RESOLVER);
                self.add(
                    FlowCategory::DnsToUpstream,
                    Side::Pod(d),
                    upstream,
                    protocol,
                    DNS_PORT,
                );
            }
        }
    }

    /// Flow logs (Calico 3.30+): Felix on every node dials Goldmane by its Service name, so it
    /// needs cluster DNS too; Whisker's backend reads from Goldmane.
    fn flow_logs(&mut self) {
        let port = self.facts.observability.goldmane_port;
        let goldmane = self.pods.goldmane.clone();
        for &g in &goldmane {
            for n in self.all_nodes() {
                let category = FlowCategory::NodesToGoldmane;
                self.add(category, Side::Host(n), Side::Pod(g), Protocol::TCP, port);
            }
            for w in self.pods.whisker.clone() {
                let category = FlowCategory::WhiskerToGoldmane;
                self.add(category, Side::Pod(w), Side::Pod(g), Protocol::TCP, port);
            }
        }
        if goldmane.is_empty() {
            return;
        }
        for n in self.all_nodes() {
            for d in self.pods.dns.clone() {
                for protocol in [Protocol::UDP, Protocol::TCP] {
                    let category = FlowCategory::NodesToDns;
                    self.add(category, Side::Host(n), Side::Pod(d), protocol, DNS_PORT);
                }
            }
        }
    }

    /// Admission webhooks that fail closed: without them every write they cover fails.
    fn admission_webhooks(&mut self) {
        let net = &self.engine.network;
        let endpoints: BTreeSet<(Side, u16)> = self
            .facts
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
        for c in self.control.clone() {
            for &(side, port) in endpoints.iter().filter(|(side, _)| *side != Side::Host(c)) {
                let category = FlowCategory::ApiserverToAdmissionWebhooks;
                self.add(category, Side::Host(c), side, Protocol::TCP, port);
            }
        }
    }

    /// Between node pairs: WireGuard (per address family both nodes have), BGP, and the
    /// encapsulation the IPPools use.
    fn node_to_node(&mut self) {
        let felix = &self.facts.felix;
        let wireguard_ports: Vec<(u16, bool)> = [
            felix.wireguard_port.map(|p| (p, false)),
            felix.wireguard_port_v6.map(|p| (p, true)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let net = &self.engine.network;
        let tunnels = self.engine.tunnels;
        let has_family =
            |node: usize, v6: bool| net.nodes[node].ips.iter().any(|ip| ip.is_ipv6() == v6);
        let mut pair_flows = Vec::new();
        for (x, y) in node_pairs(net.nodes.len(), &self.control) {
            let (a, b) = (Side::Host(x), Side::Host(y));
            for &(port, v6) in &wireguard_ports {
                if has_family(x, v6) && has_family(y, v6) {
                    pair_flows.push((FlowCategory::Wireguard, a, b, Protocol::UDP, port));
                }
            }
            pair_flows.push((FlowCategory::Bgp, a, b, Protocol::TCP, BGP_PORT));
            if let Some(port) = tunnels.vxlan_port {
                pair_flows.push((FlowCategory::Encapsulation, a, b, Protocol::UDP, port));
            }
            if tunnels.ipip {
                pair_flows.push((FlowCategory::Encapsulation, a, b, Protocol::IPIP, 0));
            }
        }
        for (category, src, dst, protocol, port) in pair_flows {
            self.add(category, src, dst, protocol, port);
        }
    }
}
