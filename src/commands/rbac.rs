//! `rbac`: the least-privilege ClusterRole this tool needs, generated from the requests it makes.

use serde_json::json;

use crate::error::Result;
use crate::exit::ExitStatus;
use crate::ui::Printer;

/// Every rule names only the verbs the tool uses on that resource. SelfSubjectReview and
/// SelfSubjectAccessReview are not listed: Kubernetes grants them to every authenticated user
/// (ClusterRole system:basic-user). The `tier*` rules are Calico's tiered RBAC, which
/// calico-apiserver checks on every policy request: reading policies needs `get` on their tier and
/// `get`/`list` on `tier.<plural>` (for every tier, so that `check` sees policies in Calico's own
/// tiers too; a list without them is cut down to the tiers the user may see), writing needs the
/// verb on `tier.<plural>` named `default.*` (the stages write to the default tier only). Listing
/// tiers gives the flow check their order and default action. The staged policy kinds (Calico
/// 3.30+, `up --staged`, `promote`) are tiered like the kinds they preview and take the same
/// rules; StagedKubernetesNetworkPolicy is left out, the stages never write one. The optional
/// reads (tiers, ClusterInformation and the operator's Installation for the Calico version,
/// ValidatingWebhookConfigurations for Calico's admission webhooks, the staged policies, and the
/// Service `whisker` with its proxy for the soak gate's flow logs) degrade with a warning that
/// names them when a rule is missing. A stage command gets the nodes calico-typha runs on by
/// name (it lists only the control-plane nodes, not the fleet).
pub fn cluster_role() -> serde_json::Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": "kubectl-calico-harden",
            "labels": {"app.kubernetes.io/name": "kubectl-calico-harden"},
        },
        "rules": [
            {"apiGroups": [""], "resources": ["nodes", "namespaces", "pods"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
            {"apiGroups": ["apiregistration.k8s.io"], "resources": ["apiservices"], "verbs": ["get"]},
            {"apiGroups": ["projectcalico.org"], "resources": ["globalnetworkpolicies", "networkpolicies", "stagedglobalnetworkpolicies", "stagednetworkpolicies"], "verbs": ["list", "get", "create", "update", "delete"]},
            {"apiGroups": ["projectcalico.org"], "resources": ["tiers"], "verbs": ["get", "list"]},
            {"apiGroups": ["projectcalico.org"], "resources": ["tier.globalnetworkpolicies", "tier.networkpolicies", "tier.stagedglobalnetworkpolicies", "tier.stagednetworkpolicies"], "verbs": ["get", "list"]},
            {"apiGroups": ["projectcalico.org"], "resources": ["tier.globalnetworkpolicies", "tier.networkpolicies", "tier.stagedglobalnetworkpolicies", "tier.stagednetworkpolicies"], "resourceNames": ["default.*"], "verbs": ["create", "update", "delete"]},
            {"apiGroups": ["projectcalico.org"], "resources": ["hostendpoints", "ippools"], "verbs": ["list"]},
            {"apiGroups": ["projectcalico.org"], "resources": ["felixconfigurations"], "verbs": ["list"]},
            {"apiGroups": ["projectcalico.org"], "resources": ["clusterinformations"], "verbs": ["get"]},
            {"apiGroups": ["operator.tigera.io"], "resources": ["installations"], "verbs": ["get"]},
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"], "verbs": ["list"]},
            {"apiGroups": ["projectcalico.org"], "resources": ["kubecontrollersconfigurations"], "verbs": ["get", "patch", "update"]},
            {"apiGroups": [""], "resources": ["services", "services/proxy"], "resourceNames": ["whisker"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "get", "create", "patch", "delete"]},
        ],
    })
}

pub fn run(printer: &Printer) -> Result<ExitStatus> {
    printer.structured(&cluster_role());
    Ok(ExitStatus::Success)
}
