//! `maestro plan`: deployment waves for a set of services over the dependency graph declared
//! in the Backstage catalog (`service_edges`) and observed in spans, written to
//! `rollout_plans` and printed as a table, JSON, DOT or Mermaid.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Float64Type;
use datafusion::arrow::record_batch::RecordBatch;
use maestro_datasets::Lake;
use maestro_datasets::schema::{RolloutPlan, Row, ServiceEdge};
use maestro_reports::LakeSession;
use rayon::prelude::*;

use crate::Outcome;
use crate::cli::{PlanArgs, PlanFormat};
use crate::config;
use crate::output::print;
use crate::plan::{Cycles, Plan, PlanInputs, ServiceGraph, plan};

pub fn run(args: &PlanArgs, config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let thresholds = config::load(config_path)?.risk.thresholds();
    let lake = Lake::open_existing(&args.lake.lake)?;
    let (edges, deployed, mut inputs) = super::runtime()?.block_on(load_inputs(&lake))?;
    inputs.canary_above = thresholds.canary_above;
    inputs.hold_above = thresholds.hold_above;
    let services: Option<Vec<String>> = (!args.all).then(|| {
        args.services
            .iter()
            .flat_map(|s| s.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    if services.as_ref().is_some_and(Vec::is_empty) {
        anyhow::bail!("name the services to plan (--services a,b,c) or pass --all");
    }
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "lake read");
    // With --all, a service that has deployed is planned even when no edge names it: it goes
    // out in the first wave, on its own.
    let graph = service_graph(&edges, services.as_deref().unwrap_or(&deployed))?;
    drop(edges);
    drop(deployed);
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        services = graph.len(),
        "graph built"
    );
    let loaded = started.elapsed().as_secs_f64();
    let planned = match plan(&graph, &inputs, services.as_deref(), args.parallel) {
        Ok(planned) => planned,
        Err(Cycles(cycles)) => {
            let mut text = format!(
                "no plan: the services depend on each other in {} cycle(s); break one of these dependencies first:\n",
                cycles.len()
            );
            for cycle in cycles {
                let _ = writeln!(text, "  cycle: {}", cycle.join(" -> "));
            }
            print(&text)?;
            return Ok(Outcome::CheckFailed);
        }
    };
    let plan_seconds = started.elapsed().as_secs_f64() - loaded;
    // The table is written while the output is rendered. Nothing is printed unless the write
    // committed.
    let rows = planned.to_batch()?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "rows");
    let (written, text) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| -> anyhow::Result<()> {
            let mut txn = lake.begin()?;
            txn.upsert_batch::<RolloutPlan>(rows)?;
            txn.commit()?;
            tracing::debug!(seconds = started.elapsed().as_secs_f64(), "written");
            Ok(())
        });
        let text = match args.format {
            PlanFormat::Table => Ok(table(&planned)),
            PlanFormat::Json => json(&planned),
            PlanFormat::Dot => Ok(dot(&planned)),
            PlanFormat::Mermaid => Ok(mermaid(&planned)),
        };
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "rendered");
        (writer.join(), text)
    });
    written.map_err(|_| anyhow::anyhow!("writing rollout_plans panicked"))??;
    print(&text?)?;
    tracing::info!(
        services = planned.len(),
        load_seconds = loaded,
        plan_seconds,
        total_seconds = started.elapsed().as_secs_f64(),
        "planned"
    );
    eprintln!(
        "planned {} services in {:.2} s (graph and history read in {loaded:.2} s, planned in {plan_seconds:.2} s); written to rollout_plans",
        planned.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Outcome::Ok)
}

