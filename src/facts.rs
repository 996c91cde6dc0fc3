//! What we detected about the cluster. The tutorial hard-codes three of these facts (node
//! `control`, port 6443, namespace `calico-apiserver`); every stage renders from this struct
//! instead, so the same code serves the live cluster and `render --offline`.
//!
//! Detection is a pure function of an [`Inventory`] (the objects one LIST per kind returned), so it
//! is tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::calico::objects::{
    AutoCreate, ClusterInformation, FailsafePort, FelixConfiguration, FelixConfigurationSpec,
    HostEndpoint, KubeControllersConfiguration,
};

/// How `projectcalico.org/v3` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalicoApiMode {
    /// The aggregated calico-apiserver (APIService v3.projectcalico.org).
    AggregatedApiserver,
    /// Calico >= 3.32 serving v3 as native CRDs.
    NativeCrds,
    /// Nothing serves it: no stage can be planned.
    NotServed,
    /// `render --offline`: no cluster was asked.
    Offline,
}

/// A node that runs something a stage must reach, identified the way host endpoints are labelled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct NodeRef {
    pub name: String,
    /// The `kubernetes.io/hostname` label (falls back to the node name), which auto host
    /// endpoints inherit and the stage selectors match.
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterFacts {
    pub calico_api: CalicoApiMode,
    /// Control-plane nodes, sorted by name.
    pub control_plane_nodes: Vec<NodeRef>,
    /// How the control-plane nodes were found, for the report.
    pub control_plane_source: String,
    /// The API server's real port, from the `kubernetes` EndpointSlice.
    pub apiserver_port: u16,
    /// Namespace of the calico-apiserver pods; None when none run.
    pub calico_apiserver_namespace: Option<String>,
    /// Port the calico-apiserver pods listen on.
    pub calico_apiserver_port: u16,
    /// Namespace of calico-kube-controllers (calico-system for operator installs, kube-system for
    /// manifest installs).
    pub kube_controllers_namespace: String,
    /// Nodes where calico-typha runs; empty when there is no typha.
    pub typha_nodes: Vec<NodeRef>,
    pub typha_port: u16,
    /// Image versions of calico-node and calico-kube-controllers (e.g. "v3.31.0"), when the
    /// images carry one.
    pub calico_node_version: Option<String>,
    pub kube_controllers_version: Option<String>,
    /// The Calico release as Calico reports it (ClusterInformation, the operator's Installation).
    pub versions: CalicoVersions,
    /// The label that selects the cluster DNS pods, e.g. ("k8s-app", "kube-dns").
    pub dns_label: (String, String),
    pub node_count: usize,
    pub nodes: Vec<String>,
    pub namespaces: Vec<String>,
    pub host_endpoints: HostEndpointFacts,
    /// FelixConfiguration `default`'s failsafe ports.
    pub failsafe: FailsafeFacts,
    /// What else Felix's configuration decides for node-to-node traffic.
    pub felix: FelixFacts,
    /// Goldmane (flow logs, Calico 3.30+) and Whisker, when deployed.
    pub observability: ObservabilityFacts,
    /// Admission webhooks served by Calico's pods (Calico 3.32); None when they could not be read.
    pub admission_webhooks: Option<Vec<AdmissionWebhook>>,
}

/// The Calico release, from every place that names it.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CalicoVersions {
    /// ClusterInformation `default` spec.calicoVersion, which calico-node writes at start-up.
    pub cluster_information: Option<String>,
    /// The Tigera operator's Installation `default` status.calicoVersion.
    pub operator: Option<String>,
}

/// Felix's settings beyond the default failsafe ports: FelixConfiguration `default`, and the
/// per-node `node.<name>` ones, which Felix lays over the default field by field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FelixFacts {
    /// `vxlanPort`: where Felix sends VXLAN and what it accepts between hosts before policy.
    pub vxlan_port: u16,
    /// `wireguardListeningPort` when `wireguardEnabled`.
    pub wireguard_port: Option<u16>,
    /// `wireguardListeningPortV6` when `wireguardEnabledV6`.
    pub wireguard_port_v6: Option<u16>,
    /// Nodes whose `FelixConfiguration node.<name>` sets failsafe ports, with the ports Felix runs
    /// with there.
    pub node_failsafe: BTreeMap<String, FailsafeFacts>,
}

pub const FELIX_DEFAULT_VXLAN_PORT: u16 = 4789;
pub const FELIX_DEFAULT_WIREGUARD_PORT: u16 = 51820;
pub const FELIX_DEFAULT_WIREGUARD_PORT_V6: u16 = 51821;
/// FelixConfiguration names that configure one node.
pub const FELIX_NODE_CONFIGURATION_PREFIX: &str = "node.";

impl Default for FelixFacts {
    fn default() -> Self {
        Self {
            vxlan_port: FELIX_DEFAULT_VXLAN_PORT,
            wireguard_port: None,
            wireguard_port_v6: None,
            node_failsafe: BTreeMap::new(),
        }
    }
}

