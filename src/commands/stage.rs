//! The flow every policy stage shares: detect, render, diff, confirm, apply, report.

use crate::cluster::inventory::{self, LiveState};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::facts::{self, ClusterFacts};
use crate::plan::{Change, change_for};
use crate::stages::{self, StageId, StageOptions, StageRender};
use crate::ui::printer::Tone;

use super::{Context, apply_changes, confirm_changes, report_applied, show_changes};

/// Stage-specific flags, validated.
#[derive(Debug, Default)]
pub struct StageArgs {
    pub excluded_namespaces: Option<Vec<String>>,
    pub registry: Option<stages::RegistryTarget>,
}

impl StageArgs {
    pub fn isolate(list: &str) -> Result<Self> {
        Ok(Self {
            excluded_namespaces: Some(stages::parse_namespace_list(list)?),
            ..Self::default()
        })
    }

    pub fn registry(ips: &[String], ports: &[String]) -> Result<Self> {
        Ok(Self {
            registry: stages::parse_registry(ips, ports)?,
            ..Self::default()
        })
    }

    pub fn options(self, ctx: &Context) -> StageOptions {
        let defaults = StageOptions::with_defaults();
        StageOptions {
            excluded_namespaces: self
                .excluded_namespaces
                .unwrap_or(defaults.excluded_namespaces),
            registry: self.registry,
            namespace_override: ctx.namespace.clone(),
        }
    }
}

/// The changes a stage needs on this cluster, or why it does not apply.
pub enum StagePlan {
    NotApplicable(String),
    Changes(Vec<Change>),
}

pub fn plan_stage(
    stage: StageId,
    facts: &ClusterFacts,
    live: &LiveState,
    options: &StageOptions,
) -> StagePlan {
    match stages::render(stage, facts, options) {
        StageRender::NotApplicable(reason) => StagePlan::NotApplicable(reason),
        StageRender::Objects(objects) => StagePlan::Changes(
            objects
                .iter()
                .filter_map(|d| change_for(d, live.find(d.kind, d.namespace.as_deref(), &d.name)))
                .collect(),
        ),
    }
}

/// `-n` only means something for the namespaced stages.
fn check_namespace_flag(ctx: &Context, stage: StageId) -> Result<()> {
    let namespaced = matches!(
        stage,
        StageId::CalicoApiserverToKapi
            | StageId::ControllersToCalicoApiserver
            | StageId::ControllersToKapi
    );
    if ctx.namespace.is_some() && !namespaced {
        return Err(Error::usage(format!(
            "-n/--namespace does not apply to {stage}: its policies are cluster-wide (GlobalNetworkPolicy)"
        )));
    }
    Ok(())
}

pub async fn run(ctx: &Context, stage: StageId, args: StageArgs) -> Result<ExitStatus> {
    check_namespace_flag(ctx, stage)?;
    let options = args.options(ctx);
    let cluster = ctx.connect().await?;
    let live = inventory::fetch(&cluster).await?;
    let facts = facts::detect(&live.inventory);
    let changes = match plan_stage(stage, &facts, &live, &options) {
        StagePlan::NotApplicable(reason) => {
            ctx.printer
                .say(&format!("{stage}: not applicable: {reason}; nothing to do"));
            return Ok(ExitStatus::Success);
        }
        StagePlan::Changes(changes) => changes,
    };
    if changes.is_empty() {
        ctx.printer.say_tone(
            Tone::Good,
            &format!("{stage}: already in place; nothing to do"),
        );
        say_next_step(ctx, stage);
        return Ok(ExitStatus::Success);
    }
    show_changes(ctx, &changes);
    let changed = super::check::flows_changed_by(&live, &facts, &options, stage);
    super::check::show_flow_changes(ctx, stage, &changed);
    if ctx.dry_run == crate::cli::DryRun::None
        && !confirm_changes(ctx, &changes, &format!("stage {stage}"))?
    {
        return Err(Error::Cancelled("cancelled: nothing was changed".into()));
    }
    let applied = apply_changes(ctx, &cluster, &changes, Vec::new()).await?;
    report_applied(ctx, &changes, &applied);
    say_next_step(ctx, stage);
    Ok(ExitStatus::Success)
}

fn say_next_step(ctx: &Context, stage: StageId) {
    if ctx.dry_run != crate::cli::DryRun::None {
        return;
    }
    let next = StageId::ALL
        .iter()
        .skip_while(|s| **s != stage)
        .nth(1)
        .filter(|s| **s != StageId::Registry);
    let text = match next {
        Some(next) => format!(
            "next: kubectl calico-harden {next}   (or `kubectl calico-harden plan` for the whole picture)"
        ),
        None => "next: kubectl calico-harden plan".to_string(),
    };
    ctx.printer.say_tone(Tone::Dim, &text);
}
