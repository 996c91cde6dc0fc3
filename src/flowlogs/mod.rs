//! The soak gate's reading of Calico's flow logs: which real flows the safety net alone lets
//! through (the ones a lockdown would cut) and which a staged policy would deny.
//!
//! The records are those Whisker's backend serves at `GET /flows` (whisker-backend
//! `pkg/apis/v1` `FlowResponse`), which it reads from Goldmane's Flows API: one record per
//! flow key (source, destination, protocol, port, action, reporting side, policy trace) over
//! the time asked for. Each record carries two policy traces, both in evaluation order:
//! `enforced` (what decided) and `pending` (the same with staged policies in force, evaluated
//! by Felix's `FlowLogsPolicyEvaluationMode: Continuous`). A trace hit says per tier what
//! happened (`Allow`, `Deny`, or `Pass` on to the next tier); the first hit that is not a
//! `Pass` decided.
//!
//! What flow logs cannot show (Calico v3.31): Felix reports no flow at a host endpoint on its
//! own node (felix/collector/collector.go: "Ignore HEP reporters"), so host-to-host traffic is
//! absent, and for a flow between a workload and a host only the workload's side is in the
//! record. A flow's host side is therefore the preflight's (`check`) to judge, not this one's.
//!
//! Pure: the records come in as data, the findings go out as data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One record of `GET /flows` (the fields the gate reads).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct FlowLog {
    pub action: String,
    pub source_name: String,
    pub source_namespace: String,
    pub dest_name: String,
    pub dest_namespace: String,
    pub protocol: String,
    pub dest_port: i64,
    /// `Src` or `Dst`: the node that logged it, on the source's or the destination's side.
    pub reporter: String,
    pub policies: PolicyTrace,
    pub packets_in: i64,
    pub packets_out: i64,
}

/// The policies that decided a flow, and those that would with staged policies in force.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct PolicyTrace {
    /// `null` when empty in whisker-backend's JSON.
    #[serde(deserialize_with = "null_as_empty")]
    pub enforced: Vec<PolicyHit>,
    #[serde(deserialize_with = "null_as_empty")]
    pub pending: Vec<PolicyHit>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct PolicyHit {
    /// `GlobalNetworkPolicy`, `StagedGlobalNetworkPolicy`, `Profile`, `EndOfTier`, ...
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub tier: String,
    pub action: String,
    pub policy_index: i64,
    pub rule_index: i64,
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// The hit that decided: the first in evaluation order that does not pass to the next tier.
pub fn deciding_hit(trace: &[PolicyHit]) -> Option<&PolicyHit> {
    let mut hits: Vec<&PolicyHit> = trace.iter().collect();
    hits.sort_by_key(|h| h.policy_index);
    hits.into_iter().find(|h| h.action != "Pass")
}

impl PolicyHit {
    /// Whether this hit is the policy `name` (Calico before 3.30 prefixed the tier: `default.x`).
    pub fn is_policy(&self, name: &str) -> bool {
        self.kind.ends_with("NetworkPolicy")
            && !self.kind.starts_with("Staged")
            && (self.name == name
                || self
                    .name
                    .strip_suffix(name)
                    .is_some_and(|p| p.ends_with('.')))
    }

    fn describe(&self) -> String {
        let mut text = format!("{} {}", self.kind, self.name);
        if !self.namespace.is_empty() {
            text = format!("{text} in {}", self.namespace);
        }
        text
    }
}

/// Why a flow is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finding {
    /// Allowed, and the deciding policy is the safety net: `lockdown` cuts it.
    SafetyNetOnly,
    /// Allowed now, denied in the pending trace: a staged policy would deny it.
    StagedDeny,
}

/// Flows of one source, destination, protocol and port, with one finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlaggedFlow {
    pub finding: Finding,
    pub source: String,
    pub destination: String,
    pub protocol: String,
    pub port: i64,
    /// How many records (per reporting side and aggregation window) were merged here.
    pub count: u64,
    pub packets: i64,
    /// The policy that decided (or would decide, for a staged deny).
    pub policy: String,
}

impl FlaggedFlow {
    pub fn describe(&self) -> String {
        format!(
            "{} -> {} {}/{} ({} record(s), {})",
            self.source, self.destination, self.protocol, self.port, self.count, self.policy
        )
    }
}

/// What the flow logs show for the time asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// Records read.
    pub records: usize,
    /// Allowed only by the safety net: what `lockdown` would cut.
    pub safety_net_only: Vec<FlaggedFlow>,
    /// What a staged policy would deny.
    pub staged_denies: Vec<FlaggedFlow>,
}

