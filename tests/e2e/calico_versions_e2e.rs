//! What newer Calico releases add, through the real binary on the lab (the real calico-apiserver
//! and calico-kube-controllers v3.31.0): the Calico version and skew in `plan`, WireGuard and the
//! VXLAN port from FelixConfiguration in `check`, tiers read from the cluster (Calico's own
//! `adminnetworkpolicy` tier with defaultAction Pass), per-node failsafe ports and Calico's
//! admission webhooks in lockdown's preflight.

use serde_json::{Value, json};

use crate::harness::{self, ClusterGuard, Seed};
use crate::stages_e2e::{Run, calico_harden};

fn check_json(c: &ClusterGuard) -> (i32, Value) {
    let run = calico_harden(c, &["check", "-o", "json"]);
    let report = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr));
    (run.code, report)
}

fn flows_of<'a>(report: &'a Value, category: &str) -> Vec<&'a Value> {
    report["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter(|f| f["category"] == category)
        .collect()
}

fn succeed(run: Run, what: &str) -> Run {
    assert_eq!(
        run.code, 0,
        "{what}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

fn create(c: &ClusterGuard, object: &Value) {
    c.kubectl_stdin_ok(&["create", "-f", "-"], &object.to_string());
}

fn harden(c: &ClusterGuard) {
    for args in [
        &["up", "--yes"][..],
        &["enable-hep", "--wait", "--yes", "--timeout", "30s"][..],
    ] {
        succeed(calico_harden(c, args), &format!("{args:?}"));
    }
}

#[test]
fn plan_shows_the_calico_version_and_the_skew_from_the_cluster() {
    let c = harness::cluster(Seed::Lab);
    let plan = succeed(calico_harden(&c, &["plan"]), "plan");
    // calico-apiserver serves ClusterInformation `default` as calico-node wrote it.
    assert!(
        plan.stdout
            .contains("calico version:      v3.31.0 (from ClusterInformation default)"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(
            "version skew:        none (calico-kube-controllers and calico-node both v3.31.0)"
        ),
        "{}",
        plan.stdout
    );
    // No operator CRDs in the lab: the Installation is simply absent, not an error.
    assert!(!plan.stderr.contains("installations"), "{}", plan.stderr);
    let json = succeed(calico_harden(&c, &["plan", "-o", "json"]), "plan -o json");
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    let facts = &report["facts"];
    assert_eq!(facts["versions"]["cluster_information"], "v3.31.0");
    assert_eq!(facts["versions"]["operator"], Value::Null);
    assert_eq!(facts["calico_node_version"], "v3.31.0");
    assert_eq!(facts["kube_controllers_version"], "v3.31.0");
}

#[test]
fn wireguard_and_the_vxlan_port_come_from_felix_configuration() {
    let c = harness::cluster(Seed::Lab);
    let (code, report) = check_json(&c);
    assert_eq!(code, 0, "{report}");
    assert!(flows_of(&report, "wireguard").is_empty());
    let encapsulation = flows_of(&report, "encapsulation");
    assert_eq!(encapsulation.len(), 6, "the pool is VXLAN CrossSubnet");
    assert!(encapsulation.iter().all(|f| f["protocol"] == "udp/4789"));

    // calico-apiserver validates and stores the change; Felix would then accept both before policy.
    c.kubectl_ok(&[
        "patch",
        "felixconfigurations.projectcalico.org",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec": {"wireguardEnabled": true, "vxlanPort": 4790}}"#,
    ]);
    let (code, report) = check_json(&c);
    assert_eq!(code, 0, "{report}");
    let wireguard = flows_of(&report, "wireguard");
    assert_eq!(
        wireguard.len(),
        6,
        "a full mesh of the three nodes: {wireguard:?}"
    );
    for flow in &wireguard {
        assert_eq!(flow["protocol"], "udp/51820");
        assert_eq!(flow["title"], "WireGuard between nodes");
    }
    assert!(
        flows_of(&report, "encapsulation")
            .iter()
            .all(|f| f["protocol"] == "udp/4790"),
        "{report}"
    );

    // After hardening and lockdown Felix still accepts them before host endpoint policy.
    harden(&c);
    let run = calico_harden(&c, &["check", "--after", "lockdown", "-o", "json"]);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    for flow in flows_of(&report, "wireguard") {
        assert_eq!(flow["after"]["allowed"], true, "{flow}");
        assert!(
            flow["after"]["decided_by"]
                .as_str()
                .unwrap()
                .contains("WireGuard"),
            "{flow}"
        );
    }
}

#[test]
fn a_policy_in_calicos_adminnetworkpolicy_tier_decides_before_the_default_tier() {
    let c = harness::cluster(Seed::Lab);
    let dns_udp = |report: &Value| -> Vec<Value> {
        flows_of(report, "pods-to-dns")
            .into_iter()
            .filter(|f| f["protocol"] == "udp/53")
            .cloned()
            .collect()
    };
    let tcp_only = |name: &str, tier: Option<&str>| {
        let mut spec = json!({"order": 10, "selector": "k8s-app == 'kube-dns'", "types": ["Ingress"],
                              "ingress": [{"action": "Allow", "protocol": "TCP"}]});
        if let Some(tier) = tier {
            spec["tier"] = json!(tier);
        }
        json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
               "metadata": {"name": name}, "spec": spec})
    };

    // The real adminnetworkpolicy tier has defaultAction Pass: a policy there that matches
    // nothing for UDP hands the flow on to the default tier, where no policy applies.
    create(
        &c,
        &tcp_only(
            "adminnetworkpolicy.dns-tcp-only",
            Some("adminnetworkpolicy"),
        ),
    );
    let (code, report) = check_json(&c);
    assert_eq!(code, 0, "{report}");
    let udp = dns_udp(&report);
    assert!(!udp.is_empty());
    assert!(udp.iter().all(|f| f["now"]["allowed"] == true), "{udp:?}");
    let notes = report["notes"].to_string();
    assert!(!notes.contains("order is unknown"), "{notes}");

    // The same policy in the default tier (defaultAction Deny) ends the tier in deny.
    create(&c, &tcp_only("dns-tcp-only", None));
    let (code, report) = check_json(&c);
    assert_eq!(code, 1);
    for flow in dns_udp(&report) {
        assert_eq!(flow["now"]["allowed"], false, "{flow}");
        assert!(
            flow["now"]["decided_by"]
                .as_str()
                .unwrap()
                .starts_with("end of tier default"),
            "{flow}"
        );
    }

    // A Deny in the admin tier decides before an Allow in the default tier.
    c.kubectl_ok(&[
        "delete",
        "globalnetworkpolicies.projectcalico.org",
        "dns-tcp-only",
    ]);
    create(
        &c,
        &json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": "allow-dns"},
                "spec": {"order": 1, "selector": "k8s-app == 'kube-dns'", "types": ["Ingress"],
                         "ingress": [{"action": "Allow"}]}}),
    );
    create(
        &c,
        &json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": "adminnetworkpolicy.deny-dns-tcp"},
                "spec": {"tier": "adminnetworkpolicy", "order": 1, "selector": "k8s-app == 'kube-dns'",
                         "types": ["Ingress"],
                         "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [53]}}]}}),
    );
    let (code, report) = check_json(&c);
    assert_eq!(code, 1);
    let tcp: Vec<&Value> = flows_of(&report, "pods-to-dns")
        .into_iter()
        .filter(|f| f["protocol"] == "tcp/53")
        .collect();
    assert!(!tcp.is_empty());
    for flow in tcp {
        assert_eq!(flow["now"]["allowed"], false, "{flow}");
        assert_eq!(
            flow["now"]["decided_by"],
            "GlobalNetworkPolicy/adminnetworkpolicy.deny-dns-tcp ingress rule 1 (Deny)"
        );
    }
    for flow in dns_udp(&report) {
        assert_eq!(flow["now"]["allowed"], true, "{flow}");
    }
}

