//! Read what a command needs (its [`Observe`]): one LIST (or one GET) per kind, all at once,
//! page by page. Nodes, pods and namespaces are the lists that grow with a fleet; of them only
//! the fields the facts and the flow engine read are kept (the `*Fields` structs below), so a
//! page's text and a whole object are never held longer than it takes to pick those out.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Cluster;
use super::api::{calico_path, calico_target};
use super::errors::Target;
use crate::calico::policy::CalicoKind;
use crate::error::{Error, Result};
use crate::facts::{
    CONTROL_PLANE_ROLE_LABELS, CalicoApiMode, FELIX_NODE_CONFIGURATION_PREFIX, Inventory,
    SYSTEM_POD_LABEL_SELECTOR, calico_webhook_service, is_system_pod,
};
use crate::ui::progress::Progress;
// The snapshot types live in a pure module; re-exported so callers read them where they are made.
pub use crate::live::{LiveState, NodeScope, ObjectName, Observe, PodQuery, PodScope};

fn core_target(resource: &str) -> Target {
    Target {
        verb: "list",
        resource: resource.to_string(),
        namespace: None,
        name: None,
    }
}

/// Which API serves projectcalico.org/v3: the aggregated calico-apiserver, native CRDs, or none;
/// for the aggregated one, the namespace of the Service its APIService names (where
/// calico-apiserver runs, even when its pods cannot be seen).
async fn calico_api_mode(cluster: &Cluster) -> Result<(CalicoApiMode, Option<String>)> {
    let discovery = Target {
        verb: "get",
        resource: "the projectcalico.org/v3 API group".into(),
        namespace: None,
        name: None,
    };
    let apiservice = Target {
        verb: "get",
        resource: "apiservices.apiregistration.k8s.io".into(),
        namespace: None,
        name: Some("v3.projectcalico.org".into()),
    };
    // Both at once: the APIService only matters when the group is served.
    let (served, registration) = tokio::join!(
        cluster.api.get("/apis/projectcalico.org/v3", &discovery),
        cluster.api.get(
            "/apis/apiregistration.k8s.io/v1/apiservices/v3.projectcalico.org",
            &apiservice,
        ),
    );
    if served?.is_none() {
        return Ok((CalicoApiMode::NotServed, None));
    }
    Ok(match registration {
        // A CRD-backed group gets a local APIService (no spec.service).
        Ok(Some(service))
            if service
                .pointer("/spec/service")
                .is_some_and(|s| !s.is_null()) =>
        {
            let namespace = service
                .pointer("/spec/service/namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            (CalicoApiMode::AggregatedApiserver, namespace)
        }
        Ok(_) => (CalicoApiMode::NativeCrds, None),
        // Without permission to read APIServices, assume the common case and say so.
        Err(err) => {
            tracing::warn!(
                "cannot get apiservices.apiregistration.k8s.io/v3.projectcalico.org ({err}); assuming the aggregated calico-apiserver serves projectcalico.org/v3"
            );
            (CalicoApiMode::AggregatedApiserver, None)
        }
    })
}

pub fn not_served_error() -> Error {
    Error::refused(
        "this cluster does not serve the projectcalico.org/v3 API, so Calico policies cannot be read or written",
        Some(
            "install the Calico API server (operator installs: `kubectl create -f` an APIServer named default; manifest installs: apply calico-apiserver), or run Calico >= 3.32 with native v3 CRDs; this tool never writes crd.projectcalico.org/v1 objects directly".into(),
        ),
    )
}

async fn get_calico(cluster: &Cluster, kind: CalicoKind, name: &str) -> Result<Option<Value>> {
    get_named(cluster, &ObjectName::cluster_wide(kind, name)).await
}

async fn get_named(cluster: &Cluster, object: &ObjectName) -> Result<Option<Value>> {
    let namespace = object.namespace.as_deref();
    let name = Some(object.name.as_str());
    cluster
        .api
        .get(
            &calico_path(object.kind, namespace, name),
            &calico_target("get", object.kind, namespace, name),
        )
        .await
}

/// GET the Calico objects `named`, at once, into `live`'s lists (those that exist): what a
/// command that writes a few known policies reads instead of every policy in the cluster.
pub async fn observe_named(
    cluster: &Cluster,
    live: &mut LiveState,
    named: &[ObjectName],
) -> Result<()> {
    let mut named = named.to_vec();
    named.sort();
    named.dedup();
    let found =
        futures::future::try_join_all(named.iter().map(|object| get_named(cluster, object)))
            .await?;
    for (object, value) in named.iter().zip(found) {
        if let Some(value) = value {
            live.insert(object.kind, value);
        }
    }
    Ok(())
}

/// Every Calico and Kubernetes network policy, replacing what `live` holds of them: the flow
/// report of a stage whose policies select an endpoint.
pub async fn observe_policies(cluster: &Cluster, live: &mut LiveState) -> Result<()> {
    let progress = Progress::start("reading the policies");
    let (gnps, nps, knps) = tokio::join!(
        list_calico(cluster, CalicoKind::GlobalNetworkPolicy),
        list_calico(cluster, CalicoKind::NetworkPolicy),
        list_k8s_network_policies(cluster),
    );
    let (gnps, nps) = (gnps?, nps?);
    progress.add("policies", gnps.len() + nps.len());
    live.global_network_policies = gnps;
    live.network_policies = nps;
    let k8s_network_policies = warned(knps);
    live.inventory.k8s_network_policies_unread = k8s_network_policies.is_none();
    live.inventory.k8s_network_policies = k8s_network_policies.unwrap_or_default();
    Ok(())
}

async fn list_calico(cluster: &Cluster, kind: CalicoKind) -> Result<Vec<Value>> {
    Ok(cluster
        .api
        .list(
            &calico_path(kind, None, None),
            None,
            &calico_target("list", kind, None, None),
        )
        .await?
        .unwrap_or_default())
}

async fn list_core(
    cluster: &Cluster,
    path: &str,
    selector: Option<&str>,
    resource: &str,
) -> Result<Vec<Value>> {
    Ok(cluster
        .api
        .list(path, selector, &core_target(resource))
        .await?
        .unwrap_or_default())
}

/// LIST a kind page by page, keeping only the fields `T` names, each item back as JSON for the
/// facts and the engine; counts the items on `progress` as `what`.
async fn list_pruned<T: DeserializeOwned + Serialize>(
    cluster: &Cluster,
    path: &str,
    selector: Option<&str>,
    resource: &str,
    progress: &Progress,
    what: &'static str,
) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    cluster
        .api
        .list_pages(path, selector, &core_target(resource), |page: Vec<T>| {
            progress.add(what, page.len());
            items.extend(
                page.into_iter()
                    .map(|item| serde_json::to_value(item).expect("plain structs serialise")),
            );
        })
        .await?;
    Ok(items)
}

