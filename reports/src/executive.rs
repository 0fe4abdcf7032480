//! The executive report: one self-contained HTML file with inline SVG charts, and Markdown and
//! JSON carrying the same numbers.
//!
//! Every number comes from a report table of the run ([`crate::run::ReportRun`]): the
//! headlines from `executive_headlines`, the charts from `dora_metrics`, `executive_slos`,
//! `compliance_posture` and, when it has been computed, `test_selection_curve`. The appendix
//! traces each headline to the SQL files it is computed from and lists a hash of every input
//! partition, so a reader can check which data the report saw. Nothing in the output depends on
//! the clock or the machine: the same lake and period give the same bytes.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::{Array, BooleanArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use maestro_datasets::Lake;
use maestro_datasets::schema::{DERIVED_TABLES, RAW_TABLES, Ts};
use minijinja::Environment;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::chart::{BarChart, Series, ShareChart, TimeChart};
use crate::definitions::Definition;
use crate::run::ReportRun;
use crate::{Error, LakeSession, Result};

const HTML_TEMPLATE: &str = include_str!("../templates/executive.html");
const MARKDOWN_TEMPLATE: &str = include_str!("../templates/executive.md");

/// The whole report, as the templates and the JSON see it.
#[derive(Debug, Serialize)]
pub struct Executive {
    /// The period, as dates.
    pub period: PeriodText,
    /// Headline numbers grouped by section, in report order.
    pub sections: Vec<Section>,
    /// SLOs over the period.
    pub slos: Vec<SloLine>,
    /// Compliance posture per framework.
    pub posture: Vec<PostureLine>,
    /// Figures, as inline SVG.
    #[serde(skip)]
    pub charts: Vec<Chart>,
    /// Where each number comes from, and what the report read.
    pub appendix: Appendix,
}

/// The period as text.
#[derive(Debug, Serialize)]
pub struct PeriodText {
    /// First date.
    pub from: String,
    /// Last date, included.
    pub to: String,
    /// First date of the period compared with.
    pub previous_from: String,
    /// Its last date.
    pub previous_to: String,
}

/// A section of headline numbers.
#[derive(Debug, Serialize)]
pub struct Section {
    /// delivery, reliability, compliance, risk or tests.
    pub name: String,
    /// What a reader sees as its heading.
    pub title: String,
    /// Its numbers.
    pub headlines: Vec<Headline>,
}

/// One headline number beside the previous period's.
#[derive(Debug, Serialize)]
pub struct Headline {
    /// Stable name.
    pub metric: String,
    /// What a reader sees.
    pub label: String,
    /// count, per_day, hours or share.
    pub unit: String,
    /// The number for the period.
    pub value: Option<f64>,
    /// The number for the period before.
    pub previous_value: Option<f64>,
    /// value - previous_value.
    pub change: Option<f64>,
    /// The number as printed.
    pub value_text: String,
    /// The previous number as printed.
    pub previous_text: String,
    /// The change as printed, with its sign.
    pub change_text: String,
    /// better, worse, same or none.
    pub trend: String,
    /// The report table it comes from.
    pub source: String,
}

/// One SLO over the period.
#[derive(Debug, Serialize)]
pub struct SloLine {
    /// The SLO.
    pub slo_id: String,
    /// Its objective, as printed.
    pub objective: String,
    /// Its attainment over the period, as printed.
    pub attainment: String,
    /// Share of the period's budget consumed, as printed.
    pub budget_consumed: String,
    /// met, missed or no traffic.
    pub status: String,
}

/// Posture of one framework.
#[derive(Debug, Serialize)]
pub struct PostureLine {
    /// soc2, iso27001 or gdpr.
    pub framework: String,
    /// Controls mapped to it.
    pub controls: i64,
    /// Resources in alarm.
    pub alarm: i64,
    /// Alarms under a waiver.
    pub waived: i64,
    /// Share of checks passing, as printed.
    pub posture: String,
}

/// A figure.
#[derive(Debug)]
pub struct Chart {
    /// Its caption.
    pub title: String,
    /// The SVG document.
    pub svg: String,
}

/// Where the numbers come from.
#[derive(Debug, Serialize)]
pub struct Appendix {
    /// For each report table the headlines use, the SQL files computing it, itself first.
    pub lineage: Vec<Lineage>,
    /// A hash per input table over its partitions.
    pub inputs: Vec<TableInput>,
}

/// The SQL behind one report table.
#[derive(Debug, Serialize)]
pub struct Lineage {
    /// The report table.
    pub table: String,
    /// Its SQL file and those of the tables it builds on.
    pub files: Vec<String>,
}

