//! One scenario per documented rule of Calico's evaluation (Calico's docs: hostendpoint,
//! tiered-policy, host-endpoints/summary), plus the tutorial lab end to end through the stages'
//! own rendered objects.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::calico::policy::Action;
use crate::facts::{ClusterFacts, FailsafeFacts};
use crate::live::LiveState;
use crate::stages::{self, StageId, StageOptions, StageRender};

use super::build;
use super::eval::{Decider, Engine, Failsafe, HopKind, TierSettings, Tunnels, Verdict};
use super::flows::FlowCategory;
use super::model::{Flow, Protocol};
use super::policy::PolicyKind;
use super::report;
use super::scenario::state_after;

fn node(name: &str, ip: &str, control: bool) -> Value {
    let mut labels = json!({"kubernetes.io/os": "linux", "kubernetes.io/hostname": name});
    if control {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    json!({"metadata": {"name": name, "labels": labels},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value) -> Value {
    json!({"metadata": {"namespace": ns, "name": name, "labels": labels},
           "spec": {"nodeName": node, "serviceAccountName": "default",
                    "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn host_pod(ns: &str, name: &str, node: &str, labels: Value) -> Value {
    json!({"metadata": {"namespace": ns, "name": name, "labels": labels},
           "spec": {"nodeName": node, "hostNetwork": true, "containers": [{"name": "c"}]},
           "status": {"phase": "Running"}})
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}})
}

fn hep(node_json: &Value, profiles: &[&str]) -> Value {
    let name = node_json["metadata"]["name"].as_str().unwrap();
    json!({"metadata": {"name": format!("{name}-hep"), "labels": node_json["metadata"]["labels"]},
           "spec": {"node": name, "interfaceName": "*",
                    "expectedIPs": [node_json["status"]["addresses"][0]["address"]],
                    "profiles": profiles}})
}

fn gnp(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": spec})
}

fn np(ns: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
}

/// Two nodes (n1 control, n2), a pod on each, namespaces `app` (team: a) and `other`.
fn small(heps: bool, gnps: Vec<Value>, nps: Vec<Value>) -> LiveState {
    let n1 = node("n1", "10.0.0.1", true);
    let n2 = node("n2", "10.0.0.2", false);
    let mut live = LiveState::default();
    live.inventory.pods = vec![
        pod("app", "web", "n1", "10.1.0.1", json!({"app": "web"})),
        pod("app", "db", "n2", "10.1.0.2", json!({"app": "db"})),
        pod(
            "other",
            "client",
            "n2",
            "10.1.0.3",
            json!({"app": "client"}),
        ),
        host_pod(
            "calico-system",
            "calico-node-x",
            "n2",
            json!({"k8s-app": "calico-node"}),
        ),
    ]
    .into();
    if heps {
        live.inventory.host_endpoints = vec![hep(&n1, &[]), hep(&n2, &[])];
    }
    live.inventory.nodes = vec![n1, n2];
    live.inventory.namespaces = vec![
        namespace("app", json!({"team": "a"})),
        namespace("other", json!({})),
    ];
    live.inventory.ip_pools = Some(vec![json!({"spec": {"vxlanMode": "Always"}})]);
    live.global_network_policies = gnps;
    live.network_policies = nps;
    live
}

fn engine(live: &LiveState) -> Engine {
    build::engine(live, &ClusterFacts::tutorial_lab())
}

fn flow(engine: &Engine, from: &str, to: &str, protocol: Protocol, port: u16) -> Flow {
    let net = &engine.network;
    Flow {
        src: net.resolve(from).unwrap_or_else(|| panic!("{from}")),
        dst: net.resolve(to).unwrap_or_else(|| panic!("{to}")),
        protocol,
        port,
    }
}

fn check(engine: &Engine, from: &str, to: &str, protocol: Protocol, port: u16) -> Verdict {
    engine.evaluate(&flow(engine, from, to, protocol, port))
}

fn tcp(engine: &Engine, from: &str, to: &str, port: u16) -> Verdict {
    check(engine, from, to, Protocol::TCP, port)
}

/// "GlobalNetworkPolicy/x ingress rule 1 (Allow)"-style text of the deciding hop.
fn decided(engine: &Engine, v: &Verdict) -> String {
    report::decision(engine, v).decided_by
}

fn deny_all_tcp(order: u32, selector: &str) -> Value {
    json!({"order": order, "selector": selector, "types": ["Ingress"],
           "ingress": [{"action": "Deny", "protocol": "TCP"}]})
}

#[test]
fn lower_order_first_then_name() {
    let allow = json!({"order": 10, "selector": "app == 'db'", "types": ["Ingress"],
                       "ingress": [{"action": "Allow", "protocol": "TCP"}]});
    let live = small(
        false,
        vec![
            gnp("b-allow", allow.clone()),
            gnp("a-deny", deny_all_tcp(10, "app == 'db'")),
        ],
        vec![],
    );
    let e = engine(&live);
    let v = tcp(&e, "app/web", "app/db", 8080);
    assert!(!v.allowed);
    assert_eq!(
        decided(&e, &v),
        "GlobalNetworkPolicy/a-deny ingress rule 1 (Deny)"
    );

    let live = small(
        false,
        vec![
            gnp("b-allow", allow),
            gnp("a-deny", deny_all_tcp(11, "app == 'db'")),
        ],
        vec![],
    );
    let e = engine(&live);
    let v = tcp(&e, "app/web", "app/db", 8080);
    assert!(v.allowed);
    assert_eq!(
        decided(&e, &v),
        "GlobalNetworkPolicy/b-allow ingress rule 1 (Allow)"
    );
}

#[test]
fn a_policy_without_order_comes_last() {
    let mut late = deny_all_tcp(0, "all()");
    late.as_object_mut().unwrap().remove("order");
    let allow = json!({"order": 5000, "types": ["Ingress"], "ingress": [{"action": "Allow"}]});
    let e = engine(&small(
        false,
        vec![gnp("a-no-order", late), gnp("z", allow)],
        vec![],
    ));
    assert!(tcp(&e, "app/web", "app/db", 80).allowed);
}

#[test]
fn log_rules_log_and_continue() {
    let spec = json!({"order": 1, "types": ["Ingress"],
                      "ingress": [{"action": "Log"}, {"action": "Allow", "protocol": "TCP"}]});
    let e = engine(&small(false, vec![gnp("log-then-allow", spec)], vec![]));
    let v = tcp(&e, "app/web", "app/db", 80);
    assert!(v.allowed);
    assert_eq!(
        decided(&e, &v),
        "GlobalNetworkPolicy/log-then-allow ingress rule 2 (Allow)"
    );
}

#[test]
fn pass_skips_to_the_next_tier_and_the_last_pass_reaches_profiles() {
    let pass = json!({"tier": "security", "order": 1, "types": ["Ingress"],
                      "ingress": [{"action": "Pass", "protocol": "TCP"}, {"action": "Deny"}]});
    let deny = json!({"order": 1, "types": ["Ingress"], "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [22]}}]});
    let live = small(
        false,
        vec![gnp("security.pass-tcp", pass.clone()), gnp("deny-22", deny)],
        vec![],
    );
    let net = build::network(&live);
    let mut notes = Vec::new();
    let policies = build::policies(&live, &mut notes);
    let tiers = HashMap::from([(
        "security".to_string(),
        TierSettings {
            order: Some(100.0),
            pass_at_end: false,
        },
    )]);
    let e = Engine::new(
        net,
        policies,
        &tiers,
        Failsafe::default(),
        Tunnels::default(),
        notes,
    );
    // Passed by the security tier, then denied by the default tier.
    let v = tcp(&e, "app/web", "app/db", 22);
    assert!(!v.allowed);
    assert_eq!(
        decided(&e, &v),
        "GlobalNetworkPolicy/deny-22 ingress rule 1 (Deny)"
    );
    // Passed, then the default tier's only policy has no matching rule: end of tier, deny.
    let v = tcp(&e, "app/web", "app/db", 80);
    assert!(!v.allowed);
    assert!(
        matches!(v.hops.last().unwrap().decider, Decider::EndOfTier { ref tier, .. } if tier == "default")
    );
    // UDP is denied by the security tier itself.
    assert!(!check(&e, "app/web", "app/db", Protocol::UDP, 53).allowed);

    // Only the security tier: a pass reaches the profiles.
    let live = small(false, vec![gnp("security.pass-tcp", pass)], vec![]);
    let net = build::network(&live);
    let policies = build::policies(&live, &mut Vec::new());
    let e = Engine::new(
        net,
        policies,
        &tiers,
        Failsafe::default(),
        Tunnels::default(),
        vec![],
    );
    let v = tcp(&e, "app/web", "app/db", 80);
    assert!(v.allowed);
    assert_eq!(decided(&e, &v), "profile kns.app (no policy applies)");
}

#[test]
fn a_tier_that_selects_the_endpoint_but_matches_nothing_denies() {
    let spec = json!({"order": 1, "selector": "app == 'db'", "types": ["Ingress"],
                      "ingress": [{"action": "Allow", "protocol": "UDP"}]});
    let e = engine(&small(false, vec![gnp("udp-only", spec)], vec![]));
    let v = tcp(&e, "app/web", "app/db", 80);
    assert!(
        !v.allowed,
        "the kns profile would allow, but the tier ends in deny"
    );
    assert_eq!(
        decided(&e, &v),
        "end of tier default: no ingress rule matched in GlobalNetworkPolicy/udp-only"
    );
    // Not selected: the profile decides.
    assert!(tcp(&e, "app/db", "app/web", 80).allowed);
}

#[test]
fn no_policy_means_the_profile_decides() {
    let e = engine(&small(false, vec![], vec![]));
    let v = tcp(&e, "app/web", "other/client", 80);
    assert!(v.allowed);
    assert_eq!(
        v.hops.len(),
        2,
        "egress at web, ingress at client: no host endpoints"
    );
    assert_eq!(decided(&e, &v), "profile kns.other (no policy applies)");
}

#[test]
fn host_endpoint_without_policy_or_profile_denies_except_failsafe() {
    let e = engine(&small(true, vec![], vec![]));
    let v = tcp(&e, "n2", "n1", 10250);
    assert!(!v.allowed);
    assert_eq!(v.hops[0].kind, HopKind::SourceEgress);
    assert_eq!(decided(&e, &v), "no policy and no profile: denied");
    let v = tcp(&e, "n2", "n1", 6443);
    assert!(v.allowed, "tcp:6443 is failsafe both ways");
    assert_eq!(decided(&e, &v), "failsafe inbound port tcp:6443");
    // Outbound udp:53 is failsafe, but n1 has no inbound failsafe for it.
    let v = check(&e, "n2", "n1", Protocol::UDP, 53);
    assert!(!v.allowed);
    assert_eq!(
        v.hops[0].decider,
        Decider::Failsafe {
            inbound: false,
            entry: "udp:53".into()
        }
    );
    assert_eq!(v.hops[1].kind, HopKind::DestinationIngress);

    // A host-networked pod is its host.
    let v = tcp(&e, "calico-system/calico-node-x", "n1", 2379);
    assert!(v.allowed);

    // With Felix's failsafe turned off nothing gets through.
    let mut facts = ClusterFacts::tutorial_lab();
    facts.failsafe = FailsafeFacts {
        inbound: vec![],
        outbound: vec![],
        defaults: false,
    };
    let e = build::engine(&small(true, vec![], vec![]), &facts);
    assert!(!tcp(&e, "n2", "n1", 6443).allowed);
}

#[test]
fn types_default_to_egress_with_egress_rules_and_ingress_without_rules() {
    let egress_only = json!({"order": 1, "selector": "app == 'web'",
                             "egress": [{"action": "Allow", "protocol": "UDP"}]});
    let e = engine(&small(false, vec![gnp("egress-only", egress_only)], vec![]));
    assert!(
        !tcp(&e, "app/web", "app/db", 80).allowed,
        "egress is policed"
    );
    assert!(check(&e, "app/web", "app/db", Protocol::UDP, 53).allowed);
    assert!(
        tcp(&e, "app/db", "app/web", 80).allowed,
        "ingress is not: the profile decides"
    );

    let no_rules = json!({"order": 1, "selector": "app == 'web'"});
    let e = engine(&small(false, vec![gnp("no-rules", no_rules)], vec![]));
    assert!(
        !tcp(&e, "app/db", "app/web", 80).allowed,
        "no rules at all: Ingress, deny"
    );
    assert!(tcp(&e, "app/web", "app/db", 80).allowed, "egress untouched");
}

#[test]
fn host_endpoint_policy_applies_to_forwarded_traffic_only_with_apply_on_forward() {
    let hosts = deny_all_tcp(1, "has(kubernetes.io/os)");
    let e = engine(&small(true, vec![gnp("hosts-deny", hosts.clone())], vec![]));
    let v = tcp(&e, "other/client", "app/web", 80);
    assert!(v.allowed, "pod to pod across nodes is forwarded: {v:?}");
    assert!(
        v.hops
            .iter()
            .any(|h| h.decider == Decider::ForwardedWithoutPolicy)
    );
    assert!(!tcp(&e, "n2", "n1", 80).allowed, "host to host is policed");

    let mut forward = hosts;
    forward["applyOnForward"] = json!(true);
    let e = engine(&small(true, vec![gnp("hosts-deny", forward)], vec![]));
    let v = tcp(&e, "other/client", "app/web", 80);
    assert!(!v.allowed);
    let denying = v.hops.iter().find(|h| !h.allowed).unwrap();
    assert_eq!(denying.kind, HopKind::ForwardIngress);
    // Same node: not forwarded through a host endpoint.
    assert!(tcp(&e, "other/client", "app/db", 80).allowed);
}

#[test]
fn namespace_selectors_global_and_namespaced_scope() {
    // Rule peer `global()`: hosts only.
    let from_hosts = json!({"order": 1, "selector": "app == 'web'", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "source": {"selector": "all()", "namespaceSelector": "global()"}}]});
    let e = engine(&small(true, vec![gnp("from-hosts", from_hosts)], vec![]));
    let hosts_allowed = tcp(&e, "n2", "app/web", 80);
    assert!(
        !hosts_allowed.hops[0].allowed,
        "n2's own egress has no policy nor profile"
    );
    let v = e.evaluate(&flow(&e, "n2", "app/web", Protocol::TCP, 80));
    assert!(v.hops.iter().any(|h| h.kind == HopKind::DestinationIngress) || !v.allowed);
    let v = tcp(&e, "other/client", "app/web", 80);
    assert!(!v.allowed, "a pod is not a global() endpoint");

    // Without HEPs egress from n2 is not policed, and global() matches only HEPs, so nothing.
    // With HEPs that allow egress, global() matches n2's host endpoint.
    let from_hosts = json!({"order": 1, "selector": "app == 'web'", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "source": {"namespaceSelector": "global()"}}]});
    let mut live = small(true, vec![gnp("from-hosts", from_hosts)], vec![]);
    for h in &mut live.inventory.host_endpoints {
        h["spec"]["profiles"] = json!(["projectcalico-default-allow"]);
    }
    let e = engine(&live);
    assert!(tcp(&e, "n2", "app/web", 80).allowed);

    // A GNP rule selector without namespaceSelector sees pods in every namespace and hosts.
    let any = json!({"order": 1, "selector": "app == 'web'", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "source": {"selector": "app == 'client' || has(kubernetes.io/os)"}}]});
    let e = engine(&live_with(&live, vec![gnp("any", any)], vec![]));
    assert!(tcp(&e, "other/client", "app/web", 80).allowed);
    assert!(tcp(&e, "n2", "app/web", 80).allowed);
    assert!(!tcp(&e, "app/db", "app/web", 80).allowed);

    // The same selector in a NetworkPolicy only sees its own namespace.
    let ns_policy = json!({"order": 1, "selector": "app == 'web'", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "source": {"selector": "app == 'client' || app == 'db'"}}]});
    let e = engine(&live_with(&live, vec![], vec![np("app", "web", ns_policy)]));
    assert!(!tcp(&e, "other/client", "app/web", 80).allowed);
    assert!(tcp(&e, "app/db", "app/web", 80).allowed);

    // namespaceSelector on the rule: pods in matching namespaces.
    let by_ns = json!({"order": 1, "selector": "app == 'web'", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "source": {"namespaceSelector": "projectcalico.org/name == 'other'"}}]});
    let e = engine(&live_with(&live, vec![], vec![np("app", "web", by_ns)]));
    assert!(tcp(&e, "other/client", "app/web", 80).allowed);
    assert!(!tcp(&e, "app/db", "app/web", 80).allowed);

    // A GNP's policy-level namespaceSelector selects pods by namespace labels, never hosts.
    let team_a = json!({"order": 1, "namespaceSelector": "team == 'a'", "types": ["Ingress"],
        "ingress": [{"action": "Deny"}]});
    let e = engine(&live_with(&live, vec![gnp("team-a", team_a)], vec![]));
    assert!(!tcp(&e, "other/client", "app/db", 80).allowed);
    assert!(tcp(&e, "app/db", "other/client", 80).allowed);
    assert!(
        tcp(&e, "app/db", "n1", 80).allowed,
        "n1 is not selected: its profile allows"
    );
}