async fn list_nodes(cluster: &Cluster, progress: &Progress) -> Result<Vec<Value>> {
    list_pruned::<NodeFields>(cluster, "/api/v1/nodes", None, "nodes", progress, "nodes").await
}

/// The nodes `scope` asks for, as far as they can be known before the host endpoints and the
/// system pods are: of [`NodeScope::Named`], those with a control-plane role label.
async fn list_scoped_nodes(
    cluster: &Cluster,
    scope: NodeScope,
    progress: &Progress,
) -> Result<Vec<Value>> {
    if scope == NodeScope::Every {
        return list_nodes(cluster, progress).await;
    }
    let lists = futures::future::try_join_all(CONTROL_PLANE_ROLE_LABELS.iter().map(|label| {
        list_pruned::<NodeFields>(
            cluster,
            "/api/v1/nodes",
            Some(label),
            "nodes",
            progress,
            "nodes",
        )
    }))
    .await?;
    Ok(by_name(lists.into_iter().flatten()))
}

/// Complete a [`NodeScope::Named`] read once the host endpoints and the system pods are known:
/// the nodes calico-typha runs on are added, or every node is read where the scope says so.
async fn complete_named_nodes(
    cluster: &Cluster,
    control_plane: Vec<Value>,
    host_endpoints: &[Value],
    system_pods: &[Value],
    progress: &Progress,
) -> Result<Vec<Value>> {
    if control_plane.is_empty() || !host_endpoints.is_empty() {
        return list_nodes(cluster, progress).await;
    }
    let known: std::collections::BTreeSet<&str> =
        control_plane.iter().filter_map(name_of).collect();
    let mut typha_nodes: Vec<&str> = system_pods
        .iter()
        .filter(|p| {
            p.pointer("/metadata/labels/k8s-app")
                .and_then(Value::as_str)
                == Some("calico-typha")
        })
        .filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str))
        .filter(|name| !known.contains(name))
        .collect();
    typha_nodes.sort_unstable();
    typha_nodes.dedup();
    let fetched =
        futures::future::try_join_all(typha_nodes.iter().map(|name| get_node(cluster, name)))
            .await?;
    Ok(by_name(
        control_plane
            .into_iter()
            .chain(fetched.into_iter().flatten()),
    ))
}