/// What the report read of one lake table.
#[derive(Debug, Serialize)]
pub struct TableInput {
    /// The table.
    pub table: String,
    /// Partitions (a `date=` folder, or the whole table for snapshot tables).
    pub partitions: usize,
    /// Part files.
    pub files: usize,
    /// sha256 over the partitions' hashes, in order.
    pub sha256: String,
    /// Each partition and the sha256 over its part files' names (which carry their content's
    /// sha256) and sizes.
    pub partition_hashes: Vec<(String, String)>,
}

/// The report's three renderings.
#[derive(Debug)]
pub struct Rendered {
    /// Self-contained HTML.
    pub html: String,
    /// Markdown with the same numbers.
    pub markdown: String,
    /// JSON with the same numbers and the appendix.
    pub json: String,
}

/// Builds the report from a run's tables.
pub async fn build(lake: &Lake, run: &ReportRun, definitions: &[Definition]) -> Result<Executive> {
    let table = |name: &str| -> Result<&RecordBatch> {
        run.tables
            .get(name)
            .and_then(|b| b.first())
            .ok_or_else(|| Error::Definition(format!("the report table {name} was not computed")))
    };
    let period = PeriodText {
        from: run.period.start.date(),
        to: Ts(run.period.end.0 - 1).date(),
        previous_from: run.period.previous_start.date(),
        previous_to: Ts(run.period.previous_end.0 - 1).date(),
    };
    let sections = headlines(table("executive_headlines")?)?;
    let slos = slo_lines(table("executive_slos")?)?;
    let posture = posture_lines(table("compliance_posture")?)?;

    let mut charts = dora_charts(table("dora_metrics")?)?;
    let budget = BarChart {
        title: "Error budget consumed in the period, per SLO".into(),
        x_label: "share of the period's error budget".into(),
        is_share: true,
        bars: slo_lines_values(table("executive_slos")?)?,
        reference: Some(1.0),
    };
    charts.push(Chart {
        title: budget.title.clone(),
        svg: budget.to_svg()?,
    });
    let compliance = BarChart {
        title: "Compliance posture: checks passing, per framework".into(),
        x_label: "share of checked resources not in alarm".into(),
        is_share: true,
        bars: posture
            .iter()
            .map(|p| (p.framework.clone(), parse_percent(&p.posture)))
            .collect(),
        reference: None,
    };
    charts.push(Chart {
        title: compliance.title.clone(),
        svg: compliance.to_svg()?,
    });
    if let Some(calibration) = risk_calibration_chart(lake).await? {
        charts.push(calibration);
    }
    if let Some(curve) = test_selection_chart(lake).await? {
        charts.push(curve);
    }

    let appendix = Appendix {
        lineage: lineage(&sections, definitions),
        inputs: inputs(lake)?,
    };
    Ok(Executive {
        period,
        sections,
        slos,
        posture,
        charts,
        appendix,
    })
}

/// Renders the report as HTML, Markdown and JSON.
pub fn render(report: &Executive) -> Result<Rendered> {
    let mut env = Environment::new();
    env.add_template("executive.html", HTML_TEMPLATE)
        .and_then(|_| env.add_template("executive.md", MARKDOWN_TEMPLATE))
        .map_err(|e| Error::Render(format!("report template: {e}")))?;
    let charts: Vec<BTreeMap<&str, &str>> = report
        .charts
        .iter()
        .map(|c| BTreeMap::from([("title", c.title.as_str()), ("svg", c.svg.as_str())]))
        .collect();
    let context = minijinja::context! { report => report, charts => charts };
    let render = |name: &str| {
        env.get_template(name)
            .and_then(|t| t.render(&context))
            .map_err(|e| Error::Render(format!("{name}: {e}")))
    };
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| Error::Render(format!("report JSON: {e}")))?;
    Ok(Rendered {
        html: render("executive.html")?,
        markdown: render("executive.md")?,
        json: json + "\n",
    })
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| Error::Render(format!("report column {name} is missing")))
}

fn floats(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let array = column(batch, name)?;
    let array = match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            // Timestamps as days since the epoch, for time axes.
            let micros = cast(array, &DataType::Int64).map_err(|e| Error::Render(e.to_string()))?;
            let micros =
                cast(&micros, &DataType::Float64).map_err(|e| Error::Render(e.to_string()))?;
            let values = micros
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| Error::Render(format!("{name} is not numeric")))?;
            return Ok((0..values.len())
                .map(|i| (!values.is_null(i)).then(|| values.value(i) / 86_400_000_000.0))
                .collect());
        }
        _ => cast(array, &DataType::Float64).map_err(|e| Error::Render(e.to_string()))?,
    };
    let values = array
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| Error::Render(format!("{name} is not numeric")))?;
    Ok((0..values.len())
        .map(|i| (!values.is_null(i) && values.value(i).is_finite()).then(|| values.value(i)))
        .collect())
}

