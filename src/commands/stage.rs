//! The flow every policy stage shares: detect, render, diff, confirm, apply, report.
//!
//! A stage reads only what it plans from: the facts without any policy and with only the nodes
//! its policies name (`Observe::for_stages`), then its own objects by name ([`named_objects`]).
//! Its flow-change report needs more only when a flow can change: [`reach`] tells from the
//! host endpoints, the system pods and one-item pod LISTs whether its policies select anything;
//! when they select nothing, no flow changes. Otherwise the exact report (every policy, and the
//! pods [`pods_for_flow_report`] names) is read with `--flows`; it is the one a read of every
//! pod and policy gives.

use std::collections::HashMap;

use crate::calico::policy::CalicoKind;
use crate::cluster::Cluster;
use crate::cluster::inventory::{self, LiveState, ObjectName, Observe, PodQuery, PodScope};
use crate::engine::build;
use crate::engine::eval::{Engine, Failsafe, Tunnels};
use crate::engine::model::Network;
use crate::engine::policy::{CompiledPolicy, PolicyKind, compile_object};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::facts::ClusterFacts;
use crate::live::label_selectors_for;
use crate::plan::{Change, change_for};
use crate::stages::{self, DesiredObject, StageId, StageOptions, StageRender};
use crate::ui::printer::Tone;

use super::Context;
use super::observe::Observed;
use super::transaction::{Question, Transaction, report_applied};

/// Stage-specific flags, validated.
#[derive(Debug, Default)]
pub struct StageArgs {
    pub excluded_namespaces: Option<Vec<String>>,
    pub registry: Option<stages::RegistryTarget>,
    /// `--flows`: evaluate the flow report against every policy.
    pub flows: bool,
}

impl StageArgs {
    pub fn with_report(self, report: &crate::cli::StageReportArgs) -> Self {
        Self {
            flows: report.flows,
            ..self
        }
    }

    pub fn isolate(list: &str) -> Result<Self> {
        Ok(Self {
            excluded_namespaces: Some(stages::parse_namespace_list(list)?),
            ..Self::default()
        })
    }

    pub fn registry(ips: &[String], ports: &[String]) -> Result<Self> {
        Ok(Self {
            registry: stages::parse_registry(ips, ports)?,
            ..Self::default()
        })
    }

    pub fn options(self, ctx: &Context) -> StageOptions {
        let defaults = StageOptions::with_defaults();
        StageOptions {
            excluded_namespaces: self
                .excluded_namespaces
                .unwrap_or(defaults.excluded_namespaces),
            registry: self.registry,
            namespace_override: ctx.namespace.clone(),
        }
    }
}

/// The changes a stage needs on this cluster, or why it does not apply.
pub enum StagePlan {
    NotApplicable(String),
    Changes(Vec<Change>),
}

pub fn plan_stage(
    stage: StageId,
    facts: &ClusterFacts,
    live: &LiveState,
    options: &StageOptions,
) -> StagePlan {
    match stages::render(stage, facts, options) {
        StageRender::NotApplicable(reason) => StagePlan::NotApplicable(reason),
        StageRender::Objects(objects) => StagePlan::Changes(
            objects
                .iter()
                .filter_map(|d| change_for(d, live.find(d.kind, d.namespace.as_deref(), &d.name)))
                .collect(),
        ),
    }
}

/// The objects `stages` write on this cluster, by name: what a stage command reads of the
/// policies to plan, instead of every policy in the cluster.
pub fn named_objects(
    stages: impl IntoIterator<Item = StageId>,
    facts: &ClusterFacts,
    options: &StageOptions,
) -> Vec<ObjectName> {
    stages
        .into_iter()
        .filter_map(|stage| match stages::render(stage, facts, options) {
            StageRender::Objects(objects) => Some(objects),
            StageRender::NotApplicable(_) => None,
        })
        .flatten()
        .map(|object| ObjectName {
            kind: object.kind,
            namespace: object.namespace,
            name: object.name,
        })
        .collect()
}

