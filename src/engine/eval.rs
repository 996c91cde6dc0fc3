//! Calico's evaluation of one NEW connection, hop by hop: egress at the source endpoint, the
//! source node's host endpoint for forwarded traffic, the destination node's host endpoint for
//! forwarded traffic, ingress at the destination endpoint. Every hop must allow.
//!
//! Which policies apply to an endpoint is computed once per endpoint class (same kind,
//! namespace, service account and labels) when the engine is built, already in evaluation order
//! (tier order, policy order, name). A flow then only walks the rules of the policies that
//! select its two endpoints, and a rule's peer selector is evaluated against the one concrete
//! peer of the flow.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::calico::objects::FailsafePort;
use crate::calico::policy::Action;
use crate::facts::FailsafeFacts;

use super::model::{Endpoint, EndpointKind, Flow, Network, Protocol, Side};
use super::policy::{
    CompiledPolicy, CompiledRule, DEFAULT_TIER, DEFAULT_TIER_ORDER, Entity, NamespaceSelector,
    PolicyKind, PortMatch,
};

/// Profiles Calico creates: `kns.<ns>` and `projectcalico-default-allow` allow everything,
/// `ksa.<ns>.<sa>` only carries labels.
pub const DEFAULT_ALLOW_PROFILE: &str = "projectcalico-default-allow";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HopKind {
    /// Egress policy at the source endpoint (a pod's, or the node's host endpoint).
    SourceEgress,
    /// The source node's host endpoint, for traffic a pod sends off the node (applyOnForward).
    ForwardEgress,
    /// The destination node's host endpoint, for traffic to a pod on it (applyOnForward).
    ForwardIngress,
    /// Ingress policy at the destination endpoint.
    DestinationIngress,
}

impl HopKind {
    pub fn is_ingress(self) -> bool {
        matches!(self, Self::ForwardIngress | Self::DestinationIngress)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::SourceEgress => "egress at the source",
            Self::ForwardEgress => "forwarded out of the source node (applyOnForward policies)",
            Self::ForwardIngress => "forwarded into the destination node (applyOnForward policies)",
            Self::DestinationIngress => "ingress at the destination",
        }
    }
}

/// What decided a hop.
#[derive(Debug, Clone, PartialEq)]
pub enum Decider {
    Rule {
        policy: usize,
        rule: usize,
        action: Action,
    },
    /// A tier had policies for the endpoint and none of their rules matched.
    EndOfTier {
        tier: String,
        policies: Vec<usize>,
    },
    Profile(String),
    NoProfileMatched(Vec<String>),
    /// Every tier passed and there is no profile decision to make (forwarded traffic).
    PassedAllTiers,
    Failsafe {
        inbound: bool,
        entry: String,
    },
    NoHostEndpoint(usize),
    /// A host endpoint exists but no applyOnForward policy applies in this direction.
    ForwardedWithoutPolicy,
    /// From a host to a pod on the same host: Felix does not police the host side.
    HostToLocalPod,
    /// Both ends on the same host's own addresses: loopback, no endpoint is crossed.
    SameHost,
    /// VXLAN/IPIP/WireGuard between Calico hosts: Felix accepts it before host endpoint policy
    /// (felix/rules/static.go).
    Tunnel,
}

