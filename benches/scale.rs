//! Fleet-scale benchmark: `plan`, `up`, every stage command (the policy stages, `registry` and
//! `enable-hep`) and `check` against the scale seed (2,000 nodes, 20,000 pods in 20 namespaces,
//! 1,000 GlobalNetworkPolicies, added to the lab by `controlplane scale-seed`), each next to
//! `kubectl get -o json` of the lists it reads and, for a stage command, next to `plan`, with
//! wall time and peak resident memory (GNU time's maximum RSS) per whole process run, since that
//! is what an operator waits for. `lockdown` is left out: it asks for the context name and a
//! confirmation that access still works, which a benchmark cannot give.
//!
//! `cargo bench --bench scale` (starts the test control plane through the e2e harness; Go 1.26+
//! and /usr/bin/time are required). `SCALE_BENCH_ROUNDS` (default 3) sets the runs per command;
//! the median time and the highest peak are reported.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{ClusterGuard, Seed};

const NODES: &str = "2000";
const PODS: &str = "20000";
const POLICIES: &str = "1000";
const GNU_TIME: &str = "/usr/bin/time";

/// The pods the facts come from, as the plugin lists them (facts::SYSTEM_POD_LABEL_SELECTOR).
const SYSTEM_PODS: &str =
    "k8s-app in (calico-apiserver,calico-typha,calico-kube-controllers,calico-node,kube-dns)";
/// Every kind but pods, as plan reads them.
const NON_POD_LISTS: &str = "nodes,namespaces,endpointslices.discovery.k8s.io,globalnetworkpolicies.projectcalico.org,networkpolicies.projectcalico.org,hostendpoints.projectcalico.org,ippools.projectcalico.org,kubecontrollersconfigurations.projectcalico.org,felixconfigurations.projectcalico.org,networkpolicies.networking.k8s.io";

struct Run {
    seconds: f64,
    peak_kib: u64,
}

/// One process run under GNU time: wall seconds and maximum resident set size.
fn measure(c: &ClusterGuard, program: &Path, args: &[&str]) -> Run {
    measure_exiting(c, program, args, &[0])
}

/// [`measure`] for a command whose exit code carries a verdict (`check` exits 1 when a
/// critical flow is denied, as the scale seed's policies make some).
fn measure_exiting(c: &ClusterGuard, program: &Path, args: &[&str], codes: &[i32]) -> Run {
    let report = tempfile::NamedTempFile::new().expect("temporary file");
    let out = c
        .command(GNU_TIME)
        .args(["-f", "%e %M", "-o"])
        .arg(report.path())
        .arg(program)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("{GNU_TIME} is required (apt-get install time): {e}"));
    assert!(
        out.status.code().is_some_and(|code| codes.contains(&code)),
        "{} {}: {}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(report.path()).expect("GNU time's report");
    // A non-zero exit adds a "Command exited with non-zero status" line before the figures.
    let mut fields = text
        .lines()
        .last()
        .expect("a report line")
        .split_whitespace();
    let run = Run {
        seconds: fields.next().and_then(|f| f.parse().ok()).expect("seconds"),
        peak_kib: fields.next().and_then(|f| f.parse().ok()).expect("KiB"),
    };
    eprintln!(
        "  {:>7.2}s {:>6} MiB  {} {}",
        run.seconds,
        run.peak_kib / 1024,
        program.file_name().unwrap_or_default().to_string_lossy(),
        args.join(" ")
    );
    run
}

/// Several kubectl runs that together list what one plugin command reads.
fn measure_kubectl(c: &ClusterGuard, lists: &[&[&str]]) -> Run {
    let kubectl = ClusterGuard::kubectl_path();
    lists.iter().fold(
        Run {
            seconds: 0.0,
            peak_kib: 0,
        },
        |total, args| {
            let mut full: Vec<&str> = args.to_vec();
            full.extend(["-o", "json"]);
            let run = measure(c, &kubectl, &full);
            Run {
                seconds: total.seconds + run.seconds,
                peak_kib: total.peak_kib.max(run.peak_kib),
            }
        },
    )
}

