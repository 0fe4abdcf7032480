//! Prometheus text exposition format (and OpenMetrics text) -> `metric_points`, one row per
//! sample line, labels as attributes (`le` and `quantile` included), kind from the family's
//! `# TYPE`.
//!
//! Why not the `prometheus-parse` crate: it skips lines it cannot match without saying so and
//! keeps no line numbers, so a bad sample would vanish instead of reaching `_rejected`; its
//! name pattern also refuses the `:` of recording-rule names. The line grammar is small, so this
//! reader parses it and reports every line it cannot take.
//!
//! Time: the sample's own timestamp, else `--at`, else the file's modification time (when the
//! scrape was saved).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{Chunk, Records};
use crate::schema::{MetricPoint, Ts};

/// Whether text looks like an exposition: `# HELP`/`# TYPE` lines or `name{...} value` samples.
pub fn looks_like_exposition(text: &str) -> bool {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some(line) if line.starts_with("# HELP ") || line.starts_with("# TYPE ") => true,
        Some(line) => parse_sample(line).is_ok(),
        None => false,
    }
}

/// Reads an exposition chunk.
pub fn read(chunk: &Chunk<'_>, out: &mut Records) {
    let mut types: HashMap<String, String> = HashMap::new();
    let default_time = chunk.context.at.or(chunk.modified_at);
    for (line_no, offset, raw) in chunk.lines() {
        let Ok(line) = std::str::from_utf8(raw) else {
            out.reject(Some(line_no), Some(offset), "line is not valid UTF-8", raw);
            continue;
        };
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE")
                && let (Some(name), Some(kind)) = (words.next(), words.next())
            {
                types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        let sample = match parse_sample(line) {
            Ok(sample) => sample,
            Err(reason) => {
                out.reject(Some(line_no), Some(offset), reason, raw);
                continue;
            }
        };
        let at = match sample.timestamp {
            Some(at) => at,
            None => match default_time {
                Some(at) => at,
                None => {
                    out.reject(
                        Some(line_no),
                        Some(offset),
                        "sample without timestamp, and neither --at nor a file time",
                        raw,
                    );
                    continue;
                }
            },
        };
        let kind = family_kind(&types, sample.name);
        let service = sample
            .labels
            .get("service")
            .or_else(|| sample.labels.get("job"))
            .cloned()
            .or_else(|| chunk.context.service.clone())
            .unwrap_or_else(|| "unknown_service".into());
        let attributes: serde_json::Map<String, Value> = sample
            .labels
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        out.read += 1;
        out.metric_points.push(MetricPoint {
            service: service.into(),
            metric: sample.name.into(),
            kind: kind.into(),
            at,
            value: Some(sample.value),
            is_monotonic: (kind == "counter").then_some(true),
            temporality: (kind == "counter").then(|| "cumulative".into()),
            attributes: Value::Object(attributes).to_string(),
            source_format: "prometheus".into(),
            ..Default::default()
        });
    }
}

/// The `# TYPE` of a sample's family, trying the histogram and summary suffixes.
fn family_kind<'t>(types: &'t HashMap<String, String>, name: &str) -> &'t str {
    if let Some(kind) = types.get(name) {
        return kind;
    }
    for suffix in [
        "_bucket", "_sum", "_count", "_total", "_created", "_gcount", "_gsum",
    ] {
        if let Some(kind) = name
            .strip_suffix(suffix)
            .and_then(|family| types.get(family))
        {
            return kind;
        }
    }
    "untyped"
}

struct Sample<'a> {
    name: &'a str,
    labels: BTreeMap<String, String>,
    value: f64,
    timestamp: Option<Ts>,
}

fn parse_sample(line: &str) -> Result<Sample<'_>, String> {
    // OpenMetrics exemplars follow " # "; they are not part of the sample.
    let line = line.split_once(" # ").map_or(line, |(sample, _)| sample);
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("not a metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after_brace)?;
        labels = parsed;
        rest = remaining;
    }
    let mut fields = rest.split_whitespace();
    let value_text = fields.next().ok_or("sample without a value")?;
    let value =
        parse_value(value_text).ok_or_else(|| format!("value {value_text:?} is not a number"))?;
    let timestamp = match fields.next() {
        None => None,
        Some(text) => Some(
            parse_timestamp(text).ok_or_else(|| format!("timestamp {text:?} is not a number"))?,
        ),
    };
    if fields.next().is_some() {
        return Err("unexpected text after the timestamp".into());
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp,
    })
}

fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let key = rest[..eq].trim();
        if key.is_empty() {
            return Err("empty label name".into());
        }
        rest = rest[eq + 1..].trim_start();
        rest = rest.strip_prefix('"').ok_or("label value is not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.insert(key.to_string(), value);
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        }
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Prometheus writes integer milliseconds; OpenMetrics writes (fractional) seconds.
fn parse_timestamp(text: &str) -> Option<Ts> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(Ts(ms.checked_mul(1000)?));
    }
    let seconds: f64 = text.parse().ok()?;
    seconds.is_finite().then(|| Ts::from_secs_f64(seconds))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_special_values() {
        let sample =
            parse_sample(r#"http_requests_total{code="200",path="/a\"b"} +Inf 1700000000000"#)
                .unwrap();
        assert_eq!(sample.name, "http_requests_total");
        assert_eq!(sample.labels["path"], "/a\"b");
        assert!(sample.value.is_infinite());
        assert_eq!(sample.timestamp, Some(Ts(1_700_000_000_000_000)));
        assert!(parse_sample("job:rate5m 1.5").is_ok());
        assert!(parse_sample("x{a=\"1\"").is_err());
        assert!(parse_sample("x 1e99999999999999999999x").is_err());
    }
}