#[derive(Debug, Clone)]
pub struct HopResult {
    pub kind: HopKind,
    /// The Calico endpoint the hop's policy applies to.
    pub endpoint: Option<usize>,
    pub allowed: bool,
    pub decider: Decider,
    /// Filled for `explain`.
    pub trace: Vec<PolicyTrace>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleTrace {
    pub index: usize,
    pub action: String,
    pub matched: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyTrace {
    pub policy: String,
    pub tier: String,
    pub order: Option<f64>,
    pub rules: Vec<RuleTrace>,
    pub outcome: String,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub allowed: bool,
    pub hops: Vec<HopResult>,
}

impl Verdict {
    /// The hop that decided: the first that denied, else the last that allowed.
    pub fn deciding_hop(&self) -> Option<&HopResult> {
        self.hops
            .iter()
            .find(|h| !h.allowed)
            .or_else(|| {
                self.hops
                    .iter()
                    .rev()
                    .find(|h| !matches!(h.decider, Decider::ForwardedWithoutPolicy))
            })
            .or(self.hops.last())
    }
}

/// What one policy does with a flow.
enum PolicyVerdict {
    NoMatch,
    /// A Pass rule matched: on to the next tier.
    Pass,
    Decided(Decider),
}

/// A rule's destination ports and notPorts against the flow's port (named ports resolve on the
/// destination endpoint).
fn destination_ports_match(
    entity: &Entity,
    endpoint: Option<&Endpoint>,
    flow: &Flow,
) -> Result<(), Miss> {
    let named: &[(String, Protocol, u16)] = endpoint.map_or(&[], |e| &e.named_ports);
    let matches = |m: &PortMatch| m.matches(flow.port, flow.protocol, named);
    let port_allowed =
        entity.ports.is_empty() || (flow.protocol.has_ports() && entity.ports.iter().any(matches));
    if !port_allowed {
        return Err(Miss::Ports(End::Destination));
    }
    if entity.not_ports.iter().any(matches) {
        return Err(Miss::NotPorts(End::Destination));
    }
    Ok(())
}

/// A hop no policy decides: allowed, for the reason `decider` gives.
fn unpoliced_hop(kind: HopKind, decider: Decider) -> HopResult {
    HopResult {
        kind,
        endpoint: None,
        allowed: true,
        decider,
        trace: Vec::new(),
    }
}

/// Which namespaces a rule's selector looks in, for a rule that missed on the namespace.
fn namespace_scope(entity: &Entity, policy: &CompiledPolicy) -> String {
    match &entity.namespace_selector {
        Some(NamespaceSelector::Global) => {
            "namespaceSelector global() only sees host endpoints".to_string()
        }
        Some(NamespaceSelector::Labels(s)) => {
            format!("namespaceSelector {s} does not match its namespace")
        }
        None => format!(
            "a NetworkPolicy's selector only sees pods in namespace {}",
            policy.namespace.as_deref().unwrap_or_default()
        ),
    }
}

/// Failsafe entries, parsed.
#[derive(Debug, Clone, Default)]
pub struct Failsafe {
    pub inbound: Vec<(Protocol, u16)>,
    pub outbound: Vec<(Protocol, u16)>,
}

impl Failsafe {
    pub fn from_facts(facts: &FailsafeFacts) -> Self {
        let parse = |list: &[String]| {
            list.iter()
                .filter_map(|entry| {
                    let entry: FailsafePort = entry.parse().ok()?;
                    Some((Protocol::parse(&entry.protocol_name())?, entry.port))
                })
                .collect()
        };
        Self {
            inbound: parse(&facts.inbound),
            outbound: parse(&facts.outbound),
        }
    }

    fn find(list: &[(Protocol, u16)], flow: &Flow) -> Option<String> {
        list.iter()
            .find(|(p, port)| *p == flow.protocol && *port == flow.port)
            .map(|(p, port)| format!("{p}:{port}"))
    }
}

/// Encapsulation Felix lets through between Calico hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tunnels {
    pub vxlan_port: Option<u16>,
    pub ipip: bool,
}

pub const VXLAN_PORT: u16 = crate::facts::FELIX_DEFAULT_VXLAN_PORT;

/// A tier as the cluster defines it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierSettings {
    /// None: applied after every ordered tier.
    pub order: Option<f64>,
    /// `defaultAction: Pass`: a tier whose policies select the endpoint but match nothing passes
    /// to the next tier instead of denying.
    pub pass_at_end: bool,
}

/// Policies in one tier that apply to an endpoint, in order.
#[derive(Debug, Clone, Default)]
struct TierGroup {
    tier: usize,
    policies: Vec<usize>,
}

/// The policies that apply to one endpoint class, per direction and scope.
#[derive(Debug, Clone, Default)]
struct Applicable {
    /// [ingress, egress]
    normal: [Vec<TierGroup>; 2],
    forward: [Vec<TierGroup>; 2],
}

#[derive(Debug, Clone)]
pub struct TierInfo {
    pub name: String,
    pub order: f64,
    /// A tier's end: Deny (Calico's default) or Pass.
    pub pass_at_end: bool,
}

/// Why a rule did not match; turned into words only for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Miss {
    Invalid,
    IpVersion,
    Protocol,
    NotProtocol,
    SourcePorts,
    Ports(End),
    NotPorts(End),
    Nets(End),
    NotNets(End),
    NotAnEndpoint(End),
    Namespace(End),
    Selector(End),
    NotSelector(End),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Source,
    Destination,
}

impl End {
    /// The source's or the destination's of a pair.
    fn of<T>(self, source: T, destination: T) -> T {
        match self {
            End::Source => source,
            End::Destination => destination,
        }
    }

    fn word(self) -> &'static str {
        match self {
            End::Source => "source",
            End::Destination => "destination",
        }
    }
}

enum Outcome {
    Decided(bool, Decider),
    /// No tier had a policy for the endpoint in this direction.
    NoPolicy,
    PassedAll,
}

