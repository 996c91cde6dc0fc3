//! The change history: one revision per command that writes, stored in the cluster so every
//! operator shares it, written ahead of the first change so a crash still leaves a record that
//! `rollback` can undo.
//!
//! This module is the pure part: what a revision holds and how undoing revisions turns into
//! changes. [`store`] reads and writes revisions as ConfigMaps.

pub mod store;
pub mod upgrade;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::calico::policy::CalicoKind;
use crate::plan::{Action, Change, presentable, specs_equivalent};
use crate::stages::StageId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionState {
    /// Written before the first change; still pending after a crash.
    Pending,
    Complete,
    Failed,
    RolledBack,
}

impl RevisionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::RolledBack => "rolled-back",
        }
    }
}

/// One object a revision touched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TouchedObject {
    pub kind: CalicoKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub stage: Option<StageId>,
    /// The object before the change; None: it did not exist.
    pub before: Option<Value>,
    /// The object after the change (with its resourceVersion once written); None: deleted.
    pub after: Option<Value>,
    /// False until the server confirmed the write: a pending revision's unwritten objects.
    pub applied: bool,
}

impl TouchedObject {
    pub fn planned(change: &Change) -> Self {
        Self {
            kind: change.object_kind,
            namespace: change.namespace.clone(),
            name: change.name.clone(),
            stage: Some(change.stage),
            before: change.before().cloned(),
            after: change.after().cloned(),
            applied: false,
        }
    }

    pub fn key(&self) -> ObjectKey {
        (self.kind, self.namespace.clone(), self.name.clone())
    }
}

pub type ObjectKey = (CalicoKind, Option<String>, String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub revision: u64,
    pub time: String,
    pub command: String,
    pub tool_version: String,
    pub user: String,
    /// The Calico release the cluster reported when this revision was written; absent from
    /// revisions written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calico_version: Option<String>,
    pub state: RevisionState,
    pub objects: Vec<TouchedObject>,
    /// For a rollback: the revisions it undid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undoes: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What `rollback` should undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackTarget {
    /// The newest revision that is not rolled back.
    Newest,
    /// Back to the state right after revision N.
    After(u64),
    /// Back to the state before the first revision.
    All,
}

/// Revisions to undo, newest first. A revision undone by a later rollback is undone again
/// after that rollback itself is undone, so the sequence always replays history backwards.
pub fn revisions_to_undo(history: &[Revision], target: RollbackTarget) -> Vec<&Revision> {
    let mut sorted: Vec<&Revision> = history.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.revision));
    match target {
        RollbackTarget::Newest => sorted
            .into_iter()
            .find(|r| {
                r.state != RevisionState::RolledBack
                    && r.objects
                        .iter()
                        .any(|o| o.applied || r.state == RevisionState::Pending)
            })
            .into_iter()
            .collect(),
        RollbackTarget::After(n) => sorted.into_iter().filter(|r| r.revision > n).collect(),
        RollbackTarget::All => sorted,
    }
}

/// An object someone changed after this tool wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub key: ObjectKey,
    pub revision: u64,
    pub expected: Option<Value>,
    pub live: Option<Value>,
}

/// The part of an object a rollback compares and restores: spec and labels.
/// Labels the server sets itself: calico-apiserver labels every policy with its tier.
const SERVER_SET_LABELS: &[&str] = &["projectcalico.org/tier"];

fn essence(object: Option<&Value>) -> Option<(Value, Value)> {
    object.map(|o| {
        let mut labels = o
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(map) = labels.as_object_mut() {
            map.retain(|key, _| !SERVER_SET_LABELS.contains(&key.as_str()));
        }
        (o.get("spec").cloned().unwrap_or(Value::Null), labels)
    })
}

pub fn same_essence(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (essence(a), essence(b)) {
        (None, None) => true,
        (Some((sa, la)), Some((sb, lb))) => {
            specs_equivalent(&sa, &sb) && specs_equivalent(&la, &lb)
        }
        _ => false,
    }
}

