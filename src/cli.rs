//! The whole command surface. Doc comments here are the `--help` text users read, so they say what
//! a command changes and where it deliberately differs from the tutorial it automates.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

// The write path owns what --dry-run means and the printer owns what -o means; the command line
// only names them.
pub use crate::cluster::write::DryRun;
use crate::stages::StageId;
pub use crate::ui::printer::OutputFormat;

/// Harden a Calico cluster to default deny on every host and workload, one reversible step at a time.
///
/// Each stage command detects the facts of the live cluster (control-plane nodes, API server
/// port, where Calico's components run), renders the stage's Calico policies, shows a diff,
/// asks, applies and records what it did so that `rollback` can undo it.
///
/// Typical session: `plan`, then `up` (every allow stage, one confirmation each), `enable-hep`,
/// `check --after lockdown`, and finally `lockdown`.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl calico-harden",
    bin_name = "kubectl calico-harden",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Exit codes: 0 ok, 1 failed or refused, 2 bad usage, 130 cancelled at a prompt."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Connection and output flags, with kubectl's meaning.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, a list like kubectl's, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// The kubeconfig cluster to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,

    /// The kubeconfig user to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,

    /// Namespace of a namespaced stage policy, overriding the detected one (only for
    /// calico-apiserver-to-kapi and controllers-to-calico-apiserver).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// User to impersonate for the operation.
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,

    /// Group to impersonate for the operation (repeatable).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_group: Vec<String>,

    /// How long to wait for a single server request, e.g. 30s, 1m, 500ms (0 = no limit).
    #[arg(long, global = true, value_name = "DURATION", default_value = "0")]
    pub request_timeout: String,

    /// Answer yes to every confirmation (needed when stdin or stderr is not a terminal).
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,

    /// none: apply; client: show the changes and send nothing; server: send every write as a
    /// dry run (permissions, admission and schema are checked, nothing is persisted; Calico's own
    /// validation is not: calico-apiserver skips it on dry runs). Bare --dry-run means client.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "none",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "client",
        value_name = "MODE"
    )]
    pub dry_run: DryRun,

    /// Output format for data on stdout; the default is a human table or diff.
    #[arg(short = 'o', long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,

    /// Disable colours (also when NO_COLOR is set or stdout is not a terminal).
    #[arg(long, global = true)]
    pub no_color: bool,

    /// More logging on stderr: -v info, -vv debug, -vvv trace (secrets are never logged).
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Namespace that holds the change history (one ConfigMap per revision).
    #[arg(
        long,
        global = true,
        value_name = "NAMESPACE",
        default_value = "kube-system"
    )]
    pub history_namespace: String,

    /// How many revisions of history to keep.
    #[arg(long, global = true, value_name = "N", default_value_t = 20)]
    pub history_max: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stage 00: allow and log everything until lockdown (the safety net).
    ///
    /// GNPs final-allow-everything (order 100001) and log-everything (order 100000), so later
    /// stages cannot cut anything off until `lockdown` removes them.
    #[command(visible_alias = "allow-everything")]
    SafetyNet(StageReportArgs),

    /// Stage 01: hosts may reach 127.0.0.0/8.
    ///
    /// GNP allow-containers-access-to-localhost.
    #[command(visible_alias = "container-to-localhost")]
    Localhost(StageReportArgs),

    /// Stage 02: workloads in app namespaces may only reach cluster DNS.
    ///
    /// GNP deny-app-policy.
    /// Differs from the tutorial: DNS is allowed over UDP and TCP (large answers fall back to TCP),
    /// and platform namespaces are left alone by default because the tutorial's selector also
    /// isolates CoreDNS, which then cannot reach upstream resolvers. Pass
    /// `--exclude-namespaces ''` for the tutorial's exact selector.
    #[command(visible_alias = "deny-app-policy")]
    IsolateApps(IsolateAppsArgs),

    /// Stage 03: calico-apiserver pods may reach the Kubernetes API server.
    ///
    /// NP calico-apiserver-to-kapi in the calico-apiserver's namespace, on the detected API
    /// server port.
    #[command(visible_alias = "calico-api-to-kapi")]
    CalicoApiserverToKapi(StageReportArgs),

    /// Stage 04: calico-kube-controllers may reach calico-apiserver.
    ///
    /// NP calico-kube-controllers-to-apiserver in kube-controllers' namespace. Differs from the
    /// tutorial where calico-apiserver runs in another namespace: the rule then names it, because
    /// a namespaced policy's rule selector only sees its own namespace.
    #[command(visible_alias = "calico-kube-controller-to-api")]
    ControllersToCalicoApiserver(StageReportArgs),

    /// Stage 05: hosts may reach calico-apiserver on TCP 5443.
    ///
    /// GNP calico-components-to-apiserver.
    #[command(visible_alias = "calico-components-to-apiserver")]
    HostsToCalicoApiserver(StageReportArgs),

    /// Stage 06: hosts may reach the API server on the control-plane nodes.
    ///
    /// GNP worker-nodes-to-kapi, for the detected control-plane nodes and API server port.
    #[command(visible_alias = "worker-nodes-to-kapi")]
    NodesToKapi(StageReportArgs),

    /// Stage 07: calico-node, calico-apiserver and typha pods may reach the API server.
    ///
    /// GNP srcnated-to-kapi, for the detected control-plane nodes and API server port.
    #[command(visible_alias = "srcnated-to-kapi")]
    SrcnatToKapi(StageReportArgs),

    /// Stage 08: hosts may reach calico-typha on TCP 5473.
    ///
    /// GNP worker-nodes-to-typha, for the nodes where typha runs.
    #[command(visible_alias = "worker-nodes-to-typha")]
    NodesToTypha(StageReportArgs),

    /// Stage 09: the API server may reach kubelets on TCP 10250 (not in the tutorial).
    ///
    /// GNP kapi-to-kubelet, so that `kubectl logs/exec/port-forward` keep working after
    /// lockdown: TCP 10250 is not a Felix failsafe port.
    #[command(visible_alias = "kapi-to-kubelet")]
    Kubelet(StageReportArgs),

    /// Stage 10: calico-kube-controllers may reach the API server (not in the tutorial).
    ///
    /// NetworkPolicy calico-kube-controllers-to-kapi: the tutorial's policy for the controllers
    /// only allows the calico-apiserver, which cuts them off from the API server at lockdown.
    #[command(visible_alias = "calico-kube-controllers-to-kapi")]
    ControllersToKapi(StageReportArgs),

    /// Every endpoint may reach a private registry.
    ///
    /// GNP private-registry-policy, for the given addresses and ports (default 5000).
    #[command(visible_alias = "private-registry")]
    Registry(RegistryArgs),

    /// Turn on Calico's automatic host endpoints for every node.
    ///
    /// Merge patch of KubeControllersConfiguration `default`
    /// (spec.controllers.node.hostEndpoint.autoCreate), sent through the API so no shell quoting
    /// is involved.
    EnableHep(EnableHepArgs),

    /// Default deny: remove the safety net after preflight checks.
    ///
    /// Deletes the safety net once preflight checks prove nothing critical breaks, then verifies
    /// that NEW connections to the API server still work and asks for confirmation; without it
    /// the safety net is restored automatically (commit-confirmed).
    #[command(visible_alias = "default-deny")]
    Lockdown(LockdownCommandArgs),

    /// Turn staged policies (`up --staged`, `lockdown --staged`) into enforced ones.
    ///
    /// For each staged policy this tool wrote for STAGE (or for every stage with --all): the
    /// enforced policy of the same name gets the staged spec, then the staged copy is deleted;
    /// shown as a diff, confirmed and recorded as one revision, so `rollback` undoes it. Staged
    /// policies were previewed for workloads only: Felix (Calico v3.31) evaluates none for host
    /// endpoints, so check host paths with `check` first. The staged lockdown (the safety net's
    /// staged deletion) is promoted by `lockdown` itself, with its preflight and commit-confirmed
    /// revert: `promote lockdown` and `promote --all` run it last.
    Promote(PromoteArgs),

    /// The soak gate: real flows that only the safety net allows, and those a staged policy
    /// would deny.
    ///
    /// Read from Calico's flow logs (Goldmane, Calico 3.30+) through the API server's service
    /// proxy to Whisker (Service calico-system/whisker, port 8081), aggregated by source,
    /// destination, protocol and port. `lockdown` refuses while such flows would be cut. Felix
    /// logs no host-to-host flow (Calico v3.31): host paths are `check`'s to judge. Nothing is
    /// written; exit 1 with "no flow source" when there are no flow logs to read.
    Observe(ObserveArgs),

    /// Every stage's state, the detected facts, and the next step.
    ///
    /// States: applied, applied (by hand), missing, partial, drifted, not applicable.
    #[command(visible_alias = "status")]
    Plan,

    /// Print the stage manifests for `kubectl apply -f -`.
    ///
    /// A YAML stream, or a JSON List with -o json.
    Render(RenderArgs),

    /// Run the allow stages in order, one confirmation each. Never locks down unless --lockdown.
    Up(UpArgs),

    /// Which critical flows survive now and after a stage or lockdown.
    ///
    /// API server, kubelet, DNS and Calico's own paths, with the deciding policy and rule. Exit
    /// code 1 when one would be lost.
    Check(CheckArgs),

    /// Why Calico allows or denies one flow, policy by policy.
    Explain(ExplainArgs),

    /// The revisions of changes made by this tool, stored in the cluster.
    History,

    /// Undo the newest revision, everything after revision N, or --all.
    Rollback(RollbackArgs),

    /// Print the least-privilege ClusterRole this tool needs.
    Rbac,

    /// Print a shell completion script, or install kubectl's completion hook.
    Completion(CompletionArgs),
}

