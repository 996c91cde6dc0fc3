//! After a Calico upgrade: which applied stages to look at again.
//!
//! Each revision records the Calico release the cluster reported when it was written. For every
//! stage, the newest complete revision that applied it says which release that stage was
//! written against; when the release now differs, the stage is reported if its live objects
//! drifted or if what it renders now is no longer what that history wrote. Pure, so `plan` only
//! supplies the history, the release now and each stage's state and rendering.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ObjectKey, Revision, RevisionState, TouchedObject};
use crate::plan::specs_equivalent;
use crate::stages::{DesiredObject, StageId};

/// One stage as it stands now.
pub struct StageNow<'a> {
    pub stage: StageId,
    /// Its live objects no longer equal what it renders now (the "drifted" state).
    pub drifted: bool,
    /// What it renders now; empty when it does not apply.
    pub rendered: &'a [DesiredObject],
}

/// Calico moved from one release to another since a revision applied some stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CalicoUpgrade {
    pub from: String,
    pub to: String,
    /// The newest complete revision written under `from` that applied these stages.
    pub since_revision: u64,
    /// The stages it applied whose live objects drifted or whose rendering changed.
    pub stages: Vec<StageToRerun>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageToRerun {
    pub stage: StageId,
    pub drifted: bool,
    pub rendering_changed: bool,
    pub rerun: String,
}

impl CalicoUpgrade {
    pub fn headline(&self) -> String {
        format!(
            "Calico upgraded {} → {} since revision {}",
            self.from, self.to, self.since_revision
        )
    }
}

/// A revision that wrote objects (not a rollback, not failed or undone).
fn applies(revision: &Revision) -> bool {
    revision.state == RevisionState::Complete && revision.undoes.is_empty()
}

/// An object written in force: a staged copy (`up --staged`) applies no stage.
fn written(object: &TouchedObject) -> bool {
    object.applied && object.after.is_some() && object.kind.enforced().is_none()
}

/// The upgrades since the stages were applied, oldest recorded release first. Nothing for
/// stages whose newest applying revision predates the recorded release, or when the release
/// now is unknown.
pub fn upgrades(
    history: &[Revision],
    current_version: Option<&str>,
    stages: &[StageNow],
) -> Vec<CalicoUpgrade> {
    let Some(current) = current_version else {
        return Vec::new();
    };
    let mut newest_first: Vec<&Revision> = history.iter().filter(|r| applies(r)).collect();
    newest_first.sort_by_key(|r| std::cmp::Reverse(r.revision));
    let mut by_revision: BTreeMap<u64, CalicoUpgrade> = BTreeMap::new();
    for now in stages {
        let Some(revision) = newest_first.iter().find(|r| {
            r.objects
                .iter()
                .any(|o| o.stage == Some(now.stage) && written(o))
        }) else {
            continue;
        };
        let Some(recorded) = revision.calico_version.as_deref() else {
            continue;
        };
        if recorded == current {
            continue;
        }
        let rendering_changed = rendering_changed(&newest_first, revision, now);
        if !now.drifted && !rendering_changed {
            continue;
        }
        by_revision
            .entry(revision.revision)
            .or_insert_with(|| CalicoUpgrade {
                from: recorded.to_string(),
                to: current.to_string(),
                since_revision: revision.revision,
                stages: Vec::new(),
            })
            .stages
            .push(StageToRerun {
                stage: now.stage,
                drifted: now.drifted,
                rendering_changed,
                rerun: format!("kubectl calico-harden {}", now.stage),
            });
    }
    by_revision.into_values().collect()
}

