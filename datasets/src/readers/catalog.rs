//! Backstage `catalog-info.yaml` -> `service_edges` (source `catalog`): each Component's
//! `spec.dependsOn` entries (`component:default/payments`) become edges to the named entity.

use serde_json::Value;

use super::{Chunk, Records, json_str, yaml_documents};
use crate::schema::ServiceEdge;

/// Reads Backstage catalog documents.
pub fn read(chunk: &Chunk<'_>, out: &mut Records) {
    let Some(documents) = yaml_documents(chunk, out) else {
        return;
    };
    for doc in documents.iter().filter(|d| !d.is_null()) {
        let raw = serde_json::to_vec(doc).unwrap_or_default();
        let Some(name) = json_str(doc, "/metadata/name") else {
            out.reject(None, None, "catalog entity without metadata.name", &raw);
            continue;
        };
        let depends_on = doc
            .pointer("/spec/dependsOn")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        out.read += 1;
        for target in depends_on.iter().filter_map(Value::as_str) {
            out.service_edges.push(ServiceEdge {
                from_service: name.to_string(),
                to_service: entity_name(target).to_string(),
                source: "catalog".into(),
            });
        }
    }
}

/// `component:default/payments` -> `payments`.
fn entity_name(reference: &str) -> &str {
    let without_kind = reference
        .split_once(':')
        .map_or(reference, |(_, rest)| rest);
    without_kind.rsplit('/').next().unwrap_or(without_kind)
}
