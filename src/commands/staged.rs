//! Staged mode (`up --staged`, `lockdown --staged`): the same stages written as Calico's staged
//! policies, which are evaluated and reported in flow logs but never enforced. The release is
//! checked before anything is written; what the staged objects do and do not preview is said
//! in the output (see `stages::staged` for the reading of Calico's code behind it).

use crate::calico::policy::CalicoKind;
use crate::cluster::inventory::{LiveState, Observe};
use crate::error::Result;
use crate::exit::ExitStatus;
use crate::facts::ClusterFacts;
use crate::plan::{Change, ObjectState, change_for, object_state};
use crate::stages::staged::{
    STAGED_LOCKDOWN_PREVIEW, StagedAction, StagedPolicy, require_staged_support, staged_delete,
    staged_set,
};
use crate::stages::{self, StageId, StageOptions, StageRender};
use crate::ui::printer::Tone;

use super::Context;
use super::observe::Observed;
use super::stage::StagePlan;
use super::transaction::{Question, Transaction, report_applied};

/// Refuse staged mode on a release without staged policies (before any write), else say once
/// what the staged objects preview.
pub fn require_support(ctx: &Context, facts: &ClusterFacts, preview: &str) -> Result<()> {
    require_staged_support(facts.calico_version())?;
    ctx.printer
        .say_tone(Tone::Warn, &format!("note: {preview}"));
    Ok(())
}

/// The staged copies a stage needs: one per policy that is not already enforced as rendered
/// (an enforced policy needs no preview; a drifted one is previewed with the change).
pub fn plan_staged_stage(
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
                .filter(|d| {
                    let enforced = live.find(d.kind, d.namespace.as_deref(), &d.name);
                    !matches!(
                        object_state(d, enforced),
                        ObjectState::Applied | ObjectState::AppliedByHand
                    )
                })
                .filter_map(|d| {
                    let staged = staged_set(d)?;
                    let live_staged = live.find(staged.kind, staged.namespace.as_deref(), &d.name);
                    change_for(&staged, live_staged)
                })
                .collect(),
        ),
    }
}

/// What `plan` says of a lockdown that is staged.
pub const STAGED_LOCKDOWN_DETAIL: &str = "staged: the safety net's deletion is staged, not carried out (it previews nothing in flow logs; promote with kubectl calico-harden promote lockdown)";

/// `plan`'s detail for a stage that is not enforced but staged: Some when a staged copy of one
/// of its policies exists.
pub fn staged_stage_detail(
    stage: StageId,
    objects: &[crate::stages::DesiredObject],
    live: &LiveState,
) -> Option<String> {
    let staged = objects
        .iter()
        .filter_map(staged_set)
        .filter(|s| live.find(s.kind, s.namespace.as_deref(), &s.name).is_some())
        .count();
    (staged > 0).then(|| {
        format!(
            "staged ({staged} of {} policies), not enforced: kubectl calico-harden promote {stage}",
            objects.len()
        )
    })
}

/// Whether this tool staged the safety net's deletion (`lockdown --staged`).
pub fn lockdown_is_staged(live: &LiveState) -> bool {
    live.staged_global_network_policies.iter().any(|object| {
        StagedPolicy::read(CalicoKind::StagedGlobalNetworkPolicy, object)
            .is_some_and(|s| s.stage == StageId::Lockdown && s.action == StagedAction::Delete)
    })
}

/// The staged deletion of every safety-net policy that exists.
pub fn staged_lockdown_changes(
    facts: &ClusterFacts,
    live: &LiveState,
    options: &StageOptions,
) -> Vec<Change> {
    let StageRender::Objects(safety_net) = stages::render(StageId::SafetyNet, facts, options)
    else {
        unreachable!("the safety net always renders")
    };
    safety_net
        .iter()
        .filter(|d| live.find(d.kind, None, &d.name).is_some())
        .filter_map(|d| staged_delete(d, StageId::Lockdown))
        .filter_map(|staged| {
            let live_staged = live.find(staged.kind, None, &staged.name);
            change_for(&staged, live_staged)
        })
        .collect()
}

