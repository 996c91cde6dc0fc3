//! The one write path of every command that changes the cluster:
//! plan → diff ([`Transaction::show`]) → confirm ([`Transaction::confirm`]) → write-ahead journal
//! → write → record ([`Transaction::commit`]).
//!
//! The revision is written pending before the first change, each write is recorded as it lands,
//! and the revision is completed (or marked failed) at the end, so a crash always leaves a record
//! `rollback` can undo. Dry runs write no history. Every object goes through
//! `cluster::write::Writer`, the history's ConfigMaps through `journal::store`, which writes them
//! through `cluster::write` too.

use crate::cli::DryRun;
use crate::cluster::Cluster;
use crate::cluster::access::{self, Permission};
use crate::cluster::write::Writer;
use crate::error::{Error, Result};
use crate::facts::ClusterFacts;
use crate::journal::store::{KnownVersion, Prepared, Recorder};
use crate::journal::{Revision, RevisionState};
use crate::plan::{Change, ChangeKind};
use crate::ui::diff;
use crate::ui::printer::Tone;
use crate::ui::progress::Progress;

use super::Context;

/// Fault injection for the crash-recovery tests: abort the process right after the Nth write,
/// as a SIGKILL would, before the journal records it.
pub const ABORT_AFTER_WRITES_ENV: &str = "KUBECTL_CALICO_HARDEN_ABORT_AFTER_WRITES";

fn abort_after_writes() -> Option<usize> {
    std::env::var(ABORT_AFTER_WRITES_ENV).ok()?.parse().ok()
}

/// A set of changes on their way to the cluster.
pub struct Transaction<'a> {
    ctx: &'a Context,
    cluster: &'a Cluster,
    /// The revisions this one undoes (a rollback, lockdown's restore), named in the new revision.
    undoes: Vec<u64>,
    /// Those to mark rolled back once the new revision is written.
    rolled_back: Vec<Revision>,
    /// The Calico release the revision records, when the observation already read it.
    calico_version: KnownVersion,
    /// The permission checks passed and the history read ahead of the question
    /// ([`Transaction::check_ahead`]).
    prepared: Option<Prepared>,
}

/// What the operator is asked before anything is written.
pub enum Question<'c> {
    /// "Apply N change(s) for {what}?", naming the hand-made objects it takes over.
    Apply { changes: &'c [Change], what: String },
    /// A yes/no question of the command's own.
    YesNo(String),
    /// The context name must be typed after `{0}.` (what a lockdown asks).
    TypeContextName(String),
}

/// What a write sequence achieved.
pub struct Applied {
    /// The objects as the server has them afterwards (None after a delete).
    pub results: Vec<Option<serde_json::Value>>,
    /// The revision that records the writes; None for a dry run.
    pub revision: Option<u64>,
}

impl<'a> Transaction<'a> {
    pub fn new(ctx: &'a Context, cluster: &'a Cluster) -> Self {
        Self {
            ctx,
            cluster,
            undoes: Vec::new(),
            rolled_back: Vec::new(),
            calico_version: KnownVersion::Unknown,
            prepared: None,
        }
    }

    /// Check the permissions `changes` need and read the history their revision joins, before
    /// the operator is asked: a refused permission then stops the command before the question,
    /// and the commit does not wait for them. Dry runs check at the commit, as before.
    pub async fn check_ahead(&mut self, changes: &[Change]) -> Result<()> {
        if self.ctx.dry_run == DryRun::None {
            self.prepared = Some(self.prepare(changes).await?);
        }
        Ok(())
    }

    /// A transaction whose revision records the Calico release the command's observation
    /// read, instead of the journal reading it again.
    pub fn recording_version_of(mut self, facts: &ClusterFacts) -> Self {
        let version = facts
            .calico_version()
            .map(|(version, _)| version.to_string());
        self.calico_version = KnownVersion::Observed(version);
        self
    }

    /// A transaction that undoes `revisions`: they are marked rolled back once it is written.
    pub fn undoing(mut self, revisions: Vec<Revision>) -> Self {
        self.undoes = revisions.iter().map(|r| r.revision).collect();
        self.rolled_back = revisions;
        self
    }

    pub fn context(&self) -> &Context {
        self.ctx
    }

    /// The diff of `changes`: data on stdout, or messages next to `-o` output.
    pub fn show(&self, changes: &[Change]) {
        show_changes(self.ctx, changes);
    }

