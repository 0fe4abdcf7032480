//! Compliance controls and waivers: from each control's rows to `compliance_results`.
//!
//! A control query returns `resource`, `status` (ok, alarm, info, skip or error), `reason`
//! and, when the evidence has a time (a deployment, an audit record), `at`: the executive
//! report counts a period's findings by it.
//! A control whose query fails is not dropped: it shows as one `error` row naming the failure.
//! Waivers come from a TOML file of `[[waiver]]` entries (control id, resource pattern with `*`
//! and `?`, justification, expiry date); an alarm that a waiver covers shows as `waived`
//! through the waiver's expiry date and as an alarm again after it.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use maestro_datasets::schema::{SCHEMA_METADATA_KEY, Ts};
use serde::Deserialize;

use crate::definitions::Definition;
use crate::{Error, Result};

/// Statuses a control may return.
pub const STATUSES: [&str; 5] = ["ok", "alarm", "info", "skip", "error"];

/// A documented exception to a control.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    /// The control's id, such as `REL-01`.
    pub control: String,
    /// Resources it covers: `*` matches any run of characters, `?` any one.
    pub resource: String,
    /// Why the exception is acceptable, and who accepted it.
    pub justification: String,
    /// The last UTC date (YYYY-MM-DD) the waiver holds.
    pub expires: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaiverFile {
    #[serde(default)]
    waiver: Vec<Waiver>,
}

/// Reads a waivers file.
pub fn load_waivers(path: &Path) -> Result<Vec<Waiver>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Definition(format!("reading waivers {}: {e}", path.display())))?;
    let file: WaiverFile = toml::from_str(&text)
        .map_err(|e| Error::Definition(format!("waivers {}: {e}", path.display())))?;
    for waiver in &file.waiver {
        if Ts::parse(&format!("{}T00:00:00Z", waiver.expires)).is_none() {
            return Err(Error::Definition(format!(
                "waivers {}: expires {:?} of the waiver for {} is not a date (YYYY-MM-DD)",
                path.display(),
                waiver.expires,
                waiver.control
            )));
        }
    }
    Ok(file.waiver)
}

impl Waiver {
    /// Whether it covers `resource` of `control` on the instant `as_of`.
    fn covers(&self, control: &str, resource: &str, as_of: Ts) -> bool {
        let holds = Ts::parse(&format!("{}T00:00:00Z", self.expires))
            // `as_of` is the instant after the last day reported: the end of the expiry date
            // is still covered.
            .is_some_and(|day| as_of.0 <= day.0 + 86_400_000_000);
        self.control == control && holds && glob_match(&self.resource, resource)
    }
}

/// `*` and `?` wildcards, the whole text.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// One resource's finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Finding {
    resource: String,
    status: String,
    reason: String,
    at: Option<i64>,
}

/// One control's checked rows.
#[derive(Debug)]
pub struct ControlRows {
    definition: Definition,
    rows: Vec<Finding>,
}

impl ControlRows {
    /// Checks a control's result: its columns and statuses.
    pub fn check(definition: &Definition, batches: Vec<RecordBatch>) -> Result<ControlRows> {
        let mut rows = Vec::new();
        for batch in &batches {
            let names: Vec<&str> = batch
                .schema_ref()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            if names != ["resource", "status", "reason"]
                && names != ["resource", "status", "reason", "at"]
            {
                return Err(Error::Definition(format!(
                    "control {} returns [{}]; a control returns resource, status, reason and optionally at",
                    definition.origin,
                    names.join(", ")
                )));
            }
            let at = match batch.column_by_name("at") {
                None => None,
                Some(column) => Some(
                    column
                        .as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                        .ok_or_else(|| {
                            Error::Definition(format!(
                                "control {}: at must be a timestamp (it is {})",
                                definition.origin,
                                column.data_type()
                            ))
                        })?,
                ),
            };
            // Text may come as Utf8 or Utf8View, whichever the plan chose.
            let column = |name: &str| -> Result<StringArray> {
                batch
                    .column_by_name(name)
                    .and_then(|c| cast(c, &DataType::Utf8).ok())
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                    .ok_or_else(|| {
                        Error::Definition(format!(
                            "control {} must return text columns resource, status and reason",
                            definition.origin
                        ))
                    })
            };
            let (resources, statuses, reasons) =
                (column("resource")?, column("status")?, column("reason")?);
            for row in 0..batch.num_rows() {
                let status = statuses.value(row);
                if statuses.is_null(row) || !STATUSES.contains(&status) {
                    return Err(Error::Definition(format!(
                        "control {} returned status {status:?}; statuses are {}",
                        definition.origin,
                        STATUSES.join(", ")
                    )));
                }
                rows.push(Finding {
                    resource: resources.value(row).to_string(),
                    status: status.to_string(),
                    reason: reasons.value(row).to_string(),
                    at: at.filter(|a| !a.is_null(row)).map(|a| a.value(row)),
                });
            }
        }
        Ok(ControlRows {
            definition: definition.clone(),
            rows,
        })
    }

