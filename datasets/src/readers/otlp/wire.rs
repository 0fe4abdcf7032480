//! The OTLP JSON request messages, as far as Maestro reads them.
//!
//! They follow the OTLP/JSON mapping of the protobuf messages: lowerCamelCase names, trace and
//! span ids as hex, bytes as base64, 64-bit integers as decimal strings (numbers accepted too),
//! enums as integers (their names accepted too). Every field may be absent; fields Maestro does
//! not keep are skipped unread. Strings borrow the input unless they hold escapes.
//!
//! Why not opentelemetry-proto's serde types: their oneofs (a metric's data, a data point's
//! value, an attribute's value) are `#[serde(flatten)]`, and serde buffers every flattened
//! struct into an intermediate tree before decoding it. Measured on generated collector files,
//! that buffering took a quarter of the whole ingest; these plain structs decode directly.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A metrics request (`ExportMetricsServiceRequest`, or `MetricsData`).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricsData<'a> {
    #[serde(borrow)]
    pub resource_metrics: Vec<ResourceMetrics<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceMetrics<'a> {
    #[serde(borrow)]
    pub resource: Option<Resource<'a>>,
    #[serde(borrow)]
    pub scope_metrics: Vec<ScopeMetrics<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Resource<'a> {
    #[serde(borrow)]
    pub attributes: Vec<KeyValue<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ScopeMetrics<'a> {
    #[serde(borrow)]
    pub metrics: Vec<Metric<'a>>,
}

/// A metric; exactly one of its data fields should be present.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Metric<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub unit: Cow<'a, str>,
    #[serde(borrow)]
    pub gauge: Option<Gauge<'a>>,
    #[serde(borrow)]
    pub sum: Option<Sum<'a>>,
    #[serde(borrow)]
    pub histogram: Option<Histogram<'a>>,
    #[serde(borrow)]
    pub exponential_histogram: Option<ExponentialHistogram<'a>>,
    #[serde(borrow)]
    pub summary: Option<Summary<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Gauge<'a> {
    #[serde(borrow)]
    pub data_points: Vec<NumberDataPoint<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Sum<'a> {
    #[serde(borrow)]
    pub data_points: Vec<NumberDataPoint<'a>>,
    pub aggregation_temporality: Code,
    pub is_monotonic: bool,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Histogram<'a> {
    #[serde(borrow)]
    pub data_points: Vec<HistogramDataPoint<'a>>,
    pub aggregation_temporality: Code,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ExponentialHistogram<'a> {
    #[serde(borrow)]
    pub data_points: Vec<ExponentialHistogramDataPoint<'a>>,
    pub aggregation_temporality: Code,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Summary<'a> {
    #[serde(borrow)]
    pub data_points: Vec<SummaryDataPoint<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct NumberDataPoint<'a> {
    #[serde(borrow)]
    pub attributes: Vec<KeyValue<'a>>,
    pub start_time_unix_nano: U64,
    pub time_unix_nano: U64,
    pub as_double: Option<F64>,
    pub as_int: Option<I64>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct HistogramDataPoint<'a> {
    #[serde(borrow)]
    pub attributes: Vec<KeyValue<'a>>,
    pub start_time_unix_nano: U64,
    pub time_unix_nano: U64,
    pub count: U64,
    pub sum: Option<F64>,
    pub bucket_counts: Vec<U64>,
    pub explicit_bounds: Vec<F64>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ExponentialHistogramDataPoint<'a> {
    #[serde(borrow)]
    pub attributes: Vec<KeyValue<'a>>,
    pub start_time_unix_nano: U64,
    pub time_unix_nano: U64,
    pub count: U64,
    pub sum: Option<F64>,
    pub scale: I64,
    pub zero_count: U64,
    pub zero_threshold: F64,
    pub positive: Option<Buckets>,
    pub negative: Option<Buckets>,
    pub min: Option<F64>,
    pub max: Option<F64>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Buckets {
    pub offset: I64,
    pub bucket_counts: Vec<U64>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct SummaryDataPoint<'a> {
    #[serde(borrow)]
    pub attributes: Vec<KeyValue<'a>>,
    pub start_time_unix_nano: U64,
    pub time_unix_nano: U64,
    pub count: U64,
    pub sum: F64,
    pub quantile_values: Vec<ValueAtQuantile>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ValueAtQuantile {
    pub quantile: F64,
    pub value: F64,
}

/// A traces request (`ExportTraceServiceRequest`, or `TracesData`).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct TracesData<'a> {
    #[serde(borrow)]
    pub resource_spans: Vec<ResourceSpans<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceSpans<'a> {
    #[serde(borrow)]
    pub resource: Option<Resource<'a>>,
    #[serde(borrow)]
    pub scope_spans: Vec<ScopeSpans<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ScopeSpans<'a> {
    #[serde(borrow)]
    pub spans: Vec<Span<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Span<'a> {
    #[serde(borrow)]
    pub trace_id: Cow<'a, str>,
    #[serde(borrow)]
    pub span_id: Cow<'a, str>,
    #[serde(borrow)]
    pub parent_span_id: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    pub kind: Code,
    pub start_time_unix_nano: U64,
    pub end_time_unix_nano: U64,
    #[serde(borrow)]
    pub attributes: Vec<KeyValue<'a>>,
    #[serde(borrow)]
    pub status: Option<Status<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Status<'a> {
    #[serde(borrow)]
    pub message: Cow<'a, str>,
    pub code: Code,
}

/// An attribute.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyValue<'a> {
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    #[serde(borrow)]
    pub value: Option<AnyValue<'a>>,
}

