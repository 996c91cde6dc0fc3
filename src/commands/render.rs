//! `render`: the stage manifests as a YAML stream or JSON List, from the live cluster's facts or,
//! with --offline, from the tutorial lab's.

use serde_json::{Value, json};

use crate::cli::{OutputFormat, RenderArgs};
use crate::cluster::inventory::Observe;
use crate::error::Result;
use crate::exit::ExitStatus;
use crate::facts::{ClusterFacts, NodeRef};
use crate::stages::{self, StageId, StageOptions, StageRender};

use super::Context;
use super::observe::Observed;

fn options(args: &RenderArgs, ctx: &Context) -> Result<StageOptions> {
    super::stage_options(&args.stage_flags, ctx.namespace.clone())
}

fn offline_facts(args: &RenderArgs) -> Result<ClusterFacts> {
    let mut facts = ClusterFacts::tutorial_lab();
    if !args.control_plane_node.is_empty() {
        let mut nodes = Vec::new();
        for name in &args.control_plane_node {
            stages::validate_dns_subdomain(name, "control-plane node name")?;
            nodes.push(NodeRef {
                name: name.clone(),
                hostname: name.clone(),
            });
        }
        nodes.sort();
        nodes.dedup();
        facts.typha_nodes = nodes.clone();
        facts.control_plane_nodes = nodes;
    }
    if let Some(port) = &args.apiserver_port {
        facts.apiserver_port = stages::parse_port(port, "--apiserver-port")?;
    }
    if let Some(ns) = &args.calico_apiserver_namespace {
        stages::validate_dns_label(ns, "--calico-apiserver-namespace")?;
        facts.calico_apiserver_namespace = Some(ns.clone());
    }
    Ok(facts)
}

/// The selected stages (default: all policy stages; the registry only when an address is given).
fn selected(args: &RenderArgs, options: &StageOptions) -> Vec<StageId> {
    if args.stages.is_empty() {
        StageId::policy_stages()
            .filter(|s| *s != StageId::Registry || options.registry.is_some())
            .collect()
    } else {
        let mut list = args.stages.clone();
        list.sort();
        list.dedup();
        list
    }
}

fn emit(
    ctx: &Context,
    facts: &ClusterFacts,
    options: &StageOptions,
    stages_to_render: &[StageId],
) -> Result<ExitStatus> {
    let mut manifests: Vec<Value> = Vec::new();
    for stage in stages_to_render {
        match stages::render(*stage, facts, options) {
            StageRender::Objects(objects) => {
                manifests.extend(objects.into_iter().map(|o| o.manifest))
            }
            StageRender::NotApplicable(reason) => {
                ctx.printer
                    .say(&format!("# {stage}: not applicable: {reason}"));
            }
        }
    }
    match ctx.printer.output {
        Some(OutputFormat::Json) => ctx
            .printer
            .structured(&json!({"apiVersion": "v1", "kind": "List", "items": manifests})),
        _ => ctx.printer.data(&crate::yaml::to_yaml_stream(&manifests)),
    }
    Ok(ExitStatus::Success)
}

pub fn run_offline(args: &RenderArgs, ctx: &Context) -> Result<ExitStatus> {
    let options = options(args, ctx)?;
    let facts = offline_facts(args)?;
    emit(ctx, &facts, &options, &selected(args, &options))
}

pub async fn run_live(args: &RenderArgs, ctx: &Context) -> Result<ExitStatus> {
    let options = options(args, ctx)?;
    let Observed { facts, .. } = ctx.observe(&Observe::facts_without_policies()).await?;
    emit(ctx, &facts, &options, &selected(args, &options))
}
