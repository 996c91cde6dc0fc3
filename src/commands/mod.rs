//! One file per subcommand: each turns its arguments into options and calls the shared flow.
//! [`run`] is the testable entry point: it returns an exit status and never exits itself.

mod check;
mod completion;
mod enable_hep;
mod explain;
mod history;
mod lockdown;
mod observe;
mod plan;
mod preflight;
mod rbac;
mod render;
mod rollback;
mod stage;
mod up;

use std::time::Duration;

use crate::cli::{Cli, Command, DryRun, GlobalArgs};
use crate::cluster::{self, Cluster, ConnectOptions};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::journal::RevisionState;
use crate::journal::store::Store;
use crate::plan::{Change, ChangeKind};
use crate::stages::StageId;
use crate::ui::printer::Tone;
use crate::ui::progress::Progress;
use crate::ui::{Printer, Prompter, diff, prompt};

pub use completion::complete_for_kubectl;

pub fn completion_hook_name() -> &'static str {
    completion::KUBECTL_COMPLETE_NAME
}

/// Validated global settings.
pub struct Context {
    pub printer: Printer,
    pub prompter: Box<dyn Prompter>,
    pub connect: ConnectOptions,
    pub dry_run: DryRun,
    pub yes: bool,
    pub history_namespace: String,
    pub history_max: u32,
    pub namespace: Option<String>,
    /// The command line as typed, for the history.
    pub command_line: String,
}

/// Rendering options from the shared stage flags.
pub fn stage_options(
    flags: &crate::cli::StageFlags,
    namespace_override: Option<String>,
) -> Result<crate::stages::StageOptions> {
    Ok(crate::stages::StageOptions {
        excluded_namespaces: crate::stages::parse_namespace_list(&flags.exclude_namespaces)?,
        registry: crate::stages::parse_registry(&flags.registry_ip, &flags.registry_port)?,
        namespace_override,
    })
}

/// "30s", "2m", "500ms", "1h", or a bare number of seconds (kubectl's --request-timeout).
pub fn parse_duration(raw: &str, flag: &str) -> Result<Duration> {
    let raw = raw.trim();
    let (number, unit) = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((raw, "s"), |i| raw.split_at(i));
    let value: f64 = number.parse().map_err(|_| invalid_duration(raw, flag))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(invalid_duration(raw, flag)),
    };
    if !seconds.is_finite() || !(0.0..=86_400.0 * 7.0).contains(&seconds) {
        return Err(invalid_duration(raw, flag));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn invalid_duration(raw: &str, flag: &str) -> Error {
    Error::usage(format!(
        "invalid {flag} {raw:?}: expected a duration like 30s, 2m, 500ms or a number of seconds"
    ))
}

impl Context {
    pub fn from_args(global: &GlobalArgs) -> Result<Self> {
        let timeout = parse_duration(&global.request_timeout, "--request-timeout")?;
        if let Some(ns) = &global.namespace {
            crate::stages::validate_dns_label(ns, "namespace (-n)")?;
        }
        crate::stages::validate_dns_label(&global.history_namespace, "--history-namespace")?;
        for (value, flag) in [
            (&global.context, "--context"),
            (&global.cluster, "--cluster"),
            (&global.user, "--user"),
            (&global.as_user, "--as"),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(Error::usage(format!("{flag} needs a non-empty value")));
            }
        }
        Ok(Self {
            printer: Printer::new(global.no_color, global.output),
            prompter: prompt::for_run(global.yes),
            connect: ConnectOptions {
                kubeconfig: global.kubeconfig.clone(),
                context: global.context.clone(),
                cluster: global.cluster.clone(),
                user: global.user.clone(),
                as_user: global.as_user.clone(),
                as_groups: global.as_group.clone(),
                request_timeout: (!timeout.is_zero()).then_some(timeout),
            },
            dry_run: global.dry_run,
            yes: global.yes,
            history_namespace: global.history_namespace.clone(),
            history_max: global.history_max,
            namespace: global.namespace.clone(),
            command_line: command_line(),
        })
    }

    pub async fn connect(&self) -> Result<Cluster> {
        cluster::connect(&self.connect).await
    }

    pub fn store<'a>(&self, cluster: &'a Cluster) -> Store<'a> {
        Store::new(cluster, &self.history_namespace, self.history_max)
    }
}