#[test]
fn a_per_node_felix_configuration_narrowing_failsafe_ports_makes_lockdown_refuse_naming_the_node() {
    let c = harness::cluster(Seed::Lab);
    harden(&c);
    // node1 runs typha; its own FelixConfiguration keeps only SSH as a failsafe inbound port.
    create(
        &c,
        &json!({"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
                "metadata": {"name": "node.node1"},
                "spec": {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 22}]}}),
    );
    let mark = c.audit_mark();
    let refused = calico_harden(&c, &["lockdown", "--yes"]);
    assert_ne!(refused.code, 0, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(
            "failsafe ports: node node1 (FelixConfiguration node.node1) lacks inbound tcp:5473 (typha)"
        ),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("failsafe ports"),
        "only the failsafe check fails: {}",
        refused.stderr
    );
    assert!(c.writes_since(&mark).is_empty(), "a refusal writes nothing");

    // Without the override the node runs with the default set again, and lockdown goes through.
    c.kubectl_ok(&[
        "delete",
        "felixconfigurations.projectcalico.org",
        "node.node1",
    ]);
    let locked = succeed(calico_harden(&c, &["lockdown", "--yes"]), "lockdown");
    assert!(
        locked.stdout.contains("ok   failsafe ports")
            || locked.stderr.contains("ok   failsafe ports"),
        "{}\n{}",
        locked.stdout,
        locked.stderr
    );
}