impl ClusterFacts {
    /// The failsafe ports Felix runs with on `node`.
    pub fn failsafe_on(&self, node: &str) -> &FailsafeFacts {
        self.felix.node_failsafe.get(node).unwrap_or(&self.failsafe)
    }
}

/// Goldmane's port (the operator's Service and every client's default: `goldmane...:7443`).
pub const GOLDMANE_PORT: u16 = 7443;

/// Where flow logs go: Felix on every node and Whisker's backend send them to Goldmane.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ObservabilityFacts {
    /// `namespace/name` of the Goldmane pods.
    pub goldmane_pods: Vec<String>,
    pub goldmane_port: u16,
    pub whisker_pods: Vec<String>,
}

/// A webhook the API server calls on writes, served by Calico's pods.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdmissionWebhook {
    /// `<ValidatingWebhookConfiguration>/<webhook>`.
    pub name: String,
    /// `namespace/name` of the Service it calls.
    pub service: String,
    /// failurePolicy Fail (the default): when the API server cannot reach it, every write it
    /// covers fails, Calico's and this tool's own (restoring the safety net included).
    pub fails_closed: bool,
    /// The Service's ready endpoints: address and target port.
    pub endpoints: Vec<(String, u16)>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct HostEndpointFacts {
    /// Whether KubeControllersConfiguration `default` exists.
    pub config_present: bool,
    /// spec.controllers.node.hostEndpoint.autoCreate (Disabled when unset).
    pub auto_create_spec: String,
    /// status.runningConfig's value: what kube-controllers actually runs with.
    pub auto_create_running: Option<String>,
    /// Nodes that have at least one host endpoint.
    pub nodes_with_hep: Vec<String>,
}

impl HostEndpointFacts {
    pub fn effective(&self) -> &str {
        self.auto_create_running
            .as_deref()
            .unwrap_or(&self.auto_create_spec)
    }