/// The command line for the history, with anything that looks like a credential removed.
fn command_line() -> String {
    let mut words = vec!["kubectl calico-harden".to_string()];
    let mut skip_next = false;
    for arg in std::env::args().skip(1) {
        if skip_next {
            words.push("<redacted>".into());
            skip_next = false;
            continue;
        }
        let lower = arg.to_lowercase();
        if ["--token", "--password", "--client-key"]
            .iter()
            .any(|f| lower == *f)
        {
            skip_next = true;
        }
        if ["--token=", "--password=", "--client-key="]
            .iter()
            .any(|f| lower.starts_with(f))
        {
            words.push(format!(
                "{}=<redacted>",
                arg.split('=').next().unwrap_or_default()
            ));
            continue;
        }
        words.push(arg);
    }
    words.join(" ")
}

pub async fn run(cli: Cli) -> ExitStatus {
    let printer = Printer::new(cli.global.no_color, cli.global.output);
    match dispatch(cli).await {
        Ok(status) => status,
        Err(err) => {
            report_error(&printer, &err);
            err.exit_status()
        }
    }
}

pub fn report_error(printer: &Printer, err: &Error) {
    match err {
        Error::Cancelled(message) => printer.say_tone(Tone::Warn, message),
        other => printer.error(&other.to_string()),
    }
    if let Some(hint) = err.hint() {
        printer.hint(hint);
    }
}

async fn dispatch(cli: Cli) -> Result<ExitStatus> {
    // Commands that need neither a cluster nor the global settings.
    match &cli.command {
        Command::Completion(args) => return completion::run(args, &cli.global),
        Command::Rbac => return rbac::run(&Printer::new(cli.global.no_color, cli.global.output)),
        Command::Render(args) if args.offline => {
            return render::run_offline(args, &Context::from_args(&cli.global)?);
        }
        Command::EnableHep(args) if args.print_command.is_some() => {
            return enable_hep::print_command(args, &cli.global);
        }
        _ => {}
    }
    let ctx = Context::from_args(&cli.global)?;
    match cli.command {
        Command::SafetyNet => {
            stage::run(&ctx, StageId::SafetyNet, stage::StageArgs::default()).await
        }
        Command::Localhost => {
            stage::run(&ctx, StageId::Localhost, stage::StageArgs::default()).await
        }
        Command::IsolateApps(args) => {
            stage::run(
                &ctx,
                StageId::IsolateApps,
                stage::StageArgs::isolate(&args.exclude_namespaces)?,
            )
            .await
        }
        Command::CalicoApiserverToKapi => {
            stage::run(
                &ctx,
                StageId::CalicoApiserverToKapi,
                stage::StageArgs::default(),
            )
            .await
        }
        Command::ControllersToCalicoApiserver => {
            stage::run(
                &ctx,
                StageId::ControllersToCalicoApiserver,
                stage::StageArgs::default(),
            )
            .await
        }
        Command::HostsToCalicoApiserver => {
            stage::run(
                &ctx,
                StageId::HostsToCalicoApiserver,
                stage::StageArgs::default(),
            )
            .await
        }
        Command::NodesToKapi => {
            stage::run(&ctx, StageId::NodesToKapi, stage::StageArgs::default()).await
        }
        Command::SrcnatToKapi => {
            stage::run(&ctx, StageId::SrcnatToKapi, stage::StageArgs::default()).await
        }
        Command::NodesToTypha => {
            stage::run(&ctx, StageId::NodesToTypha, stage::StageArgs::default()).await
        }
        Command::Kubelet => stage::run(&ctx, StageId::Kubelet, stage::StageArgs::default()).await,
        Command::ControllersToKapi => {
            stage::run(
                &ctx,
                StageId::ControllersToKapi,
                stage::StageArgs::default(),
            )
            .await
        }
        Command::Registry(args) => {
            stage::run(
                &ctx,
                StageId::Registry,
                stage::StageArgs::registry(&args.ip, &args.port)?,
            )
            .await
        }
        Command::EnableHep(args) => enable_hep::run(&ctx, &args).await,
        Command::Lockdown(args) => {
            lockdown::run(&ctx, &lockdown::LockdownOptions::from_command(&args)?).await
        }
        Command::Plan => plan::run(&ctx).await,
        Command::Render(args) => render::run_live(&args, &ctx).await,
        Command::Up(args) => up::run(&ctx, &args).await,
        Command::Check(args) => check::run(&ctx, &args).await,
        Command::Explain(args) => explain::run(&ctx, &args).await,
        Command::History => history::run(&ctx).await,
        Command::Rollback(args) => rollback::run(&ctx, &args).await,
        Command::Completion(_) | Command::Rbac => unreachable!("handled above"),
    }
}

