//! `explain FROM TO PROTO/PORT`: how Calico policy decides one NEW connection. Every policy is
//! listed in evaluation order at each hop (egress at the source endpoint, forwarding hops, ingress
//! at the destination endpoint), with each rule's match or the reason it did not match, and the
//! policies that do not apply with the reason they do not.

use serde::Serialize;

use crate::cli::ExplainArgs;
use crate::cluster::inventory::Observe;
use crate::engine::build;
use crate::engine::eval::HopResult;
use crate::engine::model::EndpointKind;
use crate::engine::policy::{CompiledPolicy, PolicyKind};
use crate::engine::report::CONNTRACK_NOTE;
use crate::engine::{Decider, Engine, Flow, HopKind, PolicyTrace, Protocol, Side, state_after};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::stages::StageOptions;
use crate::ui::Printer;
use crate::ui::printer::Tone;

use super::Context;
use super::observe::Observed;

/// `tcp/6443`, `udp/53`, `ipip`, `sctp/9`, `4`.
pub fn parse_proto_port(raw: &str) -> Result<(Protocol, u16)> {
    let bad = || {
        Error::usage(format!(
            "invalid PROTO/PORT {raw:?}: expected e.g. tcp/6443, udp/53 or ipip"
        ))
    };
    let (proto, port) = match raw.trim().split_once('/') {
        Some((p, port)) => (p, Some(port)),
        None => (raw.trim(), None),
    };
    let protocol = Protocol::parse(proto).ok_or_else(bad)?;
    match (protocol.has_ports(), port) {
        (true, Some(port)) => match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok((protocol, p)),
            _ => Err(bad()),
        },
        (true, None) => Err(Error::usage(format!(
            "invalid PROTO/PORT {raw:?}: {protocol} needs a port, e.g. {protocol}/443"
        ))),
        (false, None) => Ok((protocol, 0)),
        (false, Some(_)) => Err(Error::usage(format!(
            "invalid PROTO/PORT {raw:?}: {protocol} has no ports"
        ))),
    }
}

#[derive(Debug, Serialize)]
struct NotApplying {
    policy: String,
    reason: String,
}

#[derive(Debug, Serialize)]
struct HopReport {
    hop: String,
    endpoint: Option<String>,
    allowed: bool,
    decided_by: String,
    policies: Vec<PolicyTrace>,
    /// Policies that apply here but come after the rule that decided.
    not_reached: Vec<String>,
    not_applying: Vec<NotApplying>,
}

#[derive(Debug, Serialize)]
struct Explanation {
    from: String,
    to: String,
    protocol: String,
    after: Option<String>,
    allowed: bool,
    hops: Vec<HopReport>,
    notes: Vec<String>,
}

pub async fn run(ctx: &Context, args: &ExplainArgs) -> Result<ExitStatus> {
    let (protocol, port) = parse_proto_port(&args.proto_port)?;
    let Observed { facts, live, .. } = ctx.observe(&Observe::everything()).await?;
    let options = StageOptions {
        namespace_override: ctx.namespace.clone(),
        ..StageOptions::with_defaults()
    };
    let state = state_after(&live, &facts, &options, args.after);
    let engine = build::engine(&state, &facts);
    let resolve = |raw: &str| {
        engine.network.resolve(raw).ok_or_else(|| {
            Error::usage(format!(
                "{raw:?} is not a node, a pod (NAMESPACE/NAME) or an IP address in this cluster"
            ))
        })
    };
    let flow = Flow {
        src: resolve(&args.from)?,
        dst: resolve(&args.to)?,
        protocol,
        port,
    };
    let explanation = explain(&engine, &flow, args.after.map(|s| s.to_string()));
    if ctx.printer.output.is_some() {
        ctx.printer.structured(&explanation);
    } else {
        ctx.printer.data(&render(ctx, &explanation));
    }
    Ok(ExitStatus::Success)
}

fn side_description(engine: &Engine, side: Side) -> String {
    let net = &engine.network;
    match side {
        Side::Host(node) => match net.nodes[node].host_endpoint {
            Some(hep) => format!(
                "{} (host, {})",
                net.nodes[node].name,
                net.endpoints[hep].display()
            ),
            None => format!("{} (host, no host endpoint)", net.nodes[node].name),
        },
        Side::Pod(_) => format!("{} (pod)", net.side_name(side)),
        Side::External(ip) => format!("{ip} (outside the cluster)"),
    }
}

fn explain(engine: &Engine, flow: &Flow, after: Option<String>) -> Explanation {
    let verdict = engine.explain(flow);
    let hops = verdict
        .hops
        .iter()
        .map(|hop| hop_report(engine, hop))
        .collect();
    let mut notes = vec![CONNTRACK_NOTE.to_string()];
    notes.extend(engine.notes.iter().cloned());
    Explanation {
        from: side_description(engine, flow.src),
        to: side_description(engine, flow.dst),
        protocol: flow.to_string(),
        after,
        allowed: verdict.allowed,
        hops,
        notes,
    }
}