    /// A control whose query failed: one `error` row that says why.
    pub fn failed(definition: &Definition, error: &Error) -> ControlRows {
        ControlRows {
            definition: definition.clone(),
            rows: vec![Finding {
                resource: "(control)".into(),
                status: "error".into(),
                reason: format!("the control's query failed: {error}"),
                at: None,
            }],
        }
    }
}

/// Text columns of `compliance_results`, in order; `at` follows `reason`.
const COLUMNS: [&str; 12] = [
    "control_id",
    "title",
    "severity",
    "resource",
    "status",
    "reason",
    "waiver_justification",
    "waiver_expires",
    "soc2",
    "iso27001",
    "gdpr",
    "definition",
];

/// `compliance_results`: every control's rows, waivers applied, sorted by control and resource.
pub fn results(controls: &[ControlRows], waivers: &[Waiver], as_of: Ts) -> Result<RecordBatch> {
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); COLUMNS.len()];
    let mut times: Vec<Option<i64>> = Vec::new();
    let mut ordered: Vec<&ControlRows> = controls.iter().collect();
    ordered.sort_by(|a, b| a.definition.header.id.cmp(&b.definition.header.id));
    for control in ordered {
        let header = &control.definition.header;
        let id = header.id.clone().unwrap_or_default();
        let mut rows: Vec<&Finding> = control.rows.iter().collect();
        rows.sort();
        for finding in rows {
            let Finding {
                resource,
                status,
                reason,
                at,
            } = finding;
            let waiver = (status == "alarm")
                .then(|| waivers.iter().find(|w| w.covers(&id, resource, as_of)))
                .flatten();
            times.push(*at);
            let values = [
                Some(id.clone()),
                Some(header.title.clone()),
                header.severity.map(|s| s.as_str().to_string()),
                Some(resource.clone()),
                Some(if waiver.is_some() { "waived" } else { status }.to_string()),
                Some(reason.clone()),
                waiver.map(|w| w.justification.clone()),
                waiver.map(|w| w.expires.clone()),
                Some(header.soc2.join(", ")),
                Some(header.iso27001.join(", ")),
                Some(header.gdpr.join(", ")),
                Some(control.definition.origin.clone()),
            ];
            for (column, value) in columns.iter_mut().zip(values) {
                column.push(value);
            }
        }
    }
    let metadata = std::collections::HashMap::from([(
        SCHEMA_METADATA_KEY.to_string(),
        "compliance_results/v1".to_string(),
    )]);
    let mut fields: Vec<Field> = COLUMNS
        .iter()
        .map(|name| Field::new(*name, DataType::Utf8, true))
        .collect();
    let mut arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|values| Arc::new(StringArray::from(values)) as ArrayRef)
        .collect();
    // `at` sits after `reason`.
    fields.insert(
        6,
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    );
    arrays.insert(
        6,
        Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
    );
    RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, metadata)),
        arrays,
    )
    .map_err(|e| Error::Render(e.to_string()))
}
