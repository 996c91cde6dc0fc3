//! One function per stage: facts and options in, desired objects out.

use std::collections::{BTreeMap, BTreeSet};

use crate::calico::policy::{Action, CalicoKind, PolicySpec, PolicyType, Protocol, Rule};
use crate::facts::{ClusterFacts, NodeRef};

use super::{DesiredObject, StageId, StageOptions, StageRender};

/// The tutorial's order for every allow policy.
const ALLOW_ORDER: u32 = 1001;
/// Host endpoints carry the node's labels; pods do not carry this one.
const HOST_SELECTOR: &str = "has(kubernetes.io/os)";
const KUBELET_PORT: u16 = 10250;
const DNS_PORT: u16 = 53;

pub fn render(stage: StageId, facts: &ClusterFacts, options: &StageOptions) -> StageRender {
    match stage {
        StageId::SafetyNet => safety_net(),
        StageId::Localhost => localhost(),
        StageId::IsolateApps => isolate_apps(facts, options),
        StageId::CalicoApiserverToKapi => calico_apiserver_to_kapi(facts, options),
        StageId::ControllersToCalicoApiserver => controllers_to_calico_apiserver(facts, options),
        StageId::HostsToCalicoApiserver => hosts_to_calico_apiserver(facts),
        StageId::NodesToKapi => nodes_to_kapi(facts),
        StageId::SrcnatToKapi => srcnat_to_kapi(facts),
        StageId::NodesToTypha => nodes_to_typha(facts),
        StageId::Kubelet => kubelet(facts),
        StageId::ControllersToKapi => controllers_to_kapi(facts, options),
        StageId::Registry => registry(options),
        StageId::EnableHep | StageId::Lockdown => StageRender::Objects(Vec::new()),
    }
}

fn gnp(stage: StageId, name: &str, spec: &PolicySpec) -> DesiredObject {
    DesiredObject::policy(stage, CalicoKind::GlobalNetworkPolicy, None, name, spec)
}

fn types(types: &[PolicyType]) -> Vec<PolicyType> {
    types.to_vec()
}

fn quoted_set<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = values.into_iter().map(|v| format!("\"{v}\"")).collect();
    format!("{{{}}}", items.join(","))
}

/// Selects the host endpoints of the given nodes the way the tutorial selects `control`.
fn hosts_selector(nodes: &[NodeRef]) -> String {
    match nodes {
        [one] => format!(
            "{HOST_SELECTOR} && kubernetes.io/hostname == \"{}\"",
            one.hostname
        ),
        many => format!(
            "{HOST_SELECTOR} && kubernetes.io/hostname in {}",
            quoted_set(many.iter().map(|n| n.hostname.as_str()))
        ),
    }
}

fn no_control_plane() -> StageRender {
    StageRender::NotApplicable(
        "no control-plane node was found (no node-role label, and no node address matches the `kubernetes` EndpointSlice)"
            .into(),
    )
}

fn safety_net() -> StageRender {
    StageRender::Objects(safety_net_objects(None))
}

/// The safety net selecting only what `selector` matches: `lockdown --nodes` narrows it so
/// that default deny reaches some host endpoints first (see [`super::canary`]).
pub fn narrowed_safety_net(selector: &str) -> Vec<DesiredObject> {
    safety_net_objects(Some(selector))
}

fn safety_net_objects(selector: Option<&str>) -> Vec<DesiredObject> {
    let mut allow = PolicySpec::order(100_001);
    allow.selector = selector.map(str::to_string);
    allow.types = types(&[PolicyType::Ingress, PolicyType::Egress]);
    allow.ingress = vec![Rule::allow()];
    allow.egress = vec![Rule::allow()];
    let mut log = PolicySpec::order(100_000);
    log.selector = selector.map(str::to_string);
    log.types = types(&[PolicyType::Ingress, PolicyType::Egress]);
    log.ingress = vec![Rule::new(Action::Log)];
    log.egress = vec![Rule::new(Action::Log)];
    vec![
        gnp(StageId::SafetyNet, "final-allow-everything", &allow),
        gnp(StageId::SafetyNet, "log-everything", &log),
    ]
}

fn localhost() -> StageRender {
    let mut spec = PolicySpec::order(ALLOW_ORDER);
    spec.selector = Some(HOST_SELECTOR.into());
    spec.types = types(&[PolicyType::Ingress, PolicyType::Egress]);
    spec.ingress = vec![Rule::allow().to_nets(["127.0.0.0/8".to_string()])];
    spec.egress = vec![Rule::allow().to_nets(["127.0.0.0/8".to_string()])];
    StageRender::Objects(vec![gnp(
        StageId::Localhost,
        "allow-containers-access-to-localhost",
        &spec,
    )])
}

