//! Each behaviour that differs between Calico releases, once per release family, through the real
//! binary. The lab runs Calico v3.31.0's real calico-apiserver and calico-kube-controllers; the
//! other families are scenarios layered on it by seeds of the control plane
//! (tests/controlplane/seed.go, `reset calico-3.28|calico-3.30|calico-3.31|calico-3.32-native`):
//! the version in ClusterInformation and the image tags, where calico-apiserver's pods run,
//! Goldmane and Whisker from 3.30, and for 3.32 the emulated native mode (projectcalico.org/v3
//! as CRDs) with the kube-admin / kube-baseline tiers and calico-webhooks pods behind a
//! fail-closed ValidatingWebhookConfiguration.
//!
//! What runs real Calico code in each family: the aggregated families (3.28, 3.30, 3.31) store
//! and validate every object through the real calico-apiserver, authorize tiered policy, create
//! the built-in tiers and make host endpoints with the real calico-kube-controllers; the 3.32
//! family has no Calico process behind it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{self, ClusterGuard, Seed};
use crate::stages_e2e::{Run, calico_harden};

/// What one release family looks like to the plugin, and what it must then do.
struct Family {
    seed: &'static str,
    /// The control plane that serves it: the real calico-apiserver (Lab) or the native emulation.
    plane: Seed,
    version: &'static str,
    /// Where calico-apiserver runs; None when v3 is served as CRDs.
    calico_apiserver_namespace: Option<&'static str>,
    /// Goldmane and Whisker run (3.30+).
    flow_logs: bool,
    /// Calico's admission webhooks fail closed (3.32 native).
    webhooks: bool,
    /// Calico's own tier in front of `default`, where a Deny decides first.
    admin_tier: Option<&'static str>,
    /// calico-kube-controllers reads host endpoint templates (3.30+) and a template's
    /// interfacePattern (3.31+).
    templates: bool,
    interface_pattern: bool,
}

const CALICO_3_28: Family = Family {
    seed: "calico-3.28",
    plane: Seed::Lab,
    version: "v3.28.2",
    calico_apiserver_namespace: Some("calico-apiserver"),
    flow_logs: false,
    webhooks: false,
    admin_tier: None,
    templates: false,
    interface_pattern: false,
};

const CALICO_3_30: Family = Family {
    seed: "calico-3.30",
    plane: Seed::Lab,
    version: "v3.30.3",
    calico_apiserver_namespace: Some("calico-apiserver"),
    flow_logs: true,
    webhooks: false,
    admin_tier: Some("adminnetworkpolicy"),
    templates: true,
    interface_pattern: false,
};

const CALICO_3_31: Family = Family {
    seed: "calico-3.31",
    plane: Seed::Lab,
    version: "v3.31.0",
    calico_apiserver_namespace: Some("calico-system"),
    flow_logs: true,
    webhooks: false,
    admin_tier: Some("adminnetworkpolicy"),
    templates: true,
    interface_pattern: true,
};

const CALICO_3_32_NATIVE: Family = Family {
    seed: "calico-3.32-native",
    plane: Seed::Native,
    version: "v3.32.0",
    calico_apiserver_namespace: None,
    flow_logs: true,
    webhooks: true,
    admin_tier: Some("kube-admin"),
    templates: true,
    interface_pattern: true,
};

const FAMILIES: [&Family; 4] = [
    &CALICO_3_28,
    &CALICO_3_30,
    &CALICO_3_31,
    &CALICO_3_32_NATIVE,
];

/// The cluster reset to `family`'s seed, with its webhooks where it has them; dropping it
/// removes them (the control plane's reset leaves admission objects alone).
struct FamilyCluster {
    cluster: ClusterGuard,
    webhooks: bool,
}

impl std::ops::Deref for FamilyCluster {
    type Target = ClusterGuard;
    fn deref(&self) -> &ClusterGuard {
        &self.cluster
    }
}

impl Drop for FamilyCluster {
    fn drop(&mut self) {
        if self.webhooks {
            remove_webhooks(&self.cluster);
        }
    }
}