    /// True when kube-controllers runs with a value other than the spec's: an environment
    /// variable overrides it and a patch of the spec has no effect.
    pub fn overridden(&self) -> bool {
        self.auto_create_running
            .as_deref()
            .is_some_and(|running| running != self.auto_create_spec)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailsafeFacts {
    /// "tcp:6443"-style entries, inbound.
    pub inbound: Vec<String>,
    pub outbound: Vec<String>,
    /// True when FelixConfiguration `default` left them at Felix's defaults.
    pub defaults: bool,
}

/// Felix's built-in failsafe ports (felix/config/config_params.go).
pub const FELIX_DEFAULT_FAILSAFE_INBOUND: &[&str] = &[
    "tcp:22", "udp:68", "tcp:179", "tcp:2379", "tcp:2380", "tcp:5473", "tcp:6443", "tcp:6666",
    "tcp:6667",
];
pub const FELIX_DEFAULT_FAILSAFE_OUTBOUND: &[&str] = &[
    "udp:53", "udp:67", "tcp:179", "tcp:2379", "tcp:2380", "tcp:5473", "tcp:6443", "tcp:6666",
    "tcp:6667",
];

impl FailsafeFacts {
    pub fn felix_defaults() -> Self {
        Self {
            inbound: FELIX_DEFAULT_FAILSAFE_INBOUND
                .iter()
                .map(ToString::to_string)
                .collect(),
            outbound: FELIX_DEFAULT_FAILSAFE_OUTBOUND
                .iter()
                .map(ToString::to_string)
                .collect(),
            defaults: true,
        }
    }

    pub fn inbound_allows_tcp(&self, port: u16) -> bool {
        self.inbound.iter().any(|p| p == &format!("tcp:{port}"))
    }
}

impl ClusterFacts {
    /// The tutorial lab: k3s, API server on 6443, one control-plane node `control`,
    /// calico-apiserver in namespace `calico-apiserver`, typha on `control`.
    pub fn tutorial_lab() -> Self {
        let control = NodeRef {
            name: "control".into(),
            hostname: "control".into(),
        };
        Self {
            calico_api: CalicoApiMode::Offline,
            control_plane_nodes: vec![control.clone()],
            control_plane_source: "the tutorial lab (offline)".into(),
            apiserver_port: 6443,
            calico_apiserver_namespace: Some("calico-apiserver".into()),
            calico_apiserver_port: 5443,
            kube_controllers_namespace: "calico-system".into(),
            typha_nodes: vec![control],
            typha_port: 5473,
            calico_node_version: None,
            kube_controllers_version: None,
            versions: CalicoVersions::default(),
            dns_label: ("k8s-app".into(), "kube-dns".into()),
            node_count: 1,
            nodes: vec!["control".into()],
            namespaces: vec![],
            host_endpoints: HostEndpointFacts {
                auto_create_spec: "Disabled".into(),
                ..Default::default()
            },
            failsafe: FailsafeFacts::felix_defaults(),
            felix: FelixFacts::default(),
            observability: ObservabilityFacts::default(),
            admission_webhooks: Some(Vec::new()),
        }
    }
}

/// A list of pods that the views of one observation share (the cluster now and after a stage):
/// at fleet scale the pods are most of what a command holds, so cloning the list copies a
/// pointer, and changing it copies the list first (copy on write).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pods(Arc<Vec<Value>>);

impl Deref for Pods {
    type Target = Vec<Value>;

    fn deref(&self) -> &Vec<Value> {
        &self.0
    }
}

impl DerefMut for Pods {
    fn deref_mut(&mut self) -> &mut Vec<Value> {
        Arc::make_mut(&mut self.0)
    }
}

impl From<Vec<Value>> for Pods {
    fn from(pods: Vec<Value>) -> Self {
        Self(Arc::new(pods))
    }
}

impl FromIterator<Value> for Pods {
    fn from_iter<I: IntoIterator<Item = Value>>(pods: I) -> Self {
        Self::from(pods.into_iter().collect::<Vec<_>>())
    }
}

impl IntoIterator for Pods {
    type Item = Value;
    type IntoIter = std::vec::IntoIter<Value>;

    /// The pods, copied only when another view still holds them.
    fn into_iter(self) -> Self::IntoIter {
        Arc::unwrap_or_clone(self.0).into_iter()
    }
}

impl<'a> IntoIterator for &'a Pods {
    type Item = &'a Value;
    type IntoIter = std::slice::Iter<'a, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The raw objects the facts are derived from: one LIST (or one GET) per kind, as JSON.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub calico_api: Option<CalicoApiMode>,
    /// The namespace of the Service the aggregated APIService names: where calico-apiserver
    /// runs (its pods may be invisible to the user, or labelled otherwise).
    pub calico_apiserver_service_namespace: Option<String>,
    pub nodes: Vec<Value>,
    /// EndpointSlices of the `kubernetes` Service in `default`.
    pub apiserver_endpoint_slices: Vec<Value>,
    /// Calico and DNS pods (selected by label), all namespaces.
    pub system_pods: Pods,
    /// The pods the command observed (`live::Observe`), `system_pods` among them: every pod
    /// for the flow check, only the system pods for `plan` and `up`, and for a stage command
    /// the ones its flow-change report can be about.
    pub pods: Pods,
    /// IPPools, for the encapsulation in use; None when they could not be read.
    pub ip_pools: Option<Vec<Value>>,
    pub namespaces: Vec<Value>,
    pub kube_controllers_configuration: Option<Value>,
    pub felix_configuration: Option<Value>,
    /// FelixConfigurations named `node.<name>`: per-node overrides of the default.
    pub felix_node_configurations: Vec<Value>,
    /// Tiers (order, defaultAction); None when they could not be listed.
    pub tiers: Option<Vec<Value>>,
    /// ClusterInformation `default`, when readable.
    pub cluster_information: Option<Value>,
    /// The Tigera operator's Installation `default`, when the operator is installed and readable.
    pub installation: Option<Value>,
    /// ValidatingWebhookConfigurations; None when they could not be listed.
    pub validating_webhooks: Option<Vec<Value>>,
    /// EndpointSlices of the Services that webhooks in a Calico namespace call.
    pub webhook_endpoint_slices: Vec<Value>,
    pub host_endpoints: Vec<Value>,
    /// Kubernetes NetworkPolicies (networking.k8s.io/v1), all namespaces; Calico enforces them
    /// in the default tier at order 1000.
    pub k8s_network_policies: Vec<Value>,
    /// True when the Kubernetes NetworkPolicies could not be listed (then the list is empty and
    /// the flow check says so).
    pub k8s_network_policies_unread: bool,
}

/// Pods whose labels the facts read; the LIST asks for exactly these.
pub const SYSTEM_POD_LABEL_SELECTOR: &str = "k8s-app in (calico-apiserver,calico-typha,calico-kube-controllers,calico-node,kube-dns,goldmane,whisker)";

/// The `k8s-app` values [`SYSTEM_POD_LABEL_SELECTOR`] selects.
pub const SYSTEM_POD_APPS: &[&str] = &[
    "calico-apiserver",
    "calico-typha",
    "calico-kube-controllers",
    "calico-node",
    "kube-dns",
    "goldmane",
    "whisker",
];

/// Namespaces Calico's own components run in (operator installs; calico-apiserver's before 3.31).
pub const CALICO_NAMESPACES: &[&str] = &["calico-system", "calico-apiserver", "tigera-operator"];

pub fn is_system_pod(pod: &Value) -> bool {
    label(pod, "k8s-app").is_some_and(|app| SYSTEM_POD_APPS.contains(&app))
}

pub const CONTROL_PLANE_ROLE_LABELS: &[&str] = &[
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get("labels")?.get(key)?.as_str()
}

fn node_ref(node: &Value) -> NodeRef {
    let name = str_at(node, "/metadata/name")
        .unwrap_or_default()
        .to_string();
    let hostname = label(node, "kubernetes.io/hostname")
        .map(str::to_string)
        .unwrap_or_else(|| name.clone());
    NodeRef { name, hostname }
}

fn node_internal_ips(node: &Value) -> impl Iterator<Item = &str> {
    node.pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| str_at(a, "/type") == Some("InternalIP"))
        .filter_map(|a| str_at(a, "/address"))
}

fn pods_with_app<'a>(pods: &'a [Value], app: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    pods.iter()
        .filter(move |p| label(p, "k8s-app") == Some(app))
}