fn isolate_apps(facts: &ClusterFacts, options: &StageOptions) -> StageRender {
    let mut namespace_selector = String::from("has(projectcalico.org/name)");
    if !options.excluded_namespaces.is_empty() {
        namespace_selector.push_str(&format!(
            " && projectcalico.org/name not in {}",
            quoted_set(options.excluded_namespaces.iter().map(String::as_str))
        ));
    }
    let (key, value) = &facts.dns_label;
    let dns = format!("{key} == \"{value}\"");
    let mut spec = PolicySpec::order(ALLOW_ORDER);
    spec.namespace_selector = Some(namespace_selector);
    spec.types = types(&[PolicyType::Ingress, PolicyType::Egress]);
    spec.egress = [Protocol::udp(), Protocol::tcp()]
        .into_iter()
        .map(|protocol| {
            Rule::allow()
                .protocol(protocol)
                .to_selector(dns.clone())
                .to_ports([53])
        })
        .collect();
    StageRender::Objects(vec![gnp(StageId::IsolateApps, "deny-app-policy", &spec)])
}

fn calico_apiserver_to_kapi(facts: &ClusterFacts, options: &StageOptions) -> StageRender {
    let Some(detected) = facts.calico_apiserver_namespace.as_deref() else {
        return no_calico_apiserver();
    };
    let namespace = options.namespace_override.as_deref().unwrap_or(detected);
    let mut spec = PolicySpec::order(ALLOW_ORDER);
    spec.selector = Some("k8s-app == \"calico-apiserver\"".into());
    spec.types = types(&[PolicyType::Egress]);
    spec.egress = vec![
        Rule::allow()
            .protocol(Protocol::tcp())
            .to_selector(HOST_SELECTOR)
            .to_namespace_selector("global()")
            .to_ports([facts.apiserver_port]),
    ];
    StageRender::Objects(vec![DesiredObject::policy(
        StageId::CalicoApiserverToKapi,
        CalicoKind::NetworkPolicy,
        Some(namespace),
        "calico-apiserver-to-kapi",
        &spec,
    )])
}

fn no_calico_apiserver() -> StageRender {
    StageRender::NotApplicable(
        "no calico-apiserver pods run in this cluster (Calico serves projectcalico.org/v3 without the aggregated API server)"
            .into(),
    )
}

fn controllers_to_calico_apiserver(facts: &ClusterFacts, options: &StageOptions) -> StageRender {
    let Some(apiserver_namespace) = facts.calico_apiserver_namespace.as_deref() else {
        return no_calico_apiserver();
    };
    let namespace = options
        .namespace_override
        .as_deref()
        .unwrap_or(&facts.kube_controllers_namespace);
    let mut rule = Rule::allow()
        .protocol(Protocol::tcp())
        .to_selector("k8s-app == \"calico-apiserver\"");
    // A namespaced policy's rule selector only sees its own namespace; the tutorial's lab had
    // both in calico-system, so the namespace is named only when they differ.
    if apiserver_namespace != namespace {
        rule = rule.to_namespace_selector(format!(
            "projectcalico.org/name == \"{apiserver_namespace}\""
        ));
    }
    let mut spec = PolicySpec::order(ALLOW_ORDER);
    spec.selector = Some("k8s-app == \"calico-kube-controllers\"".into());
    spec.types = types(&[PolicyType::Egress]);
    spec.egress = vec![rule];
    StageRender::Objects(vec![DesiredObject::policy(
        StageId::ControllersToCalicoApiserver,
        CalicoKind::NetworkPolicy,
        Some(namespace),
        "calico-kube-controllers-to-apiserver",
        &spec,
    )])
}

