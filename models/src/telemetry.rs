//! What the canary and rollback judges read from the lake: deployments folded to one record
//! each with what became of them, and the service telemetry around them as samples (one per
//! service, track and collection interval) of error rate, latency percentiles and saturation.
//!
//! The metric names are the OpenTelemetry HTTP server ones Maestro's generator and most
//! instrumented services write: `http.server.requests` and `http.server.errors` (sums),
//! `http.server.duration` (histogram, ms) and `process.cpu.utilization` (gauge). Canary and
//! baseline series carry `deployment.track` (canary or baseline) and `deployment.id`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use datafusion::arrow::array::{
    Array, AsArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use maestro_datasets::lake::{Lake, read_parquet};
use maestro_datasets::schema::{Deployment, Incident, MetricPoint, Row, Ts};

use crate::error::{Error, Result};

const REQUESTS: &str = "http.server.requests";
const ERRORS: &str = "http.server.errors";
const LATENCY: &str = "http.server.duration";
const CPU: &str = "process.cpu.utilization";

/// A deployment with everything its rows and incidents say about it.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)] // fields named for what they hold
pub struct DeploymentFacts {
    pub deployment_id: String,
    pub service: String,
    pub environment: String,
    pub version: Option<String>,
    pub strategy: Option<String>,
    pub started_at: i64,
    /// The last time any row of it was reported: the rollback, for a rolled-back one.
    pub last_reported_at: i64,
    /// succeeded, failed or rolled_back (the worst seen), or None while in progress.
    pub outcome: Option<String>,
    /// When the first incident attributed to it was detected, and its severity.
    pub incident_at: Option<i64>,
    pub incident_severity: Option<String>,
}

impl DeploymentFacts {
    /// Failed, rolled back, or caused an incident.
    pub fn went_bad(&self) -> bool {
        self.incident_at.is_some()
            || matches!(self.outcome.as_deref(), Some("failed" | "rolled_back"))
    }
}

/// Every deployment of the lake with a start time, in (start, id) order.
pub fn deployments(lake: &Lake) -> Result<Vec<DeploymentFacts>> {
    let mut by_id: BTreeMap<String, DeploymentFacts> = BTreeMap::new();
    for batch in read_all::<Deployment>(lake, |_| true)? {
        let id = strings(&batch, "deployment_id")?;
        let service = strings(&batch, "service")?;
        let environment = strings(&batch, "environment")?;
        let version = strings(&batch, "version")?;
        let strategy = strings(&batch, "strategy")?;
        let outcome = strings(&batch, "outcome")?;
        let started = times(&batch, "started_at")?;
        let finished = times(&batch, "finished_at")?;
        for row in 0..batch.num_rows() {
            let entry = by_id
                .entry(id.value(row).to_string())
                .or_insert_with(|| DeploymentFacts {
                    deployment_id: id.value(row).to_string(),
                    service: service.value(row).to_string(),
                    environment: environment.value(row).to_string(),
                    started_at: i64::MAX,
                    last_reported_at: i64::MIN,
                    ..Default::default()
                });
            if started.is_valid(row) {
                entry.started_at = entry.started_at.min(started.value(row));
            }
            for at in [started, finished] {
                if at.is_valid(row) {
                    entry.last_reported_at = entry.last_reported_at.max(at.value(row));
                }
            }
            if version.is_valid(row) && entry.version.is_none() {
                entry.version = Some(version.value(row).to_string());
            }
            if strategy.is_valid(row) && entry.strategy.is_none() {
                entry.strategy = Some(strategy.value(row).to_string());
            }
            if outcome.is_valid(row) {
                let seen = outcome.value(row);
                if outcome_rank(Some(seen)) > outcome_rank(entry.outcome.as_deref()) {
                    entry.outcome = Some(seen.to_string());
                }
            }
        }
    }
    for batch in read_all::<Incident>(lake, |_| true)? {
        let caused_by = strings(&batch, "caused_by_deployment_id")?;
        let detected = times(&batch, "detected_at")?;
        let severity = strings(&batch, "severity")?;
        for row in 0..batch.num_rows() {
            if !caused_by.is_valid(row) || !detected.is_valid(row) {
                continue;
            }
            if let Some(deployment) = by_id.get_mut(caused_by.value(row)) {
                let at = detected.value(row);
                if deployment.incident_at.is_none_or(|earlier| at < earlier) {
                    deployment.incident_at = Some(at);
                    deployment.incident_severity = severity
                        .is_valid(row)
                        .then(|| severity.value(row).to_string());
                }
            }
        }
    }
    let mut facts: Vec<DeploymentFacts> = by_id
        .into_values()
        .filter(|d| d.started_at != i64::MAX)
        .collect();
    facts.sort_by(|a, b| (a.started_at, &a.deployment_id).cmp(&(b.started_at, &b.deployment_id)));
    Ok(facts)
}

