//! OTLP JSON (the collector's file exporter: one request per line, or one request per file):
//! traces -> `spans`, metrics -> `metric_points`.
//!
//! Decoding is `opentelemetry-proto`'s serde support, which follows the OTLP JSON mapping
//! (hex ids, 64-bit integers as strings, camelCase names). Gauges, sums and histograms map onto
//! columns; exponential histograms and summaries are kept too (their buckets and quantiles in
//! the bucket columns, the exponential layout as JSON), never dropped. `service.name` of the
//! resource names the service; without it the SDK convention `unknown_service` applies.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{MetricsData, metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use serde_json::{Map, Value};

use super::{Chunk, Records, truncate_raw};
use crate::schema::{MetricPoint, Span, Ts};

/// Each document of a chunk: JSON lines, or the whole chunk when it is one pretty-printed
/// request.
fn documents<'a>(chunk: &Chunk<'a>) -> Vec<(Option<i64>, i64, &'a [u8])> {
    let lines: Vec<_> = chunk.lines().collect();
    let first_is_whole = lines
        .first()
        .is_some_and(|(_, _, text)| serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok());
    if first_is_whole {
        lines
            .into_iter()
            .map(|(line, offset, text)| (Some(line), offset, text))
            .collect()
    } else {
        vec![(None, chunk.first_offset, chunk.bytes)]
    }
}

/// Reads OTLP JSON traces.
pub fn read_traces(chunk: &Chunk<'_>, out: &mut Records) {
    for (line, offset, text) in documents(chunk) {
        let data: TracesData = match serde_json::from_slice(text) {
            Ok(data) => data,
            Err(e) => {
                out.reject(
                    line,
                    Some(offset),
                    format!("not an OTLP JSON traces request: {e}"),
                    truncate_raw(text),
                );
                continue;
            }
        };
        for resource_spans in data.resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let problem = if span.trace_id.len() != 16 {
                        Some("traceId is not 16 bytes of hex")
                    } else if span.span_id.len() != 8 {
                        Some("spanId is not 8 bytes of hex")
                    } else if span.start_time_unix_nano == 0 {
                        Some("missing startTimeUnixNano")
                    } else if span.end_time_unix_nano < span.start_time_unix_nano {
                        Some("endTimeUnixNano is before startTimeUnixNano")
                    } else {
                        None
                    };
                    if let Some(reason) = problem {
                        out.reject(line, Some(offset), reason, span.name.as_bytes());
                        continue;
                    }
                    out.read += 1;
                    let status = span.status.as_ref();
                    out.spans.push(Span {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: (!span.parent_span_id.is_empty())
                            .then(|| hex(&span.parent_span_id)),
                        service: service.clone(),
                        operation: span.name,
                        kind: span_kind(span.kind).into(),
                        start_at: Ts::from_nanos(span.start_time_unix_nano),
                        end_at: Ts::from_nanos(span.end_time_unix_nano),
                        duration_ms: (span.end_time_unix_nano - span.start_time_unix_nano) as f64
                            / 1e6,
                        status: match status.map(|s| s.code) {
                            Some(1) => "ok",
                            Some(2) => "error",
                            _ => "unset",
                        }
                        .into(),
                        status_message: status.map(|s| s.message.clone()).filter(|m| !m.is_empty()),
                        attributes: (!span.attributes.is_empty())
                            .then(|| attributes_json(&span.attributes)),
                    });
                }
            }
        }
    }
}

/// Reads OTLP JSON metrics.
pub fn read_metrics(chunk: &Chunk<'_>, out: &mut Records) {
    for (line, offset, text) in documents(chunk) {
        let data: MetricsData = match serde_json::from_slice(text) {
            Ok(data) => data,
            Err(e) => {
                out.reject(
                    line,
                    Some(offset),
                    format!("not an OTLP JSON metrics request: {e}"),
                    truncate_raw(text),
                );
                continue;
            }
        };
        for resource_metrics in data.resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    read_metric(&service, metric, line, offset, out);
                }
            }
        }
    }
}