/// Hosts to Calico's own components: the tutorial's rule to calico-apiserver and, only where the
/// cluster has them, the paths `check` and lockdown's preflight require: Felix to Goldmane's
/// flow-log port (Calico 3.30+; Felix dials Goldmane's Service name, so cluster DNS too) and the
/// control-plane nodes to Calico's fail-closed admission webhooks (3.32).
fn hosts_to_calico_apiserver(facts: &ClusterFacts) -> StageRender {
    let mut egress = Vec::new();
    if facts.calico_apiserver_namespace.is_some() {
        egress.push(
            Rule::allow()
                .protocol(Protocol::tcp())
                .to_selector("k8s-app == \"calico-apiserver\"")
                .to_ports([facts.calico_apiserver_port]),
        );
    }
    egress.extend(flow_log_rules(facts));
    egress.extend(admission_webhook_rules(facts));
    if egress.is_empty() {
        return no_calico_apiserver();
    }
    let mut spec = PolicySpec::order(ALLOW_ORDER);
    spec.selector = Some(HOST_SELECTOR.into());
    spec.types = types(&[PolicyType::Egress]);
    spec.egress = egress;
    StageRender::Objects(vec![gnp(
        StageId::HostsToCalicoApiserver,
        "calico-components-to-apiserver",
        &spec,
    )])
}

/// Felix on every node sends flow logs to Goldmane, which it finds by its Service name.
fn flow_log_rules(facts: &ClusterFacts) -> Vec<Rule> {
    if facts.observability.goldmane_pods.is_empty() {
        return Vec::new();
    }
    let (key, value) = &facts.dns_label;
    let dns = format!("{key} == \"{value}\"");
    let mut rules = vec![
        Rule::allow()
            .protocol(Protocol::tcp())
            .to_selector("k8s-app == \"goldmane\"")
            .to_ports([facts.observability.goldmane_port]),
    ];
    rules.extend(
        [Protocol::udp(), Protocol::tcp()]
            .into_iter()
            .map(|protocol| {
                Rule::allow()
                    .protocol(protocol)
                    .to_selector(dns.clone())
                    .to_ports([DNS_PORT])
            }),
    );
    rules
}

/// The API server (on the control-plane nodes) calls each fail-closed webhook's pods, in the
/// namespace of the webhook's Service, on the ports its endpoints serve: one rule per namespace.
fn admission_webhook_rules(facts: &ClusterFacts) -> Vec<Rule> {
    let mut ports_by_namespace: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
    for webhook in facts.admission_webhooks.iter().flatten() {
        let Some((namespace, _)) = webhook.service.split_once('/') else {
            continue;
        };
        if webhook.fails_closed && !webhook.endpoints.is_empty() {
            ports_by_namespace
                .entry(namespace)
                .or_default()
                .extend(webhook.endpoints.iter().map(|(_, port)| *port));
        }
    }
    ports_by_namespace
        .into_iter()
        .map(|(namespace, ports)| {
            let mut rule = Rule::allow()
                .protocol(Protocol::tcp())
                .to_namespace_selector(format!("projectcalico.org/name == \"{namespace}\""))
                .to_ports(ports);
            if !facts.control_plane_nodes.is_empty() {
                rule = rule.from_selector(hosts_selector(&facts.control_plane_nodes));
            }
            rule
        })
        .collect()
}

/// Ingress to and egress towards `targets` on `port`, for every host: the shape of the
/// tutorial's worker-nodes-to-kapi and worker-nodes-to-typha.
fn hosts_to_hosts(stage: StageId, name: &str, targets: &[NodeRef], port: u16) -> DesiredObject {
    let rule = Rule::allow()
        .protocol(Protocol::tcp())
        .to_selector(hosts_selector(targets))
        .to_ports([port]);
    let mut spec = PolicySpec::order(ALLOW_ORDER);
    spec.selector = Some(HOST_SELECTOR.into());
    spec.types = types(&[PolicyType::Ingress, PolicyType::Egress]);
    spec.ingress = vec![rule.clone()];
    spec.egress = vec![rule];
    gnp(stage, name, &spec)
}

fn nodes_to_kapi(facts: &ClusterFacts) -> StageRender {
    if facts.control_plane_nodes.is_empty() {
        return no_control_plane();
    }
    StageRender::Objects(vec![hosts_to_hosts(
        StageId::NodesToKapi,
        "worker-nodes-to-kapi",
        &facts.control_plane_nodes,
        facts.apiserver_port,
    )])
}

fn srcnat_to_kapi(facts: &ClusterFacts) -> StageRender {
    if facts.control_plane_nodes.is_empty() {
        return no_control_plane();
    }
    let mut spec = PolicySpec::order(ALLOW_ORDER);
    spec.selector = Some(
        "has(k8s-app) && k8s-app in {\"calico-node\",\"calico-apiserver\",\"calico-typha\"}".into(),
    );
    spec.types = types(&[PolicyType::Egress]);
    spec.egress = vec![
        Rule::allow()
            .protocol(Protocol::tcp())
            .to_selector(hosts_selector(&facts.control_plane_nodes))
            .to_ports([facts.apiserver_port]),
    ];
    StageRender::Objects(vec![gnp(StageId::SrcnatToKapi, "srcnated-to-kapi", &spec)])
}