/// The graph's edges (batches of `from_service`, `to_service`), the services that have
/// deployed, and durations and risks from the lake.
async fn load_inputs(lake: &Lake) -> anyhow::Result<(Vec<RecordBatch>, Vec<String>, PlanInputs)> {
    let session = LakeSession::open(lake).await?;
    // Declared dependencies, read as they are (the graph drops repeated edges), and calls
    // observed in traces: a span whose parent is in another service is that service calling
    // this one.
    let mut edges = lake.read_table(&ServiceEdge::TABLE)?;
    edges.extend(
        session
            .query(
                "select distinct parent.service as from_service, child.service as to_service from spans child \
                 join spans parent on child.trace_id = parent.trace_id and child.parent_span_id = parent.span_id \
                 where child.service <> parent.service",
            )
            .await
            .context("reading the calls observed in spans")?,
    );
    let mut deployed = Vec::new();
    for batch in session
        .query("select distinct service from deployments")
        .await
        .context("reading the services that have deployed")?
    {
        let names = batch.column(0).as_string::<i32>();
        deployed.extend(names.iter().flatten().map(str::to_string));
    }
    let minutes = per_service(
        &session,
        "select service, median((cast(finished_at as bigint) - cast(started_at as bigint)) / 60000000.0) \
         from deployments where finished_at is not null group by service",
    )
    .await
    .context("reading past deployment durations")?;
    let risk = per_service(
        &session,
        "select service, probability from ( \
           select service, probability, row_number() over (partition by service order by started_at desc, deployment_id desc) as newest \
           from risk_verdicts) where newest = 1",
    )
    .await
    .context("reading the latest risk verdicts")?;
    Ok((
        edges,
        deployed,
        PlanInputs {
            minutes,
            risk,
            canary_above: 0.0,
            hold_above: 0.0,
        },
    ))
}

/// The service graph of the edge batches and the named services, read in place from the
/// batches' string columns.
fn service_graph(edges: &[RecordBatch], services: &[String]) -> anyhow::Result<ServiceGraph> {
    let mut columns = Vec::with_capacity(edges.len());
    for batch in edges {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .with_context(|| format!("service edges without a text column {name}"))
        };
        columns.push((column("from_service")?, column("to_service")?));
    }
    let pairs: Vec<(&str, &str)> = columns
        .iter()
        .flat_map(|(from, to)| from.iter().zip(to.iter()))
        .filter_map(|(from, to)| Some((from?, to?)))
        .collect();
    let more: Vec<&str> = services.iter().map(String::as_str).collect();
    Ok(ServiceGraph::new(&pairs, &more))
}

async fn per_service(session: &LakeSession, sql: &str) -> anyhow::Result<HashMap<String, f64>> {
    let mut out = HashMap::new();
    for batch in session.query(sql).await? {
        let names = batch.column(0).as_string::<i32>();
        let values = batch.column(1).as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            if !values.is_null(i) {
                out.insert(names.value(i).to_string(), values.value(i));
            }
        }
    }
    Ok(out)
}

fn table(plan: &Plan) -> String {
    let mut text = String::with_capacity(128 * plan.len() + 1024);
    let _ = write!(
        text,
        "{}: {} services in {} waves (at most {} at once), about {:.0} minutes\ncritical path ({:.0} minutes): {}\n",
        plan.plan_id,
        plan.len(),
        plan.waves.len(),
        plan.parallelism,
        plan.total_minutes,
        plan.critical_path_minutes,
        plan.critical_path.join(" -> ")
    );
    let _ = writeln!(
        text,
        "  {:>4}  {:<24} {:<8} {:<22} {:>8} {:>6} {:>6}  after",
        "wave", "service", "strategy", "traffic %", "minutes", "risk", "blast"
    );
    // Rows are rendered in blocks on every core, then joined in order.
    const BLOCK: usize = 1 << 15;
    let blocks: Vec<String> = (0..plan.len().div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| table_rows(plan, b * BLOCK..((b + 1) * BLOCK).min(plan.len())))
        .collect();
    for block in blocks {
        text.push_str(&block);
    }
    text
}

