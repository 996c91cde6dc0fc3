//! `enable-hep`: the HostEndpoint autoCreate merge patch, sent through the API so no shell
//! quoting is involved, and the equivalent kubectl command for bash and PowerShell.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::calico::policy::CalicoKind;
use crate::cli::{DryRun, EnableHepArgs, GlobalArgs, PrintShell};
use crate::cluster::inventory;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::facts;
use crate::plan::patch_change;
use crate::stages::StageId;
use crate::ui::printer::Tone;

use super::{Context, apply_changes, parse_duration, report_applied, show_changes};

pub fn auto_create_patch(value: &str) -> Value {
    json!({"spec": {"controllers": {"node": {"hostEndpoint": {"autoCreate": value}}}}})
}

fn target_value(args: &EnableHepArgs) -> &'static str {
    if args.disable { "Disabled" } else { "Enabled" }
}

/// The kubectl command for `shell`. PowerShell 7.3+ passes native arguments differently from
/// 5.1, so no quoting style works in both: the patch goes through a file written from a
/// single-quoted here-string, which neither version interprets.
pub fn command_for(shell: PrintShell, value: &str, context: Option<&str>) -> String {
    let patch = auto_create_patch(value).to_string();
    let context_flag = context
        .map(|c| format!(" --context {c}"))
        .unwrap_or_default();
    match shell {
        PrintShell::Bash => format!(
            "kubectl{context_flag} patch kubecontrollersconfiguration default --type=merge --patch='{patch}'\n"
        ),
        PrintShell::Powershell => format!(
            "@'\n{patch}\n'@ | Set-Content -Encoding ascii -Path calico-harden-autocreate.json\nkubectl{context_flag} patch kubecontrollersconfiguration default --type=merge --patch-file calico-harden-autocreate.json\nRemove-Item calico-harden-autocreate.json\n"
        ),
    }
}

pub fn print_command(args: &EnableHepArgs, global: &GlobalArgs) -> Result<ExitStatus> {
    let shell = args
        .print_command
        .expect("only called with --print-command");
    let printer = crate::ui::Printer::new(global.no_color, None);
    printer.data(&command_for(
        shell,
        target_value(args),
        global.context.as_deref(),
    ));
    Ok(ExitStatus::Success)
}

pub async fn run(ctx: &Context, args: &EnableHepArgs) -> Result<ExitStatus> {
    if ctx.namespace.is_some() {
        return Err(Error::usage(
            "-n/--namespace does not apply to enable-hep: KubeControllersConfiguration is cluster-wide",
        ));
    }
    let timeout = parse_duration(&args.timeout, "--timeout")?;
    let value = target_value(args);
    let cluster = ctx.connect().await?;
    let live = inventory::fetch(&cluster).await?;
    let facts = facts::detect(&live.inventory);
    let Some(kcc) = live.inventory.kube_controllers_configuration.as_ref() else {
        return Err(Error::refused(
            "KubeControllersConfiguration `default` does not exist, so host endpoints cannot be turned on",
            Some("calico-kube-controllers creates it when it starts: check that it runs (kubectl get pods -A -l k8s-app=calico-kube-controllers)".into()),
        ));
    };
    let hep = &facts.host_endpoints;
    if let Some(running) = &hep.auto_create_running
        && running != value
        && hep.overridden()
    {
        ctx.printer.warn(&format!(
                "calico-kube-controllers runs with autoCreate={running} although the spec says {}: an environment variable (AUTO_HOST_ENDPOINTS) overrides the spec, so this patch will not take effect until it is removed from the calico-kube-controllers deployment",
                hep.auto_create_spec
            ));
    }
    if let (false, Some((controllers, node))) = (args.disable, facts.controllers_newer_than_node())
    {
        let message = format!(
            "calico-kube-controllers {controllers} is newer than calico-node {node}: its automatic host endpoints can reference a projectcalico-default-allow profile this calico-node does not have, which cuts all host traffic (Calico PR #3552)"
        );
        if !args.force {
            return Err(Error::refused(
                format!("enable-hep refused: {message}"),
                Some("upgrade calico-node to the same version first, or pass --force if you know this pair is safe".into()),
            ));
        }
        ctx.printer.warn(&format!("--force: {message}"));
    }
    if args.disable {
        ctx.printer.warn("setting autoCreate to Disabled makes Calico DELETE every automatic host endpoint (<node>-auto-hep); hosts are then unprotected");
    }
    let Some(change) = patch_change(
        StageId::EnableHep,
        CalicoKind::KubeControllersConfiguration,
        kcc,
        auto_create_patch(value),
    ) else {
        ctx.printer.say_tone(
            Tone::Good,
            &format!("enable-hep: autoCreate is already {value}; nothing to change"),
        );
        if args.wait && !args.disable {
            wait_for_host_endpoints(ctx, &cluster, timeout).await?;
        }
        return Ok(ExitStatus::Success);
    };
    let changes = vec![change];
    show_changes(ctx, &changes);
    if ctx.dry_run == DryRun::None {
        let question = if args.disable {
            "Set autoCreate to Disabled (Calico deletes the automatic host endpoints)?".to_string()
        } else {
            format!(
                "Enable automatic host endpoints on {} node(s)?",
                facts.node_count
            )
        };
        if !ctx.prompter.confirm(&question)? {
            return Err(Error::Cancelled("cancelled: nothing was changed".into()));
        }
    }
    let applied = apply_changes(ctx, &cluster, &changes, Vec::new()).await?;
    report_applied(ctx, &changes, &applied);
    if ctx.dry_run == DryRun::None {
        warn_if_not_taken_up(ctx, &cluster, value).await?;
    }
    if args.wait && ctx.dry_run == DryRun::None {
        if args.disable {
            wait_for_no_auto_host_endpoints(ctx, &cluster, timeout).await?;
        } else {
            wait_for_host_endpoints(ctx, &cluster, timeout).await?;
        }
    } else if !args.disable && ctx.dry_run == DryRun::None {
        ctx.printer.say_tone(Tone::Dim, "next: kubectl calico-harden plan (host endpoints appear within seconds), then kubectl calico-harden lockdown");
    }
    Ok(ExitStatus::Success)
}