fn container_port(pod: &Value, fallback: u16) -> u16 {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
        .find_map(|p| u16::try_from(p).ok())
        .unwrap_or(fallback)
}

/// The tag of a pod's first container image, without a digest: "v3.31.0".
fn image_version(pod: &Value) -> Option<String> {
    let image = str_at(pod, "/spec/containers/0/image")?;
    let image = image.split('@').next()?;
    let (_, tag) = image
        .rsplit_once(':')
        .filter(|(name, _)| !name.is_empty())?;
    (!tag.contains('/')).then(|| tag.to_string())
}

/// "v3.31.2" → (3, 31, 2); anything else → None.
pub fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

impl ClusterFacts {
    /// calico-kube-controllers newer than calico-node can lack the projectcalico-default-allow
    /// profile that auto host endpoints rely on, and cut all host traffic when they appear
    /// (Calico PR #3552). Some((controllers, node)) when that is the case.
    pub fn controllers_newer_than_node(&self) -> Option<(String, String)> {
        let controllers = self.kube_controllers_version.as_deref()?;
        let node = self.calico_node_version.as_deref()?;
        (parse_version(controllers)? > parse_version(node)?)
            .then(|| (controllers.to_string(), node.to_string()))
    }
}

/// Derive the facts from what the cluster returned.
pub fn detect(inv: &Inventory) -> ClusterFacts {
    let nodes_by_name: BTreeMap<&str, &Value> = inv
        .nodes
        .iter()
        .filter_map(|n| Some((str_at(n, "/metadata/name")?, n)))
        .collect();
    let (control_plane_nodes, control_plane_source) = control_plane(inv);
    let pods = &inv.system_pods;
    let (calico_apiserver_namespace, calico_apiserver_port) = calico_apiserver(inv);
    let (typha_nodes, typha_port) = typha(pods, &nodes_by_name);
    let failsafe = failsafe_facts(inv.felix_configuration.as_ref());
    ClusterFacts {
        calico_api: inv.calico_api.unwrap_or(CalicoApiMode::NotServed),
        control_plane_nodes,
        control_plane_source,
        apiserver_port: apiserver_endpoint(&inv.apiserver_endpoint_slices).0,
        calico_apiserver_namespace,
        calico_apiserver_port,
        kube_controllers_namespace: kube_controllers_namespace(pods),
        typha_nodes,
        typha_port,
        calico_node_version: pods_with_app(pods, "calico-node").find_map(image_version),
        kube_controllers_version: pods_with_app(pods, "calico-kube-controllers")
            .find_map(image_version),
        versions: calico_versions(inv),
        dns_label: ("k8s-app".into(), "kube-dns".into()),
        node_count: inv.nodes.len(),
        nodes: nodes_by_name.keys().map(|n| n.to_string()).collect(),
        namespaces: inv
            .namespaces
            .iter()
            .filter_map(|n| str_at(n, "/metadata/name").map(str::to_string))
            .collect(),
        host_endpoints: host_endpoint_facts(inv),
        felix: felix_facts(inv, &failsafe),
        failsafe,
        observability: observability(pods),
        admission_webhooks: admission_webhooks(inv),
    }
}

/// The control-plane nodes (sorted) and how they were found: by their role labels, else as the
/// nodes behind the `kubernetes` EndpointSlice.
fn control_plane(inv: &Inventory) -> (Vec<NodeRef>, String) {
    let mut source = String::from("node-role labels");
    let mut nodes: Vec<NodeRef> = inv
        .nodes
        .iter()
        .filter(|n| {
            CONTROL_PLANE_ROLE_LABELS
                .iter()
                .any(|l| label(n, l).is_some())
        })
        .map(node_ref)
        .collect();
    if nodes.is_empty() {
        source = String::from("the nodes behind the `kubernetes` EndpointSlice");
        let (_, apiserver_addresses) = apiserver_endpoint(&inv.apiserver_endpoint_slices);
        nodes = inv
            .nodes
            .iter()
            .filter(|n| node_internal_ips(n).any(|ip| apiserver_addresses.contains(ip)))
            .map(node_ref)
            .collect();
    }
    nodes.sort();
    (nodes, source)
}

/// Where calico-apiserver runs and the port it listens on.
fn calico_apiserver(inv: &Inventory) -> (Option<String>, u16) {
    let pod = pods_with_app(&inv.system_pods, "calico-apiserver").next();
    // Its pods say where it runs; without them, the APIService that routes to it does. Either way
    // `plan` then agrees with itself: an API served by calico-apiserver has a calico-apiserver.
    let namespace = pod
        .and_then(|p| str_at(p, "/metadata/namespace").map(str::to_string))
        .or_else(|| {
            (inv.calico_api == Some(CalicoApiMode::AggregatedApiserver))
                .then(|| inv.calico_apiserver_service_namespace.clone())
                .flatten()
        });
    (namespace, pod.map_or(5443, |p| container_port(p, 5443)))
}

