//! Unified YAML diffs of planned changes, coloured like `git diff`.

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use super::printer::{Printer, Tone};
use crate::plan::{Change, ChangeKind, presentable};

pub fn change_header(change: &Change) -> String {
    let verb = match change.kind() {
        ChangeKind::Create => "create",
        ChangeKind::Update => "update (drifted from what this tool wrote)",
        ChangeKind::Adopt => "ADOPT (made by hand; will be labelled as managed by this tool)",
        ChangeKind::Delete => "delete",
        ChangeKind::Patch => "patch",
    };
    format!("{} {verb} [{}]", change.display_name(), change.stage)
}

fn yaml_of(object: Option<&Value>) -> String {
    object.map_or_else(String::new, |o| crate::yaml::to_yaml(&presentable(o)))
}

/// The unified diff of one change (before → after), three lines of context.
pub fn render_change(printer: &Printer, change: &Change) -> String {
    let mut out = printer.paint(Tone::Bold, &change_header(change));
    out.push('\n');
    out.push_str(&render_objects(printer, change.before(), change.after()));
    out
}

/// The unified diff of two versions of an object (None: absent), three lines of context.
pub fn render_objects(printer: &Printer, before: Option<&Value>, after: Option<&Value>) -> String {
    let (before, after) = (yaml_of(before), yaml_of(after));
    let mut out = String::new();
    let diff = TextDiff::from_lines(&before, &after);
    for group in diff.grouped_ops(3) {
        for op in group {
            for line in diff.iter_changes(&op) {
                let (sign, tone) = match line.tag() {
                    ChangeTag::Delete => ("-", Tone::Removed),
                    ChangeTag::Insert => ("+", Tone::Added),
                    ChangeTag::Equal => (" ", Tone::Plain),
                };
                let text = format!("{sign} {}", line.value().trim_end_matches('\n'));
                out.push_str(&printer.paint(tone, &text));
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calico::policy::CalicoKind;
    use crate::stages::StageId;
    use serde_json::json;

    #[test]
    fn update_diff_shows_only_the_changed_lines_with_context() {
        let before = json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "x", "resourceVersion": "7"}, "spec": {"order": 5, "selector": "all()"}});
        let mut after = before.clone();
        after["spec"]["order"] = json!(1001);
        let change = Change {
            stage: StageId::Localhost,
            object_kind: CalicoKind::GlobalNetworkPolicy,
            namespace: None,
            name: "x".into(),
            action: crate::plan::Action::Update { before, after },
        };
        let printer = Printer {
            color: false,
            color_stdout: false,
            output: None,
        };
        let text = render_change(&printer, &change);
        assert!(text.contains("-   order: 5"), "{text}");
        assert!(text.contains("+   order: 1001"), "{text}");
        assert!(!text.contains("resourceVersion"), "{text}");
    }
}
