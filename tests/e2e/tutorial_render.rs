//! `render --offline --exclude-namespaces ''` reproduces every tutorial manifest: same kinds,
//! names, namespaces, orders, selectors and rules, plus the deliberate DNS-over-TCP rule and the
//! namespace the kube-controllers rule needs to reach calico-apiserver in another namespace.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

pub fn plugin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubectl-calico_harden"))
}

fn tutorial_objects() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tutorial");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut objects = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs {
            objects.push((
                file.file_name().unwrap().to_string_lossy().into_owned(),
                doc,
            ));
        }
    }
    objects
}

fn rendered() -> Vec<Value> {
    let out = plugin()
        .args([
            "render",
            "--offline",
            "--exclude-namespaces",
            "",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    list["items"].as_array().unwrap().clone()
}

/// Calico's default for a policy without `types`.
fn effective_types(spec: &Value) -> Value {
    if let Some(types) = spec.get("types") {
        return types.clone();
    }
    let has = |k: &str| {
        spec.get(k)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    let mut types = Vec::new();
    if has("ingress") || !has("egress") {
        types.push("Ingress");
    }
    if has("egress") {
        types.push("Egress");
    }
    json!(types)
}

#[test]
fn offline_render_reproduces_every_tutorial_manifest() {
    let ours = rendered();
    let tutorial = tutorial_objects();
    assert_eq!(
        tutorial.len(),
        10,
        "the fixture holds the tutorial's ten objects"
    );
    for (file, expected) in &tutorial {
        let name = expected["metadata"]["name"].as_str().unwrap().trim();
        let actual = ours
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{file}: {name} was not rendered"));
        assert_eq!(actual["kind"], expected["kind"], "{file}");
        assert_eq!(actual["apiVersion"], "projectcalico.org/v3", "{file}");
        assert_eq!(
            actual["metadata"].get("namespace"),
            expected["metadata"].get("namespace"),
            "{file}"
        );
        let (a, e) = (&actual["spec"], &expected["spec"]);
        for key in ["order", "selector", "namespaceSelector", "ingress"] {
            assert_eq!(a.get(key), e.get(key), "{file}: spec.{key}");
        }
        assert_eq!(effective_types(a), effective_types(e), "{file}: types");
        assert!(a.get("types").is_some(), "{file}: types must be explicit");
        if name == "deny-app-policy" {
            let mut tcp = e["egress"][0].clone();
            tcp["protocol"] = json!("TCP");
            assert_eq!(
                a["egress"],
                json!([e["egress"][0], tcp]),
                "{file}: DNS over UDP and TCP"
            );
        } else if name == "calico-kube-controllers-to-apiserver" {
            // A namespaced policy's rule selector only sees its own namespace: the lab runs
            // calico-apiserver in its own namespace, so the rule has to name it.
            let mut rule = e["egress"][0].clone();
            rule["destination"]["namespaceSelector"] =
                json!("projectcalico.org/name == \"calico-apiserver\"");
            assert_eq!(a["egress"], json!([rule]), "{file}: spec.egress");
        } else {
            assert_eq!(a.get("egress"), e.get("egress"), "{file}: spec.egress");
        }
    }
}

#[test]
fn offline_render_yaml_is_a_stream_of_labelled_objects() {
    let out = plugin().args(["render", "--offline"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    assert_eq!(
        docs.len(),
        12,
        "ten tutorial objects, the kubelet and controllers-to-kapi stages"
    );
    for doc in &docs {
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "kubectl-calico-harden"
        );
        assert!(doc["metadata"]["labels"]["kubectl-calico-harden/stage"].is_string());
    }
    let isolate = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "deny-app-policy")
        .unwrap();
    assert_eq!(
        isolate["spec"]["namespaceSelector"],
        "has(projectcalico.org/name) && projectcalico.org/name not in {\"kube-system\",\"calico-system\",\"calico-apiserver\",\"tigera-operator\"}"
    );
}

#[test]
fn offline_render_takes_the_lab_overrides() {
    let out = plugin()
        .args([
            "render",
            "--offline",
            "nodes-to-kapi",
            "registry",
            "--control-plane-node",
            "cp-b",
            "--control-plane-node",
            "cp-a",
            "--apiserver-port",
            "16443",
            "--registry-ip",
            "fd00::7",
            "--registry-port",
            "443",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kapi = &list["items"][0]["spec"]["ingress"][0]["destination"];
    assert_eq!(
        kapi["selector"],
        "has(kubernetes.io/os) && kubernetes.io/hostname in {\"cp-a\",\"cp-b\"}"
    );
    assert_eq!(kapi["ports"], json!([16443]));
    let registry = &list["items"][1]["spec"]["egress"][0]["destination"];
    assert_eq!(registry["nets"], json!(["fd00::7/128"]));
    assert_eq!(registry["ports"], json!([443]));
}