async fn get_node(cluster: &Cluster, name: &str) -> Result<Option<Value>> {
    let target = Target {
        verb: "get",
        resource: "nodes".into(),
        namespace: None,
        name: Some(name.to_string()),
    };
    let node = cluster
        .api
        .get(&format!("/api/v1/nodes/{name}"), &target)
        .await?;
    Ok(node.map(|node| {
        let kept: NodeFields = serde_json::from_value(node).unwrap_or(NodeFields {
            metadata: None,
            status: None,
        });
        serde_json::to_value(kept).expect("plain structs serialise")
    }))
}

fn name_of(object: &Value) -> Option<&str> {
    object.pointer("/metadata/name").and_then(Value::as_str)
}

/// Objects from several reads, each once, sorted by name as one LIST returns them.
fn by_name(objects: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let unique: std::collections::BTreeMap<String, Value> = objects
        .into_iter()
        .map(|o| (name_of(&o).unwrap_or_default().to_string(), o))
        .collect();
    unique.into_values().collect()
}

async fn list_pod_query(
    cluster: &Cluster,
    query: &PodQuery,
    progress: &Progress,
) -> Result<Vec<Value>> {
    let path = match &query.namespace {
        Some(namespace) => format!("/api/v1/namespaces/{namespace}/pods"),
        None => "/api/v1/pods".to_string(),
    };
    list_pruned::<PodFields>(
        cluster,
        &path,
        query.label_selector.as_deref(),
        "pods",
        progress,
        "pods",
    )
    .await
}

/// The pods `scope` asks for, in the order one LIST of every pod returns them (by namespace,
/// then name), each once.
async fn list_pods(cluster: &Cluster, scope: &PodScope, progress: &Progress) -> Result<Vec<Value>> {
    let system = PodQuery {
        namespace: None,
        label_selector: Some(SYSTEM_POD_LABEL_SELECTOR.to_string()),
    };
    let queries = match scope {
        PodScope::Every => {
            let every = PodQuery {
                namespace: None,
                label_selector: None,
            };
            return list_pod_query(cluster, &every, progress).await;
        }
        PodScope::System => return list_pod_query(cluster, &system, progress).await,
        PodScope::Also(queries) => std::iter::once(&system).chain(queries),
    };
    let lists = futures::future::try_join_all(
        queries.map(|query| list_pod_query(cluster, query, progress)),
    )
    .await?;
    Ok(merge_pods(lists.into_iter().flatten()))
}

/// Whether any of `queries` returns a pod: one item asked of each, at once.
pub async fn any_pod(cluster: &Cluster, queries: &[PodQuery]) -> Result<bool> {
    let answers = futures::future::try_join_all(queries.iter().map(|query| {
        let path = match &query.namespace {
            Some(namespace) => format!("/api/v1/namespaces/{namespace}/pods"),
            None => "/api/v1/pods".to_string(),
        };
        async move {
            cluster
                .api
                .any(&path, query.label_selector.as_deref(), &core_target("pods"))
                .await
        }
    }))
    .await?;
    Ok(answers.into_iter().any(|found| found))
}

