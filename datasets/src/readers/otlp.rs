//! OTLP JSON (the collector's file exporter: one request per line, or one request per file):
//! traces -> `spans`, metrics -> `metric_points`.
//!
//! The request messages are declared in [`wire`] after the OTLP JSON mapping. Gauges, sums and
//! histograms map onto columns; exponential histograms and summaries are kept too (their
//! buckets and quantiles in the bucket columns, the exponential layout as JSON), never dropped.
//! `service.name` of the resource names the service; without it the SDK convention
//! `unknown_service` applies.

mod wire;

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;

use super::json::Json;
use super::{Chunk, Records, parse_json, truncate_raw};
use crate::schema::{MetricPoint, Span, Ts};
use wire::{AnyValue, KeyValue, Resource, U64};

/// Each document of a chunk: JSON lines, or the whole chunk when it is one pretty-printed
/// request.
fn documents<'a>(chunk: &Chunk<'a>) -> Vec<(Option<i64>, i64, &'a [u8])> {
    let lines: Vec<_> = chunk.lines().collect();
    let first_is_whole = lines
        .first()
        .is_some_and(|(_, _, text)| parse_json::<serde::de::IgnoredAny>(text).is_ok());
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
        let data: wire::TracesData<'_> = match parse_json(text) {
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
                    let (start, end) = (span.start_time_unix_nano.0, span.end_time_unix_nano.0);
                    let parent =
                        (!span.parent_span_id.is_empty()).then(|| hex_id(&span.parent_span_id, 8));
                    let ids = (hex_id(&span.trace_id, 16), hex_id(&span.span_id, 8), parent);
                    let checked = match ids {
                        (None, _, _) => Err("traceId is not 16 bytes of hex"),
                        (_, None, _) => Err("spanId is not 8 bytes of hex"),
                        (_, _, Some(None)) => Err("parentSpanId is not 8 bytes of hex"),
                        _ if start == 0 => Err("missing startTimeUnixNano"),
                        _ if end < start => Err("endTimeUnixNano is before startTimeUnixNano"),
                        (Some(trace), Some(span), parent) => Ok((trace, span, parent.flatten())),
                    };
                    let (trace_id, span_id, parent_span_id) = match checked {
                        Ok(ids) => ids,
                        Err(reason) => {
                            out.reject(line, Some(offset), reason, span.name.as_bytes());
                            continue;
                        }
                    };
                    out.read += 1;
                    let status = span.status.as_ref();
                    out.spans.push(Span {
                        trace_id,
                        span_id,
                        parent_span_id,
                        service: service.to_string(),
                        operation: span.name.into_owned(),
                        kind: span_kind(span.kind.0).into(),
                        start_at: Ts::from_nanos(start),
                        end_at: Ts::from_nanos(end),
                        duration_ms: (end - start) as f64 / 1e6,
                        status: match status.map(|s| s.code.0) {
                            Some(1) => "ok",
                            Some(2) => "error",
                            _ => "unset",
                        }
                        .into(),
                        status_message: status
                            .map(|s| s.message.to_string())
                            .filter(|m| !m.is_empty()),
                        attributes: (!span.attributes.is_empty())
                            .then(|| attributes_json(&span.attributes)),
                    });
                }
            }
        }
    }
}

/// Texts every data point repeats, allocated once per chunk rather than once per row.
struct MetricTexts {
    gauge: Arc<str>,
    sum: Arc<str>,
    histogram: Arc<str>,
    exponential_histogram: Arc<str>,
    summary: Arc<str>,
    delta: Arc<str>,
    cumulative: Arc<str>,
    source_format: Arc<str>,
}

impl MetricTexts {
    fn new() -> Self {
        MetricTexts {
            gauge: "gauge".into(),
            sum: "sum".into(),
            histogram: "histogram".into(),
            exponential_histogram: "exponential_histogram".into(),
            summary: "summary".into(),
            delta: "delta".into(),
            cumulative: "cumulative".into(),
            source_format: "otlp".into(),
        }
    }

    fn temporality(&self, code: wire::Code) -> Option<Arc<str>> {
        match code.0 {
            1 => Some(self.delta.clone()),
            2 => Some(self.cumulative.clone()),
            _ => None,
        }
    }
}

/// Reads OTLP JSON metrics.
pub fn read_metrics(chunk: &Chunk<'_>, out: &mut Records) {
    let texts = MetricTexts::new();
    for (line, offset, text) in documents(chunk) {
        let data: wire::MetricsData<'_> = match parse_json(text) {
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
        let place = Place { line, offset };
        for resource_metrics in data.resource_metrics {
            let service: Arc<str> = service_name(resource_metrics.resource.as_ref()).into();
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    read_metric(&service, &texts, metric, place, out);
                }
            }
        }
    }
}

/// Where a document sits in its file, for rejections.
#[derive(Clone, Copy)]
struct Place {
    line: Option<i64>,
    offset: i64,
}