/// `lockdown --staged`: stage the safety net's deletion; nothing is enforced, so no preflight
/// and no commit-confirmed revert, only the diff, a confirmation and a revision.
pub async fn lockdown(ctx: &Context) -> Result<ExitStatus> {
    let Observed {
        cluster,
        facts,
        live,
    } = ctx.observe(&Observe::facts()).await?;
    require_support(ctx, &facts, STAGED_LOCKDOWN_PREVIEW)?;
    let options = StageOptions::with_defaults();
    let changes = staged_lockdown_changes(&facts, &live, &options);
    if changes.is_empty() {
        let safety_net_present = ["final-allow-everything", "log-everything"]
            .iter()
            .any(|n| {
                live.find(CalicoKind::GlobalNetworkPolicy, None, n)
                    .is_some()
            });
        let message = if safety_net_present {
            "lockdown --staged: the safety net's deletion is already staged"
        } else {
            "lockdown --staged: the safety net is already gone; there is no deletion to stage"
        };
        ctx.printer.say_tone(Tone::Good, message);
        return Ok(ExitStatus::Success);
    }
    let transaction = Transaction::new(ctx, &cluster);
    transaction.show(&changes);
    transaction.confirm(
        Question::Apply {
            changes: &changes,
            what: "the staged lockdown (staged policies only: nothing is enforced, the safety net stays)".into(),
        },
        "cancelled: nothing was changed",
    )?;
    let applied = transaction.commit(&changes).await?;
    report_applied(ctx, &changes, &applied);
    if ctx.dry_run == crate::cli::DryRun::None {
        ctx.printer.say_tone(
            Tone::Dim,
            "next: kubectl calico-harden check --after lockdown, then kubectl calico-harden promote lockdown (the lockdown itself: preflight, typed confirmation, commit-confirmed)",
        );
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lab() -> (ClusterFacts, LiveState) {
        (ClusterFacts::tutorial_lab(), LiveState::default())
    }

    fn rendered(stage: StageId, facts: &ClusterFacts) -> Vec<stages::DesiredObject> {
        match stages::render(stage, facts, &StageOptions::with_defaults()) {
            StageRender::Objects(objects) => objects,
            StageRender::NotApplicable(why) => panic!("{why}"),
        }
    }

    #[test]
    fn a_stage_is_staged_unless_it_is_already_enforced() {
        let (facts, mut live) = lab();
        let options = StageOptions::with_defaults();
        let StagePlan::Changes(changes) =
            plan_staged_stage(StageId::SafetyNet, &facts, &live, &options)
        else {
            panic!("the safety net applies")
        };
        assert_eq!(changes.len(), 2);
        assert!(
            changes
                .iter()
                .all(|c| c.object_kind == CalicoKind::StagedGlobalNetworkPolicy)
        );
        // Enforced as rendered: nothing to preview.
        live.global_network_policies = rendered(StageId::SafetyNet, &facts)
            .into_iter()
            .map(|d| d.manifest)
            .collect();
        let StagePlan::Changes(changes) =
            plan_staged_stage(StageId::SafetyNet, &facts, &live, &options)
        else {
            panic!("the safety net applies")
        };
        assert!(changes.is_empty());
    }

    #[test]
    fn the_staged_lockdown_deletes_only_the_safety_net_that_exists() {
        let (facts, mut live) = lab();
        let options = StageOptions::with_defaults();
        assert!(staged_lockdown_changes(&facts, &live, &options).is_empty());
        live.global_network_policies = vec![json!({
            "metadata": {"name": "final-allow-everything"}, "spec": {"order": 100001}
        })];
        let changes = staged_lockdown_changes(&facts, &live, &options);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].name, "final-allow-everything");
        assert_eq!(
            changes[0].after().unwrap()["spec"],
            json!({"stagedAction": "Delete"})
        );
    }
}