/// A GlobalNetworkPolicy whose namespaceSelector matches more namespaces than this is listed
/// across all namespaces at once.
const MAX_NAMESPACE_QUERIES: usize = 4;

/// The pods the flow-change report of `stage` needs besides the system pods in `live`, so that
/// it shows exactly the flows a report over every pod shows.
///
/// A critical flow's verdict after the stage differs from now only where a policy the stage
/// writes, or the live object it replaces, applies at one of the flow's hops: every other
/// policy, and every endpoint's labels, are the same in both states. Application pods appear in
/// one kind of critical flow, pod → cluster DNS, whose hops are the pod's egress, the host
/// endpoints forwarding it (applyOnForward policies) and the DNS pod's ingress. So when a
/// changed policy applies at a DNS pod's ingress or forwards at a host endpoint, any pod's DNS
/// flow may change and every pod is read; otherwise only the pods a changed policy can select
/// for egress, listed with label selectors derived from its Calico selector (a superset: the
/// engine then decides exactly).
pub fn pods_for_flow_report(
    stage: StageId,
    facts: &ClusterFacts,
    live: &LiveState,
    options: &StageOptions,
) -> PodScope {
    let changed = match stage_policies(stage, facts, live, options) {
        StagePolicies::None => return PodScope::System,
        StagePolicies::Unreadable => return PodScope::Every,
        StagePolicies::Changed(changed) => changed,
    };
    let engine = selection_engine(facts, live);
    let net = &engine.network;
    let (dns_key, dns_value) = &facts.dns_label;
    let mut scope = PodScope::System;
    for policy in changed.iter().filter(|p| applies_somewhere(p)) {
        let at_dns_ingress = policy.has_type(true)
            && net.endpoints.iter().any(|ep| {
                !ep.is_host()
                    && ep.labels.get(dns_key) == Some(dns_value)
                    && engine.selects(policy, ep)
            });
        let forwards = policy.apply_on_forward
            && net
                .endpoints
                .iter()
                .any(|ep| ep.is_host() && engine.selects(policy, ep));
        if at_dns_ingress || forwards {
            return PodScope::Every;
        }
        if policy.has_type(false) {
            for query in pod_queries(policy, net) {
                scope = scope.with(query);
            }
        }
    }
    scope
}

/// What the policies a stage writes, and the live ones they replace, can select: as much as
/// the observation without the other policies and the application pods can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// No host endpoint and no pod: a policy that selects nothing decides no flow, so no
    /// critical flow can change (the host stages before `enable-hep` made host endpoints).
    Nothing,
    /// Only pods these LISTs return, if there are any.
    PodsOf(Vec<PodQuery>),
    /// A host endpoint or a Calico or DNS pod.
    Endpoints,
}

/// See [`Reach`]. `live` holds the system pods and host endpoints, and of the policies only
/// the stage's own.
pub fn reach(
    stage: StageId,
    facts: &ClusterFacts,
    live: &LiveState,
    options: &StageOptions,
) -> Reach {
    let changed = match stage_policies(stage, facts, live, options) {
        StagePolicies::None => return Reach::Nothing,
        StagePolicies::Unreadable => return Reach::Endpoints,
        StagePolicies::Changed(changed) => changed,
    };
    let engine = selection_engine(facts, live);
    let selects_one = changed
        .iter()
        .filter(|p| applies_somewhere(p))
        .any(|policy| {
            engine
                .network
                .endpoints
                .iter()
                .any(|ep| engine.selects(policy, ep))
        });
    if selects_one {
        return Reach::Endpoints;
    }
    match pods_for_flow_report(stage, facts, live, options) {
        PodScope::System => Reach::Nothing,
        PodScope::Every => Reach::PodsOf(vec![PodQuery {
            namespace: None,
            label_selector: None,
        }]),
        PodScope::Also(queries) => Reach::PodsOf(queries),
    }
}