fn live_with(base: &LiveState, gnps: Vec<Value>, nps: Vec<Value>) -> LiveState {
    let mut live = base.clone();
    live.global_network_policies = gnps;
    live.network_policies = nps;
    live
}

#[test]
fn not_nets_not_ports_and_port_ranges() {
    let spec = json!({"order": 1, "selector": "app == 'db'", "types": ["Ingress"], "ingress": [
        {"action": "Allow", "protocol": "TCP",
         "source": {"notNets": ["10.1.0.3/32"]},
         "destination": {"ports": ["8000:8100", 443], "notPorts": [8081]}}]});
    let e = engine(&small(false, vec![gnp("ranges", spec)], vec![]));
    assert!(tcp(&e, "app/web", "app/db", 8000).allowed);
    assert!(tcp(&e, "app/web", "app/db", 8100).allowed);
    assert!(tcp(&e, "app/web", "app/db", 443).allowed);
    assert!(!tcp(&e, "app/web", "app/db", 8081).allowed, "notPorts");
    assert!(!tcp(&e, "app/web", "app/db", 8101).allowed);
    assert!(!tcp(&e, "other/client", "app/db", 8000).allowed, "notNets");

    let named = json!({"order": 1, "selector": "app == 'db'", "types": ["Ingress"], "ingress": [
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http"]}}]});
    let e = engine(&small(false, vec![gnp("named", named)], vec![]));
    assert!(
        tcp(&e, "app/web", "app/db", 8080).allowed,
        "named port resolves on the destination pod"
    );
    assert!(!tcp(&e, "app/web", "app/db", 8081).allowed);

    let nets = json!({"order": 1, "selector": "app == 'web'", "types": ["Egress"], "egress": [
        {"action": "Allow", "destination": {"nets": ["8.8.8.0/24"]}}]});
    let e = engine(&small(false, vec![gnp("nets", nets)], vec![]));
    assert!(check(&e, "app/web", "8.8.8.8", Protocol::UDP, 53).allowed);
    assert!(!check(&e, "app/web", "1.1.1.1", Protocol::UDP, 53).allowed);
}

#[test]
fn tunnels_between_calico_hosts_pass_before_policy() {
    let e = engine(&small(
        true,
        vec![gnp("deny", deny_all_tcp(1, "all()"))],
        vec![],
    ));
    let v = check(&e, "n1", "n2", Protocol::UDP, 4789);
    assert!(v.allowed);
    assert_eq!(v.hops[0].decider, Decider::Tunnel);
    assert!(
        !check(&e, "n1", "n2", Protocol::IPIP, 0).allowed,
        "the pool does not use IPIP"
    );
}

#[test]
fn bad_selectors_match_nothing_and_are_reported() {
    let spec = json!({"order": 1, "selector": "app == ", "types": ["Ingress"], "ingress": [{"action": "Deny"}]});
    let e = engine(&small(false, vec![gnp("broken", spec)], vec![]));
    assert!(tcp(&e, "app/web", "app/db", 80).allowed);
    assert!(
        e.notes
            .iter()
            .any(|n| n.contains("broken") && n.contains("selects nothing")),
        "{:?}",
        e.notes
    );
}

#[test]
fn explain_traces_every_rule_considered() {
    let spec = json!({"order": 1, "selector": "app == 'db'", "types": ["Ingress"], "ingress": [
        {"action": "Allow", "protocol": "UDP"},
        {"action": "Log"},
        {"action": "Deny", "protocol": "TCP", "source": {"selector": "app == 'web'"}}]});
    let e = engine(&small(false, vec![gnp("traced", spec)], vec![]));
    let v = e.explain(&flow(&e, "app/web", "app/db", Protocol::TCP, 80));
    let ingress = v
        .hops
        .iter()
        .find(|h| h.kind == HopKind::DestinationIngress)
        .unwrap();
    let rules = &ingress.trace[0].rules;
    assert_eq!(rules.len(), 3);
    assert!(
        !rules[0].matched && rules[0].reason.contains("protocol udp is not tcp"),
        "{}",
        rules[0].reason
    );
    assert!(rules[1].matched);
    assert!(rules[2].matched);
    assert_eq!(
        ingress.decider,
        Decider::Rule {
            policy: 0,
            rule: 2,
            action: Action::Deny
        }
    );
    assert_eq!(e.policies[0].kind, PolicyKind::Global);
}

// --- The tutorial lab, through the stages' own objects ---------------------------------------

/// The lab seed's shape with routable addresses (the test seed's are in 127.0.0.0/8).
fn lab() -> (LiveState, ClusterFacts) {
    lab_with_prefix("10.0")
}

fn lab_with_prefix(prefix: &str) -> (LiveState, ClusterFacts) {
    let ip = |rest: &str| format!("{prefix}.{rest}");
    let nodes = vec![
        node("control", &ip("10.1"), true),
        node("node1", &ip("10.2"), false),
        node("node2", &ip("10.3"), false),
    ];
    let mut pods = vec![
        pod(
            "kube-system",
            "coredns-a",
            "control",
            &ip("100.2"),
            json!({"k8s-app": "kube-dns"}),
        ),
        pod(
            "kube-system",
            "coredns-b",
            "node1",
            &ip("101.2"),
            json!({"k8s-app": "kube-dns"}),
        ),
        host_pod(
            "calico-system",
            "calico-typha-x",
            "node1",
            json!({"k8s-app": "calico-typha"}),
        ),
        pod(
            "calico-system",
            "calico-kube-controllers-x",
            "control",
            &ip("100.3"),
            json!({"k8s-app": "calico-kube-controllers"}),
        ),
        pod(
            "app-frontend",
            "frontend-a",
            "node1",
            &ip("101.4"),
            json!({"app": "frontend"}),
        ),
        pod(
            "app-backend",
            "backend-a",
            "node2",
            &ip("102.4"),
            json!({"app": "backend"}),
        ),
        pod(
            "calico-apiserver",
            "calico-apiserver-a",
            "node1",
            &ip("101.3"),
            json!({"k8s-app": "calico-apiserver"}),
        ),
        pod(
            "calico-apiserver",
            "calico-apiserver-b",
            "node2",
            &ip("102.2"),
            json!({"k8s-app": "calico-apiserver"}),
        ),
    ];
    for n in ["control", "node1", "node2"] {
        pods.push(host_pod(
            "calico-system",
            &format!("calico-node-{n}"),
            n,
            json!({"k8s-app": "calico-node"}),
        ));
    }
    pods[0]["spec"]["containers"][0]["ports"] =
        json!([{"name": "dns", "containerPort": 53, "protocol": "UDP"}]);
    let mut live = LiveState::default();
    live.inventory.nodes = nodes;
    live.inventory.system_pods = pods
        .iter()
        .filter(|p| crate::facts::is_system_pod(p))
        .cloned()
        .collect();
    live.inventory.pods = pods.into();
    live.inventory.namespaces = [
        "kube-system",
        "calico-system",
        "calico-apiserver",
        "app-frontend",
        "app-backend",
    ]
    .iter()
    .map(|n| namespace(n, json!({})))
    .collect();
    live.inventory.ip_pools = Some(vec![
        json!({"spec": {"vxlanMode": "CrossSubnet", "ipipMode": "Never"}}),
    ]);
    let mut facts = crate::facts::detect(&live.inventory);
    facts.calico_api = crate::facts::CalicoApiMode::AggregatedApiserver;
    (live, facts)
}

/// `up`: every policy stage's objects, as if applied.
fn after_up(live: &LiveState, facts: &ClusterFacts, options: &StageOptions) -> LiveState {
    let mut state = live.clone();
    for stage in StageId::policy_stages() {
        if let StageRender::Objects(objects) = stages::render(stage, facts, options) {
            for o in objects {
                match o.kind {
                    crate::calico::policy::CalicoKind::NetworkPolicy => {
                        state.network_policies.push(o.manifest)
                    }
                    _ => state.global_network_policies.push(o.manifest),
                }
            }
        }
    }
    state
}

fn lost(report: &report::FlowReport) -> Vec<String> {
    report
        .lost()
        .map(|f| format!("{} {}", f.title, f.label()))
        .collect()
}

#[test]
fn fresh_lab_allows_every_critical_flow() {
    let (live, facts) = lab();
    let report = report::check(&live, &facts, &StageOptions::with_defaults(), None);
    let denied: Vec<_> = report.denied_in_the_end().map(|f| f.label()).collect();
    assert!(denied.is_empty(), "{denied:?}");
    for category in [
        FlowCategory::NodesToApiserver,
        FlowCategory::ApiserverToKubelet,
        FlowCategory::NodesToTypha,
        FlowCategory::PodsToDns,
        FlowCategory::Bgp,
        FlowCategory::Encapsulation,
        FlowCategory::ApiserverToCalicoApiserver,
    ] {
        assert!(
            report.flows.iter().any(|f| f.category == category),
            "{category:?}"
        );
    }
}

#[test]
fn lab_after_up_and_lockdown_keeps_every_critical_flow() {
    let (live, facts) = lab();
    let options = StageOptions::with_defaults();
    let hardened = after_up(&live, &facts, &options);
    let report = report::check(&hardened, &facts, &options, Some(StageId::Lockdown));
    assert_eq!(lost(&report), Vec::<String>::new());
}

#[test]
fn lab_without_the_kubelet_stage_loses_kubelet_at_lockdown() {
    let (live, facts) = lab();
    let options = StageOptions::with_defaults();
    let mut hardened = after_up(&live, &facts, &options);
    hardened
        .global_network_policies
        .retain(|p| p["metadata"]["name"] != "kapi-to-kubelet");
    let report = report::check(&hardened, &facts, &options, Some(StageId::Lockdown));
    let lost = lost(&report);
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert!(lost.iter().all(|l| l.contains("tcp/10250")), "{lost:?}");
    let f = report.lost().next().unwrap();
    assert!(
        f.after
            .as_ref()
            .unwrap()
            .decided_by
            .contains("end of tier default"),
        "{:?}",
        f.after
    );
}

#[test]
fn lockdown_scenario_removes_the_safety_net_and_adds_auto_host_endpoints() {
    let (live, facts) = lab();
    let options = StageOptions::with_defaults();
    let hardened = after_up(&live, &facts, &options);
    let state = state_after(&hardened, &facts, &options, Some(StageId::Lockdown));
    assert!(
        state
            .global_network_policies
            .iter()
            .all(|p| p["metadata"]["name"] != "final-allow-everything")
    );
    assert_eq!(state.inventory.host_endpoints.len(), 3);
    let hep = &state.inventory.host_endpoints[0];
    assert_eq!(hep["metadata"]["name"], "control-auto-hep");
    assert_eq!(
        hep["spec"]["profiles"],
        json!(["projectcalico-default-allow"])
    );
    assert_eq!(
        hep["metadata"]["labels"]["projectcalico.org/created-by"],
        "calico-kube-controllers"
    );
    // The safety net alone keeps everything while host endpoints appear.
    let safety_only = state_after(&hardened, &facts, &options, Some(StageId::EnableHep));
    let report = report::check(&safety_only, &facts, &options, None);
    assert_eq!(report.denied_in_the_end().count(), 0);
}

#[test]
fn on_loopback_addresses_the_localhost_stage_allows_all_host_traffic() {
    // The test control plane's nodes live in 127.0.0.0/8, which the localhost stage allows as
    // a destination: host-to-host flows pass there even without their own stage.
    let (live, facts) = lab_with_prefix("127.0");
    let options = StageOptions::with_defaults();
    let mut hardened = after_up(&live, &facts, &options);
    hardened
        .global_network_policies
        .retain(|p| p["metadata"]["name"] != "kapi-to-kubelet");
    let report = report::check(&hardened, &facts, &options, Some(StageId::Lockdown));
    let kubelet = report
        .flows
        .iter()
        .find(|f| f.category == FlowCategory::ApiserverToKubelet)
        .unwrap();
    assert!(kubelet.after.as_ref().unwrap().allowed);
    assert!(
        kubelet
            .after
            .as_ref()
            .unwrap()
            .decided_by
            .contains("allow-containers-access-to-localhost")
    );
}

#[test]
fn the_tutorial_alone_loses_the_controllers_and_the_kubelet() {
    let (live, facts) = lab();
    let options = StageOptions::with_defaults();
    let mut hardened = after_up(&live, &facts, &options);
    hardened
        .global_network_policies
        .retain(|p| p["metadata"]["name"] != "kapi-to-kubelet");
    hardened
        .network_policies
        .retain(|p| p["metadata"]["name"] != "calico-kube-controllers-to-kapi");
    let report = report::check(&hardened, &facts, &options, Some(StageId::Lockdown));
    let mut categories: Vec<FlowCategory> = report.lost().map(|f| f.category).collect();
    categories.dedup();
    assert_eq!(
        categories,
        vec![
            FlowCategory::ApiserverToKubelet,
            FlowCategory::CalicoToApiserver
        ]
    );
}

// --- Kubernetes NetworkPolicies (networking.k8s.io/v1), order 1000 in the default tier -------

fn knp(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"namespace": ns, "name": name}, "spec": spec})
}