fn read_metric(
    service: &Arc<str>,
    texts: &MetricTexts,
    metric: wire::Metric<'_>,
    place: Place,
    out: &mut Records,
) {
    let rows = MetricRows {
        service,
        texts,
        place,
        name: Arc::from(metric.name.as_ref()),
        unit: (!metric.unit.is_empty()).then(|| metric.unit.as_ref().into()),
    };
    let mut kinds = 0;
    if let Some(gauge) = &metric.gauge {
        kinds += 1;
        rows.emit(out, &texts.gauge, &gauge.data_points, |p, row| {
            row.value = number_value(p);
        });
    }
    if let Some(sum) = &metric.sum {
        kinds += 1;
        rows.emit(out, &texts.sum, &sum.data_points, |p, row| {
            row.value = number_value(p);
            row.is_monotonic = Some(sum.is_monotonic);
            row.temporality = texts.temporality(sum.aggregation_temporality);
        });
    }
    if let Some(histogram) = &metric.histogram {
        kinds += 1;
        rows.emit(out, &texts.histogram, &histogram.data_points, |p, row| {
            row.value = p.sum.map(|s| s.0);
            row.count = Some(p.count.0 as f64);
            row.bucket_bounds = p.explicit_bounds.iter().map(|b| b.0).collect();
            row.bucket_counts = p.bucket_counts.iter().map(|c| c.0 as f64).collect();
            row.temporality = texts.temporality(histogram.aggregation_temporality);
        });
    }
    if let Some(histogram) = &metric.exponential_histogram {
        kinds += 1;
        let kind = &texts.exponential_histogram;
        rows.emit(out, kind, &histogram.data_points, |p, row| {
            row.value = p.sum.map(|s| s.0);
            row.count = Some(p.count.0 as f64);
            row.exponential = Some(exponential_layout(p));
            row.temporality = texts.temporality(histogram.aggregation_temporality);
        });
    }
    if let Some(summary) = &metric.summary {
        kinds += 1;
        rows.emit(out, &texts.summary, &summary.data_points, |p, row| {
            row.value = Some(p.sum.0);
            row.count = Some(p.count.0 as f64);
            row.bucket_bounds = p.quantile_values.iter().map(|q| q.quantile.0).collect();
            row.bucket_counts = p.quantile_values.iter().map(|q| q.value.0).collect();
        });
    }
    if kinds == 0 {
        out.reject(
            place.line,
            Some(place.offset),
            format!(
                "metric {:?} has no gauge, sum, histogram or summary",
                &*rows.name
            ),
            rows.name.as_bytes(),
        );
    }
}

/// What the rows of one metric share.
struct MetricRows<'m> {
    service: &'m Arc<str>,
    texts: &'m MetricTexts,
    place: Place,
    name: Arc<str>,
    unit: Option<Arc<str>>,
}

impl MetricRows<'_> {
    /// One row per data point: the columns every kind has, then what `fill` adds.
    fn emit<P: DataPoint>(
        &self,
        out: &mut Records,
        kind: &Arc<str>,
        points: &[P],
        fill: impl Fn(&P, &mut MetricPoint),
    ) {
        for p in points {
            let (time, start) = p.times();
            if time.0 == 0 {
                out.reject(
                    self.place.line,
                    Some(self.place.offset),
                    format!("data point of {:?} without timeUnixNano", &*self.name),
                    self.name.as_bytes(),
                );
                continue;
            }
            let mut row = MetricPoint {
                service: self.service.clone(),
                metric: self.name.clone(),
                kind: kind.clone(),
                unit: self.unit.clone(),
                at: Ts::from_nanos(time.0),
                start_at: (start.0 != 0).then(|| Ts::from_nanos(start.0)),
                attributes: attributes_json(p.attributes()),
                source_format: self.texts.source_format.clone(),
                ..Default::default()
            };
            fill(p, &mut row);
            out.read += 1;
            out.metric_points.push(row);
        }
    }
}

/// What every kind of data point has.
trait DataPoint {
    /// (timeUnixNano, startTimeUnixNano).
    fn times(&self) -> (U64, U64);
    fn attributes(&self) -> &[KeyValue<'_>];
}

macro_rules! data_point {
    ($($point:ident),*) => {$(
        impl DataPoint for wire::$point<'_> {
            fn times(&self) -> (U64, U64) {
                (self.time_unix_nano, self.start_time_unix_nano)
            }
            fn attributes(&self) -> &[KeyValue<'_>] {
                &self.attributes
            }
        }
    )*};
}

data_point!(
    NumberDataPoint,
    HistogramDataPoint,
    ExponentialHistogramDataPoint,
    SummaryDataPoint
);

/// An exponential histogram's scale, zero bucket, bucket runs and range, as JSON.
fn exponential_layout(p: &wire::ExponentialHistogramDataPoint<'_>) -> String {
    let buckets = |b: &Option<wire::Buckets>| {
        b.as_ref().map(|b| {
            let counts: Vec<u64> = b.bucket_counts.iter().map(|c| c.0).collect();
            serde_json::json!({"offset": b.offset.0, "bucket_counts": counts})
        })
    };
    serde_json::json!({
        "scale": p.scale.0,
        "zero_count": p.zero_count.0,
        "zero_threshold": p.zero_threshold.0,
        "positive": buckets(&p.positive),
        "negative": buckets(&p.negative),
        "min": p.min.map(|v| v.0),
        "max": p.max.map(|v| v.0),
    })
    .to_string()
}

