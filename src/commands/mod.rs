//! One file per subcommand: each turns its arguments into options and calls the shared flow.
//! [`run`] is the testable entry point: it returns an exit status and never exits itself.

mod check;
mod completion;
mod enable_hep;
mod explain;
mod history;
mod lockdown;
mod observe;
mod observe_flows;
mod plan;
mod preflight;
mod promote;
mod rbac;
mod render;
mod rollback;
mod stage;
mod staged;
mod transaction;
mod up;

use std::time::Duration;

use crate::cli::{Cli, Command, DryRun, GlobalArgs};
use crate::cluster::{self, Cluster, ConnectOptions};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::journal::store::Store;
use crate::stages::StageId;
use crate::ui::printer::Tone;
use crate::ui::{Printer, Prompter, prompt};

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
    if let Some((stage, args)) = policy_stage(&cli.command)? {
        return stage::run(&ctx, stage, args).await;
    }
    match cli.command {
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
        Command::Promote(args) => promote::run(&ctx, &args).await,
        Command::Observe(args) => {
            observe_flows::run(
                &ctx,
                &observe_flows::ObserveOptions::from_args(&args.since)?,
            )
            .await
        }
        Command::Completion(_)
        | Command::Rbac
        | Command::SafetyNet(_)
        | Command::Localhost(_)
        | Command::IsolateApps(_)
        | Command::CalicoApiserverToKapi(_)
        | Command::ControllersToCalicoApiserver(_)
        | Command::HostsToCalicoApiserver(_)
        | Command::NodesToKapi(_)
        | Command::SrcnatToKapi(_)
        | Command::NodesToTypha(_)
        | Command::Kubelet(_)
        | Command::ControllersToKapi(_)
        | Command::Registry(_) => unreachable!("handled above"),
    }
}

/// The policy stage a command runs, with its flags validated; None for the other commands.
fn policy_stage(command: &Command) -> Result<Option<(StageId, stage::StageArgs)>> {
    let plain = |stage, report: &crate::cli::StageReportArgs| {
        Ok(Some((
            stage,
            stage::StageArgs::default().with_report(report),
        )))
    };
    match command {
        Command::SafetyNet(report) => plain(StageId::SafetyNet, report),
        Command::Localhost(report) => plain(StageId::Localhost, report),
        Command::IsolateApps(args) => Ok(Some((
            StageId::IsolateApps,
            stage::StageArgs::isolate(&args.exclude_namespaces)?.with_report(&args.report),
        ))),
        Command::CalicoApiserverToKapi(report) => plain(StageId::CalicoApiserverToKapi, report),
        Command::ControllersToCalicoApiserver(report) => {
            plain(StageId::ControllersToCalicoApiserver, report)
        }
        Command::HostsToCalicoApiserver(report) => plain(StageId::HostsToCalicoApiserver, report),
        Command::NodesToKapi(report) => plain(StageId::NodesToKapi, report),
        Command::SrcnatToKapi(report) => plain(StageId::SrcnatToKapi, report),
        Command::NodesToTypha(report) => plain(StageId::NodesToTypha, report),
        Command::Kubelet(report) => plain(StageId::Kubelet, report),
        Command::ControllersToKapi(report) => plain(StageId::ControllersToKapi, report),
        Command::Registry(args) => Ok(Some((
            StageId::Registry,
            stage::StageArgs::registry(&args.ip, &args.port)?.with_report(&args.report),
        ))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
