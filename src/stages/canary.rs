//! Canary lockdown: default deny on the host endpoints of some nodes only.
//!
//! `lockdown --nodes SELECTOR` takes a kubectl label selector over nodes. The safety net stays,
//! narrowed with a Calico selector that keeps every workload and every other host endpoint:
//!
//! ```text
//! has(projectcalico.org/namespace) || !(<the node selector in Calico's syntax>)
//! ```
//!
//! Why this shape: Calico gives every workload endpoint the label `projectcalico.org/namespace`
//! and no host endpoint has it (it is what a rule's `namespaceSelector: global()` excludes), so
//! the first half keeps every pod under the safety net whatever labels it has. Workloads do not
//! carry node labels, and `!=`, `notin` and `!key` match an absent label, so the node selector
//! alone must never decide for them. The second half is evaluated on host endpoints, which carry
//! their node's labels because calico-kube-controllers copies them, asynchronously. So before
//! narrowing, [`verify_host_endpoints`] checks that the labels on the host endpoints agree with
//! the nodes': the targeted nodes' endpoints leave the safety net, every other one stays.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kube::core::{Expression, SelectorExt};
use serde_json::Value;

use crate::calico::objects::HostEndpoint;
use crate::calico::selector::{self, Expr, Selector};
use crate::error::Error;

/// The label Calico puts on every workload endpoint (the pod's namespace) and on no host
/// endpoint.
pub const WORKLOAD_LABEL: &str = "projectcalico.org/namespace";

/// A node label selector in kubectl's syntax, validated: `key=value`, `key==value`,
/// `key!=value`, `key`, `!key`, `key in (a,b)`, `key notin (a,b)`, joined by commas (all must
/// hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSelector {
    expressions: Vec<Expression>,
}

impl fmt::Display for NodeSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.expressions.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    Equals,
    NotEquals,
    Open,
    Close,
    Comma,
    Compare(char),
}

fn tokenize(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '!' if chars.peek() == Some(&'=') => {
                chars.next();
                tokens.push(Token::NotEquals);
            }
            '!' => tokens.push(Token::Not),
            '=' => {
                if chars.peek() == Some(&'=') {
                    chars.next();
                }
                tokens.push(Token::Equals);
            }
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            ',' => tokens.push(Token::Comma),
            '<' | '>' => tokens.push(Token::Compare(c)),
            first => {
                let mut word = String::from(first);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || "!=(),<>".contains(next) {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    tokens
}

fn is_name_part(value: &str, max: usize) -> bool {
    let bytes = value.as_bytes();
    !value.is_empty()
        && value.len() <= max
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A label key as Kubernetes accepts it: `[prefix/]name`.
fn valid_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name, 63),
        None => is_name_part(key, 63),
    }
}

/// A label value as Kubernetes accepts it (empty is allowed).
fn valid_value(value: &str) -> bool {
    value.is_empty() || is_name_part(value, 63)
}