pub struct Engine {
    /// Shared between the engines of one observation's now and after views (a stage that
    /// changes only policies): at fleet scale it is most of an engine's memory.
    pub network: Arc<Network>,
    /// Sorted in evaluation order: tier order, policy order (none last), name.
    pub policies: Vec<CompiledPolicy>,
    pub tiers: Vec<TierInfo>,
    pub failsafe: Failsafe,
    /// Nodes whose `FelixConfiguration node.<name>` sets other failsafe ports than `failsafe`.
    pub node_failsafe: HashMap<usize, Failsafe>,
    pub tunnels: Tunnels,
    /// WireGuard listening ports (v4, v6) Felix accepts between hosts before policy.
    pub wireguard_ports: Vec<u16>,
    /// Things the model assumed or left out, for the report.
    pub notes: Vec<String>,
    /// Endpoint index → class index.
    endpoint_class: Vec<usize>,
    classes: Vec<Applicable>,
}

/// The tiers the policies are in, in evaluation order (order, then name).
fn ordered_tiers(
    policies: &[CompiledPolicy],
    tiers: &HashMap<String, TierSettings>,
    notes: &mut Vec<String>,
) -> Vec<TierInfo> {
    let mut tier_names: Vec<String> = policies.iter().map(|p| p.tier.clone()).collect();
    tier_names.sort();
    tier_names.dedup();
    let mut tiers: Vec<TierInfo> = tier_names
        .into_iter()
        .map(|name| {
            let (order, pass_at_end) = if let Some(tier) = tiers.get(&name) {
                (tier.order.unwrap_or(f64::INFINITY), tier.pass_at_end)
            } else if name == DEFAULT_TIER {
                (DEFAULT_TIER_ORDER, false)
            } else {
                notes.push(format!(
                    "tier {name:?}: its order is unknown; evaluated just before the default tier"
                ));
                (DEFAULT_TIER_ORDER - 0.5, false)
            };
            TierInfo {
                name,
                order,
                pass_at_end,
            }
        })
        .collect();
    tiers.sort_by(|a, b| {
        a.order
            .total_cmp(&b.order)
            .then_with(|| a.name.cmp(&b.name))
    });
    tiers
}

/// The policies in Calico's evaluation order (tier, order, name), each with its tier's index.
fn in_evaluation_order(
    policies: Vec<CompiledPolicy>,
    tiers: &[TierInfo],
) -> (Vec<CompiledPolicy>, Vec<usize>) {
    let tier_index: HashMap<&str, usize> = tiers
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let keyed: Vec<(usize, f64, String)> = policies
        .iter()
        .map(|p| {
            (
                tier_index[p.tier.as_str()],
                p.order.unwrap_or(f64::INFINITY),
                p.sort_name(),
            )
        })
        .collect();
    let mut order: Vec<usize> = (0..policies.len()).collect();
    order.sort_by(|&a, &b| {
        let (ta, oa, na) = &keyed[a];
        let (tb, ob, nb) = &keyed[b];
        ta.cmp(tb).then(oa.total_cmp(ob)).then_with(|| na.cmp(nb))
    });
    let mut slots: Vec<Option<CompiledPolicy>> = policies.into_iter().map(Some).collect();
    let policies = order
        .iter()
        .map(|&i| slots[i].take().expect("each once"))
        .collect();
    let policy_tier = order.iter().map(|&i| keyed[i].0).collect();
    (policies, policy_tier)
}

impl Engine {
    /// `tiers`: the cluster's tiers; `default` not among them is Calico's (order 1,000,000,
    /// Deny); a policy in a tier not among them is placed just before `default` and a note says
    /// so.
    pub fn new(
        network: impl Into<Arc<Network>>,
        policies: Vec<CompiledPolicy>,
        tiers: &HashMap<String, TierSettings>,
        failsafe: Failsafe,
        tunnels: Tunnels,
        mut notes: Vec<String>,
    ) -> Engine {
        let tiers = ordered_tiers(&policies, tiers, &mut notes);
        let (policies, policy_tier) = in_evaluation_order(policies, &tiers);
        for p in &policies {
            if p.pre_dnat || p.do_not_track {
                notes.push(format!(
                    "{} is {}: not evaluated (only normal and applyOnForward policy is modelled)",
                    p.display_name(),
                    if p.pre_dnat { "preDNAT" } else { "doNotTrack" }
                ));
            }
            if let Some(reason) = &p.invalid {
                notes.push(format!("{} selects nothing: {reason}", p.display_name()));
            }
        }

        let mut engine = Engine {
            network: network.into(),
            policies,
            tiers,
            failsafe,
            node_failsafe: HashMap::new(),
            tunnels,
            wireguard_ports: Vec::new(),
            notes,
            endpoint_class: Vec::new(),
            classes: Vec::new(),
        };
        engine.classify(&policy_tier);
        engine
    }