/// What every policy stage command takes besides its own flags.
#[derive(Debug, Args, Clone, Default)]
pub struct StageReportArgs {
    /// Evaluate the critical flows the stage changes against every policy in the cluster and
    /// every pod the stage's policies can select (as `check --after STAGE` does). Without it
    /// the stage reads only its own objects, and evaluates the flows only when its policies
    /// select no endpoint yet (then none can change).
    #[arg(long)]
    pub flows: bool,
}

#[derive(Debug, Args, Clone)]
pub struct IsolateAppsArgs {
    /// Namespaces to leave alone, comma separated; '' isolates every namespace as the tutorial does.
    #[arg(
        long,
        value_name = "LIST",
        default_value = crate::stages::DEFAULT_EXCLUDED_NAMESPACES
    )]
    pub exclude_namespaces: String,

    #[command(flatten)]
    pub report: StageReportArgs,
}

#[derive(Debug, Args, Clone)]
pub struct RegistryArgs {
    /// The registry's address: IPv4 or IPv6, with or without a prefix (default /32 or /128).
    #[arg(long, value_name = "IP[/PREFIX]", required = true)]
    pub ip: Vec<String>,

    /// TCP port of the registry (repeatable; default 5000).
    #[arg(long, value_name = "N")]
    pub port: Vec<String>,