/// An engine without policies over `live`'s endpoints: only the endpoints and the namespace
/// labels matter for which policy selects what.
fn selection_engine(facts: &ClusterFacts, live: &LiveState) -> Engine {
    Engine::new(
        build::network(live),
        Vec::new(),
        &HashMap::new(),
        Failsafe::from_facts(&facts.failsafe),
        Tunnels {
            vxlan_port: None,
            ipip: false,
        },
        Vec::new(),
    )
}

/// Whether the engine evaluates `policy` at all: an invalid policy selects nothing, and preDNAT
/// and doNotTrack policy is not modelled.
fn applies_somewhere(policy: &CompiledPolicy) -> bool {
    policy.invalid.is_none() && !policy.pre_dnat && !policy.do_not_track
}

/// The policies a stage writes and the live ones they replace.
enum StagePolicies {
    /// The stage does not apply here.
    None,
    /// One cannot be compiled: the engine leaves it out, and whether that changes a flow is for
    /// the report over every pod to say.
    Unreadable,
    Changed(Vec<CompiledPolicy>),
}

fn stage_policies(
    stage: StageId,
    facts: &ClusterFacts,
    live: &LiveState,
    options: &StageOptions,
) -> StagePolicies {
    match stages::render(stage, facts, options) {
        StageRender::NotApplicable(_) => StagePolicies::None,
        StageRender::Objects(objects) => match changed_policies(&objects, live) {
            Some(changed) => StagePolicies::Changed(changed),
            None => StagePolicies::Unreadable,
        },
    }
}

/// The policies `objects` write and the live ones they replace, compiled; None when one cannot
/// be compiled: the engine leaves out a policy it cannot read, and whether that changes a flow
/// is for the report over every pod to say.
fn changed_policies(objects: &[DesiredObject], live: &LiveState) -> Option<Vec<CompiledPolicy>> {
    let mut changed = Vec::new();
    for object in objects {
        let kind = match object.kind {
            CalicoKind::GlobalNetworkPolicy => PolicyKind::Global,
            CalicoKind::NetworkPolicy => PolicyKind::Namespaced,
            _ => continue,
        };
        let replaced = live.find(object.kind, object.namespace.as_deref(), &object.name);
        for manifest in std::iter::once(&object.manifest).chain(replaced) {
            changed.push(compile_object(kind, manifest).ok()?);
        }
    }
    Some(changed)
}

/// LISTs that return at least every pod `policy` can select.
fn pod_queries(policy: &CompiledPolicy, net: &Network) -> Vec<PodQuery> {
    let namespaces: Vec<Option<String>> = match (policy.kind, &policy.namespace_selector) {
        (PolicyKind::Namespaced, _) => vec![policy.namespace.clone()],
        (PolicyKind::Global, None) => vec![None],
        (PolicyKind::Global, Some(selector)) => {
            let mut matching: Vec<Option<String>> = net
                .namespaces
                .iter()
                .filter(|(_, labels)| selector.matches(*labels))
                .map(|(name, _)| Some(name.clone()))
                .collect();
            matching.sort();
            if matching.len() > MAX_NAMESPACE_QUERIES {
                vec![None]
            } else {
                matching
            }
        }
    };
    let selectors = label_selectors_for(policy.selector.expr());
    namespaces
        .iter()
        .flat_map(|namespace| {
            selectors.iter().map(|label_selector| PodQuery {
                namespace: namespace.clone(),
                label_selector: label_selector.clone(),
            })
        })
        .collect()
}

/// `-n` only means something for the namespaced stages.
fn check_namespace_flag(ctx: &Context, stage: StageId) -> Result<()> {
    let namespaced = matches!(
        stage,
        StageId::CalicoApiserverToKapi
            | StageId::ControllersToCalicoApiserver
            | StageId::ControllersToKapi
    );
    if ctx.namespace.is_some() && !namespaced {
        return Err(Error::usage(format!(
            "-n/--namespace does not apply to {stage}: its policies are cluster-wide (GlobalNetworkPolicy)"
        )));
    }
    Ok(())
}