/// Show the changes; say so and stop when there are none.
pub fn show_changes(ctx: &Context, changes: &[Change]) {
    let printer = &ctx.printer;
    for change in changes {
        let text = diff::render_change(printer, change);
        if printer.output.is_some() {
            printer.say(text.trim_end());
        } else {
            printer.data(&text);
        }
    }
}

/// Ask once for a set of changes; adoption of hand-made objects is named explicitly.
pub fn confirm_changes(ctx: &Context, changes: &[Change], what: &str) -> Result<bool> {
    let adopted: Vec<String> = changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Adopt)
        .map(Change::display_name)
        .collect();
    let mut question = format!("Apply {} change(s) for {what}?", changes.len());
    if !adopted.is_empty() {
        question = format!(
            "{} object(s) were made by hand and will be taken over: {}. {question}",
            adopted.len(),
            adopted.join(", ")
        );
    }
    ctx.prompter.confirm(&question)
}

/// Fault injection for the crash-recovery tests: abort the process right after the Nth write,
/// as a SIGKILL would, before the journal records it.
pub const ABORT_AFTER_WRITES_ENV: &str = "KUBECTL_CALICO_HARDEN_ABORT_AFTER_WRITES";

fn abort_after_writes() -> Option<usize> {
    std::env::var(ABORT_AFTER_WRITES_ENV).ok()?.parse().ok()
}

/// Every permission writing `changes` (and, for real writes, the history) takes.
fn needed_permissions(ctx: &Context, changes: &[Change]) -> Vec<cluster::access::Permission> {
    use cluster::access::Permission;
    let mut needed: Vec<Permission> = changes
        .iter()
        .flat_map(|c| {
            let mut permissions = vec![Permission {
                verb: c.kind.verb(),
                group: crate::calico::policy::API_GROUP,
                resource: c.object_kind.plural(),
                namespace: c.namespace.clone(),
                name: None,
            }];
            permissions.extend(tier_permissions(c));
            permissions
        })
        .collect();
    if ctx.dry_run == DryRun::None {
        for verb in ["list", "get", "create", "patch", "delete"] {
            needed.push(Permission {
                verb,
                group: "",
                resource: "configmaps",
                namespace: Some(ctx.history_namespace.clone()),
                name: None,
            });
        }
    }
    needed
}

/// Calico's tiered RBAC, which calico-apiserver checks on top of the resource's own verbs: `get`
/// on the policy's tier, and the verb on `tier.<plural>` for the whole tier (`<tier>.*`). The
/// stages write to the `default` tier. SelfSubjectAccessReview answers for these pseudo-resources
/// even though `kubectl auth can-i` warns that the server does not serve them.
fn tier_permissions(change: &Change) -> Vec<cluster::access::Permission> {
    use cluster::access::Permission;
    const TIER: &str = "default";
    let Some(tier_scoped) = change.object_kind.tier_scoped_plural() else {
        return Vec::new();
    };
    vec![
        Permission {
            verb: "get",
            group: crate::calico::policy::API_GROUP,
            resource: "tiers",
            namespace: None,
            name: Some(TIER.to_string()),
        },
        Permission {
            verb: change.kind.verb(),
            group: crate::calico::policy::API_GROUP,
            resource: tier_scoped,
            namespace: change.namespace.clone(),
            name: Some(format!("{TIER}.*")),
        },
    ]
}

/// What a write sequence achieved.
pub struct Applied {
    pub results: Vec<Option<serde_json::Value>>,
    pub revision: Option<u64>,
}

