//! `enable-hep`: the HostEndpoint autoCreate merge patch, sent through the API so no shell
//! quoting is involved, and the equivalent kubectl command for bash and PowerShell.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::calico::host_endpoints::{
    self, HostEndpoint, HostEndpointTemplate, KccHostEndpointConfig, NodeFacts,
};
use crate::calico::objects::AutoCreate;
use crate::calico::policy::CalicoKind;
use crate::cli::{DryRun, EnableHepArgs, GlobalArgs, PrintShell};
use crate::cluster::inventory::{self, Observe};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::facts::{self, ClusterFacts};
use crate::plan::{Change, patch_change};
use crate::stages::StageId;
use crate::ui::printer::Tone;

use super::observe::Observed;
use super::transaction::{Question, Transaction, report_applied};
use super::{Context, parse_duration};

/// What enable-hep writes into `spec.controllers.node.hostEndpoint`, checked before anything is
/// sent. `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpointSettings {
    pub auto_create: AutoCreate,
    pub create_default_host_endpoint: Option<bool>,
    /// `Some(empty)` removes every template.
    pub templates: Option<Vec<HostEndpointTemplate>>,
}

impl HostEndpointSettings {
    /// The merge patch: only the fields the command sets; `templates: null` removes them.
    pub fn patch(&self) -> Value {
        let mut host_endpoint = json!({"autoCreate": self.auto_create.as_str()});
        if let Some(on) = self.create_default_host_endpoint {
            host_endpoint["createDefaultHostEndpoint"] =
                json!(if on { "Enabled" } else { "Disabled" });
        }
        match &self.templates {
            None => {}
            Some(list) if list.is_empty() => host_endpoint["templates"] = Value::Null,
            Some(list) => {
                host_endpoint["templates"] =
                    Value::Array(list.iter().map(HostEndpointTemplate::to_value).collect());
            }
        }
        json!({"spec": {"controllers": {"node": {"hostEndpoint": host_endpoint}}}})
    }
}

/// Turn the flags into settings; every template flag is checked the way Calico's validation
/// and kube-controllers read it, so a mistake is a usage error and nothing is sent.
pub fn settings(args: &EnableHepArgs) -> Result<HostEndpointSettings> {
    let create_default_host_endpoint = if args.no_default_host_endpoint {
        Some(false)
    } else if args.default_host_endpoint {
        Some(true)
    } else {
        None
    };
    let templates = if args.no_templates {
        Some(Vec::new())
    } else if args.templates.is_empty() {
        None
    } else {
        Some(templates(args)?)
    };
    Ok(HostEndpointSettings {
        auto_create: if args.disable {
            AutoCreate::Disabled
        } else {
            AutoCreate::Enabled
        },
        create_default_host_endpoint,
        templates,
    })
}

