//! Kubernetes NetworkPolicies (`networking.k8s.io/v1`) as Calico enforces them: a namespaced
//! policy `knp.default.<name>` in the policy's namespace, tier `default`, order 1000, converted
//! the way Calico's own converter does (libcalico-go `k8s/conversion`):
//!
//! - `spec.podSelector` → `projectcalico.org/orchestrator == "k8s" && <labels>` (pods only;
//!   empty = every pod in the namespace);
//! - `policyTypes` as the API server defaults them: Ingress, plus Egress when there are egress
//!   rules;
//! - each rule → one Allow rule per peer (`from`/`to`) and per protocol of its `ports`; no peers
//!   = any address, no ports = every port; a podSelector peer sees the policy's namespace, a
//!   namespaceSelector peer pods in the matching namespaces (never host endpoints); an ipBlock
//!   is `nets` with `except` as `notNets`; ports default to TCP, may be named, and `endPort`
//!   makes a range.
//!
//! A policy that selects a pod and has no rule matching ends in the default tier's deny.

use serde_json::{Number, Value};

use crate::calico::policy::{Action, EntityRule, PolicySpec, PolicyType, Port, Protocol, Rule};

use super::model::POD_ORCHESTRATOR_LABEL;
use super::policy::{CompiledPolicy, PolicyKind, compile};

/// The order Calico gives every Kubernetes NetworkPolicy.
pub const K8S_POLICY_ORDER: u32 = 1000;

/// Calico's name for a Kubernetes NetworkPolicy.
pub fn calico_name(name: &str) -> String {
    format!("knp.default.{name}")
}

fn quote(s: &str) -> String {
    if s.contains('"') {
        format!("'{s}'")
    } else {
        format!("\"{s}\"")
    }
}

/// A Kubernetes LabelSelector as Calico selector terms (all must hold); empty = every label set.
fn label_selector_terms(selector: &Value) -> Result<Vec<String>, String> {
    let mut terms = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            let v = v
                .as_str()
                .ok_or_else(|| format!("matchLabels {k:?}: not a string"))?;
            terms.push(format!("{k} == {}", quote(v)));
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr
            .get("key")
            .and_then(Value::as_str)
            .ok_or("matchExpressions entry without a key")?;
        let values: Vec<String> = expr
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(quote)
            .collect();
        let set = format!("{{{}}}", values.join(", "));
        match expr.get("operator").and_then(Value::as_str) {
            Some("In") => terms.push(format!("{key} in {set}")),
            Some("NotIn") => terms.push(format!("{key} not in {set}")),
            Some("Exists") => terms.push(format!("has({key})")),
            Some("DoesNotExist") => terms.push(format!("!has({key})")),
            other => {
                return Err(format!(
                    "matchExpressions operator {other:?} not understood"
                ));
            }
        }
    }
    Ok(terms)
}

/// The selector for pods matching a Kubernetes LabelSelector.
fn pod_selector(selector: Option<&Value>) -> Result<String, String> {
    let mut terms = vec![format!("{POD_ORCHESTRATOR_LABEL} == \"k8s\"")];
    if let Some(s) = selector {
        terms.extend(label_selector_terms(s)?);
    }
    Ok(terms.join(" && "))
}

fn namespace_selector(selector: &Value) -> Result<String, String> {
    let terms = label_selector_terms(selector)?;
    Ok(if terms.is_empty() {
        "all()".into()
    } else {
        terms.join(" && ")
    })
}

/// One `from`/`to` peer as a Calico entity (ports are added by the caller).
fn peer(peer: &Value) -> Result<EntityRule, String> {
    let mut entity = EntityRule::default();
    if let Some(block) = peer.get("ipBlock") {
        let cidr = block
            .get("cidr")
            .and_then(Value::as_str)
            .ok_or("ipBlock without a cidr")?;
        entity.nets = vec![cidr.to_string()];
        entity.not_nets = block
            .get("except")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        return Ok(entity);
    }
    let pods = peer.get("podSelector");
    let namespaces = peer.get("namespaceSelector");
    if pods.is_none() && namespaces.is_none() {
        return Err("a peer with neither podSelector, namespaceSelector nor ipBlock".into());
    }
    entity.selector = Some(pod_selector(pods)?);
    if let Some(ns) = namespaces {
        entity.namespace_selector = Some(namespace_selector(ns)?);
    }
    Ok(entity)
}

/// A protocol (None = any) and its ports (empty = every port).
type PortGroup = (Option<Protocol>, Vec<Port>);

