//! The plugin's verdicts against real packets. On the dataplane lab (the lab's
//! nodes and pods as network namespaces, one real calico-felix v3.31.0 per
//! node programming iptables; tests/controlplane/dataplane.go) the suite runs
//! the walk-through (`up`, `enable-hep --wait`, `lockdown`, `rollback --all`)
//! and after each step probes every critical flow `check -o json` lists with
//! one NEW connection (`controlplane probe`, what `cargo xtask probe` runs),
//! then compares: check's verdict and the packet's must agree, for allowed and
//! denied flows alike.
//!
//! Needs root, iptables, ipset, conntrack and iproute2. Without them the
//! tests say so on stderr and return, unless CALICO_HARDEN_DATAPLANE=required
//! (CI sets it), which makes a missing prerequisite a failure.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, ClusterGuard};

const REQUIRED_VAR: &str = "CALICO_HARDEN_DATAPLANE";
const TOOLS: &[&str] = &[
    "ip",
    "iptables",
    "iptables-save",
    "ipset",
    "conntrack",
    "sysctl",
];
/// How long a probe waits before calling the flow denied.
const PROBE_TIMEOUT: &str = "1s";
/// How long Felix gets to enforce a step before a disagreement counts.
const CONVERGENCE: Duration = Duration::from_secs(15);

fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubectl-calico_harden"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
            || ["/usr/sbin", "/sbin"]
                .iter()
                .any(|d| PathBuf::from(d).join(tool).is_file())
    })
}

/// What the dataplane lab needs and this machine lacks.
fn dataplane_missing() -> Vec<String> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root".to_string());
    }
    missing.extend(
        TOOLS
            .iter()
            .filter(|t| !on_path(t))
            .map(|t| (*t).to_string()),
    );
    missing
}

/// False (after saying why) when the lab cannot run here and nobody asked for
/// it; panics when CALICO_HARDEN_DATAPLANE=required.
pub fn dataplane_available(test: &str) -> bool {
    let missing = dataplane_missing();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "the dataplane lab needs {} (apt-get install iptables ipset conntrack iproute2 procps; run as root)",
        missing.join(", ")
    );
    if std::env::var(REQUIRED_VAR).as_deref() == Ok("required") {
        panic!("{test}: {message}; {REQUIRED_VAR}=required");
    }
    eprintln!("{test}: NOT RUN: {message}. Set {REQUIRED_VAR}=required to make this a failure.");
    false
}

/// One critical flow of `check -o json`.
#[derive(Clone, Debug)]
struct Flow {
    source: String,
    destination: String,
    protocol: String,
    allowed: bool,
    decided_by: String,
}

impl Flow {
    fn label(&self) -> String {
        format!("{} -> {} {}", self.source, self.destination, self.protocol)
    }
}

/// A side of a flow as `controlplane probe` names it.
pub fn probe_side(name: &str) -> String {
    if name.contains('/') {
        format!("pod/{name}")
    } else if name.parse::<IpAddr>().is_ok() {
        name.to_string()
    } else {
        format!("node/{name}")
    }
}