fn read_metric(
    service: &str,
    metric: opentelemetry_proto::tonic::metrics::v1::Metric,
    line: Option<i64>,
    offset: i64,
    out: &mut Records,
) {
    let unit = (!metric.unit.is_empty()).then(|| metric.unit.clone());
    let point = |kind: &str, time: u64, start: u64, attributes: &[KeyValue]| MetricPoint {
        service: service.to_string(),
        metric: metric.name.clone(),
        kind: kind.into(),
        unit: unit.clone(),
        at: Ts::from_nanos(time),
        start_at: (start != 0).then(|| Ts::from_nanos(start)),
        attributes: attributes_json(attributes),
        source_format: "otlp".into(),
        ..Default::default()
    };
    let Some(data) = metric.data.as_ref() else {
        out.reject(
            line,
            Some(offset),
            format!(
                "metric {:?} has no gauge, sum, histogram or summary",
                metric.name
            ),
            metric.name.as_bytes(),
        );
        return;
    };
    let push = |out: &mut Records, time: u64, row: MetricPoint| {
        if time == 0 {
            out.reject(
                line,
                Some(offset),
                format!("data point of {:?} without timeUnixNano", metric.name),
                metric.name.as_bytes(),
            );
        } else {
            out.read += 1;
            out.metric_points.push(row);
        }
    };
    match data {
        metric::Data::Gauge(gauge) => {
            for p in &gauge.data_points {
                let mut row = point(
                    "gauge",
                    p.time_unix_nano,
                    p.start_time_unix_nano,
                    &p.attributes,
                );
                row.value = number_value(p.value.as_ref());
                push(out, p.time_unix_nano, row);
            }
        }
        metric::Data::Sum(sum) => {
            for p in &sum.data_points {
                let mut row = point(
                    "sum",
                    p.time_unix_nano,
                    p.start_time_unix_nano,
                    &p.attributes,
                );
                row.value = number_value(p.value.as_ref());
                row.is_monotonic = Some(sum.is_monotonic);
                row.temporality = temporality(sum.aggregation_temporality);
                push(out, p.time_unix_nano, row);
            }
        }
        metric::Data::Histogram(histogram) => {
            for p in &histogram.data_points {
                let mut row = point(
                    "histogram",
                    p.time_unix_nano,
                    p.start_time_unix_nano,
                    &p.attributes,
                );
                row.value = p.sum;
                row.count = Some(p.count as f64);
                row.bucket_bounds = p.explicit_bounds.clone();
                row.bucket_counts = p.bucket_counts.iter().map(|c| *c as f64).collect();
                row.temporality = temporality(histogram.aggregation_temporality);
                push(out, p.time_unix_nano, row);
            }
        }
        metric::Data::ExponentialHistogram(histogram) => {
            for p in &histogram.data_points {
                let mut row = point(
                    "exponential_histogram",
                    p.time_unix_nano,
                    p.start_time_unix_nano,
                    &p.attributes,
                );
                row.value = p.sum;
                row.count = Some(p.count as f64);
                let buckets = |b: &Option<opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets>| {
                    b.as_ref().map(|b| serde_json::json!({"offset": b.offset, "bucket_counts": b.bucket_counts}))
                };
                row.exponential = Some(
                    serde_json::json!({
                        "scale": p.scale,
                        "zero_count": p.zero_count,
                        "zero_threshold": p.zero_threshold,
                        "positive": buckets(&p.positive),
                        "negative": buckets(&p.negative),
                        "min": p.min,
                        "max": p.max,
                    })
                    .to_string(),
                );
                row.temporality = temporality(histogram.aggregation_temporality);
                push(out, p.time_unix_nano, row);
            }
        }
        metric::Data::Summary(summary) => {
            for p in &summary.data_points {
                let mut row = point(
                    "summary",
                    p.time_unix_nano,
                    p.start_time_unix_nano,
                    &p.attributes,
                );
                row.value = Some(p.sum);
                row.count = Some(p.count as f64);
                row.bucket_bounds = p.quantile_values.iter().map(|q| q.quantile).collect();
                row.bucket_counts = p.quantile_values.iter().map(|q| q.value).collect();
                push(out, p.time_unix_nano, row);
            }
        }
    }
}

fn number_value(
    value: Option<&opentelemetry_proto::tonic::metrics::v1::number_data_point::Value>,
) -> Option<f64> {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as V;
    match value? {
        V::AsDouble(v) => Some(*v),
        V::AsInt(v) => Some(*v as f64),
    }
}

fn temporality(code: i32) -> Option<String> {
    match code {
        1 => Some("delta".into()),
        2 => Some("cumulative".into()),
        _ => None,
    }
}

fn span_kind(code: i32) -> &'static str {
    match code {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "unknown_service".into())
}

/// Attributes as a JSON object with sorted keys, so equal attribute sets compare equal.
pub(crate) fn attributes_json(attributes: &[KeyValue]) -> String {
    Value::Object(attributes_map(attributes)).to_string()
}

fn attributes_map(attributes: &[KeyValue]) -> Map<String, Value> {
    attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(any_to_json).unwrap_or(Value::Null),
            )
        })
        .collect()
}

fn any_to_json(value: &AnyValue) -> Value {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes_map(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex(b)),
        Some(any_value::Value::StringValueStrindex(i)) => Value::from(*i),
        None => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::readers::ReportContext;

    #[test]
    fn summaries_keep_their_quantiles() {
        let text = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},"scopeMetrics":[{"metrics":[{"name":"rpc.duration","summary":{"dataPoints":[{"timeUnixNano":"1700000000000000000","count":"10","sum":55.5,"quantileValues":[{"quantile":0.5,"value":4.0},{"quantile":0.99,"value":9.5}]}]}}]}]}]}"#;
        let context = ReportContext::default();
        let mut out = Records::default();
        read_metrics(
            &Chunk::whole_file(text.as_bytes(), "00", None, &context),
            &mut out,
        );
        let point = &out.metric_points[0];
        assert_eq!(
            (point.kind.as_str(), point.count, point.value),
            ("summary", Some(10.0), Some(55.5))
        );
        assert_eq!(point.bucket_bounds, [0.5, 0.99]);
        assert_eq!(point.bucket_counts, [4.0, 9.5]);
    }
}