fn with_knps(mut live: LiveState, knps: Vec<Value>) -> LiveState {
    live.inventory.k8s_network_policies = knps;
    live
}

#[test]
fn k8s_default_deny_denies_pods_in_its_namespace_but_not_host_endpoints() {
    let deny = knp(
        "app",
        "default-deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    // Host endpoints allow everything through a GNP, so only the K8s policy could deny them.
    let hosts = gnp(
        "hosts-allow",
        json!({"order": 2000, "selector": "has(kubernetes.io/hostname)", "types": ["Ingress", "Egress"],
               "ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}),
    );
    let e = engine(&with_knps(small(true, vec![hosts], vec![]), vec![deny]));
    let v = tcp(&e, "other/client", "app/web", 80);
    assert!(!v.allowed);
    assert_eq!(
        decided(&e, &v),
        "end of tier default: no ingress rule matched in NetworkPolicy app/knp.default.default-deny"
    );
    assert!(!tcp(&e, "app/db", "app/web", 80).allowed);
    // Another namespace's pods: not selected, the profile allows.
    assert!(tcp(&e, "app/web", "other/client", 80).allowed);
    // Host endpoints are never selected by a Kubernetes NetworkPolicy.
    let hep = e
        .network
        .side_endpoint(e.network.resolve("n2").unwrap())
        .unwrap();
    let applying: Vec<String> = e
        .applicable_policies(hep, true, false)
        .into_iter()
        .map(|i| e.policies[i].display_name())
        .collect();
    assert_eq!(applying, vec!["GlobalNetworkPolicy/hosts-allow"]);
    assert!(tcp(&e, "n1", "n2", 8080).allowed);
    // Calico's name, tier and order.
    let p = e
        .policies
        .iter()
        .find(|p| p.name == "knp.default.default-deny")
        .unwrap();
    assert_eq!(
        (p.kind, p.namespace.as_deref(), p.tier.as_str(), p.order),
        (PolicyKind::Namespaced, Some("app"), "default", Some(1000.0))
    );
    assert!(p.ingress_type && !p.egress_type);
}

#[test]
fn k8s_namespace_selector_allows_only_pods_of_matching_namespaces() {
    let from_team_a = knp(
        "app",
        "from-team-a",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}),
    );
    let e = engine(&with_knps(small(false, vec![], vec![]), vec![from_team_a]));
    let v = tcp(&e, "app/web", "app/db", 5432);
    assert!(v.allowed);
    assert_eq!(
        decided(&e, &v),
        "NetworkPolicy app/knp.default.from-team-a ingress rule 1 (Allow)"
    );
    assert!(!tcp(&e, "other/client", "app/db", 5432).allowed);
    // A host process is no pod of any namespace.
    assert!(!tcp(&e, "n1", "app/db", 5432).allowed);
    // web is not selected (podSelector app=db).
    assert!(tcp(&e, "other/client", "app/web", 80).allowed);

    // An empty namespaceSelector with a podSelector: those pods in every namespace, still no hosts.
    let any_ns_client = knp(
        "app",
        "clients",
        json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]},
               "ingress": [{"from": [{"namespaceSelector": {},
                                      "podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}}]}]}),
    );
    let e = engine(&with_knps(
        small(false, vec![], vec![]),
        vec![any_ns_client],
    ));
    assert!(tcp(&e, "other/client", "app/db", 5432).allowed);
    assert!(!tcp(&e, "app/web", "app/db", 5432).allowed);
    assert!(!tcp(&e, "n1", "app/db", 5432).allowed);

    // A podSelector alone: pods of the policy's own namespace only.
    let same_ns = knp(
        "app",
        "same-ns",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}]}]}),
    );
    let e = engine(&with_knps(small(false, vec![], vec![]), vec![same_ns]));
    assert!(tcp(&e, "app/web", "app/db", 5432).allowed);
    assert!(!tcp(&e, "other/client", "app/db", 5432).allowed);
}

