//! CDEvents (cdevents.dev) JSON, bare or inside a CloudEvents envelope; one event, an array, or
//! JSON lines.
//!
//! Change merged -> `changes`; service deployed, upgraded, rolledback -> `deployments`; incident
//! detected, reported, resolved -> `incidents`; testcaserun finished -> `test_results`. Other
//! event types are valid CDEvents that no Maestro table holds: they are kept in `_rejected` with
//! that reason rather than dropped.
//!
//! Why not the `cdevents-sdk` crate: it binds every event type to one spec version and rejects
//! others, while producers in the field (and the spec's own conformance files, at 0.6-draft with
//! `chainId` and `links`) mix versions. The fields Maestro needs have been stable since spec 0.3,
//! so this reader takes them from the JSON by name and ignores the rest.

use std::sync::Arc;

use serde_json::Value;

use super::{Chunk, Records, first_str, for_each_json_document, json_str};
use crate::schema::{Change, Deployment, Incident, TestResult, Ts};

/// Reads CDEvents from a chunk.
pub fn read(chunk: &Chunk<'_>, out: &mut Records) {
    for_each_json_document::<Value>(chunk, out, |out, doc| {
        match read_event(&doc.value, chunk) {
            Ok(Taken::Change(row)) => out.changes.push(*row),
            Ok(Taken::Deployment(row)) => out.deployments.push(row),
            Ok(Taken::Incident(row)) => out.incidents.push(row),
            Ok(Taken::TestResult(row)) => out.test_results.push(&row.borrowed()),
            Err(reason) => {
                out.reject(
                    doc.line,
                    Some(doc.offset),
                    reason,
                    &serde_json::to_vec(&doc.value).unwrap_or_default(),
                );
                return;
            }
        }
        out.read += 1;
    });
}

enum Taken {
    Change(Box<Change>),
    Deployment(Deployment),
    Incident(Incident),
    TestResult(TestResult),
}

