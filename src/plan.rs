//! Desired objects against live ones: the list of changes a command would make. Pure.
//!
//! A live object counts as "in place" when its spec says the same as ours once empty fields and
//! server defaults are set aside, so a cluster hardened by hand with the tutorial's manifests is
//! recognised. Such an object lacks our label: updating it is an *adoption*, which the
//! confirmation names explicitly.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::calico::policy::CalicoKind;
use crate::stages::{
    DesiredObject, MANAGED_BY_LABEL, MANAGED_BY_VALUE, StageId, object_display_name,
};

/// What kind of write a change is, without its objects: for the diff header and RBAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    Create,
    /// Ours, but someone changed it.
    Update,
    /// Same name, made by hand: becomes ours after confirmation.
    Adopt,
    Delete,
    /// A merge patch (KubeControllersConfiguration).
    Patch,
}

impl ChangeKind {
    /// The API verb this change takes (what RBAC must allow).
    pub fn verb(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update | Self::Adopt => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
        }
    }
}

/// One write, fully prepared: which object, and what its [`Action`] does to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub stage: StageId,
    pub object_kind: CalicoKind,
    pub namespace: Option<String>,
    pub name: String,
    pub action: Action,
}

/// What is there now (`before`, the live object) and what will be there afterwards (`after`,
/// for the diff and the journal); each write has exactly the objects it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The object does not exist; `after` is sent as is.
    Create { after: Value },
    /// Ours, but someone changed it: `after` replaces it (with the live resourceVersion, so a
    /// concurrent edit conflicts instead of being overwritten).
    Update { before: Value, after: Value },
    /// Same name, made by hand: replaced like an update and becomes ours after confirmation.
    Adopt { before: Value, after: Value },
    /// A merge patch (KubeControllersConfiguration): `patch` is sent, `after` is the result.
    Patch {
        before: Value,
        patch: Value,
        after: Value,
    },
    /// Deleted, guarded by `before`'s resourceVersion.
    Delete { before: Value },
}

impl Change {
    pub fn display_name(&self) -> String {
        object_display_name(self.object_kind, self.namespace.as_deref(), &self.name)
    }

    pub fn kind(&self) -> ChangeKind {
        match self.action {
            Action::Create { .. } => ChangeKind::Create,
            Action::Update { .. } => ChangeKind::Update,
            Action::Adopt { .. } => ChangeKind::Adopt,
            Action::Patch { .. } => ChangeKind::Patch,
            Action::Delete { .. } => ChangeKind::Delete,
        }
    }

    /// The live object; None for a create.
    pub fn before(&self) -> Option<&Value> {
        match &self.action {
            Action::Create { .. } => None,
            Action::Update { before, .. }
            | Action::Adopt { before, .. }
            | Action::Patch { before, .. }
            | Action::Delete { before } => Some(before),
        }
    }

    /// The object as it will be; None after a delete.
    pub fn after(&self) -> Option<&Value> {
        match &self.action {
            Action::Create { after }
            | Action::Update { after, .. }
            | Action::Adopt { after, .. }
            | Action::Patch { after, .. } => Some(after),
            Action::Delete { .. } => None,
        }
    }

    /// What is sent: the whole object, the patch for a patch; None for a delete.
    pub fn body(&self) -> Option<&Value> {
        match &self.action {
            Action::Patch { patch, .. } => Some(patch),
            _ => self.after(),
        }
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.before()
            .and_then(|b| b.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
    }
}

/// What a desired object's live counterpart looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectState {
    Missing,
    Applied,
    /// Same spec, made by hand (no managed-by label).
    AppliedByHand,
    Drifted,
}

pub fn is_managed(live: &Value) -> bool {
    live.pointer(&format!(
        "/metadata/labels/{}",
        MANAGED_BY_LABEL.replace('/', "~1")
    ))
    .and_then(Value::as_str)
        == Some(MANAGED_BY_VALUE)
}

pub fn object_state(desired: &DesiredObject, live: Option<&Value>) -> ObjectState {
    let Some(live) = live else {
        return ObjectState::Missing;
    };
    let same_spec = specs_equivalent(
        &desired.manifest["spec"],
        live.get("spec").unwrap_or(&Value::Null),
    );
    match (same_spec, is_managed(live)) {
        (true, true) => ObjectState::Applied,
        (true, false) => ObjectState::AppliedByHand,
        (false, _) => ObjectState::Drifted,
    }
}

/// The change that brings `live` to `desired`, or None when nothing is to do.
pub fn change_for(desired: &DesiredObject, live: Option<&Value>) -> Option<Change> {
    let state = object_state(desired, live);
    let action = match (state, live) {
        (ObjectState::Applied, _) => return None,
        (_, None) => Action::Create {
            after: desired.manifest.clone(),
        },
        (_, Some(live)) => {
            let (before, after) = (live.clone(), updated_object(live, &desired.manifest));
            if is_managed(live) {
                Action::Update { before, after }
            } else {
                Action::Adopt { before, after }
            }
        }
    };
    Some(Change {
        stage: desired.stage,
        object_kind: desired.kind,
        namespace: desired.namespace.clone(),
        name: desired.name.clone(),
        action,
    })
}