#[test]
fn k8s_ip_block_with_except() {
    let block = knp(
        "app",
        "block",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.0.3/32"]}}]}]}),
    );
    let e = engine(&with_knps(small(false, vec![], vec![]), vec![block]));
    assert!(
        tcp(&e, "app/web", "app/db", 80).allowed,
        "10.1.0.1 is in the block"
    );
    assert!(
        !tcp(&e, "other/client", "app/db", 80).allowed,
        "10.1.0.3 is excepted"
    );
    assert!(!tcp(&e, "n1", "app/db", 80).allowed, "10.0.0.1 is outside");
    assert!(!tcp(&e, "192.168.7.7", "app/db", 80).allowed);
}

#[test]
fn k8s_named_ports_port_ranges_and_protocols() {
    let ports = knp(
        "app",
        "ports",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"ports": [{"port": "http"}, {"protocol": "TCP", "port": 9000, "endPort": 9010},
                                      {"protocol": "UDP", "port": 53}]}]}),
    );
    let e = engine(&with_knps(small(false, vec![], vec![]), vec![ports]));
    // The pods' container port `http` is tcp/8080.
    assert!(tcp(&e, "app/web", "app/db", 8080).allowed);
    assert!(!tcp(&e, "app/web", "app/db", 80).allowed);
    assert!(!check(&e, "app/web", "app/db", Protocol::UDP, 8080).allowed);
    assert!(tcp(&e, "other/client", "app/db", 9005).allowed);
    assert!(!tcp(&e, "other/client", "app/db", 9011).allowed);
    assert!(check(&e, "app/web", "app/db", Protocol::UDP, 53).allowed);
    assert!(!tcp(&e, "app/web", "app/db", 53).allowed);
}

