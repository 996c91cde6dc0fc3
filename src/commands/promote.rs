//! `promote [STAGE | --all]`: turn the staged policies this tool wrote (`up --staged`) into
//! enforced ones. Each staged policy's spec becomes the enforced policy of the same name, then
//! the staged copy is deleted; the diff, the confirmation and the revision are those of every
//! other command, so `rollback` undoes a promote (the enforced policies go, the staged copies
//! come back).
//!
//! The staged lockdown (the safety net's staged deletion) is not deleted here: promoting it is a
//! lockdown, so it goes through `lockdown` with its preflight, typed confirmation and
//! commit-confirmed revert, last, as its own revision (`lockdown` also removes the staged copy).

use crate::calico::policy::CalicoKind;
use crate::cli::{DryRun, PromoteArgs};
use crate::cluster::inventory::{LiveState, Observe};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::plan::{Change, change_for, delete_change};
use crate::stages::StageId;
use crate::stages::staged::StagedPolicy;
use crate::ui::printer::Tone;

use super::observe::Observed;
use super::transaction::{Question, Transaction, report_applied};
use super::{Context, lockdown};

/// Which staged stages a promote takes, validated before anything is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selection {
    One(StageId),
    All,
}

impl Selection {
    fn from_args(ctx: &Context, args: &PromoteArgs) -> Result<Self> {
        if ctx.namespace.is_some() {
            return Err(Error::usage(
                "-n/--namespace does not apply to promote: it promotes a stage's staged policies in every namespace",
            ));
        }
        match (args.stage, args.all) {
            (Some(StageId::EnableHep), _) => Err(Error::usage(
                "enable-hep has no staged form (it patches KubeControllersConfiguration): run kubectl calico-harden enable-hep",
            )),
            (Some(stage), false) => Ok(Self::One(stage)),
            (None, true) => Ok(Self::All),
            _ => Err(Error::usage("name one STAGE to promote, or --all")),
        }
    }

    fn takes(self, stage: StageId) -> bool {
        match self {
            Self::One(one) => one == stage,
            Self::All => true,
        }
    }
}

/// The staged policies this tool wrote, in stage order.
fn our_staged_policies(live: &LiveState) -> Vec<StagedPolicy> {
    let mut staged: Vec<StagedPolicy> = [
        (
            CalicoKind::StagedGlobalNetworkPolicy,
            &live.staged_global_network_policies,
        ),
        (
            CalicoKind::StagedNetworkPolicy,
            &live.staged_network_policies,
        ),
    ]
    .into_iter()
    .flat_map(|(kind, objects)| {
        objects
            .iter()
            .filter_map(move |o| StagedPolicy::read(kind, o))
    })
    .collect();
    staged.sort_by(|a, b| {
        (a.stage, a.kind, &a.namespace, &a.name).cmp(&(b.stage, b.kind, &b.namespace, &b.name))
    });
    staged
}

/// The writes that promote `staged`: every enforced policy first (set to the staged spec, or
/// deleted for a staged deletion), then every staged copy deleted, so an interrupted promote
/// leaves the staged copies of what it had not finished.
fn promotion_changes(staged: &[&StagedPolicy], live: &LiveState) -> Vec<Change> {
    let enforced = staged.iter().filter_map(|policy| {
        let namespace = policy.namespace.as_deref();
        match policy.enforced() {
            Some(desired) => {
                let mut change =
                    change_for(&desired, live.find(desired.kind, namespace, &desired.name))?;
                change.stage = policy.stage;
                Some(change)
            }
            None => {
                let kind = policy.enforced_kind();
                let current = live.find(kind, namespace, &policy.name)?;
                Some(delete_change(policy.stage, kind, current))
            }
        }
    });
    let copies = staged
        .iter()
        .map(|policy| delete_change(policy.stage, policy.kind, &policy.live));
    enforced.chain(copies).collect()
}

fn stage_list(staged: &[&StagedPolicy]) -> String {
    let mut stages: Vec<&str> = staged.iter().map(|s| s.stage.name()).collect();
    stages.dedup();
    stages.join(", ")
}