    /// Group endpoints that policy cannot tell apart, then work out once per group which
    /// policies select it.
    fn classify(&mut self, policy_tier: &[usize]) {
        type Key<'a> = (
            bool,
            Option<&'a str>,
            Option<&'a str>,
            &'a super::model::Labels,
        );
        let mut seen: HashMap<Key<'_>, usize> = HashMap::new();
        let mut endpoint_class = Vec::with_capacity(self.network.endpoints.len());
        let mut representatives = Vec::new();
        for (i, ep) in self.network.endpoints.iter().enumerate() {
            let sa = match &ep.kind {
                EndpointKind::Workload {
                    service_account, ..
                } => Some(service_account.as_str()),
                EndpointKind::Host { .. } => None,
            };
            let key = (ep.is_host(), ep.namespace(), sa, &ep.labels);
            let next = seen.len();
            let class = *seen.entry(key).or_insert_with(|| {
                representatives.push(i);
                next
            });
            endpoint_class.push(class);
        }
        let classes = representatives
            .iter()
            .map(|&i| self.applicable_for(&self.network.endpoints[i], policy_tier))
            .collect();
        self.endpoint_class = endpoint_class;
        self.classes = classes;
    }

    fn applicable_for(&self, ep: &Endpoint, policy_tier: &[usize]) -> Applicable {
        let mut applicable = Applicable::default();
        for (pi, p) in self.policies.iter().enumerate() {
            if p.pre_dnat || p.do_not_track || !self.selects(p, ep) {
                continue;
            }
            for (dir, ingress) in [(0, true), (1, false)] {
                if !p.has_type(ingress) {
                    continue;
                }
                let push = |groups: &mut Vec<TierGroup>| match groups.last_mut() {
                    Some(g) if g.tier == policy_tier[pi] => g.policies.push(pi),
                    _ => groups.push(TierGroup {
                        tier: policy_tier[pi],
                        policies: vec![pi],
                    }),
                };
                push(&mut applicable.normal[dir]);
                if ep.is_host() && p.apply_on_forward {
                    push(&mut applicable.forward[dir]);
                }
            }
        }
        applicable
    }

    /// Does the policy select this endpoint? (Policy-level selector, namespaceSelector and
    /// serviceAccountSelector; a GlobalNetworkPolicy's namespaceSelector never selects a host.)
    pub fn selects(&self, p: &CompiledPolicy, ep: &Endpoint) -> bool {
        if p.invalid.is_some() {
            return false;
        }
        match &ep.kind {
            EndpointKind::Host { .. } => {
                p.kind == PolicyKind::Global
                    && p.namespace_selector.is_none()
                    && p.service_account_selector.is_none()
                    && p.selector.matches(ep)
            }
            EndpointKind::Workload {
                namespace,
                service_account,
                ..
            } => {
                if p.kind == PolicyKind::Namespaced && p.namespace.as_deref() != Some(namespace) {
                    return false;
                }
                if let Some(ns_sel) = &p.namespace_selector {
                    let empty = super::model::Labels::new();
                    let labels = self.network.namespaces.get(namespace).unwrap_or(&empty);
                    if !ns_sel.matches(labels) {
                        return false;
                    }
                }
                if let Some(sa_sel) = &p.service_account_selector {
                    let sa_labels: super::model::Labels = [(
                        "projectcalico.org/name".to_string(),
                        service_account.clone(),
                    )]
                    .into();
                    if !sa_sel.matches(&sa_labels) {
                        return false;
                    }
                }
                p.selector.matches(ep)
            }
        }
    }

    fn applicable(&self, ep: usize) -> &Applicable {
        &self.classes[self.endpoint_class[ep]]
    }

    /// The policies that apply at an endpoint in a direction, in evaluation order.
    pub fn applicable_policies(&self, ep: usize, ingress: bool, forward: bool) -> Vec<usize> {
        let a = self.applicable(ep);
        let groups = if forward { &a.forward } else { &a.normal };
        groups[usize::from(!ingress)]
            .iter()
            .flat_map(|g| g.policies.iter().copied())
            .collect()
    }

    /// Evaluate a NEW connection.
    pub fn evaluate(&self, flow: &Flow) -> Verdict {
        self.run(flow, false)
    }

    /// Evaluate and record every policy and rule considered.
    pub fn explain(&self, flow: &Flow) -> Verdict {
        self.run(flow, true)
    }

    fn run(&self, flow: &Flow, trace: bool) -> Verdict {
        if let Some(hop) = self.between_hosts_without_policy(flow) {
            return Verdict {
                allowed: true,
                hops: vec![hop],
            };
        }
        let net = &self.network;
        let src_node = net.side_node(flow.src);
        let dst_node = net.side_node(flow.dst);
        let same_node = src_node.is_some() && src_node == dst_node;
        // Forwarded out of the source node and into the destination node, through the host
        // endpoint that polices forwarded traffic there.
        let forwarded = |kind, pod_side: Side, node: Option<usize>| match (pod_side, node) {
            (Side::Pod(_), Some(node)) if !same_node => net.nodes[node]
                .host_endpoint
                .map(|hep| self.forward_hop(kind, hep, flow, trace)),
            _ => None,
        };
        let steps: [&dyn Fn() -> Option<HopResult>; 4] = [
            &|| self.source_hop(flow, same_node, trace),
            &|| forwarded(HopKind::ForwardEgress, flow.src, src_node),
            &|| forwarded(HopKind::ForwardIngress, flow.dst, dst_node),
            &|| self.destination_hop(flow, trace),
        ];
        let mut hops: Vec<HopResult> = Vec::with_capacity(4);
        for step in steps {
            let Some(hop) = step() else { continue };
            let allowed = hop.allowed;
            hops.push(hop);
            if !allowed {
                return Verdict {
                    allowed: false,
                    hops,
                };
            }
        }
        Verdict {
            allowed: true,
            hops,
        }
    }

    /// Between two hosts, encapsulation Felix lets through; on one host, no policy at all.
    fn between_hosts_without_policy(&self, flow: &Flow) -> Option<HopResult> {
        let (Side::Host(a), Side::Host(b)) = (flow.src, flow.dst) else {
            return None;
        };
        let decider = if a == b {
            Decider::SameHost
        } else if self.is_tunnel(flow) {
            Decider::Tunnel
        } else {
            return None;
        };
        Some(unpoliced_hop(HopKind::DestinationIngress, decider))
    }

    /// Leaving the source: a pod's egress policy, or the host's (a host to its own pods is
    /// not policed); nothing for an address outside the cluster.
    fn source_hop(&self, flow: &Flow, same_node: bool, trace: bool) -> Option<HopResult> {
        match flow.src {
            Side::Pod(ep) => Some(self.endpoint_hop(HopKind::SourceEgress, ep, flow, trace)),
            Side::Host(_) if same_node && matches!(flow.dst, Side::Pod(_)) => Some(unpoliced_hop(
                HopKind::SourceEgress,
                Decider::HostToLocalPod,
            )),
            Side::Host(node) => Some(self.host_hop(HopKind::SourceEgress, node, flow, trace)),
            Side::External(_) => None,
        }
    }

    /// Arriving at the destination: its ingress policy; nothing for an outside address.
    fn destination_hop(&self, flow: &Flow, trace: bool) -> Option<HopResult> {
        let kind = HopKind::DestinationIngress;
        match flow.dst {
            Side::Pod(ep) => Some(self.endpoint_hop(kind, ep, flow, trace)),
            Side::Host(node) => Some(self.host_hop(kind, node, flow, trace)),
            Side::External(_) => None,
        }
    }

    fn is_tunnel(&self, flow: &Flow) -> bool {
        (self.tunnels.ipip && flow.protocol == Protocol::IPIP)
            || (flow.protocol == Protocol::UDP
                && (self.tunnels.vxlan_port == Some(flow.port)
                    || self.wireguard_ports.contains(&flow.port)))
    }

    /// The failsafe ports Felix runs with on `node`.
    pub fn failsafe_on(&self, node: usize) -> &Failsafe {
        self.node_failsafe.get(&node).unwrap_or(&self.failsafe)
    }

    /// A host process's traffic: failsafe ports first, then the host endpoint's policy and
    /// profiles; a node without a host endpoint is not policed.
    fn host_hop(&self, kind: HopKind, node: usize, flow: &Flow, trace: bool) -> HopResult {
        let Some(hep) = self.network.nodes[node].host_endpoint else {
            return HopResult {
                kind,
                endpoint: None,
                allowed: true,
                decider: Decider::NoHostEndpoint(node),
                trace: Vec::new(),
            };
        };
        let failsafe = self.failsafe_on(node);
        let list = if kind.is_ingress() {
            &failsafe.inbound
        } else {
            &failsafe.outbound
        };
        if let Some(entry) = Failsafe::find(list, flow) {
            return HopResult {
                kind,
                endpoint: Some(hep),
                allowed: true,
                decider: Decider::Failsafe {
                    inbound: kind.is_ingress(),
                    entry,
                },
                trace: Vec::new(),
            };
        }
        self.endpoint_hop(kind, hep, flow, trace)
    }

    /// Normal policy at an endpoint, then its profiles when no policy applied.
    fn endpoint_hop(&self, kind: HopKind, ep: usize, flow: &Flow, trace: bool) -> HopResult {
        let mut traces = Vec::new();
        let outcome = self.tiers_outcome(
            ep,
            kind.is_ingress(),
            false,
            flow,
            trace.then_some(&mut traces),
        );
        let (allowed, decider) = match outcome {
            Outcome::Decided(allowed, decider) => (allowed, decider),
            Outcome::NoPolicy | Outcome::PassedAll => self.profiles(ep),
        };
        HopResult {
            kind,
            endpoint: Some(ep),
            allowed,
            decider,
            trace: traces,
        }
    }

    fn forward_hop(&self, kind: HopKind, hep: usize, flow: &Flow, trace: bool) -> HopResult {
        let mut traces = Vec::new();
        let outcome = self.tiers_outcome(
            hep,
            kind.is_ingress(),
            true,
            flow,
            trace.then_some(&mut traces),
        );
        let (allowed, decider) = match outcome {
            Outcome::Decided(allowed, decider) => (allowed, decider),
            Outcome::NoPolicy => (true, Decider::ForwardedWithoutPolicy),
            Outcome::PassedAll => (true, Decider::PassedAllTiers),
        };
        HopResult {
            kind,
            endpoint: Some(hep),
            allowed,
            decider,
            trace: traces,
        }
    }

    fn profiles(&self, ep: usize) -> (bool, Decider) {
        let profiles = &self.network.endpoints[ep].profiles;
        match profiles
            .iter()
            .find(|p| p.starts_with("kns.") || *p == DEFAULT_ALLOW_PROFILE)
        {
            Some(p) => (true, Decider::Profile(p.clone())),
            None => (false, Decider::NoProfileMatched(profiles.clone())),
        }
    }

    fn tiers_outcome(
        &self,
        ep: usize,
        ingress: bool,
        forward: bool,
        flow: &Flow,
        mut trace: Option<&mut Vec<PolicyTrace>>,
    ) -> Outcome {
        let a = self.applicable(ep);
        let groups = if forward { &a.forward } else { &a.normal };
        let groups = &groups[usize::from(!ingress)];
        if groups.is_empty() {
            return Outcome::NoPolicy;
        }
        for group in groups {
            let mut passed = false;
            for &pi in &group.policies {
                match self.policy_verdict(pi, ingress, flow, trace.as_deref_mut()) {
                    PolicyVerdict::Decided(decider) => {
                        let allowed = matches!(
                            decider,
                            Decider::Rule {
                                action: Action::Allow,
                                ..
                            }
                        );
                        return Outcome::Decided(allowed, decider);
                    }
                    PolicyVerdict::Pass => {
                        passed = true;
                        break;
                    }
                    PolicyVerdict::NoMatch => {}
                }
            }
            let tier = &self.tiers[group.tier];
            if !passed && !tier.pass_at_end {
                return Outcome::Decided(
                    false,
                    Decider::EndOfTier {
                        tier: tier.name.clone(),
                        policies: group.policies.clone(),
                    },
                );
            }
        }
        Outcome::PassedAll
    }

    /// One policy's rules in order: the first that matches and is not a Log rule decides or
    /// passes; with `trace`, every rule considered is recorded.
    fn policy_verdict(
        &self,
        pi: usize,
        ingress: bool,
        flow: &Flow,
        trace: Option<&mut Vec<PolicyTrace>>,
    ) -> PolicyVerdict {
        let p = &self.policies[pi];
        let mut rule_traces = Vec::new();
        let mut outcome = String::from("no rule matched");
        let mut verdict = PolicyVerdict::NoMatch;
        for (ri, rule) in p.rules(ingress).iter().enumerate() {
            let result = self.rule_matches(rule, p, flow);
            if trace.is_some() {
                rule_traces.push(RuleTrace {
                    index: ri + 1,
                    action: format!("{:?}", rule.action),
                    matched: result.is_ok(),
                    reason: match result {
                        Ok(()) => self.describe_match(rule, flow),
                        Err(miss) => self.describe_miss(miss, rule, p, flow),
                    },
                });
            }
            if result.is_err() || rule.action == Action::Log {
                continue;
            }
            (outcome, verdict) = match rule.action {
                Action::Pass => (
                    format!("rule {} passes to the next tier", ri + 1),
                    PolicyVerdict::Pass,
                ),
                action => (
                    format!("rule {} decides: {action:?}", ri + 1),
                    PolicyVerdict::Decided(Decider::Rule {
                        policy: pi,
                        rule: ri,
                        action,
                    }),
                ),
            };
            break;
        }
        if let Some(t) = trace {
            t.push(PolicyTrace {
                policy: p.display_name(),
                tier: p.tier.clone(),
                order: p.order,
                rules: rule_traces,
                outcome,
            });
        }
        verdict
    }

    fn rule_matches(
        &self,
        rule: &CompiledRule,
        p: &CompiledPolicy,
        flow: &Flow,
    ) -> Result<(), Miss> {
        if rule.invalid.is_some() {
            return Err(Miss::Invalid);
        }
        if let Some(version) = rule.ip_version {
            let flow_version = self
                .network
                .side_ip(flow.dst)
                .or_else(|| self.network.side_ip(flow.src))
                .map(|ip| if ip.is_ipv4() { 4 } else { 6 });
            if flow_version.is_some_and(|v| v != version) {
                return Err(Miss::IpVersion);
            }
        }
        if rule.protocol.is_some_and(|pr| pr != flow.protocol) {
            return Err(Miss::Protocol);
        }
        if rule.not_protocol == Some(flow.protocol) {
            return Err(Miss::NotProtocol);
        }
        if !rule.source.ports.is_empty() {
            return Err(Miss::SourcePorts);
        }
        self.entity_matches(&rule.source, End::Source, p, flow)?;
        self.entity_matches(&rule.destination, End::Destination, p, flow)
    }

    fn entity_matches(
        &self,
        entity: &Entity,
        end: End,
        p: &CompiledPolicy,
        flow: &Flow,
    ) -> Result<(), Miss> {
        let net = &self.network;
        let side = end.of(flow.src, flow.dst);
        let endpoint = net.side_endpoint(side).map(|i| &net.endpoints[i]);
        if end == End::Destination {
            destination_ports_match(entity, endpoint, flow)?;
        }
        if !entity.nets.is_empty() || !entity.not_nets.is_empty() {
            let ip = net.side_ip(side);
            if !entity.nets.is_empty()
                && !ip.is_some_and(|ip| entity.nets.iter().any(|n| n.contains(&ip)))
            {
                return Err(Miss::Nets(end));
            }
            if ip.is_some_and(|ip| entity.not_nets.iter().any(|n| n.contains(&ip))) {
                return Err(Miss::NotNets(end));
            }
        }
        if entity.selects_endpoints() {
            let Some(ep) = endpoint else {
                return Err(Miss::NotAnEndpoint(end));
            };
            if !self.in_scope(entity.namespace_selector.as_ref(), p, ep) {
                return Err(Miss::Namespace(end));
            }
            if entity.selector.as_ref().is_some_and(|s| !s.matches(ep)) {
                return Err(Miss::Selector(end));
            }
        }
        if let (Some(not), Some(ep)) = (&entity.not_selector, endpoint)
            && self.in_scope(entity.namespace_selector.as_ref(), p, ep)
            && not.matches(ep)
        {
            return Err(Miss::NotSelector(end));
        }
        Ok(())
    }

    /// Which endpoints a rule's selector can see: `global()` → non-namespaced ones; a label
    /// selector → pods in matching namespaces; none → the policy's own namespace for a
    /// NetworkPolicy, everything (pods and hosts) for a GlobalNetworkPolicy.
    fn in_scope(
        &self,
        ns_sel: Option<&NamespaceSelector>,
        p: &CompiledPolicy,
        ep: &Endpoint,
    ) -> bool {
        match ns_sel {
            Some(NamespaceSelector::Global) => ep.namespace().is_none(),
            Some(NamespaceSelector::Labels(sel)) => ep
                .namespace()
                .and_then(|ns| self.network.namespaces.get(ns))
                .is_some_and(|labels| sel.matches(labels)),
            None => match p.kind {
                PolicyKind::Namespaced => {
                    ep.namespace().is_some() && ep.namespace() == p.namespace.as_deref()
                }
                PolicyKind::Global => true,
            },
        }
    }

    fn describe_match(&self, rule: &CompiledRule, _flow: &Flow) -> String {
        let mut parts = Vec::new();
        if let Some(p) = rule.protocol {
            parts.push(format!("protocol {p}"));
        }
        for (end, entity) in [
            (End::Source, &rule.source),
            (End::Destination, &rule.destination),
        ] {
            if let Some(s) = &entity.selector {
                parts.push(format!("{} selector {s}", end.word()));
            }
            if let Some(NamespaceSelector::Global) = &entity.namespace_selector {
                parts.push(format!("{} is a host (global())", end.word()));
            }
            if !entity.nets.is_empty() {
                parts.push(format!("{} in nets", end.word()));
            }
            if !entity.ports.is_empty() {
                parts.push(format!("{} port", end.word()));
            }
        }
        if parts.is_empty() {
            "matches everything".into()
        } else {
            format!("matches ({})", parts.join(", "))
        }
    }

    fn describe_miss(
        &self,
        miss: Miss,
        rule: &CompiledRule,
        p: &CompiledPolicy,
        flow: &Flow,
    ) -> String {
        let net = &self.network;
        let side_of = |end: End| end.of(flow.src, flow.dst);
        let entity_of = |end: End| end.of(&rule.source, &rule.destination);
        let who = |end: End| net.side_display(side_of(end));
        match miss {
            Miss::Invalid => rule
                .invalid
                .as_deref()
                .unwrap_or("invalid rule")
                .to_string(),
            Miss::IpVersion => format!(
                "ipVersion {} does not match",
                rule.ip_version.unwrap_or_default()
            ),
            Miss::Protocol => format!(
                "protocol {} is not {}",
                rule.protocol.map(|p| p.to_string()).unwrap_or_default(),
                flow.protocol
            ),
            Miss::NotProtocol => format!("notProtocol excludes {}", flow.protocol),
            Miss::SourcePorts => {
                "source ports are ephemeral: not matched for a NEW connection".to_string()
            }
            Miss::Ports(end) => format!(
                "{} ports {:?} do not include {flow}",
                end.word(),
                entity_of(end).ports
            ),
            Miss::NotPorts(end) => format!("{} notPorts exclude {flow}", end.word()),
            Miss::Nets(end) => {
                let nets: Vec<String> = entity_of(end).nets.iter().map(|n| n.to_string()).collect();
                let address = net.side_ip(side_of(end));
                let address = address.map_or("unknown".into(), |i| i.to_string());
                format!(
                    "{} address {address} is not in {}",
                    end.word(),
                    nets.join(", ")
                )
            }
            Miss::NotNets(end) => format!("{} address is in notNets", end.word()),
            Miss::NotAnEndpoint(end) => format!(
                "{} {} is not a Calico endpoint, so no selector matches it",
                end.word(),
                net.side_name(side_of(end))
            ),
            Miss::Namespace(end) => {
                let scope = namespace_scope(entity_of(end), p);
                format!("{} {}: {scope}", end.word(), who(end))
            }
            Miss::Selector(end) => {
                let selector = entity_of(end)
                    .selector
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                format!(
                    "{} selector {selector} does not match {}",
                    end.word(),
                    who(end)
                )
            }
            Miss::NotSelector(end) => format!("{} {} matches notSelector", end.word(), who(end)),
        }
    }

    /// One line: what decided a hop.
    pub fn describe_decider(&self, decider: &Decider, kind: HopKind) -> String {
        let direction = if kind.is_ingress() {
            "ingress"
        } else {
            "egress"
        };
        match decider {
            Decider::Rule {
                policy,
                rule,
                action,
            } => format!(
                "{} {direction} rule {} ({action:?})",
                self.policies[*policy].display_name(),
                rule + 1
            ),
            Decider::EndOfTier { tier, policies } => {
                let names: Vec<String> = policies
                    .iter()
                    .map(|p| self.policies[*p].display_name())
                    .collect();
                format!(
                    "end of tier {tier}: no {direction} rule matched in {}",
                    names.join(", ")
                )
            }
            Decider::Profile(p) => format!("profile {p} (no policy applies)"),
            Decider::NoProfileMatched(profiles) if profiles.is_empty() => {
                "no policy and no profile: denied".into()
            }
            Decider::NoProfileMatched(profiles) => {
                format!(
                    "no policy applies and profiles {} do not allow",
                    profiles.join(", ")
                )
            }
            Decider::PassedAllTiers => "every tier passed".into(),
            Decider::Failsafe { inbound, entry } => {
                format!(
                    "failsafe {} port {entry}",
                    if *inbound { "inbound" } else { "outbound" }
                )
            }
            Decider::NoHostEndpoint(node) => {
                format!(
                    "node {} has no host endpoint: not policed",
                    self.network.nodes[*node].name
                )
            }
            Decider::ForwardedWithoutPolicy => "forwarded traffic: no applyOnForward policy".into(),
            Decider::HostToLocalPod => "host to a local pod: the host side is not policed".into(),
            Decider::SameHost => "both ends on one host: no endpoint is crossed".into(),
            Decider::Tunnel => {
                "Felix accepts tunnel traffic (VXLAN, IPIP, WireGuard) between Calico hosts before policy".into()
            }
        }
    }
}