struct Summary {
    name: String,
    median: Duration,
    peak_mib: u64,
}

fn summarize(name: impl Into<String>, runs: &[Run]) -> Summary {
    let mut times: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    times.sort_by(f64::total_cmp);
    Summary {
        name: name.into(),
        median: Duration::from_secs_f64(times[times.len() / 2]),
        peak_mib: runs.iter().map(|r| r.peak_kib).max().unwrap_or(0) / 1024,
    }
}

/// The stage commands, each with the arguments it needs and the `kubectl-calico-harden/stage`
/// label of what it writes; some again with `--flows`.
const STAGE_COMMANDS: &[(&[&str], &str)] = &[
    (&["safety-net"], "safety-net"),
    (&["localhost"], "localhost"),
    (&["isolate-apps"], "isolate-apps"),
    (&["calico-apiserver-to-kapi"], "calico-apiserver-to-kapi"),
    (
        &["controllers-to-calico-apiserver"],
        "controllers-to-calico-apiserver",
    ),
    (&["hosts-to-calico-apiserver"], "hosts-to-calico-apiserver"),
    (&["nodes-to-kapi"], "nodes-to-kapi"),
    (&["srcnat-to-kapi"], "srcnat-to-kapi"),
    (&["nodes-to-typha"], "nodes-to-typha"),
    (&["kubelet"], "kubelet"),
    (&["controllers-to-kapi"], "controllers-to-kapi"),
    (&["registry", "--ip", "10.5.0.1"], "registry"),
    // With the flow report over every policy and the pods the stage's policies select.
    (&["localhost", "--flows"], "localhost"),
    (
        &["calico-apiserver-to-kapi", "--flows"],
        "calico-apiserver-to-kapi",
    ),
    (&["safety-net", "--flows"], "safety-net"),
    (&["isolate-apps", "--flows"], "isolate-apps"),
];

fn seed_scale(c: &ClusterGuard) {
    let seeded = c
        .command(harness::bin_dir().join("controlplane"))
        .args(["scale-seed", "--dir"])
        .arg(c.dir())
        .args(["--nodes", NODES, "--pods", PODS, "--policies", POLICIES])
        .output()
        .expect("controlplane scale-seed");
    assert!(
        seeded.status.success(),
        "scale-seed: {}",
        String::from_utf8_lossy(&seeded.stderr)
    );
}