    /// Ask `question`, unless this is a dry run; a "no" cancels with `cancelled`.
    pub fn confirm(&self, question: Question, cancelled: &str) -> Result<()> {
        if self.ctx.dry_run != DryRun::None || ask(self.ctx, self.cluster, question)? {
            return Ok(());
        }
        Err(Error::Cancelled(cancelled.to_string()))
    }

    /// Write `changes` journaled (a dry run: unjournaled), then mark the undone revisions.
    pub async fn commit(mut self, changes: &[Change]) -> Result<Applied> {
        let (ctx, cluster) = (self.ctx, self.cluster);
        let writer = Writer::new(cluster, ctx.dry_run);
        let progress = Progress::start("writing");
        if ctx.dry_run != DryRun::None {
            if ctx.dry_run != DryRun::Client {
                access::require(cluster, needed_permissions(ctx, changes)).await?;
            }
            return write_unjournaled(&writer, &progress, changes).await;
        }
        let applied = self.write_journaled(&writer, &progress, changes).await?;
        let store = ctx.store(cluster);
        for revision in &self.rolled_back {
            if revision.state != RevisionState::RolledBack {
                store.set_state(revision, RevisionState::RolledBack).await?;
            }
        }
        Ok(applied)
    }

    async fn write_journaled(
        &mut self,
        writer: &Writer<'_>,
        progress: &Progress,
        changes: &[Change],
    ) -> Result<Applied> {
        crate::interrupt::watch();
        let mut recorder = self.begin_revision(changes).await?;
        let results = write_recorded(writer, progress, &mut recorder, changes).await?;
        recorder.finish(RevisionState::Complete, None).await?;
        Ok(Applied {
            results,
            revision: Some(recorder.revision.revision),
        })
    }

    /// The pending revision of `changes`, stored before the first write.
    async fn begin_revision(&mut self, changes: &[Change]) -> Result<Recorder<'a>> {
        let prepared = match self.prepared.take() {
            Some(prepared) => prepared,
            None => self.prepare(changes).await?,
        };
        self.ctx.store(self.cluster).begin(prepared).await
    }

    /// The permission checks and the journal's reads at once; the revision can be created only
    /// once the checks pass, and a refused permission is the error shown.
    async fn prepare(&self, changes: &[Change]) -> Result<Prepared> {
        let store = self.ctx.store(self.cluster);
        let (allowed, prepared) = tokio::join!(
            access::require(self.cluster, needed_permissions(self.ctx, changes)),
            store.prepare(
                &self.ctx.command_line,
                changes,
                self.undoes.clone(),
                self.calico_version.clone()
            ),
        );
        allowed?;
        prepared
    }
}

/// Write `changes` in order, each recorded in `recorder`'s revision; on a failure or Ctrl-C the
/// revision is marked failed with how far it got.
async fn write_recorded(
    writer: &Writer<'_>,
    progress: &Progress,
    recorder: &mut Recorder<'_>,
    changes: &[Change],
) -> Result<Vec<Option<serde_json::Value>>> {
    let abort_after = abort_after_writes();
    let mut results = Vec::new();
    // The write before, not yet recorded: its record goes out together with the next write.
    let mut unrecorded: Option<(usize, Option<serde_json::Value>)> = None;
    for (index, change) in changes.iter().enumerate() {
        progress.set_detail(&format!("{index}/{} changes", changes.len()));
        if crate::interrupt::requested() {
            if let Some((done, result)) = unrecorded.take() {
                recorder.mark_written(done, result);
            }
            return Err(interrupted(recorder, index, changes.len()).await);
        }
        let previous = unrecorded.take();
        let previous_index = previous.as_ref().map(|(done, _)| *done);
        let (written, recorded) =
            tokio::join!(writer.apply(change), record_written(recorder, previous));
        if let (Err(err), Some(done)) = (recorded, previous_index) {
            let also = written.ok().map(|result| {
                recorder.mark_written(index, result);
                change
            });
            return Err(record_failed(recorder, &changes[done], also, err).await);
        }
        let result = match written {
            Ok(result) => result,
            Err(err) => return Err(write_failed(recorder, index, change, err).await),
        };
        if abort_after == Some(index + 1) {
            // Dies between a write and its record, the worst moment for the journal.
            std::process::abort();
        }
        unrecorded = Some((index, result.clone()));
        results.push(result);
    }
    // The last write is recorded by the patch that completes the revision.
    if let Some((done, result)) = unrecorded {
        recorder.mark_written(done, result);
    }
    Ok(results)
}