pub async fn run(ctx: &Context, args: &PromoteArgs) -> Result<ExitStatus> {
    let selection = Selection::from_args(ctx, args)?;
    let lockdown_options = lockdown::LockdownOptions::from_args(&crate::cli::LockdownArgs {
        force: args.force,
        confirm_timeout: args.confirm_timeout.clone(),
    })?;
    let Observed { cluster, live, .. } = ctx.observe(&Observe::facts()).await?;
    let staged = our_staged_policies(&live);
    let policies: Vec<&StagedPolicy> = staged
        .iter()
        .filter(|s| s.stage != StageId::Lockdown && selection.takes(s.stage))
        .collect();
    let staged_lockdown =
        selection.takes(StageId::Lockdown) && staged.iter().any(|s| s.stage == StageId::Lockdown);
    if policies.is_empty() && !staged_lockdown {
        let (what, how) = match selection {
            Selection::One(StageId::Lockdown) => (
                "no staged lockdown".to_string(),
                "stage it with kubectl calico-harden lockdown --staged",
            ),
            Selection::One(stage) => (
                format!("nothing is staged for {stage}"),
                "stage it with kubectl calico-harden up --staged (plan shows what is staged)",
            ),
            Selection::All => (
                "nothing is staged".to_string(),
                "stage the stages with kubectl calico-harden up --staged",
            ),
        };
        return Err(Error::refused(
            format!("promote: {what}; nothing was changed"),
            Some(how.into()),
        ));
    }
    if !policies.is_empty() {
        promote_policies(ctx, &cluster, &live, &policies).await?;
    }
    if staged_lockdown {
        if ctx.dry_run != DryRun::None {
            ctx.printer.say("dry run: the staged lockdown is promoted by `lockdown`, checked and shown once the stages are really enforced");
            return Ok(ExitStatus::Success);
        }
        ctx.printer.say(
            "promoting the staged lockdown: kubectl calico-harden lockdown (preflight, typed confirmation, commit-confirmed)",
        );
        return lockdown::run(ctx, &lockdown_options).await;
    }
    if ctx.dry_run == DryRun::None {
        ctx.printer
            .say_tone(Tone::Dim, "next: kubectl calico-harden plan");
    }
    Ok(ExitStatus::Success)
}