fn read_event(doc: &Value, chunk: &Chunk<'_>) -> Result<Taken, String> {
    // A CloudEvents envelope carries the CDEvent in `data`.
    let event = match doc.get("data") {
        Some(data) if data.get("context").is_some() => data,
        _ => doc,
    };
    if !event.is_object() {
        return Err("not a JSON object".into());
    }
    let event_type = json_str(event, "/context/type")
        .or_else(|| json_str(doc, "/type"))
        .ok_or("missing context.type")?;
    let event_id = json_str(event, "/context/id").ok_or("missing context.id")?;
    let timestamp_text =
        json_str(event, "/context/timestamp").ok_or("missing context.timestamp")?;
    let at = Ts::parse(timestamp_text)
        .ok_or_else(|| format!("context.timestamp {timestamp_text:?} is not an RFC 3339 time"))?;
    let subject_id = json_str(event, "/subject/id").ok_or("missing subject.id")?;
    let content = event.pointer("/subject/content").unwrap_or(&Value::Null);
    let custom = event
        .get("customData")
        .filter(|v| v.is_object())
        .unwrap_or(&Value::Null);
    let kind = event_kind(event_type)
        .ok_or_else(|| format!("context.type {event_type:?} is not a CDEvents type"))?;

    match kind {
        ("change", "merged") => {
            let service = first_str(content, &["/repository/name", "/repository/id"])
                .or_else(|| json_str(custom, "/service"))
                .ok_or("change.merged without subject.content.repository")?;
            Ok(Taken::Change(Box::new(Change {
                change_id: subject_id.to_string(),
                service: service.to_string(),
                author: json_str(custom, "/author").map(str::to_string),
                merged_at: at,
                files: string_list(custom.get("files")),
                lines_added: custom.get("lines_added").and_then(Value::as_i64),
                lines_deleted: custom.get("lines_deleted").and_then(Value::as_i64),
                message: json_str(custom, "/message").map(str::to_string),
                source_format: "cdevents".into(),
                ..Default::default()
            })))
        }
        ("service", predicate @ ("deployed" | "upgraded" | "rolledback")) => {
            let environment = json_str(content, "/environment/id")
                .ok_or("missing subject.content.environment.id")?;
            let artifact = json_str(content, "/artifactId");
            let service = json_str(custom, "/service")
                .map(str::to_string)
                .or_else(|| artifact.and_then(purl_name))
                .unwrap_or_else(|| subject_id.to_string());
            let outcome = match json_str(custom, "/outcome") {
                Some(o @ ("succeeded" | "failed" | "rolled_back")) => o,
                Some(other) => {
                    return Err(format!(
                        "customData.outcome {other:?} is not succeeded, failed or rolled_back"
                    ));
                }
                None if predicate == "rolledback" => "rolled_back",
                None => "succeeded",
            };
            let started_at = match json_str(custom, "/started_at") {
                Some(text) => Some(
                    Ts::parse(text)
                        .ok_or_else(|| format!("customData.started_at {text:?} is not a time"))?,
                ),
                None => Some(at),
            };
            Ok(Taken::Deployment(Deployment {
                deployment_id: json_str(custom, "/deployment_id")
                    .unwrap_or(event_id)
                    .to_string(),
                service,
                environment: environment.to_string(),
                version: artifact.and_then(purl_version),
                change_ids: string_list(custom.get("change_ids")),
                started_at,
                finished_at: Some(at),
                outcome: Some(outcome.to_string()),
                strategy: json_str(custom, "/strategy").map(str::to_string),
                initiated_by: json_str(custom, "/initiated_by").map(str::to_string),
                approved_by: json_str(custom, "/approved_by").map(str::to_string),
                source_format: "cdevents".into(),
            }))
        }
        ("incident", predicate @ ("detected" | "reported" | "resolved")) => {
            let service = first_str(content, &["/service/id", "/service/name"])
                .or_else(|| json_str(custom, "/service"))
                .or_else(|| json_str(content, "/artifactId").and_then(|a| purl_name(a).map(|_| a)))
                .ok_or("incident without subject.content.service.id")?;
            let resolved = predicate == "resolved";
            Ok(Taken::Incident(Incident {
                incident_id: subject_id.to_string(),
                service: service.to_string(),
                environment: json_str(content, "/environment/id").map(str::to_string),
                severity: json_str(custom, "/severity").map(str::to_string),
                description: json_str(content, "/description").map(str::to_string),
                detected_at: (!resolved).then_some(at),
                resolved_at: resolved.then_some(at),
                caused_by_deployment_id: json_str(custom, "/caused_by_deployment_id")
                    .map(str::to_string),
                source_format: "cdevents".into(),
            }))
        }
        ("testcaserun", "finished") => {
            let outcome = json_str(content, "/outcome").ok_or("missing subject.content.outcome")?;
            let status = match outcome {
                "pass" | "success" => "passed",
                "fail" | "failure" => "failed",
                "cancel" | "error" => "error",
                "skip" | "skipped" => "skipped",
                other => {
                    return Err(format!(
                        "testcaserun outcome {other:?} is not pass, fail, cancel or skip"
                    ));
                }
            };
            let test_id = first_str(content, &["/testCase/id", "/testCase/name"])
                .ok_or("missing subject.content.testCase.id")?;
            let context = chunk.context;
            Ok(Taken::TestResult(TestResult {
                run_id: first_str(content, &["/testSuiteRun/id"])
                    .or_else(|| json_str(custom, "/run_id"))
                    .or(context.run_id.as_deref())
                    .unwrap_or(subject_id)
                    .into(),
                change_id: json_str(custom, "/change_id")
                    .or(context.change_id.as_deref())
                    .map(Arc::from),
                service: json_str(custom, "/service")
                    .or(context.service.as_deref())
                    .map(Arc::from),
                suite: first_str(content, &["/testSuiteRun/id", "/testCase/type"])
                    .unwrap_or("cdevents")
                    .into(),
                test_id: test_id.to_string(),
                classname: None,
                name: json_str(content, "/testCase/name")
                    .unwrap_or(test_id)
                    .to_string(),
                file: json_str(custom, "/file").map(str::to_string),
                status: status.into(),
                duration_s: custom.get("duration_s").and_then(Value::as_f64),
                attempt: custom.get("attempt").and_then(Value::as_i64).unwrap_or(1),
                started_at: at,
                message: json_str(content, "/reason").map(str::to_string),
                source_format: "cdevents".into(),
            }))
        }
        (subject, predicate) => Err(format!(
            "CDEvents {subject}.{predicate} events are valid but no Maestro table holds them"
        )),
    }
}