fn number_value(point: &wire::NumberDataPoint<'_>) -> Option<f64> {
    match (point.as_double, point.as_int) {
        (Some(v), _) => Some(v.0),
        (None, Some(v)) => Some(v.0 as f64),
        (None, None) => None,
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

fn service_name<'a>(resource: Option<&'a Resource<'_>>) -> &'a str {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref()?.string_value.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown_service")
}

/// A trace or span id of `bytes` bytes, as lowercase hex, or `None` when it is not one.
fn hex_id(text: &str, bytes: usize) -> Option<String> {
    (text.len() == bytes * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| text.to_ascii_lowercase())
}

/// Attributes as a JSON object with sorted keys, so equal attribute sets compare equal.
pub(crate) fn attributes_json(attributes: &[KeyValue<'_>]) -> String {
    attributes_object(attributes).to_canonical_sized(64 * attributes.len())
}

fn attributes_object<'a>(attributes: &'a [KeyValue<'a>]) -> Json<'a> {
    Json::object(
        attributes
            .iter()
            .map(|kv| {
                let value = kv.value.as_ref().map_or(Json::Null, any_to_json);
                (Cow::Borrowed(kv.key.as_ref()), value)
            })
            .collect(),
    )
}

fn any_to_json<'a>(value: &'a AnyValue<'a>) -> Json<'a> {
    let number = |n: Option<serde_json::Number>| n.map_or(Json::Null, Json::Number);
    if let Some(s) = &value.string_value {
        Json::String(Cow::Borrowed(s.as_ref()))
    } else if let Some(b) = value.bool_value {
        Json::Bool(b)
    } else if let Some(i) = value.int_value {
        Json::Number(i.0.into())
    } else if let Some(d) = value.double_value {
        number(serde_json::Number::from_f64(d.0))
    } else if let Some(array) = &value.array_value {
        Json::Array(array.values.iter().map(any_to_json).collect())
    } else if let Some(list) = &value.kvlist_value {
        attributes_object(&list.values)
    } else if let Some(bytes) = &value.bytes_value {
        // Bytes read as hex, like trace ids; text that is not base64 is kept as it is.
        match base64::engine::general_purpose::STANDARD.decode(bytes.as_bytes()) {
            Ok(decoded) => Json::String(Cow::Owned(hex(&decoded))),
            Err(_) => Json::String(Cow::Borrowed(bytes.as_ref())),
        }
    } else {
        Json::Null
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
            (&*point.kind, point.count, point.value),
            ("summary", Some(10.0), Some(55.5))
        );
        assert_eq!(point.bucket_bounds, [0.5, 0.99]);
        assert_eq!(point.bucket_counts, [4.0, 9.5]);
    }

    #[test]
    fn values_read_as_the_nearest_double_to_their_digits() {
        // Digits a float printer wrote for these doubles: a parse must give the same doubles
        // back. serde_json's default parse missed each by one unit in the last place.
        let values = [1018785.8070308857, 960237.6587414107, 0.11982135937683233];
        let points: Vec<String> = values
            .iter()
            .map(|v| format!(r#"{{"timeUnixNano":"1700000000000000000","asDouble":{v}}}"#))
            .collect();
        let text = format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"load","gauge":{{"dataPoints":[{}]}}}}]}}]}}]}}"#,
            points.join(",")
        );
        let context = ReportContext::default();
        let mut out = Records::default();
        read_metrics(
            &Chunk::whole_file(text.as_bytes(), "00", None, &context),
            &mut out,
        );
        let read: Vec<f64> = out.metric_points.iter().filter_map(|p| p.value).collect();
        assert_eq!(read, values);
    }

    #[test]
    fn a_span_with_a_bad_id_is_rejected_alone() {
        let span = |trace: &str| {
            format!(
                r#"{{"traceId":"{trace}","spanId":"00F067AA0BA902B7","name":"op","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000500000000,"attributes":[{{"key":"b","value":{{"bytesValue":"AQI="}}}},{{"key":"a","value":{{"intValue":"3"}}}}]}}"#
            )
        };
        let text = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{},{}]}}]}}]}}"#,
            span("4BF92F3577B34DA6A3CE929D0E0E4736"),
            span("not-hex")
        );
        let context = ReportContext::default();
        let mut out = Records::default();
        read_traces(
            &Chunk::whole_file(text.as_bytes(), "00", None, &context),
            &mut out,
        );
        assert_eq!((out.read, out.spans.len(), out.rejected.len()), (2, 1, 1));
        let span = &out.spans[0];
        assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!((span.kind.as_str(), span.duration_ms), ("server", 500.0));
        assert_eq!(span.service, "unknown_service");
        assert_eq!(span.attributes.as_deref(), Some(r#"{"a":3,"b":"0102"}"#));
        assert!(out.rejected[0].reason.contains("traceId"));
    }
}
