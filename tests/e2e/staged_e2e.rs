//! Staged mode on the lab's real calico-apiserver v3.31.0: `up --staged` writes the stages as
//! StagedGlobalNetworkPolicy / StagedNetworkPolicy and nothing enforced; `promote` turns them
//! into the enforced policies and deletes the staged copies, as one revision that `rollback`
//! undoes; `lockdown --staged` stages the safety net's deletion and leaves the safety net in
//! force, and `promote lockdown` carries it out through lockdown's own flow. A cluster whose
//! ClusterInformation reports Calico 3.29 is refused before any write, and so are bad `promote`
//! arguments. Every "nothing was written" is read from the API servers' audit logs.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::harness::{self, AuditEvent, ClusterGuard, Seed};
use crate::stages_e2e::{STAGE_COMMANDS, calico_harden, ok};
use crate::upgrade_drift_e2e::{RestoreCalicoVersion, set_calico_version};

const SAFETY_NET: [&str; 2] = ["final-allow-everything", "log-everything"];
const OLD_VERSION: &str = "v3.29.4";

/// (verb, resource, name) of every write to a Calico policy kind.
fn policy_writes(events: &[AuditEvent]) -> Writes {
    events
        .iter()
        .filter(|e| e.api_group == "projectcalico.org" && e.resource.contains("networkpolicies"))
        .map(|e| {
            (
                e.verb.clone(),
                e.resource.clone(),
                e.name.clone().unwrap_or_else(|| {
                    e.request_object
                        .as_ref()
                        .and_then(|o| o.pointer("/metadata/name"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                }),
            )
        })
        .collect()
}

/// The names of the objects of a Calico kind (all namespaces).
fn names(c: &ClusterGuard, resource: &str) -> BTreeSet<String> {
    let list = c.get_json(&[&format!("{resource}.projectcalico.org"), "-A"]);
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a list of {resource}: {list}"))
        .iter()
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

fn plan(c: &ClusterGuard) -> Value {
    let run = ok(c, &["plan", "-o", "json"]);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// stage name -> state, from `plan -o json`.
fn states(report: &Value) -> Vec<(String, String)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn state_of(report: &Value, stage: &str) -> String {
    states(report)
        .into_iter()
        .find(|(s, _)| s == stage)
        .unwrap_or_else(|| panic!("{stage} in {report}"))
        .1
}

type Writes = BTreeSet<(String, String, String)>;

fn enforced_names(c: &ClusterGuard) -> (BTreeSet<String>, BTreeSet<String>) {
    (
        names(c, "globalnetworkpolicies"),
        names(c, "networkpolicies"),
    )
}

fn assert_every_lab_stage(c: &ClusterGuard, state: &str) -> Value {
    let report = plan(c);
    for stage in STAGE_COMMANDS.iter().copied() {
        assert_eq!(state_of(&report, stage), state, "{stage}: {report:#}");
    }
    report
}

/// `up --staged`: the staged kinds created, nothing enforced; returns the writes.
fn stage_everything(c: &ClusterGuard) -> Writes {
    let enforced_before = enforced_names(c);
    let mark = c.audit_mark();
    let up = ok(c, &["up", "--staged", "--yes"]);
    assert!(
        up.stderr.contains("evaluated for workloads only")
            && up.stderr.contains("none for host endpoints"),
        "up --staged says what it previews:\n{}",
        up.stderr
    );
    let staged_writes = policy_writes(&c.writes_since(&mark));
    assert!(!staged_writes.is_empty());
    for (verb, resource, name) in &staged_writes {
        assert_eq!(verb, "create", "{name}");
        assert!(
            resource == "stagedglobalnetworkpolicies" || resource == "stagednetworkpolicies",
            "up --staged wrote {resource}/{name}"
        );
    }
    assert_eq!(
        enforced_names(c),
        enforced_before,
        "nothing enforced was written"
    );
    let staged_gnps = names(c, "stagedglobalnetworkpolicies");
    for name in SAFETY_NET
        .iter()
        .chain(&["allow-containers-access-to-localhost", "deny-app-policy"])
    {
        assert!(staged_gnps.contains(*name), "{name} in {staged_gnps:?}");
    }
    assert!(names(c, "stagednetworkpolicies").contains("calico-apiserver-to-kapi"));
    let staged_policy = c.get_json(&[
        "stagedglobalnetworkpolicies.projectcalico.org",
        "allow-containers-access-to-localhost",
    ]);
    assert_eq!(staged_policy["spec"]["stagedAction"], "Set");
    staged_writes
}

/// `promote --all`: every enforced policy created, every staged copy deleted, one revision.
fn promote_everything(c: &ClusterGuard, staged_writes: &Writes) {
    let mark = c.audit_mark();
    let promote = ok(c, &["promote", "--all", "--yes"]);
    assert!(
        promote.stderr.contains("recorded as revision"),
        "{}",
        promote.stderr
    );
    let promoted = policy_writes(&c.writes_since(&mark));
    for (_, resource, name) in staged_writes {
        let enforced = resource.trim_start_matches("staged").to_string();
        assert!(
            promoted.contains(&("create".into(), enforced.clone(), name.clone())),
            "{enforced}/{name} created by promote: {promoted:?}"
        );
        assert!(
            promoted.contains(&("delete".into(), resource.clone(), name.clone())),
            "{resource}/{name} deleted by promote: {promoted:?}"
        );
    }
    assert!(names(c, "stagedglobalnetworkpolicies").is_empty());
    assert!(names(c, "stagednetworkpolicies").is_empty());
}

#[test]
fn up_staged_writes_only_staged_policies_and_promote_enforces_them_until_rollback() {
    let c = harness::cluster(Seed::Lab);
    let enforced_before = enforced_names(&c);
    let staged_writes = stage_everything(&c);
    let staged_gnps = names(&c, "stagedglobalnetworkpolicies");
    let report = assert_every_lab_stage(&c, "staged");
    assert_eq!(state_of(&report, "lockdown"), "missing");
    assert_eq!(
        report["next_step"],
        "kubectl calico-harden promote safety-net (or promote --all)"
    );
    let table = ok(&c, &["status"]);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("localhost") && l.contains("staged")),
        "{}",
        table.stdout
    );

    promote_everything(&c, &staged_writes);
    assert_every_lab_stage(&c, "applied");

    // Rollback undoes the promote: the enforced policies go, the staged copies come back.
    ok(&c, &["rollback", "--yes"]);
    assert_eq!(enforced_names(&c), enforced_before);
    assert_eq!(names(&c, "stagedglobalnetworkpolicies"), staged_gnps);
    assert_every_lab_stage(&c, "staged");
}

#[test]
fn lockdown_staged_stages_the_deletion_and_keeps_the_safety_net_until_promoted() {
    let c = harness::cluster(Seed::Lab);
    ok(&c, &["up", "--yes"]);
    ok(&c, &["enable-hep", "--wait", "--yes"]);

    let mark = c.audit_mark();
    let staged = ok(&c, &["lockdown", "--staged", "--yes"]);
    assert!(
        staged.stderr.contains("previews nothing in flow logs")
            && staged
                .stderr
                .contains("no staged policy for host endpoints"),
        "lockdown --staged says what it does not preview:\n{}",
        staged.stderr
    );
    let writes = policy_writes(&c.writes_since(&mark));
    let expected: BTreeSet<(String, String, String)> = SAFETY_NET
        .iter()
        .map(|n| {
            (
                "create".to_string(),
                "stagedglobalnetworkpolicies".to_string(),
                n.to_string(),
            )
        })
        .collect();
    assert_eq!(writes, expected);
    for name in SAFETY_NET {
        let deletion = c.get_json(&["stagedglobalnetworkpolicies.projectcalico.org", name]);
        assert_eq!(deletion["spec"]["stagedAction"], "Delete", "{deletion}");
        // The safety net itself is untouched.
        c.get_json(&["globalnetworkpolicies.projectcalico.org", name]);
    }
    let report = plan(&c);
    assert_eq!(state_of(&report, "safety-net"), "applied");
    assert_eq!(state_of(&report, "lockdown"), "staged", "{report:#}");
    // Staging it again changes nothing.
    let mark = c.audit_mark();
    ok(&c, &["lockdown", "--staged", "--yes"]);
    assert!(c.writes_since(&mark).is_empty());

    // Promoting it is the lockdown: the safety net and its staged deletion go together.
    let promote = ok(&c, &["promote", "lockdown", "--yes"]);
    assert!(
        promote.stderr.contains("lockdown confirmed"),
        "{}",
        promote.stderr
    );
    let gnps = names(&c, "globalnetworkpolicies");
    assert!(SAFETY_NET.iter().all(|n| !gnps.contains(*n)), "{gnps:?}");
    assert!(names(&c, "stagedglobalnetworkpolicies").is_empty());
    assert_eq!(state_of(&plan(&c), "lockdown"), "applied");

    ok(&c, &["rollback", "--yes"]);
    let gnps = names(&c, "globalnetworkpolicies");
    assert!(SAFETY_NET.iter().all(|n| gnps.contains(*n)), "{gnps:?}");
    assert_eq!(state_of(&plan(&c), "lockdown"), "staged");
}

#[test]
fn staged_mode_refuses_calico_older_than_3_30_with_the_version_found() {
    let c = harness::cluster(Seed::Lab);
    ok(&c, &["up", "--yes"]);
    let _restore = RestoreCalicoVersion(&c);
    set_calico_version(&c, OLD_VERSION);
    let report = plan(&c);
    assert_eq!(
        report["facts"]["versions"]["cluster_information"],
        OLD_VERSION
    );

    let mark = c.audit_mark();
    for args in [
        &["up", "--staged", "--yes"][..],
        &["lockdown", "--staged", "--yes"],
    ] {
        let run = calico_harden(&c, args);
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "--staged needs Calico 3.30 or newer; this cluster runs Calico {OLD_VERSION} (from ClusterInformation default)"
            )),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(c.writes_since(&mark).is_empty());
    assert!(names(&c, "stagedglobalnetworkpolicies").is_empty());
}

#[test]
fn bad_promote_arguments_are_refused_and_change_nothing() {
    let c = harness::cluster(Seed::Lab);
    let mark = c.audit_mark();
    let cases: [(&[&str], i32, &str); 6] = [
        (&["promote"], 2, "--all"),
        (&["promote", "localhost", "--all"], 2, "cannot be used with"),
        (
            &["promote", "no-such-stage"],
            2,
            "invalid value 'no-such-stage'",
        ),
        (
            &["promote", "enable-hep"],
            2,
            "enable-hep has no staged form",
        ),
        (
            &["promote", "localhost", "-n", "default"],
            2,
            "-n/--namespace does not apply to promote",
        ),
        (
            &["promote", "localhost", "--yes"],
            1,
            "nothing is staged for localhost",
        ),
    ];
    for (args, code, message) in cases {
        let run = calico_harden(&c, args);
        assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    let all = calico_harden(&c, &["promote", "--all", "--yes"]);
    assert_eq!(all.code, 1, "{}", all.stderr);
    assert!(all.stderr.contains("nothing is staged"), "{}", all.stderr);
    assert!(c.writes_since(&mark).is_empty());
}

/// Packets through the dataplane lab's real Felix: a staged lockdown changes nothing Felix
/// enforces (calico-kube-controllers -> CoreDNS on tcp/9999, a port no stage allows, passes
/// while the safety net's deletion is only staged), and promoting it locks down (the same flow
/// is then denied).
#[test]
fn a_staged_lockdown_changes_no_packet_until_it_is_promoted() {
    use crate::dataplane_e2e::{dataplane_available, probe};
    const FROM: &str = "pod/calico-system/calico-kube-controllers-5c8d7b9f6-qw8rt";
    const TO: &str = "pod/kube-system/coredns-7c65d6cfc9-9qz7m";
    if !dataplane_available("a_staged_lockdown_changes_no_packet_until_it_is_promoted") {
        return;
    }
    let c = harness::dataplane_cluster();
    ok(&c, &["up", "--yes"]);
    ok(&c, &["enable-hep", "--wait", "--yes"]);
    // The reset before this test restarts Felix and puts the safety net back after whatever
    // the previous test left; wait for the dataplane to allow the flow again.
    let reset_at = std::time::Instant::now();
    while !probe(&c, FROM, TO, "tcp/9999", "1s").0 {
        assert!(
            reset_at.elapsed() < std::time::Duration::from_secs(30),
            "allowed before any lockdown (still denied after 30 s)"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    ok(&c, &["lockdown", "--staged", "--yes"]);
    assert_eq!(
        names(&c, "stagedglobalnetworkpolicies"),
        SAFETY_NET.iter().map(|n| n.to_string()).collect(),
        "the safety net's deletion is staged"
    );
    // Felix programs a policy change within about a second; give it several, then the flow
    // must still pass every time.
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_secs(1));
        assert!(
            probe(&c, FROM, TO, "tcp/9999", "1s").0,
            "a staged lockdown is not enforced: the flow still passes"
        );
    }

    // --force: the soak gate would flag the probes just sent, which is what this test wants cut.
    let promoted = ok(&c, &["promote", "lockdown", "--force", "--yes"]);
    let gnps = names(&c, "globalnetworkpolicies");
    assert!(
        SAFETY_NET.iter().all(|n| !gnps.contains(*n)),
        "promote lockdown deleted the safety net: {gnps:?}\n{}",
        promoted.stderr
    );
    // Felix needs a moment to program the deletion.
    let promoted_at = std::time::Instant::now();
    while probe(&c, FROM, TO, "tcp/9999", "1s").0 {
        assert!(
            promoted_at.elapsed() < std::time::Duration::from_secs(20),
            "after promoting the staged lockdown the flow is denied (still allowed after 20 s)"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    eprintln!(
        "denied {:.1}s after promote lockdown returned",
        promoted_at.elapsed().as_secs_f64()
    );
}