fn templates(args: &EnableHepArgs) -> Result<Vec<HostEndpointTemplate>> {
    let mut list: Vec<HostEndpointTemplate> = Vec::new();
    for raw in &args.templates {
        let (name, node_selector) = raw.split_once(':').unwrap_or((raw.as_str(), ""));
        check_template_name(name)?;
        if list.iter().any(|t| t.generate_name == name) {
            return Err(Error::usage(format!(
                "--template {name}: the template is given twice"
            )));
        }
        if let Err(e) = crate::calico::selector::parse(node_selector) {
            return Err(Error::usage(format!(
                "--template {name}: the node selector is not a Calico selector: {e}\n{}",
                e.render_caret(node_selector)
            )));
        }
        list.push(HostEndpointTemplate {
            generate_name: name.to_string(),
            node_selector: node_selector.trim().to_string(),
            ..HostEndpointTemplate::default()
        });
    }
    for raw in &args.template_cidrs {
        let (template, cidrs) = template_part(&mut list, "--template-cidr", raw)?;
        for cidr in cidrs.split(',').map(str::trim) {
            check_cidr(&template.generate_name, cidr)?;
            template.interface_cidrs.push(cidr.to_string());
        }
    }
    for raw in &args.template_labels {
        let (template, label) = template_part(&mut list, "--template-label", raw)?;
        let Some((key, value)) = label.split_once('=') else {
            return Err(Error::usage(format!(
                "--template-label {raw}: expected NAME:KEY=VALUE"
            )));
        };
        check_label(raw, key, value)?;
        template.labels.insert(key.to_string(), value.to_string());
    }
    for raw in &args.interface_patterns {
        let (template, pattern) = template_part(&mut list, "--interface-pattern", raw)?;
        if !template.interface_pattern.is_empty() {
            return Err(Error::usage(format!(
                "--interface-pattern: template {} has one pattern; join alternatives with |",
                template.generate_name
            )));
        }
        if let Err(e) = regex::Regex::new(pattern) {
            return Err(Error::usage(format!(
                "--interface-pattern {raw}: not a regular expression: {e}"
            )));
        }
        template.interface_pattern = pattern.to_string();
    }
    if let Some(template) = list
        .iter()
        .find(|t| t.interface_cidrs.is_empty() && t.interface_pattern.is_empty())
    {
        return Err(Error::usage(format!(
            "--template {}: give it --template-cidr {0}:CIDR or --interface-pattern {0}:REGEX; without either calico-kube-controllers creates no endpoint for it",
            template.generate_name
        )));
    }
    Ok(list)
}

/// The template a `NAME:VALUE` flag refers to, and the value.
fn template_part<'a, 'r>(
    list: &'a mut [HostEndpointTemplate],
    flag: &str,
    raw: &'r str,
) -> Result<(&'a mut HostEndpointTemplate, &'r str)> {
    let Some((name, value)) = raw.split_once(':') else {
        return Err(Error::usage(format!(
            "{flag} {raw}: expected NAME:VALUE, NAME being a --template"
        )));
    };
    match list.iter_mut().find(|t| t.generate_name == name) {
        Some(template) => Ok((template, value)),
        None => Err(Error::usage(format!(
            "{flag} {raw}: no --template {name} is given"
        ))),
    }
}