fn texts(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let array =
        cast(column(batch, name)?, &DataType::Utf8).map_err(|e| Error::Render(e.to_string()))?;
    let values = array
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Render(format!("{name} is not text")))?;
    Ok((0..values.len())
        .map(|i| (!values.is_null(i)).then(|| values.value(i).to_string()))
        .collect())
}

fn bools(batch: &RecordBatch, name: &str) -> Result<Vec<Option<bool>>> {
    let array = column(batch, name)?;
    let values = array
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| Error::Render(format!("{name} is not a boolean")))?;
    Ok((0..values.len())
        .map(|i| (!values.is_null(i)).then(|| values.value(i)))
        .collect())
}

/// A number in its unit, as printed.
fn format_value(value: Option<f64>, unit: &str) -> String {
    match value {
        None => "n/a".into(),
        Some(v) => match unit {
            "share" => format!("{:.1}%", 100.0 * v),
            "count" => format!("{v:.0}"),
            "hours" => format!("{v:.1} h"),
            "per_day" => format!("{v:.2}/day"),
            _ => format!("{v:.3}"),
        },
    }
}

fn format_change(change: Option<f64>, unit: &str) -> String {
    match change {
        None => "n/a".into(),
        Some(c) => {
            let sign = if c > 0.0 {
                "+"
            } else if c < 0.0 {
                "−"
            } else {
                "±"
            };
            let magnitude = match unit {
                "share" => format!("{:.1} pt", 100.0 * c.abs()),
                "count" => format!("{:.0}", c.abs()),
                "hours" => format!("{:.1} h", c.abs()),
                "per_day" => format!("{:.2}/day", c.abs()),
                _ => format!("{:.3}", c.abs()),
            };
            format!("{sign}{magnitude}")
        }
    }
}

fn parse_percent(text: &str) -> f64 {
    text.trim_end_matches('%')
        .parse::<f64>()
        .map_or(f64::NAN, |v| v / 100.0)
}

fn section_title(name: &str) -> String {
    match name {
        "delivery" => "Delivery (DORA)",
        "reliability" => "Reliability (SLOs)",
        "compliance" => "Compliance",
        "risk" => "Deployment risk",
        "tests" => "Test selection",
        other => other,
    }
    .to_string()
}

fn headlines(batch: &RecordBatch) -> Result<Vec<Section>> {
    let sections = texts(batch, "section")?;
    let metrics = texts(batch, "metric")?;
    let labels = texts(batch, "label")?;
    let units = texts(batch, "unit")?;
    let values = floats(batch, "value")?;
    let previous = floats(batch, "previous_value")?;
    let changes = floats(batch, "change")?;
    let better = bools(batch, "higher_is_better")?;
    let sources = texts(batch, "source")?;
    let mut out: Vec<Section> = Vec::new();
    for i in 0..batch.num_rows() {
        let section = sections[i].clone().unwrap_or_default();
        let unit = units[i].clone().unwrap_or_default();
        let trend = match (changes[i], better[i]) {
            (None, _) | (_, None) => "none",
            (Some(c), _) if c.abs() < 1e-12 => "same",
            (Some(c), Some(up)) if (c > 0.0) == up => "better",
            _ => "worse",
        };
        let headline = Headline {
            metric: metrics[i].clone().unwrap_or_default(),
            label: labels[i].clone().unwrap_or_default(),
            value_text: format_value(values[i], &unit),
            previous_text: format_value(previous[i], &unit),
            change_text: format_change(changes[i], &unit),
            value: values[i],
            previous_value: previous[i],
            change: changes[i],
            trend: trend.into(),
            source: sources[i].clone().unwrap_or_default(),
            unit,
        };
        match out.last_mut() {
            Some(last) if last.name == section => last.headlines.push(headline),
            _ => out.push(Section {
                title: section_title(&section),
                name: section,
                headlines: vec![headline],
            }),
        }
    }
    Ok(out)
}

fn slo_lines(batch: &RecordBatch) -> Result<Vec<SloLine>> {
    let ids = texts(batch, "slo_id")?;
    let objectives = floats(batch, "objective")?;
    let attainments = floats(batch, "attainment")?;
    let consumed = floats(batch, "budget_consumed")?;
    let met = bools(batch, "is_met")?;
    Ok((0..batch.num_rows())
        .map(|i| SloLine {
            slo_id: ids[i].clone().unwrap_or_default(),
            objective: objectives[i].map_or("n/a".into(), |v| format!("{:.2}%", 100.0 * v)),
            attainment: attainments[i].map_or("n/a".into(), |v| format!("{:.3}%", 100.0 * v)),
            budget_consumed: format_value(consumed[i], "share"),
            status: match met[i] {
                Some(true) => "met",
                Some(false) => "missed",
                None => "no traffic",
            }
            .into(),
        })
        .collect())
}

