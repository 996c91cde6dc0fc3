//! `lockdown --nodes`: a canary lockdown of some nodes' host endpoints.
//!
//! On the plain lab: plan's "partial (node1)", a full lockdown completing it, rollback of either,
//! the refusal when a host endpoint lacks the labels the narrowed safety net relies on, and bad
//! selectors refused before any request. On the dataplane lab (root): real packets through Felix
//! to and from the canary node and the others, before and after each step, against `explain`'s
//! verdicts and `check`'s critical flows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dataplane_e2e::{dataplane_available, probe, probe_side};
use crate::harness::{self, ClusterGuard, Seed};
use crate::stages_e2e::{calico_harden, ok, with_kubeconfig};

const CANARY: &str = "kubernetes.io/hostname=node1";
const NARROWED: &str = "has(projectcalico.org/namespace) || !(kubernetes.io/hostname == \"node1\")";
const SAFETY_NET: [&str; 2] = ["final-allow-everything", "log-everything"];

fn harden(c: &ClusterGuard) {
    ok(c, &["up", "--yes"]);
    ok(c, &["enable-hep", "--wait", "--yes"]);
}

/// The safety-net policies' selectors (None: no selector), or None when a policy is gone.
fn safety_net_selectors(c: &ClusterGuard) -> Vec<Option<Option<String>>> {
    SAFETY_NET
        .iter()
        .map(|name| {
            let out = c.kubectl(&[
                "get",
                "globalnetworkpolicies.projectcalico.org",
                name,
                "-o",
                "json",
            ]);
            out.status.success().then(|| {
                let gnp: Value = serde_json::from_slice(&out.stdout).unwrap();
                gnp["spec"]["selector"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            })
        })
        .collect()
}

fn narrowed() -> Vec<Option<Option<String>>> {
    vec![Some(Some(NARROWED.to_string())); 2]
}

fn full_safety_net() -> Vec<Option<Option<String>>> {
    vec![Some(None); 2]
}

/// The newest revision whose command line contains `command`.
fn revision_of(c: &ClusterGuard, command: &str) -> String {
    let history: Value = serde_json::from_str(&ok(c, &["history", "-o", "json"]).stdout).unwrap();
    history
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"].as_str().unwrap_or_default().contains(command))
        .map(|r| r["revision"].as_u64().unwrap())
        .max()
        .unwrap_or_else(|| panic!("no revision of {command} in {history}"))
        .to_string()
}

fn plan_stage(c: &ClusterGuard, stage: &str) -> Value {
    let plan: Value = serde_json::from_str(&ok(c, &["plan", "-o", "json"]).stdout).unwrap();
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage)
        .unwrap_or_else(|| panic!("{stage} not in plan"))
        .clone()
}

#[test]
fn canary_lockdown_is_partial_until_a_full_lockdown_completes_it_and_rollback_undoes_each() {
    let c = harness::cluster(Seed::Lab);
    harden(&c);
    let canary = ok(&c, &["lockdown", "--nodes", CANARY, "--yes"]);
    assert!(
        canary
            .stderr
            .contains("canary node node1: default deny on HostEndpoint node1-auto-hep"),
        "{}",
        canary.stderr
    );
    assert!(
        canary.stderr.contains(
            "lockdown confirmed: default deny is in force on the host endpoints of node1"
        ),
        "{}",
        canary.stderr
    );
    assert_eq!(safety_net_selectors(&c), narrowed());

    let lockdown = plan_stage(&c, "lockdown");
    assert_eq!(lockdown["state"], "partial", "{lockdown}");
    assert_eq!(lockdown["locked_nodes"], serde_json::json!(["node1"]));
    assert_eq!(plan_stage(&c, "safety-net")["state"], "applied");
    let table = ok(&c, &["status"]).stdout;
    let row = table
        .lines()
        .find(|l| l.starts_with("lockdown "))
        .unwrap_or_else(|| panic!("no lockdown row:\n{table}"));
    assert!(row.contains("partial (node1)"), "{row}");
    assert!(
        table.contains("next step: kubectl calico-harden lockdown completes the canary"),
        "{table}"
    );
    // The same canary again changes nothing.
    let mark = c.audit_mark();
    let again = ok(&c, &["lockdown", "--nodes", CANARY, "--yes"]);
    assert!(
        again.stderr.contains("the canary is already in force"),
        "{}",
        again.stderr
    );
    assert!(c.writes_since(&mark).is_empty());
    // Every critical flow is still allowed with node1 under default deny.
    ok(&c, &["check"]);

    let full = ok(&c, &["lockdown", "--yes"]);
    assert!(
        full.stderr
            .contains("completing the canary lockdown of node1"),
        "{}",
        full.stderr
    );
    assert_eq!(safety_net_selectors(&c), vec![None, None]);
    assert_eq!(plan_stage(&c, "lockdown")["state"], "applied");
    assert_eq!(plan_stage(&c, "safety-net")["state"], "removed");

    // A rollback returns to the canary; rolling back to before it, to the safety net everywhere.
    ok(&c, &["rollback", "--yes"]);
    assert_eq!(safety_net_selectors(&c), narrowed());
    assert_eq!(plan_stage(&c, "lockdown")["state"], "partial");
    ok(
        &c,
        &["rollback", "--to", &revision_of(&c, "enable-hep"), "--yes"],
    );
    assert_eq!(safety_net_selectors(&c), full_safety_net());
    let lockdown = plan_stage(&c, "lockdown");
    assert_eq!(lockdown["state"], "missing", "{lockdown}");
    assert!(lockdown.get("locked_nodes").is_none(), "{lockdown}");
}

