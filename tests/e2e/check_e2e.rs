//! `check`, `explain` and lockdown's critical-flow preflight through the real binary on the lab
//! seed.
//!
//! The lab has a real cluster's addresses (nodes 10.0.0.x, pods 192.168.0.0/16, the API server
//! published at 10.0.0.1:6443), so every verdict depends on the policies that select the flow,
//! not on the localhost stage.

use serde_json::Value;

use crate::harness::{self, ClusterGuard, Seed};
use crate::stages_e2e::calico_harden;

fn check_json(c: &ClusterGuard, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["check", "-o", "json"];
    full.extend_from_slice(args);
    let run = calico_harden(c, &full);
    let report = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr));
    (run.code, report)
}

fn harden(c: &ClusterGuard) {
    for args in [
        &["safety-net", "--yes"][..],
        &["up", "--yes"][..],
        &["enable-hep", "--wait", "--yes"][..],
    ] {
        let run = calico_harden(c, args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
}

fn delete_gnp(c: &ClusterGuard, name: &str) {
    c.kubectl_ok(&["delete", "globalnetworkpolicies.projectcalico.org", name]);
}

#[test]
fn fresh_lab_allows_every_critical_flow() {
    let c = harness::cluster(Seed::Lab);
    let run = calico_harden(&c, &["check"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("API server -> kubelet"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("control -> node1 tcp/10250"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("every critical flow is allowed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("NEW connections"),
        "the conntrack note: {}",
        run.stderr
    );

    let (code, report) = check_json(&c, &[]);
    assert_eq!(code, 0);
    let flows = report["flows"].as_array().unwrap();
    assert!(flows.len() > 20, "{}", flows.len());
    // The flows a lockout is made of, on the lab's real ports.
    for port in ["tcp/6443", "tcp/10250", "tcp/5473", "udp/53", "tcp/53"] {
        assert!(
            flows.iter().any(|f| f["protocol"] == port),
            "no {port} flow in {flows:?}"
        );
    }
    for f in flows {
        assert_eq!(f["now"]["allowed"], true, "{f}");
        assert!(f["after"].is_null());
    }
    // Nothing was written by a check.
    let mark = c.audit_mark();
    calico_harden(&c, &["check", "--after", "lockdown"]);
    assert!(c.writes_since(&mark).is_empty());
}

#[test]
fn hardened_lab_passes_check_after_lockdown_and_explain_names_the_kubelet_policy() {
    let c = harness::cluster(Seed::Lab);
    harden(&c);
    let run = calico_harden(&c, &["check", "--after", "lockdown"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("no critical flow is lost"),
        "{}",
        run.stderr
    );

    let run = calico_harden(&c, &["explain", "control", "node1", "tcp/10250"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("kapi-to-kubelet"), "{}", run.stdout);
    assert!(run.stdout.contains("ALLOWED"), "{}", run.stdout);

    // The kubelet's flow is decided by its own policy on both sides.
    let run = calico_harden(
        &c,
        &[
            "explain",
            "control",
            "node1",
            "tcp/10250",
            "--after",
            "lockdown",
            "-o",
            "json",
        ],
    );
    let explanation: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(explanation["allowed"], true);
    let decided: Vec<&str> = explanation["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["decided_by"].as_str().unwrap())
        .collect();
    assert_eq!(decided.len(), 2, "{decided:?}");
    assert!(
        decided.iter().all(|d| d.contains("kapi-to-kubelet")),
        "{decided:?}"
    );

    let run = calico_harden(&c, &["explain", "no-such-node", "node1", "tcp/10250"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn without_the_kubelet_stage_check_and_lockdown_name_kubelet() {
    let c = harness::cluster(Seed::Lab);
    harden(&c);
    delete_gnp(&c, "kapi-to-kubelet");

    let run = calico_harden(&c, &["check", "--after", "lockdown"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("would be lost"), "{}", run.stderr);
    assert!(
        run.stderr.contains("kubelet") && run.stderr.contains("tcp/10250"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("end of tier default"), "{}", run.stdout);

    let (code, report) = check_json(&c, &["--after", "lockdown"]);
    assert_eq!(code, 1);
    let lost: Vec<&Value> = report["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["now"]["allowed"] == true && f["after"]["allowed"] == false)
        .collect();
    assert!(!lost.is_empty());
    assert!(
        lost.iter()
            .any(|f| f["category"] == "apiserver-to-kubelet" && f["protocol"] == "tcp/10250"),
        "{lost:?}"
    );

    let mark = c.audit_mark();
    let run = calico_harden(&c, &["lockdown", "--yes"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("lockdown refused"), "{}", run.stderr);
    assert!(run.stderr.contains("critical flows"), "{}", run.stderr);
    assert!(run.stderr.contains("tcp/10250"), "{}", run.stderr);
    assert!(
        c.writes_since(&mark).is_empty(),
        "a refused lockdown writes nothing"
    );

    let run = calico_harden(
        &c,
        &[
            "explain",
            "control",
            "node1",
            "tcp/10250",
            "--after",
            "lockdown",
        ],
    );
    assert!(run.stdout.contains("DENIED"), "{}", run.stdout);
}

#[test]
fn without_controllers_to_kapi_the_controllers_lose_the_api_server() {
    let c = harness::cluster(Seed::Lab);
    harden(&c);
    c.kubectl_ok(&[
        "delete",
        "networkpolicies.projectcalico.org",
        "-n",
        "calico-system",
        "calico-kube-controllers-to-kapi",
    ]);
    let run = calico_harden(&c, &["check", "--after", "lockdown"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("Calico pods -> API server"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("calico-kube-controllers"),
        "{}",
        run.stderr
    );
}