/// `dev.cdevents.<subject>.<predicate>.<version>` -> (subject, predicate).
fn event_kind(event_type: &str) -> Option<(&str, &str)> {
    let rest = event_type.strip_prefix("dev.cdevents.")?;
    let mut parts = rest.splitn(3, '.');
    Some((parts.next()?, parts.next()?))
}

/// The name in a package URL: `pkg:oci/myapp@sha256:...` -> `myapp`.
fn purl_name(purl: &str) -> Option<String> {
    let path = purl.strip_prefix("pkg:")?;
    let path = path.split(['@', '?', '#']).next()?;
    path.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The version in a package URL, percent-decoded.
fn purl_version(purl: &str) -> Option<String> {
    let version = purl.split_once('@')?.1.split(['?', '#']).next()?;
    Some(version.replace("%3A", ":").replace("%3a", ":"))
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::readers::ReportContext;

    fn read_text(text: &str) -> Records {
        let context = ReportContext::default();
        let chunk = Chunk::whole_file(text.as_bytes(), "00", None, &context);
        let mut out = Records::default();
        crate::readers::read_chunk(crate::readers::Format::CdEvents, &chunk, &mut out);
        out
    }

    #[test]
    fn reads_a_deployment_in_a_cloudevents_envelope() {
        let out = read_text(
            r#"{"specversion":"1.0","type":"dev.cdevents.service.deployed.0.3.0","data":{
            "context":{"id":"e1","type":"dev.cdevents.service.deployed.0.3.0","timestamp":"2024-01-02T03:04:05Z","source":"/ci"},
            "subject":{"id":"svc","content":{"environment":{"id":"prod"},"artifactId":"pkg:oci/api@v1.2"}},
            "customData":{"change_ids":["c1","c2"],"strategy":"canary","outcome":"failed"}}}"#,
        );
        assert_eq!(out.read, 1);
        let d = &out.deployments[0];
        assert_eq!(
            (
                d.service.as_str(),
                d.environment.as_str(),
                d.version.as_deref()
            ),
            ("api", "prod", Some("v1.2"))
        );
        assert_eq!(d.change_ids, ["c1", "c2"]);
        assert_eq!(d.outcome.as_deref(), Some("failed"));
    }

    #[test]
    fn rejects_missing_fields_and_keeps_the_rest_of_the_lines() {
        let good = r#"{"context":{"id":"e1","type":"dev.cdevents.incident.detected.0.3.0","timestamp":"2024-01-02T03:04:05Z"},"subject":{"id":"i1","content":{"service":{"id":"api"}}}}"#;
        let no_time = r#"{"context":{"id":"e2","type":"dev.cdevents.incident.detected.0.3.0"},"subject":{"id":"i2","content":{"service":{"id":"api"}}}}"#;
        let out = read_text(&format!("{good}\n{no_time}\nnot json\n"));
        assert_eq!((out.read, out.accepted()), (3, 1));
        assert_eq!(out.rejected[0].reason, "missing context.timestamp");
        assert_eq!(out.rejected[0].line, Some(2));
        assert!(out.rejected[1].reason.starts_with("invalid JSON"));
    }
}
