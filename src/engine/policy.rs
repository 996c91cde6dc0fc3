//! Policies compiled for evaluation: selectors parsed once, CIDRs and port ranges parsed once,
//! and anything malformed turned into a rule that never matches, with the reason kept for
//! `explain`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::calico::policy::{Action, EntityRule, PolicySpec, PolicyType, Port, Rule};
use crate::calico::selector::{self, Selector};

use super::model::Protocol;

/// Calico's order for the `default` tier.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;
pub const DEFAULT_TIER: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    Global,
    Namespaced,
}

#[derive(Debug, Clone)]
pub enum NamespaceSelector {
    /// `global()`: non-namespaced endpoints only.
    Global,
    Labels(Selector),
}

#[derive(Debug, Clone)]
pub enum PortMatch {
    Range(u16, u16),
    Named(String),
}

impl PortMatch {
    fn parse(port: &Port) -> Result<PortMatch, String> {
        match port {
            Port::Number(n) => Ok(PortMatch::Range(*n, *n)),
            Port::Name(name) => {
                if let Some((a, b)) = name.split_once(':') {
                    let lo = a.trim().parse::<u16>();
                    let hi = b.trim().parse::<u16>();
                    match (lo, hi) {
                        (Ok(lo), Ok(hi)) if lo <= hi => Ok(PortMatch::Range(lo, hi)),
                        _ => Err(format!("invalid port range {name:?}")),
                    }
                } else if let Ok(n) = name.trim().parse::<u16>() {
                    Ok(PortMatch::Range(n, n))
                } else {
                    Ok(PortMatch::Named(name.clone()))
                }
            }
        }
    }

    pub fn matches(
        &self,
        port: u16,
        protocol: Protocol,
        named: &[(String, Protocol, u16)],
    ) -> bool {
        match self {
            PortMatch::Range(lo, hi) => (*lo..=*hi).contains(&port),
            PortMatch::Named(name) => named
                .iter()
                .any(|(n, p, number)| n == name && *p == protocol && *number == port),
        }
    }
}

/// A rule's source or destination, compiled.
#[derive(Debug, Clone, Default)]
pub struct Entity {
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    pub selector: Option<Selector>,
    pub not_selector: Option<Selector>,
    pub namespace_selector: Option<NamespaceSelector>,
    pub ports: Vec<PortMatch>,
    pub not_ports: Vec<PortMatch>,
}

impl Entity {
    /// True when the entity constrains which endpoint the peer is (not only its address).
    pub fn selects_endpoints(&self) -> bool {
        self.selector.is_some() || self.namespace_selector.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub action: Action,
    pub protocol: Option<Protocol>,
    pub not_protocol: Option<Protocol>,
    pub ip_version: Option<u8>,
    pub source: Entity,
    pub destination: Entity,
    /// Why this rule can never match (a selector or CIDR that does not parse).
    pub invalid: Option<String>,
    pub raw: Rule,
}

#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
    pub tier: String,
    pub order: Option<f64>,
    pub selector: Selector,
    pub namespace_selector: Option<Selector>,
    pub service_account_selector: Option<Selector>,
    pub ingress_type: bool,
    pub egress_type: bool,
    pub ingress: Vec<CompiledRule>,
    pub egress: Vec<CompiledRule>,
    pub apply_on_forward: bool,
    pub pre_dnat: bool,
    pub do_not_track: bool,
    /// Why the policy selects nothing (its selector does not parse).
    pub invalid: Option<String>,
}

impl CompiledPolicy {
    /// `GlobalNetworkPolicy/name` or `NetworkPolicy ns/name`, as the rest of the tool names them.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("NetworkPolicy {ns}/{}", self.name),
            None => format!("GlobalNetworkPolicy/{}", self.name),
        }
    }

    /// Calico's tie-break key within a tier: namespaced policies sort as `ns/name`.
    pub fn sort_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    pub fn rules(&self, ingress: bool) -> &[CompiledRule] {
        if ingress { &self.ingress } else { &self.egress }
    }

    pub fn has_type(&self, ingress: bool) -> bool {
        if ingress {
            self.ingress_type
        } else {
            self.egress_type
        }
    }
}

fn parse_selector(raw: &str, what: &str) -> Result<Selector, String> {
    selector::parse(raw).map_err(|e| format!("{what} {raw:?} does not parse: {e}"))
}

fn parse_nets(raw: &[String]) -> Result<Vec<IpNet>, String> {
    raw.iter()
        .map(|n| {
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("invalid CIDR {n:?}"))
        })
        .collect()
}