fn slo_lines_values(batch: &RecordBatch) -> Result<Vec<(String, f64)>> {
    let ids = texts(batch, "slo_id")?;
    let consumed = floats(batch, "budget_consumed")?;
    Ok(ids
        .into_iter()
        .zip(consumed)
        .map(|(id, c)| (id.unwrap_or_default(), c.unwrap_or(f64::NAN)))
        .collect())
}

fn posture_lines(batch: &RecordBatch) -> Result<Vec<PostureLine>> {
    let frameworks = texts(batch, "framework")?;
    let clauses = texts(batch, "clause")?;
    let controls = floats(batch, "controls")?;
    let alarms = floats(batch, "alarm")?;
    let waived = floats(batch, "waived")?;
    let posture = floats(batch, "posture")?;
    Ok((0..batch.num_rows())
        .filter(|i| clauses[*i].as_deref() == Some("all"))
        .map(|i| PostureLine {
            framework: frameworks[i].clone().unwrap_or_default(),
            controls: controls[i].unwrap_or(0.0) as i64,
            alarm: alarms[i].unwrap_or(0.0) as i64,
            waived: waived[i].unwrap_or(0.0) as i64,
            posture: format_value(posture[i], "share"),
        })
        .collect())
}

/// Weekly DORA trends of all services together.
fn dora_charts(batch: &RecordBatch) -> Result<Vec<Chart>> {
    let grains = texts(batch, "grain")?;
    let services = texts(batch, "service")?;
    let metrics = texts(batch, "metric")?;
    let starts = floats(batch, "period_start")?;
    let values = floats(batch, "value")?;
    let weekly = |metric: &str| -> Vec<(f64, f64)> {
        (0..batch.num_rows())
            .filter(|i| {
                grains[*i].as_deref() == Some("week")
                    && services[*i].as_deref() == Some("all")
                    && metrics[*i].as_deref() == Some(metric)
            })
            .filter_map(|i| Some((starts[i]?, values[i]?)))
            .collect()
    };
    let mut charts = Vec::new();
    for (metric, title, y_label, is_share) in [
        (
            "deployment_frequency",
            "Deployment frequency, by week",
            "deployments per day",
            false,
        ),
        (
            "lead_time",
            "Median lead time, merge to production, by week",
            "hours",
            false,
        ),
        (
            "change_failure_rate",
            "Change failure rate, by week",
            "share of deployments",
            true,
        ),
    ] {
        let chart = TimeChart {
            title: title.into(),
            y_label: y_label.into(),
            y_is_share: is_share,
            series: vec![Series {
                name: metric.into(),
                points: weekly(metric),
            }],
        };
        charts.push(Chart {
            title: title.into(),
            svg: chart.to_svg()?,
        });
    }
    Ok(charts)
}

/// The test-selection replay curve, when the lake has one.
/// The calibration of the risk model that scored the newest deployment, on the deployments held
/// back from its training: mean predicted probability against the observed bad rate per tenth of
/// the rows by probability. None when no model has scored the lake.
async fn risk_calibration_chart(lake: &Lake) -> Result<Option<Chart>> {
    let session = LakeSession::open(lake).await?;
    let batches = session
        .query(
            "with scorer as ( \
                 select model_version from risk_verdicts \
                 order by started_at desc, deployment_id limit 1 \
             ), \
             tenths as ( \
                 select probability, label, \
                     ntile(10) over (order by probability, subject_id) as tenth \
                 from risk_evaluation \
                 where model_version = (select model_version from scorer) \
             ) \
             select (select model_version from scorer) as model_version, tenth, \
                 avg(probability) as predicted, avg(cast(label as double)) as observed \
             from tenths group by tenth order by tenth",
        )
        .await?;
    let mut version = None;
    let mut points = Vec::new();
    for batch in &batches {
        let versions = texts(batch, "model_version")?;
        let predicted = floats(batch, "predicted")?;
        let observed = floats(batch, "observed")?;
        for i in 0..batch.num_rows() {
            version = version.or_else(|| versions[i].clone());
            if let (Some(x), Some(y)) = (predicted[i], observed[i]) {
                points.push((x, y));
            }
        }
    }
    let Some(version) = version.filter(|_| !points.is_empty()) else {
        return Ok(None);
    };
    let chart = ShareChart {
        title: format!("Deployment risk: calibration of model {version} on held-back deployments"),
        x_label: "predicted probability of a bad deployment (mean per tenth)".into(),
        y_label: "observed share of bad deployments".into(),
        series: vec![
            Series {
                name: format!("model {version}"),
                points,
            },
            Series {
                name: "perfectly calibrated".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
            },
        ],
    };
    Ok(Some(Chart {
        title: chart.title.clone(),
        svg: chart.to_svg()?,
    }))
}

