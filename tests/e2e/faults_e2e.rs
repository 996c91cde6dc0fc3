//! Faults between the plugin and the real API server: a proxy answers request k with 500, 503,
//! 429 (Retry-After), a lost answer, or a reset connection. For every k of `up --yes`: the
//! command either succeeds (after retrying) or exits 1 naming what failed; the history has no
//! dangling revision; and `rollback --all --yes` restores the starting state.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, ClusterGuard, Seed};
use crate::stages_e2e::{calico_harden, calico_state};
use crate::tutorial_render::plugin;

pub struct FaultProxy {
    child: Child,
    out: tempfile::TempDir,
}

impl FaultProxy {
    /// Fault request number `fail_at` (1-based; 0: none).
    pub fn start(c: &ClusterGuard, fail_at: usize, fault: &str, hold: &str) -> Self {
        Self::spawn(
            c,
            &[
                "--fail-at",
                &fail_at.to_string(),
                "--fault",
                fault,
                "--hold",
                hold,
            ],
        )
    }

    /// Fault the first request whose "METHOD URI" contains `pattern`.
    pub fn start_matching(c: &ClusterGuard, pattern: &str, fault: &str, hold: &str) -> Self {
        Self::spawn(c, &["--match", pattern, "--fault", fault, "--hold", hold])
    }

    fn spawn(c: &ClusterGuard, args: &[&str]) -> Self {
        let out = tempfile::tempdir().unwrap();
        let child = Command::new(harness::bin_dir().join("controlplane"))
            .args(["faultproxy", "--dir"])
            .arg(c.dir())
            .arg("--out")
            .arg(out.path())
            .args(args)
            .args(["--owner-pid", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the controlplane binary runs the fault proxy");
        let ready = out.path().join("ready");
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "fault proxy did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, out }
    }

    /// Every request so far, one line each: "<n> <METHOD> <URI>".
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.out.path().join("requests.log")).unwrap_or_default()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.out.path().join("kubeconfig")
    }

    pub fn requests(&self) -> usize {
        self.log().lines().count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn up_through(proxy: &FaultProxy) -> std::process::Output {
    plugin()
        .arg("--kubeconfig")
        .arg(proxy.kubeconfig())
        .args(["up", "--yes", "--request-timeout", "1s"])
        .env("NO_COLOR", "1")
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

fn history_states(c: &ClusterGuard) -> Vec<String> {
    let history: Value =
        serde_json::from_str(&calico_harden(c, &["history", "-o", "json"]).stdout).unwrap();
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn up_survives_or_fails_cleanly_under_every_fault_at_every_request() {
    let c = harness::cluster(Seed::Lab);
    let start = calico_state(&c);
    let clean = FaultProxy::start(&c, 0, "500", "30s");
    let out = up_through(&clean);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = clean.requests();
    assert!(requests > 20, "up made only {requests} requests");
    drop(clean);

    let mut tried = 0;
    let mut succeeded = 0;
    let mut failed_cleanly = 0;
    for fault in ["500", "503", "429", "reset", "timeout"] {
        for k in 1..=requests {
            c.reset(Seed::Lab);
            let proxy = FaultProxy::start(&c, k, fault, "30s");
            let out = up_through(&proxy);
            drop(proxy);
            tried += 1;
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            match out.status.code() {
                Some(0) => succeeded += 1,
                Some(1) => {
                    let error_line = stderr
                        .lines()
                        .find(|l| l.starts_with("error: "))
                        .unwrap_or_else(|| {
                            panic!(
                                "{fault} at request {k}: exit 1 without an error line:\n{stderr}"
                            )
                        });
                    assert!(
                        error_line.contains("failed to"),
                        "{fault} at {k}: {error_line}"
                    );
                    failed_cleanly += 1;
                }
                other => panic!("{fault} at request {k}: exit {other:?}\n{stderr}"),
            }
            let states = history_states(&c);
            assert!(
                states.iter().all(|s| s == "complete" || s == "failed"),
                "{fault} at {k}: dangling revision {states:?}\n{stderr}"
            );
            let rollback = calico_harden(&c, &["rollback", "--all", "--yes"]);
            assert_eq!(rollback.code, 0, "{fault} at {k}: {}", rollback.stderr);
            assert_eq!(
                calico_state(&c),
                start,
                "{fault} at {k}: rollback did not restore\n{stderr}"
            );
        }
    }
    println!(
        "fault injection: {tried} runs ({requests} requests x 5 faults): {succeeded} succeeded after retrying, {failed_cleanly} failed cleanly, all rolled back"
    );
    assert_eq!(succeeded + failed_cleanly, tried);
}
