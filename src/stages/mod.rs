//! The hardening stages, in the tutorial's order. Each stage renders its desired objects from
//! [`ClusterFacts`] and [`StageOptions`]; rendering is pure, so `render --offline`, `plan` and the
//! stage commands all share it.
//!
//! Object names, orders, selectors and rules are the tutorial's, so clusters hardened by hand are
//! recognised. The hard-coded lab facts are replaced by detected ones, and we deliberately differ
//! in two places: DNS over TCP too, and platform namespaces left out of `isolate-apps`.

pub mod canary;
mod render;
pub mod staged;

use std::fmt;

use clap::ValueEnum;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::calico::policy::{API_VERSION, CalicoKind, PolicySpec};
use crate::error::Error;

pub use render::{narrowed_safety_net, render};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "kubectl-calico-harden";
pub const STAGE_LABEL: &str = "kubectl-calico-harden/stage";

pub const DEFAULT_EXCLUDED_NAMESPACES: &str =
    "kube-system,calico-system,calico-apiserver,tigera-operator";
pub const DEFAULT_REGISTRY_PORT: u16 = 5000;

/// Every stage, in the order `up` runs them. `EnableHep` and `Lockdown` are stages too so that
/// `plan`, `--through` and completion see one list.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum StageId {
    #[value(alias = "allow-everything")]
    SafetyNet,
    #[value(alias = "container-to-localhost")]
    Localhost,
    #[value(alias = "deny-app-policy")]
    IsolateApps,
    #[value(alias = "calico-api-to-kapi")]
    CalicoApiserverToKapi,
    #[value(alias = "calico-kube-controller-to-api")]
    ControllersToCalicoApiserver,
    #[value(alias = "calico-components-to-apiserver")]
    HostsToCalicoApiserver,
    #[value(alias = "worker-nodes-to-kapi")]
    NodesToKapi,
    #[value(alias = "srcnated-to-kapi")]
    SrcnatToKapi,
    #[value(alias = "worker-nodes-to-typha")]
    NodesToTypha,
    #[value(alias = "kapi-to-kubelet")]
    Kubelet,
    #[value(alias = "calico-kube-controllers-to-kapi")]
    ControllersToKapi,
    #[value(alias = "private-registry")]
    Registry,
    EnableHep,
    #[value(alias = "default-deny")]
    Lockdown,
}

impl StageId {
    pub const ALL: [StageId; 14] = [
        Self::SafetyNet,
        Self::Localhost,
        Self::IsolateApps,
        Self::CalicoApiserverToKapi,
        Self::ControllersToCalicoApiserver,
        Self::HostsToCalicoApiserver,
        Self::NodesToKapi,
        Self::SrcnatToKapi,
        Self::NodesToTypha,
        Self::Kubelet,
        Self::ControllersToKapi,
        Self::Registry,
        Self::EnableHep,
        Self::Lockdown,
    ];

    /// Stages that create policies (everything but enable-hep and lockdown).
    pub fn policy_stages() -> impl Iterator<Item = StageId> {
        Self::ALL.into_iter().filter(|s| s.is_policy_stage())
    }

