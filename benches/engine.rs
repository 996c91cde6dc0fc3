//! The critical-flow matrix on a synthetic cluster: 2,000 nodes (3 control-plane, 3 typha), 20,000
//! pods in 100 namespaces, 1,000 policies (the stages' own plus namespaced app policies and
//! host policies), every node with its host endpoint (the lockdown state).
//!
//! `full` builds the engine from the JSON inventory, generates the flows and evaluates them all;
//! `evaluate` only evaluates (engine and flows prebuilt). The scaling groups vary one dimension
//! at a time around the target. Run: `cargo bench --bench engine`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

use kubectl_calico_harden::engine::{self, build, critical_flows};
use kubectl_calico_harden::facts::{self, CalicoApiMode, ClusterFacts};
use kubectl_calico_harden::live::LiveState;
use kubectl_calico_harden::stages::{self, StageId, StageOptions, StageRender};

const NAMESPACES: usize = 100;
const APPS_PER_NAMESPACE: usize = 10;

struct Size {
    nodes: usize,
    pods: usize,
    policies: usize,
}

const TARGET: Size = Size {
    nodes: 2_000,
    pods: 20_000,
    policies: 1_000,
};

fn node_ip(i: usize) -> String {
    format!("10.200.{}.{}", i / 256, i % 256)
}

fn pod_ip(i: usize) -> String {
    format!("172.{}.{}.{}", 16 + i / 65_536, (i / 256) % 256, i % 256)
}

fn node(i: usize, control: bool) -> Value {
    let name = format!("node-{i:05}");
    let mut labels = json!({"kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
                            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)});
    if control {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    json!({"metadata": {"name": name, "labels": labels},
           "status": {"addresses": [{"type": "InternalIP", "address": node_ip(i)}]}})
}