pub async fn run(ctx: &Context, stage: StageId, args: StageArgs) -> Result<ExitStatus> {
    check_namespace_flag(ctx, stage)?;
    let flows = args.flows;
    let options = args.options(ctx);
    let Observed {
        cluster,
        facts,
        mut live,
    } = ctx
        .observe(&match flows {
            // The report's critical flows start and end at every node.
            true => Observe::facts_without_policies(),
            false => Observe::for_stages(),
        })
        .await?;
    let report = observe_own_objects(&cluster, stage, &facts, &mut live, &options, flows).await?;
    let changes = match plan_stage(stage, &facts, &live, &options) {
        StagePlan::NotApplicable(reason) => {
            ctx.printer
                .say(&format!("{stage}: not applicable: {reason}; nothing to do"));
            return Ok(ExitStatus::Success);
        }
        StagePlan::Changes(changes) => changes,
    };
    if changes.is_empty() {
        ctx.printer.say_tone(
            Tone::Good,
            &format!("{stage}: already in place; nothing to do"),
        );
        say_next_step(ctx, stage);
        return Ok(ExitStatus::Success);
    }
    let mut transaction = Transaction::new(ctx, &cluster).recording_version_of(&facts);
    transaction.show(&changes);
    // The permission checks and the history's read go out with the report's reads.
    let (reported, checked) = tokio::join!(
        show_flow_report(ctx, &cluster, stage, &facts, &mut live, &options, report),
        transaction.check_ahead(&changes),
    );
    reported?;
    checked?;
    transaction.confirm(
        Question::Apply {
            changes: &changes,
            what: format!("stage {stage}"),
        },
        "cancelled: nothing was changed",
    )?;
    let applied = transaction.commit(&changes).await?;
    report_applied(ctx, &changes, &applied);
    say_next_step(ctx, stage);
    Ok(ExitStatus::Success)
}

/// How a stage reports the critical flows it changes.
enum FlowReport {
    /// `--flows`: against every policy and the pods the stage's policies can select.
    Exact,
    /// Only whether the stage's policies select anything; with the answer to whether pods
    /// these LISTs return exist, when it was asked before the live objects the stage replaces
    /// were known.
    Selection(Option<(Vec<PodQuery>, bool)>),
}

/// Read the stage's own objects by name and, at the same time (without `--flows`), ask whether
/// pods its policies can select exist: [`show_flow_report`] asks again only when the objects
/// they replace change the question.
async fn observe_own_objects(
    cluster: &Cluster,
    stage: StageId,
    facts: &ClusterFacts,
    live: &mut LiveState,
    options: &StageOptions,
    flows: bool,
) -> Result<FlowReport> {
    let named = named_objects([stage], facts, options);
    let queries = match reach(stage, facts, live, options) {
        Reach::PodsOf(queries) if !flows => Some(queries),
        _ => None,
    };
    let ask = async {
        match &queries {
            Some(queries) => inventory::any_pod(cluster, queries).await.map(Some),
            None => Ok(None),
        }
    };
    let (read, found) = tokio::join!(inventory::observe_named(cluster, live, &named), ask);
    read?;
    Ok(match flows {
        true => FlowReport::Exact,
        false => FlowReport::Selection(queries.zip(found?)),
    })
}

