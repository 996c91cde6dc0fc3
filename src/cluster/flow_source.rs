//! Calico's flow logs, read through the API server.
//!
//! Felix sends flow logs to Goldmane (Calico 3.30+) over gRPC with mutual TLS; Goldmane keeps
//! them aggregated in memory and serves them on its gRPC Flows API, which Whisker's backend
//! turns into HTTP/JSON (`GET /flows`, served by the whisker pod's nginx under
//! `/whisker-backend/`). The plugin reads that JSON through kube-apiserver's service proxy
//! (`/api/v1/namespaces/calico-system/services/whisker:8081/proxy/whisker-backend/flows`):
//! no port-forward to keep open, no gRPC client, no certificates of Goldmane's to hold; only
//! the kubeconfig's identity with `get services/proxy` in calico-system, which RBAC grants or
//! refuses like any other request. Goldmane's own gRPC port cannot be reached that way: the
//! service proxy speaks HTTP/1.1 and Goldmane demands client certificates.
//!
//! The service proxy needs the API server to reach the pod's address, as `kubectl logs`
//! needs it to reach kubelets; where it cannot (a private pod network without Konnectivity),
//! the flow source is reported unreachable, never guessed.

use serde::Deserialize;

use super::Api;
use super::errors::Target;
use crate::error::{Error, Result};
use crate::flowlogs::FlowLog;

/// Where the Tigera operator deploys Whisker (Calico 3.30+).
pub const WHISKER_NAMESPACE: &str = "calico-system";
pub const WHISKER_SERVICE: &str = "whisker";
pub const WHISKER_PORT: u16 = 8081;
const FLOWS_PATH: &str = "whisker-backend/flows";

/// The flow logs, or why there are none to read.
pub enum FlowSource {
    Flows(Vec<FlowLog>),
    /// No flow source: what is missing or failing, in words.
    Unavailable(String),
}

#[derive(Deserialize)]
struct FlowList {
    #[serde(default)]
    items: Option<Vec<FlowLog>>,
}

fn service_path() -> String {
    format!("/api/v1/namespaces/{WHISKER_NAMESPACE}/services/{WHISKER_SERVICE}")
}

/// The flow logs that started at or after `start_time_gte`: Unix seconds, or, when negative,
/// seconds before now (Goldmane's FlowListRequest reads it so).
pub async fn read_flows(api: &Api, start_time_gte: i64) -> Result<FlowSource> {
    let service_target = Target {
        verb: "get",
        resource: "services".into(),
        namespace: Some(WHISKER_NAMESPACE.into()),
        name: Some(WHISKER_SERVICE.into()),
    };
    if api.get(&service_path(), &service_target).await?.is_none() {
        return Ok(FlowSource::Unavailable(format!(
            "Service {WHISKER_NAMESPACE}/{WHISKER_SERVICE} not found: Calico's flow logs (Goldmane and Whisker, Calico 3.30+ with the Tigera operator) are not deployed"
        )));
    }
    let proxy_target = Target {
        verb: "get",
        resource: "services/proxy".into(),
        namespace: Some(WHISKER_NAMESPACE.into()),
        name: Some(WHISKER_SERVICE.into()),
    };
    let path = format!(
        "{}:{WHISKER_PORT}/proxy/{FLOWS_PATH}?startTimeGte={start_time_gte}",
        service_path()
    );
    match api.get(&path, &proxy_target).await {
        Ok(Some(answer)) => {
            let list: FlowList = serde_json::from_value(answer).map_err(|e| {
                Error::unreadable(
                    proxy_target.describe(),
                    format!("Whisker's answer is not a flow list: {e}"),
                )
            })?;
            Ok(FlowSource::Flows(list.items.unwrap_or_default()))
        }
        Ok(None) => Ok(FlowSource::Unavailable(format!(
            "Service {WHISKER_NAMESPACE}/{WHISKER_SERVICE} has no {FLOWS_PATH} on port {WHISKER_PORT} (not Calico's Whisker?)"
        ))),
        // Forbidden is the operator's to fix, not a missing source.
        Err(err) if err.status() == Some(403) => Err(err),
        Err(err) => Ok(FlowSource::Unavailable(format!(
            "Whisker in {WHISKER_NAMESPACE} did not answer through the API server: {err}"
        ))),
    }
}