async fn test_selection_chart(lake: &Lake) -> Result<Option<Chart>> {
    let session = LakeSession::open(lake).await?;
    let batches = session
        .query(
            "select policy, time_share, failing_changes_caught from test_selection_curve \
             where failing_changes_caught is not null order by policy, time_share, target",
        )
        .await?;
    let mut by_policy: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for batch in &batches {
        let policies = texts(batch, "policy")?;
        let x = floats(batch, "time_share")?;
        let y = floats(batch, "failing_changes_caught")?;
        for i in 0..batch.num_rows() {
            if let (Some(policy), Some(x), Some(y)) = (policies[i].clone(), x[i], y[i]) {
                by_policy.entry(policy).or_default().push((x, y));
            }
        }
    }
    if by_policy.is_empty() {
        return Ok(None);
    }
    let chart = ShareChart {
        title: "Test selection: failing changes caught against test time".into(),
        x_label: "share of the suite's test time".into(),
        y_label: "failing changes caught".into(),
        series: by_policy
            .into_iter()
            .map(|(name, points)| Series { name, points })
            .collect(),
    };
    Ok(Some(Chart {
        title: chart.title.clone(),
        svg: chart.to_svg()?,
    }))
}

/// Each headline source table and the SQL files behind it, following `after`.
fn lineage(sections: &[Section], definitions: &[Definition]) -> Vec<Lineage> {
    let by_name: BTreeMap<&str, &Definition> =
        definitions.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut tables: Vec<&str> = sections
        .iter()
        .flat_map(|s| s.headlines.iter().map(|h| h.source.as_str()))
        .collect();
    tables.push("executive_headlines");
    tables.sort();
    tables.dedup();
    tables
        .into_iter()
        .map(|table| {
            let mut files = Vec::new();
            let mut stack = vec![table];
            let mut seen = std::collections::BTreeSet::new();
            while let Some(name) = stack.pop() {
                if !seen.insert(name) {
                    continue;
                }
                match by_name.get(name) {
                    Some(definition) => {
                        files.push(definition.origin.clone());
                        stack.extend(definition.header.after.iter().rev().map(String::as_str));
                    }
                    None if name == crate::run::COMPLIANCE_TABLE => {
                        files.push("every control under reports/sql/controls/".into());
                    }
                    // A table of the lake, not of a report: its partitions are listed below.
                    None => files.push(format!("lake table {name}")),
                }
            }
            Lineage {
                table: table.to_string(),
                files,
            }
        })
        .collect()
}

/// A hash per partition of every raw and derived table.
fn inputs(lake: &Lake) -> Result<Vec<TableInput>> {
    let mut out = Vec::new();
    // Ledgers are left out: the reports do not read them, and they record when runs happened.
    for table in RAW_TABLES.iter().chain(DERIVED_TABLES.iter()) {
        let dir = lake.table_dir(table);
        let parts = lake.parts(table)?;
        let mut by_partition: BTreeMap<String, Vec<&Path>> = BTreeMap::new();
        for part in &parts {
            let partition = part
                .parent()
                .and_then(|p| p.strip_prefix(&dir).ok())
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "(whole table)".into());
            by_partition.entry(partition).or_default().push(part);
        }
        let mut table_hash = Sha256::new();
        let mut partition_hashes = Vec::new();
        for (partition, files) in by_partition {
            let mut hash = Sha256::new();
            for file in files {
                let size = std::fs::metadata(file)
                    .map_err(|e| Error::Render(format!("{}: {e}", file.display())))?
                    .len();
                let name = file.file_name().unwrap_or_default().to_string_lossy();
                hash.update(format!("{name} {size}\n").as_bytes());
            }
            let hex = format!("{:x}", hash.finalize());
            table_hash.update(format!("{partition} {hex}\n").as_bytes());
            partition_hashes.push((partition, hex));
        }
        out.push(TableInput {
            table: table.name.to_string(),
            partitions: partition_hashes.len(),
            files: parts.len(),
            sha256: format!("{:x}", table_hash.finalize()),
            partition_hashes,
        });
    }
    Ok(out)
}
