//! `plan` / `status`: every stage's state on this cluster, the detected facts, the next step.

use serde::Serialize;

use crate::calico::host_endpoints::{self, KccHostEndpointConfig, NodeFacts};
use crate::calico::policy::CalicoKind;
use crate::calico::selector;
use crate::cluster::inventory::{LiveState, Observe};
use crate::error::Result;
use crate::exit::ExitStatus;
use crate::facts::{ClusterFacts, HostEndpointFacts};
use crate::journal::upgrade::{self, CalicoUpgrade, StageNow};
use crate::plan::{ObjectState, object_state};
use crate::stages::{self, StageId, StageOptions, StageRender, canary};
use crate::ui::printer::Tone;

use super::Context;
use super::observe::Observed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageState {
    Applied,
    /// Every object present with our spec, at least one made by hand.
    AppliedByHand,
    Missing,
    /// Some objects present, some not.
    Partial,
    Drifted,
    NotApplicable,
    /// The safety net after lockdown.
    Removed,
    /// enable-hep: the spec says Enabled but kube-controllers runs with something else.
    Overridden,
    /// Not enforced, written as staged policies (`up --staged`, `lockdown --staged`).
    Staged,
}

impl StageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::AppliedByHand => "applied (by hand)",
            Self::Missing => "missing",
            Self::Partial => "partial",
            Self::Drifted => "drifted",
            Self::NotApplicable => "not applicable",
            Self::Removed => "removed (locked down)",
            Self::Overridden => "overridden",
            Self::Staged => "staged",
        }
    }

    pub fn is_in_place(self) -> bool {
        matches!(
            self,
            Self::Applied | Self::AppliedByHand | Self::NotApplicable
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectStatus {
    pub object: String,
    pub state: ObjectState,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub stage: StageId,
    pub state: StageState,
    pub detail: String,
    pub objects: Vec<ObjectStatus>,
    /// lockdown: the nodes a canary lockdown (`lockdown --nodes`) has put under default deny.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locked_nodes: Vec<String>,
}

impl StageStatus {
    /// The state as the table shows it: "partial (node1)" for a canary lockdown.
    pub fn state_label(&self) -> String {
        if self.stage == StageId::Lockdown && self.state == StageState::Partial {
            let nodes = if self.locked_nodes.is_empty() {
                "no node".to_string()
            } else {
                self.locked_nodes.join(", ")
            };
            format!("{} ({nodes})", self.state.as_str())
        } else {
            self.state.as_str().to_string()
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub context: String,
    pub facts: ClusterFacts,
    pub stages: Vec<StageStatus>,
    pub next_step: String,
    pub host_endpoints: HostEndpointPlan,
    /// Calico releases since the history applied stages, and the stages to re-run.
    pub calico_upgrades: Vec<CalicoUpgrade>,
}

/// The host endpoints calico-kube-controllers keeps once autoCreate is Enabled, predicted from
/// its configuration and the nodes, against the live automatic ones.
#[derive(Debug, Clone, Serialize)]
pub struct HostEndpointPlan {
    /// The predicted HostEndpoint objects.
    pub predicted: Vec<serde_json::Value>,
    /// Names of the live automatic host endpoints.
    pub present: Vec<String>,
    pub comparison: host_endpoints::Comparison,
}

/// The prediction for this cluster ([`host_endpoints::predict`]).
fn predicted_host_endpoints(live: &LiveState) -> Vec<host_endpoints::HostEndpoint> {
    let inventory = &live.inventory;
    let config =
        KccHostEndpointConfig::once_enabled(inventory.kube_controllers_configuration.as_ref());
    let nodes: Vec<NodeFacts> = inventory.nodes.iter().map(NodeFacts::from_node).collect();
    host_endpoints::predict(&config, &nodes)
}

pub fn host_endpoint_plan(live: &LiveState) -> HostEndpointPlan {
    let predicted = predicted_host_endpoints(live);
    let live_heps = &live.inventory.host_endpoints;
    HostEndpointPlan {
        comparison: host_endpoints::compare(&predicted, live_heps),
        predicted: predicted
            .iter()
            .map(host_endpoints::HostEndpoint::to_manifest)
            .collect(),
        present: live_heps
            .iter()
            .filter(|h| host_endpoints::is_automatic(h))
            .filter_map(|h| {
                h.pointer("/metadata/name")
                    .and_then(serde_json::Value::as_str)
            })
            .map(str::to_string)
            .collect(),
    }
}

fn policy_stage_status(
    stage: StageId,
    facts: &ClusterFacts,
    live: &LiveState,
    options: &StageOptions,
) -> StageStatus {
    let objects = match stages::render(stage, facts, options) {
        StageRender::NotApplicable(reason) => {
            return StageStatus {
                stage,
                state: StageState::NotApplicable,
                detail: reason,
                objects: vec![],
                locked_nodes: vec![],
            };
        }
        StageRender::Objects(objects) => objects,
    };
    let statuses: Vec<ObjectStatus> = objects
        .iter()
        .map(|d| ObjectStatus {
            object: d.display_name(),
            state: object_state(d, live.find(d.kind, d.namespace.as_deref(), &d.name)),
        })
        .collect();
    let count = |s: ObjectState| statuses.iter().filter(|o| o.state == s).count();
    let total = statuses.len();
    let state = if count(ObjectState::Drifted) > 0 {
        StageState::Drifted
    } else if count(ObjectState::Missing) == total {
        StageState::Missing
    } else if count(ObjectState::Missing) > 0 {
        StageState::Partial
    } else if count(ObjectState::AppliedByHand) > 0 {
        StageState::AppliedByHand
    } else {
        StageState::Applied
    };
    let staged = (state == StageState::Missing)
        .then(|| super::staged::staged_stage_detail(stage, &objects, live))
        .flatten();
    StageStatus {
        stage,
        state: if staged.is_some() {
            StageState::Staged
        } else {
            state
        },
        detail: staged.unwrap_or_else(|| stage.summary().to_string()),
        objects: statuses,
        locked_nodes: vec![],
    }
}

fn enable_hep_status(facts: &ClusterFacts, live: &LiveState) -> StageStatus {
    let hep = &facts.host_endpoints;
    let missing_nodes: Vec<&String> = facts
        .nodes
        .iter()
        .filter(|n| !hep.nodes_with_hep.contains(n))
        .collect();
    let plan = host_endpoint_plan(live);
    let (state, detail) = enable_hep_state(hep, &plan, &missing_nodes);
    StageStatus {
        stage: StageId::EnableHep,
        state,
        detail,
        objects: vec![],
        locked_nodes: vec![],
    }
}

/// Where autoCreate stands: the configuration, what kube-controllers runs with, and whether the
/// host endpoints it makes are all there.
fn enable_hep_state(
    hep: &HostEndpointFacts,
    plan: &HostEndpointPlan,
    missing_nodes: &[&String],
) -> (StageState, String) {
    let waiting: Vec<&String> = plan
        .comparison
        .missing
        .iter()
        .chain(&plan.comparison.different)
        .chain(&plan.comparison.extra)
        .collect();
    if !hep.config_present {
        (
            StageState::Missing,
            "KubeControllersConfiguration default does not exist".to_string(),
        )
    } else if hep.overridden() {
        (
            StageState::Overridden,
            format!(
                "spec says {} but kube-controllers runs with {} (an environment variable overrides it)",
                hep.auto_create_spec,
                hep.effective()
            ),
        )
    } else if hep.effective() != "Enabled" {
        (
            StageState::Missing,
            format!("autoCreate is {}", hep.effective()),
        )
    } else if !waiting.is_empty() {
        (
            StageState::Partial,
            format!(
                "autoCreate is Enabled; kube-controllers has not yet made the predicted host endpoints: {}",
                join(&waiting)
            ),
        )
    } else if !missing_nodes.is_empty() {
        (
            StageState::Partial,
            format!(
                "autoCreate is Enabled; no host endpoint for {}: its configuration makes none for them (createDefaultHostEndpoint Disabled and no template selects them or matches their IPs)",
                join(missing_nodes)
            ),
        )
    } else {
        (
            StageState::Applied,
            format!(
                "autoCreate is Enabled; {} node(s) have host endpoints, the {} predicted are in place",
                hep.nodes_with_hep.len(),
                plan.predicted.len()
            ),
        )
    }
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A canary lockdown in force: the safety net narrowed by `lockdown --nodes`.
pub struct Canary {
    /// The hosts it takes out of the safety net, in Calico's selector syntax.
    pub scope: String,
    pub locked_nodes: Vec<String>,
    objects: Vec<ObjectStatus>,
}

/// The safety net as `lockdown --nodes` narrows it, if that is what the cluster holds: the
/// narrowed selector on `final-allow-everything`, and neither policy otherwise changed.
pub fn canary_lockdown(live: &LiveState) -> Option<Canary> {
    let selector = live
        .find(
            CalicoKind::GlobalNetworkPolicy,
            None,
            "final-allow-everything",
        )?
        .pointer("/spec/selector")?
        .as_str()?;
    let scope = canary::excluded_host_scope(selector)?;
    let objects: Vec<ObjectStatus> = stages::narrowed_safety_net(selector)
        .iter()
        .map(|d| ObjectStatus {
            object: d.display_name(),
            state: object_state(d, live.find(d.kind, None, &d.name)),
        })
        .collect();
    if objects.iter().any(|o| o.state == ObjectState::Drifted) {
        return None;
    }
    let parsed = selector::parse(selector).ok()?;
    Some(Canary {
        scope: scope.to_string(),
        locked_nodes: canary::locked_nodes(&parsed, &live.inventory.host_endpoints),
        objects,
    })
}

/// Every stage's status, in order. The safety net reads "removed" once lockdown happened, and
/// lockdown "partial" while a canary lockdown narrows it.
pub fn statuses(
    facts: &ClusterFacts,
    live: &LiveState,
    options: &StageOptions,
) -> Vec<StageStatus> {
    let mut list: Vec<StageStatus> = StageId::policy_stages()
        .map(|stage| policy_stage_status(stage, facts, live, options))
        .collect();
    list.push(enable_hep_status(facts, live));
    let canary = canary_lockdown(live);
    if let Some(canary) = &canary {
        let missing = canary
            .objects
            .iter()
            .filter(|o| o.state == ObjectState::Missing)
            .count();
        let by_hand = canary
            .objects
            .iter()
            .any(|o| o.state == ObjectState::AppliedByHand);
        list[0].state = match (missing, by_hand) {
            (0, false) => StageState::Applied,
            (0, true) => StageState::AppliedByHand,
            _ => StageState::Partial,
        };
        list[0].detail = format!(
            "narrowed by a canary lockdown: every workload and every host but {} keeps it",
            canary.scope
        );
        list[0].objects = canary.objects.clone();
    }
    let safety_net_missing = list[0].state == StageState::Missing;
    let others_in_place = list[1..]
        .iter()
        .all(|s| s.state.is_in_place() || s.stage == StageId::Registry);
    let locked = safety_net_missing && others_in_place;
    if locked {
        list[0].state = StageState::Removed;
        list[0].detail = "the safety net is gone: default deny is in force".into();
    }
    let lockdown = match (&canary, locked) {
        (_, true) => StageStatus {
            stage: StageId::Lockdown,
            state: StageState::Applied,
            detail: StageId::Lockdown.summary().into(),
            objects: vec![],
            locked_nodes: vec![],
        },
        (Some(canary), false) => StageStatus {
            stage: StageId::Lockdown,
            state: StageState::Partial,
            detail: format!(
                "canary: default deny on the host endpoints {} selects only",
                canary.scope
            ),
            objects: vec![],
            locked_nodes: canary.locked_nodes.clone(),
        },
        (None, false) => StageStatus {
            stage: StageId::Lockdown,
            state: if super::staged::lockdown_is_staged(live) {
                StageState::Staged
            } else {
                StageState::Missing
            },
            detail: if super::staged::lockdown_is_staged(live) {
                super::staged::STAGED_LOCKDOWN_DETAIL.into()
            } else {
                StageId::Lockdown.summary().into()
            },
            objects: vec![],
            locked_nodes: vec![],
        },
    };
    list.push(lockdown);
    list
}

pub fn next_step(list: &[StageStatus]) -> String {
    for status in list {
        if status.stage == StageId::Registry && status.state == StageState::NotApplicable {
            continue;
        }
        if !status.state.is_in_place() && status.state != StageState::Removed {
            return match (status.stage, status.state) {
                (StageId::Lockdown, StageState::Staged) => "kubectl calico-harden check --after lockdown, then kubectl calico-harden promote lockdown (the lockdown, with its preflight)".into(),
                (stage, StageState::Staged) => format!("kubectl calico-harden promote {stage} (or promote --all)"),
                (StageId::Lockdown, StageState::Partial) => "kubectl calico-harden lockdown completes the canary (default deny on every host and workload); kubectl calico-harden rollback undoes it".into(),
                (StageId::Lockdown, _) => "kubectl calico-harden check --after lockdown, then kubectl calico-harden lockdown".into(),
                (StageId::EnableHep, StageState::Overridden) => "remove the AUTO_HOST_ENDPOINTS environment variable from calico-kube-controllers, then kubectl calico-harden enable-hep".into(),
                (StageId::EnableHep, StageState::Partial) => "kubectl calico-harden enable-hep --wait".into(),
                (stage, _) => format!("kubectl calico-harden {stage}"),
            };
        }
    }
    "nothing: the cluster is locked down (undo with kubectl calico-harden rollback)".into()
}

pub async fn run(ctx: &Context) -> Result<ExitStatus> {
    // Stage states and facts; no flow check, so no application pods.
    let Observed {
        cluster,
        facts,
        live,
    } = ctx.observe(&Observe::facts()).await?;
    let options = StageOptions {
        namespace_override: ctx.namespace.clone(),
        ..StageOptions::with_defaults()
    };
    let stages = statuses(&facts, &live, &options);
    // The history only adds the upgrade report; without it, plan still shows every stage.
    let history = ctx.store(&cluster).list().await.unwrap_or_else(|err| {
        tracing::warn!("cannot read the change history ({err}); Calico upgrades are not shown");
        Vec::new()
    });
    let calico_upgrades = upgrades_since_history(&history, &facts, &options, &stages);
    let report = PlanReport {
        context: cluster.context_name.clone(),
        next_step: next_step(&stages),
        facts,
        stages,
        host_endpoints: host_endpoint_plan(&live),
        calico_upgrades,
    };
    if ctx.printer.output.is_some() {
        ctx.printer.structured(&report);
    } else {
        ctx.printer.data(&render_table(ctx, &report));
    }
    Ok(ExitStatus::Success)
}

/// The policy stages' renderings and states, against the Calico release each was applied under.
fn upgrades_since_history(
    history: &[crate::journal::Revision],
    facts: &ClusterFacts,
    options: &StageOptions,
    statuses: &[StageStatus],
) -> Vec<CalicoUpgrade> {
    let rendered: Vec<(StageId, Vec<stages::DesiredObject>)> = StageId::policy_stages()
        .map(|stage| match stages::render(stage, facts, options) {
            StageRender::Objects(objects) => (stage, objects),
            StageRender::NotApplicable(_) => (stage, Vec::new()),
        })
        .collect();
    let now: Vec<StageNow> = rendered
        .iter()
        .map(|(stage, objects)| StageNow {
            stage: *stage,
            drifted: statuses
                .iter()
                .any(|s| s.stage == *stage && s.state == StageState::Drifted),
            rendered: objects,
        })
        .collect();
    upgrade::upgrades(history, facts.calico_version().map(|(v, _)| v), &now)
}

fn render_table(ctx: &Context, report: &PlanReport) -> String {
    let p = &ctx.printer;
    let mut out = facts_table(report);
    let width = report
        .stages
        .iter()
        .map(|s| s.stage.name().len())
        .max()
        .unwrap_or(10)
        + 2;
    out.push_str(&stage_table(p, &report.stages, width));
    for upgrade in &report.calico_upgrades {
        out.push_str(&format!(
            "\n{}\n",
            p.paint(Tone::Warn, &format!("{}:", upgrade.headline()))
        ));
        for stage in &upgrade.stages {
            let why = match (stage.drifted, stage.rendering_changed) {
                (true, true) => "drifted, and renders differently now",
                (true, false) => "drifted",
                _ => "renders differently now",
            };
            out.push_str(&format!(
                "  {:<width$}{why}; re-run: {}\n",
                stage.stage.name(),
                stage.rerun
            ));
        }
    }
    out.push_str(&format!("\nnext step: {}\n", report.next_step));
    out
}

fn node_names(list: &[crate::facts::NodeRef]) -> String {
    if list.is_empty() {
        "none".to_string()
    } else {
        list.iter()
            .map(|n| n.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What was detected, one `name: value` line each.
fn facts_table(report: &PlanReport) -> String {
    let f = &report.facts;
    let mut lines = vec![("context", report.context.clone())];
    lines.extend(control_plane_facts(f));
    lines.extend(calico_facts(f));
    lines.push((
        "nodes",
        format!(
            "{} ({} with a host endpoint)",
            f.node_count,
            f.host_endpoints.nodes_with_hep.len()
        ),
    ));
    lines.push((
        "host endpoints",
        host_endpoints_summary(&report.host_endpoints),
    ));
    let failsafe_defaults = if f.failsafe.defaults {
        " (Felix defaults)"
    } else {
        ""
    };
    lines.push((
        "failsafe inbound",
        format!("{}{failsafe_defaults}", f.failsafe.inbound.join(" ")),
    ));
    let mut out: String = lines
        .iter()
        .map(|(name, value)| format!("{:<21}{value}\n", format!("{name}:")))
        .collect();
    out.push('\n');
    out
}

/// How the v3 API is served and where the control plane and Calico's API server run.
fn control_plane_facts(f: &ClusterFacts) -> [(&'static str, String); 5] {
    let calico_api = serde_json::to_value(f.calico_api).unwrap();
    let calico_apiserver = f
        .calico_apiserver_namespace
        .as_deref()
        .map_or("not running".to_string(), |ns| {
            format!("namespace {ns}, port {}", f.calico_apiserver_port)
        });
    [
        (
            "calico API",
            calico_api.as_str().unwrap_or_default().to_string(),
        ),
        (
            "control plane",
            format!(
                "{} (from {})",
                node_names(&f.control_plane_nodes),
                f.control_plane_source
            ),
        ),
        ("API server port", f.apiserver_port.to_string()),
        ("calico-apiserver", calico_apiserver),
        (
            "kube-controllers",
            format!("namespace {}", f.kube_controllers_namespace),
        ),
    ]
}

/// The Calico release, the skew between its components, and Typha.
fn calico_facts(f: &ClusterFacts) -> [(&'static str, String); 3] {
    let version = f.calico_version().map_or(
        "unknown (no ClusterInformation, Installation or image tag says)".to_string(),
        |(version, source)| format!("{version} (from {source})"),
    );
    let skew = f.version_skew().unwrap_or_else(|| {
        "unknown (calico-node or calico-kube-controllers images carry no version)".into()
    });
    let typha = if f.typha_nodes.is_empty() {
        "not running".into()
    } else {
        node_names(&f.typha_nodes)
    };
    [
        ("calico version", version),
        ("version skew", skew),
        ("typha", typha),
    ]
}

fn host_endpoints_summary(heps: &HostEndpointPlan) -> String {
    let waiting: Vec<String> = [
        ("missing", &heps.comparison.missing),
        ("not yet as predicted", &heps.comparison.different),
        ("to be deleted", &heps.comparison.extra),
    ]
    .into_iter()
    .filter(|(_, names)| !names.is_empty())
    .map(|(what, names)| format!("{what}: {}", names.join(", ")))
    .collect();
    format!(
        "{} predicted once autoCreate is Enabled, {} present{}",
        heps.predicted.len(),
        heps.present.len(),
        if waiting.is_empty() {
            String::new()
        } else {
            format!(" ({})", waiting.join("; "))
        }
    )
}

/// One line per stage: name, state (coloured by how it stands), detail.
fn stage_table(p: &crate::ui::printer::Printer, stages: &[StageStatus], width: usize) -> String {
    let mut out = p.paint(
        crate::ui::printer::Tone::Bold,
        &format!("{:<width$}{:<22}{}\n", "STAGE", "STATE", "DETAIL"),
    );
    for status in stages {
        let tone = match status.state {
            StageState::Applied | StageState::AppliedByHand | StageState::Removed => Tone::Good,
            StageState::NotApplicable => Tone::Dim,
            StageState::Missing | StageState::Staged => Tone::Plain,
            StageState::Partial | StageState::Drifted | StageState::Overridden => Tone::Warn,
        };
        let state = format!("{:<22}", status.state_label());
        out.push_str(&format!(
            "{:<width$}{}{}\n",
            status.stage.name(),
            p.paint(tone, &state),
            status.detail
        ));
    }
    out
}
