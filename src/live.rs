//! What the cluster held when we read it: the inventory the facts come from plus the live Calico
//! policies. Plain data, so the engine, the plan and the checks work on a snapshot without
//! depending on the code that fetched it; `cluster::inventory` is the one producer.
//!
//! [`Observe`] says what a command reads: at fleet scale most commands need a small part of the
//! pods, and a Calico selector can be turned into the LISTs that fetch just that part.

use serde_json::Value;

use crate::calico::policy::CalicoKind;
use crate::calico::selector::Expr;
use crate::facts::Inventory;

/// The inventory plus the live Calico policies, as the server returned them.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    pub inventory: Inventory,
    pub global_network_policies: Vec<Value>,
    pub network_policies: Vec<Value>,
    /// Staged policies (Calico 3.30+); empty where the kinds are not served or not readable.
    pub staged_global_network_policies: Vec<Value>,
    pub staged_network_policies: Vec<Value>,
}

/// One Calico object, by identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectName {
    pub kind: CalicoKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectName {
    pub fn cluster_wide(kind: CalicoKind, name: &str) -> Self {
        Self {
            kind,
            namespace: None,
            name: name.to_string(),
        }
    }
}

impl LiveState {
    /// Add an object read on its own to the list of its kind (a policy kind or a host
    /// endpoint; the configuration singletons are read with the inventory).
    pub fn insert(&mut self, kind: CalicoKind, object: Value) {
        let pool = match kind {
            CalicoKind::GlobalNetworkPolicy => &mut self.global_network_policies,
            CalicoKind::NetworkPolicy => &mut self.network_policies,
            CalicoKind::StagedGlobalNetworkPolicy => &mut self.staged_global_network_policies,
            CalicoKind::StagedNetworkPolicy => &mut self.staged_network_policies,
            CalicoKind::HostEndpoint => &mut self.inventory.host_endpoints,
            CalicoKind::KubeControllersConfiguration | CalicoKind::FelixConfiguration => return,
        };
        pool.push(object);
    }

    /// The live object with this identity, if any.
    pub fn find(&self, kind: CalicoKind, namespace: Option<&str>, name: &str) -> Option<&Value> {
        let pool = match kind {
            CalicoKind::GlobalNetworkPolicy => &self.global_network_policies,
            CalicoKind::NetworkPolicy => &self.network_policies,
            CalicoKind::StagedGlobalNetworkPolicy => &self.staged_global_network_policies,
            CalicoKind::StagedNetworkPolicy => &self.staged_network_policies,
            CalicoKind::HostEndpoint => &self.inventory.host_endpoints,
            CalicoKind::KubeControllersConfiguration => {
                return self
                    .inventory
                    .kube_controllers_configuration
                    .as_ref()
                    .filter(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name));
            }
            CalicoKind::FelixConfiguration => {
                return self
                    .inventory
                    .felix_configuration
                    .as_ref()
                    .filter(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name));
            }
        };
        pool.iter().find(|o| {
            o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                && (!kind.namespaced()
                    || o.pointer("/metadata/namespace").and_then(Value::as_str) == namespace)
        })
    }
}

/// What a command reads from the cluster. Every kind but nodes, pods and policies is read whole
/// (they are few, and every command's facts need them); pods are the one list that grows with
/// the workloads, and most commands need only the Calico and DNS pods the facts come from; the
/// policies (Calico's and Kubernetes') are what the plan and the flow check evaluate, and at
/// fleet scale the other large list; of the nodes a stage needs only those its policies name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observe {
    pub nodes: NodeScope,
    pub pods: PodScope,
    /// Whether the Calico and Kubernetes network policies are read; without them
    /// [`LiveState`]'s policy lists are empty.
    pub policies: bool,
}

impl Observe {
    /// Everything: the flow check over every workload (`check`, `explain`, `lockdown`).
    pub fn everything() -> Self {
        Self {
            nodes: NodeScope::Every,
            pods: PodScope::Every,
            policies: true,
        }
    }

    /// What the facts and the plan need: every kind, and of the pods only the system ones.
    pub fn facts() -> Self {
        Self {
            nodes: NodeScope::Every,
            pods: PodScope::System,
            policies: true,
        }
    }

    /// What the facts need and no policy: a command that changes Calico's configuration, not
    /// policy, and shows no flow check (`enable-hep`).
    pub fn facts_without_policies() -> Self {
        Self {
            policies: false,
            ..Self::facts()
        }
    }

    /// What rendering the policy stages needs: the facts without policies, of the nodes only
    /// those the stages name ([`NodeScope::Named`]). Its facts count and list only those nodes.
    pub fn for_stages() -> Self {
        Self {
            nodes: NodeScope::Named,
            ..Self::facts_without_policies()
        }
    }
}