#[test]
fn k8s_egress_policy_allowing_dns() {
    let mut live = small(false, vec![], vec![]);
    live.inventory.pods.push(pod(
        "kube-system",
        "coredns",
        "n2",
        "10.1.0.9",
        json!({"k8s-app": "kube-dns"}),
    ));
    live.inventory.namespaces.push(namespace(
        "kube-system",
        json!({"kubernetes.io/metadata.name": "kube-system"}),
    ));
    let dns_only = knp(
        "app",
        "dns-only",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                   "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
    );
    let e = engine(&with_knps(live, vec![dns_only]));
    assert!(check(&e, "app/web", "kube-system/coredns", Protocol::UDP, 53).allowed);
    assert!(tcp(&e, "app/web", "kube-system/coredns", 53).allowed);
    assert!(!tcp(&e, "app/web", "kube-system/coredns", 80).allowed);
    let v = tcp(&e, "app/web", "app/db", 80);
    assert!(!v.allowed);
    assert_eq!(v.deciding_hop().unwrap().kind, HopKind::SourceEgress);
    assert!(!tcp(&e, "app/web", "192.168.7.7", 443).allowed);
    // Ingress is not part of the policy: other namespaces still reach app pods.
    assert!(tcp(&e, "other/client", "app/web", 80).allowed);
    // No policyTypes: the API server's default adds Egress because there are egress rules.
    let defaulted = knp(
        "app",
        "defaulted",
        json!({"podSelector": {}, "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}),
    );
    let e = engine(&with_knps(small(false, vec![], vec![]), vec![defaulted]));
    let p = &e.policies[0];
    assert!(p.ingress_type && p.egress_type);
    assert!(
        !tcp(&e, "other/client", "app/web", 80).allowed,
        "ingress: no rules, deny"
    );
    assert!(!tcp(&e, "app/web", "other/client", 80).allowed);
}

#[test]
fn k8s_policies_run_at_order_1000() {
    let allow_db = knp(
        "app",
        "allow-db",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"ports": [{"port": 80}]}]}),
    );
    let deny_at = |order: u32| gnp(&format!("deny-{order}"), deny_all_tcp(order, "app == 'db'"));
    let e = engine(&with_knps(
        small(false, vec![deny_at(1001)], vec![]),
        vec![allow_db.clone()],
    ));
    let v = tcp(&e, "app/web", "app/db", 80);
    assert!(v.allowed);
    assert_eq!(
        decided(&e, &v),
        "NetworkPolicy app/knp.default.allow-db ingress rule 1 (Allow)"
    );
    // Not matched by the K8s rule: the next policy in the tier decides.
    assert_eq!(
        decided(&e, &tcp(&e, "app/web", "app/db", 81)),
        "GlobalNetworkPolicy/deny-1001 ingress rule 1 (Deny)"
    );
    let e = engine(&with_knps(
        small(false, vec![deny_at(500)], vec![]),
        vec![allow_db],
    ));
    let v = tcp(&e, "app/web", "app/db", 80);
    assert!(!v.allowed);
    assert_eq!(
        decided(&e, &v),
        "GlobalNetworkPolicy/deny-500 ingress rule 1 (Deny)"
    );
}