/// An attribute value: one of its fields is set.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct AnyValue<'a> {
    #[serde(borrow)]
    pub string_value: Option<Cow<'a, str>>,
    pub bool_value: Option<bool>,
    pub int_value: Option<I64>,
    pub double_value: Option<F64>,
    #[serde(borrow)]
    pub array_value: Option<ArrayValue<'a>>,
    #[serde(borrow)]
    pub kvlist_value: Option<KeyValueList<'a>>,
    /// Base64, as the mapping writes bytes.
    #[serde(borrow)]
    pub bytes_value: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ArrayValue<'a> {
    #[serde(borrow)]
    pub values: Vec<AnyValue<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyValueList<'a> {
    #[serde(borrow)]
    pub values: Vec<KeyValue<'a>>,
}

/// A `fixed64`/`uint64` field: a decimal string, or a number.
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct U64(pub u64);

/// An `int64`/`sint64` field: a decimal string, or a number.
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct I64(pub i64);

/// A `double` field: a number, or one of the strings "NaN", "Infinity", "-Infinity".
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct F64(pub f64);

/// An enum field: its number, or its name.
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct Code(pub i32);

/// Names of the enum values Maestro reads (span kind, status code, aggregation temporality).
const ENUM_NAMES: &[(&str, i32)] = &[
    ("SPAN_KIND_UNSPECIFIED", 0),
    ("SPAN_KIND_INTERNAL", 1),
    ("SPAN_KIND_SERVER", 2),
    ("SPAN_KIND_CLIENT", 3),
    ("SPAN_KIND_PRODUCER", 4),
    ("SPAN_KIND_CONSUMER", 5),
    ("STATUS_CODE_UNSET", 0),
    ("STATUS_CODE_OK", 1),
    ("STATUS_CODE_ERROR", 2),
    ("AGGREGATION_TEMPORALITY_UNSPECIFIED", 0),
    ("AGGREGATION_TEMPORALITY_DELTA", 1),
    ("AGGREGATION_TEMPORALITY_CUMULATIVE", 2),
];

/// One visitor for the four scalar wrappers: it accepts numbers and strings and leaves the
/// range and syntax checks to `convert`.
struct ScalarVisitor<T> {
    expecting: &'static str,
    convert: fn(Scalar<'_>) -> Option<T>,
}

enum Scalar<'s> {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Text(&'s str),
}

impl<T> Visitor<'_> for ScalarVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.finish(Scalar::Unsigned(v), &v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.finish(Scalar::Signed(v), &v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.finish(Scalar::Float(v), &v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        self.finish(Scalar::Text(v), &v)
    }
}

impl<T> ScalarVisitor<T> {
    fn finish<E: de::Error>(self, value: Scalar<'_>, shown: &dyn fmt::Debug) -> Result<T, E> {
        (self.convert)(value)
            .ok_or_else(|| E::custom(format!("{shown:?} is not {}", self.expecting)))
    }
}

impl<'de> Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor {
            expecting: "an unsigned 64-bit integer",
            convert: |v| match v {
                Scalar::Unsigned(n) => Some(U64(n)),
                Scalar::Signed(n) => u64::try_from(n).ok().map(U64),
                Scalar::Float(_) => None,
                Scalar::Text(t) => t.parse().ok().map(U64),
            },
        })
    }
}

impl<'de> Deserialize<'de> for I64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor {
            expecting: "a signed 64-bit integer",
            convert: |v| match v {
                Scalar::Unsigned(n) => i64::try_from(n).ok().map(I64),
                Scalar::Signed(n) => Some(I64(n)),
                Scalar::Float(_) => None,
                Scalar::Text(t) => t.parse().ok().map(I64),
            },
        })
    }
}

impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor {
            expecting: "a number",
            convert: |v| match v {
                Scalar::Unsigned(n) => Some(F64(n as f64)),
                Scalar::Signed(n) => Some(F64(n as f64)),
                Scalar::Float(n) => Some(F64(n)),
                Scalar::Text("NaN") => Some(F64(f64::NAN)),
                Scalar::Text("Infinity") => Some(F64(f64::INFINITY)),
                Scalar::Text("-Infinity") => Some(F64(f64::NEG_INFINITY)),
                Scalar::Text(t) => t.parse().ok().map(F64),
            },
        })
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor {
            expecting: "an enum number or name",
            convert: |v| match v {
                Scalar::Unsigned(n) => i32::try_from(n).ok().map(Code),
                Scalar::Signed(n) => i32::try_from(n).ok().map(Code),
                Scalar::Float(_) => None,
                Scalar::Text(t) => ENUM_NAMES
                    .iter()
                    .find(|(name, _)| *name == t)
                    .map(|(_, code)| Code(*code)),
            },
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn scalars_accept_strings_and_numbers() {
        let point: NumberDataPoint<'_> = serde_json::from_str(
            r#"{"timeUnixNano":"1700000000000000001","startTimeUnixNano":5,"asInt":"-7"}"#,
        )
        .unwrap();
        assert_eq!(point.time_unix_nano, U64(1_700_000_000_000_000_001));
        assert_eq!(point.start_time_unix_nano, U64(5));
        assert_eq!(point.as_int, Some(I64(-7)));
        let nan: F64 = serde_json::from_str(r#""NaN""#).unwrap();
        assert!(nan.0.is_nan());
        let kind: Code = serde_json::from_str(r#""SPAN_KIND_CLIENT""#).unwrap();
        assert_eq!(kind, Code(3));
        let error = serde_json::from_str::<U64>(r#""-1""#).unwrap_err();
        assert!(error.to_string().contains("unsigned"), "{error}");
        assert!(serde_json::from_str::<Code>(r#""NOT_A_KIND""#).is_err());
    }
}