fn pod(i: usize, ns: &str, name: String, node: usize, labels: Value, host_network: bool) -> Value {
    json!({"metadata": {"namespace": ns, "name": name, "labels": labels},
           "spec": {"nodeName": format!("node-{node:05}"), "hostNetwork": host_network,
                    "serviceAccountName": "default",
                    "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
           "status": {"phase": "Running", "podIP": pod_ip(i), "podIPs": [{"ip": pod_ip(i)}]}})
}

fn cluster(size: &Size) -> (LiveState, ClusterFacts) {
    let mut live = LiveState::default();
    let inv = &mut live.inventory;
    inv.nodes = (0..size.nodes).map(|i| node(i, i < 3)).collect();
    inv.namespaces = (0..NAMESPACES)
        .map(|j| json!({"metadata": {"name": format!("ns-{j:03}"), "labels": {"team": format!("team-{}", j % 10)}}}))
        .chain(["kube-system", "calico-system"].map(|n| json!({"metadata": {"name": n}})))
        .collect();
    let mut pods = vec![
        pod(
            size.pods,
            "kube-system",
            "coredns-a".into(),
            0,
            json!({"k8s-app": "kube-dns"}),
            false,
        ),
        pod(
            size.pods + 1,
            "kube-system",
            "coredns-b".into(),
            1,
            json!({"k8s-app": "kube-dns"}),
            false,
        ),
        pod(
            size.pods + 2,
            "calico-system",
            "calico-kube-controllers-a".into(),
            0,
            json!({"k8s-app": "calico-kube-controllers"}),
            false,
        ),
    ];
    for t in 0..3 {
        pods.push(pod(
            0,
            "calico-system",
            format!("calico-typha-{t}"),
            3 + t,
            json!({"k8s-app": "calico-typha"}),
            true,
        ));
    }
    for n in 0..size.nodes {
        pods.push(pod(
            0,
            "calico-system",
            format!("calico-node-{n}"),
            n,
            json!({"k8s-app": "calico-node"}),
            true,
        ));
    }
    let app_pods = size.pods.saturating_sub(3);
    for i in 0..app_pods {
        let ns = format!("ns-{:03}", i % NAMESPACES);
        let app = format!("app-{}", (i / NAMESPACES) % APPS_PER_NAMESPACE);
        let labels = json!({"app": app, "tier": if i % 2 == 0 { "web" } else { "backend" }});
        pods.push(pod(
            i,
            &ns,
            format!("{app}-{i}"),
            i % size.nodes,
            labels,
            false,
        ));
    }
    inv.system_pods = pods
        .iter()
        .filter(|p| facts::is_system_pod(p))
        .cloned()
        .collect();
    inv.pods = pods.into();
    inv.apiserver_endpoint_slices = vec![
        json!({"endpoints": [{"addresses": [node_ip(0)]}], "ports": [{"name": "https", "port": 6443}]}),
    ];
    inv.ip_pools = Some(vec![json!({"spec": {"vxlanMode": "Always"}})]);
    let mut facts = facts::detect(inv);
    facts.calico_api = CalicoApiMode::AggregatedApiserver;

    let options = StageOptions::with_defaults();
    for stage in StageId::policy_stages().filter(|s| *s != StageId::SafetyNet) {
        if let StageRender::Objects(objects) = stages::render(stage, &facts, &options) {
            for o in objects {
                if o.namespace.is_some() {
                    live.network_policies.push(o.manifest);
                } else {
                    live.global_network_policies.push(o.manifest);
                }
            }
        }
    }
    let rendered = live.network_policies.len() + live.global_network_policies.len();
    let extra = size.policies.saturating_sub(rendered);
    let host_policies = extra / 10;
    for k in 0..host_policies {
        let hosts: Vec<String> = (0..5)
            .map(|h| format!("\"node-{:05}\"", (k * 5 + h) % size.nodes.max(1)))
            .collect();
        live.global_network_policies.push(json!({"metadata": {"name": format!("hosts-{k:04}")}, "spec": {
            "order": 500 + k, "selector": format!("has(kubernetes.io/os) && kubernetes.io/hostname in {{{}}}", hosts.join(",")),
            "types": ["Ingress", "Egress"],
            "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"nets": ["10.200.0.0/16"]}, "destination": {"ports": ["9000:9100"]}}],
            "egress": [{"action": "Allow", "protocol": "UDP", "destination": {"notNets": ["10.0.0.0/8"], "ports": [123]}}]}}));
    }
    for k in 0..extra - host_policies {
        let ns = format!("ns-{:03}", k % NAMESPACES);
        let app = format!("app-{}", (k / NAMESPACES) % APPS_PER_NAMESPACE);
        let peer = format!("app-{}", (k / NAMESPACES + 1) % APPS_PER_NAMESPACE);
        live.network_policies.push(json!({"metadata": {"namespace": ns, "name": format!("{app}-{k}")}, "spec": {
            "order": 100 + k % 50, "selector": format!("app == \"{app}\""),
            "types": ["Ingress", "Egress"],
            "ingress": [
                {"action": "Allow", "protocol": "TCP", "source": {"selector": format!("app == \"{peer}\"")}, "destination": {"ports": ["http"]}},
                {"action": "Allow", "protocol": "TCP", "source": {"namespaceSelector": "team == \"team-1\""}, "destination": {"ports": [8443]}}],
            "egress": [
                {"action": "Allow", "protocol": "UDP", "destination": {"selector": "k8s-app == \"kube-dns\"", "namespaceSelector": "projectcalico.org/name == \"kube-system\"", "ports": [53]}},
                {"action": "Allow", "protocol": "TCP", "destination": {"selector": format!("app == \"{peer}\""), "ports": [8080]}}]}}));
    }
    // The lockdown state: no safety net, a host endpoint per node.
    let state = engine::state_after(&live, &facts, &options, Some(StageId::Lockdown));
    (state, facts)
}

fn full(live: &LiveState, facts: &ClusterFacts) -> usize {
    let engine = build::engine(live, facts);
    let flows = critical_flows(&engine, facts);
    flows
        .iter()
        .filter(|f| engine.evaluate(&f.flow).allowed)
        .count()
}

fn configure() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
}

fn target(c: &mut Criterion) {
    let (live, facts) = cluster(&TARGET);
    let engine = build::engine(&live, &facts);
    let flows = critical_flows(&engine, &facts);
    eprintln!(
        "target: {} nodes, {} endpoints, {} policies, {} critical flows",
        engine.network.nodes.len(),
        engine.network.endpoints.len(),
        engine.policies.len(),
        flows.len()
    );
    let mut group = c.benchmark_group("matrix");
    group.bench_function("full", |b| b.iter(|| full(&live, &facts)));
    group.bench_function("build", |b| {
        b.iter(|| build::engine(&live, &facts).policies.len())
    });
    group.bench_function("evaluate", |b| {
        b.iter(|| {
            flows
                .iter()
                .filter(|f| engine.evaluate(&f.flow).allowed)
                .count()
        })
    });
    group.finish();
}

/// A dimension to scale: its name, the size with that dimension set, and the values to try.
type Dimension = (&'static str, fn(usize) -> Size, [usize; 2]);

fn scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("scaling");
    let dims: [Dimension; 3] = [
        ("nodes", |n| Size { nodes: n, ..TARGET }, [1_000, 4_000]),
        ("pods", |n| Size { pods: n, ..TARGET }, [10_000, 40_000]),
        (
            "policies",
            |n| Size {
                policies: n,
                ..TARGET
            },
            [500, 2_000],
        ),
    ];
    for (name, size_of, values) in dims {
        for value in values {
            let (live, facts) = cluster(&size_of(value));
            group.bench_with_input(BenchmarkId::new(name, value), &value, |b, _| {
                b.iter(|| full(&live, &facts))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = configure();
    targets = target, scaling
}
criterion_main!(benches);
