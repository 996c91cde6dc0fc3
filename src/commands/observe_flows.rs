//! `observe`: the soak gate over Calico's real flow logs. It lists the flows the safety net
//! alone lets through (what `lockdown` would cut) and the flows a staged policy would deny,
//! aggregated by source, destination, protocol and port; `lockdown` runs the same reading as a
//! gate (see [`soak_gate`]). Nothing is written.
//!
//! (The file is not `observe.rs`: that name holds the one cluster observation every command
//! starts from.)

use serde::Serialize;

use crate::calico::policy::CalicoKind;
use crate::cluster::Cluster;
use crate::cluster::flow_source::{self, FlowSource};
use crate::cluster::inventory::Observe;
use crate::engine::model::Protocol;
use crate::engine::model::Side;
use crate::engine::scenario::with_narrowed_safety_net;
use crate::engine::{Engine, Flow, build, state_after};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::facts::ClusterFacts;
use crate::flowlogs::{self, FlaggedFlow, Observation};
use crate::live::LiveState;
use crate::stages::{DesiredObject, StageId, StageOptions};
use crate::ui::printer::Tone;

use super::observe::Observed;
use super::{Context, parse_duration};

/// How far back `lockdown` looks at most: Goldmane keeps about an hour of flows in memory.
const GATE_WINDOW_SECONDS: i64 = 3600;
/// Goldmane's aggregation window (its default, as the Tigera operator deploys it).
const GOLDMANE_BUCKET_SECONDS: i64 = 15;
const LISTED: usize = 10;

pub struct ObserveOptions {
    pub since_seconds: u64,
}

impl ObserveOptions {
    pub fn from_args(since: &str) -> Result<Self> {
        let since = parse_duration(since, "--since")?;
        if since.as_secs() == 0 {
            return Err(Error::usage("invalid --since: at least one second"));
        }
        Ok(Self {
            since_seconds: since.as_secs(),
        })
    }
}

/// The safety net's policy names, as the safety-net stage renders them.
fn safety_net_names() -> Vec<String> {
    crate::stages::narrowed_safety_net("all()")
        .into_iter()
        .filter(|d| d.kind == CalicoKind::GlobalNetworkPolicy)
        .map(|d| d.name)
        .collect()
}

/// The flow logs since `start_time_gte` (see [`flow_source::read_flows`]), read against the
/// safety net; Err(reason) when there is no flow source.
async fn read(
    cluster: &Cluster,
    start_time_gte: i64,
) -> Result<std::result::Result<Observation, String>> {
    Ok(
        match flow_source::read_flows(&cluster.api, start_time_gte).await? {
            FlowSource::Flows(records) => {
                let names = safety_net_names();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                Ok(flowlogs::analyse(&records, &names))
            }
            FlowSource::Unavailable(reason) => Err(reason),
        },
    )
}

/// The safety-net flows sorted by what the lockdown does to them, by Calico's rules: an
/// endpoint that no other policy selects falls back to its profile (Kubernetes namespaces'
/// profiles allow), so not every flow the safety net decided today is cut.
#[derive(Debug, Serialize)]
struct Verdicts {
    records: usize,
    /// Allowed only by the safety net and denied once it is gone (or narrowed): what lockdown cuts.
    cut_by_lockdown: Vec<FlaggedFlow>,
    /// Decided by the safety net today, allowed after it (no other policy selects an endpoint).
    kept_by_profiles: Vec<FlaggedFlow>,
    /// What a staged policy would deny.
    staged_denies: Vec<FlaggedFlow>,
}

/// Whisker's names for the networks Felix aggregates flows to and from outside every endpoint
/// (whisker-backend `protoToName`), with an address of each that stands for it.
const AGGREGATED_NETWORKS: [(&str, &str); 2] = [
    ("PUBLIC NETWORK", "8.8.8.8"),
    ("PRIVATE NETWORK", "10.255.255.254"),
];