async fn promote_policies(
    ctx: &Context,
    cluster: &crate::cluster::Cluster,
    live: &LiveState,
    policies: &[&StagedPolicy],
) -> Result<()> {
    let stages = stage_list(policies);
    let changes = promotion_changes(policies, live);
    let transaction = Transaction::new(ctx, cluster);
    transaction.show(&changes);
    let safety_net_in_force = live
        .find(
            CalicoKind::GlobalNetworkPolicy,
            None,
            "final-allow-everything",
        )
        .is_some()
        || policies.iter().any(|s| s.stage == StageId::SafetyNet);
    if !safety_net_in_force {
        ctx.printer.warn(
            "the safety net is not in force: once enforced, these policies deny what they do not allow at the end of their tier",
        );
    }
    ctx.printer.say_tone(
        Tone::Warn,
        &format!("note: {}", crate::stages::staged::STAGED_POLICIES_PREVIEW),
    );
    transaction.confirm(
        Question::Apply {
            changes: &changes,
            what: format!("promoting {stages} (enforced from now on)"),
        },
        "cancelled: nothing was changed",
    )?;
    let applied = transaction.commit(&changes).await?;
    report_applied(ctx, &changes, &applied);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::facts::ClusterFacts;
    use crate::plan::ChangeKind;
    use crate::stages::staged::{staged_delete, staged_set};
    use crate::stages::{StageOptions, StageRender, render};

    fn rendered(stage: StageId) -> Vec<crate::stages::DesiredObject> {
        match render(
            stage,
            &ClusterFacts::tutorial_lab(),
            &StageOptions::with_defaults(),
        ) {
            StageRender::Objects(objects) => objects,
            StageRender::NotApplicable(why) => panic!("{why}"),
        }
    }

    fn staged_lab() -> LiveState {
        let mut live = LiveState::default();
        for stage in [StageId::SafetyNet, StageId::Localhost] {
            live.staged_global_network_policies.extend(
                rendered(stage)
                    .iter()
                    .map(|d| staged_set(d).unwrap().manifest),
            );
        }
        live.staged_network_policies.extend(
            rendered(StageId::CalicoApiserverToKapi)
                .iter()
                .map(|d| staged_set(d).unwrap().manifest),
        );
        // Someone else's staged policy is never promoted.
        live.staged_global_network_policies
            .push(json!({"metadata": {"name": "theirs"}, "spec": {"order": 5}}));
        live
    }

    #[test]
    fn promoting_writes_every_enforced_policy_then_deletes_the_staged_copies() {
        let live = staged_lab();
        let staged = our_staged_policies(&live);
        let all: Vec<&StagedPolicy> = staged.iter().collect();
        let changes = promotion_changes(&all, &live);
        let summary: Vec<(ChangeKind, CalicoKind, &str)> = changes
            .iter()
            .map(|c| (c.kind(), c.object_kind, c.name.as_str()))
            .collect();
        use CalicoKind::*;
        use ChangeKind::*;
        assert_eq!(
            summary,
            [
                (Create, GlobalNetworkPolicy, "final-allow-everything"),
                (Create, GlobalNetworkPolicy, "log-everything"),
                (
                    Create,
                    GlobalNetworkPolicy,
                    "allow-containers-access-to-localhost"
                ),
                (Create, NetworkPolicy, "calico-apiserver-to-kapi"),
                (Delete, StagedGlobalNetworkPolicy, "final-allow-everything"),
                (Delete, StagedGlobalNetworkPolicy, "log-everything"),
                (
                    Delete,
                    StagedGlobalNetworkPolicy,
                    "allow-containers-access-to-localhost"
                ),
                (Delete, StagedNetworkPolicy, "calico-apiserver-to-kapi"),
            ]
        );
        // What is enforced is what the stage renders.
        for change in changes.iter().filter(|c| c.kind() == Create) {
            let expected = rendered(change.stage)
                .into_iter()
                .find(|d| d.name == change.name)
                .unwrap();
            assert_eq!(change.after(), Some(&expected.manifest));
        }
    }

    #[test]
    fn an_enforced_policy_already_as_staged_is_left_and_its_copy_still_removed() {
        let mut live = staged_lab();
        live.global_network_policies = rendered(StageId::Localhost)
            .into_iter()
            .map(|d| d.manifest)
            .collect();
        let staged = our_staged_policies(&live);
        let localhost: Vec<&StagedPolicy> = staged
            .iter()
            .filter(|s| s.stage == StageId::Localhost)
            .collect();
        let changes = promotion_changes(&localhost, &live);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind(), ChangeKind::Delete);
        assert_eq!(
            changes[0].object_kind,
            CalicoKind::StagedGlobalNetworkPolicy
        );
    }

    #[test]
    fn a_staged_deletion_deletes_the_enforced_policy() {
        let safety_net = rendered(StageId::SafetyNet);
        let live = LiveState {
            global_network_policies: safety_net.iter().map(|d| d.manifest.clone()).collect(),
            staged_global_network_policies: safety_net
                .iter()
                .map(|d| staged_delete(d, StageId::Lockdown).unwrap().manifest)
                .collect(),
            ..LiveState::default()
        };
        let staged = our_staged_policies(&live);
        let all: Vec<&StagedPolicy> = staged.iter().collect();
        let kinds: Vec<(ChangeKind, CalicoKind)> = promotion_changes(&all, &live)
            .iter()
            .map(|c| (c.kind(), c.object_kind))
            .collect();
        assert_eq!(
            kinds,
            [
                (ChangeKind::Delete, CalicoKind::GlobalNetworkPolicy),
                (ChangeKind::Delete, CalicoKind::GlobalNetworkPolicy),
                (ChangeKind::Delete, CalicoKind::StagedGlobalNetworkPolicy),
                (ChangeKind::Delete, CalicoKind::StagedGlobalNetworkPolicy),
            ]
        );
    }

    #[test]
    fn stage_lists_name_each_stage_once() {
        let live = staged_lab();
        let staged = our_staged_policies(&live);
        let all: Vec<&StagedPolicy> = staged.iter().collect();
        assert_eq!(
            stage_list(&all),
            "safety-net, localhost, calico-apiserver-to-kapi"
        );
    }
}