impl NodeSelector {
    /// Parse and validate `--nodes`; every failure is a usage error naming the problem.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::usage(format!("invalid --nodes {raw:?}: {why}"));
        let tokens = tokenize(raw);
        if tokens.is_empty() {
            return Err(bad(
                "an empty selector selects every node; run lockdown without --nodes for that",
            ));
        }
        let mut expressions = Vec::new();
        let mut rest = tokens.as_slice();
        loop {
            let (expression, after) = parse_requirement(rest).map_err(|why| bad(&why))?;
            expressions.push(expression);
            match after {
                [] => break,
                [Token::Comma, more @ ..] if !more.is_empty() => rest = more,
                [Token::Comma] => return Err(bad("a trailing ',' needs another requirement")),
                [other, ..] => {
                    return Err(bad(&format!(
                        "expected ',' between requirements, found {}",
                        describe(other)
                    )));
                }
            }
        }
        for expression in &expressions {
            let (key, values): (&str, Vec<&str>) = match expression {
                Expression::In(key, values) | Expression::NotIn(key, values) => {
                    (key, values.iter().map(String::as_str).collect())
                }
                Expression::Equal(key, value) | Expression::NotEqual(key, value) => {
                    (key, vec![value.as_str()])
                }
                Expression::Exists(key) | Expression::DoesNotExist(key) => (key, vec![]),
            };
            if !valid_key(key) {
                return Err(bad(&format!(
                    "{key:?} is not a label key (an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
                )));
            }
            if let Some(value) = values.iter().find(|v| !valid_value(v)) {
                return Err(bad(&format!(
                    "{value:?} is not a label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
                )));
            }
        }
        Ok(Self { expressions })
    }

    /// True when a node with these labels is selected (kubectl's semantics).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.expressions.iter().all(|e| e.matches(labels))
    }

    /// The same selector in Calico's language. Kubernetes and Calico agree on every operator
    /// used here, including that `!=` and `notin` match an absent label.
    pub fn calico_expr(&self) -> Expr {
        let mut operands: Vec<Expr> = self.expressions.iter().map(calico_requirement).collect();
        if operands.len() == 1 {
            operands.remove(0)
        } else {
            Expr::And(operands)
        }
    }
}

fn calico_requirement(expression: &Expression) -> Expr {
    let set = |values: &BTreeSet<String>| values.iter().cloned().collect::<Vec<_>>();
    match expression {
        Expression::In(key, values) => Expr::In {
            key: key.clone(),
            values: set(values),
        },
        Expression::NotIn(key, values) => Expr::NotIn {
            key: key.clone(),
            values: set(values),
        },
        Expression::Equal(key, value) => Expr::Eq {
            key: key.clone(),
            value: value.clone(),
        },
        Expression::NotEqual(key, value) => Expr::Ne {
            key: key.clone(),
            value: value.clone(),
        },
        Expression::Exists(key) => Expr::Has(key.clone()),
        Expression::DoesNotExist(key) => Expr::Not(Box::new(Expr::Has(key.clone()))),
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => format!("{w:?}"),
        Token::Not => "'!'".into(),
        Token::Equals => "'='".into(),
        Token::NotEquals => "'!='".into(),
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
        Token::Comma => "','".into(),
        Token::Compare(c) => format!("'{c}'"),
    }
}

/// One requirement from the front of `tokens`, and what follows it.
fn parse_requirement(tokens: &[Token]) -> Result<(Expression, &[Token]), String> {
    match tokens {
        [Token::Not, Token::Word(key), rest @ ..] => {
            Ok((Expression::DoesNotExist(key.clone()), rest))
        }
        [Token::Not, ..] => Err("'!' must be followed by a label key".into()),
        [Token::Word(key), rest @ ..] => match rest {
            [] | [Token::Comma, ..] => Ok((Expression::Exists(key.clone()), rest)),
            [Token::Equals | Token::NotEquals, after @ ..] => {
                let (value, after) = match after {
                    [Token::Word(value), after @ ..] => (value.clone(), after),
                    // `key=` selects an empty value, as in kubectl.
                    [] | [Token::Comma, ..] => (String::new(), after),
                    [other, ..] => {
                        return Err(format!(
                            "expected a value after {key}, found {}",
                            describe(other)
                        ));
                    }
                };
                let expression = if rest[0] == Token::Equals {
                    Expression::Equal(key.clone(), value)
                } else {
                    Expression::NotEqual(key.clone(), value)
                };
                Ok((expression, after))
            }
            [Token::Word(op), after @ ..] if op == "in" || op == "notin" => {
                let (values, after) = parse_set(after, key)?;
                let expression = if op == "in" {
                    Expression::In(key.clone(), values)
                } else {
                    Expression::NotIn(key.clone(), values)
                };
                Ok((expression, after))
            }
            [Token::Compare(c), ..] => Err(format!(
                "'{c}' compares numbers, which Calico selectors cannot express; use =, !=, in or notin"
            )),
            [other, ..] => Err(format!(
                "expected =, ==, !=, in or notin after {key}, found {}",
                describe(other)
            )),
        },
        [other, ..] => Err(format!("expected a label key, found {}", describe(other))),
        [] => Err("expected a label key".into()),
    }
}