/// Places a flow's side: a node, a pod, an address; an aggregated network by an address of it,
/// which gives its verdict unless a policy's `nets` split the aggregate.
fn resolve(engine: &Engine, side: &str) -> Option<Side> {
    let stand_in = AGGREGATED_NETWORKS
        .iter()
        .find(|(name, _)| *name == side)
        .map(|(_, address)| *address);
    engine.network.resolve(stand_in.unwrap_or(side))
}

/// Whether the engine, on the state after the lockdown, denies the flow; a side it cannot
/// place (a pod gone since) counts as denied.
fn denied_after(engine: &Engine, flow: &FlaggedFlow) -> bool {
    let (Some(src), Some(dst), Some(protocol)) = (
        resolve(engine, &flow.source),
        resolve(engine, &flow.destination),
        Protocol::parse(&flow.protocol),
    ) else {
        return true;
    };
    let port = u16::try_from(flow.port).unwrap_or(0);
    !engine
        .evaluate(&Flow {
            src,
            dst,
            protocol,
            port,
        })
        .allowed
}

/// The state a lockdown leaves: the safety net narrowed (a canary) or gone.
fn after_lockdown(
    live: &LiveState,
    facts: &ClusterFacts,
    narrowed: Option<&[DesiredObject]>,
) -> LiveState {
    let Some(narrowed) = narrowed else {
        return state_after(
            live,
            facts,
            &StageOptions::with_defaults(),
            Some(StageId::Lockdown),
        );
    };
    with_narrowed_safety_net(live, narrowed)
}

fn verdicts(
    observation: Observation,
    live: &LiveState,
    facts: &ClusterFacts,
    narrowed: Option<&[DesiredObject]>,
) -> Verdicts {
    let engine = build::engine(&after_lockdown(live, facts, narrowed), facts);
    let (cut_by_lockdown, kept_by_profiles) = observation
        .safety_net_only
        .into_iter()
        .partition(|flow| denied_after(&engine, flow));
    Verdicts {
        records: observation.records,
        cut_by_lockdown,
        kept_by_profiles,
        staged_denies: observation.staged_denies,
    }
}

pub async fn run(ctx: &Context, options: &ObserveOptions) -> Result<ExitStatus> {
    let cluster = ctx.connect().await?;
    let since = i64::try_from(options.since_seconds).unwrap_or(i64::MAX);
    let observation = match read(&cluster, -since).await? {
        Ok(observation) => observation,
        Err(reason) => {
            return Err(Error::refused(
                format!("observe: no flow source: {reason}"),
                Some("flow logs need Calico 3.30+ with Goldmane and Whisker (the Tigera operator's default); without them, `check` is the evidence".into()),
            ));
        }
    };
    let Observed { facts, live, .. } = Observed::read(cluster, &Observe::everything()).await?;
    let verdicts = verdicts(observation, &live, &facts, None);
    if ctx.printer.output.is_some() {
        ctx.printer.structured(&verdicts);
    } else {
        ctx.printer.data(&render_table(&verdicts));
    }
    ctx.printer.say_tone(
        Tone::Dim,
        &format!(
            "{} flow record(s) in the last {}s; Felix logs no host-to-host flow and only the workload's side of a flow with a host (Calico v3.31): host paths are `check`'s to judge",
            verdicts.records, options.since_seconds
        ),
    );
    Ok(ExitStatus::Success)
}

fn render_table(verdicts: &Verdicts) -> String {
    let mut out = String::new();
    for (title, flows) in [
        (
            "ALLOWED ONLY BY THE SAFETY NET, CUT BY LOCKDOWN",
            &verdicts.cut_by_lockdown,
        ),
        (
            "DECIDED BY THE SAFETY NET, KEPT AFTER LOCKDOWN (no other policy selects an endpoint: its profile allows)",
            &verdicts.kept_by_profiles,
        ),
        ("A STAGED POLICY WOULD DENY", &verdicts.staged_denies),
    ] {
        out.push_str(&format!("{title}: {}\n", flows.len()));
        if flows.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "  {:<44} {:<44} {:<10} {:>6}  {}\n",
            "SOURCE", "DESTINATION", "PORT", "COUNT", "POLICY"
        ));
        for f in flows {
            out.push_str(&format!(
                "  {:<44} {:<44} {:<10} {:>6}  {}\n",
                f.source,
                f.destination,
                format!("{}/{}", f.protocol, f.port),
                f.count,
                f.policy
            ));
        }
    }
    out.trim_end().to_string()
}

