//! `rollback`: undo the newest revision, everything after revision N, or everything. Refuses
//! objects someone changed since the tool wrote them unless --force, and records itself as a
//! new revision so a rollback can be rolled back.

use std::collections::BTreeMap;

use crate::calico::policy::CalicoKind;
use crate::cli::RollbackArgs;
use crate::cluster::Cluster;
use crate::cluster::inventory::Observe;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::journal::{self, Conflict, ObjectKey, Revision, RollbackTarget};
use crate::plan::Change;
use crate::stages::object_display_name;
use crate::ui::diff;
use crate::ui::printer::Tone;

use super::Context;
use super::observe::Observed;
use super::transaction::{Question, Transaction, report_applied};

pub async fn run(ctx: &Context, args: &RollbackArgs) -> Result<ExitStatus> {
    let target = match (args.target_revision(), args.all) {
        (_, true) => RollbackTarget::All,
        (Some(n), false) => RollbackTarget::After(n),
        (None, false) => RollbackTarget::Newest,
    };
    let cluster = ctx.connect().await?;
    let history = ctx.store(&cluster).list().await?;
    check_target(&history, target)?;
    let to_undo = journal::revisions_to_undo(&history, target);
    if to_undo.is_empty() {
        ctx.printer.say("nothing to roll back");
        return Ok(ExitStatus::Success);
    }
    let current = recorded_objects_now(&cluster, &to_undo).await?;
    let (changes, conflicts) = journal::undo_plan(&to_undo, &current);
    if !conflicts.is_empty() {
        show_conflicts(ctx, &conflicts);
        if !args.force {
            return Err(Error::refused(
                format!("rollback refused: {} object(s) changed since this tool wrote them; nothing was changed", conflicts.len()),
                Some("review the differences above; pass --force to overwrite them with the recorded state".into()),
            ));
        }
        ctx.printer
            .warn("--force: overwriting changes made by others");
    }
    let numbers: Vec<String> = to_undo.iter().map(|r| r.revision.to_string()).collect();
    ctx.printer
        .say(&format!("rolling back revision(s) {}", numbers.join(", ")));
    let transaction =
        Transaction::new(ctx, &cluster).undoing(to_undo.into_iter().cloned().collect());
    if changes.is_empty() {
        ctx.printer
            .say("the cluster already matches; marking the revisions as rolled back");
    } else {
        transaction.show(&changes);
    }
    transaction.confirm(
        Question::YesNo(question(&changes)),
        "cancelled: nothing was changed",
    )?;
    let applied = transaction.commit(&changes).await?;
    report_applied(ctx, &changes, &applied);
    Ok(ExitStatus::Success)
}

/// `rollback N` needs revision N in the history.
fn check_target(history: &[Revision], target: RollbackTarget) -> Result<()> {
    let RollbackTarget::After(n) = target else {
        return Ok(());
    };
    if history.iter().any(|r| r.revision == n) {
        return Ok(());
    }
    let known: Vec<String> = history.iter().map(|r| r.revision.to_string()).collect();
    Err(Error::usage(format!(
        "revision {n} is not in the history (known: {})",
        if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        }
    )))
}

/// Every object the revisions touched, as it is now (None: it does not exist).
async fn recorded_objects_now(
    cluster: &Cluster,
    revisions: &[&Revision],
) -> Result<BTreeMap<ObjectKey, Option<serde_json::Value>>> {
    // Only the recorded Calico objects matter here, not the workloads.
    let live = Observed::read(cluster.clone(), &Observe::facts())
        .await?
        .live;
    let mut current = BTreeMap::new();
    for object in revisions.iter().flat_map(|r| r.objects.iter()) {
        current.entry(object.key()).or_insert_with(|| {
            live.find(object.kind, object.namespace.as_deref(), &object.name)
                .cloned()
        });
    }
    Ok(current)
}

/// What others changed since this tool wrote it: the recorded object against the live one.
fn show_conflicts(ctx: &Context, conflicts: &[Conflict]) {
    for conflict in conflicts {
        let (kind, ns, name) = &conflict.key;
        ctx.printer.say_tone(
            Tone::Warn,
            &format!(
                "{} was changed by someone else after revision {}:",
                object_display_name(*kind, ns.as_deref(), name),
                conflict.revision
            ),
        );
        let text = diff::render_objects(
            &ctx.printer,
            conflict.expected.as_ref(),
            conflict.live.as_ref(),
        );
        ctx.printer.say(text.trim_end());
    }
}

fn question(changes: &[Change]) -> String {
    let question = format!("Undo {} change(s)?", changes.len());
    if changes
        .iter()
        .any(|c| c.object_kind == CalicoKind::KubeControllersConfiguration)
    {
        return format!(
            "This restores the previous host endpoint autoCreate value; disabling it makes Calico DELETE the automatic host endpoints. {question}"
        );
    }
    question
}