fn family_cluster(family: &Family) -> FamilyCluster {
    let cluster = harness::cluster(family.plane);
    reset_to(&cluster, family.seed);
    if family.webhooks {
        install_webhooks(&cluster);
    }
    FamilyCluster {
        cluster,
        webhooks: family.webhooks,
    }
}

/// `reset SEED` on the control plane's socket (the harness names only lab, native and empty).
fn reset_to(c: &ClusterGuard, seed: &str) {
    let socket = c.dir().join("control.sock");
    let mut stream = UnixStream::connect(&socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(180)))
        .expect("a read timeout");
    writeln!(stream, "reset {seed}").expect("asking for the reset");
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .expect("the reset's answer");
    assert!(reply.starts_with("ok"), "reset to {seed}: {reply}");
}

const WEBHOOKS: &str = "calico-webhooks";
const WEBHOOKS_POD_IP: &str = "192.168.1.7";

/// Calico 3.32's webhooks as the operator places them: Service calico-webhooks in calico-system,
/// HTTPS on 6443 of the calico-webhooks pods, failurePolicy Fail. Its rules match a resource
/// nobody writes, so the unreachable address never fails a request here.
fn install_webhooks(c: &ClusterGuard) {
    remove_webhooks(c);
    let create = |object: Value| c.kubectl_stdin_ok(&["create", "-f", "-"], &object.to_string());
    create(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": WEBHOOKS, "namespace": "calico-system",
                     "labels": {"kubernetes.io/service-name": WEBHOOKS}},
        "addressType": "IPv4",
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
        "endpoints": [{"addresses": [WEBHOOKS_POD_IP], "conditions": {"ready": true}}]}),
    );
    create(json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": WEBHOOKS},
        "webhooks": [{"name": "validate.projectcalico.org", "failurePolicy": "Fail",
            "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"namespace": "calico-system", "name": WEBHOOKS, "port": 443}},
            "rules": [{"apiGroups": ["calico-harden-test.example.com"], "apiVersions": ["v1"],
                       "operations": ["CREATE"], "resources": ["nothings"]}]}]}));
}

fn remove_webhooks(c: &ClusterGuard) {
    for args in [
        &["delete", "validatingwebhookconfigurations", WEBHOOKS][..],
        &["delete", "endpointslices", "-n", "calico-system", WEBHOOKS][..],
    ] {
        let mut args = args.to_vec();
        args.push("--ignore-not-found");
        let _ = c.kubectl(&args);
    }
}

fn succeed(run: Run, what: &str) -> Run {
    assert_eq!(
        run.code, 0,
        "{what}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

fn json_of(c: &ClusterGuard, args: &[&str]) -> (i32, Value) {
    let run = calico_harden(c, args);
    let value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        )
    });
    (run.code, value)
}

fn flows<'a>(report: &'a Value, category: &str) -> Vec<&'a Value> {
    report["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter(|f| f["category"] == category)
        .collect()
}

fn stage_state<'a>(plan: &'a Value, stage: &str) -> &'a Value {
    let stages = plan["stages"].as_array().expect("stages");
    &stages
        .iter()
        .find(|s| s["stage"] == stage)
        .unwrap_or_else(|| panic!("no stage {stage} in {plan}"))["state"]
}

#[test]
fn plan_shows_each_familys_version_and_where_calico_apiserver_runs() {
    for family in FAMILIES {
        let c = family_cluster(family);
        let (_, plan) = json_of(&c, &["plan", "-o", "json"]);
        let facts = &plan["facts"];
        let seed = family.seed;
        assert_eq!(
            facts["versions"]["cluster_information"], family.version,
            "{seed}"
        );
        assert_eq!(facts["calico_node_version"], family.version, "{seed}");
        assert_eq!(facts["kube_controllers_version"], family.version, "{seed}");
        assert_eq!(
            facts["calico_apiserver_namespace"],
            json!(family.calico_apiserver_namespace),
            "{seed}"
        );
        let text = succeed(calico_harden(&c, &["plan"]), seed).stdout;
        for line in [
            format!(
                "calico version:      {} (from ClusterInformation default)",
                family.version
            ),
            format!(
                "version skew:        none (calico-kube-controllers and calico-node both {})",
                family.version
            ),
        ] {
            assert!(text.contains(&line), "{seed}: {line}\n{text}");
        }
        assert_calico_apiserver_paths(&c, family, &plan);
    }
}

