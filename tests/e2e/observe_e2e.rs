//! `observe` and lockdown's soak gate on real flow logs: real packets through the dataplane
//! lab's Felix, logged to the real Goldmane v3.31.0, read by the plugin through kube-apiserver's
//! service proxy (tests/controlplane/goldmane.go). On the plain lab, which has no flow source,
//! `observe` says so and lockdown relies on its preflight.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dataplane_e2e::{dataplane_available, probe};
use crate::harness::{self, ClusterGuard, Seed};
use crate::stages_e2e::{Run, calico_harden, ok};

/// calico-kube-controllers' egress is selected by two stages (to the API server, to
/// calico-apiserver) and no stage allows tcp/9999: only the safety net lets this through, and
/// lockdown cuts it.
const CUT: (&str, &str, &str) = (
    "calico-system/calico-kube-controllers-5c8d7b9f6-qw8rt",
    "kube-system/coredns-7c65d6cfc9-9qz7m",
    "tcp/9999",
);
/// The same port the other way: decided by the safety net today, but no other policy selects
/// CoreDNS's egress or kube-controllers' ingress, so after lockdown their namespaces' profiles
/// allow it (Calico's rule for an endpoint no policy selects): logged, never cut.
const KEPT: (&str, &str, &str) = (
    "kube-system/coredns-7c65d6cfc9-4xk2p",
    "calico-system/calico-kube-controllers-5c8d7b9f6-qw8rt",
    "tcp/9999",
);
/// An app pod's DNS query over TCP: the isolate-apps stage allows its egress (that side is not
/// flagged); CoreDNS's side is the safety net's today and its profile's after lockdown.
const BY_A_STAGE: (&str, &str, &str) = (
    "app-frontend/frontend-5f7c9d8b6-2kqvx",
    "kube-system/coredns-7c65d6cfc9-9qz7m",
    "tcp/53",
);
const SAFETY_NET: [&str; 2] = ["final-allow-everything", "log-everything"];

fn run(c: &ClusterGuard, args: &[&str]) -> Run {
    calico_harden(c, args)
}

fn pod(side: &str) -> String {
    format!("pod/{side}")
}

/// Whether `list` (a list of `observe -o json` flows) holds the flow.
fn holds(list: &Value, (from, to, port): (&str, &str, &str)) -> bool {
    list.as_array().expect("a list of flows").iter().any(|f| {
        f["source"] == from
            && f["destination"] == to
            && format!("{}/{}", f["protocol"].as_str().unwrap_or(""), f["port"]) == port
    })
}

/// Sends the flows (each must pass) and reads `observe -o json` until `done` holds, at most
/// 120 s. The flows are sent again each round: a Felix that restarts (it does when a reset
/// rewrites its configuration) forgets the connections it saw before.
fn send_and_observe_until(
    c: &ClusterGuard,
    flows: &[(&str, &str, &str)],
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        for (from, to, port) in flows {
            assert!(
                probe(c, &pod(from), &pod(to), port, "1s").0,
                "{from} -> {to} {port} is allowed before lockdown"
            );
        }
        std::thread::sleep(Duration::from_secs(3));
        let out = ok(c, &["observe", "--since", "2m", "-o", "json"]);
        let observed: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("observe -o json: {e}: {}", out.stdout));
        if done(&observed) || start.elapsed() > Duration::from_secs(120) {
            return (observed, start.elapsed());
        }
    }
}

fn safety_net_present(c: &ClusterGuard) -> Vec<bool> {
    SAFETY_NET
        .iter()
        .map(|name| {
            c.kubectl(&["get", "globalnetworkpolicies.projectcalico.org", name])
                .status
                .success()
        })
        .collect()
}

/// The gate refuses, names the flow and writes nothing; `--force` cuts it, and real packets
/// then agree with the verdicts.
fn lockdown_refuses_then_force_cuts(c: &ClusterGuard) {
    let (from, to, port) = CUT;
    // The gate refuses, names the flow, and nothing is written.
    let mark = c.audit_mark();
    let refused = run(c, &["lockdown", "--yes"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!(
            "soak gate: allowed only by the safety net, cut by this lockdown: {from} -> {to} {port}"
        )) && refused.stderr.contains("lockdown refused:"),
        "{}",
        refused.stderr
    );
    let writes = c.writes_since(&mark);
    assert!(
        writes.is_empty(),
        "a refused lockdown writes nothing: {} write(s)",
        writes.len()
    );
    assert_eq!(safety_net_present(c), [true, true]);

    // --force cuts it, and the packet is then denied.
    let forced = ok(c, &["lockdown", "--force", "--yes"]);
    assert!(
        forced.stderr.contains("--force: locking down although"),
        "{}",
        forced.stderr
    );
    assert_eq!(safety_net_present(c), [false, false]);
    // Real packets agree with the verdicts.
    for ((from, to, port), allowed) in [(CUT, false), (KEPT, true), (BY_A_STAGE, true)] {
        assert_eq!(
            probe(c, &pod(from), &pod(to), port, "1s").0,
            allowed,
            "{from} -> {to} {port} after lockdown"
        );
    }
}

