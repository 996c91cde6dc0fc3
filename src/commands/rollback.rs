//! `rollback`: undo the newest revision, everything after revision N, or everything. Refuses
//! objects someone changed since the tool wrote them unless --force, and records itself as a
//! new revision so a rollback can be rolled back.

use std::collections::BTreeMap;

use crate::cli::{DryRun, RollbackArgs};
use crate::cluster::inventory::Observe;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::journal::{self, RevisionState, RollbackTarget};
use crate::plan::presentable;
use crate::stages::object_display_name;
use crate::ui::printer::Tone;

use super::observe::Observed;
use super::{Context, apply_changes, report_applied, show_changes};

pub async fn run(ctx: &Context, args: &RollbackArgs) -> Result<ExitStatus> {
    let target = match (args.target_revision(), args.all) {
        (_, true) => RollbackTarget::All,
        (Some(n), false) => RollbackTarget::After(n),
        (None, false) => RollbackTarget::Newest,
    };
    let cluster = ctx.connect().await?;
    let store = ctx.store(&cluster);
    let history = store.list().await?;
    if let RollbackTarget::After(n) = target
        && !history.iter().any(|r| r.revision == n)
    {
        let known: Vec<String> = history.iter().map(|r| r.revision.to_string()).collect();
        return Err(Error::usage(format!(
            "revision {n} is not in the history (known: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )));
    }
    let to_undo = journal::revisions_to_undo(&history, target);
    if to_undo.is_empty() {
        ctx.printer.say("nothing to roll back");
        return Ok(ExitStatus::Success);
    }
    // Only the recorded Calico objects matter here, not the workloads.
    let live = Observed::read(cluster.clone(), &Observe::facts())
        .await?
        .live;
    let mut current = BTreeMap::new();
    for object in to_undo.iter().flat_map(|r| r.objects.iter()) {
        current.entry(object.key()).or_insert_with(|| {
            live.find(object.kind, object.namespace.as_deref(), &object.name)
                .cloned()
        });
    }
    let (changes, conflicts) = journal::undo_plan(&to_undo, &current);
    let numbers: Vec<u64> = to_undo.iter().map(|r| r.revision).collect();
    if !conflicts.is_empty() {
        for conflict in &conflicts {
            let (kind, ns, name) = &conflict.key;
            ctx.printer.say_tone(
                Tone::Warn,
                &format!(
                    "{} was changed by someone else after revision {}:",
                    object_display_name(*kind, ns.as_deref(), name),
                    conflict.revision
                ),
            );
            let expected = conflict
                .expected
                .as_ref()
                .map(|v| crate::yaml::to_yaml(&presentable(v)))
                .unwrap_or_default();
            let live = conflict
                .live
                .as_ref()
                .map(|v| crate::yaml::to_yaml(&presentable(v)))
                .unwrap_or_default();
            for line in similar::TextDiff::from_lines(&expected, &live)
                .unified_diff()
                .context_radius(2)
                .iter_hunks()
            {
                ctx.printer.say(line.to_string().trim_end());
            }
        }
        if !args.force {
            return Err(Error::refused(
                format!("rollback refused: {} object(s) changed since this tool wrote them; nothing was changed", conflicts.len()),
                Some("review the differences above; pass --force to overwrite them with the recorded state".into()),
            ));
        }
        ctx.printer
            .warn("--force: overwriting changes made by others");
    }
    ctx.printer.say(&format!(
        "rolling back revision(s) {}",
        numbers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if changes.is_empty() {
        ctx.printer
            .say("the cluster already matches; marking the revisions as rolled back");
    } else {
        show_changes(ctx, &changes);
    }
    if ctx.dry_run == DryRun::None {
        let hep = changes.iter().any(|c| {
            c.object_kind == crate::calico::policy::CalicoKind::KubeControllersConfiguration
        });
        let mut question = format!("Undo {} change(s)?", changes.len());
        if hep {
            question = format!(
                "This restores the previous host endpoint autoCreate value; disabling it makes Calico DELETE the automatic host endpoints. {question}"
            );
        }
        if !ctx.prompter.confirm(&question)? {
            return Err(Error::Cancelled("cancelled: nothing was changed".into()));
        }
    }
    let applied = apply_changes(ctx, &cluster, &changes, numbers.clone()).await?;
    if ctx.dry_run == DryRun::None {
        for revision in &to_undo {
            if revision.state != RevisionState::RolledBack {
                store.set_state(revision, RevisionState::RolledBack).await?;
            }
        }
    }
    report_applied(ctx, &changes, &applied);
    Ok(ExitStatus::Success)
}