/// Which nodes to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeScope {
    Every,
    /// The nodes the policy stages name: those with a control-plane role label and those
    /// calico-typha runs on. Every node when none carries the label (the control plane is then
    /// found by address) or when host endpoints exist (each polices its node, and a flow
    /// report over them needs them all).
    Named,
}

/// Which pods to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodScope {
    /// The Calico and DNS pods ([`crate::facts::SYSTEM_POD_LABEL_SELECTOR`]).
    System,
    /// The system pods and whatever these queries return.
    Also(Vec<PodQuery>),
    /// Every pod, all namespaces.
    Every,
}

impl PodScope {
    /// Both scopes' pods.
    pub fn union(self, other: PodScope) -> PodScope {
        match (self, other) {
            (PodScope::Every, _) | (_, PodScope::Every) => PodScope::Every,
            (PodScope::System, other) | (other, PodScope::System) => other,
            (PodScope::Also(mut a), PodScope::Also(b)) => {
                a.extend(b);
                a.sort();
                a.dedup();
                PodScope::Also(a)
            }
        }
    }

    /// Add one query; a query for every pod in every namespace makes the scope [`Self::Every`].
    pub fn with(self, query: PodQuery) -> PodScope {
        if query.namespace.is_none() && query.label_selector.is_none() {
            return PodScope::Every;
        }
        self.union(PodScope::Also(vec![query]))
    }
}

/// One LIST of pods: in one namespace or all, with a Kubernetes label selector or without.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodQuery {
    pub namespace: Option<String>,
    /// `a=b,c in (d,e),!f`.
    pub label_selector: Option<String>,
}

/// Conjunctions of Kubernetes label requirements, any of which may hold: `[[]]` is every label
/// set, `[]` none.
type Alternatives = Vec<Vec<String>>;

/// Above this many alternatives a selector is listed as "every pod" instead of one LIST each.
const MAX_ALTERNATIVES: usize = 8;

/// Labels Calico adds to what its selectors see (a pod's namespace, orchestrator and service
/// account): no pod carries them, so the server cannot filter on them.
const CALICO_ADDED_LABEL_PREFIX: &str = "projectcalico.org/";

/// Kubernetes label selectors that together return at least every pod `selector` can match,
/// as few LISTs as possible; `[None]` when only "every pod" says it, `[]` when no pod can match.
/// A selector narrows only through what the API server can filter on: presence and equality of
/// real labels. Anything else (negations of compound expressions, substrings, Calico's own
/// labels, long disjunctions) widens to "has the key" or to every pod, never narrows wrongly.
pub fn label_selectors_for(selector: &Expr) -> Vec<Option<String>> {
    alternatives(selector)
        .into_iter()
        .map(|requirements| (!requirements.is_empty()).then(|| requirements.join(",")))
        .collect()
}

fn every() -> Alternatives {
    vec![Vec::new()]
}

fn requirement(key: &str, text: String) -> Alternatives {
    if key.starts_with(CALICO_ADDED_LABEL_PREFIX) || !is_label_key(key) {
        every()
    } else {
        vec![vec![text]]
    }
}

fn alternatives(expr: &Expr) -> Alternatives {
    let found = match expr {
        Expr::All | Expr::Global => every(),
        Expr::Has(key)
        | Expr::Contains { key, .. }
        | Expr::StartsWith { key, .. }
        | Expr::EndsWith { key, .. } => requirement(key, key.clone()),
        Expr::Eq { key, value } if is_label_value(value) => {
            requirement(key, format!("{key}={value}"))
        }
        Expr::Eq { key, .. } => requirement(key, key.clone()),
        Expr::Ne { key, value } if is_label_value(value) => {
            requirement(key, format!("{key}!={value}"))
        }
        Expr::In { values, .. } if values.is_empty() => Vec::new(),
        Expr::In { key, values } if values.iter().all(|v| is_label_value(v)) => {
            requirement(key, format!("{key} in ({})", values.join(",")))
        }
        Expr::In { key, .. } => requirement(key, key.clone()),
        Expr::NotIn { key, values }
            if !values.is_empty() && values.iter().all(|v| is_label_value(v)) =>
        {
            requirement(key, format!("{key} notin ({})", values.join(",")))
        }
        Expr::Not(inner) => match inner.as_ref() {
            Expr::Has(key) => requirement(key, format!("!{key}")),
            Expr::Eq { key, value } if is_label_value(value) => {
                requirement(key, format!("{key}!={value}"))
            }
            _ => every(),
        },
        Expr::And(operands) => {
            let mut product = every();
            for operand in operands {
                let choices = alternatives(operand);
                product = product
                    .iter()
                    .flat_map(|left| {
                        choices.iter().map(move |right| {
                            let mut both = left.clone();
                            both.extend(right.iter().filter(|r| !left.contains(r)).cloned());
                            both
                        })
                    })
                    .collect();
                if product.len() > MAX_ALTERNATIVES {
                    return every();
                }
            }
            product
        }
        Expr::Or(operands) => operands.iter().flat_map(alternatives).collect(),
        Expr::Ne { .. } | Expr::NotIn { .. } => every(),
    };
    // One alternative without a requirement already asks for every pod.
    if found.len() > MAX_ALTERNATIVES || found.iter().any(Vec::is_empty) {
        return every();
    }
    found
}