    pub fn is_policy_stage(self) -> bool {
        !matches!(self, Self::EnableHep | Self::Lockdown)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::SafetyNet => "safety-net",
            Self::Localhost => "localhost",
            Self::IsolateApps => "isolate-apps",
            Self::CalicoApiserverToKapi => "calico-apiserver-to-kapi",
            Self::ControllersToCalicoApiserver => "controllers-to-calico-apiserver",
            Self::HostsToCalicoApiserver => "hosts-to-calico-apiserver",
            Self::NodesToKapi => "nodes-to-kapi",
            Self::SrcnatToKapi => "srcnat-to-kapi",
            Self::NodesToTypha => "nodes-to-typha",
            Self::Kubelet => "kubelet",
            Self::ControllersToKapi => "controllers-to-kapi",
            Self::Registry => "registry",
            Self::EnableHep => "enable-hep",
            Self::Lockdown => "lockdown",
        }
    }

    /// The tutorial's manifest this stage automates (None: not in the tutorial as a file).
    pub fn tutorial_file(self) -> Option<&'static str> {
        match self {
            Self::SafetyNet => Some("00.allow-everything.yaml"),
            Self::Localhost => Some("01.container-to-localhost.yaml"),
            Self::IsolateApps => Some("02.deny-app-policy.yaml"),
            Self::CalicoApiserverToKapi => Some("03.calico-api-to-kapi.yaml"),
            Self::ControllersToCalicoApiserver => Some("04.calico-kube-controller-to-api.yaml"),
            Self::HostsToCalicoApiserver => Some("05.calico-components-to-apiserver.yaml"),
            Self::NodesToKapi => Some("06.worker-nodes-to-kapi.yaml"),
            Self::SrcnatToKapi => Some("07.srcnated-to-kapi.yaml"),
            Self::NodesToTypha => Some("08.worker-nodes-to-typha.yaml"),
            Self::Kubelet
            | Self::ControllersToKapi
            | Self::Registry
            | Self::EnableHep
            | Self::Lockdown => None,
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Self::SafetyNet => "allow and log everything until lockdown",
            Self::Localhost => "endpoints may reach 127.0.0.0/8",
            Self::IsolateApps => "app namespaces may only reach cluster DNS",
            Self::CalicoApiserverToKapi => "calico-apiserver -> API server",
            Self::ControllersToCalicoApiserver => "calico-kube-controllers -> calico-apiserver",
            Self::HostsToCalicoApiserver => "hosts -> calico-apiserver",
            Self::NodesToKapi => "hosts -> API server on control-plane nodes",
            Self::SrcnatToKapi => "calico-node/apiserver/typha pods -> API server",
            Self::NodesToTypha => "hosts -> calico-typha",
            Self::Kubelet => "API server -> kubelet 10250 (kubectl logs/exec)",
            Self::ControllersToKapi => "calico-kube-controllers -> API server",
            Self::Registry => "every endpoint -> private registry",
            Self::EnableHep => "automatic host endpoints for every node",
            Self::Lockdown => "remove the safety net: default deny",
        }
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A private registry's addresses and ports, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryTarget {
    pub nets: Vec<IpNet>,
    pub ports: Vec<u16>,
}

/// Options that shape rendering, validated from the command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StageOptions {
    /// Namespaces `isolate-apps` leaves alone; empty reproduces the tutorial's selector.
    pub excluded_namespaces: Vec<String>,
    pub registry: Option<RegistryTarget>,
    /// `-n`: the namespace of a namespaced stage policy, overriding the detected one.
    pub namespace_override: Option<String>,
}

impl StageOptions {
    pub fn with_defaults() -> Self {
        Self {
            excluded_namespaces: parse_namespace_list(DEFAULT_EXCLUDED_NAMESPACES)
                .expect("the default list is valid"),
            ..Self::default()
        }
    }
}

/// A Calico object a stage wants to exist, as a complete manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredObject {
    pub stage: StageId,
    pub kind: CalicoKind,
    pub namespace: Option<String>,
    pub name: String,
    pub manifest: Value,
}

impl DesiredObject {
    pub fn policy(
        stage: StageId,
        kind: CalicoKind,
        namespace: Option<&str>,
        name: &str,
        spec: &PolicySpec,
    ) -> Self {
        let mut metadata = json!({
            "name": name,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, STAGE_LABEL: stage.name()},
        });
        if let Some(ns) = namespace {
            metadata["namespace"] = json!(ns);
        }
        Self {
            stage,
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            manifest: json!({
                "apiVersion": API_VERSION,
                "kind": kind.as_str(),
                "metadata": metadata,
                "spec": spec.to_value(),
            }),
        }
    }

    /// `GlobalNetworkPolicy/name` or `NetworkPolicy ns/name`.
    pub fn display_name(&self) -> String {
        object_display_name(self.kind, self.namespace.as_deref(), &self.name)
    }
}

pub fn object_display_name(kind: CalicoKind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{} {ns}/{name}", kind.as_str()),
        None => format!("{}/{name}", kind.as_str()),
    }
}

/// What a stage wants, or why it does not apply to this cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum StageRender {
    Objects(Vec<DesiredObject>),
    NotApplicable(String),
}

pub fn parse_namespace_list(list: &str) -> Result<Vec<String>, Error> {
    let mut namespaces = Vec::new();
    for raw in list.split(',') {
        let ns = raw.trim();
        if ns.is_empty() {
            continue;
        }
        validate_dns_label(ns, "namespace")?;
        if !namespaces.iter().any(|n| n == ns) {
            namespaces.push(ns.to_string());
        }
    }
    Ok(namespaces)
}

/// RFC 1123 label: what Kubernetes accepts as a namespace name.
pub fn validate_dns_label(value: &str, what: &str) -> Result<(), Error> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid {what} {value:?}: use lowercase letters, digits and '-', at most 63 characters"
        )))
    }
}