/// `ports` grouped by protocol, in order of first appearance: (protocol, ports); empty ports =
/// every port of that protocol. No `ports` at all = one group, any protocol.
fn port_groups(rule: &Value) -> Result<Vec<PortGroup>, String> {
    let ports: &[Value] = rule
        .get("ports")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    if ports.is_empty() {
        return Ok(vec![(None, Vec::new())]);
    }
    let mut groups: Vec<(String, Option<Vec<Port>>)> = Vec::new();
    for p in ports {
        let protocol = p
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_ascii_uppercase();
        let port = match p.get("port") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => {
                let n = n
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| format!("invalid port {n}"))?;
                match p.get("endPort").and_then(Value::as_u64) {
                    Some(end) if end > u64::from(n) => Some(Port::Name(format!("{n}:{end}"))),
                    _ => Some(Port::Number(n)),
                }
            }
            Some(Value::String(name)) => Some(match name.parse::<u16>() {
                Ok(n) => Port::Number(n),
                Err(_) => Port::Name(name.clone()),
            }),
            Some(other) => return Err(format!("invalid port {other}")),
        };
        let slot = match groups.iter().position(|(proto, _)| *proto == protocol) {
            Some(i) => &mut groups[i].1,
            None => {
                groups.push((protocol, Some(Vec::new())));
                &mut groups.last_mut().expect("just pushed").1
            }
        };
        match (port, slot.as_mut()) {
            // A port entry without a port opens the whole protocol.
            (None, _) => *slot = None,
            (Some(port), Some(list)) => list.push(port),
            (Some(_), None) => {}
        }
    }
    Ok(groups
        .into_iter()
        .map(|(proto, ports)| (Some(Protocol::Name(proto)), ports.unwrap_or_default()))
        .collect())
}

/// One Kubernetes ingress or egress rule as Calico Allow rules.
fn rules(rule: &Value, ingress: bool) -> Result<Vec<Rule>, String> {
    let peers_key = if ingress { "from" } else { "to" };
    let peers: Vec<EntityRule> = match rule.get(peers_key).and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list.iter().map(peer).collect::<Result<_, _>>()?,
        _ => vec![EntityRule::default()],
    };
    let groups = port_groups(rule)?;
    let mut out = Vec::with_capacity(peers.len() * groups.len());
    for entity in &peers {
        for (protocol, ports) in &groups {
            let mut r = Rule::new(Action::Allow);
            r.protocol = protocol.clone();
            let mut destination = EntityRule {
                ports: ports.clone(),
                ..EntityRule::default()
            };
            if ingress {
                r.source = entity.clone();
            } else {
                destination.nets = entity.nets.clone();
                destination.not_nets = entity.not_nets.clone();
                destination.selector = entity.selector.clone();
                destination.namespace_selector = entity.namespace_selector.clone();
            }
            r.destination = destination;
            out.push(r);
        }
    }
    Ok(out)
}

/// The Calico policy spec Calico derives from a Kubernetes NetworkPolicy's spec.
pub fn convert_spec(spec: &Value) -> Result<PolicySpec, String> {
    let rule_list = |key: &str| -> &[Value] {
        spec.get(key)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    };
    let mut types: Vec<PolicyType> = Vec::new();
    match spec.get("policyTypes").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            for t in list {
                match t.as_str() {
                    Some("Ingress") => types.push(PolicyType::Ingress),
                    Some("Egress") => types.push(PolicyType::Egress),
                    other => return Err(format!("policyTypes entry {other:?} not understood")),
                }
            }
        }
        // The API server's default: Ingress, plus Egress when there are egress rules.
        _ => {
            types.push(PolicyType::Ingress);
            if !rule_list("egress").is_empty() {
                types.push(PolicyType::Egress);
            }
        }
    }
    let mut ingress = Vec::new();
    if types.contains(&PolicyType::Ingress) {
        for r in rule_list("ingress") {
            ingress.extend(rules(r, true)?);
        }
    }
    let mut egress = Vec::new();
    if types.contains(&PolicyType::Egress) {
        for r in rule_list("egress") {
            egress.extend(rules(r, false)?);
        }
    }
    Ok(PolicySpec {
        tier: Some(super::policy::DEFAULT_TIER.to_string()),
        order: Some(Number::from(K8S_POLICY_ORDER)),
        selector: Some(pod_selector(spec.get("podSelector"))?),
        types,
        ingress,
        egress,
        ..PolicySpec::default()
    })
}

/// Compile a live Kubernetes NetworkPolicy; one that cannot be understood comes back as an error
/// naming it.
pub fn compile_k8s_object(object: &Value) -> Result<CompiledPolicy, String> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let spec = convert_spec(object.get("spec").unwrap_or(&Value::Null)).map_err(|e| {
        format!("Kubernetes NetworkPolicy {namespace}/{name}: not understood ({e}); ignored")
    })?;
    Ok(compile(
        PolicyKind::Namespaced,
        Some(namespace),
        &calico_name(name),
        &spec,
    ))
}