fn kube_controllers_namespace(pods: &[Value]) -> String {
    pods_with_app(pods, "calico-kube-controllers")
        .find_map(|p| str_at(p, "/metadata/namespace"))
        .or_else(|| {
            pods_with_app(pods, "calico-node").find_map(|p| str_at(p, "/metadata/namespace"))
        })
        .unwrap_or("calico-system")
        .to_string()
}

/// The nodes calico-typha runs on and its port.
fn typha(pods: &[Value], nodes_by_name: &BTreeMap<&str, &Value>) -> (Vec<NodeRef>, u16) {
    let typha_pods: Vec<&Value> = pods_with_app(pods, "calico-typha").collect();
    let port = typha_pods.first().map_or(5473, |p| container_port(p, 5473));
    let nodes = typha_pods
        .iter()
        .filter_map(|p| str_at(p, "/spec/nodeName"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|name| {
            nodes_by_name.get(name).map_or_else(
                || NodeRef {
                    name: name.to_string(),
                    hostname: name.to_string(),
                },
                |n| node_ref(n),
            )
        })
        .collect();
    (nodes, port)
}

fn observability(pods: &[Value]) -> ObservabilityFacts {
    let pod_key = |p: &Value| {
        Some(format!(
            "{}/{}",
            str_at(p, "/metadata/namespace")?,
            str_at(p, "/metadata/name")?
        ))
    };
    let goldmane: Vec<&Value> = pods_with_app(pods, "goldmane").collect();
    ObservabilityFacts {
        goldmane_pods: goldmane.iter().filter_map(|p| pod_key(p)).collect(),
        goldmane_port: goldmane
            .first()
            .map_or(GOLDMANE_PORT, |p| container_port(p, GOLDMANE_PORT)),
        whisker_pods: pods_with_app(pods, "whisker").filter_map(pod_key).collect(),
    }
}

fn calico_versions(inv: &Inventory) -> CalicoVersions {
    let cluster_information = inv
        .cluster_information
        .as_ref()
        .and_then(|o| ClusterInformation::from_value(o).ok())
        .and_then(|o| o.spec.calico_version);
    let operator = inv
        .installation
        .as_ref()
        .and_then(|o| str_at(o, "/status/calicoVersion"))
        .map(str::to_string);
    CalicoVersions {
        cluster_information: cluster_information.filter(|v| !v.is_empty()),
        operator: operator.filter(|v| !v.is_empty()),
    }
}

/// The port named `https` (else the first) and every ready address of the `kubernetes` Service.
fn apiserver_endpoint(slices: &[Value]) -> (u16, BTreeSet<&str>) {
    let mut port = None;
    let mut addresses = BTreeSet::new();
    for slice in slices {
        let ports = slice
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let chosen = ports
            .iter()
            .find(|p| str_at(p, "/name") == Some("https"))
            .or_else(|| ports.first())
            .and_then(|p| p.get("port").and_then(Value::as_u64))
            .and_then(|p| u16::try_from(p).ok());
        port = port.or(chosen);
        for endpoint in slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for address in endpoint
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                addresses.insert(address);
            }
        }
    }
    (port.unwrap_or(6443), addresses)
}

/// The autoCreate value calico-kube-controllers runs with, from what it reports in
/// KubeControllersConfiguration `default` status: the AUTO_HOST_ENDPOINTS environment variable
/// when set (it wins over the spec), else status.runningConfig. Calico 3.31 leaves
/// `hostEndpoint` out of runningConfig when the variable says `disabled`, and when no host
/// endpoint controller runs at all: both mean Disabled. None when kube-controllers reports
/// nothing (older releases).
pub fn running_auto_create(kcc: &Value) -> Option<String> {
    let kcc = KubeControllersConfiguration::from_value(kcc).ok()?;
    if let Some(env) = kcc.auto_host_endpoints_env() {
        return Some(AutoCreate::from_env(env).as_str().to_string());
    }
    let running = kcc.status?.running_config?;
    let auto_create = running.host_endpoint().and_then(|h| h.auto_create);
    Some(auto_create.unwrap_or_default().as_str().to_string())
}

fn host_endpoint_facts(inv: &Inventory) -> HostEndpointFacts {
    let kcc = inv.kube_controllers_configuration.as_ref();
    let auto_create_spec = kcc
        .and_then(|k| KubeControllersConfiguration::from_value(k).ok())
        .and_then(|k| k.spec.host_endpoint()?.auto_create)
        .unwrap_or_default()
        .as_str()
        .to_string();
    let auto_create_running = kcc.and_then(running_auto_create);
    let nodes_with_hep = inv
        .host_endpoints
        .iter()
        .filter_map(|h| HostEndpoint::from_value(h).ok()?.spec.node)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    HostEndpointFacts {
        config_present: kcc.is_some(),
        auto_create_spec,
        auto_create_running,
        nodes_with_hep,
    }
}