/// A Kubernetes label value the selector grammar takes unquoted: 1-63 of `[A-Za-z0-9-_.]`,
/// alphanumeric at both ends. (Empty values are valid labels but awkward in `in (...)`; they
/// widen to "has the key".)
fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a name like a value.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let prefix_ok = prefix.is_empty()
        || (prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            }));
    prefix_ok && is_label_value(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calico::selector;

    fn lists(calico: &str) -> Vec<Option<String>> {
        label_selectors_for(selector::parse(calico).unwrap().expr())
    }

    fn some(selectors: &[&str]) -> Vec<Option<String>> {
        selectors.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn calico_selectors_become_the_label_selectors_the_server_filters_on() {
        assert_eq!(lists("has(kubernetes.io/os)"), some(&["kubernetes.io/os"]));
        assert_eq!(
            lists("k8s-app == \"calico-apiserver\""),
            some(&["k8s-app=calico-apiserver"])
        );
        assert_eq!(lists("app != 'web'"), some(&["app!=web"]));
        assert_eq!(lists("!has(app)"), some(&["!app"]));
        assert_eq!(lists("app in {'a', 'b'}"), some(&["app in (a,b)"]));
        assert_eq!(lists("app not in {'a'}"), some(&["app notin (a)"]));
        assert_eq!(
            lists("tier == 'x' && (app == 'a' || app == 'b')"),
            some(&["tier=x,app=a", "tier=x,app=b"])
        );
        assert_eq!(lists("a == 'x' || b == 'y'"), some(&["a=x", "b=y"]));
    }

    #[test]
    fn what_the_server_cannot_filter_on_widens_and_never_narrows() {
        // Every pod.
        for calico in [
            "all()",
            "",
            "global()",
            "projectcalico.org/namespace == 'app'",
            "!(a == 'x' && b == 'y')",
            "a not in {}",
            "has(a) || all()",
            "a == '1' || a == '2' || a == '3' || a == '4' || a == '5' || a == '6' || a == '7' || a == '8' || a == '9'",
        ] {
            assert_eq!(lists(calico), vec![None], "{calico}");
        }
        // Has the key.
        for calico in [
            "app contains 'we'",
            "app starts with 'w'",
            "app ends with 'b'",
            "app == 'has space'",
            "app in {'ok', 'not ok'}",
        ] {
            assert_eq!(lists(calico), some(&["app"]), "{calico}");
        }
        // Nothing can match.
        assert_eq!(lists("app in {}"), Vec::<Option<String>>::new());
        assert_eq!(lists("has(a) && a in {}"), Vec::<Option<String>>::new());
        // A Calico-added label next to a real one: the real one still narrows.
        assert_eq!(
            lists("projectcalico.org/namespace == 'x' && app == 'web'"),
            some(&["app=web"])
        );
    }

    #[test]
    fn pod_scopes_combine() {
        let query = |ns: Option<&str>, selector: Option<&str>| PodQuery {
            namespace: ns.map(str::to_string),
            label_selector: selector.map(str::to_string),
        };
        let scope = PodScope::System
            .with(query(Some("b"), None))
            .with(query(None, Some("app=x")))
            .with(query(Some("b"), None));
        assert_eq!(
            scope,
            PodScope::Also(vec![query(None, Some("app=x")), query(Some("b"), None)])
        );
        assert_eq!(scope.clone().with(query(None, None)), PodScope::Every);
        assert_eq!(PodScope::System.union(PodScope::System), PodScope::System);
        assert_eq!(scope.union(PodScope::Every), PodScope::Every);
        assert_eq!(Observe::facts().pods, PodScope::System);
        assert_eq!(Observe::everything().pods, PodScope::Every);
        assert!(!Observe::facts_without_policies().policies);
    }
}