/// kube-controllers reports the value it runs with in status.runningConfig. If that does not
/// follow the new spec within a few seconds, an environment variable overrides it.
async fn warn_if_not_taken_up(
    ctx: &Context,
    cluster: &crate::cluster::Cluster,
    value: &str,
) -> Result<()> {
    let path = crate::cluster::api::calico_path(
        CalicoKind::KubeControllersConfiguration,
        None,
        Some("default"),
    );
    let target = crate::cluster::api::calico_target(
        "get",
        CalicoKind::KubeControllersConfiguration,
        None,
        Some("default"),
    );
    let deadline = Instant::now() + TAKE_UP_WAIT;
    loop {
        let running = cluster
            .api
            .get(&path, &target)
            .await?
            .and_then(|kcc| facts::running_auto_create(&kcc));
        match running {
            // Older kube-controllers do not report a running config: nothing to compare.
            None => return Ok(()),
            Some(running) if running == value => return Ok(()),
            Some(running) if Instant::now() >= deadline => {
                ctx.printer.warn(&format!(
                    "calico-kube-controllers still runs with autoCreate={running}: an environment variable (AUTO_HOST_ENDPOINTS) overrides the spec, so this patch does not take effect until it is removed from the calico-kube-controllers deployment"
                ));
                return Ok(());
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// How long kube-controllers gets to report the new value before we call it overridden.
const TAKE_UP_WAIT: Duration = Duration::from_secs(3);

/// Where host endpoints stand: nodes without one, and how many automatic ones exist.
struct HostEndpointProgress {
    nodes: usize,
    missing: Vec<String>,
    automatic: usize,
}

async fn host_endpoint_progress(cluster: &crate::cluster::Cluster) -> Result<HostEndpointProgress> {
    let (nodes, heps) = inventory::nodes_and_host_endpoints(cluster).await?;
    let covered: std::collections::BTreeSet<&str> = heps
        .iter()
        .filter_map(|h| h.pointer("/spec/node").and_then(Value::as_str))
        .collect();
    let missing = nodes
        .iter()
        .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str))
        .filter(|name| !covered.contains(name))
        .map(str::to_string)
        .collect();
    let automatic = heps
        .iter()
        .filter(|h| {
            h.pointer("/metadata/labels/projectcalico.org~1created-by")
                .and_then(Value::as_str)
                == Some("calico-kube-controllers")
        })
        .count();
    Ok(HostEndpointProgress {
        nodes: nodes.len(),
        missing,
        automatic,
    })
}

async fn wait_for_host_endpoints(
    ctx: &Context,
    cluster: &crate::cluster::Cluster,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    let mut progress = host_endpoint_progress(cluster).await?;
    let bar = progress_bar(progress.nodes as u64);
    loop {
        bar.set_position((progress.nodes - progress.missing.len()) as u64);
        if progress.missing.is_empty() {
            bar.finish_and_clear();
            ctx.printer
                .say_tone(Tone::Good, "every node has a host endpoint");
            return Ok(());
        }
        if start.elapsed() >= timeout {
            bar.abandon();
            return Err(Error::refused(
                format!("timed out after {}s waiting for host endpoints; still missing on: {}", timeout.as_secs(), progress.missing.join(", ")),
                Some("check calico-kube-controllers' logs (kubectl logs -n calico-system deploy/calico-kube-controllers) and whether AUTO_HOST_ENDPOINTS overrides autoCreate".into()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        progress = host_endpoint_progress(cluster).await?;
    }
}

async fn wait_for_no_auto_host_endpoints(
    ctx: &Context,
    cluster: &crate::cluster::Cluster,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let automatic = host_endpoint_progress(cluster).await?.automatic;
        if automatic == 0 {
            ctx.printer.say("the automatic host endpoints are gone");
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::refused(
                format!("timed out: {automatic} automatic host endpoint(s) remain"),
                None,
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// On stderr; indicatif draws nothing when stderr is not a terminal.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} host endpoints {pos}/{len} nodes [{elapsed}]",
        )
        .expect("valid template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_command_is_single_quoted_json() {
        let text = command_for(PrintShell::Bash, "Enabled", None);
        assert_eq!(
            text,
            "kubectl patch kubecontrollersconfiguration default --type=merge --patch='{\"spec\":{\"controllers\":{\"node\":{\"hostEndpoint\":{\"autoCreate\":\"Enabled\"}}}}}'\n"
        );
    }

    #[test]
    fn powershell_command_uses_a_file_from_a_literal_here_string() {
        let text = command_for(PrintShell::Powershell, "Enabled", Some("prod"));
        assert!(text.starts_with("@'\n{\"spec\""));
        assert!(text.contains("\n'@ | Set-Content"));
        assert!(text.contains("kubectl --context prod patch kubecontrollersconfiguration default --type=merge --patch-file"));
        assert!(!text.contains("\\\""), "no backslash escaping: {text}");
    }
}