#[test]
fn k8s_policies_are_explained_and_reported() {
    let allow_db = knp(
        "app",
        "allow-db",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    );
    let live = with_knps(small(false, vec![], vec![]), vec![allow_db]);
    let e = engine(&live);
    let v = e.explain(&flow(&e, "app/web", "app/db", Protocol::TCP, 80));
    let ingress = v
        .hops
        .iter()
        .find(|h| h.kind == HopKind::DestinationIngress)
        .unwrap();
    assert_eq!(ingress.trace.len(), 1);
    assert_eq!(
        ingress.trace[0].policy,
        "NetworkPolicy app/knp.default.allow-db"
    );
    assert_eq!(ingress.trace[0].order, Some(1000.0));
    assert!(ingress.trace[0].rules[0].matched);
    let facts = ClusterFacts::tutorial_lab();
    let notes = report::check(&live, &facts, &StageOptions::default(), None).notes;
    assert!(
        !notes
            .iter()
            .any(|n| n.contains("Kubernetes NetworkPolicies")),
        "{notes:?}"
    );
    let mut unread = live.clone();
    unread.inventory.k8s_network_policies = Vec::new();
    unread.inventory.k8s_network_policies_unread = true;
    let notes = report::check(&unread, &facts, &StageOptions::default(), None).notes;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("Kubernetes NetworkPolicies") && n.contains("could not be read")),
        "{notes:?}"
    );
}

// --- Newer releases: tiers from the cluster, WireGuard, VXLAN port, per-node failsafe, flow
// logs, admission webhooks ---------------------------------------------------------------------

/// The tiers calico-apiserver v3.31.0 creates, as the lab lists them.
fn calico_3_31_tiers() -> Vec<Value> {
    vec![
        json!({"metadata": {"name": "adminnetworkpolicy"}, "spec": {"order": 1000.0, "defaultAction": "Pass"}}),
        json!({"metadata": {"name": "baselineadminnetworkpolicy"}, "spec": {"order": 10000000.0, "defaultAction": "Pass"}}),
        json!({"metadata": {"name": "default"}, "spec": {"order": 1000000.0, "defaultAction": "Deny"}}),
    ]
}