fn hop_report(engine: &Engine, hop: &HopResult) -> HopReport {
    let ingress = hop.kind.is_ingress();
    let forward = matches!(hop.kind, HopKind::ForwardEgress | HopKind::ForwardIngress);
    let evaluated: Vec<&str> = hop.trace.iter().map(|t| t.policy.as_str()).collect();
    let not_reached = match hop.endpoint {
        Some(ep) if !hop.trace.is_empty() => engine
            .applicable_policies(ep, ingress, forward)
            .into_iter()
            .map(|i| engine.policies[i].display_name())
            .filter(|name| !evaluated.contains(&name.as_str()))
            .collect(),
        _ => Vec::new(),
    };
    let not_applying = match hop.endpoint {
        Some(ep) if !matches!(hop.decider, Decider::Failsafe { .. }) => {
            let applying = engine.applicable_policies(ep, ingress, forward);
            engine
                .policies
                .iter()
                .enumerate()
                .filter(|(i, _)| !applying.contains(i))
                .map(|(_, p)| NotApplying {
                    policy: p.display_name(),
                    reason: why_not(engine, p, ep, ingress, forward),
                })
                .collect()
        }
        _ => Vec::new(),
    };
    HopReport {
        hop: hop.kind.describe().to_string(),
        endpoint: hop
            .endpoint
            .map(|ep| engine.network.endpoints[ep].display()),
        allowed: hop.allowed,
        decided_by: engine.describe_decider(&hop.decider, hop.kind),
        policies: hop.trace.clone(),
        not_reached,
        not_applying,
    }
}

/// Why a policy does not take part at this endpoint and direction.
fn why_not(engine: &Engine, p: &CompiledPolicy, ep: usize, ingress: bool, forward: bool) -> String {
    let endpoint = &engine.network.endpoints[ep];
    let direction = if ingress { "Ingress" } else { "Egress" };
    if p.pre_dnat || p.do_not_track {
        return "preDNAT/doNotTrack policy: not modelled".into();
    }
    if let Some(reason) = &p.invalid {
        return reason.clone();
    }
    if !engine.selects(p, endpoint) {
        return match (&endpoint.kind, p.kind) {
            (EndpointKind::Host { .. }, PolicyKind::Namespaced) => {
                "a NetworkPolicy never selects host endpoints".into()
            }
            (EndpointKind::Host { .. }, PolicyKind::Global) if p.namespace_selector.is_some() => {
                "its namespaceSelector selects pods only, never host endpoints".into()
            }
            (EndpointKind::Workload { namespace, .. }, PolicyKind::Namespaced)
                if p.namespace.as_deref() != Some(namespace) =>
            {
                format!(
                    "it is in namespace {}",
                    p.namespace.as_deref().unwrap_or_default()
                )
            }
            _ => {
                let mut parts = vec![format!("selector {}", p.selector)];
                if let Some(ns) = &p.namespace_selector {
                    parts.push(format!("namespaceSelector {ns}"));
                }
                format!(
                    "{} does not match {}",
                    parts.join(" / "),
                    endpoint.display()
                )
            }
        };
    }
    if !p.has_type(ingress) {
        return format!(
            "selects {} but its types have no {direction}",
            endpoint.display()
        );
    }
    if forward && !p.apply_on_forward {
        return "applyOnForward is false: it does not police forwarded traffic".into();
    }
    "applies".into()
}

fn render(ctx: &Context, e: &Explanation) -> String {
    let p = &ctx.printer;
    let mut out = String::new();
    out.push_str(&format!(
        "flow:      {} -> {} {}\n",
        e.from, e.to, e.protocol
    ));
    out.push_str(&format!(
        "state:     {}\n",
        e.after
            .as_deref()
            .map_or("live".to_string(), |s| format!("after {s}"))
    ));
    for (i, hop) in e.hops.iter().enumerate() {
        out.push('\n');
        out.push_str(&render_hop(p, i + 1, hop));
    }
    let (tone, word) = if e.allowed {
        (Tone::Good, "ALLOWED")
    } else {
        (Tone::Bad, "DENIED")
    };
    out.push_str(&format!("\nverdict:   {}\n", p.paint(tone, word)));
    for note in &e.notes {
        out.push_str(&p.paint(Tone::Dim, &format!("note: {note}\n")));
    }
    out
}

/// One hop: the policies considered and their rules, the ones not reached or not applying,
/// and what decided.
fn render_hop(p: &Printer, number: usize, hop: &HopReport) -> String {
    let endpoint = hop
        .endpoint
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    let mut out = p.paint(Tone::Bold, &format!("{number}. {}{endpoint}\n", hop.hop));
    for policy in &hop.policies {
        let order = policy.order.map_or("none".to_string(), |o| o.to_string());
        out.push_str(&format!(
            "   {} (tier {}, order {order}): {}\n",
            policy.policy, policy.tier, policy.outcome
        ));
        for rule in &policy.rules {
            let mark = if rule.matched {
                p.paint(Tone::Good, "match")
            } else {
                p.paint(Tone::Dim, "no   ")
            };
            out.push_str(&format!(
                "      rule {} {:<5} {mark}  {}\n",
                rule.index, rule.action, rule.reason
            ));
        }
    }
    for name in &hop.not_reached {
        out.push_str(&format!(
            "   {name}: applies, not reached (an earlier rule decided)\n"
        ));
    }
    if !hop.not_applying.is_empty() {
        out.push_str(&format!(
            "   not applying here ({}):\n",
            hop.not_applying.len()
        ));
        for n in &hop.not_applying {
            out.push_str(&format!("      {}: {}\n", n.policy, n.reason));
        }
    }
    let tone = if hop.allowed { Tone::Good } else { Tone::Bad };
    let word = if hop.allowed { "allowed" } else { "DENIED" };
    out.push_str(&format!(
        "   => {} by {}\n",
        p.paint(tone, word),
        hop.decided_by
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_port_forms() {
        assert_eq!(parse_proto_port("tcp/6443").unwrap(), (Protocol::TCP, 6443));
        assert_eq!(parse_proto_port("UDP/53").unwrap(), (Protocol::UDP, 53));
        assert_eq!(parse_proto_port("ipip").unwrap(), (Protocol::IPIP, 0));
        for bad in ["tcp", "tcp/0", "tcp/70000", "bogus/1", "ipip/4", ""] {
            assert!(parse_proto_port(bad).is_err(), "{bad}");
        }
    }
}
