//! YAML in and out (serde-saphyr), kept in one place.

use serde::Serialize;

pub fn to_yaml<T: Serialize>(value: &T) -> String {
    serde_saphyr::to_string(value).expect("JSON-shaped values serialise to YAML")
}

/// A multi-document stream that `kubectl apply -f -` accepts.
pub fn to_yaml_stream(values: &[serde_json::Value]) -> String {
    values
        .iter()
        .map(|v| {
            let doc = to_yaml(v);
            format!("---\n{}", doc.trim_start_matches("---\n"))
        })
        .collect()
}
