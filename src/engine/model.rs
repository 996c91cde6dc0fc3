//! The network as policy sees it: endpoints with labels and addresses, nodes, namespaces, and the
//! flows between them. Built once per evaluation; indices, not references, tie it together so a
//! flow is three small numbers.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::calico::selector::LabelSource;

pub type Labels = BTreeMap<String, String>;

/// Labels Calico adds to what selectors see: a namespace's name, and a pod's namespace,
/// orchestrator and service account.
pub const NAMESPACE_NAME_LABEL: &str = "projectcalico.org/name";
pub const POD_NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
pub const POD_ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";
pub const POD_SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";

/// An IP protocol by number, named the way Calico names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const ICMP: Protocol = Protocol(1);
    pub const IPIP: Protocol = Protocol(4);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);
    pub const ICMPV6: Protocol = Protocol(58);
    pub const SCTP: Protocol = Protocol(132);
    pub const UDPLITE: Protocol = Protocol(136);

    /// `TCP`, `udp`, `6`: Calico's names (case-insensitive) or a number.
    pub fn parse(raw: &str) -> Option<Protocol> {
        let known = match raw.to_ascii_lowercase().as_str() {
            "tcp" => Self::TCP,
            "udp" => Self::UDP,
            "icmp" => Self::ICMP,
            "icmpv6" => Self::ICMPV6,
            "sctp" => Self::SCTP,
            "udplite" => Self::UDPLITE,
            "ipip" => Self::IPIP,
            other => return other.parse::<u8>().ok().map(Protocol),
        };
        Some(known)
    }

    pub fn has_ports(self) -> bool {
        matches!(self, Self::TCP | Self::UDP | Self::SCTP | Self::UDPLITE)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TCP => f.write_str("tcp"),
            Self::UDP => f.write_str("udp"),
            Self::ICMP => f.write_str("icmp"),
            Self::ICMPV6 => f.write_str("icmpv6"),
            Self::SCTP => f.write_str("sctp"),
            Self::UDPLITE => f.write_str("udplite"),
            Self::IPIP => f.write_str("ipip"),
            Protocol(n) => write!(f, "proto-{n}"),
        }
    }
}

/// Where a Calico endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointKind {
    /// A HostEndpoint: non-namespaced, its labels are its own.
    Host { node: usize, hep_name: String },
    /// A pod's workload endpoint.
    Workload {
        namespace: String,
        pod: String,
        node: Option<usize>,
        service_account: String,
    },
}

/// A Calico endpoint: what policy selects and what rule selectors see as a peer.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub kind: EndpointKind,
    /// Labels as Calico's selectors see them (pods carry the projectcalico.org/* labels too).
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub profiles: Vec<String>,
    /// Named container ports, for rules that name a port.
    pub named_ports: Vec<(String, Protocol, u16)>,
}

impl Endpoint {
    pub fn namespace(&self) -> Option<&str> {
        match &self.kind {
            EndpointKind::Workload { namespace, .. } => Some(namespace),
            EndpointKind::Host { .. } => None,
        }
    }

    pub fn is_host(&self) -> bool {
        matches!(self.kind, EndpointKind::Host { .. })
    }

    pub fn node(&self) -> Option<usize> {
        match self.kind {
            EndpointKind::Host { node, .. } => Some(node),
            EndpointKind::Workload { node, .. } => node,
        }
    }

    pub fn display(&self) -> String {
        match &self.kind {
            EndpointKind::Host { hep_name, .. } => format!("HostEndpoint {hep_name}"),
            EndpointKind::Workload { namespace, pod, .. } => format!("pod {namespace}/{pod}"),
        }
    }
}

impl LabelSource for Endpoint {
    fn get(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    /// The host endpoint that polices this node's own traffic, if any.
    pub host_endpoint: Option<usize>,
}

/// One side of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// A process in the node's own network namespace (kubelet, the API server, host-networked
    /// pods such as calico-node).
    Host(usize),
    /// A pod with its own network namespace, by endpoint index.
    Pod(usize),
    /// An address outside the cluster. Nothing is ever sent to it.
    External(IpAddr),
}

/// A NEW connection (or the first packet of a UDP exchange); replies ride conntrack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub src: Side,
    pub dst: Side,
    pub protocol: Protocol,
    /// Destination port; 0 for protocols without ports.
    pub port: u16,
}

/// Everything the evaluator needs to know about the cluster.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub nodes: Vec<Node>,
    pub endpoints: Vec<Endpoint>,
    /// Namespace labels as namespaceSelector sees them (`projectcalico.org/name` added).
    pub namespaces: HashMap<String, Labels>,
    /// Host-networked pods: `ns/name` → node index.
    pub host_network_pods: HashMap<String, usize>,
    pub pods_by_name: HashMap<String, usize>,
    pub nodes_by_name: HashMap<String, usize>,
    /// Pods' IPs and nodes' IPs, for resolving an address to a side.
    pub sides_by_ip: HashMap<IpAddr, Side>,
}

impl Network {
    pub fn side_name(&self, side: Side) -> String {
        match side {
            Side::Host(node) => self.nodes[node].name.clone(),
            Side::Pod(ep) => match &self.endpoints[ep].kind {
                EndpointKind::Workload { namespace, pod, .. } => format!("{namespace}/{pod}"),
                EndpointKind::Host { hep_name, .. } => hep_name.clone(),
            },
            Side::External(ip) => ip.to_string(),
        }
    }

    /// The endpoint policy sees at `side` (a host's by its host endpoint), else the side's name.
    pub fn side_display(&self, side: Side) -> String {
        match self.side_endpoint(side) {
            Some(ep) => self.endpoints[ep].display(),
            None => self.side_name(side),
        }
    }

    pub fn side_node(&self, side: Side) -> Option<usize> {
        match side {
            Side::Host(node) => Some(node),
            Side::Pod(ep) => self.endpoints[ep].node(),
            Side::External(_) => None,
        }
    }

    /// The address the peer sees: the pod's IP, or the node's first InternalIP.
    pub fn side_ip(&self, side: Side) -> Option<IpAddr> {
        match side {
            Side::Host(node) => self.nodes[node].ips.first().copied(),
            Side::Pod(ep) => self.endpoints[ep].ips.first().copied(),
            Side::External(ip) => Some(ip),
        }
    }

    /// The Calico endpoint a side presents to policy: a pod's workload endpoint or the node's
    /// host endpoint; None for external addresses and nodes without a host endpoint.
    pub fn side_endpoint(&self, side: Side) -> Option<usize> {
        match side {
            Side::Host(node) => self.nodes[node].host_endpoint,
            Side::Pod(ep) => Some(ep),
            Side::External(_) => None,
        }
    }

    /// `node1`, `ns/pod` (a host-networked pod resolves to its node) or an IP address.
    pub fn resolve(&self, raw: &str) -> Option<Side> {
        let raw = raw.trim();
        if let Some(&node) = self.nodes_by_name.get(raw) {
            return Some(Side::Host(node));
        }
        if let Some(&ep) = self.pods_by_name.get(raw) {
            return Some(Side::Pod(ep));
        }
        if let Some(&node) = self.host_network_pods.get(raw) {
            return Some(Side::Host(node));
        }
        let ip: IpAddr = raw.parse().ok()?;
        Some(
            self.sides_by_ip
                .get(&ip)
                .copied()
                .unwrap_or(Side::External(ip)),
        )
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.protocol.has_ports() {
            write!(f, "{}/{}", self.protocol, self.port)
        } else {
            write!(f, "{}", self.protocol)
        }
    }
}
