//! OpenSLO v1 YAML (one or many documents) -> `slos`.
//!
//! An SLO's indicator is inline (`spec.indicator`) or a reference (`spec.indicatorRef`) to an
//! SLI document of the same file. Each objective becomes a row (`<name>` for a single objective,
//! `<name>/<objective>` for several). Documents of other kinds (Service, AlertPolicy...) are valid
//! OpenSLO that no Maestro table holds; they go to `_rejected` with that reason.

use std::collections::HashMap;

use serde_json::Value;

use super::{Chunk, Records, json_str, yaml_documents};
use crate::schema::Slo;

/// Reads OpenSLO documents.
pub fn read(chunk: &Chunk<'_>, out: &mut Records) {
    let Some(documents) = yaml_documents(chunk, out) else {
        return;
    };
    let slis: HashMap<&str, &Value> = documents
        .iter()
        .filter(|d| json_str(d, "/kind") == Some("SLI"))
        .filter_map(|d| Some((json_str(d, "/metadata/name")?, d.get("spec")?)))
        .collect();
    for doc in &documents {
        let raw = serde_json::to_vec(doc).unwrap_or_default();
        if doc.is_null() {
            continue; // an empty document between `---` separators
        }
        match json_str(doc, "/apiVersion") {
            Some(v) if v.starts_with("openslo/") => {}
            other => {
                out.reject(
                    None,
                    None,
                    format!("apiVersion {other:?} is not openslo/v1"),
                    &raw,
                );
                continue;
            }
        }
        match json_str(doc, "/kind") {
            Some("SLO") => match slo_rows(doc, &slis, chunk) {
                Ok(rows) => {
                    out.read += 1;
                    out.slos.extend(rows);
                }
                Err(reason) => out.reject(None, None, reason, &raw),
            },
            Some("SLI") => out.read += 1, // taken into the SLOs that reference it
            Some(kind) => out.reject(
                None,
                None,
                format!("OpenSLO {kind} documents are valid but no Maestro table holds them"),
                &raw,
            ),
            None => out.reject(None, None, "document without a kind", &raw),
        }
    }
}

fn slo_rows(
    doc: &Value,
    slis: &HashMap<&str, &Value>,
    chunk: &Chunk<'_>,
) -> Result<Vec<Slo>, String> {
    let name = json_str(doc, "/metadata/name").ok_or("SLO without metadata.name")?;
    let spec = doc.get("spec").ok_or("SLO without spec")?;
    let service = json_str(spec, "/service").ok_or("SLO without spec.service")?;
    let indicator = match (
        spec.pointer("/indicator/spec"),
        json_str(spec, "/indicatorRef"),
    ) {
        (Some(inline), _) => inline,
        (None, Some(reference)) => *slis
            .get(reference)
            .ok_or_else(|| format!("indicatorRef {reference:?} names no SLI in this file"))?,
        (None, None) => return Err("SLO without indicator or indicatorRef".into()),
    };
    let indicator_kind = if indicator.get("ratioMetric").is_some() {
        "ratio"
    } else if indicator.get("thresholdMetric").is_some() {
        "threshold"
    } else {
        return Err("indicator has neither ratioMetric nor thresholdMetric".into());
    };
    let window = spec
        .pointer("/timeWindow/0")
        .ok_or("SLO without timeWindow")?;
    let duration = json_str(window, "/duration").ok_or("timeWindow without duration")?;
    let is_rolling = window
        .get("isRolling")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let budgeting = json_str(spec, "/budgetingMethod").ok_or("SLO without budgetingMethod")?;
    let sources = IndicatorSources::of(indicator, indicator_kind)?;
    let objectives = spec
        .get("objectives")
        .and_then(Value::as_array)
        .filter(|o| !o.is_empty())
        .ok_or("SLO without objectives")?;
    objectives
        .iter()
        .enumerate()
        .map(|(i, objective)| {
            let target = match (
                number(objective.get("target")),
                number(objective.get("targetPercent")),
            ) {
                (Some(t), _) => t,
                (None, Some(p)) => p / 100.0,
                _ => return Err(format!("objective {i} without a numeric target")),
            };
            if !(0.0..=1.0).contains(&target) {
                return Err(format!("objective {i} target {target} is outside 0..1"));
            }
            let objective_name = json_str(objective, "/displayName")
                .map(str::to_string)
                .unwrap_or_else(|| i.to_string());
            Ok(Slo {
                slo_id: if objectives.len() == 1 {
                    name.to_string()
                } else {
                    format!("{name}/{objective_name}")
                },
                service: service.to_string(),
                display_name: json_str(doc, "/metadata/displayName").map(str::to_string),
                indicator_kind: indicator_kind.into(),
                indicator: indicator.to_string(),
                objective: target,
                threshold: number(objective.get("value")),
                window: duration.to_string(),
                is_rolling,
                budgeting_method: budgeting.to_string(),
                source_file: chunk.source_sha256.to_string(),
                indicator_source: sources.source.to_string(),
                good_metric: sources.good.clone(),
                bad_metric: sources.bad.clone(),
                total_metric: sources.total.clone(),
                threshold_metric: sources.threshold.clone(),
                threshold_op: json_str(objective, "/op").map(str::to_string),
                time_slice_target: number(objective.get("timeSliceTarget")),
                time_slice_window: json_str(objective, "/timeSliceWindow").map(str::to_string),
            })
        })
        .collect()
}