#[test]
fn tiers_are_read_from_the_cluster_and_a_pass_tier_passes_at_its_end() {
    let deny_80 = json!({"tier": "adminnetworkpolicy", "order": 10, "selector": "app == 'db'",
                         "types": ["Ingress"],
                         "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [80]}}]});
    let udp_only = json!({"tier": "adminnetworkpolicy", "order": 20, "selector": "app == 'db'",
                          "types": ["Ingress"], "ingress": [{"action": "Allow", "protocol": "UDP"}]});
    let mut live = small(
        false,
        vec![
            gnp("adminnetworkpolicy.deny-80", deny_80),
            gnp("adminnetworkpolicy.udp-only", udp_only),
        ],
        vec![],
    );
    live.inventory.tiers = Some(calico_3_31_tiers());
    let e = engine(&live);
    assert!(
        !e.notes.iter().any(|n| n.contains("tier")),
        "every tier is known: {:?}",
        e.notes
    );
    // The admin tier's Deny wins over the default tier (no policy there: the profile allows).
    let v = tcp(&e, "app/web", "app/db", 80);
    assert!(!v.allowed);
    assert_eq!(
        decided(&e, &v),
        "GlobalNetworkPolicy/adminnetworkpolicy.deny-80 ingress rule 1 (Deny)"
    );
    // No rule matches tcp/22 in the admin tier: its defaultAction Pass hands it on, and the
    // profile allows. A Deny tier would have denied it.
    let v = tcp(&e, "app/web", "app/db", 22);
    assert!(v.allowed, "{}", decided(&e, &v));
    assert_eq!(decided(&e, &v), "profile kns.app (no policy applies)");

    // The same tier with defaultAction Deny (what an assumption of Calico's default would do).
    let mut deny_tiers = calico_3_31_tiers();
    deny_tiers[0]["spec"]["defaultAction"] = json!("Deny");
    live.inventory.tiers = Some(deny_tiers);
    let e = engine(&live);
    let v = tcp(&e, "app/web", "app/db", 22);
    assert!(!v.allowed);
    assert!(
        decided(&e, &v).starts_with("end of tier adminnetworkpolicy"),
        "{}",
        decided(&e, &v)
    );

    // A Pass rule in the admin tier, then the default tier decides.
    let pass_all = json!({"tier": "adminnetworkpolicy", "order": 1, "selector": "app == 'db'",
                          "types": ["Ingress"], "ingress": [{"action": "Pass"}]});
    let mut live = small(
        false,
        vec![
            gnp("adminnetworkpolicy.pass", pass_all),
            gnp("deny-tcp", deny_all_tcp(1, "app == 'db'")),
        ],
        vec![],
    );
    live.inventory.tiers = Some(calico_3_31_tiers());
    let e = engine(&live);
    let v = tcp(&e, "app/web", "app/db", 80);
    assert!(!v.allowed);
    assert_eq!(
        decided(&e, &v),
        "GlobalNetworkPolicy/deny-tcp ingress rule 1 (Deny)"
    );
}

#[test]
fn tier_order_comes_from_the_cluster_not_from_the_name() {
    // A Deny in the baseline tier (order 10,000,000) comes after the default tier: a default-tier
    // Allow wins. Moved in front of default, the same Deny wins.
    let baseline_deny = json!({"tier": "baselineadminnetworkpolicy", "order": 1, "selector": "app == 'db'",
                               "types": ["Ingress"], "ingress": [{"action": "Deny"}]});
    let allow = json!({"order": 1, "selector": "app == 'db'", "types": ["Ingress"],
                       "ingress": [{"action": "Allow", "protocol": "TCP"}]});
    let mut live = small(
        false,
        vec![
            gnp("baselineadminnetworkpolicy.deny", baseline_deny),
            gnp("allow-tcp", allow),
        ],
        vec![],
    );
    live.inventory.tiers = Some(calico_3_31_tiers());
    let e = engine(&live);
    assert!(tcp(&e, "app/web", "app/db", 80).allowed);
    let mut reordered = calico_3_31_tiers();
    reordered[1]["spec"]["order"] = json!(10.0);
    live.inventory.tiers = Some(reordered);
    let e = engine(&live);
    assert!(!tcp(&e, "app/web", "app/db", 80).allowed);

    // Unreadable tiers: Calico's built-in ones are assumed, and the report says so.
    live.inventory.tiers = None;
    let e = engine(&live);
    assert!(tcp(&e, "app/web", "app/db", 80).allowed);
    assert!(
        e.notes
            .iter()
            .any(|n| n.contains("cannot list tiers.projectcalico.org")),
        "{:?}",
        e.notes
    );
}

fn with_felix(mut live: LiveState, spec: Value) -> (LiveState, ClusterFacts) {
    live.inventory.felix_configuration =
        Some(json!({"metadata": {"name": "default"}, "spec": spec}));
    let mut facts = crate::facts::detect(&live.inventory);
    facts.calico_api = crate::facts::CalicoApiMode::AggregatedApiserver;
    (live, facts)
}

fn categories(report: &report::FlowReport, category: FlowCategory) -> Vec<String> {
    report
        .flows
        .iter()
        .filter(|f| f.category == category)
        .map(|f| f.label())
        .collect()
}

#[test]
fn wireguard_flows_appear_when_enabled_and_felix_accepts_them_before_policy() {
    let (live, _) = lab();
    let options = StageOptions::with_defaults();
    let (plain, plain_facts) = with_felix(live.clone(), json!({}));
    let report = report::check(&plain, &plain_facts, &options, None);
    assert!(categories(&report, FlowCategory::Wireguard).is_empty());

    let (live, facts) = with_felix(
        live,
        json!({"wireguardEnabled": true, "wireguardEnabledV6": true}),
    );
    assert_eq!(facts.felix.wireguard_port, Some(51820));
    let hardened = after_up(&live, &facts, &options);
    let report = report::check(&hardened, &facts, &options, Some(StageId::Lockdown));
    let wireguard = categories(&report, FlowCategory::Wireguard);
    // Three IPv4 nodes: a full mesh of udp/51820; no udp/51821 without IPv6 addresses.
    assert_eq!(wireguard.len(), 6, "{wireguard:?}");
    assert!(
        wireguard.iter().all(|l| l.ends_with("udp/51820")),
        "{wireguard:?}"
    );
    let after_lockdown: Vec<_> = report
        .flows
        .iter()
        .filter(|f| f.category == FlowCategory::Wireguard)
        .map(|f| f.after.clone().unwrap())
        .collect();
    assert!(
        after_lockdown
            .iter()
            .all(|d| d.allowed && d.decided_by.contains("WireGuard"))
    );

    // A custom listening port is the one checked.
    let (live, facts) = with_felix(
        plain.clone(),
        json!({"wireguardEnabled": true, "wireguardListeningPort": 51000}),
    );
    let report = report::check(&live, &facts, &options, None);
    assert!(
        categories(&report, FlowCategory::Wireguard)
            .iter()
            .all(|l| l.ends_with("udp/51000"))
    );
}

#[test]
fn encapsulation_follows_felix_vxlan_port_and_the_pools_ipip_mode() {
    let (live, _) = lab();
    let options = StageOptions::with_defaults();
    let (custom, facts) = with_felix(live.clone(), json!({"vxlanPort": 4790}));
    let report = report::check(&custom, &facts, &options, None);
    let encapsulation = categories(&report, FlowCategory::Encapsulation);
    assert_eq!(encapsulation.len(), 6);
    assert!(
        encapsulation.iter().all(|l| l.ends_with("udp/4790")),
        "{encapsulation:?}"
    );
    // Felix accepts its own port before policy, not the default one.
    let e = build::engine(&with_heps(&custom), &facts);
    assert_eq!(
        check(&e, "control", "node1", Protocol::UDP, 4790).hops[0].decider,
        Decider::Tunnel
    );
    assert!(!check(&e, "control", "node1", Protocol::UDP, 4789).allowed);

    // IPIP pools: IP protocol 4, no port, and no VXLAN.
    let mut ipip = live;
    ipip.inventory.ip_pools = Some(vec![
        json!({"spec": {"ipipMode": "Always", "vxlanMode": "Never"}}),
    ]);
    let (ipip, facts) = with_felix(ipip, json!({}));
    let report = report::check(&ipip, &facts, &options, None);
    let encapsulation = categories(&report, FlowCategory::Encapsulation);
    assert_eq!(encapsulation.len(), 6);
    assert!(
        encapsulation.iter().all(|l| l.ends_with(" ipip")),
        "{encapsulation:?}"
    );
    assert!(
        report
            .flows
            .iter()
            .filter(|f| f.category == FlowCategory::Encapsulation)
            .all(|f| f.protocol == "ipip")
    );
}

/// Every node with a host endpoint that has no policy and no profile: only failsafe and tunnel
/// traffic passes.
fn with_heps(live: &LiveState) -> LiveState {
    let mut live = live.clone();
    live.inventory.host_endpoints = live.inventory.nodes.iter().map(|n| hep(n, &[])).collect();
    live
}

#[test]
fn a_per_node_felix_configuration_overrides_the_default_failsafe_ports() {
    let mut live = with_heps(&small(false, vec![], vec![]));
    live.inventory.felix_node_configurations = vec![json!({
        "metadata": {"name": "node.n1"},
        "spec": {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 22}]}
    })];
    let facts = crate::facts::detect(&live.inventory);
    assert_eq!(facts.failsafe_on("n1").inbound, vec!["tcp:22".to_string()]);
    assert!(
        facts
            .failsafe_on("n1")
            .outbound
            .contains(&"tcp:6443".to_string()),
        "the outbound ports stay the default's"
    );
    assert!(facts.failsafe_on("n2").inbound_allows_tcp(6443));
    let e = build::engine(&live, &facts);
    let v = tcp(&e, "n2", "n1", 6443);
    assert!(!v.allowed, "n1's own set has no tcp:6443");
    assert_eq!(v.hops[1].kind, HopKind::DestinationIngress);
    let v = tcp(&e, "n1", "n2", 6443);
    assert!(v.allowed, "n2 runs with the default set");
    assert_eq!(decided(&e, &v), "failsafe inbound port tcp:6443");
}

