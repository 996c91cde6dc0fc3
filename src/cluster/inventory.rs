//! Read everything the facts and the plan need: one LIST (or one GET) per kind, all at once.

use serde_json::Value;

use super::Cluster;
use super::api::{calico_path, calico_target};
use super::errors::Target;
use crate::calico::policy::CalicoKind;
use crate::error::{Error, Result};
use crate::facts::{CalicoApiMode, Inventory, is_system_pod};
// The snapshot type lives in a pure module; re-exported so callers read it where it is made.
pub use crate::live::LiveState;

fn core_target(resource: &str) -> Target {
    Target {
        verb: "list",
        resource: resource.to_string(),
        namespace: None,
        name: None,
    }
}

/// Which API serves projectcalico.org/v3: the aggregated calico-apiserver, native CRDs, or none.
async fn calico_api_mode(cluster: &Cluster) -> Result<CalicoApiMode> {
    let discovery = Target {
        verb: "get",
        resource: "the projectcalico.org/v3 API group".into(),
        namespace: None,
        name: None,
    };
    if cluster
        .api
        .get("/apis/projectcalico.org/v3", &discovery)
        .await?
        .is_none()
    {
        return Ok(CalicoApiMode::NotServed);
    }
    let apiservice = Target {
        verb: "get",
        resource: "apiservices.apiregistration.k8s.io".into(),
        namespace: None,
        name: Some("v3.projectcalico.org".into()),
    };
    let registration = cluster
        .api
        .get(
            "/apis/apiregistration.k8s.io/v1/apiservices/v3.projectcalico.org",
            &apiservice,
        )
        .await;
    Ok(match registration {
        // A CRD-backed group gets a local APIService (no spec.service).
        Ok(Some(service))
            if service
                .pointer("/spec/service")
                .is_some_and(|s| !s.is_null()) =>
        {
            CalicoApiMode::AggregatedApiserver
        }
        Ok(_) => CalicoApiMode::NativeCrds,
        // Without permission to read APIServices, assume the common case and say so.
        Err(err) => {
            tracing::warn!(
                "cannot get apiservices.apiregistration.k8s.io/v3.projectcalico.org ({err}); assuming the aggregated calico-apiserver serves projectcalico.org/v3"
            );
            CalicoApiMode::AggregatedApiserver
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
    cluster
        .api
        .get(
            &calico_path(kind, None, Some(name)),
            &calico_target("get", kind, None, Some(name)),
        )
        .await
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

/// IPPools tell which encapsulation is in use; without permission to read them the flow check
/// assumes VXLAN and says so, so their absence never fails a command.
async fn list_ip_pools(cluster: &Cluster) -> Result<Option<Vec<Value>>> {
    let target = core_target("ippools.projectcalico.org");
    Ok(cluster
        .api
        .list("/apis/projectcalico.org/v3/ippools", None, &target)
        .await
        .inspect_err(|err| {
            tracing::warn!(
                "cannot list ippools.projectcalico.org ({err}); the flow check assumes VXLAN"
            )
        })
        .ok()
        .flatten())
}

/// Kubernetes NetworkPolicies, all namespaces; Calico enforces them at order 1000. Without
/// permission to read them the flow check assumes there are none and says so (None).
async fn list_k8s_network_policies(cluster: &Cluster) -> Result<Option<Vec<Value>>> {
    let target = core_target("networkpolicies.networking.k8s.io");
    Ok(cluster
        .api
        .list("/apis/networking.k8s.io/v1/networkpolicies", None, &target)
        .await
        .inspect_err(|err| {
            tracing::warn!(
                "cannot list networkpolicies.networking.k8s.io ({err}); the flow check assumes there are no Kubernetes NetworkPolicies"
            )
        })
        .map(Option::unwrap_or_default)
        .ok())
}

/// Nodes and host endpoints only: what `enable-hep --wait` polls, two LISTs a round instead of
/// the whole inventory.
pub async fn nodes_and_host_endpoints(cluster: &Cluster) -> Result<(Vec<Value>, Vec<Value>)> {
    tokio::try_join!(
        list_core(cluster, "/api/v1/nodes", None, "nodes"),
        list_calico(cluster, CalicoKind::HostEndpoint),
    )
}

/// Read the cluster. Fails with a clear message when projectcalico.org/v3 is not served.
pub async fn fetch(cluster: &Cluster) -> Result<LiveState> {
    let (mode, nodes, slices, pods, namespaces) = tokio::try_join!(
        calico_api_mode(cluster),
        list_core(cluster, "/api/v1/nodes", None, "nodes"),
        list_core(
            cluster,
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            Some("kubernetes.io/service-name=kubernetes"),
            "endpointslices.discovery.k8s.io",
        ),
        // Every pod: the flow check needs application pods too; the facts filter system pods.
        list_core(cluster, "/api/v1/pods", None, "pods"),
        list_core(cluster, "/api/v1/namespaces", None, "namespaces"),
    )?;
    if mode == CalicoApiMode::NotServed {
        return Err(not_served_error());
    }
    let (kcc, felix, heps, gnps, nps, ip_pools, knps) = tokio::try_join!(
        get_calico(cluster, CalicoKind::KubeControllersConfiguration, "default"),
        get_calico(cluster, CalicoKind::FelixConfiguration, "default"),
        list_calico(cluster, CalicoKind::HostEndpoint),
        list_calico(cluster, CalicoKind::GlobalNetworkPolicy),
        list_calico(cluster, CalicoKind::NetworkPolicy),
        list_ip_pools(cluster),
        list_k8s_network_policies(cluster),
    )?;
    Ok(LiveState {
        inventory: Inventory {
            calico_api: Some(mode),
            nodes,
            apiserver_endpoint_slices: slices,
            system_pods: pods.iter().filter(|p| is_system_pod(p)).cloned().collect(),
            pods,
            ip_pools,
            namespaces,
            kube_controllers_configuration: kcc,
            felix_configuration: felix,
            host_endpoints: heps,
            k8s_network_policies_unread: knps.is_none(),
            k8s_network_policies: knps.unwrap_or_default(),
        },
        global_network_policies: gnps,
        network_policies: nps,
    })
}
