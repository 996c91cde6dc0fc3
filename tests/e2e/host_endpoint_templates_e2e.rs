//! The host endpoints the plugin predicts against the ones the real calico-kube-controllers
//! v3.31.0 creates: for each configuration, `enable-hep --yes --wait` applies it (waiting for
//! the predicted set), then `plan -o json`'s prediction must equal `kubectl get
//! hostendpoints.projectcalico.org` exactly: names, labels, node, expectedIPs (in order),
//! interfaceName and profiles.
//!
//! The lab's nodes carry the annotations calico-node writes (BGP IPv4 address, VXLAN tunnel
//! address). One test adds a node with the other annotations kube-controllers reads (IPv6, IPIP,
//! VXLAN v6, WireGuard, `projectcalico.org/Interfaces`) and a name long enough to be hashed, so
//! the address order, name hashing and `interfacePattern` are checked against the real code too.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{self, ClusterGuard, Seed};
use crate::stages_e2e::{Run, calico_harden};

fn ok(run: Run) -> Run {
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

/// A HostEndpoint reduced to what kube-controllers sets, with Calico's empty defaults filled
/// in, so a predicted and a live object compare field by field.
fn essentials(hep: &Value) -> Value {
    json!({
        "name": hep["metadata"]["name"],
        "labels": hep["metadata"]["labels"],
        "node": hep["spec"]["node"],
        "expectedIPs": hep["spec"].get("expectedIPs").cloned().unwrap_or_else(|| json!([])),
        "interfaceName": hep["spec"].get("interfaceName").cloned().unwrap_or_else(|| json!("")),
        "profiles": hep["spec"]["profiles"],
    })
}

fn sorted(mut heps: Vec<Value>) -> Vec<Value> {
    heps.sort_by_key(|h| h["name"].as_str().unwrap_or_default().to_string());
    heps
}

fn predicted(c: &ClusterGuard) -> (Vec<Value>, Value) {
    let plan = ok(calico_harden(c, &["plan", "-o", "json"]));
    let report: Value = serde_json::from_str(&plan.stdout).expect("plan -o json");
    let heps = &report["host_endpoints"];
    let list = heps["predicted"]
        .as_array()
        .expect("plan reports the predicted host endpoints")
        .iter()
        .map(essentials)
        .collect();
    (sorted(list), heps["comparison"].clone())
}

fn live(c: &ClusterGuard) -> Vec<Value> {
    let list = c.get_json(&["hostendpoints.projectcalico.org"]);
    sorted(
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(essentials)
            .collect(),
    )
}

/// Apply `flags` with enable-hep and compare the prediction with what kube-controllers made,
/// twice: right after the wait and once kube-controllers had time to do anything more.
fn apply_and_compare(c: &ClusterGuard, flags: &[&str]) -> Vec<Value> {
    let mut args = vec!["enable-hep", "--yes", "--wait", "--timeout", "60s"];
    args.extend_from_slice(flags);
    let run = ok(calico_harden(c, &args));
    assert!(
        run.stderr
            .contains("every predicted host endpoint is in place"),
        "{}",
        run.stderr
    );
    let (prediction, comparison) = predicted(c);
    assert_eq!(
        prediction,
        live(c),
        "predicted vs created, right after --wait"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(prediction, live(c), "predicted vs created, 3 s later");
    let mut in_place: Vec<&str> = comparison["in_place"]
        .as_array()
        .expect("in_place")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    in_place.sort_unstable();
    assert_eq!(in_place, names(&prediction), "{comparison}");
    for field in ["missing", "different", "extra"] {
        assert_eq!(comparison[field], json!([]), "{comparison}");
    }
    let plan = ok(calico_harden(c, &["plan"]));
    let line = format!(
        "host endpoints:      {0} predicted once autoCreate is Enabled, {0} present\n",
        prediction.len()
    );
    assert!(plan.stdout.contains(&line), "{}", plan.stdout);
    prediction
}

fn names(heps: &[Value]) -> Vec<&str> {
    heps.iter().map(|h| h["name"].as_str().unwrap()).collect()
}

#[test]
fn default_host_endpoints_are_predicted_exactly() {
    let c = harness::cluster(Seed::Lab);
    let heps = apply_and_compare(&c, &[]);
    assert_eq!(
        names(&heps),
        ["control-auto-hep", "node1-auto-hep", "node2-auto-hep"]
    );
    // BGP address without its prefix, then the VXLAN tunnel; the InternalIP is already there.
    assert_eq!(heps[0]["expectedIPs"], json!(["10.0.0.1", "192.168.0.1"]));
    assert_eq!(heps[0]["interfaceName"], "*");
}

#[test]
fn a_control_plane_template_next_to_the_default_is_predicted_exactly() {
    let c = harness::cluster(Seed::Lab);
    let heps = apply_and_compare(
        &c,
        &[
            "--template",
            "control-plane:has(node-role.kubernetes.io/control-plane)",
            "--template-cidr",
            "control-plane:192.168.0.0/16",
            "--template-label",
            "control-plane:tier=control",
            // A template label replaces the node's label of the same key.
            "--template-label",
            "control-plane:kubernetes.io/os=templated",
        ],
    );
    assert_eq!(
        names(&heps),
        [
            "control-auto-hep",
            "control-control-plane-auto-hep",
            "node1-auto-hep",
            "node2-auto-hep"
        ]
    );
    let templated = &heps[1];
    assert_eq!(templated["expectedIPs"], json!(["192.168.0.1"]));
    assert_eq!(templated["interfaceName"], "");
    assert_eq!(templated["labels"]["tier"], "control");
    assert_eq!(templated["labels"]["kubernetes.io/os"], "templated");
}

#[test]
fn a_cidr_template_without_the_default_is_predicted_exactly() {
    let c = harness::cluster(Seed::Lab);
    let heps = apply_and_compare(
        &c,
        &[
            "--template",
            "nodes",
            "--template-cidr",
            "nodes:10.0.0.0/24",
            "--no-default-host-endpoint",
        ],
    );
    assert_eq!(
        names(&heps),
        [
            "control-nodes-auto-hep",
            "node1-nodes-auto-hep",
            "node2-nodes-auto-hep"
        ]
    );
    assert_eq!(heps[2]["expectedIPs"], json!(["10.0.0.3"]));

    // Back to the default alone: kube-controllers deletes the template's endpoints, and the
    // wait is for exactly the new prediction.
    let heps = apply_and_compare(&c, &["--no-templates", "--default-host-endpoint"]);
    assert_eq!(
        names(&heps),
        ["control-auto-hep", "node1-auto-hep", "node2-auto-hep"]
    );
}

#[test]
fn a_template_matching_no_node_ip_makes_nothing_as_predicted() {
    let c = harness::cluster(Seed::Lab);
    let heps = apply_and_compare(
        &c,
        &[
            "--template",
            "nowhere:all()",
            "--template-cidr",
            "nowhere:172.31.0.0/16,fd00:dead::/64",
        ],
    );
    assert_eq!(
        names(&heps),
        ["control-auto-hep", "node1-auto-hep", "node2-auto-hep"]
    );
}

#[test]
fn a_node_with_every_address_annotation_interfaces_and_a_long_name_is_predicted_exactly() {
    let c = harness::cluster(Seed::Lab);
    // A DNS subdomain of 250 characters: its <node>-auto-hep name is longer than 253, so
    // kube-controllers hashes it.
    let name = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(58)
    );
    assert_eq!(name.len(), 250);
    let interfaces = json!([
        {"name": "eth0", "addresses": ["10.0.0.9", "10.0.0.99"]},
        {"name": "eth1", "addresses": ["172.16.0.9", "fd00:1::9"]},
        {"name": "lo", "addresses": ["127.0.0.1"]}
    ]);
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/os": "linux", "rack": "r9"},
            "annotations": {
                "projectcalico.org/IPv4Address": "10.0.0.9/24",
                "projectcalico.org/IPv6Address": "fd00::9/64",
                "projectcalico.org/IPv4IPIPTunnelAddr": "192.168.9.1",
                "projectcalico.org/IPv4VXLANTunnelAddr": "192.168.9.2",
                "projectcalico.org/IPv6VXLANTunnelAddr": "fd10::9",
                "projectcalico.org/IPv4WireguardInterfaceAddr": "192.168.9.3",
                "projectcalico.org/Interfaces": interfaces.to_string(),
                "projectcalico.org/labels": "{\"calico-only\": \"yes\"}",
            },
        },
        "status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.9"},
            {"type": "InternalIP", "address": "10.0.1.9"},
            {"type": "ExternalIP", "address": "203.0.113.9"},
        ]},
    });
    c.kubectl_stdin_ok(&["create", "-f", "-"], &node.to_string());
    // Node status is a subresource: create drops it, so write the addresses through it.
    let status = json!({"status": node["status"]});
    c.kubectl_ok(&[
        "patch",
        "node",
        &name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    let heps = apply_and_compare(
        &c,
        &[
            "--template",
            "ifaces:rack == 'r9'",
            "--template-cidr",
            "ifaces:10.0.0.0/24",
            "--interface-pattern",
            "ifaces:^eth",
        ],
    );
    let added: Vec<&Value> = heps.iter().filter(|h| h["node"] == name.as_str()).collect();
    assert_eq!(added.len(), 3, "{added:#?}");
    for hep in &added {
        let hep_name = hep["name"].as_str().unwrap();
        assert!(
            hep_name.len() <= 253 && hep_name.ends_with("-auto-hep"),
            "{hep_name}"
        );
        assert!(!hep_name.starts_with("aaa"), "hashed: {hep_name}");
    }
    let default = added
        .iter()
        .find(|h| h["interfaceName"] == "*")
        .expect("the default endpoint");
    assert_eq!(
        default["expectedIPs"],
        json!([
            "10.0.0.9",
            "fd00::9",
            "192.168.9.1",
            "192.168.9.2",
            "fd10::9",
            "192.168.9.3",
            "10.0.1.9",
            "10.0.0.99",
            "172.16.0.9",
            "fd00:1::9",
            "127.0.0.1"
        ])
    );
    assert_eq!(default["labels"]["calico-only"], "yes");
    let eth1 = added
        .iter()
        .find(|h| h["interfaceName"] == "eth1")
        .expect("an endpoint for eth1");
    assert_eq!(
        eth1["expectedIPs"],
        json!(["10.0.0.9", "10.0.0.99", "172.16.0.9", "fd00:1::9"])
    );
}

#[test]
fn bad_template_flags_exit_2_and_send_nothing() {
    let c = harness::cluster(Seed::Lab);
    let mark = c.audit_mark();
    for (flags, expected) in [
        (
            &["--template", "t:has(", "--template-cidr", "t:10.0.0.0/8"][..],
            "not a Calico selector",
        ),
        (
            &["--template", "t", "--template-cidr", "t:10.0.0.1"][..],
            "write 10.0.0.1/32",
        ),
        (
            &["--template", "t", "--interface-pattern", "t:eth(["][..],
            "not a regular expression",
        ),
        (&["--template", "t"][..], "creates no endpoint"),
    ] {
        let mut args = vec!["enable-hep", "--yes"];
        args.extend_from_slice(flags);
        let run = calico_harden(&c, &args);
        assert_eq!(run.code, 2, "{flags:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{flags:?}: {}", run.stderr);
        let mut print = vec!["enable-hep", "--print-command", "bash"];
        print.extend_from_slice(flags);
        assert_eq!(calico_harden(&c, &print).code, 2, "{flags:?}");
    }
    assert!(c.writes_since(&mark).is_empty());
}

#[test]
fn print_command_carries_the_templates_and_kubectl_applies_it() {
    let c = harness::cluster(Seed::Lab);
    let flags = [
        "--template",
        "cp:has(node-role.kubernetes.io/control-plane) && kubernetes.io/os == 'linux'",
        "--template-cidr",
        "cp:10.0.0.0/24",
        "--no-default-host-endpoint",
    ];
    let mut args = vec!["enable-hep", "--print-command", "bash"];
    args.extend_from_slice(&flags);
    let command = ok(calico_harden(&c, &args)).stdout;
    // The printed command, run by bash against the lab, writes what enable-hep would.
    let run = c
        .command("bash")
        .args([
            "-c",
            &command.replace("kubectl ", "kubectl --context admin "),
        ])
        .output()
        .expect("bash");
    assert!(
        run.status.success(),
        "{command}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let kcc = c.get_json(&["kubecontrollersconfigurations.projectcalico.org", "default"]);
    assert_eq!(
        kcc["spec"]["controllers"]["node"]["hostEndpoint"],
        json!({"autoCreate": "Enabled", "createDefaultHostEndpoint": "Disabled",
               "templates": [{"generateName": "cp", "interfaceCIDRs": ["10.0.0.0/24"],
                              "nodeSelector": "has(node-role.kubernetes.io/control-plane) && kubernetes.io/os == 'linux'"}]})
    );
    // enable-hep with the same flags finds nothing to change.
    let mut same = vec!["enable-hep", "--yes"];
    same.extend_from_slice(&flags);
    let again = ok(calico_harden(&c, &same));
    assert!(
        again.stderr.contains("nothing to change"),
        "{}",
        again.stderr
    );
}
