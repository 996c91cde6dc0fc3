//! `lockdown`: remove the safety net after preflight checks, then prove that NEW connections to
//! the API server still work and wait for the operator's confirmation; without it the safety
//! net is restored over the connection still held (commit-confirmed, like `iptables-apply`).
//!
//! `--nodes SELECTOR` is a canary: the safety net is narrowed instead of removed, so default
//! deny reaches only the selected nodes' host endpoints (see `stages::canary` for the selector
//! and why the host endpoints' labels are verified first). The same preflight, confirmation,
//! commit-confirmed revert and revision follow; a later `lockdown` deletes the narrowed safety
//! net and so completes it, and `rollback` undoes either step.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::calico::policy::CalicoKind;
use crate::cli::{LockdownArgs, LockdownCommandArgs};
use crate::cluster::Cluster;
use crate::cluster::inventory::{LiveState, Observe};
use crate::engine::scenario::with_narrowed_safety_net;
use crate::engine::{self, FlowReport, build};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::facts::ClusterFacts;
use crate::journal;
use crate::plan::{Change, change_for, delete_change};
use crate::stages::canary::{self, NodeSelector};
use crate::stages::{self, DesiredObject, StageId, StageOptions, StageRender};
use crate::ui::printer::Tone;

use super::observe::Observed;
use super::preflight::run_checks;
use super::transaction::{Question, Transaction, report_applied};
use super::{Context, parse_duration};

/// Overrides the address the fresh-connection probe dials, to rehearse a lockout in tests.
pub const PROBE_URL_ENV: &str = "KUBECTL_CALICO_HARDEN_PROBE_URL";
const PROBE_ATTEMPTS: u32 = 3;

pub struct LockdownOptions {
    pub force: bool,
    pub confirm_timeout: Duration,
    /// `--nodes`: a canary lockdown of these nodes' host endpoints; None locks down everything.
    pub nodes: Option<NodeSelector>,
    /// `--staged`: stage the safety net's deletion instead (see `super::staged::lockdown`).
    pub staged: bool,
}

impl LockdownOptions {
    pub fn from_args(args: &LockdownArgs) -> Result<Self> {
        Ok(Self {
            force: args.force,
            confirm_timeout: parse_duration(&args.confirm_timeout, "--confirm-timeout")?,
            nodes: None,
            staged: false,
        })
    }

    /// The `lockdown` command's options: `--nodes` is parsed and validated here, before any
    /// request is sent.
    pub fn from_command(args: &LockdownCommandArgs) -> Result<Self> {
        Ok(Self {
            nodes: args.nodes.as_deref().map(NodeSelector::parse).transpose()?,
            staged: args.staged,
            ..Self::from_args(&args.lockdown)?
        })
    }
}

/// What this lockdown does: to whom, in words for the operator.
struct Scope {
    /// The safety net as it will be: narrowed for a canary, None when it is removed.
    narrowed: Option<Vec<DesiredObject>>,
    /// "every host and workload" or "the host endpoints of node1".
    reach: String,
}

pub async fn run(ctx: &Context, options: &LockdownOptions) -> Result<ExitStatus> {
    if ctx.namespace.is_some() {
        return Err(Error::usage(
            "-n/--namespace does not apply to lockdown: the safety net is cluster-wide",
        ));
    }
    if options.staged {
        return super::staged::lockdown(ctx).await;
    }
    let Observed {
        cluster,
        facts,
        live,
    } = ctx.observe(&Observe::everything()).await?;
    let stage_options = StageOptions::with_defaults();
    let scope = lockdown_scope(ctx, options, &live)?;
    preflight(ctx, options, &facts, &live, &scope)?;
    let changes = match &scope.narrowed {
        Some(narrowed) => narrowing_changes(narrowed, &live),
        None => removal_changes(&facts, &stage_options, &live),
    };
    if changes.is_empty() {
        say_already_in_force(ctx, &scope, &live);
        return Ok(ExitStatus::Success);
    }
    // Real traffic the safety net alone allows: flows nobody listed for the preflight.
    super::observe_flows::soak_gate(
        ctx,
        &cluster,
        &facts,
        &live,
        scope.narrowed.as_deref(),
        options.force,
    )
    .await?;
    let transaction = Transaction::new(ctx, &cluster);
    transaction.show(&changes);
    let what = match scope.narrowed {
        Some(_) => format!(
            "This narrows the safety net: default deny on {}, every workload and every other host keeps the safety net",
            scope.reach
        ),
        None => "This removes the safety net: default deny on every host and workload".into(),
    };
    transaction.confirm(
        Question::TypeContextName(what),
        "cancelled: the context name did not match; nothing was changed",
    )?;
    let applied = transaction.commit(&changes).await?;
    report_applied(ctx, &changes, &applied);
    let Some(revision) = applied.revision else {
        return Ok(ExitStatus::Success);
    };
    commit_confirmed(
        ctx,
        &cluster,
        revision,
        options.confirm_timeout,
        &scope.reach,
    )
    .await
}