    #[command(flatten)]
    pub report: StageReportArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct EnableHepArgs {
    /// Set autoCreate to Disabled instead. Calico then DELETES the automatic host endpoints.
    #[arg(long)]
    pub disable: bool,

    /// After patching, wait with a progress bar until the host endpoints are exactly the ones
    /// calico-kube-controllers keeps for this configuration (as predicted).
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits, e.g. 2m.
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    pub timeout: String,

    /// Enable even when calico-kube-controllers is newer than calico-node (see the refusal).
    #[arg(long)]
    pub force: bool,

    /// Print the equivalent kubectl command for this shell and change nothing.
    #[arg(long, value_enum, value_name = "SHELL")]
    pub print_command: Option<PrintShell>,

    /// A host endpoint template (Calico 3.30+): one endpoint per selected node named
    /// <node>-NAME-auto-hep, for the node IPs inside its --template-cidr. Repeatable; the
    /// templates given replace the configured ones. An empty selector selects every node.
    #[arg(
        long = "template",
        value_name = "NAME[:NODE_SELECTOR]",
        conflicts_with = "disable",
        help_heading = "Templates"
    )]
    pub templates: Vec<String>,

    /// The CIDRs a template matches node IPs against, comma separated (repeatable).
    #[arg(
        long = "template-cidr",
        value_name = "NAME:CIDR[,CIDR...]",
        requires = "templates",
        help_heading = "Templates"
    )]
    pub template_cidrs: Vec<String>,

    /// A label a template adds to its endpoints (repeatable).
    #[arg(
        long = "template-label",
        value_name = "NAME:KEY=VALUE",
        requires = "templates",
        help_heading = "Templates"
    )]
    pub template_labels: Vec<String>,

    /// A regular expression (Go RE2 syntax, unanchored) naming the node interfaces a template
    /// makes one endpoint each for (Calico 3.31+).
    #[arg(
        long = "interface-pattern",
        value_name = "NAME:REGEX",
        requires = "templates",
        help_heading = "Templates"
    )]
    pub interface_patterns: Vec<String>,

    /// Remove every configured template.
    #[arg(
        long,
        conflicts_with_all = ["templates", "disable"],
        help_heading = "Templates"
    )]
    pub no_templates: bool,

    /// Do not create the default <node>-auto-hep endpoints (createDefaultHostEndpoint:
    /// Disabled); nodes then get only their templates' endpoints.
    #[arg(long, conflicts_with = "disable", help_heading = "Templates")]
    pub no_default_host_endpoint: bool,

    /// Create the default <node>-auto-hep endpoints again (createDefaultHostEndpoint: Enabled).
    #[arg(
        long,
        conflicts_with_all = ["no_default_host_endpoint", "disable"],
        help_heading = "Templates"
    )]
    pub default_host_endpoint: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrintShell {
    Bash,
    Powershell,
}