fn with_pods(mut live: LiveState, extra: Vec<Value>) -> (LiveState, ClusterFacts) {
    live.inventory.pods.extend(extra);
    live.inventory.system_pods = live
        .inventory
        .pods
        .iter()
        .filter(|p| crate::facts::is_system_pod(p))
        .cloned()
        .collect();
    let mut facts = crate::facts::detect(&live.inventory);
    facts.calico_api = crate::facts::CalicoApiMode::AggregatedApiserver;
    (live, facts)
}

#[test]
fn flow_log_paths_appear_only_where_goldmane_and_whisker_run() {
    let (live, facts) = lab();
    let options = StageOptions::with_defaults();
    let report = report::check(&live, &facts, &options, None);
    for category in [
        FlowCategory::NodesToGoldmane,
        FlowCategory::WhiskerToGoldmane,
        FlowCategory::NodesToDns,
    ] {
        assert!(categories(&report, category).is_empty(), "{category:?}");
    }
    let mut goldmane = pod(
        "calico-system",
        "goldmane-a",
        "node2",
        "10.0.102.9",
        json!({"k8s-app": "goldmane"}),
    );
    goldmane["spec"]["containers"][0]["ports"] =
        json!([{"name": "grpc", "containerPort": 7443, "protocol": "TCP"}]);
    let whisker = pod(
        "calico-system",
        "whisker-a",
        "node1",
        "10.0.101.9",
        json!({"k8s-app": "whisker"}),
    );
    let (live, facts) = with_pods(live, vec![goldmane, whisker]);
    assert_eq!(
        facts.observability.goldmane_pods,
        ["calico-system/goldmane-a"]
    );
    let report = report::check(&live, &facts, &options, None);
    assert_eq!(
        categories(&report, FlowCategory::NodesToGoldmane),
        [
            "control -> calico-system/goldmane-a tcp/7443",
            "node1 -> calico-system/goldmane-a tcp/7443",
            "node2 -> calico-system/goldmane-a tcp/7443",
        ]
    );
    assert_eq!(
        categories(&report, FlowCategory::WhiskerToGoldmane),
        ["calico-system/whisker-a -> calico-system/goldmane-a tcp/7443"]
    );
    // Felix dials Goldmane by name from every node; Whisker's backend too.
    assert_eq!(
        categories(&report, FlowCategory::NodesToDns).len(),
        3 * 2 * 2
    );
    assert!(
        categories(&report, FlowCategory::PodsToDns)
            .iter()
            .any(|l| l.starts_with("calico-system/whisker-a -> "))
    );
    assert!(
        report.denied_in_the_end().next().is_none(),
        "a fresh cluster allows them"
    );
}

/// A Calico 3.32-style admission webhook: Service calico-system/calico-webhooks, served on 6443
/// by the calico-apiserver pods.
fn with_webhook(live: &LiveState, failure_policy: &str) -> (LiveState, ClusterFacts) {
    let mut live = live.clone();
    live.inventory.validating_webhooks = Some(vec![json!({
        "metadata": {"name": "projectcalico.org"},
        "webhooks": [{"name": "validate.projectcalico.org", "failurePolicy": failure_policy,
                      "clientConfig": {"service": {"namespace": "calico-system", "name": "calico-webhooks", "port": 443}}},
                     {"name": "unrelated.example.com",
                      "clientConfig": {"service": {"namespace": "other", "name": "x"}}}]
    })]);
    let addresses: Vec<String> = live
        .inventory
        .pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["k8s-app"] == "calico-apiserver")
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    live.inventory.webhook_endpoint_slices = vec![json!({
        "metadata": {"namespace": "calico-system", "name": "calico-webhooks-abc",
                     "labels": {"kubernetes.io/service-name": "calico-webhooks"}},
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
        "endpoints": [{"addresses": addresses, "conditions": {"ready": true}}]
    })];
    let mut facts = crate::facts::detect(&live.inventory);
    facts.calico_api = crate::facts::CalicoApiMode::AggregatedApiserver;
    (live, facts)
}

#[test]
fn admission_webhooks_that_fail_closed_are_critical_and_lockdown_refuses_to_cut_them() {
    let (live, _) = lab();
    let options = StageOptions::with_defaults();
    let (live_fail, facts) = with_webhook(&live, "Fail");
    let webhooks = facts.admission_webhooks.as_ref().unwrap();
    assert_eq!(
        webhooks.len(),
        1,
        "only the one in a Calico namespace: {webhooks:?}"
    );
    assert!(webhooks[0].fails_closed);
    let report = report::check(&live_fail, &facts, &options, None);
    assert_eq!(
        categories(&report, FlowCategory::ApiserverToAdmissionWebhooks),
        [
            "control -> calico-apiserver/calico-apiserver-a tcp/6443",
            "control -> calico-apiserver/calico-apiserver-b tcp/6443",
        ]
    );
    // Calico's stages leave the calico-apiserver pods to their profile, and the API server's
    // egress on 6443 is failsafe: the webhook survives lockdown.
    let hardened = after_up(&live_fail, &facts, &options);
    let report = report::check(&hardened, &facts, &options, Some(StageId::Lockdown));
    assert_eq!(report.lost().count(), 0);
    // An operator who let the calico-apiserver pods accept their API port only: with the safety
    // net the webhook is still reached, without it not (lockdown's preflight refuses).
    let mut hardened = hardened;
    hardened.global_network_policies.push(gnp(
        "calico-apiserver-ingress",
        json!({"order": 500, "selector": "k8s-app == 'calico-apiserver'", "types": ["Ingress"],
               "ingress": [{"action": "Allow", "protocol": "TCP",
                            "destination": {"ports": [facts.calico_apiserver_port]}}]}),
    ));
    let report = report::check(&hardened, &facts, &options, Some(StageId::Lockdown));
    let lost: Vec<_> = report
        .lost()
        .filter(|f| f.category == FlowCategory::ApiserverToAdmissionWebhooks)
        .collect();
    assert_eq!(
        lost.len(),
        2,
        "{:?}",
        lost.iter().map(|f| f.label()).collect::<Vec<_>>()
    );
    assert!(
        lost[0]
            .after
            .as_ref()
            .unwrap()
            .decided_by
            .contains("end of tier default"),
        "{:?}",
        lost[0].after
    );
    // The API server's own port on those pods stays allowed.
    assert!(
        report
            .flows
            .iter()
            .filter(|f| f.category == FlowCategory::ApiserverToCalicoApiserver)
            .all(|f| !f.denied_in_the_end())
    );

    // failurePolicy Ignore: writes go on without it, so it is not a critical flow.
    let (live_ignore, facts) = with_webhook(&live, "Ignore");
    let report = report::check(&live_ignore, &facts, &options, None);
    assert!(categories(&report, FlowCategory::ApiserverToAdmissionWebhooks).is_empty());
    assert!(!facts.admission_webhooks.unwrap()[0].fails_closed);
}
