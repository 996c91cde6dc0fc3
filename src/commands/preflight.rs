//! The checks lockdown runs before it removes the safety net. Each check is independent and
//! returns a verdict with the reason, so more checks (the flow checker) join the same list.

use serde::Serialize;

use crate::cluster::inventory::LiveState;
use crate::facts::ClusterFacts;
use crate::stages::{StageId, StageOptions};

use super::plan::{StageState, statuses};

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

fn check(name: &str, passed: bool, detail: String) -> CheckResult {
    CheckResult {
        check: name.to_string(),
        passed,
        detail,
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
    let port = facts.apiserver_port;
    results.push(check(
        "failsafe ports",
        facts.failsafe.inbound_allows_tcp(port),
        if facts.failsafe.inbound_allows_tcp(port) {
            format!("tcp:{port} (the API server) is a failsafe inbound port")
        } else {
            format!(
                "tcp:{port} (the API server) is not in FelixConfiguration default's failsafeInboundHostPorts ({}): add it so a policy mistake cannot lock operators out",
                facts.failsafe.inbound.join(" ")
            )
        },
    ));
    results.push(critical_flows_check(facts, live, options));
    results
}

/// Most flows a failed check names before "and N more".
const FLOWS_NAMED: usize = 3;

/// Critical flows that would be denied once the safety net is gone and every node has its
/// host endpoint (`check --after lockdown`).
pub fn critical_flows_check(
    facts: &ClusterFacts,
    live: &LiveState,
    options: &StageOptions,
) -> CheckResult {
    let report = crate::engine::check(live, facts, options, Some(StageId::Lockdown));
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
    let lines = crate::engine::FlowReport::summarize(denied.iter().copied(), FLOWS_NAMED);
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