#[derive(Debug, Args, Clone)]
pub struct LockdownArgs {
    /// Lock down even when preflight checks fail. The failing checks are still printed.
    #[arg(long)]
    pub force: bool,

    /// How long to wait for the operator to confirm that access still works before the safety
    /// net is restored automatically, e.g. 60s.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub confirm_timeout: String,
}

#[derive(Debug, Args, Clone)]
pub struct LockdownCommandArgs {
    #[command(flatten)]
    pub lockdown: LockdownArgs,

    /// Canary: default deny only on the host endpoints of the nodes this label selector
    /// selects (kubectl syntax, e.g. kubernetes.io/hostname=node1 or
    /// node-role.kubernetes.io/canary). The safety net stays for every workload and every
    /// other host; a later `lockdown` without --nodes completes it.
    #[arg(long, value_name = "SELECTOR")]
    pub nodes: Option<String>,

    /// Write the safety net's deletion as staged policies (stagedAction: Delete, Calico 3.30+)
    /// instead of deleting it: nothing is enforced. It previews nothing in flow logs: Felix
    /// (Calico v3.31) never receives staged deletions and evaluates no staged policy for host
    /// endpoints. It records the step for review; `promote lockdown` (or `lockdown`) carries it
    /// out. What lockdown would cut: `check --after lockdown`, and a canary with --nodes.
    #[arg(long, conflicts_with = "nodes")]
    pub staged: bool,
}

#[derive(Debug, Args, Clone)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["stage", "all"])))]
pub struct PromoteArgs {
    /// The stage whose staged policies to enforce.
    #[arg(value_enum, value_name = "STAGE")]
    pub stage: Option<StageId>,

    /// Promote every staged stage, in order (the staged lockdown last, through `lockdown`).
    #[arg(long)]
    pub all: bool,

    /// With a staged lockdown: lock down even when preflight checks fail.
    #[arg(long)]
    pub force: bool,

    /// With a staged lockdown: how long to wait for the operator's confirmation, e.g. 60s.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub confirm_timeout: String,
}

#[derive(Debug, Args, Clone)]
pub struct RenderArgs {
    /// Stages to render (default: every stage, in order).
    #[arg(value_enum, value_name = "STAGE")]
    pub stages: Vec<StageId>,

    /// Use the tutorial lab's facts instead of a cluster (overridable with the flags below).
    #[arg(long)]
    pub offline: bool,

    /// Control-plane node name (repeatable; offline only).
    #[arg(long, value_name = "NAME", requires = "offline")]
    pub control_plane_node: Vec<String>,

    /// API server port (offline only).
    #[arg(long, value_name = "PORT", requires = "offline")]
    pub apiserver_port: Option<String>,

    /// Namespace of the calico-apiserver pods (offline only).
    #[arg(long, value_name = "NAMESPACE", requires = "offline")]
    pub calico_apiserver_namespace: Option<String>,

