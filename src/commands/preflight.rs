//! The checks lockdown runs before it removes the safety net. Each check is independent and
//! returns a verdict with the reason, so more checks (the flow checker) join the same list.

use serde::Serialize;

use crate::cluster::inventory::LiveState;
use crate::engine::{FlowCategory, FlowOutcome, FlowReport};
use crate::facts::ClusterFacts;
use crate::stages::{StageId, StageOptions};

use super::plan::{StageState, statuses};

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    pub detail: String,
    /// False when `--force` must not override a failure: the failure would also break the undo.
    pub overridable: bool,
}

fn check(name: &str, passed: bool, detail: String) -> CheckResult {
    CheckResult {
        check: name.to_string(),
        passed,
        detail,
        overridable: true,
    }
}

/// Every check, passed or not.
pub fn run_checks(
    facts: &ClusterFacts,
    live: &LiveState,
    options: &StageOptions,
) -> Vec<CheckResult> {
    let mut results = Vec::new();
    for status in statuses(facts, live, options) {
        match status.stage {
            StageId::SafetyNet | StageId::Lockdown => continue,
            StageId::Registry if status.state == StageState::NotApplicable => continue,
            StageId::EnableHep => {
                let hep = &facts.host_endpoints;
                results.push(check(
                    "host endpoints",
                    status.state == StageState::Applied,
                    if status.state == StageState::Applied {
                        status.detail.clone()
                    } else {
                        format!("{}: run `kubectl calico-harden enable-hep --wait` (effective autoCreate: {})", status.detail, hep.effective())
                    },
                ));
            }
            stage => results.push(check(
                &format!("stage {stage}"),
                status.state.is_in_place(),
                match status.state {
                    StageState::NotApplicable => format!("not applicable: {}", status.detail),
                    state if state.is_in_place() => state.as_str().to_string(),
                    state => format!("{}: run `kubectl calico-harden {stage}`", state.as_str()),
                },
            )),
        }
    }
    results.push(failsafe_check(facts));
    let report = crate::engine::check(live, facts, options, Some(StageId::Lockdown));
    results.push(admission_webhooks_check(facts, &report));
    results.push(critical_flows_report_check(&report));
    results
}

/// The failsafe ports each node needs so that a policy mistake cannot cut the way back: the
/// API server's port inbound on the control-plane nodes and outbound everywhere (the kubelet,
/// and Felix, which must keep receiving the policy that fixes the mistake), typha's port outbound
/// everywhere and inbound where it runs (Felix gets its policy through typha). Each node's own
/// set: `FelixConfiguration node.<name>` overrides the default's.
pub fn failsafe_check(facts: &ClusterFacts) -> CheckResult {
    let api = facts.apiserver_port;
    let typha = (!facts.typha_nodes.is_empty()).then_some(facts.typha_port);
    let mut problems = Vec::new();
    for node in &facts.nodes {
        let missing = missing_failsafe_ports(facts, node);
        if missing.is_empty() {
            continue;
        }
        let source = if facts.felix.node_failsafe.contains_key(node) {
            format!("FelixConfiguration node.{node}")
        } else {
            "FelixConfiguration default".to_string()
        };
        problems.push(format!(
            "node {node} ({source}) lacks {}",
            missing.join(", ")
        ));
    }
    if problems.is_empty() {
        let overrides: Vec<&str> = facts
            .felix
            .node_failsafe
            .keys()
            .map(String::as_str)
            .collect();
        let per_node = if overrides.is_empty() {
            String::new()
        } else {
            format!(" (per-node overrides on {})", overrides.join(", "))
        };
        return check(
            "failsafe ports",
            true,
            format!(
                "tcp:{api} (the API server) is a failsafe port on every node{}{per_node}",
                typha.map_or(String::new(), |p| format!(", and tcp:{p} (typha)"))
            ),
        );
    }
    check(
        "failsafe ports",
        false,
        format!(
            "{}: add them to failsafeInboundHostPorts / failsafeOutboundHostPorts so a policy mistake cannot lock operators and Felix out",
            problems.join("; ")
        ),
    )
}

/// The failsafe ports `node` lacks, each with what it is for.
fn missing_failsafe_ports(facts: &ClusterFacts, node: &str) -> Vec<String> {
    let api = facts.apiserver_port;
    let typha = (!facts.typha_nodes.is_empty()).then_some(facts.typha_port);
    let is_control = facts.control_plane_nodes.iter().any(|n| n.name == node);
    let is_typha = facts.typha_nodes.iter().any(|n| n.name == node);
    let failsafe = facts.failsafe_on(node);
    let has = |list: &[String], port: u16| list.iter().any(|p| p == &format!("tcp:{port}"));
    let mut missing = Vec::new();
    if is_control && !has(&failsafe.inbound, api) {
        missing.push(format!("inbound tcp:{api} (the API server)"));
    }
    if !has(&failsafe.outbound, api) {
        missing.push(format!("outbound tcp:{api} (to the API server)"));
    }
    if let Some(port) = typha {
        if is_typha && !has(&failsafe.inbound, port) {
            missing.push(format!("inbound tcp:{port} (typha)"));
        }
        if !has(&failsafe.outbound, port) {
            missing.push(format!("outbound tcp:{port} (to typha)"));
        }
    }
    missing
}

