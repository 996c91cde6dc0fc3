//! Critical flows evaluated now and after a change, side by side: what `check`, lockdown's
//! preflight and the stage commands show.

use serde::Serialize;

use crate::facts::ClusterFacts;
use crate::live::LiveState;
use crate::stages::{StageId, StageOptions};

use super::build;
use super::eval::{Engine, Verdict};
use super::flows::{CriticalFlow, FlowCategory, critical_flows};
use super::model::Flow;
use super::scenario::{changes_endpoints, state_after};

pub const CONNTRACK_NOTE: &str = "verdicts are for NEW connections: established connections are kept by conntrack and a lockout shows only when they reconnect";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub decided_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowOutcome {
    pub category: FlowCategory,
    pub title: &'static str,
    pub source: String,
    pub destination: String,
    /// `tcp/6443`, `udp/53`, `ipip`.
    pub protocol: String,
    pub now: Decision,
    pub after: Option<Decision>,
}

impl FlowOutcome {
    /// Allowed now, denied after the change.
    pub fn lost(&self) -> bool {
        self.now.allowed && self.after.as_ref().is_some_and(|a| !a.allowed)
    }

    /// Denied after the change (or now, without one).
    pub fn denied_in_the_end(&self) -> bool {
        !self.after.as_ref().unwrap_or(&self.now).allowed
    }

    pub fn changed(&self) -> bool {
        self.after
            .as_ref()
            .is_some_and(|a| a.allowed != self.now.allowed)
    }

    pub fn label(&self) -> String {
        format!("{} -> {} {}", self.source, self.destination, self.protocol)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    /// The stage evaluated as applied; None for the live state only.
    pub after: Option<StageId>,
    pub flows: Vec<FlowOutcome>,
    pub notes: Vec<String>,
}

impl FlowReport {
    pub fn lost(&self) -> impl Iterator<Item = &FlowOutcome> {
        self.flows.iter().filter(|f| f.lost())
    }

    pub fn denied_in_the_end(&self) -> impl Iterator<Item = &FlowOutcome> {
        self.flows.iter().filter(|f| f.denied_in_the_end())
    }

    /// "API server -> kubelet (kubectl logs/exec) tcp/10250: control -> node1, control -> node2"
    /// per category, for one-line messages.
    pub fn summarize<'a>(
        flows: impl Iterator<Item = &'a FlowOutcome>,
        max_examples: usize,
    ) -> Vec<String> {
        let mut groups: Vec<(FlowCategory, String, Vec<String>)> = Vec::new();
        for f in flows {
            let pair = format!("{} -> {}", f.source, f.destination);
            match groups
                .iter_mut()
                .find(|(c, p, _)| *c == f.category && *p == f.protocol)
            {
                Some((_, _, pairs)) => pairs.push(pair),
                None => groups.push((f.category, f.protocol.clone(), vec![pair])),
            }
        }
        groups
            .into_iter()
            .map(|(category, protocol, pairs)| {
                let shown: Vec<&str> = pairs
                    .iter()
                    .take(max_examples)
                    .map(String::as_str)
                    .collect();
                let more = pairs.len().saturating_sub(max_examples);
                let tail = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                format!(
                    "{} {protocol}: {}{tail}",
                    category.title(),
                    shown.join(", ")
                )
            })
            .collect()
    }
}

pub fn decision(engine: &Engine, verdict: &Verdict) -> Decision {
    let decided_by = verdict
        .deciding_hop()
        .map(|hop| engine.describe_decider(&hop.decider, hop.kind))
        .unwrap_or_else(|| "nothing applies".into());
    Decision {
        allowed: verdict.allowed,
        decided_by,
    }
}

fn protocol_label(flow: &Flow) -> String {
    flow.to_string()
}

/// One flow's outcome from its verdicts now and, when given, after the change.
fn outcome(
    cf: &CriticalFlow,
    (now, verdict): (&Engine, &Verdict),
    after: Option<&(&Engine, Verdict)>,
) -> FlowOutcome {
    let net = &now.network;
    FlowOutcome {
        category: cf.category,
        title: cf.category.title(),
        source: net.side_name(cf.flow.src),
        destination: net.side_name(cf.flow.dst),
        protocol: protocol_label(&cf.flow),
        now: decision(now, verdict),
        after: after.map(|(engine, verdict)| decision(engine, verdict)),
    }
}

/// Evaluate the critical flows of the live state (`now`) and, when given, of the state after a
/// change. Flows are generated from `now`; pods and nodes keep their indices in `after`.
pub fn compare(
    now: &Engine,
    after: Option<&Engine>,
    facts: &ClusterFacts,
    after_stage: Option<StageId>,
) -> FlowReport {
    let flows: Vec<CriticalFlow> = critical_flows(now, facts);
    let outcomes = flows
        .iter()
        .map(|cf| {
            let later = after.map(|engine| (engine, engine.evaluate(&cf.flow)));
            outcome(cf, (now, &now.evaluate(&cf.flow)), later.as_ref())
        })
        .collect();
    let mut notes = vec![CONNTRACK_NOTE.to_string()];
    notes.extend(now.notes.iter().cloned());
    if let Some(after) = after {
        notes.extend(
            after
                .notes
                .iter()
                .filter(|n| !now.notes.contains(n))
                .cloned(),
        );
    }
    FlowReport {
        after: after_stage,
        flows: outcomes,
        notes,
    }
}

/// The whole check for a cluster: live state now and, with `after`, after that stage.
pub fn check(
    live: &LiveState,
    facts: &ClusterFacts,
    options: &StageOptions,
    after: Option<StageId>,
) -> FlowReport {
    let now = build::engine(live, facts);
    let later = after.map(|stage| engine_after(live, &now, facts, options, stage));
    compare(&now, later.as_ref(), facts, after)
}

/// The engine for the state after `stage`; `now` is the live state's, whose network it reuses
/// when the stage changes only policies.
fn engine_after(
    live: &LiveState,
    now: &Engine,
    facts: &ClusterFacts,
    options: &StageOptions,
    stage: StageId,
) -> Engine {
    let state = state_after(live, facts, options, Some(stage));
    if changes_endpoints(stage) {
        build::engine(&state, facts)
    } else {
        build::engine_over(now.network.clone(), &state, facts)
    }
}

/// The flows of [`check`] with `stage` whose verdict the stage changes, in the same order and
/// with the same outcomes; the unchanged ones (at fleet scale nearly all of a hundred thousand)
/// are evaluated but never described.
pub fn changed_by(
    live: &LiveState,
    facts: &ClusterFacts,
    options: &StageOptions,
    stage: StageId,
) -> Vec<FlowOutcome> {
    let now = build::engine(live, facts);
    let later = engine_after(live, &now, facts, options, stage);
    critical_flows(&now, facts)
        .iter()
        .filter_map(|cf| {
            let verdict = now.evaluate(&cf.flow);
            let after = (&later, later.evaluate(&cf.flow));
            (verdict.allowed != after.1.allowed)
                .then(|| outcome(cf, (&now, &verdict), Some(&after)))
        })
        .collect()
}