    #[command(flatten)]
    pub stage_flags: StageFlags,
}

/// Flags that shape several stages at once (`render` and `up`).
#[derive(Debug, Args, Clone)]
pub struct StageFlags {
    /// Private registry address; the registry stage is included only when given.
    #[arg(long, value_name = "IP[/PREFIX]")]
    pub registry_ip: Vec<String>,

    /// Private registry port (repeatable; default 5000).
    #[arg(long, value_name = "N")]
    pub registry_port: Vec<String>,

    /// Namespaces isolate-apps leaves alone; '' for the tutorial's exact selector.
    #[arg(
        long,
        value_name = "LIST",
        default_value = crate::stages::DEFAULT_EXCLUDED_NAMESPACES
    )]
    pub exclude_namespaces: String,
}

#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    /// Stop after this stage.
    #[arg(long, value_enum, value_name = "STAGE")]
    pub through: Option<StageId>,

    /// Also enable host endpoints and lock down at the end.
    #[arg(long)]
    pub lockdown: bool,

    /// Write the stages as staged policies (Calico 3.30+: StagedGlobalNetworkPolicy,
    /// StagedNetworkPolicy, same names), evaluated and reported in flow logs but never
    /// enforced; `promote` enforces them. Felix (Calico v3.31) evaluates staged policies for
    /// workloads only, never for host endpoints: the host paths are previewed by `check`.
    #[arg(long, conflicts_with_all = ["lockdown", "force"])]
    pub staged: bool,

    #[command(flatten)]
    pub stage_flags: StageFlags,

    /// With --lockdown: lock down even when preflight checks fail.
    #[arg(long, requires = "lockdown")]
    pub force: bool,

    /// With --lockdown: how long to wait for the operator's confirmation, e.g. 60s.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub confirm_timeout: String,
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// Evaluate the cluster as it would be after this stage (or `lockdown`) is applied.
    #[arg(long, value_enum, value_name = "STAGE")]
    pub after: Option<StageId>,
}

#[derive(Debug, Args, Clone)]
pub struct ObserveArgs {
    /// How far back to read, e.g. 15m or 1h (Goldmane keeps about an hour).
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub since: String,
}

#[derive(Debug, Args, Clone)]
pub struct ExplainArgs {
    /// Source: a node name, a pod as NAMESPACE/NAME, or an IP address.
    #[arg(value_name = "FROM")]
    pub from: String,

    /// Destination: a node name, a pod as NAMESPACE/NAME, or an IP address.
    #[arg(value_name = "TO")]
    pub to: String,

    /// Protocol and port, e.g. tcp/6443 or udp/53.
    #[arg(value_name = "PROTO/PORT")]
    pub proto_port: String,

    /// Evaluate the cluster as it would be after this stage (or `lockdown`) is applied.
    #[arg(long, value_enum, value_name = "STAGE")]
    pub after: Option<StageId>,
}

#[derive(Debug, Args, Clone)]
pub struct RollbackArgs {
    /// Return to the state right after this revision (default: undo the newest revision).
    #[arg(value_name = "REVISION", conflicts_with_all = ["all", "to"])]
    pub revision: Option<u64>,

    /// The same as REVISION: return to the state right after this revision.
    #[arg(long, value_name = "REVISION", conflicts_with = "all")]
    pub to: Option<u64>,

    /// Undo every revision: back to the state before this tool's first change.
    #[arg(long)]
    pub all: bool,

    /// Undo objects that someone changed after the tool wrote them.
    #[arg(long)]
    pub force: bool,
}

impl RollbackArgs {
    /// The revision to return to, given as REVISION or as --to.
    pub fn target_revision(&self) -> Option<u64> {
        self.revision.or(self.to)
    }
}

#[derive(Debug, Args, Clone)]
pub struct CompletionArgs {
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: CompletionShell,

    /// With `kubectl`: create the `kubectl_complete-calico_harden` link in DIR (default: next to
    /// this binary), so that kubectl's own completion completes this plugin.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub install: Option<Option<PathBuf>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
    /// kubectl's plugin completion hook (kubectl_complete-calico_harden).
    Kubectl,
}