fn compile_entity(raw: &EntityRule) -> Result<Entity, String> {
    let ports = raw
        .ports
        .iter()
        .map(PortMatch::parse)
        .collect::<Result<_, _>>()?;
    let not_ports = raw
        .not_ports
        .iter()
        .map(PortMatch::parse)
        .collect::<Result<_, _>>()?;
    let namespace_selector = match &raw.namespace_selector {
        None => None,
        Some(s) => {
            let parsed = parse_selector(s, "namespaceSelector")?;
            Some(if parsed.is_global() {
                NamespaceSelector::Global
            } else {
                NamespaceSelector::Labels(parsed)
            })
        }
    };
    Ok(Entity {
        nets: parse_nets(&raw.nets)?,
        not_nets: parse_nets(&raw.not_nets)?,
        selector: raw
            .selector
            .as_deref()
            .map(|s| parse_selector(s, "selector"))
            .transpose()?,
        not_selector: raw
            .not_selector
            .as_deref()
            .map(|s| parse_selector(s, "notSelector"))
            .transpose()?,
        namespace_selector,
        ports,
        not_ports,
    })
}

fn protocol_of(raw: &crate::calico::policy::Protocol) -> Result<Protocol, String> {
    match raw {
        crate::calico::policy::Protocol::Number(n) => Ok(Protocol(*n)),
        crate::calico::policy::Protocol::Name(name) => {
            Protocol::parse(name).ok_or_else(|| format!("unknown protocol {name:?}"))
        }
    }
}

pub fn compile_rule(rule: &Rule) -> CompiledRule {
    let compiled = (|| -> Result<_, String> {
        Ok((
            rule.protocol.as_ref().map(protocol_of).transpose()?,
            rule.not_protocol.as_ref().map(protocol_of).transpose()?,
            compile_entity(&rule.source)?,
            compile_entity(&rule.destination)?,
        ))
    })();
    match compiled {
        Ok((protocol, not_protocol, source, destination)) => CompiledRule {
            action: rule.action,
            protocol,
            not_protocol,
            ip_version: rule.ip_version,
            source,
            destination,
            invalid: None,
            raw: rule.clone(),
        },
        Err(reason) => CompiledRule {
            action: rule.action,
            protocol: None,
            not_protocol: None,
            ip_version: rule.ip_version,
            source: Entity::default(),
            destination: Entity::default(),
            invalid: Some(reason),
            raw: rule.clone(),
        },
    }
}

/// Compile one policy. `namespace` is Some for a namespaced NetworkPolicy.
pub fn compile(
    kind: PolicyKind,
    namespace: Option<&str>,
    name: &str,
    spec: &PolicySpec,
) -> CompiledPolicy {
    let types = spec.effective_types();
    let mut invalid = None;
    let mut parse_or_note = |raw: Option<&str>, what: &str| -> Option<Selector> {
        let raw = raw?;
        match parse_selector(raw, what) {
            Ok(s) => Some(s),
            Err(e) => {
                invalid.get_or_insert(e);
                None
            }
        }
    };
    let selector =
        parse_or_note(spec.selector.as_deref(), "selector").unwrap_or_else(Selector::all);
    let namespace_selector = parse_or_note(spec.namespace_selector.as_deref(), "namespaceSelector");
    let service_account_selector = parse_or_note(
        spec.service_account_selector.as_deref(),
        "serviceAccountSelector",
    );
    CompiledPolicy {
        kind,
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
        tier: spec
            .tier
            .clone()
            .unwrap_or_else(|| DEFAULT_TIER.to_string()),
        order: spec.order_value(),
        selector,
        namespace_selector,
        service_account_selector,
        ingress_type: types.contains(&PolicyType::Ingress),
        egress_type: types.contains(&PolicyType::Egress),
        ingress: spec.ingress.iter().map(compile_rule).collect(),
        egress: spec.egress.iter().map(compile_rule).collect(),
        apply_on_forward: spec.apply_on_forward.unwrap_or(false),
        pre_dnat: spec.pre_dnat.unwrap_or(false),
        do_not_track: spec.do_not_track.unwrap_or(false),
        invalid,
    }
}

/// Compile a live object (GlobalNetworkPolicy or NetworkPolicy as JSON). Objects whose spec does
/// not deserialise come back as an error naming them.
pub fn compile_object(kind: PolicyKind, object: &Value) -> Result<CompiledPolicy, String> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let namespace = match kind {
        PolicyKind::Global => None,
        PolicyKind::Namespaced => object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str),
    };
    let spec: PolicySpec =
        serde_json::from_value(object.get("spec").cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("policy {name}: spec not understood: {e}"))?;
    // The v3 API returns tiered policies as `tier.name`; the tier in the spec is authoritative.
    Ok(compile(kind, namespace, name, &spec))
}