/// Delete the policies the plugin wrote that `selector` selects.
fn undo(c: &ClusterGuard, selector: &str) {
    let out = c
        .command(ClusterGuard::kubectl_path())
        .args([
            "delete",
            "globalnetworkpolicies.projectcalico.org,networkpolicies.projectcalico.org",
            "-A",
            "-l",
            selector,
        ])
        .output()
        .expect("kubectl delete");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Turn automatic host endpoints off again and wait until kube-controllers removed them, so the
/// next round starts from the same cluster.
fn undo_enable_hep(c: &ClusterGuard, plugin: &Path) {
    let out = c
        .command(plugin)
        .args([
            "enable-hep",
            "--disable",
            "--wait",
            "--timeout",
            "10m",
            "--yes",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("enable-hep --disable");
    assert!(
        out.status.success(),
        "enable-hep --disable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const MANAGED: &str = "app.kubernetes.io/managed-by=kubectl-calico-harden";

/// One round: every command once, each from the seeded state.
fn round(c: &ClusterGuard, plugin: &Path, runs: &mut Runs) {
    let plan_lists: [&[&str]; 2] = [
        &["get", NON_POD_LISTS, "-A"],
        &["get", "pods", "-A", "-l", SYSTEM_PODS],
    ];
    let full_lists: [&[&str]; 2] = [plan_lists[0], &["get", "pods", "-A"]];
    runs.kubectl_plan.push(measure_kubectl(c, &plan_lists));
    runs.plan.push(measure(c, plugin, &["plan", "-o", "json"]));
    runs.up.push(measure(c, plugin, &["up", "--yes"]));
    undo(c, MANAGED);
    for (index, (args, stage)) in STAGE_COMMANDS.iter().enumerate() {
        let mut full: Vec<&str> = args.to_vec();
        full.push("--yes");
        runs.stages[index].push(measure(c, plugin, &full));
        undo(c, &format!("kubectl-calico-harden/stage={stage}"));
    }
    runs.kubectl_full.push(measure_kubectl(c, &full_lists));
    runs.check.push(measure_exiting(
        c,
        plugin,
        &["check", "-o", "json"],
        &[0, 1],
    ));
    runs.enable_hep
        .push(measure(c, plugin, &["enable-hep", "--yes"]));
    undo_enable_hep(c, plugin);
}

#[derive(Default)]
struct Runs {
    kubectl_plan: Vec<Run>,
    plan: Vec<Run>,
    up: Vec<Run>,
    stages: Vec<Vec<Run>>,
    enable_hep: Vec<Run>,
    kubectl_full: Vec<Run>,
    check: Vec<Run>,
}

fn main() {
    let rounds: usize = std::env::var("SCALE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    assert!(
        Path::new(GNU_TIME).exists(),
        "{GNU_TIME} is required to measure peak memory (apt-get install time)"
    );
    let c = harness::cluster(Seed::Lab);
    seed_scale(&c);
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-calico_harden"));
    let mut runs = Runs {
        stages: STAGE_COMMANDS.iter().map(|_| Vec::new()).collect(),
        ..Runs::default()
    };
    for number in 1..=rounds {
        eprintln!("scale bench: round {number}/{rounds}");
        round(&c, &plugin, &mut runs);
    }
    let kubectl_plan = summarize("kubectl get (plan's lists)", &runs.kubectl_plan);
    let plan = summarize("plan -o json", &runs.plan);
    let kubectl_full = summarize("kubectl get (every pod, check's lists)", &runs.kubectl_full);
    let mut stages = vec![summarize("up --yes", &runs.up)];
    stages.extend(
        STAGE_COMMANDS
            .iter()
            .zip(&runs.stages)
            .map(|((args, _), runs)| summarize(format!("{} --yes", args.join(" ")), runs)),
    );
    stages.push(summarize("enable-hep --yes", &runs.enable_hep));
    let check = summarize("check -o json (every pod)", &runs.check);
    print_table(&kubectl_plan, &plan, &stages, &kubectl_full, &check, rounds);
    // No reset here: the control plane ends with this process, and whoever takes it next
    // resets it first (at this scale a reset can outlast its deadline while
    // calico-kube-controllers lists every pod again).
}

fn print_table(
    kubectl_plan: &Summary,
    plan: &Summary,
    stages: &[Summary],
    kubectl_full: &Summary,
    check: &Summary,
    rounds: usize,
) {
    let ratio = |a: &Summary, b: &Summary| a.median.as_secs_f64() / b.median.as_secs_f64();
    println!("scale: {NODES} nodes, {PODS} pods, {POLICIES} policies; median of {rounds} run(s)");
    println!(
        "{:<46}{:>9}{:>12}{:>14}{:>10}",
        "COMMAND", "TIME", "PEAK RSS", "VS KUBECTL", "VS PLAN"
    );
    let row = |summary: &Summary, kubectl: Option<&Summary>, vs_plan: bool| {
        println!(
            "{:<46}{:>8.2}s{:>8} MiB{:>14}{:>10}",
            summary.name,
            summary.median.as_secs_f64(),
            summary.peak_mib,
            kubectl.map_or(String::new(), |k| format!("{:.2}x", ratio(summary, k))),
            if vs_plan {
                format!("{:.2}x", ratio(summary, plan))
            } else {
                String::new()
            }
        );
    };
    row(kubectl_plan, None, false);
    row(plan, Some(kubectl_plan), false);
    for stage in stages {
        row(stage, Some(kubectl_plan), true);
    }
    row(kubectl_full, None, false);
    row(check, Some(kubectl_full), false);
}