/// `(a,b,c)` after `in`/`notin`.
fn parse_set<'t>(
    tokens: &'t [Token],
    key: &str,
) -> Result<(BTreeSet<String>, &'t [Token]), String> {
    let [Token::Open, after_open @ ..] = tokens else {
        return Err(format!(
            "expected '(' and a list of values after {key} in/notin"
        ));
    };
    let mut rest: &[Token] = after_open;
    let mut values = BTreeSet::new();
    loop {
        match rest {
            [Token::Word(value), Token::Comma, after @ ..] => {
                values.insert(value.clone());
                rest = after;
            }
            [Token::Word(value), Token::Close, after @ ..] => {
                values.insert(value.clone());
                return Ok((values, after));
            }
            [Token::Close, ..] if values.is_empty() => {
                return Err(format!("the set of values for {key} is empty"));
            }
            _ => return Err(format!("expected a list of values like (a,b) for {key}")),
        }
    }
}

/// The safety net's selector under a canary lockdown of the nodes `nodes` selects.
pub fn narrowed_safety_net_selector(nodes: &NodeSelector) -> String {
    format!("has({WORKLOAD_LABEL}) || !({})", nodes.calico_expr())
}

/// The host scope a safety-net selector written by [`narrowed_safety_net_selector`] excludes,
/// in Calico's syntax; None for any other selector.
pub fn excluded_host_scope(safety_net_selector: &str) -> Option<Expr> {
    let parsed = selector::parse(safety_net_selector).ok()?;
    match parsed.expr() {
        Expr::Or(operands) => match operands.as_slice() {
            [Expr::Has(label), Expr::Not(scope)] if label == WORKLOAD_LABEL => {
                Some((**scope).clone())
            }
            _ => None,
        },
        _ => None,
    }
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The live host endpoints as typed; one Calico's schema would refuse selects nothing.
fn typed_host_endpoints(host_endpoints: &[Value]) -> Vec<HostEndpoint> {
    host_endpoints
        .iter()
        .filter_map(|h| HostEndpoint::from_value(h).ok())
        .collect()
}

fn node_of(host_endpoint: &HostEndpoint) -> &str {
    host_endpoint.spec.node.as_deref().unwrap_or_default()
}

/// What a canary lockdown covers, or why it cannot go ahead as asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Coverage {
    /// Targeted nodes with the host endpoints that leave the safety net.
    pub covered: Vec<(String, Vec<String>)>,
    /// Why the narrowed safety net would not select exactly what `--nodes` asks for.
    pub problems: Vec<String>,
}

/// Check, on the live nodes and host endpoints, that the narrowed safety net selects exactly
/// what `nodes` asks for: every host endpoint of a selected node carries the labels that take it
/// out of the safety net, and no host endpoint of another node does.
pub fn verify_host_endpoints(
    nodes: &NodeSelector,
    cluster_nodes: &[Value],
    host_endpoints: &[Value],
) -> Coverage {
    let narrowed = selector::parse(&narrowed_safety_net_selector(nodes))
        .expect("the narrowed safety-net selector is valid Calico");
    let mut coverage = Coverage::default();
    let targeted: BTreeSet<&str> = cluster_nodes
        .iter()
        .filter(|n| nodes.matches(&labels_of(n)))
        .map(name_of)
        .collect();
    if targeted.is_empty() {
        let all: Vec<&str> = cluster_nodes.iter().map(name_of).collect();
        coverage.problems.push(format!(
            "no node matches --nodes {nodes} (nodes: {})",
            if all.is_empty() {
                "none".into()
            } else {
                all.join(", ")
            }
        ));
        return coverage;
    }
    let host_endpoints = typed_host_endpoints(host_endpoints);
    for node in &targeted {
        let heps: Vec<&HostEndpoint> = host_endpoints
            .iter()
            .filter(|h| node_of(h) == *node)
            .collect();
        if heps.is_empty() {
            coverage.problems.push(format!(
                "node {node} has no host endpoint, so default deny would not reach it: run `kubectl calico-harden enable-hep --wait`"
            ));
            continue;
        }
        let mut names = Vec::new();
        for hep in heps {
            if narrowed.matches(&hep.metadata.labels) {
                coverage.problems.push(format!(
                    "HostEndpoint {} of node {node} does not carry the labels --nodes {nodes} selects the node by, so it would keep the safety net (calico-kube-controllers copies node labels to its host endpoints a moment after they change; label a hand-made one yourself)",
                    hep.metadata.name
                ));
            } else {
                names.push(hep.metadata.name.clone());
            }
        }
        coverage.covered.push(((*node).to_string(), names));
    }
    for hep in &host_endpoints {
        let node = node_of(hep);
        if !targeted.contains(node) && !narrowed.matches(&hep.metadata.labels) {
            coverage.problems.push(format!(
                "HostEndpoint {} of node {node} carries labels --nodes {nodes} selects, though node {node} does not match: it would lose the safety net too (wait for calico-kube-controllers to copy the node's labels, or fix the endpoint's)",
                hep.metadata.name
            ));
        }
    }
    coverage
}