/// A FelixConfiguration's spec; one Calico's schema would refuse counts as absent.
fn felix_spec(felix: Option<&Value>) -> Option<FelixConfigurationSpec> {
    Some(FelixConfiguration::from_value(felix?).ok()?.spec)
}

fn failsafe_facts(felix: Option<&Value>) -> FailsafeFacts {
    overlay_failsafe(FailsafeFacts::felix_defaults(), felix_spec(felix).as_ref())
}

/// `base` with the failsafe fields `felix` sets laid over it.
fn overlay_failsafe(base: FailsafeFacts, felix: Option<&FelixConfigurationSpec>) -> FailsafeFacts {
    let mut facts = base;
    let Some(spec) = felix else {
        return facts;
    };
    let shown = |ports: &[FailsafePort]| ports.iter().map(ToString::to_string).collect();
    if let Some(inbound) = &spec.failsafe_inbound_host_ports {
        facts.inbound = shown(inbound);
        facts.defaults = false;
    }
    if let Some(outbound) = &spec.failsafe_outbound_host_ports {
        facts.outbound = shown(outbound);
        facts.defaults = false;
    }
    facts
}

fn felix_port(value: Option<u64>, fallback: u16) -> u16 {
    value
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(fallback)
}

fn felix_facts(inv: &Inventory, default_failsafe: &FailsafeFacts) -> FelixFacts {
    let default = felix_spec(inv.felix_configuration.as_ref()).unwrap_or_default();
    let node_failsafe = inv
        .felix_node_configurations
        .iter()
        .filter_map(|config| {
            let config = FelixConfiguration::from_value(config).ok()?;
            let node = config
                .metadata
                .name
                .strip_prefix(FELIX_NODE_CONFIGURATION_PREFIX)?;
            config.spec.sets_failsafe().then(|| {
                (
                    node.to_string(),
                    overlay_failsafe(default_failsafe.clone(), Some(&config.spec)),
                )
            })
        })
        .collect();
    FelixFacts {
        vxlan_port: felix_port(default.vxlan_port, FELIX_DEFAULT_VXLAN_PORT),
        wireguard_port: (default.wireguard_enabled == Some(true)).then(|| {
            felix_port(
                default.wireguard_listening_port,
                FELIX_DEFAULT_WIREGUARD_PORT,
            )
        }),
        wireguard_port_v6: (default.wireguard_enabled_v6 == Some(true)).then(|| {
            felix_port(
                default.wireguard_listening_port_v6,
                FELIX_DEFAULT_WIREGUARD_PORT_V6,
            )
        }),
        node_failsafe,
    }
}

/// Webhooks whose Service is in a Calico namespace, with the endpoints of that Service.
fn admission_webhooks(inv: &Inventory) -> Option<Vec<AdmissionWebhook>> {
    let configurations = inv.validating_webhooks.as_ref()?;
    let mut found = Vec::new();
    for configuration in configurations {
        let config_name = str_at(configuration, "/metadata/name").unwrap_or_default();
        for webhook in configuration
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some((namespace, service)) = calico_webhook_service(webhook) else {
                continue;
            };
            let endpoints = service_endpoints(&inv.webhook_endpoint_slices, namespace, service);
            found.push(AdmissionWebhook {
                name: format!(
                    "{config_name}/{}",
                    str_at(webhook, "/name").unwrap_or_default()
                ),
                service: format!("{namespace}/{service}"),
                // admissionregistration.k8s.io/v1 defaults failurePolicy to Fail.
                fails_closed: str_at(webhook, "/failurePolicy").unwrap_or("Fail") == "Fail",
                endpoints,
            });
        }
    }
    Some(found)
}

/// The Service Calico 3.32's admission webhooks are served by. Operator installs put it in
/// calico-system; the manifest install (calico-v3-crds.yaml) in kube-system.
pub const CALICO_WEBHOOKS_SERVICE: &str = "calico-webhooks";

/// The Service (namespace, name) a webhook calls, when it is Calico's: in a Calico namespace, or
/// calico-webhooks wherever a manifest install put it.
pub fn calico_webhook_service(webhook: &Value) -> Option<(&str, &str)> {
    let namespace = str_at(webhook, "/clientConfig/service/namespace")?;
    let name = str_at(webhook, "/clientConfig/service/name")?;
    (CALICO_NAMESPACES.contains(&namespace) || name == CALICO_WEBHOOKS_SERVICE)
        .then_some((namespace, name))
}

/// Ready addresses and ports of a Service, from its EndpointSlices.
fn service_endpoints(slices: &[Value], namespace: &str, service: &str) -> Vec<(String, u16)> {
    let mut out = BTreeSet::new();
    for slice in slices.iter().filter(|s| {
        str_at(s, "/metadata/namespace") == Some(namespace)
            && label(s, "kubernetes.io/service-name") == Some(service)
    }) {
        let ports: Vec<u16> = slice
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| str_at(p, "/protocol").unwrap_or("TCP") == "TCP")
            .filter_map(|p| u16::try_from(p.get("port")?.as_u64()?).ok())
            .collect();
        for endpoint in slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false))
        {
            for address in endpoint
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                for port in &ports {
                    out.insert((address.to_string(), *port));
                }
            }
        }
    }
    out.into_iter().collect()
}