/// Where the gate's window starts (Unix seconds) and how to say it: the last hour, or since
/// the newest revision in the history when that is later. Flows before the cluster's last
/// change were judged under other policies (before `up`, by no safety net at all), and the
/// soak the operator waited for is the one since the last step.
async fn gate_window(ctx: &Context, cluster: &Cluster) -> Result<(i64, String)> {
    let hour_ago = chrono::Utc::now().timestamp() - GATE_WINDOW_SECONDS;
    let newest = ctx
        .store(cluster)
        .list()
        .await?
        .into_iter()
        .max_by_key(|r| r.revision)
        .and_then(|r| {
            let at = chrono::DateTime::parse_from_rfc3339(&r.time)
                .ok()?
                .timestamp();
            Some((at, r.revision, r.time))
        });
    Ok(match newest {
        // Goldmane files a flow under the start of its 15 s aggregation bucket and filters by
        // that start: begin one bucket early so that flows right after the revision count.
        Some((at, revision, time)) if at > hour_ago => (
            at - GOLDMANE_BUCKET_SECONDS,
            format!("since revision {revision} ({time})"),
        ),
        _ => (hour_ago, "of the last hour".to_string()),
    })
}

/// `lockdown`'s soak gate, before its confirmation: with flow logs, refuse while real flows
/// that only the safety net allows would be cut (unless `--force`); without, say so and rely
/// on the preflight. `narrowed` is a canary's safety net: then only what the canary cuts counts.
pub async fn soak_gate(
    ctx: &Context,
    cluster: &Cluster,
    facts: &ClusterFacts,
    live: &LiveState,
    narrowed: Option<&[DesiredObject]>,
    force: bool,
) -> Result<()> {
    let (start, window) = gate_window(ctx, cluster).await?;
    let observation = match read(cluster, start).await {
        Ok(Ok(observation)) => observation,
        Ok(Err(reason)) => {
            ctx.printer.say(&format!(
                "{} soak gate: no flow source ({reason}); relying on the preflight",
                ctx.printer.paint(Tone::Dim, "--  "),
            ));
            return Ok(());
        }
        // An identity made for the write path may lack the read of Whisker: say so loudly, but
        // the preflight is the gate it already had.
        Err(err) if err.status() == Some(403) => {
            ctx.printer.warn(&format!(
                "soak gate: the flow logs are not readable ({err}); relying on the preflight (grant get on services and services/proxy in {})",
                flow_source::WHISKER_NAMESPACE
            ));
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    let cut = verdicts(observation, live, facts, narrowed).cut_by_lockdown;
    if cut.is_empty() {
        ctx.printer.say(&format!(
            "{} soak gate: no flow in the flow logs {window} would be cut",
            ctx.printer.paint(Tone::Good, "ok  "),
        ));
        return Ok(());
    }
    for flow in cut.iter().take(LISTED) {
        ctx.printer.say(&format!(
            "{} soak gate: allowed only by the safety net, cut by this lockdown: {}",
            ctx.printer.paint(Tone::Bad, "FAIL"),
            flow.describe()
        ));
    }
    if cut.len() > LISTED {
        ctx.printer.say(&format!(
            "     ... and {} more (kubectl calico-harden observe)",
            cut.len() - LISTED
        ));
    }
    if force {
        ctx.printer.warn(&format!(
            "--force: locking down although {} flow(s) seen in the flow logs would be cut",
            cut.len()
        ));
        return Ok(());
    }
    Err(Error::refused(
        format!(
            "lockdown refused: {} flow(s) in the flow logs {window} are allowed only by the safety net and would be cut; nothing was changed",
            cut.len()
        ),
        Some("allow what is expected with a policy of its own (or stop the traffic), see `kubectl calico-harden observe`, or pass --force to cut them".into()),
    ))
}
