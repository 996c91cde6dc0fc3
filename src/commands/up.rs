//! `up`: every allow stage in order, one confirmation each, written as one revision. Locks down
//! only when asked (--lockdown or --through lockdown), after enabling host endpoints.

use crate::cli::{DryRun, EnableHepArgs, UpArgs};
use crate::cluster::inventory::Observe;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::plan::Change;
use crate::stages::StageId;
use crate::ui::printer::Tone;

use super::observe::Observed;
use super::stage::{StagePlan, plan_stage};
use super::{Context, apply_changes, enable_hep, lockdown, report_applied, show_changes};

pub async fn run(ctx: &Context, args: &UpArgs) -> Result<ExitStatus> {
    if ctx.namespace.is_some() {
        return Err(Error::usage(
            "-n/--namespace does not apply to up: pass it to the single namespaced stage commands instead",
        ));
    }
    let options = super::stage_options(&args.stage_flags, None)?;
    let lockdown_options = lockdown::LockdownOptions::from_args(&crate::cli::LockdownArgs {
        force: args.force,
        confirm_timeout: args.confirm_timeout.clone(),
    })?;
    let through = args.through.unwrap_or(if args.lockdown {
        StageId::Lockdown
    } else {
        StageId::Registry
    });
    let wants_lockdown = args.lockdown || through == StageId::Lockdown;
    let wants_hep = wants_lockdown || through == StageId::EnableHep;

    // The allow stages' changes come from the facts and the live policies; enable-hep and
    // lockdown read what they need themselves.
    let Observed {
        cluster,
        facts,
        live,
    } = ctx.observe(&Observe::facts()).await?;

    // Every confirmation comes before the first write; the writes form one revision.
    let mut accepted: Vec<Change> = Vec::new();
    for stage in StageId::policy_stages().filter(|s| *s <= through) {
        if stage == StageId::Registry && options.registry.is_none() {
            continue;
        }
        match plan_stage(stage, &facts, &live, &options) {
            StagePlan::NotApplicable(reason) => ctx
                .printer
                .say_tone(Tone::Dim, &format!("{stage}: not applicable: {reason}")),
            StagePlan::Changes(changes) if changes.is_empty() => {
                ctx.printer
                    .say_tone(Tone::Good, &format!("{stage}: already in place"));
            }
            StagePlan::Changes(changes) => {
                show_changes(ctx, &changes);
                if ctx.dry_run == DryRun::None
                    && !super::confirm_changes(
                        ctx,
                        &changes,
                        &format!("stage {stage} ({})", stage.summary()),
                    )?
                {
                    return Err(Error::Cancelled(format!(
                        "cancelled at stage {stage}: nothing was changed"
                    )));
                }
                accepted.extend(changes);
            }
        }
    }
    if accepted.is_empty() {
        ctx.printer
            .say_tone(Tone::Good, "every selected stage is already in place");
    } else {
        let applied = apply_changes(ctx, &cluster, &accepted, Vec::new()).await?;
        report_applied(ctx, &accepted, &applied);
    }
    if wants_hep {
        let hep_args = EnableHepArgs {
            wait: true,
            timeout: "2m".into(),
            ..EnableHepArgs::default()
        };
        enable_hep::run(ctx, &hep_args).await?;
    }
    if wants_lockdown {
        if ctx.dry_run != DryRun::None {
            ctx.printer.say("dry run: lockdown is checked and shown only once the earlier stages are really applied");
            return Ok(ExitStatus::Success);
        }
        return lockdown::run(ctx, &lockdown_options).await;
    }
    if ctx.dry_run == DryRun::None {
        ctx.printer.say_tone(
            Tone::Dim,
            "next: kubectl calico-harden enable-hep --wait, then kubectl calico-harden lockdown",
        );
    }
    Ok(ExitStatus::Success)
}