impl ClusterFacts {
    /// The Calico release and where it was read: ClusterInformation, else the operator's
    /// Installation, else calico-node's image tag.
    pub fn calico_version(&self) -> Option<(&str, &'static str)> {
        self.versions
            .cluster_information
            .as_deref()
            .map(|v| (v, "ClusterInformation default"))
            .or_else(|| {
                self.versions
                    .operator
                    .as_deref()
                    .map(|v| (v, "Installation default (operator)"))
            })
            .or_else(|| {
                self.calico_node_version
                    .as_deref()
                    .map(|v| (v, "calico-node image"))
            })
    }

    /// calico-kube-controllers against calico-node, in words: equal, older, or the dangerous
    /// newer (with the fix). None when either image carries no version.
    pub fn version_skew(&self) -> Option<String> {
        let controllers = self.kube_controllers_version.as_deref()?;
        let node = self.calico_node_version.as_deref()?;
        if let Some((controllers, node)) = self.controllers_newer_than_node() {
            return Some(format!(
                "calico-kube-controllers {controllers} is newer than calico-node {node}: {}",
                skew_fix(&controllers, &node)
            ));
        }
        Some(if parse_version(controllers) == parse_version(node) {
            format!("none (calico-kube-controllers and calico-node both {node})")
        } else {
            format!(
                "calico-kube-controllers {controllers}, calico-node {node} (older controllers are safe for host endpoints)"
            )
        })
    }
}