/// Record a write while the next one is on its way: one round trip per change instead of two.
/// A crash between a write and its record leaves what it always left, an object the revision
/// names as planned but not applied, which `rollback` finds by comparing it with the live one.
async fn record_written(
    recorder: &mut Recorder<'_>,
    written: Option<(usize, Option<serde_json::Value>)>,
) -> Result<()> {
    match written {
        Some((index, result)) => recorder.record(index, result).await,
        None => Ok(()),
    }
}

async fn write_unjournaled(
    writer: &Writer<'_>,
    progress: &Progress,
    changes: &[Change],
) -> Result<Applied> {
    let mut results = Vec::new();
    for (index, change) in changes.iter().enumerate() {
        progress.set_detail(&format!("{index}/{} changes", changes.len()));
        results.push(writer.apply(change).await?);
    }
    Ok(Applied {
        results,
        revision: None,
    })
}

/// Ctrl-C between two writes: the revision says how far it got.
async fn interrupted(recorder: &mut Recorder<'_>, index: usize, count: usize) -> Error {
    let message = format!("interrupted after {index} of {count} change(s)");
    if let Err(err) = recorder
        .finish(RevisionState::Failed, Some(message.clone()))
        .await
    {
        return err;
    }
    Error::Cancelled(format!(
        "{message}; recorded as revision {} (undo: kubectl calico-harden rollback)",
        recorder.revision.revision
    ))
}

async fn write_failed(
    recorder: &mut Recorder<'_>,
    index: usize,
    change: &Change,
    err: Error,
) -> Error {
    let message = format!("{} failed: {err}", change.display_name());
    let _ = recorder.finish(RevisionState::Failed, Some(message)).await;
    let undo_hint = if index > 0 {
        format!(
            "{index} change(s) before it were made and recorded as revision {}; undo them with `kubectl calico-harden rollback`",
            recorder.revision.revision
        )
    } else {
        "nothing was changed".to_string()
    };
    err.with_hint(&undo_hint)
}

/// The record of `change` failed; `also` was written alongside it and is not recorded either.
async fn record_failed(
    recorder: &mut Recorder<'_>,
    change: &Change,
    also: Option<&Change>,
    err: Error,
) -> Error {
    let written = match also {
        Some(next) => format!("{} and {} were", change.display_name(), next.display_name()),
        None => format!("{} was", change.display_name()),
    };
    let message = format!("{written} written but could not be recorded: {err}");
    let _ = recorder.finish(RevisionState::Failed, Some(message)).await;
    err.with_hint(&format!(
        "revision {} may miss {}; `kubectl calico-harden rollback` still finds what was written by comparing the live objects",
        recorder.revision.revision,
        if also.is_some() { "these objects" } else { "this object" }
    ))
}

/// Show the changes as diffs.
fn show_changes(ctx: &Context, changes: &[Change]) {
    let printer = &ctx.printer;
    for change in changes {
        let text = diff::render_change(printer, change);
        if printer.output.is_some() {
            printer.say(text.trim_end());
        } else {
            printer.data(&text);
        }
    }
}

fn ask(ctx: &Context, cluster: &Cluster, question: Question) -> Result<bool> {
    match question {
        Question::Apply { changes, what } => confirm_changes(ctx, changes, &what),
        Question::YesNo(text) => ctx.prompter.confirm(&text),
        Question::TypeContextName(what) => ctx.prompter.type_to_confirm(
            &format!(
                "{what}. Type the context name ({}) to go on",
                cluster.context_name
            ),
            &cluster.context_name,
        ),
    }
}

/// Ask once for a set of changes; adoption of hand-made objects is named explicitly.
fn confirm_changes(ctx: &Context, changes: &[Change], what: &str) -> Result<bool> {
    let adopted: Vec<String> = changes
        .iter()
        .filter(|c| c.kind() == ChangeKind::Adopt)
        .map(Change::display_name)
        .collect();
    let mut question = format!("Apply {} change(s) for {what}?", changes.len());
    if !adopted.is_empty() {
        question = format!(
            "{} object(s) were made by hand and will be taken over: {}. {question}",
            adopted.len(),
            adopted.join(", ")
        );
    }
    ctx.prompter.confirm(&question)
}