/// What the stage renders now differs from what the history last wrote for it: an object
/// written with another spec, or an object the applying revision wrote that is no longer
/// rendered. Objects the history never wrote (made by hand) say nothing.
fn rendering_changed(newest_first: &[&Revision], applying: &Revision, now: &StageNow) -> bool {
    let last_written = |key: &ObjectKey| {
        newest_first
            .iter()
            .flat_map(|r| r.objects.iter())
            .find(|o| o.applied && &o.key() == key)
            .and_then(|o| o.after.as_ref())
    };
    let changed_spec = now.rendered.iter().any(|desired| {
        let key = (
            desired.kind,
            desired.namespace.clone(),
            desired.name.clone(),
        );
        last_written(&key).is_some_and(|after| {
            !specs_equivalent(
                &desired.manifest["spec"],
                after.get("spec").unwrap_or(&serde_json::Value::Null),
            )
        })
    });
    let dropped = applying
        .objects
        .iter()
        .filter(|o| o.stage == Some(now.stage) && written(o))
        .any(|o| {
            !now.rendered
                .iter()
                .any(|d| (d.kind, d.namespace.clone(), d.name.clone()) == o.key())
        });
    changed_spec || dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calico::policy::CalicoKind;
    use serde_json::{Value, json};

    fn gnp(name: &str, order: u32) -> Value {
        json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
               "metadata": {"name": name}, "spec": {"order": order}})
    }

    fn desired(stage: StageId, name: &str, order: u32) -> DesiredObject {
        DesiredObject {
            stage,
            kind: CalicoKind::GlobalNetworkPolicy,
            namespace: None,
            name: name.into(),
            manifest: gnp(name, order),
        }
    }

    fn wrote(stage: StageId, name: &str, order: u32) -> TouchedObject {
        TouchedObject {
            kind: CalicoKind::GlobalNetworkPolicy,
            namespace: None,
            name: name.into(),
            stage: Some(stage),
            before: None,
            after: Some(gnp(name, order)),
            applied: true,
        }
    }

    fn revision(n: u64, version: Option<&str>, objects: Vec<TouchedObject>) -> Revision {
        Revision {
            revision: n,
            time: String::new(),
            command: String::new(),
            tool_version: String::new(),
            user: String::new(),
            calico_version: version.map(str::to_string),
            state: RevisionState::Complete,
            objects,
            undoes: vec![],
            message: None,
        }
    }

    #[test]
    fn staged_copies_apply_no_stage_across_an_upgrade() {
        let mut staged = wrote(StageId::Localhost, "allow-localhost", 20);
        staged.kind = CalicoKind::StagedGlobalNetworkPolicy;
        let history = vec![revision(1, Some("v3.30.2"), vec![staged])];
        let localhost = [desired(StageId::Localhost, "allow-localhost", 20)];
        let stages = [StageNow {
            stage: StageId::Localhost,
            drifted: false,
            rendered: &localhost,
        }];
        assert_eq!(upgrades(&history, Some("v3.31.0"), &stages), vec![]);
    }

    #[test]
    fn an_upgrade_lists_the_drifted_and_the_rerendered_stages_with_the_command() {
        let history = vec![
            revision(
                1,
                Some("v3.30.2"),
                vec![
                    wrote(StageId::SafetyNet, "final-allow-everything", 10),
                    wrote(StageId::Localhost, "allow-localhost", 20),
                    wrote(StageId::Kubelet, "allow-kubelet", 30),
                ],
            ),
            revision(
                3,
                Some("v3.30.2"),
                vec![wrote(StageId::Kubelet, "allow-kubelet", 31)],
            ),
        ];
        let safety_net = [desired(StageId::SafetyNet, "final-allow-everything", 10)];
        let localhost = [desired(StageId::Localhost, "allow-localhost", 21)];
        let kubelet = [desired(StageId::Kubelet, "allow-kubelet", 31)];
        let stages = [
            StageNow {
                stage: StageId::SafetyNet,
                drifted: false,
                rendered: &safety_net,
            },
            StageNow {
                stage: StageId::Localhost,
                drifted: false,
                rendered: &localhost,
            },
            StageNow {
                stage: StageId::Kubelet,
                drifted: true,
                rendered: &kubelet,
            },
        ];
        let found = upgrades(&history, Some("v3.31.0"), &stages);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0].headline(),
            "Calico upgraded v3.30.2 → v3.31.0 since revision 1"
        );
        assert_eq!(
            found[0].stages,
            vec![StageToRerun {
                stage: StageId::Localhost,
                drifted: false,
                rendering_changed: true,
                rerun: "kubectl calico-harden localhost".into(),
            }]
        );
        assert_eq!(found[1].since_revision, 3);
        assert_eq!(
            found[1].stages,
            vec![StageToRerun {
                stage: StageId::Kubelet,
                drifted: true,
                rendering_changed: false,
                rerun: "kubectl calico-harden kubelet".into(),
            }]
        );
    }

    #[test]
    fn the_same_release_old_revisions_and_an_unknown_release_say_nothing() {
        let rendered = [desired(StageId::Localhost, "allow-localhost", 21)];
        let stages = [StageNow {
            stage: StageId::Localhost,
            drifted: true,
            rendered: &rendered,
        }];
        let wrote_localhost = vec![wrote(StageId::Localhost, "allow-localhost", 20)];
        let same = vec![revision(1, Some("v3.31.0"), wrote_localhost.clone())];
        assert!(upgrades(&same, Some("v3.31.0"), &stages).is_empty());
        let unrecorded = vec![revision(1, None, wrote_localhost.clone())];
        assert!(upgrades(&unrecorded, Some("v3.31.0"), &stages).is_empty());
        let recorded = vec![revision(1, Some("v3.30.2"), wrote_localhost)];
        assert!(upgrades(&recorded, None, &stages).is_empty());
        assert_eq!(upgrades(&recorded, Some("v3.31.0"), &stages).len(), 1);
    }

    #[test]
    fn an_unchanged_stage_after_an_upgrade_needs_no_rerun() {
        let history = vec![revision(
            1,
            Some("v3.30.2"),
            vec![wrote(StageId::Localhost, "allow-localhost", 20)],
        )];
        let rendered = [desired(StageId::Localhost, "allow-localhost", 20)];
        let stages = [StageNow {
            stage: StageId::Localhost,
            drifted: false,
            rendered: &rendered,
        }];
        assert!(upgrades(&history, Some("v3.31.0"), &stages).is_empty());
    }

    #[test]
    fn a_stage_that_stopped_rendering_an_object_it_wrote_changed() {
        let history = vec![revision(
            1,
            Some("v3.30.2"),
            vec![
                wrote(StageId::Localhost, "allow-localhost", 20),
                wrote(StageId::Localhost, "allow-localhost-v6", 20),
            ],
        )];
        let rendered = [desired(StageId::Localhost, "allow-localhost", 20)];
        let stages = [StageNow {
            stage: StageId::Localhost,
            drifted: false,
            rendered: &rendered,
        }];
        let found = upgrades(&history, Some("v3.31.0"), &stages);
        assert!(found[0].stages[0].rendering_changed);
    }

    #[test]
    fn rolled_back_and_rollback_revisions_do_not_count_as_applying() {
        let mut undone = revision(
            2,
            Some("v3.31.0"),
            vec![wrote(StageId::Localhost, "allow-localhost", 21)],
        );
        undone.state = RevisionState::RolledBack;
        let mut rollback = revision(
            3,
            Some("v3.31.0"),
            vec![wrote(StageId::Localhost, "allow-localhost", 20)],
        );
        rollback.undoes = vec![2];
        let history = vec![
            revision(
                1,
                Some("v3.30.2"),
                vec![wrote(StageId::Localhost, "allow-localhost", 20)],
            ),
            undone,
            rollback,
        ];
        let rendered = [desired(StageId::Localhost, "allow-localhost", 20)];
        let stages = [StageNow {
            stage: StageId::Localhost,
            drifted: true,
            rendered: &rendered,
        }];
        let found = upgrades(&history, Some("v3.31.0"), &stages);
        assert_eq!(found[0].since_revision, 1);
    }
}