fn outcome_rank(outcome: Option<&str>) -> u8 {
    match outcome {
        Some("rolled_back") => 3,
        Some("failed") => 2,
        Some("succeeded") => 1,
        _ => 0,
    }
}

/// Which series a sample belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// The service.
    pub service: String,
    /// canary or baseline, or None for the service as a whole.
    pub track: Option<String>,
    /// The deployment under analysis, for canary and baseline series.
    pub deployment_id: Option<String>,
}

/// One collection interval of one series.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)] // fields named for what they hold
pub struct Sample {
    /// End of the interval, microseconds.
    pub at: i64,
    pub requests: Option<f64>,
    pub errors: Option<f64>,
    /// Latency histogram: upper bounds (ms) and counts per bucket (one more than bounds).
    pub latency_bounds: Vec<f64>,
    pub latency_counts: Vec<f64>,
    pub cpu_utilization: Option<f64>,
}

impl Sample {
    /// Errors over requests, when there were requests.
    pub fn error_rate(&self) -> Option<f64> {
        match (self.errors, self.requests) {
            (Some(errors), Some(requests)) if requests > 0.0 => Some(errors / requests),
            _ => None,
        }
    }

    /// The `q` quantile of latency (0..1), interpolated linearly inside its bucket; the
    /// overflow bucket reports its lower bound. None without observations.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let total: f64 = self.latency_counts.iter().sum();
        if total <= 0.0 || self.latency_counts.len() != self.latency_bounds.len() + 1 {
            return None;
        }
        let target = q * total;
        let mut seen = 0.0;
        for (i, count) in self.latency_counts.iter().enumerate() {
            if seen + count >= target && *count > 0.0 {
                let lower = if i == 0 {
                    0.0
                } else {
                    self.latency_bounds[i - 1]
                };
                let Some(upper) = self.latency_bounds.get(i) else {
                    return Some(lower);
                };
                return Some(lower + (upper - lower) * ((target - seen) / count).clamp(0.0, 1.0));
            }
            seen += count;
        }
        self.latency_bounds.last().copied()
    }
}

/// Which series `samples` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracks {
    /// The services as a whole: points without a `deployment.track`.
    Whole,
    /// Canary and baseline series: points with one.
    Analysis,
}

/// Samples of the `tracks` series with points on the given UTC dates, each series in time
/// order, of the points `keep(service, at)` accepts. Parts are read one at a time and only the
/// rows kept are held: a year of a few hundred services is about fifty million points.
pub fn samples(
    lake: &Lake,
    dates: &BTreeSet<String>,
    tracks: Tracks,
    keep: &dyn Fn(&str, i64) -> bool,
) -> Result<BTreeMap<SeriesKey, Vec<Sample>>> {
    // service -> (track, deployment) -> time -> sample; looked up by the service's text, so
    // that a row costs no allocation unless it starts a series.
    type Series = BTreeMap<(Option<String>, Option<String>), BTreeMap<i64, Sample>>;
    let mut by_service: HashMap<String, Series> = HashMap::new();
    let wanted = |path: &PathBuf| {
        path.components().any(|c| {
            c.as_os_str()
                .to_str()
                .and_then(|name| name.strip_prefix("date="))
                .is_some_and(|date| dates.contains(date))
        })
    };
    let parts: Vec<PathBuf> = lake
        .parts(&MetricPoint::TABLE)?
        .into_iter()
        .filter(|p| wanted(p))
        .collect();
    for part in parts {
        for batch in read_parquet(&part)? {
            let service = strings(&batch, "service")?;
            let metric = strings(&batch, "metric")?;
            let at = times(&batch, "at")?;
            let value = floats(&batch, "value")?;
            let attributes = strings(&batch, "attributes")?;
            let bounds = lists(&batch, "bucket_bounds")?;
            let counts = lists(&batch, "bucket_counts")?;
            for row in 0..batch.num_rows() {
                let name = metric.value(row);
                if ![REQUESTS, ERRORS, LATENCY, CPU].contains(&name) {
                    continue;
                }
                let has_track = attributes.value(row).contains("deployment.track");
                if has_track != (tracks == Tracks::Analysis) {
                    continue;
                }
                let track = if has_track {
                    track_of(attributes.value(row))
                } else {
                    (None, None)
                };
                let service_name = service.value(row);
                let t = at.value(row);
                if !keep(service_name, t) {
                    continue;
                }
                let series = match by_service.get_mut(service_name) {
                    Some(series) => series,
                    None => by_service.entry(service_name.to_string()).or_default(),
                };
                let sample = series.entry(track).or_default().entry(t).or_insert(Sample {
                    at: t,
                    ..Default::default()
                });
                let number = value.is_valid(row).then(|| value.value(row));
                match name {
                    REQUESTS => sample.requests = number,
                    ERRORS => sample.errors = number,
                    CPU => sample.cpu_utilization = number,
                    _ => {
                        sample.latency_bounds = list_values(bounds, row);
                        sample.latency_counts = list_values(counts, row);
                    }
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (service, series) in by_service {
        for ((track, deployment_id), by_time) in series {
            let key = SeriesKey {
                service: service.clone(),
                track,
                deployment_id,
            };
            out.insert(key, by_time.into_values().collect());
        }
    }
    Ok(out)
}

/// The `deployment.track` and `deployment.id` of a point's attributes (a JSON object).
fn track_of(attributes: &str) -> (Option<String>, Option<String>) {
    if !attributes.contains("deployment.track") {
        return (None, None);
    }
    let parsed: serde_json::Value = serde_json::from_str(attributes).unwrap_or_default();
    let text = |key: &str| parsed.get(key).and_then(|v| v.as_str()).map(str::to_string);
    (text("deployment.track"), text("deployment.id"))
}

/// Every part of a table whose path `keep` accepts, read whole.
fn read_all<R: Row>(lake: &Lake, keep: impl Fn(&PathBuf) -> bool) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for part in lake.parts(&R::TABLE)?.into_iter().filter(|p| keep(p)) {
        batches.extend(read_parquet(&part)?);
    }
    Ok(batches)
}

pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| {
            Error::Data(format!(
                "the lake has no column {name}: is it an older schema?"
            ))
        })
}

pub(crate) fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    column(batch, name)?
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Data(format!("column {name} is not text")))
}