/// Nodes whose every host endpoint is outside the safety net selected by `safety_net_selector`:
/// the nodes a canary lockdown covers.
pub fn locked_nodes(safety_net_selector: &Selector, host_endpoints: &[Value]) -> Vec<String> {
    let host_endpoints = typed_host_endpoints(host_endpoints);
    let mut by_node: BTreeMap<&str, bool> = BTreeMap::new();
    for hep in &host_endpoints {
        let outside = !safety_net_selector.matches(&hep.metadata.labels);
        by_node
            .entry(node_of(hep))
            .and_modify(|all| *all &= outside)
            .or_insert(outside);
    }
    by_node
        .into_iter()
        .filter(|(_, outside)| *outside)
        .map(|(node, _)| node.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn node_labels(name: &str) -> BTreeMap<String, String> {
        labels(&[
            ("kubernetes.io/hostname", name),
            ("kubernetes.io/os", "linux"),
        ])
    }

    fn hep_labels(name: &str) -> BTreeMap<String, String> {
        let mut l = node_labels(name);
        l.insert(
            "projectcalico.org/created-by".into(),
            "calico-kube-controllers".into(),
        );
        l
    }

    /// What Calico's selectors see on a pod: its labels plus the projectcalico.org ones.
    fn workload_labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut l = labels(extra);
        l.insert(WORKLOAD_LABEL.into(), "app-frontend".into());
        l.insert("projectcalico.org/orchestrator".into(), "k8s".into());
        l
    }

    fn narrowed(raw: &str) -> Selector {
        selector::parse(&narrowed_safety_net_selector(
            &NodeSelector::parse(raw).unwrap(),
        ))
        .unwrap()
    }

    #[test]
    fn kubectl_syntax_becomes_the_same_calico_selector() {
        for (raw, calico) in [
            (
                "kubernetes.io/hostname=node1",
                "kubernetes.io/hostname == \"node1\"",
            ),
            (
                "kubernetes.io/hostname==node1",
                "kubernetes.io/hostname == \"node1\"",
            ),
            (
                "node-role.kubernetes.io/canary",
                "has(node-role.kubernetes.io/canary)",
            ),
            (
                "!node-role.kubernetes.io/control-plane",
                "!has(node-role.kubernetes.io/control-plane)",
            ),
            ("zone != a", "zone != \"a\""),
            ("zone in (b, a)", "zone in {\"a\", \"b\"}"),
            ("zone notin (a)", "zone not in {\"a\"}"),
            ("canary=", "canary == \"\""),
            (
                "kubernetes.io/os=linux,canary",
                "(kubernetes.io/os == \"linux\" && has(canary))",
            ),
        ] {
            let parsed = NodeSelector::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(parsed.calico_expr().to_string(), calico, "{raw}");
            // Calico parses what we print back into the same tree.
            assert_eq!(
                selector::parse(calico).unwrap().expr(),
                &parsed.calico_expr()
            );
        }
    }

    #[test]
    fn bad_node_selectors_are_usage_errors() {
        for bad in [
            "",
            "  ",
            "a=b,",
            ",a",
            "=x",
            "a b",
            "key>3",
            "key<3",
            "a in b",
            "a in ()",
            "a in (x",
            "a notin (x y)",
            "Bad Key=1",
            "-a=b",
            "a=b/c",
            "a=-b",
            "UPPER.example/x=y",
            "!",
            "!a=b",
            "a=b)",
            &format!("a={}", "x".repeat(64)),
        ] {
            let err = NodeSelector::parse(bad).expect_err(bad);
            assert_eq!(err.exit_status(), crate::exit::ExitStatus::Usage, "{bad}");
            assert!(err.to_string().contains("invalid --nodes"), "{bad}: {err}");
        }
    }

    #[test]
    fn node_selection_follows_kubectl() {
        let canary =
            NodeSelector::parse("kubernetes.io/hostname in (node1,node2),!control").unwrap();
        assert!(canary.matches(&node_labels("node1")));
        assert!(!canary.matches(&node_labels("control")));
        let mut control = node_labels("node1");
        control.insert("control".into(), String::new());
        assert!(!canary.matches(&control));
    }

    /// The narrowed safety net keeps every workload, whatever its labels, and every host
    /// endpoint except the targeted nodes'.
    #[test]
    fn narrowed_safety_net_selects_exactly_what_is_intended() {
        let by_name = narrowed("kubernetes.io/hostname=node1");
        assert_eq!(
            narrowed_safety_net_selector(
                &NodeSelector::parse("kubernetes.io/hostname=node1").unwrap()
            ),
            "has(projectcalico.org/namespace) || !(kubernetes.io/hostname == \"node1\")"
        );
        assert!(!by_name.matches(&hep_labels("node1")));
        assert!(by_name.matches(&hep_labels("node2")));
        assert!(by_name.matches(&hep_labels("control")));
        assert!(by_name.matches(&workload_labels(&[("app", "frontend")])));
        // A pod that happens to carry the node's label stays under the safety net.
        assert!(by_name.matches(&workload_labels(&[("kubernetes.io/hostname", "node1")])));

        // Selectors that match an absent label: without the workload half they would take
        // every pod out of the safety net.
        for raw in [
            "kubernetes.io/hostname!=node2",
            "!node-role.kubernetes.io/control-plane",
            "zone notin (a)",
        ] {
            let s = narrowed(raw);
            assert!(s.matches(&workload_labels(&[])), "{raw}");
            assert!(!s.matches(&hep_labels("node1")), "{raw}");
        }
        let not_control = narrowed("!node-role.kubernetes.io/control-plane");
        let mut control = hep_labels("control");
        control.insert(
            "node-role.kubernetes.io/control-plane".into(),
            String::new(),
        );
        assert!(not_control.matches(&control));

        let by_role = narrowed("node-role.kubernetes.io/canary");
        let mut canary = hep_labels("node2");
        canary.insert("node-role.kubernetes.io/canary".into(), String::new());
        assert!(!by_role.matches(&canary));
        assert!(by_role.matches(&hep_labels("node1")));
        // A host endpoint made by hand without the node's labels keeps the safety net.
        assert!(by_role.matches(&BTreeMap::new()));
    }

    #[test]
    fn the_narrowed_selector_is_recognised_and_nothing_else() {
        let nodes = NodeSelector::parse("kubernetes.io/os=linux,canary").unwrap();
        assert_eq!(
            excluded_host_scope(&narrowed_safety_net_selector(&nodes)),
            Some(nodes.calico_expr())
        );
        for other in [
            "",
            "all()",
            "has(projectcalico.org/namespace)",
            "!has(a) || has(projectcalico.org/namespace)",
            "not valid (",
        ] {
            assert_eq!(excluded_host_scope(other), None, "{other}");
        }
    }

    fn node(name: &str, extra: &[(&str, &str)]) -> Value {
        let mut l = node_labels(name);
        l.extend(labels(extra));
        json!({"metadata": {"name": name, "labels": l}})
    }

    fn hep(name: &str, node: &str, l: &BTreeMap<String, String>) -> Value {
        json!({"metadata": {"name": name, "labels": l}, "spec": {"node": node}})
    }

    #[test]
    fn host_endpoints_must_carry_the_labels_the_narrowed_net_relies_on() {
        let nodes = vec![
            node("control", &[]),
            node("node1", &[("canary", "")]),
            node("node2", &[]),
        ];
        let mut canary_hep = hep_labels("node1");
        canary_hep.insert("canary".into(), String::new());
        let in_sync = vec![
            hep("control-auto-hep", "control", &hep_labels("control")),
            hep("node1-auto-hep", "node1", &canary_hep),
            hep("node2-auto-hep", "node2", &hep_labels("node2")),
        ];
        let selector = NodeSelector::parse("canary").unwrap();
        let ok = verify_host_endpoints(&selector, &nodes, &in_sync);
        assert_eq!(ok.problems, Vec::<String>::new());
        assert_eq!(
            ok.covered,
            vec![("node1".into(), vec!["node1-auto-hep".into()])]
        );

        // The label is on the node, not yet on its host endpoint.
        let lagging = vec![
            in_sync[0].clone(),
            hep("node1-auto-hep", "node1", &hep_labels("node1")),
            in_sync[2].clone(),
        ];
        let refused = verify_host_endpoints(&selector, &nodes, &lagging);
        assert_eq!(refused.problems.len(), 1, "{:?}", refused.problems);
        assert!(refused.problems[0].contains("HostEndpoint node1-auto-hep of node node1"));

        // A hand-made endpoint of node1 without labels.
        let mut hand_made = in_sync.clone();
        hand_made.push(hep("node1-eth0", "node1", &BTreeMap::new()));
        let refused = verify_host_endpoints(&selector, &nodes, &hand_made);
        assert!(
            refused.problems.iter().any(|p| p.contains("node1-eth0")),
            "{:?}",
            refused.problems
        );

        // The label left node2 but is still on node2's endpoint.
        let mut stale = in_sync.clone();
        let mut node2_stale = hep_labels("node2");
        node2_stale.insert("canary".into(), String::new());
        stale[2] = hep("node2-auto-hep", "node2", &node2_stale);
        let refused = verify_host_endpoints(&selector, &nodes, &stale);
        assert!(
            refused
                .problems
                .iter()
                .any(|p| p.contains("node2-auto-hep") && p.contains("lose the safety net")),
            "{:?}",
            refused.problems
        );

        let nothing = verify_host_endpoints(
            &NodeSelector::parse("kubernetes.io/hostname=node9").unwrap(),
            &nodes,
            &in_sync,
        );
        assert!(
            nothing.problems[0].contains("no node matches"),
            "{:?}",
            nothing.problems
        );
        let without_hep = verify_host_endpoints(&selector, &nodes, &in_sync[..1]);
        assert!(
            without_hep.problems[0].contains("node node1 has no host endpoint"),
            "{:?}",
            without_hep.problems
        );
    }

    #[test]
    fn locked_nodes_are_those_whose_every_host_endpoint_left_the_safety_net() {
        let heps = vec![
            hep("control-auto-hep", "control", &hep_labels("control")),
            hep("node1-auto-hep", "node1", &hep_labels("node1")),
            hep("node2-auto-hep", "node2", &hep_labels("node2")),
        ];
        assert_eq!(
            locked_nodes(&narrowed("kubernetes.io/hostname in (node1,node2)"), &heps),
            vec!["node1", "node2"]
        );
        let mut with_hand_made = heps.clone();
        with_hand_made.push(hep("node1-eth0", "node1", &BTreeMap::new()));
        assert_eq!(
            locked_nodes(&narrowed("kubernetes.io/hostname=node1"), &with_hand_made),
            Vec::<String>::new()
        );
    }
}