/// The calico-apiserver stages render into its namespace and `check` reaches its pods there, or,
/// served as CRDs, the stages do not apply and no flow goes to it.
fn assert_calico_apiserver_paths(c: &ClusterGuard, family: &Family, plan: &Value) {
    let seed = family.seed;
    let (_, report) = json_of(c, &["check", "-o", "json"]);
    let destinations: Vec<&str> = flows(&report, "apiserver-to-calico-apiserver")
        .iter()
        .map(|f| f["destination"].as_str().expect("destination"))
        .collect();
    let Some(namespace) = family.calico_apiserver_namespace else {
        assert_eq!(
            stage_state(plan, "calico-apiserver-to-kapi"),
            "not-applicable",
            "{seed}"
        );
        assert!(destinations.is_empty(), "{seed}: {destinations:?}");
        return;
    };
    assert_eq!(
        stage_state(plan, "calico-apiserver-to-kapi"),
        "missing",
        "{seed}"
    );
    let (_, rendered) = json_of(c, &["render", "calico-apiserver-to-kapi", "-o", "json"]);
    assert_eq!(
        rendered["items"][0]["metadata"]["namespace"], namespace,
        "{seed}: {rendered}"
    );
    assert_eq!(destinations.len(), 2, "{seed}: {destinations:?}");
    for destination in destinations {
        assert!(
            destination.starts_with(&format!("{namespace}/calico-apiserver-")),
            "{seed}: {destination}"
        );
    }
}

#[test]
fn check_and_the_lockdown_preflight_list_each_familys_critical_flows() {
    for family in FAMILIES {
        let c = family_cluster(family);
        let seed = family.seed;
        let (_, report) = json_of(&c, &["check", "-o", "json"]);
        let goldmane = flows(&report, "nodes-to-goldmane");
        let whisker = flows(&report, "whisker-to-goldmane");
        let webhooks = flows(&report, "apiserver-to-admission-webhooks");
        if family.flow_logs {
            // Felix on each of the three nodes, and Whisker, to the Goldmane pod on tcp/7443.
            assert_eq!(goldmane.len(), 3, "{seed}: {goldmane:?}");
            assert_eq!(whisker.len(), 1, "{seed}: {whisker:?}");
            for flow in goldmane.iter().chain(&whisker) {
                assert_eq!(flow["protocol"], "tcp/7443", "{seed}");
                assert_eq!(
                    flow["destination"],
                    "calico-system/goldmane-7d4c9b8f6-r5tq2"
                );
            }
        } else {
            assert!(goldmane.is_empty() && whisker.is_empty(), "{seed}");
        }
        if family.webhooks {
            assert_eq!(webhooks.len(), 1, "{seed}: {webhooks:?}");
            assert_eq!(webhooks[0]["source"], "control");
            assert_eq!(
                webhooks[0]["destination"],
                "calico-system/calico-webhooks-7d4c9b8f6-x2wpl"
            );
            assert_eq!(webhooks[0]["protocol"], "tcp/6443");
        } else {
            assert!(webhooks.is_empty(), "{seed}: {webhooks:?}");
        }
        assert_preflight_lists(&c, family, report["flows"].as_array().unwrap().len());
    }
}

/// Lockdown's preflight on the unhardened family: it refuses (no stage is applied) and lists
/// its checks, the critical flows and Calico's fail-closed webhooks among them; nothing is
/// written.
fn assert_preflight_lists(c: &ClusterGuard, family: &Family, flow_count: usize) {
    let seed = family.seed;
    let mark = c.audit_mark();
    let refused = calico_harden(c, &["lockdown", "--yes"]);
    assert_eq!(refused.code, 1, "{seed}: {}", refused.stderr);
    let out = format!("{}{}", refused.stdout, refused.stderr);
    let flows_line =
        format!("ok   critical flows: all {flow_count} critical flows stay allowed after lockdown");
    assert!(out.contains(&flows_line), "{seed}: {flows_line}\n{out}");
    let webhooks_line = if family.webhooks {
        format!(
            "ok   admission webhooks: the API server still reaches {WEBHOOKS}/validate.projectcalico.org after lockdown"
        )
    } else {
        "ok   admission webhooks: no Calico admission webhook with failurePolicy Fail".to_string()
    };
    assert!(
        out.contains(&webhooks_line),
        "{seed}: {webhooks_line}\n{out}"
    );
    assert!(
        c.writes_since(&mark).is_empty(),
        "{seed}: a refusal writes nothing"
    );
}

