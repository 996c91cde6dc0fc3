//! Every command through the real binary against the real control plane (lab, native seeds):
//! applies, is idempotent, diffs, dry-runs write nothing, plan states, adoption, host endpoints,
//! lockdown, permissions, rollback and crash recovery.

use std::process::Output;

use serde_json::{Value, json};

use crate::harness::{self, ClusterGuard, Seed};
use crate::tutorial_render::plugin;

/// The policy stage commands the lab applies (registry needs an address).
pub const STAGE_COMMANDS: &[&str] = &[
    "safety-net",
    "localhost",
    "isolate-apps",
    "calico-apiserver-to-kapi",
    "controllers-to-calico-apiserver",
    "hosts-to-calico-apiserver",
    "nodes-to-kapi",
    "srcnat-to-kapi",
    "nodes-to-typha",
    "kubelet",
    "controllers-to-kapi",
];

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the plugin and fails the test, with its output, unless it exits 0.
pub fn ok(c: &ClusterGuard, args: &[&str]) -> Run {
    let run = calico_harden(c, args);
    assert_eq!(
        run.code,
        0,
        "kubectl calico-harden {}:\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run
}

pub fn calico_harden(c: &ClusterGuard, args: &[&str]) -> Run {
    calico_harden_env(c, args, &[])
}

pub fn calico_harden_env(c: &ClusterGuard, args: &[&str], env: &[(&str, &str)]) -> Run {
    with_kubeconfig(c.kubeconfig(), args, env)
}

/// The plugin with an explicit kubeconfig (a proxy's, a broken one, another identity's).
pub fn with_kubeconfig(kubeconfig: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = plugin();
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("KUBECONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    finish(command.output().unwrap())
}

fn get_json(c: &ClusterGuard, args: &[&str]) -> Value {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&c.kubectl_ok(&full)).unwrap()
}

fn gnp_names(c: &ClusterGuard) -> Vec<String> {
    let list = get_json(c, &["globalnetworkpolicies.projectcalico.org"]);
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Spec and labels of every Calico policy plus the KubeControllersConfiguration spec.
pub fn calico_state(c: &ClusterGuard) -> Value {
    let essence = |list: Value| -> Vec<Value> {
        let mut items: Vec<Value> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| json!({"name": i["metadata"]["name"], "namespace": i["metadata"]["namespace"], "labels": i["metadata"]["labels"], "spec": i["spec"]}))
            .collect();
        items.sort_by_key(|i| i.to_string());
        items
    };
    // One kubectl call: this runs hundreds of times in the fault-injection test.
    let all = get_json(
        c,
        &[
            "globalnetworkpolicies.projectcalico.org,networkpolicies.projectcalico.org,kubecontrollersconfigurations.projectcalico.org",
            "-A",
        ],
    );
    let of_kind = |kind: &str| {
        let items: Vec<Value> = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["kind"] == kind)
            .cloned()
            .collect();
        json!({"items": items})
    };
    let kcc = of_kind("KubeControllersConfiguration")["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["metadata"]["name"] == "default")
        .map(|k| k["spec"].clone())
        .unwrap_or(Value::Null);
    json!({
        "gnp": essence(of_kind("GlobalNetworkPolicy")),
        "np": essence(of_kind("NetworkPolicy")),
        "kcc": kcc,
    })
}

fn plan_json(c: &ClusterGuard) -> Value {
    serde_json::from_str(&calico_harden(c, &["plan", "-o", "json"]).ok().stdout).unwrap()
}

fn stage_state(plan: &Value, stage: &str) -> String {
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage)
        .unwrap_or_else(|| panic!("{stage} not in plan"))["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_stage_applies_once_is_idempotent_and_dry_runs_write_nothing() {
    let c = harness::cluster(Seed::Lab);
    for stage in STAGE_COMMANDS {
        let mark = c.audit_mark();
        let client = calico_harden(&c, &[stage, "--dry-run=client"]).ok();
        assert!(
            client.stdout.contains("create"),
            "{stage}: {}",
            client.stdout
        );
        assert!(
            client.stderr.contains("nothing was sent"),
            "{stage}: {}",
            client.stderr
        );
        let server = calico_harden(&c, &[stage, "--dry-run"]).ok();
        assert!(server.stdout.contains("create"), "{stage}");
        let server = calico_harden(&c, &[stage, "--dry-run=server"]).ok();
        assert!(
            server.stderr.contains("accepted"),
            "{stage}: {}",
            server.stderr
        );
        assert!(
            c.writes_since(&mark).is_empty(),
            "{stage}: dry runs wrote {:?}",
            c.writes_since(&mark)
        );

        let applied = calico_harden(&c, &[stage, "--yes"]).ok();
        assert!(
            applied.stderr.contains("recorded as revision"),
            "{stage}: {}",
            applied.stderr
        );
        let writes = c.writes_since(&mark);
        assert!(
            writes
                .iter()
                .any(|w| w.resource.contains("networkpolicies")),
            "{stage}: {writes:?}"
        );

        let mark = c.audit_mark();
        let again = calico_harden(&c, &[stage, "--yes"]).ok();
        assert!(
            again.stderr.contains("already in place"),
            "{stage}: {}",
            again.stderr
        );
        assert!(
            c.writes_since(&mark).is_empty(),
            "{stage}: second run wrote"
        );
    }
    let names = gnp_names(&c);
    for name in [
        "final-allow-everything",
        "log-everything",
        "allow-containers-access-to-localhost",
        "deny-app-policy",
        "calico-components-to-apiserver",
        "worker-nodes-to-kapi",
        "srcnated-to-kapi",
        "worker-nodes-to-typha",
        "kapi-to-kubelet",
    ] {
        assert!(
            names.contains(&name.to_string()),
            "{name} missing from {names:?}"
        );
    }
    c.kubectl_ok(&[
        "get",
        "networkpolicies.projectcalico.org",
        "-n",
        "calico-apiserver",
        "calico-apiserver-to-kapi",
    ]);
    c.kubectl_ok(&[
        "get",
        "networkpolicies.projectcalico.org",
        "-n",
        "calico-system",
        "calico-kube-controllers-to-apiserver",
    ]);
    // The port detected from the kubernetes EndpointSlice (6443 on the lab, as on kubeadm).
    let plan = plan_json(&c);
    let port = plan["facts"]["apiserver_port"].as_u64().unwrap();
    assert_eq!(port, 6443);
    let kapi = get_json(
        &c,
        &[
            "globalnetworkpolicies.projectcalico.org",
            "worker-nodes-to-kapi",
        ],
    );
    assert_eq!(
        kapi["spec"]["ingress"][0]["destination"]["ports"],
        json!([port])
    );
    assert_eq!(
        kapi["spec"]["ingress"][0]["destination"]["selector"],
        "has(kubernetes.io/os) && kubernetes.io/hostname == \"control\""
    );
}

#[test]
fn registry_stage_accepts_ipv4_and_ipv6() {
    let c = harness::cluster(Seed::Lab);
    calico_harden(
        &c,
        &[
            "registry",
            "--ip",
            "10.20.5.5",
            "--ip",
            "fd00::/64",
            "--port",
            "5000",
            "--port",
            "443",
            "--yes",
        ],
    )
    .ok();
    let policy = get_json(
        &c,
        &[
            "globalnetworkpolicies.projectcalico.org",
            "private-registry-policy",
        ],
    );
    // calico-apiserver refuses a rule that mixes IPv4 and IPv6 nets: one rule per family.
    assert_eq!(
        policy["spec"]["egress"][0]["destination"]["nets"],
        json!(["10.20.5.5/32"])
    );
    assert_eq!(
        policy["spec"]["egress"][1]["destination"]["nets"],
        json!(["fd00::/64"])
    );
    let mark = c.audit_mark();
    let bad = calico_harden(&c, &["registry", "--ip", "10.20.5.999", "--yes"]);
    assert_eq!(bad.code, 2);
    assert!(c.writes_since(&mark).is_empty());
}

#[test]
fn plan_reports_missing_applied_drifted_and_hand_made() {
    let c = harness::cluster(Seed::Lab);
    let plan = plan_json(&c);
    assert_eq!(stage_state(&plan, "localhost"), "missing");
    assert_eq!(stage_state(&plan, "registry"), "not-applicable");
    assert_eq!(plan["facts"]["control_plane_nodes"][0]["name"], "control");
    assert_eq!(
        plan["facts"]["calico_apiserver_namespace"],
        "calico-apiserver"
    );
    assert!(plan["next_step"].as_str().unwrap().contains("safety-net"));

    calico_harden(&c, &["localhost", "--yes"]).ok();
    assert_eq!(stage_state(&plan_json(&c), "localhost"), "applied");

    c.kubectl_ok(&[
        "patch",
        "globalnetworkpolicies.projectcalico.org",
        "allow-containers-access-to-localhost",
        "--type=merge",
        "-p",
        "{\"spec\":{\"order\":5}}",
    ]);
    assert_eq!(stage_state(&plan_json(&c), "localhost"), "drifted");
    let human = calico_harden(&c, &["status"]).ok();
    assert!(human.stdout.contains("drifted"), "{}", human.stdout);
    let update = calico_harden(&c, &["localhost", "--yes"]).ok();
    assert!(update.stdout.contains("-   order: 5"), "{}", update.stdout);
    assert!(
        update.stdout.contains("+   order: 1001"),
        "{}",
        update.stdout
    );
    assert_eq!(stage_state(&plan_json(&c), "localhost"), "applied");

    // The tutorial's own manifest, created by hand, is recognised and adopted only on request.
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tutorial/08.worker-nodes-to-typha.yaml");
    c.kubectl_ok(&["create", "-f", manifest.to_str().unwrap()]);
    let plan = plan_json(&c);
    assert_eq!(
        stage_state(&plan, "nodes-to-typha"),
        "drifted",
        "typha runs on node1 in the lab seed, not on control"
    );
    let refused = calico_harden(&c, &["nodes-to-typha"]);
    assert_eq!(
        refused.code, 1,
        "no terminal and no --yes must refuse: {}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    let adopted = calico_harden(&c, &["nodes-to-typha", "--yes"]).ok();
    assert!(adopted.stdout.contains("ADOPT"), "{}", adopted.stdout);
    let typha = get_json(
        &c,
        &[
            "globalnetworkpolicies.projectcalico.org",
            "worker-nodes-to-typha",
        ],
    );
    assert_eq!(
        typha["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "kubectl-calico-harden"
    );
}

#[test]
fn native_seed_marks_calico_apiserver_stages_not_applicable() {
    let c = harness::cluster(Seed::Native);
    let plan = plan_json(&c);
    for stage in [
        "calico-apiserver-to-kapi",
        "controllers-to-calico-apiserver",
        "hosts-to-calico-apiserver",
    ] {
        assert_eq!(stage_state(&plan, stage), "not-applicable", "{stage}");
    }
    let run = calico_harden(&c, &["calico-apiserver-to-kapi", "--yes"]).ok();
    assert!(run.stderr.contains("not applicable"), "{}", run.stderr);
}

#[test]
fn empty_seed_without_calico_config_says_what_is_missing() {
    let c = harness::cluster(Seed::Empty);
    let mark = c.audit_mark();
    let run = calico_harden(&c, &["enable-hep", "--yes"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("KubeControllersConfiguration `default` does not exist"),
        "{}",
        run.stderr
    );
    assert!(c.writes_since(&mark).is_empty());
}

#[test]
fn enable_hep_waits_for_host_endpoints_and_disable_removes_them() {
    let c = harness::cluster(Seed::Lab);
    let run = calico_harden(&c, &["enable-hep", "--wait", "--timeout", "30s", "--yes"]).ok();
    assert!(
        run.stderr
            .contains("every predicted host endpoint is in place (3)"),
        "{}",
        run.stderr
    );
    let heps = get_json(&c, &["hostendpoints.projectcalico.org"]);
    let mut names: Vec<&str> = heps["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["control-auto-hep", "node1-auto-hep", "node2-auto-hep"]
    );
    assert_eq!(stage_state(&plan_json(&c), "enable-hep"), "applied");

    let again = calico_harden(&c, &["enable-hep", "--yes"]).ok();
    assert!(again.stderr.contains("already Enabled"), "{}", again.stderr);

    let run = calico_harden(
        &c,
        &[
            "enable-hep",
            "--disable",
            "--wait",
            "--timeout",
            "30s",
            "--yes",
        ],
    )
    .ok();
    assert!(run.stderr.contains("DELETE"), "{}", run.stderr);
    let heps = get_json(&c, &["hostendpoints.projectcalico.org"]);
    assert!(heps["items"].as_array().unwrap().is_empty());
}

#[test]
fn enable_hep_warns_when_an_environment_variable_overrides_the_spec() {
    let c = harness::cluster(Seed::Lab);
    c.set_kube_controllers_env(&["AUTO_HOST_ENDPOINTS=disabled"]);
    let run = calico_harden(&c, &["enable-hep", "--yes", "--wait", "--timeout", "3s"]);
    assert!(
        run.stderr.contains("still runs with autoCreate=Disabled: an environment variable (AUTO_HOST_ENDPOINTS) overrides the spec"),
        "{}",
        run.stderr
    );
    assert_eq!(run.code, 1, "the wait times out: {}", run.stderr);
    assert_eq!(stage_state(&plan_json(&c), "enable-hep"), "overridden");
}

#[test]
fn lockdown_refuses_until_everything_is_in_place_then_succeeds() {
    let c = harness::cluster(Seed::Lab);
    calico_harden(&c, &["safety-net", "--yes"]).ok();
    let mark = c.audit_mark();
    let refused = calico_harden(&c, &["lockdown", "--yes"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("lockdown refused"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("stage localhost"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("host endpoints"),
        "{}",
        refused.stderr
    );
    assert!(c.writes_since(&mark).is_empty());

    calico_harden(&c, &["up", "--yes"]).ok();
    calico_harden(&c, &["enable-hep", "--wait", "--yes"]).ok();
    // An operator who narrowed Felix's failsafe ports to SSH only: the API server's port is no
    // longer failsafe, so lockdown refuses.
    let ssh_only = json!({"spec": {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 22}]}});
    c.kubectl_ok(&[
        "patch",
        "felixconfigurations.projectcalico.org",
        "default",
        "--type=merge",
        "-p",
        &ssh_only.to_string(),
    ]);
    let refused = calico_harden(&c, &["lockdown", "--yes"]);
    assert!(
        refused.stderr.contains("failsafe ports"),
        "only the failsafe check fails: {}",
        refused.stderr
    );
    // Felix's defaults include 6443, the port the lab's API server is published on: lockdown
    // goes through without --force.
    c.kubectl_ok(&[
        "patch",
        "felixconfigurations.projectcalico.org",
        "default",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/failsafeInboundHostPorts"}]"#,
    ]);
    let locked = calico_harden(&c, &["lockdown", "--yes"]).ok();
    assert!(
        locked.stderr.contains("fresh connections"),
        "{}",
        locked.stderr
    );
    let names = gnp_names(&c);
    assert!(!names.contains(&"final-allow-everything".to_string()));
    assert!(!names.contains(&"log-everything".to_string()));
    let plan = plan_json(&c);
    assert_eq!(stage_state(&plan, "lockdown"), "applied");
    assert_eq!(stage_state(&plan, "safety-net"), "removed");
}

#[test]
fn lockdown_restores_the_safety_net_when_new_connections_fail() {
    let c = harness::cluster(Seed::Lab);
    calico_harden(&c, &["up", "--yes"]).ok();
    calico_harden(&c, &["enable-hep", "--wait", "--yes"]).ok();
    let run = calico_harden_env(
        &c,
        &["lockdown", "--yes"],
        &[("KUBECTL_CALICO_HARDEN_PROBE_URL", "https://127.0.0.1:1")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("lockdown reverted"), "{}", run.stderr);
    assert!(gnp_names(&c).contains(&"final-allow-everything".to_string()));
    let history: Value =
        serde_json::from_str(&calico_harden(&c, &["history", "-o", "json"]).ok().stdout).unwrap();
    let states: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"rolled-back"), "{states:?}");
}

#[test]
fn limited_user_gets_a_permission_message_and_nothing_is_written() {
    let c = harness::cluster(Seed::Lab);
    let mark = c.audit_mark();
    for args in [
        &["plan"][..],
        &["localhost", "--yes"][..],
        &["enable-hep", "--yes"][..],
    ] {
        let mut full = vec!["--context", "limited"];
        full.extend_from_slice(args);
        let run = calico_harden(&c, &full);
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("forbidden") || run.stderr.contains("Forbidden"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("kubectl auth can-i"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(c.writes_since(&mark).is_empty());
}

#[test]
fn offline_render_is_accepted_by_the_api_server() {
    let c = harness::cluster(Seed::Lab);
    let rendered = plugin()
        .args(["render", "--offline", "--registry-ip", "127.0.9.9"])
        .output()
        .unwrap();
    assert!(rendered.status.success());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &rendered.stdout).unwrap();
    let mark = c.audit_mark();
    // The lab's namespaces exist in the seed, so namespaced policies validate too.
    let out = c.kubectl_ok(&[
        "apply",
        "--dry-run=server",
        "-f",
        file.path().to_str().unwrap(),
    ]);
    assert!(
        out.contains(
            "globalnetworkpolicy.projectcalico.org/final-allow-everything created (server dry run)"
        ),
        "{out}"
    );
    assert!(c.writes_since(&mark).is_empty());
}

#[test]
fn plugin_runs_through_the_real_kubectl() {
    let c = harness::cluster(Seed::Lab);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-calico_harden"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(ClusterGuard::kubectl_path())
        .args(["calico-harden", "--help"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("enable-hep"));
    let out = std::process::Command::new(ClusterGuard::kubectl_path())
        .args([
            "calico-harden",
            "plan",
            "--kubeconfig",
            c.kubeconfig().to_str().unwrap(),
        ])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("next step"));
}

#[test]
fn up_then_rollback_all_restores_every_object_exactly() {
    let c = harness::cluster(Seed::Lab);
    let before = calico_state(&c);
    calico_harden(&c, &["up", "--yes", "--registry-ip", "127.0.7.7"]).ok();
    calico_harden(&c, &["enable-hep", "--yes"]).ok();
    assert_ne!(calico_state(&c), before);
    let history = calico_harden(&c, &["history"]).ok();
    assert!(history.stdout.contains("complete"), "{}", history.stdout);
    assert!(
        history.stdout.contains("calico-harden-admin"),
        "the server names the user: {}",
        history.stdout
    );

    // Rolling back only the newest revision re-disables host endpoints.
    calico_harden(&c, &["rollback", "--yes"]).ok();
    assert_eq!(calico_state(&c)["kcc"], before["kcc"]);
    calico_harden(&c, &["rollback", "--all", "--yes"]).ok();
    assert_eq!(calico_state(&c), before);
    // A rollback is a revision too, and can itself be rolled back.
    calico_harden(&c, &["rollback", "--yes"]).ok();
    assert!(gnp_names(&c).contains(&"worker-nodes-to-kapi".to_string()));
}

#[test]
fn rollback_to_a_revision_keeps_what_came_before_it() {
    let c = harness::cluster(Seed::Lab);
    calico_harden(&c, &["safety-net", "--yes"]).ok();
    calico_harden(&c, &["localhost", "--yes"]).ok();
    calico_harden(&c, &["nodes-to-kapi", "--yes"]).ok();
    let history: Value =
        serde_json::from_str(&calico_harden(&c, &["history", "-o", "json"]).ok().stdout).unwrap();
    let first = history[0]["revision"].as_u64().unwrap();
    calico_harden(&c, &["rollback", &first.to_string(), "--yes"]).ok();
    let names = gnp_names(&c);
    assert!(names.contains(&"final-allow-everything".to_string()));
    assert!(!names.contains(&"allow-containers-access-to-localhost".to_string()));
    assert!(!names.contains(&"worker-nodes-to-kapi".to_string()));
    let missing = calico_harden(&c, &["rollback", "999", "--yes"]);
    assert_eq!(missing.code, 2);
}

#[test]
fn rollback_refuses_an_object_changed_by_someone_else() {
    let c = harness::cluster(Seed::Lab);
    calico_harden(&c, &["localhost", "--yes"]).ok();
    c.kubectl_ok(&[
        "patch",
        "globalnetworkpolicies.projectcalico.org",
        "allow-containers-access-to-localhost",
        "--type=merge",
        "-p",
        "{\"spec\":{\"order\":7}}",
    ]);
    let mark = c.audit_mark();
    let refused = calico_harden(&c, &["rollback", "--yes"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("changed by someone else"),
        "{}",
        refused.stderr
    );
    assert!(c.writes_since(&mark).is_empty());
    let policy = get_json(
        &c,
        &[
            "globalnetworkpolicies.projectcalico.org",
            "allow-containers-access-to-localhost",
        ],
    );
    assert_eq!(
        policy["spec"]["order"], 7,
        "the other writer's change is kept"
    );
    calico_harden(&c, &["rollback", "--yes", "--force"]).ok();
    assert!(!gnp_names(&c).contains(&"allow-containers-access-to-localhost".to_string()));
}

#[test]
fn a_process_killed_at_each_write_of_up_can_be_rolled_back() {
    let c = harness::cluster(Seed::Lab);
    let before = calico_state(&c);
    let planned = calico_harden(&c, &["up", "--dry-run=client"]).ok();
    let object_writes = planned
        .stdout
        .lines()
        .filter(|l| l.contains(" create ["))
        .count();
    assert!(object_writes >= 12, "{}", planned.stdout);
    let mut kill_points = 0;
    for writes in 1..=object_writes {
        let killed = calico_harden_env(
            &c,
            &["up", "--yes"],
            &[(
                "KUBECTL_CALICO_HARDEN_ABORT_AFTER_WRITES",
                &writes.to_string(),
            )],
        );
        assert_ne!(killed.code, 0, "write {writes}: the process must die");
        let history = calico_harden(&c, &["history"]).ok();
        assert!(
            history.stdout.contains("pending"),
            "write {writes}: {}",
            history.stdout
        );
        calico_harden(&c, &["rollback", "--yes"]).ok();
        assert_eq!(
            calico_state(&c),
            before,
            "write {writes}: rollback did not restore"
        );
        kill_points += 1;
    }
    assert_eq!(kill_points, object_writes);
    println!("crash recovery: {kill_points} kill points of `up`, each restored by rollback");
}

#[test]
fn enable_hep_refuses_when_kube_controllers_is_newer_than_calico_node() {
    let c = harness::cluster(Seed::Lab);
    let pods = c.get_json(&[
        "pods",
        "-n",
        "calico-system",
        "-l",
        "k8s-app=calico-kube-controllers",
    ]);
    let pod = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.kubectl_ok(&[
        "set",
        "image",
        &format!("pod/{pod}"),
        "-n",
        "calico-system",
        "calico-kube-controllers=quay.io/calico/kube-controllers:v3.99.0",
    ]);
    let mark = c.audit_mark();
    let refused = calico_harden(&c, &["enable-hep", "--yes"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("newer than calico-node"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("#3552"), "{}", refused.stderr);
    assert!(c.writes_since(&mark).is_empty());
    let forced = calico_harden(&c, &["enable-hep", "--yes", "--force"]).ok();
    assert!(forced.stderr.contains("--force"), "{}", forced.stderr);
    // Put the seed's image back; a later test must not inherit a fake version.
    c.reset(Seed::Lab);
    let pods = c.get_json(&[
        "pods",
        "-n",
        "calico-system",
        "-l",
        "k8s-app=calico-kube-controllers",
    ]);
    assert_ne!(
        pods["items"][0]["spec"]["containers"][0]["image"],
        "quay.io/calico/kube-controllers:v3.99.0"
    );
}

#[test]
fn history_keeps_the_newest_history_max_revisions_and_as_impersonates() {
    let c = harness::cluster(Seed::Lab);
    for stage in ["safety-net", "localhost", "nodes-to-kapi"] {
        calico_harden(&c, &[stage, "--yes", "--history-max", "2"]).ok();
    }
    let history: Value =
        serde_json::from_str(&calico_harden(&c, &["history", "-o", "json"]).ok().stdout).unwrap();
    let kept: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, vec![2, 3], "the oldest revision is pruned");

    // --as: the admin's credentials acting as the user without permissions.
    let mark = c.audit_mark();
    let run = calico_harden(&c, &["kubelet", "--yes", "--as", "limited-user"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("forbidden"), "{}", run.stderr);
    assert!(c.writes_since(&mark).is_empty());
}

#[test]
fn a_missing_namespace_is_named_not_mistaken_for_a_missing_calico_kind() {
    let c = harness::cluster(Seed::Lab);
    c.kubectl_ok(&["delete", "namespace", "calico-system", "--wait=true"]);
    let mark = c.audit_mark();
    let run = calico_harden(&c, &["controllers-to-calico-apiserver", "--yes"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("namespace calico-system does not exist"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("does not serve this kind"),
        "{}",
        run.stderr
    );
    let created: Vec<_> = c
        .writes_since(&mark)
        .into_iter()
        .filter(|w| w.response_code.is_some_and(|code| code < 300) && w.resource != "configmaps")
        .collect();
    assert!(created.is_empty(), "{created:?}");
}

#[test]
fn plan_finds_calico_apiserver_through_its_apiservice_when_its_pods_are_not_visible() {
    let c = harness::cluster(Seed::Lab);
    c.kubectl_ok(&["delete", "pods", "-n", "calico-apiserver", "--all"]);
    let plan = plan_json(&c);
    assert_eq!(
        plan["facts"]["calico_api"], "aggregated-apiserver",
        "{plan}"
    );
    assert_eq!(
        plan["facts"]["calico_apiserver_namespace"], "calico-apiserver",
        "{plan}"
    );
    assert_ne!(
        stage_state(&plan, "calico-apiserver-to-kapi"),
        "not-applicable"
    );
    let text = calico_harden(&c, &["plan"]).ok();
    assert!(
        text.stdout
            .contains("calico-apiserver:    namespace calico-apiserver"),
        "{}",
        text.stdout
    );
}

/// Whether a `-vv` log shows a LIST of every node, not only the labelled ones.
fn lists_every_node(log: &str) -> bool {
    log.lines()
        .any(|l| l.contains("uri=\"/api/v1/nodes?") && !l.contains("labelSelector"))
}

/// What a stage's flow report says with `--flows`, from `check --after STAGE`'s changed flows.
fn expected_flow_report(c: &ClusterGuard, stage: &str) -> String {
    let check = get_check_after(c, stage);
    let changed = check["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["after"]["allowed"] != f["now"]["allowed"])
        .count();
    match changed {
        0 => format!("{stage}: no critical flow changes"),
        n => format!("{stage} changes {n} critical flow(s):"),
    }
}

fn get_check_after(c: &ClusterGuard, stage: &str) -> Value {
    // check exits 1 when a critical flow is denied; its JSON is the same either way.
    let run = calico_harden(c, &["check", "--after", stage, "-o", "json"]);
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn a_stage_reads_its_own_objects_and_evaluates_flows_only_when_they_can_change_or_asked() {
    let c = harness::cluster(Seed::Lab);
    // Before host endpoints exist a host stage's policies select nothing: no flow can change,
    // and neither the other policies nor the nodes without a control-plane role are read.
    let localhost = ok(&c, &["localhost", "--yes", "-vv"]);
    assert!(
        localhost.stderr.contains(
            "localhost: no critical flow changes (its policies select no host endpoint or pod yet)"
        ),
        "{}",
        localhost.stderr
    );
    assert!(
        !localhost
            .stderr
            .contains("/apis/projectcalico.org/v3/globalnetworkpolicies?"),
        "{}",
        localhost.stderr
    );
    assert!(!lists_every_node(&localhost.stderr), "{}", localhost.stderr);
    assert!(
        localhost.stderr.contains(
            "/apis/projectcalico.org/v3/globalnetworkpolicies/allow-containers-access-to-localhost"
        ),
        "{}",
        localhost.stderr
    );

    // A stage whose policies select Calico's pods says how to see its report; with --flows the
    // report is the one `check --after` gives.
    for stage in ["calico-apiserver-to-kapi", "safety-net"] {
        let plain = ok(&c, &[stage, "--dry-run=client"]);
        assert!(
            plain.stderr.contains(&format!(
                "the critical flows it changes are evaluated with --flows (reads every policy) or `kubectl calico-harden check --after {stage}`"
            )),
            "{}",
            plain.stderr
        );
        let with_flows = ok(&c, &[stage, "--dry-run=client", "--flows"]);
        let expected = expected_flow_report(&c, stage);
        assert!(
            with_flows.stderr.contains(&expected),
            "{expected}:\n{}",
            with_flows.stderr
        );
    }

    // Once host endpoints exist, every node is read (each endpoint polices its node), and a
    // host stage says its policies select them.
    ok(&c, &["enable-hep", "--wait", "--yes"]);
    let kubelet = ok(&c, &["kubelet", "--dry-run=client", "-vv"]);
    assert!(lists_every_node(&kubelet.stderr), "{}", kubelet.stderr);
    assert!(
        kubelet
            .stderr
            .contains("kubelet: its policies select host endpoints"),
        "{}",
        kubelet.stderr
    );
    c.reset(Seed::Lab);
}

#[test]
fn without_a_control_plane_role_label_a_stage_reads_every_node_and_finds_the_control_plane_by_address()
 {
    let c = harness::cluster(Seed::Lab);
    c.kubectl_ok(&[
        "label",
        "node",
        "control",
        "node-role.kubernetes.io/control-plane-",
        "node-role.kubernetes.io/master-",
    ]);
    let run = ok(
        &c,
        &["nodes-to-kapi", "--dry-run=client", "-o", "json", "-vv"],
    );
    assert!(lists_every_node(&run.stderr), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("kubernetes.io/hostname == \\\"control\\\""),
        "{}",
        run.stdout
    );
    c.reset(Seed::Lab);
}
