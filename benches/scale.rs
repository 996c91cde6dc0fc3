//! Fleet-scale benchmark: `plan`, `up`, a stage command and `check` against the scale seed
//! (2,000 nodes, 20,000 pods in 20 namespaces, 1,000 GlobalNetworkPolicies, added to the lab by
//! `controlplane scale-seed`), each next to `kubectl get -o json` of the same lists, with wall
//! time and peak resident memory (GNU time's maximum RSS) per whole process run, since that is
//! what an operator waits for.
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
    name: &'static str,
    median: Duration,
    peak_mib: u64,
}

fn summarize(name: &'static str, runs: &[Run]) -> Summary {
    let mut times: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    times.sort_by(f64::total_cmp);
    Summary {
        name,
        median: Duration::from_secs_f64(times[times.len() / 2]),
        peak_mib: runs.iter().map(|r| r.peak_kib).max().unwrap_or(0) / 1024,
    }
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
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-calico_harden"));
    let kubectl = ClusterGuard::kubectl_path();
    let managed = "app.kubernetes.io/managed-by=kubectl-calico-harden";
    let undo = |selector: &str| {
        let out = c
            .command(&kubectl)
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
    };

    let plan_lists: [&[&str]; 2] = [
        &["get", NON_POD_LISTS, "-A"],
        &["get", "pods", "-A", "-l", SYSTEM_PODS],
    ];
    // localhost's flow report also reads the pods its host selector could match.
    let stage_lists: [&[&str]; 3] = [
        plan_lists[0],
        plan_lists[1],
        &["get", "pods", "-A", "-l", "kubernetes.io/os"],
    ];
    let full_lists: [&[&str]; 2] = [plan_lists[0], &["get", "pods", "-A"]];

    let mut runs: [Vec<Run>; 7] = Default::default();
    for round in 0..rounds {
        eprintln!("scale bench: round {}/{rounds}", round + 1);
        runs[0].push(measure_kubectl(&c, &plan_lists));
        runs[1].push(measure(&c, &plugin, &["plan", "-o", "json"]));
        runs[2].push(measure_kubectl(&c, &stage_lists));
        runs[3].push(measure(&c, &plugin, &["localhost", "--yes"]));
        undo("kubectl-calico-harden/stage=localhost");
        runs[4].push(measure(&c, &plugin, &["up", "--yes"]));
        undo(managed);
        runs[5].push(measure_kubectl(&c, &full_lists));
        runs[6].push(measure_exiting(
            &c,
            &plugin,
            &["check", "-o", "json"],
            &[0, 1],
        ));
    }
    let [
        kubectl_plan,
        plan,
        kubectl_stage,
        stage,
        up,
        kubectl_full,
        check,
    ] = runs;
    let kubectl_plan = summarize("kubectl get (plan's and up's lists)", &kubectl_plan);
    let plan = summarize("plan -o json", &plan);
    let kubectl_stage = summarize("kubectl get (localhost's lists)", &kubectl_stage);
    let stage = summarize("localhost --yes", &stage);
    let up = summarize("up --yes", &up);
    let kubectl_full = summarize("kubectl get (every pod, check's lists)", &kubectl_full);
    let check = summarize("check -o json (every pod)", &check);

    let ratio = |a: &Summary, b: &Summary| a.median.as_secs_f64() / b.median.as_secs_f64();
    println!("scale: {NODES} nodes, {PODS} pods, {POLICIES} policies; median of {rounds} run(s)");
    println!(
        "{:<42}{:>10}{:>12}{:>16}",
        "COMMAND", "TIME", "PEAK RSS", "VS KUBECTL"
    );
    for (summary, against) in [
        (&kubectl_plan, None),
        (&plan, Some(&kubectl_plan)),
        (&up, Some(&kubectl_plan)),
        (&kubectl_stage, None),
        (&stage, Some(&kubectl_stage)),
        (&kubectl_full, None),
        (&check, Some(&kubectl_full)),
    ] {
        println!(
            "{:<42}{:>9.2}s{:>8} MiB{:>16}",
            summary.name,
            summary.median.as_secs_f64(),
            summary.peak_mib,
            against.map_or(String::new(), |k| format!("{:.2}x", ratio(summary, k)))
        );
    }
    println!(
        "localhost --yes takes {:.2}x the time of plan",
        ratio(&stage, &plan)
    );
    c.reset(Seed::Lab);
}