/// Replay `revisions` (newest first) backwards over the live objects. Returns the changes that
/// take each object from its live state to its final target, and the conflicts found.
pub fn undo_plan(
    revisions: &[&Revision],
    live: &BTreeMap<ObjectKey, Option<Value>>,
) -> (Vec<Change>, Vec<Conflict>) {
    let mut simulated: BTreeMap<ObjectKey, Option<Value>> = BTreeMap::new();
    let mut stages: BTreeMap<ObjectKey, Option<StageId>> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for revision in revisions {
        for object in revision.objects.iter().rev() {
            let key = object.key();
            let current = simulated
                .get(&key)
                .cloned()
                .unwrap_or_else(|| live.get(&key).cloned().flatten());
            let written = object.applied || same_essence(current.as_ref(), object.after.as_ref());
            if !written {
                // A pending revision's object that was never written: nothing to undo, unless
                // it is neither before nor after (someone else changed it).
                if !same_essence(current.as_ref(), object.before.as_ref()) {
                    conflicts.push(Conflict {
                        key: key.clone(),
                        revision: revision.revision,
                        expected: object.before.clone(),
                        live: current,
                    });
                }
                continue;
            }
            if !same_essence(current.as_ref(), object.after.as_ref()) {
                conflicts.push(Conflict {
                    key: key.clone(),
                    revision: revision.revision,
                    expected: object.after.clone(),
                    live: current.clone(),
                });
            }
            stages.insert(key.clone(), object.stage);
            simulated.insert(key, object.before.clone());
        }
    }
    let changes = simulated
        .into_iter()
        .filter_map(|(key, target)| {
            let current = live.get(&key).cloned().flatten();
            let stage = stages
                .get(&key)
                .copied()
                .flatten()
                .unwrap_or(StageId::SafetyNet);
            restore_change(&key, stage, current.as_ref(), target.as_ref())
        })
        .collect();
    (changes, conflicts)
}

/// The change that makes `current` look like `target` (spec and labels), if any.
pub fn restore_change(
    key: &ObjectKey,
    stage: StageId,
    current: Option<&Value>,
    target: Option<&Value>,
) -> Option<Change> {
    if same_essence(current, target) {
        return None;
    }
    let (object_kind, namespace, name) = key.clone();
    let action = match (current, target) {
        (Some(current), None) => Action::Delete {
            before: current.clone(),
        },
        (None, Some(target)) => Action::Create {
            after: recreatable(target),
        },
        (Some(current), Some(target)) => {
            let mut after = current.clone();
            after["spec"] = target.get("spec").cloned().unwrap_or(Value::Null);
            after["metadata"]["labels"] = target
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            Action::Update {
                before: current.clone(),
                after,
            }
        }
        (None, None) => return None,
    };
    Some(Change {
        stage,
        object_kind,
        namespace,
        name,
        action,
    })
}