/// `namespace/name`: the key the API server stores and lists pods by.
fn pod_key(pod: &Value) -> String {
    let at = |pointer| {
        pod.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    format!("{}/{}", at("/metadata/namespace"), at("/metadata/name"))
}

/// Pods from several LISTs, each once, sorted as one LIST of every pod returns them.
fn merge_pods(pods: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let by_key: std::collections::BTreeMap<String, Value> =
        pods.into_iter().map(|pod| (pod_key(&pod), pod)).collect();
    by_key.into_values().collect()
}

/// Read the pods `scope` adds to what `live` holds (a stage's flow report, once the stage's
/// policies are known).
pub async fn observe_pods(cluster: &Cluster, live: &mut LiveState, scope: &PodScope) -> Result<()> {
    if *scope == PodScope::System {
        return Ok(());
    }
    let progress = Progress::start("reading pods");
    let inventory = &mut live.inventory;
    inventory.pods = match scope {
        PodScope::Also(queries) => {
            // The system pods are in `live` already.
            let lists = futures::future::try_join_all(
                queries
                    .iter()
                    .map(|query| list_pod_query(cluster, query, &progress)),
            )
            .await?;
            let read = lists.into_iter().flatten();
            merge_pods(std::mem::take(&mut inventory.pods).into_iter().chain(read)).into()
        }
        _ => list_pods(cluster, scope, &progress).await?.into(),
    };
    Ok(())
}

/// A read whose failure only loses information: the value, or the warning that says what the
/// command assumes without it. The warnings are said once the command is known to go on
/// ([`warned`]), so a cluster that does not serve projectcalico.org/v3 gets its one error and
/// no warnings about the Calico kinds read alongside the discovery.
type Optional<T> = std::result::Result<T, String>;

fn optional<T>(read: Result<T>, assumption: impl FnOnce(&Error) -> String) -> Optional<T> {
    read.map_err(|err| assumption(&err))
}

fn warned<T>(read: Optional<T>) -> Option<T> {
    read.inspect_err(|warning| tracing::warn!("{warning}")).ok()
}

/// IPPools tell which encapsulation is in use; without permission to read them the flow check
/// assumes VXLAN and says so, so their absence never fails a command.
async fn list_ip_pools(cluster: &Cluster) -> Optional<Option<Vec<Value>>> {
    let target = core_target("ippools.projectcalico.org");
    optional(
        cluster
            .api
            .list("/apis/projectcalico.org/v3/ippools", None, &target)
            .await,
        |err| {
            format!("cannot list ippools.projectcalico.org ({err}); the flow check assumes VXLAN")
        },
    )
}

/// Kubernetes NetworkPolicies, all namespaces; Calico enforces them at order 1000. Without
/// permission to read them the flow check assumes there are none and says so.
async fn list_k8s_network_policies(cluster: &Cluster) -> Optional<Vec<Value>> {
    let target = core_target("networkpolicies.networking.k8s.io");
    optional(
        cluster
            .api
            .list("/apis/networking.k8s.io/v1/networkpolicies", None, &target)
            .await
            .map(Option::unwrap_or_default),
        |err| {
            format!(
                "cannot list networkpolicies.networking.k8s.io ({err}); the flow check assumes there are no Kubernetes NetworkPolicies"
            )
        },
    )
}

/// FelixConfiguration `default` and the per-node `node.<name>` ones, from one LIST.
async fn list_felix_configurations(cluster: &Cluster) -> Result<(Option<Value>, Vec<Value>)> {
    let all = list_calico(cluster, CalicoKind::FelixConfiguration).await?;
    let name = |c: &Value| {
        c.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let default = all.iter().find(|c| name(c) == "default").cloned();
    let per_node = all
        .into_iter()
        .filter(|c| name(c).starts_with(FELIX_NODE_CONFIGURATION_PREFIX))
        .collect();
    Ok((default, per_node))
}

/// Tiers give policy its order and what a tier does when no rule matched; without them the flow
/// check assumes Calico's own tiers as the release creates them and says so.
async fn list_tiers(cluster: &Cluster) -> Optional<Vec<Value>> {
    let target = core_target("tiers.projectcalico.org");
    optional(
        cluster
            .api
            .list("/apis/projectcalico.org/v3/tiers", None, &target)
            .await
            .map(Option::unwrap_or_default),
        |err| {
            format!(
                "cannot list tiers.projectcalico.org ({err}); the flow check assumes Calico's own tiers (default, adminnetworkpolicy, baselineadminnetworkpolicy) with their built-in order and default action"
            )
        },
    )
}

/// One object whose absence only loses information (the Calico version): None when missing,
/// the warning when unreadable.
async fn get_optional(
    cluster: &Cluster,
    path: &str,
    resource: &str,
    name: &str,
) -> Optional<Option<Value>> {
    let target = Target {
        verb: "get",
        resource: resource.to_string(),
        namespace: None,
        name: Some(name.to_string()),
    };
    optional(cluster.api.get(path, &target).await, |err| {
        format!("cannot get {resource}/{name} ({err}); the Calico version it reports is not shown")
    })
}

/// ValidatingWebhookConfigurations, for the webhooks Calico's pods serve (the API server must
/// reach them or every Calico write fails), and the EndpointSlices of the Services they call.
async fn list_validating_webhooks(cluster: &Cluster) -> (Optional<Vec<Value>>, Vec<Value>) {
    let target = core_target("validatingwebhookconfigurations.admissionregistration.k8s.io");
    let webhooks = optional(
        cluster
            .api
            .list(
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
                None,
                &target,
            )
            .await
            .map(Option::unwrap_or_default),
        |err| {
            format!(
                "cannot list validatingwebhookconfigurations.admissionregistration.k8s.io ({err}); the flow check and lockdown's preflight cannot see whether the API server must reach Calico's admission webhooks"
            )
        },
    );
    let slices = match &webhooks {
        Ok(webhooks) => list_webhook_endpoint_slices(cluster, webhooks).await,
        Err(_) => Vec::new(),
    };
    (webhooks, slices)
}

/// The EndpointSlices of the Services that webhooks in a Calico namespace call: where the API
/// server sends its admission requests.
async fn list_webhook_endpoint_slices(cluster: &Cluster, webhooks: &[Value]) -> Vec<Value> {
    let mut services: Vec<(String, String)> = webhooks
        .iter()
        .filter_map(|c| c.get("webhooks").and_then(Value::as_array))
        .flatten()
        .filter_map(calico_webhook_service)
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .collect();
    services.sort();
    services.dedup();
    let lists = futures::future::join_all(services.iter().map(|(namespace, service)| async move {
        let path = format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices");
        let selector = format!("kubernetes.io/service-name={service}");
        list_core(cluster, &path, Some(&selector), "endpointslices.discovery.k8s.io")
            .await
            .inspect_err(|err| {
                tracing::warn!(
                    "cannot list the endpoints of Service {namespace}/{service} ({err}); its admission webhook is not checked"
                )
            })
            .unwrap_or_default()
    }))
    .await;
    lists.into_iter().flatten().collect()
}

/// Nodes and host endpoints only: what `enable-hep --wait` polls, two LISTs a round instead of
/// the whole inventory.
pub async fn nodes_and_host_endpoints(cluster: &Cluster) -> Result<(Vec<Value>, Vec<Value>)> {
    let progress = Progress::start("reading nodes and host endpoints");
    tokio::try_join!(
        list_nodes(cluster, &progress),
        list_calico(cluster, CalicoKind::HostEndpoint),
    )
}

/// Read the whole cluster, every pod included (the flow check over every workload). Fails with
/// a clear message when projectcalico.org/v3 is not served.
pub async fn fetch(cluster: &Cluster) -> Result<LiveState> {
    fetch_observed(cluster, &Observe::everything()).await
}

/// The kinds the Kubernetes API server serves itself: the lists that grow with a fleet, and the
/// `kubernetes` Service's endpoints.
struct CoreReads {
    nodes: Vec<Value>,
    apiserver_endpoint_slices: Vec<Value>,
    pods: Vec<Value>,
    namespaces: Vec<Value>,
}

async fn read_core(cluster: &Cluster, observe: &Observe, progress: &Progress) -> Result<CoreReads> {
    let (nodes, apiserver_endpoint_slices, pods, namespaces) = tokio::try_join!(
        list_scoped_nodes(cluster, observe.nodes, progress),
        list_core(
            cluster,
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            Some("kubernetes.io/service-name=kubernetes"),
            "endpointslices.discovery.k8s.io",
        ),
        list_pods(cluster, &observe.pods, progress),
        list_pruned::<NamespaceFields>(
            cluster,
            "/api/v1/namespaces",
            None,
            "namespaces",
            progress,
            "namespaces",
        ),
    )?;
    Ok(CoreReads {
        nodes,
        apiserver_endpoint_slices,
        pods,
        namespaces,
    })
}

/// The Calico configuration and the policies, Calico's and Kubernetes': what the plan and the
/// flow check evaluate.
struct PolicyReads {
    kube_controllers_configuration: Option<Value>,
    felix_configuration: Option<Value>,
    felix_node_configurations: Vec<Value>,
    host_endpoints: Vec<Value>,
    global_network_policies: Vec<Value>,
    network_policies: Vec<Value>,
    ip_pools: Optional<Option<Vec<Value>>>,
    k8s_network_policies: Optional<Vec<Value>>,
}

/// The Calico configuration, and the policies when `with_policies`.
async fn read_policies(cluster: &Cluster, with_policies: bool) -> Result<PolicyReads> {
    let policies = |kind| async move {
        match with_policies {
            true => list_calico(cluster, kind).await,
            false => Ok(Vec::new()),
        }
    };
    let (kcc, (felix, felix_nodes), heps, gnps, nps, (ip_pools, knps)) = tokio::try_join!(
        get_calico(cluster, CalicoKind::KubeControllersConfiguration, "default"),
        list_felix_configurations(cluster),
        list_calico(cluster, CalicoKind::HostEndpoint),
        policies(CalicoKind::GlobalNetworkPolicy),
        policies(CalicoKind::NetworkPolicy),
        async {
            let k8s_network_policies = async {
                match with_policies {
                    true => list_k8s_network_policies(cluster).await,
                    false => Ok(Vec::new()),
                }
            };
            Ok(tokio::join!(list_ip_pools(cluster), k8s_network_policies))
        },
    )?;
    Ok(PolicyReads {
        kube_controllers_configuration: kcc,
        felix_configuration: felix,
        felix_node_configurations: felix_nodes,
        host_endpoints: heps,
        global_network_policies: gnps,
        network_policies: nps,
        ip_pools,
        k8s_network_policies: knps,
    })
}

/// What only adds information: tiers, the Calico version, admission webhooks.
struct OptionalReads {
    tiers: Optional<Vec<Value>>,
    cluster_information: Optional<Option<Value>>,
    installation: Optional<Option<Value>>,
    validating_webhooks: Optional<Vec<Value>>,
    webhook_endpoint_slices: Vec<Value>,
    staged_global_network_policies: Optional<Vec<Value>>,
    staged_network_policies: Optional<Vec<Value>>,
}

/// Staged policies (Calico 3.30+): a release without them answers 404 (none); without
/// permission they are left out with a warning that names them.
async fn list_staged(cluster: &Cluster, kind: CalicoKind) -> Optional<Vec<Value>> {
    optional(list_calico(cluster, kind).await, |err| {
        format!(
            "cannot list {} ({err}); staged policies are not shown and cannot be promoted",
            kind.resource()
        )
    })
}

async fn read_optional(cluster: &Cluster) -> OptionalReads {
    let (
        tiers,
        cluster_information,
        installation,
        (validating_webhooks, webhook_endpoint_slices),
        staged_global_network_policies,
        staged_network_policies,
    ) = tokio::join!(
        list_tiers(cluster),
        get_optional(
            cluster,
            "/apis/projectcalico.org/v3/clusterinformations/default",
            "clusterinformations.projectcalico.org",
            "default",
        ),
        get_optional(
            cluster,
            "/apis/operator.tigera.io/v1/installations/default",
            "installations.operator.tigera.io",
            "default",
        ),
        list_validating_webhooks(cluster),
        list_staged(cluster, CalicoKind::StagedGlobalNetworkPolicy),
        list_staged(cluster, CalicoKind::StagedNetworkPolicy),
    );
    OptionalReads {
        tiers,
        cluster_information,
        installation,
        validating_webhooks,
        webhook_endpoint_slices,
        staged_global_network_policies,
        staged_network_policies,
    }
}

/// Read what `observe` asks for: every read at once, lists page by page. The Calico reads do
/// not wait for the discovery of the API that serves them: where it is not served they come
/// back empty, and the discovery's answer decides.
pub async fn fetch_observed(cluster: &Cluster, observe: &Observe) -> Result<LiveState> {
    let progress = Progress::start("reading the cluster");
    let (mode, core, policies, optional) = tokio::join!(
        calico_api_mode(cluster),
        read_core(cluster, observe, &progress),
        read_policies(cluster, observe.policies),
        read_optional(cluster),
    );
    let (mode, calico_apiserver_service_namespace) = mode?;
    if mode == CalicoApiMode::NotServed {
        return Err(not_served_error());
    }
    let (core, policies) = (core?, policies?);
    let system_pods: Vec<Value> = core
        .pods
        .iter()
        .filter(|p| is_system_pod(p))
        .cloned()
        .collect();
    let nodes = match observe.nodes {
        NodeScope::Every => core.nodes,
        NodeScope::Named => {
            let heps = &policies.host_endpoints;
            complete_named_nodes(cluster, core.nodes, heps, &system_pods, &progress).await?
        }
    };
    let k8s_network_policies = warned(policies.k8s_network_policies);
    Ok(LiveState {
        inventory: Inventory {
            calico_api: Some(mode),
            calico_apiserver_service_namespace,
            nodes,
            apiserver_endpoint_slices: core.apiserver_endpoint_slices,
            system_pods: system_pods.into(),
            pods: core.pods.into(),
            ip_pools: warned(policies.ip_pools).flatten(),
            namespaces: core.namespaces,
            kube_controllers_configuration: policies.kube_controllers_configuration,
            felix_configuration: policies.felix_configuration,
            felix_node_configurations: policies.felix_node_configurations,
            tiers: warned(optional.tiers),
            cluster_information: warned(optional.cluster_information).flatten(),
            installation: warned(optional.installation).flatten(),
            validating_webhooks: warned(optional.validating_webhooks),
            webhook_endpoint_slices: optional.webhook_endpoint_slices,
            host_endpoints: policies.host_endpoints,
            k8s_network_policies_unread: k8s_network_policies.is_none(),
            k8s_network_policies: k8s_network_policies.unwrap_or_default(),
        },
        global_network_policies: policies.global_network_policies,
        network_policies: policies.network_policies,
        staged_global_network_policies: warned(optional.staged_global_network_policies)
            .unwrap_or_default(),
        staged_network_policies: warned(optional.staged_network_policies).unwrap_or_default(),
    })
}

// The fields kept of the objects that grow with a fleet. Every field the facts
// (`facts::detect`), the engine (`engine::build`, `engine::scenario`) or a command reads from a
// node, pod or namespace must be named here, or it reads as absent.

#[derive(Debug, Deserialize, Serialize)]
struct MetadataFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    labels: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, Serialize)]
struct NamespaceFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<MetadataFields>,
}

