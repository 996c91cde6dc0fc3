//! The Calico policy evaluation engine: given the cluster's endpoints and policies, would a NEW
//! connection be allowed, and which policy and rule decided? Pure and synchronous; the commands
//! feed it what the cluster returned.
//!
//! - [`model`]: endpoints, nodes, flows.
//! - [`policy`]: policies compiled once (selectors parsed, CIDRs and ports parsed).
//! - [`eval`]: Calico's evaluation (tiers, order then name, Allow/Deny/Log/Pass, profiles,
//!   failsafe ports, host endpoint and applyOnForward scope) per hop of a flow.
//! - [`build`]: the model from the inventory; [`scenario`]: the state after a stage.
//! - [`flows`]: the critical flows; [`report`]: now against after, for `check` and lockdown.
//!
//! Modelled as Felix does, as Calico's docs describe it (hostendpoint, tiered-policy,
//! host-endpoints/summary): a flow passes egress at its source endpoint, the source node's host
//! endpoint when a pod's traffic is forwarded off the node (applyOnForward policies only; none
//! means allowed), the destination node's host endpoint when
//! traffic is forwarded to a pod (same), and ingress at its destination endpoint. Host processes
//! (the kubelet, the API server, host-networked pods) are their node's host endpoint; traffic
//! from a host to its own pods is not policed on the host side; failsafe ports are accepted
//! before host endpoint policy; VXLAN/IPIP between Calico hosts is accepted by Felix before
//! policy. Kubernetes NetworkPolicies are converted as Calico does ([`k8s_policy`]): namespaced
//! policies `knp.default.<name>` in the default tier at order 1000. Not modelled: preDNAT and
//! doNotTrack policies, rule fields beyond protocol/ports/nets/selectors (http, icmp,
//! serviceAccounts), and source ports (ephemeral for a NEW connection, so a rule that names
//! them never matches).

pub mod build;
pub mod eval;
pub mod flows;
pub mod k8s_policy;
pub mod model;
pub mod policy;
pub mod report;
pub mod scenario;

#[cfg(test)]
mod tests;

pub use eval::{Decider, Engine, HopKind, HopResult, PolicyTrace, RuleTrace, Verdict};
pub use flows::{CriticalFlow, FlowCategory, critical_flows};
pub use model::{Flow, Network, Protocol, Side};
pub use report::{Decision, FlowOutcome, FlowReport, changed_by, check, compare};
pub use scenario::state_after;