/// The table's lines for the services at `positions`, with a wave's heading before its
/// first service.
fn table_rows(plan: &Plan, positions: std::ops::Range<usize>) -> String {
    let mut text = String::with_capacity(128 * positions.len());
    // Cells are formatted into a buffer reused from row to row and padded by hand: a million
    // rows print in a fraction of a second that way, where `format!` padding took most of one.
    let mut cell = String::new();
    let mut current = match positions.start {
        0 => 0,
        start => plan.service(start - 1).wave,
    };
    for i in positions {
        let row = plan.service(i);
        if row.wave != current {
            current = row.wave;
            let wave = &plan.waves[(current - 1) as usize];
            let _ = writeln!(
                text,
                "  wave {current}: {} services, about {:.0} minutes",
                wave.len(),
                wave.expected_minutes
            );
        }
        text.push_str("  ");
        cell.clear();
        let _ = write!(cell, "{}", row.wave);
        pad(&mut text, &cell, 4, Align::Right);
        text.push_str("  ");
        pad(&mut text, row.service, 24, Align::Left);
        text.push(' ');
        pad(&mut text, row.strategy, 8, Align::Left);
        text.push(' ');
        cell.clear();
        for (i, &step) in row.traffic_steps.iter().enumerate() {
            if i > 0 {
                cell.push('>');
            }
            shortest_number(&mut cell, step);
        }
        pad(&mut text, &cell, 22, Align::Left);
        text.push(' ');
        cell.clear();
        whole_number(&mut cell, row.expected_minutes);
        pad(&mut text, &cell, 8, Align::Right);
        text.push(' ');
        cell.clear();
        match row.risk {
            Some(r) => {
                let _ = write!(cell, "{r:.2}");
            }
            None => cell.push('-'),
        }
        pad(&mut text, &cell, 6, Align::Right);
        text.push(' ');
        cell.clear();
        if row.blast_radius_is_capped() {
            cell.push_str(">=");
        }
        let _ = write!(cell, "{}", row.blast_radius);
        pad(&mut text, &cell, 6, Align::Right);
        text.push_str("  ");
        for (i, dependency) in row.depends_on().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            text.push_str(dependency);
        }
        if row.is_on_critical_path {
            text.push_str("  [critical path]");
        }
        text.push('\n');
    }
    text
}

enum Align {
    Left,
    Right,
}

/// Appends `cell` padded with spaces to `width` characters, as `{:<width}` or `{:>width}`
/// would.
fn pad(text: &mut String, cell: &str, width: usize, align: Align) {
    let length = if cell.is_ascii() {
        cell.len()
    } else {
        cell.chars().count()
    };
    let fill = width.saturating_sub(length);
    match align {
        Align::Left => {
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', fill));
        }
        Align::Right => {
            text.extend(std::iter::repeat_n(' ', fill));
            text.push_str(cell);
        }
    }
}

/// Appends `value` as `{:.0}` would: rounded half to even, through the integer formatter when
/// it is a plain non-negative number (faster than the float one by far).
fn whole_number(text: &mut String, value: f64) {
    if value.is_sign_positive() && value < 1e15 {
        let _ = write!(text, "{}", value.round_ties_even() as u64);
    } else {
        let _ = write!(text, "{value:.0}");
    }
}

/// Appends `value` as `{}` would, through the integer formatter when it is a whole
/// non-negative number, as traffic steps are: the float formatter took a third of the table.
fn shortest_number(text: &mut String, value: f64) {
    if value.is_sign_positive() && value < 1e15 && value.fract() == 0.0 {
        let _ = write!(text, "{}", value as u64);
    } else {
        let _ = write!(text, "{value}");
    }
}

/// One service of the JSON plan: its `rollout_plans` row, without the plan id the plan
/// carries once, and with whether its blast radius stopped at the cap.
#[derive(serde::Serialize)]
#[serde(bound(serialize = "Listed<D>: serde::Serialize"))]
struct ServiceJson<'a, D> {
    service: &'a str,
    wave: i64,
    depends_on: Listed<D>,
    strategy: &'a str,
    traffic_steps: &'a [f64],
    expected_minutes: f64,
    has_history: bool,
    risk: Option<f64>,
    blast_radius: i64,
    blast_radius_is_capped: bool,
    is_on_critical_path: bool,
}

/// One wave of the JSON plan.
#[derive(serde::Serialize)]
#[serde(bound(serialize = "Listed<S>: serde::Serialize"))]
struct WaveJson<S> {
    wave: i64,
    services: Listed<S>,
    expected_minutes: f64,
}

/// A sequence serialized straight from an iterator, so that no list is gathered first.
struct Listed<I>(std::cell::Cell<Option<I>>);

impl<I> Listed<I> {
    fn new(items: I) -> Listed<I> {
        Listed(std::cell::Cell::new(Some(items)))
    }
}

impl<I> serde::Serialize for Listed<I>
where
    I: Iterator,
    I::Item: serde::Serialize,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.take() {
            Some(items) => serializer.collect_seq(items),
            None => Err(serde::ser::Error::custom(
                "a listed sequence serialized twice",
            )),
        }
    }
}