/// The critical flows the stage changes. With `--flows`, every policy and the pods the
/// stage's policies can select are read, and the report is exact. Without, the stage reads no
/// more than whether its policies select anything: when they select nothing, no flow changes;
/// otherwise the report is left to `--flows` or `check --after`, and said so.
async fn show_flow_report(
    ctx: &Context,
    cluster: &Cluster,
    stage: StageId,
    facts: &ClusterFacts,
    live: &mut LiveState,
    options: &StageOptions,
    report: FlowReport,
) -> Result<()> {
    let FlowReport::Selection(asked) = report else {
        let pods = pods_for_flow_report(stage, facts, live, options);
        inventory::observe_pods(cluster, live, &pods).await?;
        inventory::observe_policies(cluster, live).await?;
        let changed = super::check::flows_changed_by(live, facts, options, stage);
        super::check::show_flow_changes(ctx, stage, &changed);
        return Ok(());
    };
    let selected = match reach(stage, facts, live, options) {
        Reach::Nothing => None,
        Reach::PodsOf(queries) => match asked {
            Some((asked, found)) if asked == queries => found,
            _ => inventory::any_pod(cluster, &queries).await?,
        }
        .then_some("pods"),
        Reach::Endpoints => Some("host endpoints or Calico's or DNS's pods"),
    };
    match selected {
        None => ctx.printer.say_tone(
            Tone::Dim,
            &format!(
                "{stage}: no critical flow changes (its policies select no host endpoint or pod yet)"
            ),
        ),
        Some(what) => ctx.printer.say_tone(
            Tone::Dim,
            &format!(
                "{stage}: its policies select {what}; the critical flows it changes are evaluated with --flows (reads every policy) or `kubectl calico-harden check --after {stage}`"
            ),
        ),
    }
    Ok(())
}

