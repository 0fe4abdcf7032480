//! Kubernetes `audit.k8s.io` Events (v1 and v1beta1, JSON lines) and AWS CloudTrail files
//! (`{"Records": [...]}`) -> `audit_events`.
//!
//! Each record is kept whole as canonical JSON (sorted keys, no whitespace); the lake chains
//! records by hash over exactly those bytes, in ingest order, so tampering shows later.

use super::json::Json;
use super::{AuditDraft, Chunk, JsonDocument, Records, for_each_json_document};
use crate::schema::Ts;

/// Reads Kubernetes audit events.
pub fn read_k8s(chunk: &Chunk<'_>, out: &mut Records) {
    for_each_json_document::<Json<'_>>(chunk, out, |out, doc| {
        // A file may hold an EventList instead of lines of Events.
        let events: &[Json<'_>] = match doc.value.get("items").and_then(Json::as_array) {
            Some(items) if doc.value.str_at(&["kind"]) == Some("EventList") => items,
            _ => std::slice::from_ref(&doc.value),
        };
        take_records(out, &doc, events, k8s_event);
    });
}

/// Reads each record of a document; a record that fails is rejected with its canonical text.
fn take_records(
    out: &mut Records,
    doc: &JsonDocument<'_, Json<'_>>,
    records: &[Json<'_>],
    read: fn(&Json<'_>, usize) -> Result<AuditDraft, String>,
) {
    // The source text's share per record is a close guess at a record's canonical size.
    let size_hint = doc.raw.len() / records.len().max(1);
    for record in records {
        match read(record, size_hint) {
            Ok(draft) => {
                out.read += 1;
                out.audit.push(draft);
            }
            Err(reason) => out.reject(
                doc.line,
                Some(doc.offset),
                reason,
                record.to_canonical().as_bytes(),
            ),
        }
    }
}

/// The columns a stored record's canonical text reads as, by the same mapping ingest used:
/// what `maestro audit verify` compares the stored columns with, since the hash chain covers
/// the canonical text only.
pub fn redraft(canonical: &str) -> Result<AuditDraft, String> {
    let record: Json<'_> =
        serde_json::from_str(canonical).map_err(|e| format!("canonical text is not JSON: {e}"))?;
    if record.get("auditID").is_some() {
        k8s_event(&record, canonical.len())
    } else {
        cloudtrail_record(&record, canonical.len())
    }
}

/// A field's value as a non-empty string.
fn text<'j>(value: Option<&'j Json<'_>>) -> Option<&'j str> {
    value.and_then(Json::as_text)
}

/// The user name of a Kubernetes user info object.
fn username<'j>(user: Option<&'j Json<'_>>) -> Option<&'j str> {
    user.and_then(|u| u.str_at(&["username"]))
}

fn k8s_event(event: &Json<'_>, size_hint: usize) -> Result<AuditDraft, String> {
    if !event.is_object() {
        return Err("not a JSON object".into());
    }
    // Every field in one walk over the event's sorted keys.
    let [
        audit_id,
        impersonated_user,
        object,
        request_received,
        request_uri,
        response_status,
        stage,
        stage_timestamp,
        timestamp,
        user,
        verb,
    ] = event.members([
        "auditID",
        "impersonatedUser",
        "objectRef",
        "requestReceivedTimestamp",
        "requestURI",
        "responseStatus",
        "stage",
        "stageTimestamp",
        "timestamp",
        "user",
        "verb",
    ]);
    let audit_id = text(audit_id).ok_or("missing auditID")?;
    let time = text(stage_timestamp)
        .or(text(request_received))
        .or(text(timestamp))
        .ok_or("missing stageTimestamp and requestReceivedTimestamp")?;
    let at = Ts::parse(time).ok_or_else(|| format!("timestamp {time:?} is not RFC 3339"))?;
    let verb = text(verb).ok_or("missing verb")?;
    let actor = username(impersonated_user)
        .or(username(user))
        .unwrap_or("system:anonymous");
    let [name, namespace, kind, subresource] = object
        .map(|o| o.members(["name", "namespace", "resource", "subresource"]))
        .unwrap_or_default();
    let resource = match object {
        Some(_) => {
            let joined = |first: Option<&str>, second: Option<&str>| match (first, second) {
                (Some(a), Some(b)) => [a, "/", b].concat(),
                (a, b) => a.or(b).unwrap_or("").to_string(),
            };
            let kind = joined(text(kind), text(subresource));
            let name = joined(text(namespace), text(name));
            [kind.as_str(), ":", &name].concat()
        }
        None => text(request_uri).unwrap_or("").to_string(),
    };
    let outcome = match response_status
        .and_then(|status| status.get("code"))
        .and_then(Json::as_i64)
    {
        Some(code) if code < 400 => "success",
        Some(_) => "failure",
        None => "unknown",
    };
    let stage = text(stage).unwrap_or("");
    Ok(AuditDraft {
        event_id: if stage.is_empty() {
            audit_id.to_string()
        } else {
            [audit_id, "/", stage].concat()
        },
        at,
        actor: actor.to_string(),
        action: verb.to_string(),
        resource,
        outcome: outcome.into(),
        source: "kubernetes".into(),
        scope: text(namespace).map(str::to_string),
        canonical: event.to_canonical_sized(size_hint),
    })
}

/// Reads CloudTrail files.
pub fn read_cloudtrail(chunk: &Chunk<'_>, out: &mut Records) {
    for_each_json_document::<Json<'_>>(chunk, out, |out, doc| {
        let Some(records) = doc.value.get("Records").and_then(Json::as_array) else {
            out.reject(
                doc.line,
                Some(doc.offset),
                "CloudTrail file without a Records array",
                doc.raw,
            );
            return;
        };
        take_records(out, &doc, records, cloudtrail_record);
    });
}

fn cloudtrail_record(record: &Json<'_>, size_hint: usize) -> Result<AuditDraft, String> {
    if !record.is_object() {
        return Err("not a JSON object".into());
    }
    let event_id = record.str_at(&["eventID"]).ok_or("missing eventID")?;
    let time = record.str_at(&["eventTime"]).ok_or("missing eventTime")?;
    let at = Ts::parse(time).ok_or_else(|| format!("eventTime {time:?} is not RFC 3339"))?;
    let action = record.str_at(&["eventName"]).ok_or("missing eventName")?;
    let source = record.str_at(&["eventSource"]).unwrap_or("");
    let actor = record
        .first_str(&[
            &["userIdentity", "arn"],
            &["userIdentity", "userName"],
            &["userIdentity", "principalId"],
            &["userIdentity", "invokedBy"],
            &["userIdentity", "type"],
        ])
        .unwrap_or("unknown");
    let resource = record
        .get("resources")
        .and_then(Json::as_array)
        .and_then(<[Json<'_>]>::first)
        .and_then(|first| first.str_at(&["ARN"]))
        .unwrap_or(source)
        .to_string();
    let outcome = if record.get("errorCode").is_some_and(|v| *v != Json::Null) {
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
        scope: record.str_at(&["awsRegion"]).map(str::to_string),
        canonical: record.to_canonical_sized(size_hint),
    })
}