/// RFC 1123 subdomain: what Kubernetes accepts as a node name.
pub fn validate_dns_subdomain(value: &str, what: &str) -> Result<(), Error> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value
            .split('.')
            .all(|part| validate_dns_label(part, what).is_ok());
    if valid {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid {what} {value:?}: use lowercase letters, digits, '-' and '.', at most 253 characters"
        )))
    }
}

/// `10.0.0.5`, `10.0.0.0/24`, `fd00::5` or `fd00::/64`; a bare address gets /32 or /128.
pub fn parse_registry_ip(raw: &str) -> Result<IpNet, Error> {
    let raw = raw.trim();
    let net = if raw.contains('/') {
        raw.parse::<IpNet>().map_err(|_| {
            Error::usage(format!(
                "invalid registry address {raw:?}: expected an IPv4 or IPv6 address with an optional prefix, e.g. 10.0.0.5 or 10.0.0.0/24"
            ))
        })?
    } else {
        let ip = raw.parse::<std::net::IpAddr>().map_err(|_| {
            Error::usage(format!(
                "invalid registry address {raw:?}: expected an IPv4 or IPv6 address, e.g. 10.0.0.5 or fd00::5"
            ))
        })?;
        IpNet::from(ip)
    };
    if net.network() != net.addr() {
        return Err(Error::usage(format!(
            "invalid registry address {raw:?}: host bits are set for /{}; did you mean {}?",
            net.prefix_len(),
            net.trunc()
        )));
    }
    Ok(net)
}

/// A TCP port, 1 to 65535.
pub fn parse_port(raw: &str, what: &str) -> Result<u16, Error> {
    match raw.trim().parse::<u32>() {
        Ok(port) if (1..=65535).contains(&port) => Ok(port as u16),
        _ => Err(Error::usage(format!(
            "invalid {what} {raw:?}: expected a port number from 1 to 65535"
        ))),
    }
}

pub fn parse_registry(ips: &[String], ports: &[String]) -> Result<Option<RegistryTarget>, Error> {
    if ips.is_empty() {
        if !ports.is_empty() {
            return Err(Error::usage(
                "a registry port was given without a registry address: add --registry-ip IP",
            ));
        }
        return Ok(None);
    }
    let nets = ips
        .iter()
        .map(|ip| parse_registry_ip(ip))
        .collect::<Result<Vec<_>, _>>()?;
    let mut parsed_ports = ports
        .iter()
        .map(|p| parse_port(p, "registry port"))
        .collect::<Result<Vec<_>, _>>()?;
    if parsed_ports.is_empty() {
        parsed_ports.push(DEFAULT_REGISTRY_PORT);
    }
    parsed_ports.dedup();
    Ok(Some(RegistryTarget {
        nets,
        ports: parsed_ports,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_addresses_get_host_prefixes() {
        assert_eq!(
            parse_registry_ip("10.0.0.5").unwrap().to_string(),
            "10.0.0.5/32"
        );
        assert_eq!(
            parse_registry_ip("fd00::5").unwrap().to_string(),
            "fd00::5/128"
        );
        assert_eq!(
            parse_registry_ip("10.1.0.0/16").unwrap().to_string(),
            "10.1.0.0/16"
        );
    }

    #[test]
    fn invalid_registry_input_is_a_usage_error() {
        for bad in [
            "10.0.0.256",
            "10.0.0.5/33",
            "registry.local",
            "",
            "10.0.0.5/24",
        ] {
            let err = parse_registry_ip(bad).unwrap_err();
            assert_eq!(err.exit_status(), crate::exit::ExitStatus::Usage, "{bad}");
        }
        for bad in ["0", "65536", "-1", "http", ""] {
            assert!(parse_port(bad, "port").is_err(), "{bad}");
        }
        assert!(parse_registry(&[], &["5000".into()]).is_err());
    }

    #[test]
    fn namespace_lists_are_validated_and_deduplicated() {
        assert_eq!(parse_namespace_list("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_namespace_list("a, b,a").unwrap(), vec!["a", "b"]);
        assert!(parse_namespace_list("Bad_NS").is_err());
    }

    #[test]
    fn stage_names_round_trip_through_clap() {
        for stage in StageId::ALL {
            let parsed = StageId::from_str(stage.name(), false).unwrap();
            assert_eq!(parsed, stage);
        }
        assert_eq!(
            StageId::from_str("deny-app-policy", false).unwrap(),
            StageId::IsolateApps
        );
    }
}