/// Every permission writing `changes` (and, for real writes, the history) takes.
fn needed_permissions(ctx: &Context, changes: &[Change]) -> Vec<Permission> {
    let mut needed: Vec<Permission> = changes
        .iter()
        .flat_map(|c| {
            let mut permissions = vec![Permission {
                verb: c.kind().verb(),
                group: crate::calico::policy::API_GROUP,
                resource: c.object_kind.plural(),
                namespace: c.namespace.clone(),
                name: None,
            }];
            permissions.extend(tier_permissions(c));
            permissions
        })
        .collect();
    if ctx.dry_run == DryRun::None {
        for verb in ["list", "get", "create", "patch", "delete"] {
            needed.push(Permission {
                verb,
                group: "",
                resource: "configmaps",
                namespace: Some(ctx.history_namespace.clone()),
                name: None,
            });
        }
    }
    needed
}

/// Calico's tiered RBAC, which calico-apiserver checks on top of the resource's own verbs: `get`
/// on the policy's tier, and the verb on `tier.<plural>` for the whole tier (`<tier>.*`). The
/// stages write to the `default` tier. SelfSubjectAccessReview answers for these pseudo-resources
/// even though `kubectl auth can-i` warns that the server does not serve them.
fn tier_permissions(change: &Change) -> Vec<Permission> {
    const TIER: &str = "default";
    let Some(tier_scoped) = change.object_kind.tier_scoped_plural() else {
        return Vec::new();
    };
    vec![
        Permission {
            verb: "get",
            group: crate::calico::policy::API_GROUP,
            resource: "tiers",
            namespace: None,
            name: Some(TIER.to_string()),
        },
        Permission {
            verb: change.kind().verb(),
            group: crate::calico::policy::API_GROUP,
            resource: tier_scoped,
            namespace: change.namespace.clone(),
            name: Some(format!("{TIER}.*")),
        },
    ]
}

/// The closing line of a command that wrote (or would have written).
pub fn report_applied(ctx: &Context, changes: &[Change], applied: &Applied) {
    let printer = &ctx.printer;
    let count = changes.len();
    match (ctx.dry_run, applied.revision) {
        (DryRun::Client, _) => printer.say(&format!(
            "dry run (client): {count} change(s) shown, nothing was sent to the cluster"
        )),
        (DryRun::Server, _) => printer.say(&format!(
            "dry run (server): the API server accepted {count} change(s); nothing was persisted (calico-apiserver does not run Calico's own validation on dry runs: the real write may still be refused)"
        )),
        (DryRun::None, Some(revision)) => printer.say_tone(
            Tone::Good,
            &format!("applied {count} change(s), recorded as revision {revision} (undo: kubectl calico-harden rollback)"),
        ),
        (DryRun::None, None) => {}
    }
    if printer.output.is_some() {
        let objects: Vec<&serde_json::Value> = applied.results.iter().flatten().collect();
        printer.structured(&objects);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::GlobalArgs;
    use crate::exit::ExitStatus;
    use crate::plan::Action;
    use crate::stages::StageId;
    use crate::ui::prompt;

    fn context_answering(answers: &[bool]) -> Context {
        let mut ctx = Context::from_args(&GlobalArgs {
            request_timeout: "0".into(),
            history_namespace: "kube-system".into(),
            ..GlobalArgs::default()
        })
        .unwrap();
        ctx.prompter = Box::new(prompt::Scripted::new(answers));
        ctx
    }

    fn adoption() -> Change {
        let object =
            serde_json::json!({"metadata": {"name": "allow-containers-access-to-localhost"}});
        Change {
            stage: StageId::Localhost,
            object_kind: crate::calico::policy::CalicoKind::GlobalNetworkPolicy,
            namespace: None,
            name: "allow-containers-access-to-localhost".into(),
            action: Action::Adopt {
                before: object.clone(),
                after: object,
            },
        }
    }

    #[test]
    fn the_operators_answer_decides_and_running_out_of_answers_cancels() {
        let ctx = context_answering(&[true, false]);
        assert!(confirm_changes(&ctx, &[adoption()], "stage localhost").unwrap());
        assert!(!confirm_changes(&ctx, &[adoption()], "stage localhost").unwrap());
        let err = confirm_changes(&ctx, &[adoption()], "stage localhost").unwrap_err();
        assert_eq!(err.exit_status(), ExitStatus::Cancelled);
    }
}