#[test]
fn a_deny_in_the_familys_own_tier_decides_before_the_default_tier() {
    for family in FAMILIES {
        let c = family_cluster(family);
        let seed = family.seed;
        let tiers = c.get_json(&["tiers.projectcalico.org"]);
        let names: Vec<&str> = tiers["items"]
            .as_array()
            .expect("tiers")
            .iter()
            .filter_map(|t| t["metadata"]["name"].as_str())
            .collect();
        assert!(names.contains(&"default"), "{seed}: {names:?}");
        let Some(tier) = family.admin_tier else {
            continue;
        };
        assert!(names.contains(&tier), "{seed}: {names:?}");
        let create =
            |object: Value| c.kubectl_stdin_ok(&["create", "-f", "-"], &object.to_string());
        create(
            json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "allow-dns"},
            "spec": {"order": 1, "selector": "k8s-app == 'kube-dns'", "types": ["Ingress"],
                     "ingress": [{"action": "Allow"}]}}),
        );
        let deny = format!("{tier}.deny-dns-tcp");
        create(
            json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": deny},
            "spec": {"tier": tier, "order": 1, "selector": "k8s-app == 'kube-dns'",
                     "types": ["Ingress"],
                     "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [53]}}]}}),
        );
        let (code, report) = json_of(&c, &["check", "-o", "json"]);
        assert_eq!(code, 1, "{seed}: DNS over TCP is lost");
        let dns = flows(&report, "pods-to-dns");
        assert!(!dns.is_empty(), "{seed}");
        for flow in dns {
            if flow["protocol"] == "tcp/53" {
                assert_eq!(
                    flow["now"]["decided_by"],
                    format!("GlobalNetworkPolicy/{deny} ingress rule 1 (Deny)"),
                    "{seed}: {flow}"
                );
            } else {
                assert_eq!(flow["now"]["allowed"], true, "{seed}: {flow}");
            }
        }
    }
}

const TEMPLATE_FLAGS: [&str; 4] = [
    "--template",
    "control-plane:has(node-role.kubernetes.io/control-plane)",
    "--template-cidr",
    "control-plane:10.0.0.0/24",
];
const PATTERN_FLAGS: [&str; 2] = ["--interface-pattern", "control-plane:^eth0$"];

#[test]
fn enable_hep_templates_and_interface_patterns_only_where_the_release_reads_them() {
    for family in FAMILIES {
        let c = family_cluster(family);
        let seed = family.seed;
        let mut with_pattern = TEMPLATE_FLAGS.to_vec();
        with_pattern.extend(PATTERN_FLAGS);
        for (flags, supported, needs) in [
            (&TEMPLATE_FLAGS[..], family.templates, "v3.30"),
            (&with_pattern[..], family.interface_pattern, "v3.31"),
        ] {
            if supported {
                continue;
            }
            let mark = c.audit_mark();
            let mut args = vec!["enable-hep", "--yes"];
            args.extend_from_slice(flags);
            let refused = calico_harden(&c, &args);
            assert_eq!(refused.code, 1, "{seed} {flags:?}: {}", refused.stderr);
            assert!(
                refused
                    .stderr
                    .contains(&format!("needs Calico {needs} or later"))
                    && refused.stderr.contains(&format!(
                        "this cluster runs Calico {} (from ClusterInformation default)",
                        family.version
                    )),
                "{seed} {flags:?}: {}",
                refused.stderr
            );
            assert!(
                c.writes_since(&mark).is_empty(),
                "{seed}: refused before any write"
            );
        }
        if family.templates {
            accept_templates(
                &c,
                family,
                if family.interface_pattern {
                    &with_pattern
                } else {
                    &TEMPLATE_FLAGS
                },
            );
        }
    }
}