/// The live object with our spec and labels, keeping its resourceVersion (so a concurrent edit
/// conflicts instead of being overwritten) and every label and annotation others put there.
fn updated_object(live: &Value, desired: &Value) -> Value {
    let mut body = desired.clone();
    let mut labels = live
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(ours) = desired
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
    {
        labels.extend(ours.clone());
    }
    body["metadata"]["labels"] = Value::Object(labels);
    for key in ["resourceVersion", "annotations", "uid"] {
        if let Some(value) = live.pointer(&format!("/metadata/{key}")) {
            body["metadata"][key] = value.clone();
        }
    }
    body
}

pub fn delete_change(stage: StageId, kind: CalicoKind, live: &Value) -> Change {
    Change {
        stage,
        object_kind: kind,
        namespace: live
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string),
        name: live
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        action: Action::Delete {
            before: live.clone(),
        },
    }
}

/// A merge patch of `live`, with the object as it will be afterwards.
pub fn patch_change(
    stage: StageId,
    kind: CalicoKind,
    live: &Value,
    patch: Value,
) -> Option<Change> {
    let mut after = live.clone();
    json_patch::merge(&mut after, &patch);
    if after == *live {
        return None;
    }
    Some(Change {
        stage,
        object_kind: kind,
        namespace: None,
        name: live
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        action: Action::Patch {
            before: live.clone(),
            patch,
            after,
        },
    })
}

/// Specs are equivalent when they say the same once empty values and server defaults are
/// removed and numbers are compared by value (the API may return 1001 as 1001.0).
pub fn specs_equivalent(desired: &Value, live: &Value) -> bool {
    values_equivalent(&normalise(desired), &normalise(live))
}

fn values_equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equivalent(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equivalent(v, w)))
        }
        _ => a == b,
    }
}

/// Drop nulls, empty strings, lists and maps, and `tier: default` (what the API server fills in).
fn normalise(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let v = normalise(v);
                let empty = match &v {
                    Value::Null => true,
                    Value::String(s) => s.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    Value::Object(o) => o.is_empty(),
                    _ => false,
                };
                if empty || (k == "tier" && v == json!("default")) {
                    continue;
                }
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(normalise).collect()),
        other => other.clone(),
    }
}

/// What a person wants to see of an object in a diff: no server bookkeeping.
pub fn presentable(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "selfLink",
        ] {
            metadata.remove(key);
        }
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::ClusterFacts;
    use crate::stages::{StageOptions, StageRender, render};

    fn desired(stage: StageId) -> DesiredObject {
        match render(
            stage,
            &ClusterFacts::tutorial_lab(),
            &StageOptions::with_defaults(),
        ) {
            StageRender::Objects(mut objects) => objects.remove(0),
            StageRender::NotApplicable(why) => panic!("{why}"),
        }
    }

    fn live_from(desired: &DesiredObject) -> Value {
        let mut live = desired.manifest.clone();
        live["metadata"]["resourceVersion"] = json!("42");
        live["metadata"]["uid"] = json!("u-1");
        live
    }

    #[test]
    fn missing_object_is_created() {
        let d = desired(StageId::Localhost);
        let change = change_for(&d, None).unwrap();
        assert_eq!(change.kind(), ChangeKind::Create);
        assert_eq!(change.body(), Some(&d.manifest));
    }

    #[test]
    fn identical_object_needs_nothing_even_with_server_defaults() {
        let d = desired(StageId::NodesToKapi);
        let mut live = live_from(&d);
        live["spec"]["tier"] = json!("default");
        live["spec"]["order"] = json!(1001.0);
        live["spec"]["ingress"][0]["source"] = json!({});
        assert!(change_for(&d, Some(&live)).is_none());
    }

    #[test]
    fn drifted_object_is_updated_with_its_resource_version_and_foreign_labels() {
        let d = desired(StageId::NodesToKapi);
        let mut live = live_from(&d);
        live["spec"]["order"] = json!(5);
        live["metadata"]["labels"]["team"] = json!("net");
        let change = change_for(&d, Some(&live)).unwrap();
        assert_eq!(change.kind(), ChangeKind::Update);
        let body = change.body().unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        assert_eq!(body["metadata"]["labels"]["team"], "net");
        assert_eq!(body["spec"]["order"], 1001);
    }

    #[test]
    fn hand_made_object_is_adopted_not_silently_overwritten() {
        let d = desired(StageId::Localhost);
        let mut live = live_from(&d);
        live["metadata"]["labels"] = json!({});
        assert_eq!(object_state(&d, Some(&live)), ObjectState::AppliedByHand);
        assert_eq!(
            change_for(&d, Some(&live)).unwrap().kind(),
            ChangeKind::Adopt
        );
    }

    #[test]
    fn patch_that_changes_nothing_is_no_change() {
        let live = json!({"metadata": {"name": "default"}, "spec": {"controllers": {"node": {"hostEndpoint": {"autoCreate": "Enabled"}}}}});
        let patch =
            json!({"spec": {"controllers": {"node": {"hostEndpoint": {"autoCreate": "Enabled"}}}}});
        assert!(
            patch_change(
                StageId::EnableHep,
                CalicoKind::KubeControllersConfiguration,
                &live,
                patch
            )
            .is_none()
        );
    }
}