fn check_flows(c: &ClusterGuard) -> Vec<Flow> {
    let out = c
        .command(plugin())
        .args(["check", "-o", "json"])
        .output()
        .expect("running check");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check -o json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    report["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .map(|f| Flow {
            source: f["source"].as_str().expect("source").to_string(),
            destination: f["destination"].as_str().expect("destination").to_string(),
            protocol: f["protocol"].as_str().expect("protocol").to_string(),
            allowed: f["now"]["allowed"].as_bool().expect("now.allowed"),
            decided_by: f["now"]["decided_by"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

/// One probe: the packet's verdict and how long it took.
pub fn probe(
    c: &ClusterGuard,
    from: &str,
    to: &str,
    port: &str,
    timeout: &str,
) -> (bool, Duration) {
    let start = Instant::now();
    let out = Command::new(harness::bin_dir().join("controlplane"))
        .args(["probe", "--dir"])
        .arg(c.dir())
        .args([
            "--from",
            from,
            "--to",
            to,
            "--port",
            port,
            "--timeout",
            timeout,
        ])
        .output()
        .expect("running controlplane probe");
    let took = start.elapsed();
    match out.status.code() {
        Some(0) => (true, took),
        Some(1) => (false, took),
        _ => panic!(
            "probe {from} -> {to} {port} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[derive(Default)]
struct ProbeTimes {
    allowed: Vec<Duration>,
    denied: Vec<Duration>,
}

impl ProbeTimes {
    fn add(&mut self, allowed: bool, took: Duration) {
        if allowed {
            self.allowed.push(took);
        } else {
            self.denied.push(took);
        }
    }
}

fn mean_ms(times: &[Duration]) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    times.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / times.len() as f64
}

/// Probes `flows` in parallel: one thread per destination and port, flows to
/// the same listener one after the other (each probe opens and closes it).
fn probe_all(c: &ClusterGuard, flows: &[Flow], times: &mut ProbeTimes) -> Vec<bool> {
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, f) in flows.iter().enumerate() {
        assert!(
            f.protocol.starts_with("tcp/") || f.protocol.starts_with("udp/"),
            "cannot probe {} (the lab's pool is VXLAN: no IPIP flows expected)",
            f.label()
        );
        groups
            .entry((f.destination.clone(), f.protocol.clone()))
            .or_default()
            .push(i);
    }
    let mut verdicts = vec![false; flows.len()];
    let results: Vec<(usize, bool, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .values()
            .map(|members| {
                s.spawn(move || {
                    members
                        .iter()
                        .map(|&i| {
                            let f = &flows[i];
                            let (allowed, took) = probe(
                                c,
                                &probe_side(&f.source),
                                &probe_side(&f.destination),
                                &f.protocol,
                                PROBE_TIMEOUT,
                            );
                            (i, allowed, took)
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
    for (i, allowed, took) in results {
        verdicts[i] = allowed;
        times.add(allowed, took);
    }
    verdicts
}

struct StepResult {
    step: &'static str,
    flows: usize,
    allowed: usize,
    disagreements: Vec<String>,
    /// Flows check denies (and the packets, when they agree).
    denied: Vec<String>,
    /// Flows whose packets disagreed at first and agreed on a retry (Felix
    /// still applying the step).
    transient: Vec<String>,
    converged_after: Duration,
    round: Duration,
}

/// Probes every flow check lists until check and the packets agree or
/// CONVERGENCE has passed since the step finished.
fn compare(c: &ClusterGuard, step: &'static str, times: &mut ProbeTimes) -> StepResult {
    let since = Instant::now();
    let flows = check_flows(c);
    assert!(!flows.is_empty(), "check listed no flows after {step}");
    let round_start = Instant::now();
    let mut packets = probe_all(c, &flows, times);
    let round = round_start.elapsed();
    let first_disagreeing: Vec<usize> = (0..flows.len())
        .filter(|&i| packets[i] != flows[i].allowed)
        .collect();
    loop {
        let disagreeing: Vec<usize> = (0..flows.len())
            .filter(|&i| packets[i] != flows[i].allowed)
            .collect();
        if disagreeing.is_empty() || since.elapsed() > CONVERGENCE {
            let disagreements = disagreeing
                .iter()
                .map(|&i| {
                    let f = &flows[i];
                    format!(
                        "{}: check says {} ({}), the packet was {}",
                        f.label(),
                        if f.allowed { "allowed" } else { "denied" },
                        f.decided_by,
                        if packets[i] { "allowed" } else { "denied" }
                    )
                })
                .collect();
            let transient = first_disagreeing
                .iter()
                .filter(|i| !disagreeing.contains(i))
                .map(|&i| flows[i].label())
                .collect();
            return StepResult {
                step,
                flows: flows.len(),
                allowed: flows.iter().filter(|f| f.allowed).count(),
                disagreements,
                denied: flows
                    .iter()
                    .filter(|f| !f.allowed)
                    .map(Flow::label)
                    .collect(),
                transient,
                converged_after: since.elapsed(),
                round,
            };
        }
        std::thread::sleep(Duration::from_millis(300));
        let retry: Vec<Flow> = disagreeing.iter().map(|&i| flows[i].clone()).collect();
        let again = probe_all(c, &retry, times);
        for (k, &i) in disagreeing.iter().enumerate() {
            packets[i] = again[k];
        }
    }
}

fn run_plugin(c: &ClusterGuard, args: &[&str]) {
    let out = c
        .command(plugin())
        .args(args)
        .output()
        .expect("running the plugin");
    assert!(
        out.status.success(),
        "kubectl calico-harden {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn walkthrough_verdicts_match_packets() {
    if !dataplane_available("walkthrough_verdicts_match_packets") {
        return;
    }
    let c = harness::dataplane_cluster();
    let mut times = ProbeTimes::default();
    // The walk-through, then a lockdown forced too early (only the first
    // stages applied), where check predicts lost flows: denied verdicts are
    // compared with packets too.
    let steps: [(&'static str, &[&str]); 9] = [
        ("lab as seeded", &[]),
        ("up", &["up", "--yes"]),
        ("enable-hep", &["enable-hep", "--wait", "--yes"]),
        ("lockdown", &["lockdown", "--yes"]),
        ("rollback --all", &["rollback", "--all", "--yes"]),
        (
            "up --through isolate-apps",
            &["up", "--through", "isolate-apps", "--yes"],
        ),
        ("enable-hep", &["enable-hep", "--wait", "--yes"]),
        ("lockdown --force", &["lockdown", "--force", "--yes"]),
        ("rollback --all", &["rollback", "--all", "--yes"]),
    ];
    let mut results = Vec::new();
    for (step, args) in steps {
        if !args.is_empty() {
            run_plugin(&c, args);
        }
        results.push(compare(&c, step, &mut times));
    }
    let mut report = String::from("dataplane lab: check's verdicts against packets\n");
    let (mut probed, mut disagreeing) = (0, 0);
    for r in &results {
        probed += r.flows;
        disagreeing += r.disagreements.len();
        report.push_str(&format!(
            "  {:<26} {:>3} flows ({:>2} allowed, {:>2} denied by check), {} disagreements, first round {:.2}s, agreed after {:.2}s\n",
            r.step,
            r.flows,
            r.allowed,
            r.flows - r.allowed,
            r.disagreements.len(),
            r.round.as_secs_f64(),
            r.converged_after.as_secs_f64()
        ));
        for d in &r.disagreements {
            report.push_str(&format!("      {d}\n"));
        }
        for d in &r.denied {
            report.push_str(&format!("      denied: {d}\n"));
        }
        for t in &r.transient {
            report.push_str(&format!("      agreed on a retry: {t}\n"));
        }
    }
    report.push_str(&format!(
        "  {probed} flows probed ({} probes), {disagreeing} disagreements; a probe took {:.0} ms allowed (n={}), {:.0} ms denied (n={}, timeout {PROBE_TIMEOUT})\n",
        times.allowed.len() + times.denied.len(),
        mean_ms(&times.allowed),
        times.allowed.len(),
        mean_ms(&times.denied),
        times.denied.len()
    ));
    eprint!("{report}");
    assert_eq!(disagreeing, 0, "{report}");
    assert!(
        results.iter().any(|r| r.allowed < r.flows),
        "no step had a flow that check denies: the comparison proved nothing about denied flows\n{report}"
    );
}

/// From `kubectl apply` returning to the first packet that shows it, both
/// ways (a deny written, then deleted).
#[test]
fn policy_writes_reach_the_packets_within_seconds() {
    if !dataplane_available("policy_writes_reach_the_packets_within_seconds") {
        return;
    }
    let c = harness::dataplane_cluster();
    let from = "pod/app-frontend/frontend-5f7c9d8b6-2kqvx";
    let to = "pod/kube-system/coredns-7c65d6cfc9-4xk2p";
    let deny = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: probe-deny-frontend-dns
spec:
  order: 1
  selector: app == 'frontend'
  types: [Egress]
  egress:
  - action: Deny
    protocol: UDP
    destination: {ports: [53]}
";
    assert!(
        probe(&c, from, to, "udp/53", PROBE_TIMEOUT).0,
        "allowed before the policy"
    );
    let until = |want: bool| {
        let start = Instant::now();
        loop {
            if probe(&c, from, to, "udp/53", "150ms").0 == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the packet did not turn {} within 10 s",
                if want { "allowed" } else { "denied" }
            );
        }
    };
    let mut enforce = Vec::new();
    let mut lift = Vec::new();
    for _ in 0..3 {
        c.kubectl_stdin_ok(&["apply", "-f", "-"], deny);
        enforce.push(until(false));
        c.kubectl_ok(&[
            "delete",
            "globalnetworkpolicy.projectcalico.org",
            "probe-deny-frontend-dns",
        ]);
        lift.push(until(true));
    }
    eprintln!(
        "dataplane lab: policy write to enforcement {:?} ms (deny written), {:?} ms (deny deleted)",
        enforce.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        lift.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
}