/// The templates land in KubeControllersConfiguration `default`; on the aggregated families the
/// real calico-kube-controllers then makes exactly the predicted host endpoints.
fn accept_templates(c: &ClusterGuard, family: &Family, flags: &[&str]) {
    let seed = family.seed;
    let mut args = vec!["enable-hep", "--yes"];
    if family.plane == Seed::Lab {
        args.extend(["--wait", "--timeout", "60s"]);
    }
    args.extend_from_slice(flags);
    let run = succeed(calico_harden(c, &args), seed);
    if family.plane == Seed::Lab {
        assert!(
            run.stderr
                .contains("every predicted host endpoint is in place"),
            "{seed}: {}",
            run.stderr
        );
        let heps = c.get_json(&["hostendpoints.projectcalico.org"]);
        let names: Vec<&str> = heps["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|h| h["metadata"]["name"].as_str())
            .collect();
        assert!(names.contains(&"control-auto-hep"), "{seed}: {names:?}");
    }
    let kcc = c.get_json(&["kubecontrollersconfigurations.projectcalico.org", "default"]);
    let template = &kcc["spec"]["controllers"]["node"]["hostEndpoint"]["templates"][0];
    assert_eq!(template["generateName"], "control-plane", "{seed}: {kcc}");
    assert_eq!(template["interfaceCIDRs"], json!(["10.0.0.0/24"]), "{seed}");
    let pattern = template
        .get("interfacePattern")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        pattern,
        if family.interface_pattern {
            json!("^eth0$")
        } else {
            Value::Null
        },
        "{seed}"
    );
}

/// Removes egress rules of the stage's GlobalNetworkPolicy `calico-components-to-apiserver`
/// (by index, highest first), as a hand edit would.
fn remove_components_rules(c: &ClusterGuard, indices: &[usize]) {
    let ops: Vec<Value> = indices
        .iter()
        .map(|i| json!({"op": "remove", "path": format!("/spec/egress/{i}")}))
        .collect();
    c.kubectl_ok(&[
        "patch",
        "globalnetworkpolicies.projectcalico.org",
        "calico-components-to-apiserver",
        "--type=json",
        "-p",
        &Value::Array(ops).to_string(),
    ]);
}

fn after_lockdown(c: &ClusterGuard, category: &str) -> (i32, Vec<Value>) {
    let (code, report) = json_of(c, &["check", "--after", "lockdown", "-o", "json"]);
    let found: Vec<Value> = flows(&report, category).into_iter().cloned().collect();
    assert!(!found.is_empty(), "no {category} flow: {report:#}");
    (code, found)
}

#[test]
fn on_a_3_30_cluster_the_stages_let_felix_reach_goldmane_and_lockdown_passes_its_preflight() {
    let c = family_cluster(&CALICO_3_30);
    succeed(calico_harden(&c, &["up", "--yes"]), "up");
    succeed(
        calico_harden(&c, &["enable-hep", "--wait", "--yes", "--timeout", "60s"]),
        "enable-hep",
    );
    let (code, goldmane) = after_lockdown(&c, "nodes-to-goldmane");
    assert_eq!(code, 0, "no critical flow is lost: {goldmane:#?}");
    // Without the stage's Goldmane and DNS rules (2 to 4), Felix would lose Goldmane.
    remove_components_rules(&c, &[3, 2, 1]);
    let (code, goldmane) = after_lockdown(&c, "nodes-to-goldmane");
    assert_eq!(code, 1);
    // Goldmane runs on node2: its own host reaches a local pod without leaving through its
    // host endpoint.
    for flow in &goldmane {
        let remote = flow["source"] != "node2";
        assert_eq!(flow["after"]["allowed"], !remote, "{flow}");
    }
    succeed(
        calico_harden(&c, &["hosts-to-calico-apiserver", "--yes"]),
        "re-running the stage",
    );
    let locked = succeed(calico_harden(&c, &["lockdown", "--yes"]), "lockdown");
    let out = format!("{}{}", locked.stdout, locked.stderr);
    assert!(
        out.contains("critical flows stay allowed after lockdown"),
        "{out}"
    );
}

