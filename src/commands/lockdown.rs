//! `lockdown`: remove the safety net after preflight checks, then prove that NEW connections to
//! the API server still work and wait for the operator's confirmation; without it the safety
//! net is restored over the connection still held (commit-confirmed, like `iptables-apply`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::calico::policy::CalicoKind;
use crate::cli::{DryRun, LockdownArgs};
use crate::cluster::Cluster;
use crate::cluster::inventory;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::facts;
use crate::journal::{self, RevisionState};
use crate::plan::{Change, delete_change};
use crate::stages::{self, StageId, StageOptions, StageRender};
use crate::ui::printer::Tone;

use super::preflight::run_checks;
use super::{Context, apply_changes, parse_duration, report_applied, show_changes};

/// Overrides the address the fresh-connection probe dials, to rehearse a lockout in tests.
pub const PROBE_URL_ENV: &str = "KUBECTL_CALICO_HARDEN_PROBE_URL";
const PROBE_ATTEMPTS: u32 = 3;

pub struct LockdownOptions {
    pub force: bool,
    pub confirm_timeout: Duration,
}

impl LockdownOptions {
    pub fn from_args(args: &LockdownArgs) -> Result<Self> {
        Ok(Self {
            force: args.force,
            confirm_timeout: parse_duration(&args.confirm_timeout, "--confirm-timeout")?,
        })
    }
}

pub async fn run(ctx: &Context, options: &LockdownOptions) -> Result<ExitStatus> {
    if ctx.namespace.is_some() {
        return Err(Error::usage(
            "-n/--namespace does not apply to lockdown: the safety net is cluster-wide",
        ));
    }
    let cluster = ctx.connect().await?;
    let live = inventory::fetch(&cluster).await?;
    let facts = facts::detect(&live.inventory);
    let stage_options = StageOptions::with_defaults();
    let checks = run_checks(&facts, &live, &stage_options);
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
    let StageRender::Objects(safety_net) =
        stages::render(StageId::SafetyNet, &facts, &stage_options)
    else {
        unreachable!("the safety net always renders")
    };
    let changes: Vec<Change> = safety_net
        .iter()
        .filter_map(|d| live.find(d.kind, None, &d.name))
        .map(|object| delete_change(StageId::Lockdown, CalicoKind::GlobalNetworkPolicy, object))
        .collect();
    if changes.is_empty() {
        ctx.printer.say_tone(
            Tone::Good,
            "lockdown: the safety net is already gone; default deny is in force",
        );
        return Ok(ExitStatus::Success);
    }
    show_changes(ctx, &changes);
    if ctx.dry_run == DryRun::None
        && !ctx.prompter.type_to_confirm(
            &format!("This removes the safety net: default deny on every host and workload. Type the context name ({}) to go on", cluster.context_name),
            &cluster.context_name,
        )?
    {
        return Err(Error::Cancelled("cancelled: the context name did not match; nothing was changed".into()));
    }
    let applied = apply_changes(ctx, &cluster, &changes, Vec::new()).await?;
    report_applied(ctx, &changes, &applied);
    let Some(revision) = applied.revision else {
        return Ok(ExitStatus::Success);
    };
    commit_confirmed(ctx, &cluster, revision, options.confirm_timeout).await
}

/// Probe with fresh TCP and TLS connections (a new client, not the pooled one), then ask.
async fn commit_confirmed(
    ctx: &Context,
    cluster: &Cluster,
    revision: u64,
    timeout: Duration,
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
                ctx.printer
                    .say_tone(Tone::Good, "lockdown confirmed: default deny is in force");
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
    let live = inventory::fetch(cluster).await?;
    let mut current = BTreeMap::new();
    for object in &lockdown.objects {
        current.insert(
            object.key(),
            live.find(object.kind, object.namespace.as_deref(), &object.name)
                .cloned(),
        );
    }
    let (changes, _) = journal::undo_plan(&[lockdown], &current);
    let applied = apply_changes(ctx, cluster, &changes, vec![revision]).await?;
    store.set_state(lockdown, RevisionState::RolledBack).await?;
    ctx.printer.say(&format!(
        "restored {} object(s) ({reason}), recorded as revision {}",
        changes.len(),
        applied.revision.unwrap_or_default()
    ));
    Ok(())
}