#[test]
fn canary_lockdown_refuses_host_endpoints_that_lack_the_node_labels() {
    let c = harness::cluster(Seed::Lab);
    harden(&c);
    // A host endpoint made by hand: it carries none of node1's labels, so the narrowed safety
    // net would still select it and node1 would stay half open.
    c.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: node1-eth0
spec:
  node: node1
  interfaceName: eth0
  expectedIPs: [10.0.0.2]
",
    );
    let mark = c.audit_mark();
    let refused = calico_harden(&c, &["lockdown", "--nodes", CANARY, "--yes"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("HostEndpoint node1-eth0 of node node1 does not carry the labels"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("refused") && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert!(c.writes_since(&mark).is_empty());
    assert_eq!(safety_net_selectors(&c), full_safety_net());

    // A selector no node matches is refused the same way.
    let nobody = calico_harden(
        &c,
        &[
            "lockdown",
            "--nodes",
            "node-role.kubernetes.io/canary",
            "--yes",
        ],
    );
    assert_eq!(nobody.code, 1, "{}", nobody.stderr);
    assert!(
        nobody.stderr.contains(
            "no node matches --nodes node-role.kubernetes.io/canary (nodes: control, node1, node2)"
        ),
        "{}",
        nobody.stderr
    );
    // --force overrides failed preflight checks, never a canary that would not do what it says.
    let forced = calico_harden(&c, &["lockdown", "--nodes", CANARY, "--force", "--yes"]);
    assert_eq!(forced.code, 1, "{}", forced.stderr);
    assert!(c.writes_since(&mark).is_empty());
    assert_eq!(plan_stage(&c, "lockdown")["state"], "missing");
}

#[test]
fn canary_lockdown_rejects_bad_selectors_before_any_request() {
    let c = harness::cluster(Seed::Lab);
    harden(&c);
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens here: a usage error proves the selector was refused before connecting.
    let unreachable = dir.path().join("unreachable");
    let config = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let mut parsed: Value = serde_saphyr::from_str(&config).unwrap();
    for cluster in parsed["clusters"].as_array_mut().unwrap() {
        cluster["cluster"]["server"] = "https://127.0.0.1:1".into();
    }
    std::fs::write(&unreachable, serde_json::to_string(&parsed).unwrap()).unwrap();
    let mark = c.audit_mark();
    for (selector, says) in [
        ("", "an empty selector selects every node"),
        ("kubernetes.io/hostname=node1,", "a trailing ','"),
        ("node-cpu>4", "compares numbers"),
        ("zone in eu", "expected '(' and a list of values"),
        ("zone in ()", "is empty"),
        ("Bad Key=x", "expected =, ==, !=, in or notin after Bad"),
        (
            "kubernetes.io/hostname=node1!",
            "expected ',' between requirements",
        ),
        ("example.com/-x=y", "is not a label key"),
        ("role=canary/1", "is not a label value"),
    ] {
        for kubeconfig in [c.kubeconfig(), unreachable.as_path()] {
            let run = with_kubeconfig(kubeconfig, &["lockdown", "--nodes", selector, "--yes"], &[]);
            assert_eq!(run.code, 2, "{selector:?}: {}", run.stderr);
            assert!(
                run.stderr.contains("invalid --nodes") && run.stderr.contains(says),
                "{selector:?}: {}",
                run.stderr
            );
        }
    }
    assert!(c.writes_since(&mark).is_empty());
    assert_eq!(safety_net_selectors(&c), full_safety_net());
}

// The dataplane lab: real packets through one Felix per node.

/// A port no stage allows: only the safety net lets it through.
const CLOSED_PORT: &str = "tcp/9999";
/// How long Felix gets to enforce a step before a disagreement counts.
const CONVERGENCE: Duration = Duration::from_secs(15);

/// One NEW connection through the lab: allowed or denied.
fn packet(c: &ClusterGuard, from: &str, to: &str, port: &str) -> bool {
    probe(c, from, to, port, "1s").0
}

/// `explain`'s verdict for one flow.
fn explained(c: &ClusterGuard, from: &str, to: &str, port: &str) -> bool {
    let run = calico_harden(c, &["explain", from, to, port, "-o", "json"]);
    let explanation: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("explain printed no JSON ({e}): {}", run.stderr));
    explanation["allowed"].as_bool().expect("allowed")
}

/// Probes until the packet agrees with `expected` or CONVERGENCE has passed; the last verdict
/// and how long it took.
fn packet_until(
    c: &ClusterGuard,
    from: &str,
    to: &str,
    port: &str,
    expected: bool,
    since: Instant,
) -> (bool, Duration) {
    loop {
        let allowed = packet(c, &probe_side(from), &probe_side(to), port);
        if allowed == expected || since.elapsed() > CONVERGENCE {
            return (allowed, since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every critical flow `check` lists, its verdict against the packet's: how many, and the
/// disagreements. One thread per destination and port (the probe listens there for the
/// duration), flows to the same listener one after the other.
fn critical_flow_disagreements(c: &ClusterGuard) -> (usize, Vec<String>) {
    let since = Instant::now();
    let run = calico_harden(c, &["check", "-o", "json"]);
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("check -o json printed no JSON ({e}): {}", run.stderr));
    let mut groups: BTreeMap<(String, String), Vec<(String, bool)>> = BTreeMap::new();
    let flows = report["flows"].as_array().expect("flows");
    for f in flows {
        let protocol = f["protocol"].as_str().unwrap().to_string();
        assert!(
            protocol.starts_with("tcp/") || protocol.starts_with("udp/"),
            "cannot probe {protocol} (the lab's pool is VXLAN: no IPIP flows expected)"
        );
        groups
            .entry((f["destination"].as_str().unwrap().to_string(), protocol))
            .or_default()
            .push((
                f["source"].as_str().unwrap().to_string(),
                f["now"]["allowed"].as_bool().unwrap(),
            ));
    }
    let disagreements = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .iter()
            .map(|((to, port), sources)| {
                s.spawn(move || {
                    sources
                        .iter()
                        .filter_map(|(from, expected)| {
                            let (allowed, _) = packet_until(c, from, to, port, *expected, since);
                            (allowed != *expected).then(|| {
                                format!(
                                    "{from} -> {to} {port}: check says {}, the packet was {}",
                                    verdict(*expected),
                                    verdict(allowed)
                                )
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("probe thread"))
            .collect()
    });
    (flows.len(), disagreements)
}

#[test]
fn canary_lockdown_denies_packets_on_the_canary_node_only() {
    if !dataplane_available("canary_lockdown_denies_packets_on_the_canary_node_only") {
        return;
    }
    let c = harness::dataplane_cluster();
    // The flows on the closed port: into and out of node1, and between the other nodes.
    let flows = [
        ("node2", "node1"),
        ("control", "node1"),
        ("node1", "node2"),
        ("control", "node2"),
        ("node2", "control"),
    ];
    // Expected verdicts per step, in the order of `flows`. Default deny on node1's host
    // endpoint covers its egress too: node1 -> node2 is denied at node1.
    let all_open = [true; 5];
    let canary = [false, false, false, true, true];
    let all_closed = [false; 5];
    harden(&c);
    let before_canary = revision_of(&c, "enable-hep");
    let steps: [(&str, &[&str], [bool; 5]); 7] = [
        ("up, enable-hep", &[], all_open),
        (
            "lockdown --nodes node1",
            &["lockdown", "--nodes", CANARY, "--yes"],
            canary,
        ),
        ("rollback", &["rollback", "--yes"], all_open),
        (
            "lockdown --nodes node1",
            &["lockdown", "--nodes", CANARY, "--yes"],
            canary,
        ),
        ("lockdown (completes)", &["lockdown", "--yes"], all_closed),
        ("rollback (canary again)", &["rollback", "--yes"], canary),
        (
            "rollback --to (safety net)",
            &["rollback", "--to", &before_canary, "--yes"],
            all_open,
        ),
    ];
    let mut report = format!("canary lockdown on the dataplane lab, {CLOSED_PORT}:\n");
    let mut failures = Vec::new();
    for (step, args, expected) in steps {
        if !args.is_empty() {
            ok(&c, args);
        }
        let since = Instant::now();
        let mut line = format!("  {step:<26}");
        for ((from, to), want) in flows.iter().zip(expected) {
            let check = explained(&c, from, to, CLOSED_PORT);
            let (allowed, took) = packet_until(&c, from, to, CLOSED_PORT, check, since);
            line.push_str(&format!(
                " {from}->{to} {} (t+{:.1}s)",
                if allowed { "allowed" } else { "DENIED" },
                took.as_secs_f64()
            ));
            if check != want {
                failures.push(format!(
                    "{step}: explain says {from} -> {to} {CLOSED_PORT} is {}, expected {}",
                    verdict(check),
                    verdict(want)
                ));
            }
            if allowed != check {
                failures.push(format!(
                    "{step}: {from} -> {to} {CLOSED_PORT}: the packet was {}, explain says {}",
                    verdict(allowed),
                    verdict(check)
                ));
            }
        }
        let (critical, disagreements) = critical_flow_disagreements(&c);
        line.push_str(&format!(
            "; critical flows: {critical} probed, {} disagree with check\n",
            disagreements.len()
        ));
        report.push_str(&line);
        failures.extend(disagreements.into_iter().map(|d| format!("{step}: {d}")));
    }
    eprint!("{report}");
    assert!(failures.is_empty(), "{}\n{report}", failures.join("\n"));
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "denied" }
}