#[test]
fn on_3_32_the_stages_let_the_api_server_reach_calicos_webhooks_without_failsafe_ports() {
    let c = family_cluster(&CALICO_3_32_NATIVE);
    succeed(calico_harden(&c, &["up", "--yes"]), "up");
    // Felix's failsafe ports no longer carry the webhooks' 6443 out of the control plane: only
    // the stage's rule does.
    c.kubectl_ok(&[
        "patch",
        "felixconfigurations.projectcalico.org",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec": {"failsafeOutboundHostPorts": [{"protocol": "UDP", "port": 53}]}}"#,
    ]);
    let (_, webhooks) = after_lockdown(&c, "apiserver-to-admission-webhooks");
    assert_eq!(webhooks.len(), 1, "{webhooks:#?}");
    assert_eq!(webhooks[0]["after"]["allowed"], true, "{}", webhooks[0]);
    // No calico-apiserver here: Goldmane, DNS over UDP and TCP, then the webhooks' rule.
    remove_components_rules(&c, &[3]);
    let (_, webhooks) = after_lockdown(&c, "apiserver-to-admission-webhooks");
    assert_eq!(webhooks[0]["after"]["allowed"], false, "{}", webhooks[0]);
}

#[test]
fn the_recorded_version_falls_back_to_the_image_tag_like_plan() {
    let c = family_cluster(&CALICO_3_28);
    // calico-node has not written its release yet (ClusterInformation without calicoVersion).
    c.kubectl_ok(&[
        "patch",
        "clusterinformations.crd.projectcalico.org",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec": {"calicoVersion": null}}"#,
    ]);
    let plan = succeed(calico_harden(&c, &["plan"]), "plan").stdout;
    assert!(
        plan.contains("calico version:      v3.28.2 (from calico-node image)"),
        "{plan}"
    );
    succeed(calico_harden(&c, &["localhost", "--yes"]), "localhost");
    let (_, history) = json_of(&c, &["history", "-o", "json"]);
    let newest = history
        .as_array()
        .and_then(|r| r.last())
        .expect("a revision");
    assert_eq!(newest["calico_version"], "v3.28.2", "{newest}");
}

#[test]
fn an_upgrade_from_3_28_to_3_30_names_the_stage_that_renders_differently_now() {
    let c = family_cluster(&CALICO_3_28);
    succeed(calico_harden(&c, &["up", "--yes"]), "up");
    // The upgrade as the operator makes it: Goldmane deployed, then calico-node's start-up
    // writes the new release into ClusterInformation (the next reset puts both back).
    c.kubectl_stdin_ok(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "goldmane-7d4c9b8f6-r5tq2", "namespace": "calico-system",
                         "labels": {"k8s-app": "goldmane", "app.kubernetes.io/name": "goldmane"}},
            "spec": {"nodeName": "node2", "serviceAccountName": "default",
                     "containers": [{"name": "goldmane", "image": "quay.io/calico/goldmane:v3.30.3",
                                     "ports": [{"name": "goldmane", "containerPort": 7443}]}]}})
        .to_string(),
    );
    c.kubectl_ok(&[
        "patch",
        "clusterinformations.crd.projectcalico.org",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec": {"calicoVersion": "v3.30.3"}}"#,
    ]);
    let (_, plan) = json_of(&c, &["plan", "-o", "json"]);
    let upgrades = plan["calico_upgrades"].as_array().expect("calico_upgrades");
    assert_eq!(upgrades.len(), 1, "{plan:#}");
    assert_eq!(upgrades[0]["from"], CALICO_3_28.version);
    assert_eq!(upgrades[0]["to"], CALICO_3_30.version);
    assert_eq!(
        upgrades[0]["stages"],
        // Nobody edited it: it renders differently now, and so differs from the live object.
        json!([{"stage": "hosts-to-calico-apiserver", "drifted": true, "rendering_changed": true,
                "rerun": "kubectl calico-harden hosts-to-calico-apiserver"}]),
        "only the stage that now also allows Felix -> Goldmane: {plan:#}"
    );
    succeed(
        calico_harden(&c, &["hosts-to-calico-apiserver", "--yes"]),
        "re-running the stage",
    );
    let (_, plan) = json_of(&c, &["plan", "-o", "json"]);
    assert_eq!(plan["calico_upgrades"], json!([]), "{plan:#}");
}
