//! GitHub `deployment` and `deployment_status` webhook payloads -> `deployments`.
//!
//! Both payloads carry the whole deployment, so each gives a complete row; a status adds the
//! outcome and finish time. Rows of one deployment share `deployment_id` (`github-<id>`) and
//! are folded together at ingest.

use serde_json::Value;

use super::{Chunk, Records, first_str, for_each_json_document, json_str};
use crate::schema::{Deployment, Ts};

/// Reads GitHub deployment webhook payloads.
pub fn read(chunk: &Chunk<'_>, out: &mut Records) {
    for_each_json_document::<Value>(chunk, out, |out, doc| match deployment(&doc.value) {
        Ok(row) => {
            out.read += 1;
            out.deployments.push(row);
        }
        Err(reason) => out.reject(doc.line, Some(doc.offset), reason, doc.raw),
    });
}

fn deployment(doc: &Value) -> Result<Deployment, String> {
    let deployment = doc
        .get("deployment")
        .filter(|d| d.is_object())
        .ok_or("payload without a deployment object")?;
    let id = match deployment.get("id") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err("deployment without an id".into()),
    };
    let service = first_str(doc, &["/repository/name"]).ok_or("payload without repository.name")?;
    let environment =
        json_str(deployment, "/environment").ok_or("deployment without an environment")?;
    let created = json_str(deployment, "/created_at").ok_or("deployment without created_at")?;
    let started_at =
        Ts::parse(created).ok_or_else(|| format!("created_at {created:?} is not a time"))?;
    let sha = json_str(deployment, "/sha");
    let custom = deployment
        .get("payload")
        .filter(|p| p.is_object())
        .unwrap_or(&Value::Null);
    let mut row = Deployment {
        deployment_id: format!("github-{id}"),
        service: service.to_string(),
        environment: environment.to_string(),
        version: first_str(deployment, &["/ref", "/sha"]).map(str::to_string),
        change_ids: sha.map(|s| vec![s.to_string()]).unwrap_or_default(),
        started_at: Some(started_at),
        strategy: json_str(custom, "/strategy").map(str::to_string),
        initiated_by: json_str(deployment, "/creator/login").map(str::to_string),
        approved_by: json_str(custom, "/approved_by").map(str::to_string),
        source_format: "github".into(),
        ..Default::default()
    };
    if let Some(status) = doc.get("deployment_status").filter(|s| s.is_object()) {
        let state = json_str(status, "/state").ok_or("deployment_status without a state")?;
        row.outcome = match state {
            "success" => Some("succeeded".into()),
            "failure" | "error" => Some("failed".into()),
            "inactive" | "pending" | "queued" | "in_progress" => None,
            other => {
                return Err(format!(
                    "deployment_status state {other:?} is not a GitHub state"
                ));
            }
        };
        if row.outcome.is_some() {
            let finished = first_str(status, &["/updated_at", "/created_at"])
                .ok_or("deployment_status without a time")?;
            row.finished_at = Some(
                Ts::parse(finished)
                    .ok_or_else(|| format!("status time {finished:?} is not a time"))?,
            );
        }
    }
    Ok(row)
}