#[test]
fn observe_flags_what_only_the_safety_net_allows_and_lockdown_waits_for_it() {
    if !dataplane_available(
        "observe_flags_what_only_the_safety_net_allows_and_lockdown_waits_for_it",
    ) {
        return;
    }
    let c = harness::dataplane_cluster();
    ok(&c, &["up", "--yes"]);
    ok(&c, &["enable-hep", "--wait", "--yes"]);
    // Nothing happened yet since the last step: the gate lets a lockdown through (dry run).
    let dry = ok(&c, &["lockdown", "--dry-run=client", "--yes"]);
    assert!(
        dry.stderr
            .contains("soak gate: no flow in the flow logs since revision"),
        "{}",
        dry.stderr
    );

    let (observed, took) = send_and_observe_until(&c, &[CUT, KEPT, BY_A_STAGE], |o| {
        holds(&o["cut_by_lockdown"], CUT)
            && holds(&o["kept_by_profiles"], KEPT)
            && holds(&o["kept_by_profiles"], BY_A_STAGE)
    });
    eprintln!(
        "observe: the flows in the flow logs after {:.1}s: {observed:#}",
        took.as_secs_f64()
    );
    if !holds(&observed["cut_by_lockdown"], CUT) {
        let raw = c.kubectl(&[
            "get",
            "--raw",
            "/api/v1/namespaces/calico-system/services/whisker:8081/proxy/whisker-backend/flows?startTimeGte=-600",
        ]);
        eprintln!(
            "the flow logs as Whisker's API serves them: {}",
            String::from_utf8_lossy(&raw.stdout)
        );
    }
    let cut = observed["cut_by_lockdown"]
        .as_array()
        .expect("cut_by_lockdown");
    assert!(
        holds(&observed["cut_by_lockdown"], CUT)
            && !holds(&observed["cut_by_lockdown"], KEPT)
            && !holds(&observed["cut_by_lockdown"], BY_A_STAGE),
        "{CUT:?} is allowed only by the safety net and cut, the others are not: {observed:#}"
    );
    assert!(
        holds(&observed["kept_by_profiles"], KEPT)
            && holds(&observed["kept_by_profiles"], BY_A_STAGE),
        "the other flows are logged, and kept after lockdown: {observed:#}"
    );
    let (from, to, port) = CUT;
    let flagged = cut
        .iter()
        .find(|f| f["source"] == from && f["destination"] == to)
        .expect("the flow");
    assert_eq!(
        flagged["policy"], "GlobalNetworkPolicy final-allow-everything",
        "{flagged}"
    );
    assert!(flagged["count"].as_u64().unwrap() >= 1, "{flagged}");
    let table = ok(&c, &["observe", "--since", "2m"]).stdout;
    let row = table
        .lines()
        .find(|l| l.contains(from) && l.contains(to) && l.contains(port));
    assert!(
        table.contains("ALLOWED ONLY BY THE SAFETY NET, CUT BY LOCKDOWN: ") && row.is_some(),
        "{table}"
    );

    lockdown_refuses_then_force_cuts(&c);
}

#[test]
fn observe_without_flow_logs_says_there_is_no_flow_source() {
    let c = harness::cluster(Seed::Lab);
    let out = run(&c, &["observe"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("observe: no flow source: Service calico-system/whisker not found"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    ok(&c, &["up", "--yes"]);
    ok(&c, &["enable-hep", "--wait", "--yes"]);
    let dry = ok(&c, &["lockdown", "--dry-run=client", "--yes"]);
    assert!(
        dry.stderr
            .contains("soak gate: no flow source (Service calico-system/whisker not found"),
        "{}",
        dry.stderr
    );
    assert!(
        dry.stderr.contains("relying on the preflight"),
        "{}",
        dry.stderr
    );
}
