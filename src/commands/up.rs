//! `up`: every allow stage in order, one confirmation each, written as one revision. Locks down
//! only when asked (--lockdown or --through lockdown), after enabling host endpoints.

use crate::cli::{DryRun, EnableHepArgs, UpArgs};
use crate::cluster::inventory::{self, LiveState, Observe};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::facts::ClusterFacts;
use crate::plan::Change;
use crate::stages::{StageId, StageOptions};
use crate::ui::printer::Tone;

use super::observe::Observed;
use super::stage::{StagePlan, plan_stage};
use super::transaction::{Question, Transaction, report_applied};
use super::{Context, enable_hep, lockdown};

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
    if args.staged && !through.is_policy_stage() {
        return Err(Error::usage(format!(
            "--staged stages policies only; --through {through} is not a policy stage (stage the lockdown with kubectl calico-harden lockdown --staged)"
        )));
    }
    let wants_lockdown = args.lockdown || through == StageId::Lockdown;
    let wants_hep = wants_lockdown || through == StageId::EnableHep;

    let Observed {
        cluster,
        facts,
        live,
    } = observe_stages(ctx, through, &options).await?;
    if args.staged {
        super::staged::require_support(
            ctx,
            &facts,
            crate::stages::staged::STAGED_POLICIES_PREVIEW,
        )?;
    }

    // Every confirmation comes before the first write; the writes form one revision.
    let transaction = Transaction::new(ctx, &cluster).recording_version_of(&facts);
    let accepted = confirmed_stages(&transaction, args, through, &options, &facts, &live)?;
    if accepted.is_empty() {
        ctx.printer
            .say_tone(Tone::Good, "every selected stage is already in place");
    } else {
        let applied = transaction.commit(&accepted).await?;
        report_applied(ctx, &accepted, &applied);
    }
    if wants_hep {
        enable_host_endpoints(ctx).await?;
    }
    if wants_lockdown {
        if ctx.dry_run != DryRun::None {
            ctx.printer.say("dry run: lockdown is checked and shown only once the earlier stages are really applied");
            return Ok(ExitStatus::Success);
        }
        return lockdown::run(ctx, &lockdown_options).await;
    }
    if ctx.dry_run == DryRun::None {
        let next = if args.staged {
            "next: watch the flow logs for what the staged policies would allow and deny, then kubectl calico-harden promote --all (or promote STAGE)"
        } else {
            "next: kubectl calico-harden enable-hep --wait, then kubectl calico-harden lockdown"
        };
        ctx.printer.say_tone(Tone::Dim, next);
    }
    Ok(ExitStatus::Success)
}

/// The allow stages' changes come from the facts and their own objects, read by name (not
/// every policy of the fleet); enable-hep and lockdown read what they need themselves.
async fn observe_stages(
    ctx: &Context,
    through: StageId,
    options: &StageOptions,
) -> Result<Observed> {
    let mut observed = ctx.observe(&Observe::for_stages()).await?;
    let stages = StageId::policy_stages().filter(|s| *s <= through);
    let named = super::stage::named_objects(stages, &observed.facts, options);
    inventory::observe_named(&observed.cluster, &mut observed.live, &named).await?;
    Ok(observed)
}

/// The changes of every selected policy stage, each stage shown and confirmed in turn.
fn confirmed_stages(
    transaction: &Transaction,
    args: &UpArgs,
    through: StageId,
    options: &StageOptions,
    facts: &ClusterFacts,
    live: &LiveState,
) -> Result<Vec<Change>> {
    let printer = &transaction.context().printer;
    let mut accepted: Vec<Change> = Vec::new();
    for stage in StageId::policy_stages().filter(|s| *s <= through) {
        if stage == StageId::Registry && options.registry.is_none() {
            continue;
        }
        let plan = if args.staged {
            super::staged::plan_staged_stage(stage, facts, live, options)
        } else {
            plan_stage(stage, facts, live, options)
        };
        match plan {
            StagePlan::NotApplicable(reason) => {
                printer.say_tone(Tone::Dim, &format!("{stage}: not applicable: {reason}"));
            }
            StagePlan::Changes(changes) if changes.is_empty() => {
                printer.say_tone(Tone::Good, &format!("{stage}: already in place"));
            }
            StagePlan::Changes(changes) => {
                transaction.show(&changes);
                transaction.confirm(
                    Question::Apply {
                        changes: &changes,
                        what: format!(
                            "stage {stage} ({}){}",
                            stage.summary(),
                            if args.staged {
                                ", staged: not enforced"
                            } else {
                                ""
                            }
                        ),
                    },
                    &format!("cancelled at stage {stage}: nothing was changed"),
                )?;
                accepted.extend(changes);
            }
        }
    }
    Ok(accepted)
}

/// `enable-hep --wait --timeout 2m`: up waits for the host endpoints before a lockdown.
async fn enable_host_endpoints(ctx: &Context) -> Result<ExitStatus> {
    let hep_args = EnableHepArgs {
        wait: true,
        timeout: "2m".into(),
        ..EnableHepArgs::default()
    };
    enable_hep::run(ctx, &hep_args).await
}
