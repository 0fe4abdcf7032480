//! Kubernetes `audit.k8s.io` Events (v1 and v1beta1, JSON lines) and AWS CloudTrail files
//! (`{"Records": [...]}`) -> `audit_events`.
//!
//! Each record is kept whole as canonical JSON (sorted keys, no whitespace); the lake chains
//! records by hash over exactly those bytes, in ingest order, so tampering shows later.

use serde_json::Value;

use super::{AuditDraft, Chunk, Records, first_str, json_documents, json_str};
use crate::schema::Ts;

/// Reads Kubernetes audit events.
pub fn read_k8s(chunk: &Chunk<'_>, out: &mut Records) {
    for (line, offset, doc, raw) in json_documents(chunk, out) {
        let line = (chunk.bytes.len() != raw.len()).then_some(line);
        // A file may hold an EventList instead of lines of Events.
        let events: Vec<&Value> = match doc.get("items").and_then(Value::as_array) {
            Some(items) if doc.get("kind").and_then(Value::as_str) == Some("EventList") => {
                items.iter().collect()
            }
            _ => vec![&doc],
        };
        for event in events {
            match k8s_event(event) {
                Ok(draft) => {
                    out.read += 1;
                    out.audit.push(draft);
                }
                Err(reason) => out.reject(line, Some(offset), reason, event.to_string().as_bytes()),
            }
        }
    }
}

fn k8s_event(event: &Value) -> Result<AuditDraft, String> {
    if !event.is_object() {
        return Err("not a JSON object".into());
    }
    let audit_id = json_str(event, "/auditID").ok_or("missing auditID")?;
    let time = first_str(
        event,
        &["/stageTimestamp", "/requestReceivedTimestamp", "/timestamp"],
    )
    .ok_or("missing stageTimestamp and requestReceivedTimestamp")?;
    let at = Ts::parse(time).ok_or_else(|| format!("timestamp {time:?} is not RFC 3339"))?;
    let verb = json_str(event, "/verb").ok_or("missing verb")?;
    let actor = first_str(event, &["/impersonatedUser/username", "/user/username"])
        .unwrap_or("system:anonymous");
    let object = event.get("objectRef");
    let resource = match object {
        Some(object) => {
            let kind = [
                json_str(object, "/resource"),
                json_str(object, "/subresource"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("/");
            let name = [json_str(object, "/namespace"), json_str(object, "/name")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("/");
            format!("{kind}:{name}")
        }
        None => json_str(event, "/requestURI").unwrap_or("").to_string(),
    };
    let outcome = match event
        .pointer("/responseStatus/code")
        .and_then(Value::as_i64)
    {
        Some(code) if code < 400 => "success",
        Some(_) => "failure",
        None => "unknown",
    };
    let stage = json_str(event, "/stage").unwrap_or("");
    Ok(AuditDraft {
        event_id: if stage.is_empty() {
            audit_id.to_string()
        } else {
            format!("{audit_id}/{stage}")
        },
        at,
        actor: actor.to_string(),
        action: verb.to_string(),
        resource,
        outcome: outcome.into(),
        source: "kubernetes".into(),
        scope: object
            .and_then(|o| json_str(o, "/namespace"))
            .map(str::to_string),
        canonical: event.to_string(),
    })
}

/// Reads CloudTrail files.
pub fn read_cloudtrail(chunk: &Chunk<'_>, out: &mut Records) {
    for (line, offset, doc, raw) in json_documents(chunk, out) {
        let line = (chunk.bytes.len() != raw.len()).then_some(line);
        let Some(records) = doc.get("Records").and_then(Value::as_array) else {
            out.reject(
                line,
                Some(offset),
                "CloudTrail file without a Records array",
                raw,
            );
            continue;
        };
        for record in records {
            match cloudtrail_record(record) {
                Ok(draft) => {
                    out.read += 1;
                    out.audit.push(draft);
                }
                Err(reason) => {
                    out.reject(line, Some(offset), reason, record.to_string().as_bytes())
                }
            }
        }
    }
}

fn cloudtrail_record(record: &Value) -> Result<AuditDraft, String> {
    if !record.is_object() {
        return Err("not a JSON object".into());
    }
    let event_id = json_str(record, "/eventID").ok_or("missing eventID")?;
    let time = json_str(record, "/eventTime").ok_or("missing eventTime")?;
    let at = Ts::parse(time).ok_or_else(|| format!("eventTime {time:?} is not RFC 3339"))?;
    let action = json_str(record, "/eventName").ok_or("missing eventName")?;
    let source = json_str(record, "/eventSource").unwrap_or("");
    let actor = first_str(
        record,
        &[
            "/userIdentity/arn",
            "/userIdentity/userName",
            "/userIdentity/principalId",
            "/userIdentity/invokedBy",
            "/userIdentity/type",
        ],
    )
    .unwrap_or("unknown");
    let resource = record
        .pointer("/resources/0/ARN")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| source.to_string());
    let outcome = if record.get("errorCode").is_some_and(|v| !v.is_null()) {
        "failure"
    } else {
        "success"
    };
    Ok(AuditDraft {
        event_id: event_id.to_string(),
        at,
        actor: actor.to_string(),
        action: format!("{source}:{action}"),
        resource,
        outcome: outcome.into(),
        source: "cloudtrail".into(),
        scope: json_str(record, "/awsRegion").map(str::to_string),
        canonical: record.to_string(),
    })
}