#[derive(Debug, Deserialize, Serialize)]
struct NodeFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<NodeMetadataFields>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<NodeStatusFields>,
}

/// A node's metadata with the Calico annotations the host endpoint prediction reads
/// (`calico::host_endpoints::NODE_ANNOTATIONS`), and no others.
#[derive(Debug, Deserialize, Serialize)]
struct NodeMetadataFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    labels: Option<Map<String, Value>>,
    #[serde(
        default,
        deserialize_with = "calico_node_annotations",
        skip_serializing_if = "Option::is_none"
    )]
    annotations: Option<Map<String, Value>>,
}

fn calico_node_annotations<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Map<String, Value>>, D::Error> {
    let all: Option<Map<String, Value>> = Option::deserialize(deserializer)?;
    let kept: Map<String, Value> = all
        .into_iter()
        .flatten()
        .filter(|(key, _)| crate::calico::host_endpoints::NODE_ANNOTATIONS.contains(&key.as_str()))
        .collect();
    Ok((!kept.is_empty()).then_some(kept))
}

#[derive(Debug, Deserialize, Serialize)]
struct NodeStatusFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    addresses: Option<Vec<NodeAddressFields>>,
}

#[derive(Debug, Deserialize, Serialize)]
struct NodeAddressFields {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct PodFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<MetadataFields>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spec: Option<PodSpecFields>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<PodStatusFields>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host_network: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    containers: Option<Vec<ContainerFields>>,
}