/// Whom this lockdown reaches: a canary's nodes, or every host and workload (which completes a
/// canary in force).
fn lockdown_scope(ctx: &Context, options: &LockdownOptions, live: &LiveState) -> Result<Scope> {
    if let Some(nodes) = &options.nodes {
        return canary_scope(ctx, nodes, live);
    }
    if let Some(nodes) = super::plan::canary_lockdown(live).map(|c| c.locked_nodes) {
        ctx.printer.say(&format!(
            "completing the canary lockdown of {}: default deny on every host and workload",
            list_or_none(&nodes)
        ));
    }
    Ok(Scope {
        narrowed: None,
        reach: "every host and workload".into(),
    })
}

/// Lockdown's preflight, shown check by check: a failed check refuses unless --force
/// overrides it (and some it never does).
fn preflight(
    ctx: &Context,
    options: &LockdownOptions,
    facts: &ClusterFacts,
    live: &LiveState,
    scope: &Scope,
) -> Result<()> {
    let stage_options = StageOptions::with_defaults();
    let mut checks = run_checks(facts, live, &stage_options);
    if let Some(narrowed) = &scope.narrowed {
        // The canary's own flow check: what it loses, not what a full lockdown would.
        for check in checks.iter_mut().filter(|c| c.check == "critical flows") {
            (check.passed, check.detail) = canary_flows_check(facts, live, narrowed);
        }
    }
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    for c in &checks {
        let mark = if c.passed {
            ctx.printer.paint(Tone::Good, "ok  ")
        } else {
            ctx.printer.paint(Tone::Bad, "FAIL")
        };
        ctx.printer
            .say(&format!("{mark} {}: {}", c.check, c.detail));
    }
    let binding: Vec<_> = failed.iter().filter(|c| !c.overridable).collect();
    if !binding.is_empty() {
        return Err(Error::refused(
            format!(
                "lockdown refused: {} check(s) failed that --force does not override: {}",
                binding.len(),
                binding
                    .iter()
                    .map(|c| c.check.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some("fix what the failed checks say: after such a lockdown not even restoring the safety net would work".into()),
        ));
    }
    if !failed.is_empty() {
        if !options.force {
            return Err(Error::refused(
                format!(
                    "lockdown refused: {} preflight check(s) failed: {}",
                    failed.len(),
                    failed
                        .iter()
                        .map(|c| c.check.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some("fix what the failed checks say, or pass --force to lock down anyway".into()),
            ));
        }
        ctx.printer
            .warn("--force: locking down although preflight checks failed");
    }
    Ok(())
}

/// Nothing to write: the lockdown (or the canary) is already what it would make.
fn say_already_in_force(ctx: &Context, scope: &Scope, live: &LiveState) {
    let canary_in_force = super::plan::canary_lockdown(live).is_some();
    let message = match (&scope.narrowed, canary_in_force) {
        (Some(_), true) => format!(
            "lockdown: the canary is already in force; default deny is on for {}",
            scope.reach
        ),
        (Some(_), false) => "lockdown: the safety net is already gone; default deny is in force on every host and workload, there is nothing to narrow (`kubectl calico-harden rollback` returns to an earlier step)".to_string(),
        (None, _) => {
            "lockdown: the safety net is already gone; default deny is in force".to_string()
        }
    };
    ctx.printer.say_tone(Tone::Good, &message);
}

/// Deleting the safety net (narrowed or not): a full lockdown. A staged deletion of it
/// (`lockdown --staged`) is carried out by this, so its staged copies go with it.
fn removal_changes(facts: &ClusterFacts, options: &StageOptions, live: &LiveState) -> Vec<Change> {
    let StageRender::Objects(safety_net) = stages::render(StageId::SafetyNet, facts, options)
    else {
        unreachable!("the safety net always renders")
    };
    let mut changes: Vec<Change> = safety_net
        .iter()
        .filter_map(|d| live.find(d.kind, None, &d.name))
        .map(|object| delete_change(StageId::Lockdown, CalicoKind::GlobalNetworkPolicy, object))
        .collect();
    if !changes.is_empty() {
        let staged_deletions = safety_net.iter().filter_map(|d| {
            let staged = live.find(CalicoKind::StagedGlobalNetworkPolicy, None, &d.name)?;
            crate::stages::staged::StagedPolicy::read(CalicoKind::StagedGlobalNetworkPolicy, staged)
                .filter(|s| s.action == crate::stages::staged::StagedAction::Delete)
                .map(|s| delete_change(StageId::Lockdown, s.kind, &s.live))
        });
        changes.extend(staged_deletions.collect::<Vec<_>>());
    }
    changes
}

/// Narrowing the safety-net policies that exist; a missing one stays missing.
fn narrowing_changes(narrowed: &[DesiredObject], live: &LiveState) -> Vec<Change> {
    narrowed
        .iter()
        .filter_map(|d| {
            let mut change = change_for(d, Some(live.find(d.kind, None, &d.name)?))?;
            change.stage = StageId::Lockdown;
            Some(change)
        })
        .collect()
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "no node".into()
    } else {
        items.join(", ")
    }
}

/// A canary's scope, once the host endpoints are shown to carry the labels it relies on.
fn canary_scope(ctx: &Context, nodes: &NodeSelector, live: &LiveState) -> Result<Scope> {
    let coverage =
        canary::verify_host_endpoints(nodes, &live.inventory.nodes, &live.inventory.host_endpoints);
    if !coverage.problems.is_empty() {
        for problem in &coverage.problems {
            ctx.printer.say(&format!(
                "{} {problem}",
                ctx.printer.paint(Tone::Bad, "FAIL")
            ));
        }
        return Err(Error::refused(
            format!(
                "lockdown --nodes {nodes} refused: the host endpoints do not match the nodes it selects ({} problem(s)); nothing was changed",
                coverage.problems.len()
            ),
            Some("fix the labels named above (or wait for calico-kube-controllers to copy them), then run it again".into()),
        ));
    }
    for (node, heps) in &coverage.covered {
        ctx.printer.say(&format!(
            "{} canary node {node}: default deny on HostEndpoint {}",
            ctx.printer.paint(Tone::Good, "ok  "),
            heps.join(", ")
        ));
    }
    let covered: Vec<String> = coverage.covered.into_iter().map(|(n, _)| n).collect();
    Ok(Scope {
        narrowed: Some(stages::narrowed_safety_net(
            &canary::narrowed_safety_net_selector(nodes),
        )),
        reach: format!("the host endpoints of {}", covered.join(", ")),
    })
}

/// Critical flows that the canary would deny (the live state with the narrowed safety net):
/// whether none is, and what to say.
fn canary_flows_check(
    facts: &ClusterFacts,
    live: &LiveState,
    narrowed: &[DesiredObject],
) -> (bool, String) {
    let after = with_narrowed_safety_net(live, narrowed);
    let now = build::engine(live, facts);
    let later = build::engine(&after, facts);
    let report = engine::compare(&now, Some(&later), facts, Some(StageId::Lockdown));
    let denied: Vec<_> = report.denied_in_the_end().collect();
    if denied.is_empty() {
        (
            true,
            format!(
                "all {} critical flows stay allowed after the canary lockdown",
                report.flows.len()
            ),
        )
    } else {
        (
            false,
            format!(
                "{} flow(s) would be denied after the canary lockdown: {}",
                denied.len(),
                FlowReport::summarize(denied.iter().copied(), 3).join("; ")
            ),
        )
    }
}

/// Probe with fresh TCP and TLS connections (a new client, not the pooled one), then ask.
async fn commit_confirmed(
    ctx: &Context,
    cluster: &Cluster,
    revision: u64,
    timeout: Duration,
    reach: &str,
) -> Result<ExitStatus> {
    ctx.printer
        .say("checking that NEW connections to the API server still work...");
    let probe = fresh_connection_probe(cluster).await;
    let reason = match probe {
        Err(err) => format!("new connections to the API server fail after lockdown ({err})"),
        Ok(()) => {
            ctx.printer.say_tone(
                Tone::Good,
                &format!("{PROBE_ATTEMPTS} fresh connections to the API server succeeded"),
            );
            let answer = ctx.prompter.confirm_within(
                &format!("Can you still reach what you need (kubectl from another terminal)? Confirm within {}s, or the safety net is restored", timeout.as_secs()),
                timeout,
            );
            // Ctrl-C at the countdown is not a confirmation: undo, then report the cancellation.
            let confirmed = match answer {
                Err(Error::Cancelled(_)) => {
                    ctx.printer.warn(
                        "cancelled at the confirmation: restoring the safety net over the existing connection",
                    );
                    restore(ctx, cluster, revision, "cancelled at the confirmation").await?;
                    return Err(Error::Cancelled(
                        "lockdown cancelled: the safety net is back".into(),
                    ));
                }
                other => other?,
            };
            if confirmed {
                ctx.printer.say_tone(
                    Tone::Good,
                    &format!("lockdown confirmed: default deny is in force on {reach}"),
                );
                return Ok(ExitStatus::Success);
            }
            "no confirmation in time".to_string()
        }
    };
    ctx.printer.warn(&format!(
        "{reason}: restoring the safety net over the existing connection"
    ));
    restore(ctx, cluster, revision, &reason).await?;
    Err(Error::refused(
        format!("lockdown reverted: {reason}; the safety net is back"),
        Some("find what the lost connection needs (kubectl calico-harden check --after lockdown), then try again".into()),
    ))
}

async fn fresh_connection_probe(cluster: &Cluster) -> std::result::Result<(), String> {
    let mut config = cluster.config.clone();
    if let Ok(url) = std::env::var(PROBE_URL_ENV) {
        config.cluster_url = url
            .parse()
            .map_err(|e| format!("invalid {PROBE_URL_ENV}: {e}"))?;
    }
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(5));
    for attempt in 1..=PROBE_ATTEMPTS {
        // A new client has an empty pool: every probe opens its own TCP connection and TLS session.
        let client = kube::Client::try_from(config.clone()).map_err(|e| e.to_string())?;
        let request = http::Request::get("/version")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        if let Err(err) = client.request_text(request).await {
            return Err(format!("probe {attempt}: {err}"));
        }
    }
    Ok(())
}

/// Undo the lockdown revision through the usual undo path, recorded as its own revision.
async fn restore(ctx: &Context, cluster: &Cluster, revision: u64, reason: &str) -> Result<()> {
    let store = ctx.store(cluster);
    let history = store.list().await?;
    let Some(lockdown) = history.iter().find(|r| r.revision == revision) else {
        return Err(Error::refused(
            format!(
                "revision {revision} vanished from the history; run `kubectl calico-harden rollback`"
            ),
            None,
        ));
    };
    let live = Observed::read(cluster.clone(), &Observe::facts())
        .await?
        .live;
    let mut current = BTreeMap::new();
    for object in &lockdown.objects {
        current.insert(
            object.key(),
            live.find(object.kind, object.namespace.as_deref(), &object.name)
                .cloned(),
        );
    }
    let (changes, _) = journal::undo_plan(&[lockdown], &current);
    let applied = Transaction::new(ctx, cluster)
        .undoing(vec![lockdown.clone()])
        .commit(&changes)
        .await?;
    ctx.printer.say(&format!(
        "restored {} object(s) ({reason}), recorded as revision {}",
        changes.len(),
        applied.revision.unwrap_or_default()
    ));
    Ok(())
}
