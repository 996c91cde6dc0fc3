//! After a Calico upgrade, `plan` names the release each stage was applied under, the stages
//! that drifted or render differently now, and the command that re-runs them. The upgrade is
//! made as calico-node's start-up makes it: ClusterInformation's calicoVersion rewritten in
//! Calico's storage (calico-apiserver serves it read-only).

use serde_json::Value;

use crate::harness::{self, ClusterGuard, Seed};
use crate::stages_e2e::calico_harden;

pub const LAB_VERSION: &str = "v3.31.0";
const UPGRADED_VERSION: &str = "v3.32.1";

/// Writes the release calico-node reports into Calico's storage (calico-apiserver serves
/// ClusterInformation read-only).
pub fn set_calico_version(c: &ClusterGuard, version: &str) {
    c.kubectl_ok(&[
        "patch",
        "clusterinformations.crd.projectcalico.org",
        "default",
        "--type=merge",
        "-p",
        &format!(r#"{{"spec": {{"calicoVersion": "{version}"}}}}"#),
    ]);
}

/// Puts the lab's release back even when an assertion fails, so later tests see the seed.
pub struct RestoreCalicoVersion<'a>(pub &'a ClusterGuard);

impl Drop for RestoreCalicoVersion<'_> {
    fn drop(&mut self) {
        set_calico_version(self.0, LAB_VERSION);
    }
}

fn plan_json(c: &ClusterGuard) -> Value {
    let run = calico_harden(c, &["plan", "-o", "json"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr))
}

fn newest_revision(c: &ClusterGuard) -> Value {
    let run = calico_harden(c, &["history", "-o", "json"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let history: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout:\n{}", run.stdout));
    let revisions = history
        .as_array()
        .unwrap_or_else(|| panic!("history -o json is a list: {history}"));
    revisions.last().expect("up wrote a revision").clone()
}

#[test]
fn plan_reports_an_upgrade_since_up_and_the_drifted_stage_to_rerun() {
    let c = harness::cluster(Seed::Lab);
    let up = calico_harden(&c, &["up", "--yes"]);
    assert_eq!(up.code, 0, "stdout:\n{}\nstderr:\n{}", up.stdout, up.stderr);
    let revision = newest_revision(&c);
    assert_eq!(revision["calico_version"], LAB_VERSION, "{revision}");
    let since = revision["revision"].as_u64().expect("a revision number");

    let before = plan_json(&c);
    assert_eq!(before["calico_upgrades"], serde_json::json!([]), "{before}");
    let text = calico_harden(&c, &["plan"]);
    assert!(!text.stdout.contains("Calico upgraded"), "{}", text.stdout);

    let _restore = RestoreCalicoVersion(&c);
    set_calico_version(&c, UPGRADED_VERSION);
    c.kubectl_ok(&[
        "patch",
        "globalnetworkpolicies.projectcalico.org",
        "allow-containers-access-to-localhost",
        "--type=merge",
        "-p",
        r#"{"spec":{"order":5}}"#,
    ]);

    let report = plan_json(&c);
    assert_eq!(
        report["facts"]["versions"]["cluster_information"], UPGRADED_VERSION,
        "calico-apiserver serves the rewritten ClusterInformation"
    );
    let upgrades = report["calico_upgrades"]
        .as_array()
        .expect("calico_upgrades");
    assert_eq!(upgrades.len(), 1, "{report:#}");
    let upgrade = &upgrades[0];
    assert_eq!(upgrade["from"], LAB_VERSION);
    assert_eq!(upgrade["to"], UPGRADED_VERSION);
    assert_eq!(upgrade["since_revision"], since);
    // Nothing but the hand edit changed: the same lab renders the same policies.
    assert_eq!(
        upgrade["stages"],
        serde_json::json!([{
            "stage": "localhost",
            "drifted": true,
            "rendering_changed": false,
            "rerun": "kubectl calico-harden localhost",
        }]),
        "{report:#}"
    );

    let text = calico_harden(&c, &["plan"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout.contains(&format!(
            "Calico upgraded {LAB_VERSION} → {UPGRADED_VERSION} since revision {since}:"
        )),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("localhost")
                && l.contains("drifted; re-run: kubectl calico-harden localhost")),
        "{}",
        text.stdout
    );

    // Re-running the stage puts its policy back; the upgrade then needs nothing more.
    let rerun = calico_harden(&c, &["localhost", "--yes"]);
    assert_eq!(
        rerun.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        rerun.stdout, rerun.stderr
    );
    let after = plan_json(&c);
    assert_eq!(after["calico_upgrades"], serde_json::json!([]), "{after:#}");
    assert_eq!(newest_revision(&c)["calico_version"], UPGRADED_VERSION);

    // The next test starts from the lab's own release: the reset rewrites ClusterInformation.
    c.reset(Seed::Lab);
    let reset = plan_json(&c);
    assert_eq!(
        reset["facts"]["versions"]["cluster_information"],
        LAB_VERSION
    );
}