#[derive(Debug, Deserialize, Serialize)]
struct ContainerFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ports: Option<Vec<ContainerPortFields>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPortFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container_port: Option<i64>,
}

#[derive(Debug, Deserialize, Serialize)]
struct PodStatusFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<String>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pod_ip: Option<String>,
    #[serde(default, rename = "podIPs", skip_serializing_if = "Option::is_none")]
    pod_ips: Option<Vec<PodIpFields>>,
}

#[derive(Debug, Deserialize, Serialize)]
struct PodIpFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::stages::{StageId, StageOptions};

    fn pruned<T: DeserializeOwned + Serialize>(object: &Value) -> Value {
        let fields: T = serde_json::from_value(object.clone()).unwrap();
        serde_json::to_value(fields).unwrap()
    }

    /// Objects as the API server returns them, with what the facts and the engine never read.
    fn full_node(name: &str, ip: &str, control: bool) -> Value {
        let mut labels = json!({"kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
                                "kubernetes.io/arch": "amd64"});
        if control {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
        }
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": name, "labels": labels, "uid": "u", "resourceVersion": "7",
                            "annotations": {"projectcalico.org/IPv4Address": format!("{ip}/24"),
                                            "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock"},
                            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]},
               "spec": {"podCIDR": "192.168.0.0/24"},
               "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                        {"type": "Hostname", "address": name}],
                          "conditions": [{"type": "Ready", "status": "True"}],
                          "images": [{"names": ["a"], "sizeBytes": 1}]}})
    }

    fn full_pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"namespace": ns, "name": name, "labels": labels, "uid": "u",
                            "ownerReferences": [{"kind": "ReplicaSet", "name": "x"}],
                            "managedFields": [{"manager": "kube-controller-manager"}]},
               "spec": {"nodeName": node, "serviceAccountName": "sa", "restartPolicy": "Always",
                        "volumes": [{"name": "v", "emptyDir": {}}],
                        "containers": [{"name": "c", "image": "quay.io/calico/apiserver:v3.31.0",
                                        "args": ["--x"], "env": [{"name": "A", "value": "b"}],
                                        "ports": [{"name": "apiserver", "containerPort": 5443,
                                                   "protocol": "TCP"}]}]},
               "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                          "hostIP": "10.0.0.2", "conditions": [{"type": "Ready"}]}})
    }

    fn full_state() -> LiveState {
        let mut live = LiveState::default();
        let inventory = &mut live.inventory;
        inventory.calico_api = Some(CalicoApiMode::AggregatedApiserver);
        inventory.nodes = vec![
            full_node("control", "10.0.0.1", true),
            full_node("node1", "10.0.0.2", false),
        ];
        inventory.pods = vec![
            full_pod(
                "calico-apiserver",
                "calico-apiserver-1",
                "node1",
                "192.168.1.5",
                json!({"k8s-app": "calico-apiserver"}),
            ),
            full_pod(
                "kube-system",
                "coredns-1",
                "node1",
                "192.168.1.2",
                json!({"k8s-app": "kube-dns"}),
            ),
            full_pod(
                "shop",
                "web",
                "control",
                "192.168.0.9",
                json!({"app": "web"}),
            ),
        ]
        .into();
        inventory.system_pods = inventory
            .pods
            .iter()
            .filter(|p| is_system_pod(p))
            .cloned()
            .collect();
        inventory.namespaces = ["calico-apiserver", "kube-system", "shop"]
            .into_iter()
            .map(|n| {
                json!({"metadata": {"name": n, "labels": {"team": n}, "uid": "u"},
                            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
            })
            .collect();
        inventory.apiserver_endpoint_slices = vec![
            json!({"endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"name": "https", "port": 6443}]}),
        ];
        live
    }

    fn pruned_state(full: &LiveState) -> LiveState {
        let mut live = full.clone();
        let inventory = &mut live.inventory;
        inventory.nodes = full
            .inventory
            .nodes
            .iter()
            .map(pruned::<NodeFields>)
            .collect();
        inventory.pods = full
            .inventory
            .pods
            .iter()
            .map(pruned::<PodFields>)
            .collect();
        inventory.system_pods = inventory
            .pods
            .iter()
            .filter(|p| is_system_pod(p))
            .cloned()
            .collect();
        inventory.namespaces = full
            .inventory
            .namespaces
            .iter()
            .map(pruned::<NamespaceFields>)
            .collect();
        live
    }

    #[test]
    fn the_kept_fields_give_the_same_facts_and_flow_verdicts() {
        let full = full_state();
        let kept = pruned_state(&full);
        let facts = crate::facts::detect(&full.inventory);
        assert_eq!(crate::facts::detect(&kept.inventory), facts);
        assert_eq!(facts.calico_apiserver_port, 5443);
        let options = StageOptions::with_defaults();
        for after in [None, Some(StageId::IsolateApps), Some(StageId::Lockdown)] {
            let report = |live: &LiveState| {
                serde_json::to_value(crate::engine::check(live, &facts, &options, after)).unwrap()
            };
            assert_eq!(report(&kept), report(&full), "{after:?}");
        }
    }

    #[test]
    fn only_the_read_fields_are_kept() {
        let pod = pruned::<PodFields>(&full_state().inventory.pods[2]);
        assert_eq!(
            pod,
            json!({"metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                   "spec": {"nodeName": "control", "serviceAccountName": "sa",
                            "containers": [{"image": "quay.io/calico/apiserver:v3.31.0",
                                            "ports": [{"name": "apiserver", "protocol": "TCP",
                                                       "containerPort": 5443}]}]},
                   "status": {"phase": "Running", "podIP": "192.168.0.9",
                              "podIPs": [{"ip": "192.168.0.9"}]}})
        );
        let node = pruned::<NodeFields>(&full_node("n", "10.0.0.9", false));
        assert_eq!(
            node["status"]["addresses"][0],
            json!({"type": "InternalIP", "address": "10.0.0.9"})
        );
        assert!(node["metadata"].get("managedFields").is_none());
        // Of the annotations, only Calico's that the host endpoint prediction reads.
        assert_eq!(
            node["metadata"]["annotations"],
            json!({"projectcalico.org/IPv4Address": "10.0.0.9/24"})
        );
        assert!(node["status"].get("images").is_none());
        // An object with nothing we read stays an empty object, not an error.
        assert_eq!(pruned::<PodFields>(&json!({"kind": "Pod"})), json!({}));
    }

    #[test]
    fn pods_from_several_lists_come_once_in_the_servers_order() {
        let pod = |ns: &str, name: &str, marker: u8| json!({"metadata": {"namespace": ns, "name": name}, "marker": marker});
        let merged = merge_pods(vec![
            pod("app", "x", 1),
            pod("app-b", "y", 1),
            pod("app", "a", 1),
            pod("app", "x", 2),
        ]);
        let keys: Vec<String> = merged.iter().map(pod_key).collect();
        // The server orders by the `namespace/name` key: `app-b/…` before `app/…` ('-' < '/').
        assert_eq!(keys, ["app-b/y", "app/a", "app/x"]);
        assert_eq!(merged.len(), 3);
    }
}