/// Write `changes` through the single write path, journaled: the revision is written pending
/// before the first change, each write is recorded as it lands, and the revision is completed
/// (or marked failed) at the end. Dry runs write no history.
pub async fn apply_changes(
    ctx: &Context,
    cluster: &Cluster,
    changes: &[Change],
    undoes: Vec<u64>,
) -> Result<Applied> {
    let writer = cluster::write::Writer::new(cluster, ctx.dry_run);
    let progress = Progress::start("writing");
    let count = changes.len();
    if ctx.dry_run != DryRun::Client {
        cluster::access::require(cluster, needed_permissions(ctx, changes)).await?;
    }
    if ctx.dry_run != DryRun::None {
        let mut results = Vec::new();
        for (index, change) in changes.iter().enumerate() {
            progress.set_detail(&format!("{index}/{count} changes"));
            results.push(writer.apply(change).await?);
        }
        return Ok(Applied {
            results,
            revision: None,
        });
    }
    crate::interrupt::watch();
    let store = ctx.store(cluster);
    let mut recorder = store.begin(&ctx.command_line, changes, undoes).await?;
    let mut results = Vec::new();
    let abort_after = abort_after_writes();
    for (index, change) in changes.iter().enumerate() {
        progress.set_detail(&format!("{index}/{count} changes"));
        if crate::interrupt::requested() {
            let message = format!("interrupted after {index} of {} change(s)", changes.len());
            recorder
                .finish(RevisionState::Failed, Some(message.clone()))
                .await?;
            return Err(Error::Cancelled(format!(
                "{message}; recorded as revision {} (undo: kubectl calico-harden rollback)",
                recorder.revision.revision
            )));
        }
        match writer.apply(change).await {
            Ok(result) => {
                if abort_after == Some(index + 1) {
                    // Dies between a write and its record, the worst moment for the journal.
                    std::process::abort();
                }
                if let Err(err) = recorder.record(index, result.clone()).await {
                    let message = format!(
                        "{} was written but could not be recorded: {err}",
                        change.display_name()
                    );
                    let _ = recorder.finish(RevisionState::Failed, Some(message)).await;
                    return Err(err.with_hint(&format!(
                        "revision {} may miss this object; `kubectl calico-harden rollback` still finds it by comparing the live object",
                        recorder.revision.revision
                    )));
                }
                results.push(result);
            }
            Err(err) => {
                let message = format!("{} failed: {err}", change.display_name());
                let _ = recorder.finish(RevisionState::Failed, Some(message)).await;
                let undo_hint = if index > 0 {
                    format!(
                        "{index} change(s) before it were made and recorded as revision {}; undo them with `kubectl calico-harden rollback`",
                        recorder.revision.revision
                    )
                } else {
                    "nothing was changed".to_string()
                };
                return Err(err.with_hint(&undo_hint));
            }
        }
    }
    recorder.finish(RevisionState::Complete, None).await?;
    Ok(Applied {
        results,
        revision: Some(recorder.revision.revision),
    })
}

/// The closing line of a command that wrote (or would have written).
pub fn report_applied(ctx: &Context, changes: &[Change], applied: &Applied) {
    let printer = &ctx.printer;
    let count = changes.len();
    match (ctx.dry_run, applied.revision) {
        (DryRun::Client, _) => printer.say(&format!(
            "dry run (client): {count} change(s) shown, nothing was sent to the cluster"
        )),
        (DryRun::Server, _) => printer.say(&format!(
            "dry run (server): the API server accepted {count} change(s); nothing was persisted (calico-apiserver does not run Calico's own validation on dry runs: the real write may still be refused)"
        )),
        (DryRun::None, Some(revision)) => printer.say_tone(
            Tone::Good,
            &format!("applied {count} change(s), recorded as revision {revision} (undo: kubectl calico-harden rollback)"),
        ),
        (DryRun::None, None) => {}
    }
    if printer.output.is_some() {
        let objects: Vec<&serde_json::Value> = applied.results.iter().flatten().collect();
        printer.structured(&objects);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context_answering(answers: &[bool]) -> Context {
        let mut ctx = Context::from_args(&GlobalArgs {
            request_timeout: "0".into(),
            history_namespace: "kube-system".into(),
            ..GlobalArgs::default()
        })
        .unwrap();
        ctx.prompter = Box::new(prompt::Scripted::new(answers));
        ctx
    }

    fn adoption() -> Change {
        Change {
            kind: ChangeKind::Adopt,
            stage: StageId::Localhost,
            object_kind: crate::calico::policy::CalicoKind::GlobalNetworkPolicy,
            namespace: None,
            name: "allow-containers-access-to-localhost".into(),
            before: None,
            body: None,
            after: None,
        }
    }

    #[test]
    fn the_operators_answer_decides_and_running_out_of_answers_cancels() {
        let ctx = context_answering(&[true, false]);
        assert!(confirm_changes(&ctx, &[adoption()], "stage localhost").unwrap());
        assert!(!confirm_changes(&ctx, &[adoption()], "stage localhost").unwrap());
        let err = confirm_changes(&ctx, &[adoption()], "stage localhost").unwrap_err();
        assert_eq!(err.exit_status(), ExitStatus::Cancelled);
    }

    #[test]
    fn durations_follow_kubectl() {
        assert_eq!(parse_duration("0", "x").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("30s", "x").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m", "x").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("500ms", "x").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("45", "x").unwrap(), Duration::from_secs(45));
        for bad in ["", "abc", "5x", "-1s", "1e400"] {
            assert!(parse_duration(bad, "x").is_err(), "{bad}");
        }
    }
}