fn nodes_to_typha(facts: &ClusterFacts) -> StageRender {
    if facts.typha_nodes.is_empty() {
        return StageRender::NotApplicable(
            "calico-typha does not run in this cluster (calico-node talks to the API server directly)"
                .into(),
        );
    }
    StageRender::Objects(vec![hosts_to_hosts(
        StageId::NodesToTypha,
        "worker-nodes-to-typha",
        &facts.typha_nodes,
        facts.typha_port,
    )])
}

/// Not in the tutorial: without it `kubectl logs/exec/port-forward` break at lockdown, because
/// the API server's connections to kubelets (TCP 10250) are not a failsafe port.
fn kubelet(facts: &ClusterFacts) -> StageRender {
    if facts.control_plane_nodes.is_empty() {
        return no_control_plane();
    }
    let control_plane = hosts_selector(&facts.control_plane_nodes);
    let mut spec = PolicySpec::order(ALLOW_ORDER);
    spec.selector = Some(HOST_SELECTOR.into());
    spec.types = types(&[PolicyType::Ingress, PolicyType::Egress]);
    spec.ingress = vec![
        Rule::allow()
            .protocol(Protocol::tcp())
            .from_selector(control_plane)
            .to_ports([KUBELET_PORT]),
    ];
    spec.egress = vec![
        Rule::allow()
            .protocol(Protocol::tcp())
            .to_selector(HOST_SELECTOR)
            .to_ports([KUBELET_PORT]),
    ];
    StageRender::Objects(vec![gnp(StageId::Kubelet, "kapi-to-kubelet", &spec)])
}

/// Not in the tutorial: its calico-kube-controllers-to-apiserver policy selects
/// kube-controllers for egress and only allows the calico-apiserver, so at lockdown the
/// controllers lose the API server itself (found by `check --after lockdown`).
fn controllers_to_kapi(facts: &ClusterFacts, options: &StageOptions) -> StageRender {
    if facts.control_plane_nodes.is_empty() {
        return no_control_plane();
    }
    let namespace = options
        .namespace_override
        .as_deref()
        .unwrap_or(&facts.kube_controllers_namespace);
    let mut spec = PolicySpec::order(ALLOW_ORDER);
    spec.selector = Some("k8s-app == \"calico-kube-controllers\"".into());
    spec.types = types(&[PolicyType::Egress]);
    spec.egress = vec![
        Rule::allow()
            .protocol(Protocol::tcp())
            .to_selector(hosts_selector(&facts.control_plane_nodes))
            .to_namespace_selector("global()")
            .to_ports([facts.apiserver_port]),
    ];
    StageRender::Objects(vec![DesiredObject::policy(
        StageId::ControllersToKapi,
        CalicoKind::NetworkPolicy,
        Some(namespace),
        "calico-kube-controllers-to-kapi",
        &spec,
    )])
}