/// The plan as pretty JSON.
fn json(plan: &Plan) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    #[serde(bound(serialize = "Listed<W>: serde::Serialize, Listed<S>: serde::Serialize"))]
    struct PlanJson<'a, W, S> {
        plan_id: &'a str,
        waves: Listed<W>,
        critical_path: &'a [String],
        critical_path_minutes: f64,
        total_minutes: f64,
        parallelism: usize,
        services: Listed<S>,
    }
    let waves = plan.waves.iter().map(|wave| WaveJson {
        wave: wave.wave,
        services: Listed::new(plan.wave_services(wave)),
        expected_minutes: wave.expected_minutes,
    });
    let services = plan.services().map(|row| ServiceJson {
        service: row.service,
        wave: row.wave,
        depends_on: Listed::new(row.depends_on()),
        strategy: row.strategy,
        traffic_steps: row.traffic_steps,
        expected_minutes: row.expected_minutes,
        has_history: row.has_history,
        risk: row.risk,
        blast_radius: row.blast_radius,
        blast_radius_is_capped: row.blast_radius_is_capped(),
        is_on_critical_path: row.is_on_critical_path,
    });
    let mut text = serde_json::to_string_pretty(&PlanJson {
        plan_id: &plan.plan_id,
        waves: Listed::new(waves),
        critical_path: &plan.critical_path,
        critical_path_minutes: plan.critical_path_minutes,
        total_minutes: plan.total_minutes,
        parallelism: plan.parallelism,
        services: Listed::new(services),
    })?;
    text.push('\n');
    Ok(text)
}

fn dot(plan: &Plan) -> String {
    let mut text = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n",
        plan.plan_id
    );
    for wave in &plan.waves {
        let _ = writeln!(
            text,
            "  subgraph cluster_wave_{0} {{\n    label=\"wave {0} ({1:.0} min)\";",
            wave.wave, wave.expected_minutes
        );
        for service in plan.wave_services(wave) {
            let _ = writeln!(text, "    \"{service}\";");
        }
        text.push_str("  }\n");
    }
    for row in plan.services() {
        for dependency in row.depends_on() {
            let _ = writeln!(text, "  \"{dependency}\" -> \"{}\";", row.service);
        }
    }
    text.push_str("}\n");
    text
}

fn mermaid(plan: &Plan) -> String {
    // Mermaid ids must be plain: services are numbered, their names are the labels.
    let ids: HashMap<&str, usize> = plan
        .services()
        .enumerate()
        .map(|(i, row)| (row.service, i))
        .collect();
    let mut text = String::from("flowchart LR\n");
    for wave in &plan.waves {
        let _ = writeln!(
            text,
            "  subgraph wave{0}[\"wave {0} ({1:.0} min)\"]",
            wave.wave, wave.expected_minutes
        );
        for service in plan.wave_services(wave) {
            let _ = writeln!(text, "    s{}[\"{service}\"]", ids[service]);
        }
        text.push_str("  end\n");
    }
    for row in plan.services() {
        for dependency in row.depends_on() {
            let _ = writeln!(text, "  s{} --> s{}", ids[dependency], ids[row.service]);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_padded_and_numbers_written_as_format_would() {
        for cell in ["", "db", "ü-service", "a-name-longer-than-the-column-width"] {
            for width in [0, 4, 8, 24] {
                let (mut left, mut right) = (String::new(), String::new());
                pad(&mut left, cell, width, Align::Left);
                pad(&mut right, cell, width, Align::Right);
                assert_eq!(left, format!("{cell:<width$}"));
                assert_eq!(right, format!("{cell:>width$}"));
            }
        }
        for value in [
            0.0,
            0.5,
            1.5,
            2.5,
            14.49,
            14.5,
            90.0,
            1e14 + 0.5,
            1e15,
            3e20,
            -0.0,
            -0.4,
            -2.5,
            f64::NAN,
            f64::INFINITY,
        ] {
            let mut text = String::new();
            whole_number(&mut text, value);
            assert_eq!(text, format!("{value:.0}"), "{value}");
            let mut text = String::new();
            shortest_number(&mut text, value);
            assert_eq!(text, format!("{value}"), "{value}");
        }
    }
}