pub(crate) fn times<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a TimestampMicrosecondArray> {
    column(batch, name)?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| Error::Data(format!("column {name} is not a timestamp")))
}

pub(crate) fn floats<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Float64Array> {
    column(batch, name)?
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| Error::Data(format!("column {name} is not a float")))
}

pub(crate) fn ints<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
    column(batch, name)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| Error::Data(format!("column {name} is not an integer")))
}

pub(crate) fn lists<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ListArray> {
    column(batch, name)?
        .as_list_opt::<i32>()
        .ok_or_else(|| Error::Data(format!("column {name} is not a list")))
}

fn list_values(list: &ListArray, row: usize) -> Vec<f64> {
    if list.is_null(row) {
        return Vec::new();
    }
    let values = list.value(row);
    values
        .as_any()
        .downcast_ref::<Float64Array>()
        .map(|a| a.iter().map(|v| v.unwrap_or(0.0)).collect())
        .unwrap_or_default()
}

/// The UTC dates a span of time touches.
pub fn dates_between(from: i64, to: i64) -> BTreeSet<String> {
    const DAY: i64 = 86_400_000_000;
    let mut dates = BTreeSet::new();
    let mut t = from.div_euclid(DAY) * DAY;
    while t <= to {
        dates.insert(Ts(t).date());
        t += DAY;
    }
    dates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_interpolate_inside_buckets() {
        let sample = Sample {
            latency_bounds: vec![10.0, 20.0, 40.0],
            latency_counts: vec![0.0, 10.0, 10.0, 0.0],
            ..Default::default()
        };
        assert_eq!(sample.latency_quantile(0.5), Some(20.0));
        assert_eq!(sample.latency_quantile(0.25), Some(15.0));
        assert_eq!(sample.latency_quantile(1.0), Some(40.0));
        assert_eq!(Sample::default().latency_quantile(0.5), None);
    }

    #[test]
    fn tracks_come_from_attributes() {
        assert_eq!(
            track_of(
                r#"{"deployment.environment":"production","deployment.id":"dep-1","deployment.track":"canary"}"#
            ),
            (Some("canary".into()), Some("dep-1".into()))
        );
        assert_eq!(
            track_of(r#"{"deployment.environment":"production"}"#),
            (None, None)
        );
    }

    #[test]
    fn dates_cover_midnight() {
        let start = Ts::parse("2026-09-01T23:50:00Z")
            .map(|t| t.0)
            .unwrap_or_default();
        let dates = dates_between(start, start + 20 * 60_000_000);
        assert_eq!(
            dates.into_iter().collect::<Vec<_>>(),
            ["2026-09-01", "2026-09-02"]
        );
    }
}