/// A ValidatingWebhookConfiguration as Calico 3.32 installs one (failurePolicy Fail, a Service in
/// calico-system served on 6443 by Calico's pods), removed again when the test ends: the lab's
/// reset leaves admission objects alone. Its rules match a resource nobody writes, so the
/// unreachable Service never fails a request here.
struct Webhook<'a> {
    cluster: &'a ClusterGuard,
}

const WEBHOOK_NAME: &str = "calico-harden-test-webhooks";

impl<'a> Webhook<'a> {
    fn install(cluster: &'a ClusterGuard, endpoints: &[&str]) -> Self {
        let guard = Webhook { cluster };
        guard.remove();
        create(
            cluster,
            &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": WEBHOOK_NAME, "namespace": "calico-system",
                                 "labels": {"kubernetes.io/service-name": WEBHOOK_NAME}},
                    "addressType": "IPv4",
                    "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
                    "endpoints": endpoints.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>()}),
        );
        create(
            cluster,
            &json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                    "metadata": {"name": WEBHOOK_NAME},
                    "webhooks": [{"name": "validate.calico-harden-test.example.com",
                                  "failurePolicy": "Fail", "sideEffects": "None",
                                  "admissionReviewVersions": ["v1"],
                                  "clientConfig": {"service": {"namespace": "calico-system", "name": WEBHOOK_NAME, "port": 443}},
                                  "rules": [{"apiGroups": ["calico-harden-test.example.com"], "apiVersions": ["v1"],
                                             "operations": ["CREATE"], "resources": ["nothings"]}]}]}),
        );
        guard
    }

    fn remove(&self) {
        let _ = self.cluster.kubectl(&[
            "delete",
            "validatingwebhookconfigurations",
            WEBHOOK_NAME,
            "--ignore-not-found",
        ]);
        let _ = self.cluster.kubectl(&[
            "delete",
            "endpointslices",
            "-n",
            "calico-system",
            WEBHOOK_NAME,
            "--ignore-not-found",
        ]);
    }
}

impl Drop for Webhook<'_> {
    fn drop(&mut self) {
        self.remove();
    }
}

#[test]
fn lockdown_refuses_when_the_api_server_would_lose_calicos_admission_webhooks() {
    let c = harness::cluster(Seed::Lab);
    // Served by the calico-apiserver pods (192.168.1.3 on node1, 192.168.2.2 on node2) on 6443.
    let _webhook = Webhook::install(&c, &["192.168.1.3", "192.168.2.2"]);
    let (code, report) = check_json(&c);
    assert_eq!(code, 0, "{report}");
    let webhooks = flows_of(&report, "apiserver-to-admission-webhooks");
    let paths: Vec<String> = webhooks
        .iter()
        .map(|f| {
            format!(
                "{} -> {} {}",
                f["source"].as_str().unwrap(),
                f["destination"].as_str().unwrap(),
                f["protocol"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            "control -> calico-apiserver/calico-apiserver-84d5b8c6f9-gq7vn tcp/6443",
            "control -> calico-apiserver/calico-apiserver-84d5b8c6f9-w2rkd tcp/6443",
        ]
    );

    harden(&c);
    // Calico's stages leave those pods to their profile and the API server's egress on 6443 is
    // failsafe: the webhook survives lockdown.
    let run = calico_harden(&c, &["check", "--after", "lockdown", "-o", "json"]);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    for flow in flows_of(&report, "apiserver-to-admission-webhooks") {
        assert_eq!(flow["after"]["allowed"], true, "{flow}");
    }
    // An operator lets the calico-apiserver pods accept their API port only: the safety net still
    // lets the webhook through, lockdown would not.
    create(
        &c,
        &json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": "calico-apiserver-ingress"},
                "spec": {"order": 500, "selector": "k8s-app == 'calico-apiserver'", "types": ["Ingress"],
                         "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [5443]}}]}}),
    );
    let mark = c.audit_mark();
    let refused = calico_harden(&c, &["lockdown", "--yes"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains(&format!(
            "admission webhooks: {WEBHOOK_NAME}/validate.calico-harden-test.example.com (failurePolicy Fail) would be unreachable after lockdown"
        )),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("restoring the safety net included"),
        "{}",
        refused.stderr
    );
    assert!(c.writes_since(&mark).is_empty(), "a refusal writes nothing");
}