fn endpoint(name: &str, namespace: &str) -> String {
    if namespace.is_empty() || namespace == "-" || namespace == "global" {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Reads the records against the safety net's policy names.
pub fn analyse(records: &[FlowLog], safety_net: &[&str]) -> Observation {
    let mut groups: BTreeMap<(Finding, String, String, String, i64), FlaggedFlow> = BTreeMap::new();
    for record in records.iter().filter(|r| r.action == "Allow") {
        let findings = [
            deciding_hit(&record.policies.enforced)
                .filter(|hit| safety_net.iter().any(|name| hit.is_policy(name)))
                .map(|hit| (Finding::SafetyNetOnly, hit)),
            deciding_hit(&record.policies.pending)
                .filter(|hit| hit.action == "Deny")
                .map(|hit| (Finding::StagedDeny, hit)),
        ];
        for (finding, hit) in findings.into_iter().flatten() {
            let source = endpoint(&record.source_name, &record.source_namespace);
            let destination = endpoint(&record.dest_name, &record.dest_namespace);
            let protocol = record.protocol.to_lowercase();
            let key = (
                finding,
                source.clone(),
                destination.clone(),
                protocol.clone(),
                record.dest_port,
            );
            let entry = groups.entry(key).or_insert_with(|| FlaggedFlow {
                finding,
                source,
                destination,
                protocol,
                port: record.dest_port,
                count: 0,
                packets: 0,
                policy: hit.describe(),
            });
            entry.count += 1;
            entry.packets += record.packets_in + record.packets_out;
        }
    }
    let (safety_net_only, staged_denies) = groups
        .into_values()
        .partition(|f| f.finding == Finding::SafetyNetOnly);
    Observation {
        records: records.len(),
        safety_net_only,
        staged_denies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SAFETY_NET: &[&str] = &["final-allow-everything", "log-everything"];

    fn record(
        src: (&str, &str),
        dst: (&str, &str),
        port: i64,
        policies: serde_json::Value,
    ) -> FlowLog {
        serde_json::from_value(json!({
            "start_time": "2026-12-02T08:00:00Z", "end_time": "2026-12-02T08:00:15Z",
            "action": "Allow",
            "source_name": src.1, "source_namespace": src.0, "source_labels": "",
            "dest_name": dst.1, "dest_namespace": dst.0, "dest_labels": "",
            "protocol": "tcp", "dest_port": port, "reporter": "Src",
            "policies": policies,
            "packets_in": 3, "packets_out": 4, "bytes_in": 1, "bytes_out": 1,
        }))
        .expect("a whisker-backend FlowResponse")
    }

    fn hit(kind: &str, name: &str, action: &str, index: i64) -> serde_json::Value {
        json!({"kind": kind, "name": name, "namespace": "", "tier": "default", "action": action,
               "policy_index": index, "rule_index": 0, "trigger": null})
    }

    #[test]
    fn a_flow_the_safety_net_alone_allows_is_flagged_and_aggregated() {
        let trace = json!({
            "enforced": [hit("GlobalNetworkPolicy", "final-allow-everything", "Allow", 1)],
            "pending": [hit("GlobalNetworkPolicy", "final-allow-everything", "Allow", 1)],
        });
        let a = record(
            ("kube-system", "coredns-1"),
            ("calico-system", "kc-1"),
            9999,
            trace.clone(),
        );
        let mut b = a.clone();
        b.reporter = "Dst".into();
        let observation = analyse(&[a, b], SAFETY_NET);
        assert_eq!(observation.records, 2);
        assert!(observation.staged_denies.is_empty());
        let [flow] = observation.safety_net_only.as_slice() else {
            panic!("one aggregated flow: {observation:?}")
        };
        assert_eq!(
            (
                flow.source.as_str(),
                flow.destination.as_str(),
                flow.port,
                flow.count,
                flow.packets
            ),
            ("kube-system/coredns-1", "calico-system/kc-1", 9999, 2, 14)
        );
        assert_eq!(flow.policy, "GlobalNetworkPolicy final-allow-everything");
    }

    #[test]
    fn a_flow_a_stage_allows_before_the_safety_net_is_not_flagged() {
        let trace = json!({
            "enforced": [hit("GlobalNetworkPolicy", "deny-app-policy", "Allow", 0),
                         hit("GlobalNetworkPolicy", "final-allow-everything", "Allow", 1)],
            "pending": null,
        });
        let flow = record(
            ("app-frontend", "fe"),
            ("kube-system", "coredns-1"),
            53,
            trace,
        );
        assert_eq!(
            analyse(&[flow], SAFETY_NET),
            Observation {
                records: 1,
                safety_net_only: vec![],
                staged_denies: vec![]
            }
        );
    }

    #[test]
    fn passes_go_on_to_the_tier_that_decides() {
        let trace = json!({
            "enforced": [hit("GlobalNetworkPolicy", "security.pass-all", "Pass", 0),
                         hit("GlobalNetworkPolicy", "default.final-allow-everything", "Allow", 1)],
            "pending": [],
        });
        let flow = record(("", "node1"), ("calico-system", "kc-1"), 9999, trace);
        let observation = analyse(&[flow], SAFETY_NET);
        assert_eq!(observation.safety_net_only.len(), 1, "{observation:?}");
        assert_eq!(observation.safety_net_only[0].source, "node1");
    }

    #[test]
    fn a_staged_deny_is_its_own_finding() {
        let trace = json!({
            "enforced": [hit("GlobalNetworkPolicy", "final-allow-everything", "Allow", 1)],
            "pending": [hit("StagedGlobalNetworkPolicy", "deny-app-policy", "Deny", 0)],
        });
        let flow = record(("app-frontend", "fe"), ("app-backend", "be"), 9090, trace);
        let observation = analyse(&[flow], SAFETY_NET);
        assert_eq!(observation.safety_net_only.len(), 1);
        let [staged] = observation.staged_denies.as_slice() else {
            panic!("{observation:?}")
        };
        assert_eq!(staged.policy, "StagedGlobalNetworkPolicy deny-app-policy");
        // A staged copy of the safety net is not the safety net.
        assert!(
            !PolicyHit {
                kind: "StagedGlobalNetworkPolicy".into(),
                name: "final-allow-everything".into(),
                ..Default::default()
            }
            .is_policy("final-allow-everything")
        );
    }

    #[test]
    fn denied_flows_are_not_the_gate_s_business() {
        let mut flow = record(
            ("app-frontend", "fe"),
            ("app-backend", "be"),
            9999,
            json!({"enforced": [hit("GlobalNetworkPolicy", "deny-app-policy", "Deny", 0)]}),
        );
        flow.action = "Deny".into();
        assert_eq!(analyse(&[flow], SAFETY_NET).safety_net_only, vec![]);
    }
}