/// What to do about calico-kube-controllers being newer than calico-node (Calico PR #3552).
pub fn skew_fix(controllers: &str, node: &str) -> String {
    format!(
        "upgrade calico-node to {controllers} (or roll calico-kube-controllers back to {node}) before enabling host endpoints; with the operator, finish the upgrade until `kubectl get tigerastatus calico` is Available"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calicos_webhooks_are_found_in_its_namespaces_and_by_name_in_a_manifest_install() {
        let webhook = |namespace: &str, name: &str| json!({"clientConfig": {"service": {"namespace": namespace, "name": name}}});
        let operator = webhook("calico-system", "calico-webhooks");
        let manifest = webhook("kube-system", "calico-webhooks");
        let other = webhook("kube-system", "metrics-server");
        assert_eq!(
            calico_webhook_service(&operator),
            Some(("calico-system", "calico-webhooks"))
        );
        assert_eq!(
            calico_webhook_service(&manifest),
            Some(("kube-system", "calico-webhooks"))
        );
        assert_eq!(calico_webhook_service(&other), None);
    }

    fn node(name: &str, ip: &str, control_plane: bool) -> Value {
        let mut labels = json!({"kubernetes.io/os": "linux", "kubernetes.io/hostname": name});
        if control_plane {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
        }
        json!({"metadata": {"name": name, "labels": labels},
               "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
    }

    fn pod(ns: &str, app: &str, node: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": format!("{app}-x"), "labels": {"k8s-app": app}},
               "spec": {"nodeName": node, "containers": [{"name": "c"}]}})
    }

    fn slice(ip: &str, port: u16) -> Value {
        json!({"endpoints": [{"addresses": [ip]}], "ports": [{"name": "https", "port": port}]})
    }

    #[test]
    fn control_plane_from_role_labels_and_port_from_endpoint_slice() {
        let inv = Inventory {
            calico_api: Some(CalicoApiMode::AggregatedApiserver),
            nodes: vec![
                node("cp-1", "10.0.0.1", true),
                node("w-1", "10.0.0.2", false),
            ],
            apiserver_endpoint_slices: vec![slice("10.0.0.1", 16443)],
            system_pods: vec![
                pod("calico-system", "calico-apiserver", "w-1"),
                pod("calico-system", "calico-typha", "w-1"),
                pod("kube-system", "calico-kube-controllers", "w-1"),
            ]
            .into(),
            ..Default::default()
        };
        let facts = detect(&inv);
        assert_eq!(facts.control_plane_nodes[0].name, "cp-1");
        assert_eq!(facts.control_plane_source, "node-role labels");
        assert_eq!(facts.apiserver_port, 16443);
        assert_eq!(
            facts.calico_apiserver_namespace.as_deref(),
            Some("calico-system")
        );
        assert_eq!(facts.kube_controllers_namespace, "kube-system");
        assert_eq!(facts.typha_nodes[0].name, "w-1");
    }

    #[test]
    fn control_plane_falls_back_to_endpoint_slice_addresses() {
        let inv = Inventory {
            nodes: vec![node("a", "10.0.0.1", false), node("b", "10.0.0.2", false)],
            apiserver_endpoint_slices: vec![slice("10.0.0.2", 6443)],
            ..Default::default()
        };
        let facts = detect(&inv);
        assert_eq!(facts.control_plane_nodes.len(), 1);
        assert_eq!(facts.control_plane_nodes[0].name, "b");
        assert!(facts.control_plane_source.contains("EndpointSlice"));
        assert_eq!(facts.calico_apiserver_namespace, None);
        assert!(facts.typha_nodes.is_empty());
        assert_eq!(facts.calico_api, CalicoApiMode::NotServed);
    }

    #[test]
    fn calico_apiserver_without_visible_pods_is_where_its_apiservice_routes() {
        let served = Inventory {
            calico_api: Some(CalicoApiMode::AggregatedApiserver),
            calico_apiserver_service_namespace: Some("calico-system".into()),
            ..Default::default()
        };
        let facts = detect(&served);
        assert_eq!(
            facts.calico_apiserver_namespace.as_deref(),
            Some("calico-system")
        );
        assert_eq!(facts.calico_apiserver_port, 5443);
        let native = Inventory {
            calico_api: Some(CalicoApiMode::NativeCrds),
            calico_apiserver_service_namespace: Some("calico-system".into()),
            ..Default::default()
        };
        assert_eq!(detect(&native).calico_apiserver_namespace, None);
    }

    #[test]
    fn hostname_label_wins_over_node_name() {
        let mut n = node("ip-10-0-0-1.ec2.internal", "10.0.0.1", true);
        n["metadata"]["labels"]["kubernetes.io/hostname"] = json!("ip-10-0-0-1");
        let facts = detect(&Inventory {
            nodes: vec![n],
            ..Default::default()
        });
        assert_eq!(facts.control_plane_nodes[0].hostname, "ip-10-0-0-1");
    }

    #[test]
    fn controllers_newer_than_node_is_detected_from_image_tags() {
        let image = |app: &str, tag: &str| {
            let mut p = pod("calico-system", app, "n");
            p["spec"]["containers"][0]["image"] = json!(format!("quay.io/calico/{app}:{tag}"));
            p
        };
        let facts = detect(&Inventory {
            system_pods: vec![
                image("calico-node", "v3.30.4"),
                image("calico-kube-controllers", "v3.31.0@sha256:abc"),
            ]
            .into(),
            ..Default::default()
        });
        assert_eq!(
            facts.controllers_newer_than_node(),
            Some(("v3.31.0".into(), "v3.30.4".into()))
        );
        let same = detect(&Inventory {
            system_pods: vec![
                image("calico-node", "v3.31.0"),
                image("calico-kube-controllers", "v3.31.0"),
            ]
            .into(),
            ..Default::default()
        });
        assert_eq!(same.controllers_newer_than_node(), None);
        assert_eq!(parse_version("latest"), None);
    }

    #[test]
    fn running_config_overrides_spec() {
        let inv = Inventory {
            kube_controllers_configuration: Some(json!({
                "spec": {"controllers": {"node": {"hostEndpoint": {"autoCreate": "Enabled"}}}},
                "status": {"runningConfig": {"controllers": {"node": {"hostEndpoint": {"autoCreate": "Disabled"}}}}}
            })),
            ..Default::default()
        };
        let facts = detect(&inv);
        assert_eq!(facts.host_endpoints.effective(), "Disabled");
        assert!(facts.host_endpoints.overridden());
    }

    #[test]
    fn failsafe_ports_from_felix_configuration() {
        let felix =
            json!({"spec": {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 22}]}});
        let facts = failsafe_facts(Some(&felix));
        assert!(!facts.inbound_allows_tcp(6443));
        assert!(facts.inbound_allows_tcp(22));
        assert!(!facts.defaults);
        assert!(failsafe_facts(None).inbound_allows_tcp(6443));
    }

    #[test]
    fn running_auto_create_as_calico_3_31_reports_it() {
        // What calico-kube-controllers v3.31.0 wrote in the lab, per case.
        let plain = json!({"status": {"runningConfig": {"controllers": {"node": {
            "hostEndpoint": {"autoCreate": "Enabled", "createDefaultHostEndpoint": "Enabled"}}}}}});
        assert_eq!(running_auto_create(&plain).as_deref(), Some("Enabled"));
        let env_disabled = json!({"spec": {"controllers": {"node": {"hostEndpoint": {"autoCreate": "Enabled"}}}},
            "status": {"environmentVars": {"AUTO_HOST_ENDPOINTS": "disabled", "DATASTORE_TYPE": "kubernetes"},
                "runningConfig": {"controllers": {"node": {"leakGracePeriod": "15m0s", "syncLabels": "Disabled"}}}}});
        assert_eq!(
            running_auto_create(&env_disabled).as_deref(),
            Some("Disabled")
        );
        let env_enabled = json!({"status": {"environmentVars": {"AUTO_HOST_ENDPOINTS": "Enabled"},
            "runningConfig": {"controllers": {"node": {"hostEndpoint": {"autoCreate": "Enabled"}}}}}});
        assert_eq!(
            running_auto_create(&env_enabled).as_deref(),
            Some("Enabled")
        );
        let no_node_controller = json!({"status": {"runningConfig": {"controllers": {}}}});
        assert_eq!(
            running_auto_create(&no_node_controller).as_deref(),
            Some("Disabled")
        );
        assert_eq!(running_auto_create(&json!({"spec": {}})), None);
    }
}