fn registry(options: &StageOptions) -> StageRender {
    let Some(target) = &options.registry else {
        return StageRender::NotApplicable(
            "no private registry given (pass --ip to `registry`, or --registry-ip)".into(),
        );
    };
    let mut spec = PolicySpec::order(ALLOW_ORDER);
    spec.types = types(&[PolicyType::Egress]);
    // One rule per address family: Calico refuses a rule whose nets mix IPv4 and IPv6.
    let (v4, v6): (Vec<&ipnet::IpNet>, Vec<&ipnet::IpNet>) = target
        .nets
        .iter()
        .partition(|net| matches!(net, ipnet::IpNet::V4(_)));
    spec.egress = [v4, v6]
        .into_iter()
        .filter(|nets| !nets.is_empty())
        .map(|nets| {
            Rule::allow()
                .protocol(Protocol::tcp())
                .to_nets(nets.iter().map(ToString::to_string))
                .to_ports(target.ports.iter().copied())
        })
        .collect();
    StageRender::Objects(vec![gnp(
        StageId::Registry,
        "private-registry-policy",
        &spec,
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{AdmissionWebhook, ClusterFacts};
    use crate::stages::parse_registry;

    fn node(name: &str) -> NodeRef {
        NodeRef {
            name: name.into(),
            hostname: name.into(),
        }
    }

    #[test]
    fn several_control_plane_nodes_use_a_set() {
        assert_eq!(
            hosts_selector(&[node("a"), node("b")]),
            "has(kubernetes.io/os) && kubernetes.io/hostname in {\"a\",\"b\"}"
        );
    }

    #[test]
    fn detected_port_replaces_6443() {
        let mut facts = ClusterFacts::tutorial_lab();
        facts.apiserver_port = 16443;
        let StageRender::Objects(objects) = nodes_to_kapi(&facts) else {
            panic!("applicable")
        };
        assert_eq!(
            objects[0].manifest["spec"]["ingress"][0]["destination"]["ports"][0],
            16443
        );
    }

    #[test]
    fn stages_without_their_component_are_not_applicable() {
        let mut facts = ClusterFacts::tutorial_lab();
        facts.calico_apiserver_namespace = None;
        facts.typha_nodes.clear();
        let options = StageOptions::with_defaults();
        for stage in [
            StageId::CalicoApiserverToKapi,
            StageId::ControllersToCalicoApiserver,
            StageId::HostsToCalicoApiserver,
            StageId::NodesToTypha,
            StageId::Registry,
        ] {
            assert!(
                matches!(
                    render(stage, &facts, &options),
                    StageRender::NotApplicable(_)
                ),
                "{stage}"
            );
        }
    }

    #[test]
    fn controllers_policy_names_the_apiserver_namespace_when_it_differs() {
        let facts = ClusterFacts::tutorial_lab();
        let StageRender::Objects(objects) =
            controllers_to_calico_apiserver(&facts, &StageOptions::default())
        else {
            panic!("applicable")
        };
        assert_eq!(
            objects[0].manifest["spec"]["egress"][0]["destination"]["namespaceSelector"],
            "projectcalico.org/name == \"calico-apiserver\""
        );
    }

    fn calico_components_egress(facts: &ClusterFacts) -> Vec<serde_json::Value> {
        let StageRender::Objects(objects) = hosts_to_calico_apiserver(facts) else {
            panic!("applicable")
        };
        assert_eq!(objects[0].name, "calico-components-to-apiserver");
        objects[0].manifest["spec"]["egress"]
            .as_array()
            .expect("egress rules")
            .clone()
    }

    fn webhook(service: &str, fails_closed: bool, port: u16) -> AdmissionWebhook {
        AdmissionWebhook {
            name: format!("{service}/validate"),
            service: service.into(),
            fails_closed,
            endpoints: vec![("192.168.1.7".into(), port)],
        }
    }

    #[test]
    fn calico_components_reach_goldmane_and_dns_only_where_goldmane_runs() {
        let tutorial = calico_components_egress(&ClusterFacts::tutorial_lab());
        assert_eq!(tutorial.len(), 1, "the tutorial's rule alone: {tutorial:?}");

        let mut facts = ClusterFacts::tutorial_lab();
        facts.observability.goldmane_pods = vec!["calico-system/goldmane-1".into()];
        facts.observability.goldmane_port = 7443;
        let egress = calico_components_egress(&facts);
        assert_eq!(egress[0], tutorial[0]);
        assert_eq!(
            egress[1],
            serde_json::json!({"action": "Allow", "protocol": "TCP",
                "destination": {"selector": "k8s-app == \"goldmane\"", "ports": [7443]}})
        );
        for (rule, protocol) in egress[2..].iter().zip(["UDP", "TCP"]) {
            assert_eq!(rule["protocol"], protocol);
            assert_eq!(rule["destination"]["selector"], "k8s-app == \"kube-dns\"");
            assert_eq!(rule["destination"]["ports"], serde_json::json!([53]));
        }
    }

    #[test]
    fn the_control_plane_reaches_fail_closed_calico_webhooks_even_without_calico_apiserver() {
        let mut facts = ClusterFacts::tutorial_lab();
        facts.calico_apiserver_namespace = None;
        assert!(matches!(
            hosts_to_calico_apiserver(&facts),
            StageRender::NotApplicable(_)
        ));
        facts.admission_webhooks = Some(vec![
            webhook("calico-system/calico-webhooks", true, 6443),
            webhook("calico-system/calico-webhooks", true, 6443),
            webhook("tigera-operator/audit", false, 9443),
        ]);
        let egress = calico_components_egress(&facts);
        assert_eq!(
            egress,
            [serde_json::json!({"action": "Allow", "protocol": "TCP",
                "source": {"selector": "has(kubernetes.io/os) && kubernetes.io/hostname == \"control\""},
                "destination": {"namespaceSelector": "projectcalico.org/name == \"calico-system\"",
                                "ports": [6443]}})],
            "fail-open webhooks need no rule"
        );
    }

    #[test]
    fn registry_renders_every_net_and_port() {
        let options = StageOptions {
            registry: parse_registry(
                &["10.0.0.5".into(), "fd00::/64".into()],
                &["5000".into(), "443".into()],
            )
            .unwrap(),
            ..StageOptions::default()
        };
        let StageRender::Objects(objects) = registry(&options) else {
            panic!("applicable")
        };
        // One rule per address family, as Calico's validation requires.
        let egress = &objects[0].manifest["spec"]["egress"];
        assert_eq!(
            egress[0]["destination"]["nets"],
            serde_json::json!(["10.0.0.5/32"])
        );
        assert_eq!(
            egress[1]["destination"]["nets"],
            serde_json::json!(["fd00::/64"])
        );
        for rule in egress.as_array().unwrap() {
            assert_eq!(rule["destination"]["ports"], serde_json::json!([5000, 443]));
        }
    }
}

#[cfg(test)]
mod selector_validity {
    use super::*;
    use crate::calico::selector;
    use crate::facts::ClusterFacts;
    use crate::stages::parse_registry;

    fn selectors(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    if key.ends_with("elector") {
                        out.push(v.as_str().unwrap().to_string());
                    } else {
                        selectors(v, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| selectors(v, out)),
            _ => {}
        }
    }

    /// Every selector we render parses with Calico's grammar, in every fact combination.
    #[test]
    fn every_rendered_selector_is_valid_calico() {
        let mut many = ClusterFacts::tutorial_lab();
        many.control_plane_nodes.push(NodeRef {
            name: "cp-2".into(),
            hostname: "cp-2.example".into(),
        });
        let options = StageOptions {
            registry: parse_registry(&["10.0.0.5".into()], &[]).unwrap(),
            ..StageOptions::with_defaults()
        };
        let mut count = 0;
        for facts in [ClusterFacts::tutorial_lab(), many] {
            for stage in StageId::ALL {
                if let StageRender::Objects(objects) = render(stage, &facts, &options) {
                    let mut found = Vec::new();
                    selectors(
                        &objects.iter().map(|o| o.manifest.clone()).collect(),
                        &mut found,
                    );
                    for s in found {
                        selector::parse(&s).unwrap_or_else(|e| panic!("{stage}: {s}: {e}"));
                        count += 1;
                    }
                }
            }
        }
        assert!(count > 20, "{count}");
    }
}

#[cfg(test)]
mod snapshots {
    use super::*;
    use crate::facts::ClusterFacts;
    use crate::stages::parse_registry;

    fn rendered(facts: &ClusterFacts, options: &StageOptions) -> String {
        let manifests: Vec<serde_json::Value> = StageId::ALL
            .iter()
            .filter_map(|stage| match render(*stage, facts, options) {
                StageRender::Objects(objects) => Some(objects),
                StageRender::NotApplicable(_) => None,
            })
            .flatten()
            .map(|o| o.manifest)
            .collect();
        crate::yaml::to_yaml_stream(&manifests)
    }

    /// What `render --offline` prints for the tutorial lab, every stage.
    #[test]
    fn tutorial_lab_stages() {
        let options = StageOptions {
            registry: parse_registry(&["10.0.0.5".into()], &[]).unwrap(),
            ..StageOptions::with_defaults()
        };
        insta::assert_snapshot!(rendered(&ClusterFacts::tutorial_lab(), &options));
    }

    /// A kubeadm-like cluster: two control-plane nodes, port 16443, calico-apiserver and
    /// kube-controllers both in calico-system, typha on two workers.
    #[test]
    fn detected_multi_control_plane_cluster() {
        let node = |name: &str| NodeRef {
            name: name.into(),
            hostname: name.into(),
        };
        let mut facts = ClusterFacts::tutorial_lab();
        facts.control_plane_nodes = vec![node("cp-1"), node("cp-2")];
        facts.apiserver_port = 16443;
        facts.calico_apiserver_namespace = Some("calico-system".into());
        facts.typha_nodes = vec![node("w-1"), node("w-2")];
        insta::assert_snapshot!(rendered(&facts, &StageOptions::with_defaults()));
    }
}