fn say_next_step(ctx: &Context, stage: StageId) {
    if ctx.dry_run != crate::cli::DryRun::None {
        return;
    }
    let next = StageId::ALL
        .iter()
        .skip_while(|s| **s != stage)
        .nth(1)
        .filter(|s| **s != StageId::Registry);
    let text = match next {
        Some(next) => format!(
            "next: kubectl calico-harden {next}   (or `kubectl calico-harden plan` for the whole picture)"
        ),
        None => "next: kubectl calico-harden plan".to_string(),
    };
    ctx.printer.say_tone(Tone::Dim, &text);
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::facts::{self, is_system_pod};

    fn node(name: &str, ip: &str, control: bool) -> Value {
        let mut labels = json!({"kubernetes.io/os": "linux", "kubernetes.io/hostname": name});
        if control {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
        }
        json!({"metadata": {"name": name, "labels": labels},
               "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
    }

    fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "labels": labels},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "img:v3.31.0"}]},
               "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
    }

    fn namespace(name: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
    }

    fn hep(node: &Value) -> Value {
        let name = node["metadata"]["name"].as_str().unwrap();
        json!({"metadata": {"name": format!("{name}-auto-hep"), "labels": node["metadata"]["labels"]},
               "spec": {"node": name, "interfaceName": "*", "profiles": ["projectcalico-default-allow"],
                        "expectedIPs": [node["status"]["addresses"][0]["address"]]}})
    }

    /// The lab's pods: DNS, Calico's components (typha on the host network), and applications.
    fn lab_pods() -> Vec<Value> {
        let mut pods = vec![
            pod(
                "kube-system",
                "coredns-1",
                "node1",
                "192.168.1.2",
                json!({"k8s-app": "kube-dns"}),
            ),
            pod(
                "kube-system",
                "metrics",
                "node2",
                "192.168.2.9",
                json!({"app": "metrics"}),
            ),
            pod(
                "calico-system",
                "calico-kube-controllers-1",
                "control",
                "192.168.0.5",
                json!({"k8s-app": "calico-kube-controllers"}),
            ),
            pod(
                "calico-apiserver",
                "calico-apiserver-1",
                "node1",
                "192.168.1.5",
                json!({"k8s-app": "calico-apiserver"}),
            ),
            pod(
                "calico-system",
                "calico-typha-1",
                "node1",
                "10.0.0.2",
                json!({"k8s-app": "calico-typha"}),
            ),
            pod(
                "app-a",
                "web",
                "node1",
                "192.168.1.10",
                json!({"app": "web"}),
            ),
            pod("app-a", "db", "node2", "192.168.2.10", json!({"app": "db"})),
            pod(
                "app-b",
                "api",
                "node2",
                "192.168.2.11",
                json!({"app": "api"}),
            ),
            pod(
                "app-b",
                "odd",
                "node2",
                "192.168.2.12",
                json!({"app": "odd", "kubernetes.io/os": "linux"}),
            ),
        ];
        pods[4]["spec"]["hostNetwork"] = json!(true);
        pods
    }

    /// A lab-like cluster with application pods whose DNS flows a stage may or may not touch:
    /// a Kubernetes NetworkPolicy that denies app-a's egress (so the safety net changes its
    /// flows), and a pod that carries the label the host selector looks for.
    fn cluster(with_heps: bool) -> LiveState {
        let nodes = vec![
            node("control", "10.0.0.1", true),
            node("node1", "10.0.0.2", false),
            node("node2", "10.0.0.3", false),
        ];
        let mut live = LiveState::default();
        live.inventory.calico_api = Some(crate::facts::CalicoApiMode::AggregatedApiserver);
        live.inventory.apiserver_endpoint_slices = vec![
            json!({"endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"name": "https", "port": 6443}]}),
        ];
        let mut pods = lab_pods();
        pods.sort_by_key(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap()
            )
        });
        live.inventory.system_pods = pods.iter().filter(|p| is_system_pod(p)).cloned().collect();
        live.inventory.pods = pods.into();
        live.inventory.namespaces = [
            "kube-system",
            "calico-system",
            "calico-apiserver",
            "app-a",
            "app-b",
            "default",
        ]
        .into_iter()
        .map(namespace)
        .collect();
        if with_heps {
            live.inventory.host_endpoints = nodes.iter().map(hep).collect();
        }
        live.inventory.nodes = nodes;
        live.inventory.ip_pools = Some(vec![json!({"spec": {"vxlanMode": "Always"}})]);
        live.inventory.k8s_network_policies = vec![json!({
            "metadata": {"namespace": "app-a", "name": "no-egress"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]}
        })];
        live
    }

    fn options() -> StageOptions {
        StageOptions {
            registry: stages::parse_registry(&["10.5.0.1".into()], &[]).unwrap(),
            ..StageOptions::with_defaults()
        }
    }

    /// What the server answers for a Kubernetes label selector of the forms
    /// `label_selectors_for` writes: `k`, `!k`, `k=v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`.
    fn k8s_selector_matches(selector: &str, labels: &Value) -> bool {
        let mut requirements = Vec::new();
        let mut depth = 0;
        let mut current = String::new();
        for c in selector.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    requirements.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        requirements.push(current);
        let get = |key: &str| labels.get(key.trim()).and_then(Value::as_str);
        let set = |list: &str| -> Vec<String> {
            list.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|v| v.trim().to_string())
                .collect()
        };
        requirements.iter().all(|r| {
            if let Some((key, list)) = r.split_once(" notin ") {
                get(key).is_none_or(|v| !set(list).contains(&v.to_string()))
            } else if let Some((key, list)) = r.split_once(" in ") {
                get(key).is_some_and(|v| set(list).contains(&v.to_string()))
            } else if let Some((key, value)) = r.split_once("!=") {
                get(key) != Some(value)
            } else if let Some((key, value)) = r.split_once('=') {
                get(key) == Some(value)
            } else if let Some(key) = r.strip_prefix('!') {
                get(key).is_none()
            } else {
                get(r).is_some()
            }
        })
    }

    /// `live` as a stage command sees it: the system pods, plus what `scope`'s LISTs return.
    fn observed(live: &LiveState, scope: &PodScope) -> LiveState {
        let mut seen = live.clone();
        let returned = |pod: &Value, query: &PodQuery| {
            query
                .namespace
                .as_deref()
                .is_none_or(|ns| pod["metadata"]["namespace"] == ns)
                && query
                    .label_selector
                    .as_deref()
                    .is_none_or(|s| k8s_selector_matches(s, &pod["metadata"]["labels"]))
        };
        seen.inventory.pods = match scope {
            PodScope::Every => live.inventory.pods.clone(),
            PodScope::System => live.inventory.system_pods.clone(),
            PodScope::Also(queries) => live
                .inventory
                .pods
                .iter()
                .filter(|p| is_system_pod(p) || queries.iter().any(|q| returned(p, q)))
                .cloned()
                .collect(),
        };
        seen
    }

    fn report(live: &LiveState, facts: &ClusterFacts, stage: StageId) -> Value {
        serde_json::to_value(super::super::check::flows_changed_by(
            live,
            facts,
            &options(),
            stage,
        ))
        .unwrap()
    }

    #[test]
    fn the_flow_report_over_the_observed_pods_is_the_report_over_every_pod() {
        for with_heps in [false, true] {
            let live = cluster(with_heps);
            let facts = facts::detect(&live.inventory);
            for stage in StageId::policy_stages() {
                let mut system_only = live.clone();
                system_only.inventory.pods = live.inventory.system_pods.clone();
                let scope = pods_for_flow_report(stage, &facts, &system_only, &options());
                let full = report(&live, &facts, stage);
                // The cases that make this test bite: application pods' flows do change.
                let text = full.to_string();
                match stage {
                    StageId::SafetyNet => assert!(text.contains("app-a/web"), "{text}"),
                    StageId::Localhost => assert!(text.contains("app-b/odd"), "{text}"),
                    _ => {}
                }
                assert_eq!(
                    report(&observed(&live, &scope), &facts, stage),
                    full,
                    "{stage} (host endpoints: {with_heps}), observed {scope:?}"
                );
            }
        }
    }

    #[test]
    fn a_stage_that_reaches_no_endpoint_changes_no_flow() {
        for (with_heps, with_host_labelled_pod) in [(false, true), (false, false), (true, true)] {
            let mut live = cluster(with_heps);
            if !with_host_labelled_pod {
                live.inventory.pods = live
                    .inventory
                    .pods
                    .iter()
                    .filter(|p| p["metadata"]["name"] != "odd")
                    .cloned()
                    .collect();
            }
            let facts = facts::detect(&live.inventory);
            let mut unreached = Vec::new();
            for stage in StageId::policy_stages() {
                // What the stage command holds when it decides: no policy but its own (none is
                // live here) and the system pods.
                let mut before = live.clone();
                before.inventory.pods = live.inventory.system_pods.clone();
                before.inventory.k8s_network_policies.clear();
                let reached = match reach(stage, &facts, &before, &options()) {
                    Reach::Nothing => false,
                    // What `any_pod` asks the server: does a query return a pod.
                    Reach::PodsOf(queries) => {
                        let read = observed(&live, &PodScope::Also(queries));
                        read.inventory.pods.len() > read.inventory.system_pods.len()
                    }
                    Reach::Endpoints => true,
                };
                if !reached {
                    assert_eq!(report(&live, &facts, stage), json!([]), "{stage}");
                    unreached.push(stage);
                }
            }
            // The host stages' policies select nothing before host endpoints exist, unless a
            // pod carries the label their host selector looks for.
            let host_stages = vec![
                StageId::Localhost,
                StageId::HostsToCalicoApiserver,
                StageId::NodesToKapi,
                StageId::NodesToTypha,
                StageId::Kubelet,
            ];
            match (with_heps, with_host_labelled_pod) {
                (false, false) => assert_eq!(unreached, host_stages),
                _ => assert_eq!(unreached, Vec::<StageId>::new(), "{with_heps}"),
            }
        }
    }

    #[test]
    fn the_changed_flows_are_the_full_reports_flows_that_change() {
        for with_heps in [false, true] {
            let live = cluster(with_heps);
            let facts = facts::detect(&live.inventory);
            let stages = StageId::policy_stages().chain([StageId::EnableHep, StageId::Lockdown]);
            for stage in stages {
                let full = crate::engine::check(&live, &facts, &options(), Some(stage));
                let changed: Vec<_> = full.flows.into_iter().filter(|f| f.changed()).collect();
                assert_eq!(
                    report(&live, &facts, stage),
                    serde_json::to_value(changed).unwrap(),
                    "{stage} (host endpoints: {with_heps})"
                );
            }
        }
    }

    #[test]
    fn host_and_calico_stages_read_a_few_pods_and_workload_stages_read_every_pod() {
        let mut live = cluster(true);
        live.inventory.pods = live.inventory.system_pods.clone();
        let facts = facts::detect(&live.inventory);
        let scope = |stage| pods_for_flow_report(stage, &facts, &live, &options());
        let hosts = PodScope::Also(vec![PodQuery {
            namespace: None,
            label_selector: Some("kubernetes.io/os".into()),
        }]);
        for stage in [StageId::Localhost, StageId::NodesToKapi, StageId::Kubelet] {
            assert_eq!(scope(stage), hosts, "{stage}");
        }
        assert_eq!(
            scope(StageId::CalicoApiserverToKapi),
            PodScope::Also(vec![PodQuery {
                namespace: Some("calico-apiserver".into()),
                label_selector: Some("k8s-app=calico-apiserver".into()),
            }])
        );
        assert_eq!(
            scope(StageId::SrcnatToKapi),
            PodScope::Also(vec![PodQuery {
                namespace: None,
                label_selector: Some(
                    "k8s-app,k8s-app in (calico-apiserver,calico-node,calico-typha)".into()
                ),
            }])
        );
        // The safety net and the registry policy select every endpoint, DNS pods included.
        for stage in [StageId::SafetyNet, StageId::Registry] {
            assert_eq!(scope(stage), PodScope::Every, "{stage}");
        }
        // isolate-apps selects whole namespaces: the application ones, few enough to list one
        // by one; with kube-system no longer excluded it reaches the DNS pods, and so every pod.
        let in_namespace = |ns: &str| PodQuery {
            namespace: Some(ns.into()),
            label_selector: None,
        };
        assert_eq!(
            scope(StageId::IsolateApps),
            PodScope::Also(vec![
                in_namespace("app-a"),
                in_namespace("app-b"),
                in_namespace("default")
            ])
        );
        let tutorial_selector = StageOptions {
            excluded_namespaces: Vec::new(),
            ..options()
        };
        assert_eq!(
            pods_for_flow_report(StageId::IsolateApps, &facts, &live, &tutorial_selector),
            PodScope::Every
        );
    }

    #[test]
    fn the_live_object_a_stage_replaces_counts_too() {
        let mut live = cluster(true);
        live.inventory.pods = live.inventory.system_pods.clone();
        let facts = facts::detect(&live.inventory);
        // A hand-made localhost policy that selects every endpoint: applying the stage narrows
        // it, which can change any pod's flows.
        live.global_network_policies = vec![json!({
            "metadata": {"name": "allow-containers-access-to-localhost"},
            "spec": {"order": 1001, "selector": "all()", "types": ["Egress"],
                     "egress": [{"action": "Deny", "protocol": "UDP"}]}
        })];
        assert_eq!(
            pods_for_flow_report(StageId::Localhost, &facts, &live, &options()),
            PodScope::Every
        );
        // One that forwards at host endpoints reaches every pod's traffic between nodes.
        live.global_network_policies = vec![json!({
            "metadata": {"name": "allow-containers-access-to-localhost"},
            "spec": {"order": 1001, "selector": "has(kubernetes.io/os)", "applyOnForward": true,
                     "types": ["Ingress"], "ingress": [{"action": "Deny"}]}
        })];
        assert_eq!(
            pods_for_flow_report(StageId::Localhost, &facts, &live, &options()),
            PodScope::Every
        );
    }

    #[test]
    fn a_stage_that_does_not_apply_reads_no_more_pods() {
        let mut live = cluster(false);
        live.inventory.pods = live.inventory.system_pods.clone();
        let facts = facts::detect(&live.inventory);
        let no_registry = StageOptions::with_defaults();
        assert_eq!(
            pods_for_flow_report(StageId::Registry, &facts, &live, &no_registry),
            PodScope::System
        );
    }
}