/// Where an indicator's events come from.
struct IndicatorSources {
    /// metric_points or spans.
    source: &'static str,
    good: Option<String>,
    bad: Option<String>,
    total: Option<String>,
    threshold: Option<String>,
}

impl IndicatorSources {
    /// Reads the metric names of an indicator's metric sources. A source names its metric in
    /// `spec.metric`, `spec.metricName` or, for Prometheus, a `spec.query` that is a bare
    /// metric name; a source of type `spans` (or `traces`) names a span operation, or none for
    /// every server span of the service. A PromQL expression cannot be evaluated over the
    /// lake, so it is refused with that reason rather than reported as no data.
    fn of(indicator: &Value, kind: &str) -> Result<IndicatorSources, String> {
        let mut sources = IndicatorSources {
            source: "metric_points",
            good: None,
            bad: None,
            total: None,
            threshold: None,
        };
        if kind == "threshold" {
            let source = indicator
                .pointer("/thresholdMetric/metricSource")
                .ok_or("thresholdMetric without metricSource")?;
            if matches!(json_str(source, "/type"), Some("spans" | "traces")) {
                sources.source = "spans";
                sources.threshold = json_str(source, "/spec/operation").map(str::to_string);
            } else {
                sources.threshold = Some(metric_name(source, "thresholdMetric")?);
            }
            return Ok(sources);
        }
        let ratio = indicator.get("ratioMetric").ok_or("no ratioMetric")?;
        let named = |role: &str| -> Result<Option<String>, String> {
            ratio
                .pointer(&format!("/{role}/metricSource"))
                .map(|source| metric_name(source, &format!("ratioMetric.{role}")))
                .transpose()
        };
        sources.good = named("good")?;
        sources.bad = named("bad")?;
        sources.total = named("total")?;
        if sources.total.is_none() || (sources.good.is_none() && sources.bad.is_none()) {
            return Err("ratioMetric needs total and one of good or bad".into());
        }
        Ok(sources)
    }
}

fn metric_name(source: &Value, role: &str) -> Result<String, String> {
    let spec = source
        .get("spec")
        .ok_or(format!("{role}.metricSource without spec"))?;
    if let Some(name) = json_str(spec, "/metric").or_else(|| json_str(spec, "/metricName")) {
        return Ok(name.to_string());
    }
    match json_str(spec, "/query").map(str::trim) {
        Some(query)
            if !query.is_empty()
                && query
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.')) =>
        {
            Ok(query.to_string())
        }
        Some(query) => Err(format!(
            "{role}: the query {query:?} is an expression Maestro cannot evaluate over the lake; name the metric (spec.metric)"
        )),
        None => Err(format!("{role}.metricSource.spec names no metric")),
    }
}

/// A number written as a number or as a quoted number.
fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