/// A recorded object, stripped of what the server assigns, ready to be created again.
fn recreatable(object: &Value) -> Value {
    let mut body = presentable(object);
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ChangeKind;
    use serde_json::json;

    fn gnp(name: &str, order: u32, rv: &str) -> Value {
        json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
               "metadata": {"name": name, "resourceVersion": rv, "labels": {"a": "b"}},
               "spec": {"order": order}})
    }

    #[test]
    fn the_tier_label_calico_apiserver_adds_is_not_a_change() {
        let ours = gnp("p", 1, "1");
        let mut live = gnp("p", 1, "2");
        live["metadata"]["labels"]["projectcalico.org/tier"] = json!("default");
        assert!(same_essence(Some(&ours), Some(&live)));
        live["metadata"]["labels"]["team"] = json!("net");
        assert!(!same_essence(Some(&ours), Some(&live)));
    }

    fn touched(name: &str, before: Option<Value>, after: Option<Value>) -> TouchedObject {
        TouchedObject {
            kind: CalicoKind::GlobalNetworkPolicy,
            namespace: None,
            name: name.into(),
            stage: Some(StageId::Localhost),
            before,
            after,
            applied: true,
        }
    }

    fn revision(n: u64, state: RevisionState, objects: Vec<TouchedObject>) -> Revision {
        Revision {
            revision: n,
            time: String::new(),
            command: String::new(),
            tool_version: String::new(),
            user: String::new(),
            calico_version: None,
            state,
            objects,
            undoes: vec![],
            message: None,
        }
    }

    fn key(name: &str) -> ObjectKey {
        (CalicoKind::GlobalNetworkPolicy, None, name.into())
    }

    #[test]
    fn undoing_a_create_deletes_and_undoing_an_update_restores() {
        let r1 = revision(
            1,
            RevisionState::Complete,
            vec![
                touched("a", None, Some(gnp("a", 1, "10"))),
                touched("b", Some(gnp("b", 1, "5")), Some(gnp("b", 2, "11"))),
            ],
        );
        let live = BTreeMap::from([
            (key("a"), Some(gnp("a", 1, "10"))),
            (key("b"), Some(gnp("b", 2, "11"))),
        ]);
        let (changes, conflicts) = undo_plan(&[&r1], &live);
        assert!(conflicts.is_empty());
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].kind(), ChangeKind::Delete);
        assert_eq!(changes[1].kind(), ChangeKind::Update);
        assert_eq!(changes[1].body().unwrap()["spec"]["order"], 1);
        assert_eq!(
            changes[1].body().unwrap()["metadata"]["resourceVersion"],
            "11"
        );
    }

    #[test]
    fn a_hand_edit_since_the_write_is_a_conflict() {
        let r1 = revision(
            1,
            RevisionState::Complete,
            vec![touched("a", None, Some(gnp("a", 1, "10")))],
        );
        let live = BTreeMap::from([(key("a"), Some(gnp("a", 7, "12")))]);
        let (_, conflicts) = undo_plan(&[&r1], &live);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].revision, 1);
    }

    #[test]
    fn undoing_several_revisions_goes_back_to_the_oldest_before() {
        let r1 = revision(
            1,
            RevisionState::Complete,
            vec![touched("a", None, Some(gnp("a", 1, "10")))],
        );
        let r2 = revision(
            2,
            RevisionState::Complete,
            vec![touched(
                "a",
                Some(gnp("a", 1, "10")),
                Some(gnp("a", 2, "11")),
            )],
        );
        let live = BTreeMap::from([(key("a"), Some(gnp("a", 2, "11")))]);
        let history = vec![r1, r2];
        let to_undo = revisions_to_undo(&history, RollbackTarget::All);
        assert_eq!(
            to_undo.iter().map(|r| r.revision).collect::<Vec<_>>(),
            vec![2, 1]
        );
        let (changes, conflicts) = undo_plan(&to_undo, &live);
        assert!(conflicts.is_empty());
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind(), ChangeKind::Delete);
        let to_one = revisions_to_undo(&history, RollbackTarget::After(1));
        let (changes, _) = undo_plan(&to_one, &live);
        assert_eq!(changes[0].body().unwrap()["spec"]["order"], 1);
    }

    #[test]
    fn pending_objects_never_written_are_skipped() {
        let mut unwritten = touched("b", None, Some(gnp("b", 1, "")));
        unwritten.applied = false;
        let r1 = revision(
            1,
            RevisionState::Pending,
            vec![touched("a", None, Some(gnp("a", 1, "10"))), unwritten],
        );
        let live = BTreeMap::from([(key("a"), Some(gnp("a", 1, "10"))), (key("b"), None)]);
        let (changes, conflicts) = undo_plan(&[&r1], &live);
        assert!(conflicts.is_empty());
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].name, "a");
    }

    #[test]
    fn newest_skips_rolled_back_revisions() {
        let r1 = revision(
            1,
            RevisionState::Complete,
            vec![touched("a", None, Some(gnp("a", 1, "1")))],
        );
        let r2 = revision(
            2,
            RevisionState::RolledBack,
            vec![touched("b", None, Some(gnp("b", 1, "2")))],
        );
        let history = vec![r1, r2];
        assert_eq!(
            revisions_to_undo(&history, RollbackTarget::Newest)[0].revision,
            1
        );
    }

    #[test]
    fn a_deleted_object_is_recreated_without_server_fields() {
        let r1 = revision(
            1,
            RevisionState::Complete,
            vec![touched("a", Some(gnp("a", 1, "10")), None)],
        );
        let live = BTreeMap::from([(key("a"), None)]);
        let (changes, _) = undo_plan(&[&r1], &live);
        assert_eq!(changes[0].kind(), ChangeKind::Create);
        assert!(
            changes[0].body().unwrap()["metadata"]
                .get("resourceVersion")
                .is_none()
        );
    }
}