/// Calico's resource name format (lower-case DNS subdomain), which the endpoint names extend.
fn check_template_name(name: &str) -> Result<()> {
    let label = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
    let format = regex::Regex::new(&format!("^{label}(\\.{label})*$")).expect("valid regex");
    if name.len() > 253 || !format.is_match(name) {
        return Err(Error::usage(format!(
            "--template {name}: the name must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

/// kube-controllers reads interfaceCIDRs with Go's net.ParseCIDR: a bare address is accepted
/// by the API but makes the template match nothing.
fn check_cidr(template: &str, cidr: &str) -> Result<()> {
    if host_endpoints::parse_go_cidr(cidr).is_some() {
        return Ok(());
    }
    let hint = if cidr.parse::<std::net::IpAddr>().is_ok() {
        let bits = if cidr.contains(':') { 128 } else { 32 };
        format!(
            " (write {cidr}/{bits}: calico-kube-controllers ignores a template CIDR without a prefix)"
        )
    } else {
        String::new()
    };
    Err(Error::usage(format!(
        "--template-cidr {template}:{cidr}: not a CIDR{hint}"
    )))
}

/// Kubernetes label syntax: an optional DNS-subdomain prefix and `/`, a name of at most 63
/// characters; a value of at most 63, possibly empty.
fn check_label(raw: &str, key: &str, value: &str) -> Result<()> {
    let name =
        regex::Regex::new("^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$").expect("valid regex");
    let prefix =
        regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
            .expect("valid regex");
    let (key_prefix, key_name) = key
        .rsplit_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    let key_ok = key_name.len() <= 63
        && name.is_match(key_name)
        && key_prefix.is_none_or(|p| p.len() <= 253 && prefix.is_match(p));
    let value_ok = value.len() <= 63 && (value.is_empty() || name.is_match(value));
    if key_ok && value_ok {
        return Ok(());
    }
    Err(Error::usage(format!(
        "--template-label {raw}: not a valid Kubernetes label (key [prefix/]name, name and value at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit)"
    )))
}

/// The kubectl command for `shell`. PowerShell 7.3+ passes native arguments differently from
/// 5.1, so no quoting style works in both: the patch goes through a file written from a
/// single-quoted here-string, which neither version interprets.
pub fn command_for(shell: PrintShell, patch: &Value, context: Option<&str>) -> String {
    let patch = patch.to_string();
    let context_flag = context
        .map(|c| format!(" --context {c}"))
        .unwrap_or_default();
    match shell {
        // A selector may hold single quotes: close the quote, escape it, reopen.
        PrintShell::Bash => format!(
            "kubectl{context_flag} patch kubecontrollersconfiguration default --type=merge --patch='{}'\n",
            patch.replace('\'', "'\\''")
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
    let settings = settings(args)?;
    let printer = crate::ui::Printer::new(global.no_color, None);
    printer.data(&command_for(
        shell,
        &settings.patch(),
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
    let settings = settings(args)?;
    let value = settings.auto_create;
    let Observed {
        cluster,
        facts,
        live,
    } = ctx.observe(&Observe::facts_without_policies()).await?;
    let Some(kcc) = live.inventory.kube_controllers_configuration.as_ref() else {
        return Err(Error::refused(
            "KubeControllersConfiguration `default` does not exist, so host endpoints cannot be turned on",
            Some("calico-kube-controllers creates it when it starts: check that it runs (kubectl get pods -A -l k8s-app=calico-kube-controllers)".into()),
        ));
    };
    check_before_writing(ctx, args, &settings, &facts, kcc)?;
    let Some(change) = patch_change(
        StageId::EnableHep,
        CalicoKind::KubeControllersConfiguration,
        kcc,
        settings.patch(),
    ) else {
        ctx.printer.say_tone(
            Tone::Good,
            &format!(
                "enable-hep: autoCreate is already {} as asked; nothing to change",
                value.as_str()
            ),
        );
        if args.wait && !args.disable {
            wait_for_predicted_host_endpoints(ctx, &cluster, timeout).await?;
        }
        return Ok(ExitStatus::Success);
    };
    let changes = vec![change];
    let transaction = Transaction::new(ctx, &cluster);
    transaction.show(&changes);
    if !args.disable {
        let predicted = predicted_host_endpoints(&changes[0], &live.inventory.nodes);
        ctx.printer
            .say(&predicted_summary(&predicted, facts.node_count));
    }
    transaction.confirm(
        Question::YesNo(question(args, facts.node_count)),
        "cancelled: nothing was changed",
    )?;
    let applied = transaction.commit(&changes).await?;
    report_applied(ctx, &changes, &applied);
    if ctx.dry_run != DryRun::None {
        return Ok(ExitStatus::Success);
    }
    warn_if_not_taken_up(ctx, &cluster, value).await?;
    if args.wait && args.disable {
        wait_for_no_auto_host_endpoints(ctx, &cluster, timeout).await?;
    } else if args.wait {
        wait_for_predicted_host_endpoints(ctx, &cluster, timeout).await?;
    } else if !args.disable {
        ctx.printer.say_tone(Tone::Dim, "next: kubectl calico-harden plan (host endpoints appear within seconds), then kubectl calico-harden lockdown");
    }
    Ok(ExitStatus::Success)
}

/// Warnings, and refusals `--force` overrides, from what the cluster runs: an environment
/// variable that overrides the spec, a version skew or a release that ignores the settings.
fn check_before_writing(
    ctx: &Context,
    args: &EnableHepArgs,
    settings: &HostEndpointSettings,
    facts: &ClusterFacts,
    kcc: &Value,
) -> Result<()> {
    let hep = &facts.host_endpoints;
    if let Some(running) = &hep.auto_create_running
        && running != settings.auto_create.as_str()
        && hep.overridden()
    {
        ctx.printer.warn(&format!(
                "calico-kube-controllers runs with autoCreate={running} although the spec says {}: an environment variable (AUTO_HOST_ENDPOINTS) overrides the spec, so this patch will not take effect until it is removed from the calico-kube-controllers deployment",
                hep.auto_create_spec
            ));
    }
    if environment_override(kcc).is_some()
        && (settings.templates.is_some() || settings.create_default_host_endpoint.is_some())
    {
        ctx.printer.warn("AUTO_HOST_ENDPOINTS is set on calico-kube-controllers: it then ignores templates and createDefaultHostEndpoint, whatever the spec says");
    }
    if let (false, Some((controllers, node))) = (args.disable, facts.controllers_newer_than_node())
    {
        let message = format!(
            "calico-kube-controllers {controllers} is newer than calico-node {node}: its automatic host endpoints can reference a projectcalico-default-allow profile this calico-node does not have, which cuts all host traffic (Calico PR #3552)"
        );
        refuse_unless_forced(
            ctx,
            args,
            message,
            "upgrade calico-node to the same version first, or pass --force if you know this pair is safe",
        )?;
    }
    if let Some(message) = unsupported_by_release(settings, facts) {
        refuse_unless_forced(
            ctx,
            args,
            message,
            "upgrade Calico first, or leave these flags out (pass --force if this calico-kube-controllers is known to read them)",
        )?;
    }
    if args.disable {
        ctx.printer.warn("setting autoCreate to Disabled makes Calico DELETE every automatic host endpoint (<node>-auto-hep); hosts are then unprotected");
    }
    Ok(())
}

fn refuse_unless_forced(
    ctx: &Context,
    args: &EnableHepArgs,
    message: String,
    hint: &str,
) -> Result<()> {
    if !args.force {
        return Err(Error::refused(
            format!("enable-hep refused: {message}"),
            Some(hint.to_string()),
        ));
    }
    ctx.printer.warn(&format!("--force: {message}"));
    Ok(())
}

/// The host endpoints calico-kube-controllers keeps once `change` is written.
fn predicted_host_endpoints(change: &Change, nodes: &[Value]) -> Vec<HostEndpoint> {
    let nodes: Vec<NodeFacts> = nodes.iter().map(NodeFacts::from_node).collect();
    host_endpoints::predict(&KccHostEndpointConfig::once_enabled(change.after()), &nodes)
}

fn question(args: &EnableHepArgs, nodes: usize) -> String {
    if args.disable {
        "Set autoCreate to Disabled (Calico deletes the automatic host endpoints)?".to_string()
    } else {
        format!("Enable automatic host endpoints on {nodes} node(s)?")
    }
}

/// Fields calico-kube-controllers reads only from some release on: templates and
/// createDefaultHostEndpoint from 3.30 (projectcalico/calico#9901), a template's
/// interfacePattern from 3.31 (#10672). An older one accepts the patch and ignores them, so
/// the host endpoints would not be the ones asked for. None when the release supports
/// everything asked, or is unknown.
fn unsupported_by_release(
    settings: &HostEndpointSettings,
    facts: &facts::ClusterFacts,
) -> Option<String> {
    let (version, source) = facts.calico_version()?;
    let release = facts::parse_version(version)?;
    let templates = settings.templates.as_deref().unwrap_or_default();
    let asked: [(bool, &str, (u64, u64, u64)); 3] = [
        (
            !templates.is_empty(),
            "host endpoint templates (--template)",
            (3, 30, 0),
        ),
        (
            settings.create_default_host_endpoint == Some(false),
            "createDefaultHostEndpoint (--no-default-host-endpoint)",
            (3, 30, 0),
        ),
        (
            templates.iter().any(|t| !t.interface_pattern.is_empty()),
            "a template's interfacePattern (--interface-pattern)",
            (3, 31, 0),
        ),
    ];
    let missing: Vec<String> = asked
        .iter()
        .filter(|(wanted, _, since)| *wanted && release < *since)
        .map(|(_, what, (major, minor, _))| {
            format!("{what} needs Calico v{major}.{minor} or later")
        })
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{}; this cluster runs Calico {version} (from {source}), whose calico-kube-controllers ignores them",
            missing.join("; ")
        )
    })
}

fn environment_override(kcc: &Value) -> Option<&str> {
    kcc.pointer("/status/environmentVars/AUTO_HOST_ENDPOINTS")
        .and_then(Value::as_str)
}

/// "calico-kube-controllers will keep 3 host endpoint(s): a, b, c" with at most ten names.
fn predicted_summary(predicted: &[HostEndpoint], nodes: usize) -> String {
    const NAMED: usize = 10;
    let mut names: Vec<&str> = predicted
        .iter()
        .take(NAMED)
        .map(|h| h.name.as_str())
        .collect();
    let more = predicted.len().saturating_sub(NAMED);
    let more_text = format!("and {more} more");
    if more > 0 {
        names.push(&more_text);
    }
    let covered: std::collections::BTreeSet<&str> =
        predicted.iter().map(|h| h.node.as_str()).collect();
    let uncovered = nodes.saturating_sub(covered.len());
    let mut text = format!(
        "calico-kube-controllers will keep {} host endpoint(s){}{}",
        predicted.len(),
        if names.is_empty() { "" } else { ": " },
        names.join(", ")
    );
    if uncovered > 0 {
        text.push_str(&format!(
            "; {uncovered} node(s) get none (no template selects them or matches their IPs)"
        ));
    }
    text
}

/// kube-controllers reports the value it runs with in status.runningConfig. If that does not
/// follow the new spec within a few seconds, an environment variable overrides it.
async fn warn_if_not_taken_up(
    ctx: &Context,
    cluster: &crate::cluster::Cluster,
    value: AutoCreate,
) -> Result<()> {
    let deadline = Instant::now() + TAKE_UP_WAIT;
    loop {
        let running = read_kube_controllers_configuration(cluster)
            .await?
            .and_then(|kcc| facts::running_auto_create(&kcc));
        match running {
            // Older kube-controllers do not report a running config: nothing to compare.
            None => return Ok(()),
            Some(running) if running == value.as_str() => return Ok(()),
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

/// How the automatic host endpoints compare with the prediction.
#[derive(Debug)]
struct PredictionProgress {
    predicted: usize,
    comparison: host_endpoints::Comparison,
    /// autoCreate as kube-controllers runs it (environment override included).
    auto_create: bool,
}

fn compare_with_prediction(
    config: &KccHostEndpointConfig,
    nodes: &[Value],
    live: &[Value],
) -> PredictionProgress {
    let nodes: Vec<NodeFacts> = nodes.iter().map(NodeFacts::from_node).collect();
    let predicted = host_endpoints::predict(config, &nodes);
    PredictionProgress {
        predicted: predicted.len(),
        comparison: host_endpoints::compare(&predicted, live),
        auto_create: config.auto_create,
    }
}

async fn prediction_progress(cluster: &crate::cluster::Cluster) -> Result<PredictionProgress> {
    let (nodes, heps) = inventory::nodes_and_host_endpoints(cluster).await?;
    let kcc = read_kube_controllers_configuration(cluster).await?;
    let config = KccHostEndpointConfig::running(kcc.as_ref());
    Ok(compare_with_prediction(&config, &nodes, &heps))
}

async fn read_kube_controllers_configuration(
    cluster: &crate::cluster::Cluster,
) -> Result<Option<Value>> {
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
    cluster.api.get(&path, &target).await
}

/// Wait until the automatic host endpoints are exactly the predicted ones: every predicted
/// endpoint present with its labels, expected IPs and interface, and no other.
async fn wait_for_predicted_host_endpoints(
    ctx: &Context,
    cluster: &crate::cluster::Cluster,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    let mut progress = prediction_progress(cluster).await?;
    if !progress.auto_create {
        return Err(Error::refused(
            "calico-kube-controllers runs with autoCreate Disabled, so no host endpoint will appear",
            Some("remove the AUTO_HOST_ENDPOINTS environment variable from the calico-kube-controllers deployment".into()),
        ));
    }
    let bar = progress_bar(progress.predicted as u64);
    loop {
        bar.set_length(progress.predicted as u64);
        bar.set_position(progress.comparison.in_place.len() as u64);
        if progress.comparison.matches() {
            bar.finish_and_clear();
            ctx.printer.say_tone(
                Tone::Good,
                &format!(
                    "every predicted host endpoint is in place ({})",
                    progress.predicted
                ),
            );
            return Ok(());
        }
        if start.elapsed() >= timeout {
            bar.abandon();
            let mut waiting = Vec::new();
            let comparison = &progress.comparison;
            for (what, names) in [
                ("missing", &comparison.missing),
                ("not yet as predicted", &comparison.different),
                ("still to be deleted", &comparison.extra),
            ] {
                if !names.is_empty() {
                    waiting.push(format!("{what}: {}", names.join(", ")));
                }
            }
            return Err(Error::refused(
                format!(
                    "timed out after {}s waiting for the predicted host endpoints ({} of {} in place); {}",
                    timeout.as_secs(),
                    comparison.in_place.len(),
                    progress.predicted,
                    waiting.join("; ")
                ),
                Some("check calico-kube-controllers' logs (kubectl logs -n calico-system deploy/calico-kube-controllers) and whether AUTO_HOST_ENDPOINTS overrides autoCreate".into()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        progress = prediction_progress(cluster).await?;
    }
}

async fn wait_for_no_auto_host_endpoints(
    ctx: &Context,
    cluster: &crate::cluster::Cluster,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let (_, heps) = inventory::nodes_and_host_endpoints(cluster).await?;
        let automatic = heps
            .iter()
            .filter(|h| host_endpoints::is_automatic(h))
            .count();
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
            "{spinner} host endpoints {pos}/{len} in place [{elapsed}]",
        )
        .expect("valid template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(flags: &[&str]) -> std::result::Result<EnableHepArgs, clap::Error> {
        let mut argv = vec!["kubectl-calico_harden", "enable-hep"];
        argv.extend_from_slice(flags);
        match Cli::try_parse_from(argv)?.command {
            Command::EnableHep(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn settings_of(flags: &[&str]) -> Result<HostEndpointSettings> {
        settings(&args(flags).expect("clap accepts the flags"))
    }

    fn usage_message(flags: &[&str]) -> String {
        match settings_of(flags) {
            Err(Error::Usage(message)) => message,
            other => panic!("{flags:?} should be a usage error, got {other:?}"),
        }
    }

    #[test]
    fn plain_enable_patches_auto_create_only() {
        let patch = settings_of(&[]).unwrap().patch();
        assert_eq!(
            patch,
            json!({"spec": {"controllers": {"node": {"hostEndpoint": {"autoCreate": "Enabled"}}}}})
        );
        let text = command_for(PrintShell::Bash, &patch, None);
        assert_eq!(
            text,
            "kubectl patch kubecontrollersconfiguration default --type=merge --patch='{\"spec\":{\"controllers\":{\"node\":{\"hostEndpoint\":{\"autoCreate\":\"Enabled\"}}}}}'\n"
        );
    }

    #[test]
    fn templates_labels_patterns_and_the_default_in_one_patch() {
        let settings = settings_of(&[
            "--template",
            "control-plane:has(node-role.kubernetes.io/control-plane)",
            "--template-cidr",
            "control-plane:10.0.0.0/24,fd00::/64",
            "--template-label",
            "control-plane:tier=control",
            "--template",
            "ifaces",
            "--interface-pattern",
            "ifaces:^eth[0-9]+$",
            "--no-default-host-endpoint",
        ])
        .unwrap();
        assert_eq!(
            settings.patch(),
            json!({"spec": {"controllers": {"node": {"hostEndpoint": {
                "autoCreate": "Enabled",
                "createDefaultHostEndpoint": "Disabled",
                "templates": [
                    {"generateName": "control-plane",
                     "interfaceCIDRs": ["10.0.0.0/24", "fd00::/64"],
                     "nodeSelector": "has(node-role.kubernetes.io/control-plane)",
                     "labels": {"tier": "control"}},
                    {"generateName": "ifaces", "interfacePattern": "^eth[0-9]+$"}]}}}}})
        );
        let removal = settings_of(&["--no-templates", "--default-host-endpoint"]).unwrap();
        assert_eq!(
            removal.patch()["spec"]["controllers"]["node"]["hostEndpoint"],
            json!({"autoCreate": "Enabled", "createDefaultHostEndpoint": "Enabled", "templates": null})
        );
    }

    #[test]
    fn bad_template_flags_are_usage_errors() {
        let selector = usage_message(&["--template", "t:has(", "--template-cidr", "t:10.0.0.0/8"]);
        assert!(selector.contains("not a Calico selector"), "{selector}");
        assert!(selector.contains("has(\n    ^"), "{selector}");
        let bare_ip = usage_message(&["--template", "t", "--template-cidr", "t:10.0.0.1"]);
        assert!(bare_ip.contains("write 10.0.0.1/32"), "{bare_ip}");
        assert!(
            usage_message(&["--template", "t", "--template-cidr", "t:nonsense"])
                .contains("not a CIDR")
        );
        let regex = usage_message(&["--template", "t", "--interface-pattern", "t:eth(["]);
        assert!(regex.contains("not a regular expression"), "{regex}");
        let neither = usage_message(&["--template", "t"]);
        assert!(neither.contains("creates no endpoint"), "{neither}");
        let unknown = usage_message(&["--template", "t", "--template-cidr", "u:10.0.0.0/8"]);
        assert!(unknown.contains("no --template u"), "{unknown}");
        let name = usage_message(&[
            "--template",
            "Bad_Name",
            "--template-cidr",
            "Bad_Name:10.0.0.0/8",
        ]);
        assert!(name.contains("lower-case"), "{name}");
        let label = usage_message(&[
            "--template",
            "t",
            "--template-cidr",
            "t:10.0.0.0/8",
            "--template-label",
            "t:bad key=v",
        ]);
        assert!(label.contains("not a valid Kubernetes label"), "{label}");
        let twice = usage_message(&[
            "--template",
            "t",
            "--template",
            "t",
            "--template-cidr",
            "t:10.0.0.0/8",
        ]);
        assert!(twice.contains("given twice"), "{twice}");
        // Flags that cannot go together are refused by the parser.
        assert!(args(&["--disable", "--template", "t"]).is_err());
        assert!(args(&["--no-templates", "--template", "t"]).is_err());
        assert!(args(&["--template-cidr", "t:10.0.0.0/8"]).is_err());
        assert!(args(&["--no-default-host-endpoint", "--default-host-endpoint"]).is_err());
    }

    #[test]
    fn bash_command_quotes_single_quotes_in_selectors() {
        let settings = settings_of(&[
            "--template",
            "t:zone == 'a'",
            "--template-cidr",
            "t:10.0.0.0/8",
        ])
        .unwrap();
        let text = command_for(PrintShell::Bash, &settings.patch(), None);
        assert!(
            text.contains(r#""nodeSelector":"zone == '\''a'\''""#),
            "{text}"
        );
    }

    #[test]
    fn powershell_command_uses_a_file_from_a_literal_here_string() {
        let patch = settings_of(&[]).unwrap().patch();
        let text = command_for(PrintShell::Powershell, &patch, Some("prod"));
        assert!(text.starts_with("@'\n{\"spec\""));
        assert!(text.contains("\n'@ | Set-Content"));
        assert!(text.contains("kubectl --context prod patch kubecontrollersconfiguration default --type=merge --patch-file"));
        assert!(!text.contains("\\\""), "no backslash escaping: {text}");
    }
}