/// Calico's admission webhooks that fail closed (Calico 3.32): if the API server cannot reach
/// them after lockdown, every later Calico write fails, restoring the safety net included, so
/// `--force` does not override this one.
pub fn admission_webhooks_check(facts: &ClusterFacts, report: &FlowReport) -> CheckResult {
    let Some(webhooks) = &facts.admission_webhooks else {
        return check(
            "admission webhooks",
            true,
            "not checked: validatingwebhookconfigurations could not be listed (see the warning)"
                .into(),
        );
    };
    let closed: Vec<&str> = webhooks
        .iter()
        .filter(|w| w.fails_closed)
        .map(|w| w.name.as_str())
        .collect();
    if closed.is_empty() {
        return check(
            "admission webhooks",
            true,
            "no Calico admission webhook with failurePolicy Fail".into(),
        );
    }
    let denied: Vec<&FlowOutcome> = report
        .flows
        .iter()
        .filter(|f| f.category == FlowCategory::ApiserverToAdmissionWebhooks)
        .filter(|f| f.denied_in_the_end())
        .collect();
    if denied.is_empty() {
        return check(
            "admission webhooks",
            true,
            format!(
                "the API server still reaches {} after lockdown",
                closed.join(", ")
            ),
        );
    }
    let lines = FlowReport::summarize(denied.iter().copied(), FLOWS_NAMED);
    CheckResult {
        overridable: false,
        ..check(
            "admission webhooks",
            false,
            format!(
                "{} (failurePolicy Fail) would be unreachable after lockdown: {}; every later Calico write would fail, restoring the safety net included: allow the API server to reach them first",
                closed.join(", "),
                lines.join("; ")
            ),
        )
    }
}

/// Most flows a failed check names before "and N more".
const FLOWS_NAMED: usize = 3;

/// Critical flows that would be denied once the safety net is gone and every node has its
/// host endpoint (`check --after lockdown`).
fn critical_flows_report_check(report: &FlowReport) -> CheckResult {
    let denied: Vec<_> = report.denied_in_the_end().collect();
    if denied.is_empty() {
        return check(
            "critical flows",
            true,
            format!(
                "all {} critical flows stay allowed after lockdown",
                report.flows.len()
            ),
        );
    }
    let lines = FlowReport::summarize(denied.iter().copied(), FLOWS_NAMED);
    check(
        "critical flows",
        false,
        format!(
            "{} flow(s) would be denied after lockdown: {}; see `kubectl calico-harden check --after lockdown`",
            denied.len(),
            lines.join("; ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Decision;
    use crate::facts::{AdmissionWebhook, FailsafeFacts, NodeRef};

    fn lab_facts() -> ClusterFacts {
        let node = |name: &str| NodeRef {
            name: name.into(),
            hostname: name.into(),
        };
        let mut facts = ClusterFacts::tutorial_lab();
        facts.nodes = vec!["control".into(), "node1".into(), "node2".into()];
        facts.typha_nodes = vec![node("node1")];
        facts
    }

    #[test]
    fn failsafe_ports_are_checked_on_each_node_with_its_own_set() {
        let mut facts = lab_facts();
        let passed = failsafe_check(&facts);
        assert!(passed.passed, "{}", passed.detail);
        // FelixConfiguration node.node1 keeps only SSH inbound: typha on node1 loses its failsafe.
        facts.felix.node_failsafe.insert(
            "node1".into(),
            FailsafeFacts {
                inbound: vec!["tcp:22".into()],
                ..FailsafeFacts::felix_defaults()
            },
        );
        let failed = failsafe_check(&facts);
        assert!(!failed.passed);
        assert_eq!(
            failed.detail,
            "node node1 (FelixConfiguration node.node1) lacks inbound tcp:5473 (typha): add them to failsafeInboundHostPorts / failsafeOutboundHostPorts so a policy mistake cannot lock operators and Felix out"
        );
        // The default without the API server's port: every control-plane node is named.
        let mut facts = lab_facts();
        facts.failsafe.inbound = vec!["tcp:22".into()];
        let failed = failsafe_check(&facts);
        assert!(
            failed
                .detail
                .starts_with("node control (FelixConfiguration default) lacks inbound tcp:6443 (the API server); node node1 (FelixConfiguration default) lacks inbound tcp:5473 (typha)"),
            "{}",
            failed.detail
        );
    }

    fn webhook_flow(allowed_after: bool) -> FlowOutcome {
        FlowOutcome {
            category: FlowCategory::ApiserverToAdmissionWebhooks,
            title: FlowCategory::ApiserverToAdmissionWebhooks.title(),
            source: "control".into(),
            destination: "calico-system/calico-apiserver-a".into(),
            protocol: "tcp/6443".into(),
            now: Decision {
                allowed: true,
                decided_by: "profile".into(),
            },
            after: Some(Decision {
                allowed: allowed_after,
                decided_by: "end of tier default".into(),
            }),
        }
    }

    #[test]
    fn an_unreachable_fail_closed_webhook_fails_a_check_force_cannot_override() {
        let mut facts = lab_facts();
        facts.admission_webhooks = Some(vec![AdmissionWebhook {
            name: "projectcalico.org/validate".into(),
            service: "calico-system/calico-webhooks".into(),
            fails_closed: true,
            endpoints: vec![("10.0.101.3".into(), 6443)],
        }]);
        let report = |allowed_after| FlowReport {
            after: Some(StageId::Lockdown),
            flows: vec![webhook_flow(allowed_after)],
            notes: vec![],
        };
        let failed = admission_webhooks_check(&facts, &report(false));
        assert!(!failed.passed && !failed.overridable);
        assert!(
            failed
                .detail
                .contains("projectcalico.org/validate (failurePolicy Fail)")
                && failed
                    .detail
                    .contains("control -> calico-system/calico-apiserver-a")
                && failed.detail.contains("restoring the safety net"),
            "{}",
            failed.detail
        );
        assert!(admission_webhooks_check(&facts, &report(true)).passed);
        facts.admission_webhooks = None;
        let unread = admission_webhooks_check(&facts, &report(false));
        assert!(unread.passed && unread.detail.contains("could not be listed"));
    }
}
