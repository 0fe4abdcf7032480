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
use maestro_datasets::schema::{Row, ServiceEdge};
use maestro_datasets::{Lake, WriteMode};
use maestro_reports::LakeSession;

use crate::Outcome;
use crate::cli::{PlanArgs, PlanFormat};
use crate::config;
use crate::output::print;
use crate::plan::{BLAST_RADIUS_CAP, Cycles, Plan, PlanInputs, ServiceGraph, plan};

pub fn run(args: &PlanArgs, config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let thresholds = config::load(config_path)?.risk.thresholds();
    let lake = Lake::open_existing(&args.lake.lake)?;
    let (edges, mut inputs) = super::runtime()?.block_on(load_inputs(&lake))?;
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
    let graph = service_graph(&edges, services.as_deref().unwrap_or_default())?;
    drop(edges);
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
    // The table is written while the output is rendered: both take about a second on a million
    // services. Nothing is printed unless the write committed.
    let (written, text) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| -> anyhow::Result<()> {
            let mut txn = lake.begin()?;
            txn.write(&planned.services, WriteMode::Upsert)?;
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
        services = planned.services.len(),
        load_seconds = loaded,
        plan_seconds,
        total_seconds = started.elapsed().as_secs_f64(),
        "planned"
    );
    eprintln!(
        "planned {} services in {:.2} s (graph and history read in {loaded:.2} s, planned in {plan_seconds:.2} s); written to rollout_plans",
        planned.services.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Outcome::Ok)
}

/// The graph's edges (batches of `from_service`, `to_service`), durations and risks from the
/// lake.
async fn load_inputs(lake: &Lake) -> anyhow::Result<(Vec<RecordBatch>, PlanInputs)> {
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
    let mut text = String::with_capacity(128 * plan.services.len() + 1024);
    let _ = write!(
        text,
        "{}: {} services in {} waves (at most {} at once), about {:.0} minutes\ncritical path ({:.0} minutes): {}\n",
        plan.plan_id,
        plan.services.len(),
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
    // Cells are formatted into buffers reused from row to row: a million rows print in well
    // under a second that way.
    let (mut steps, mut risk, mut radius) = (String::new(), String::new(), String::new());
    let mut current = 0;
    for row in &plan.services {
        if row.wave != current {
            current = row.wave;
            let wave = &plan.waves[(current - 1) as usize];
            let _ = writeln!(
                text,
                "  wave {current}: {} services, about {:.0} minutes",
                wave.services.len(),
                wave.expected_minutes
            );
        }
        steps.clear();
        for (i, step) in row.traffic_steps.iter().enumerate() {
            let separator = if i == 0 { "" } else { ">" };
            let _ = write!(steps, "{separator}{step}");
        }
        risk.clear();
        match row.risk {
            Some(r) => {
                let _ = write!(risk, "{r:.2}");
            }
            None => risk.push('-'),
        }
        radius.clear();
        let at_least = if row.blast_radius as usize >= BLAST_RADIUS_CAP {
            ">="
        } else {
            ""
        };
        let _ = write!(radius, "{at_least}{}", row.blast_radius);
        let _ = write!(
            text,
            "  {:>4}  {:<24} {:<8} {:<22} {:>8.0} {:>6} {:>6}  ",
            row.wave, row.service, row.strategy, steps, row.expected_minutes, risk, radius,
        );
        for (i, dependency) in row.depends_on.iter().enumerate() {
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

/// One service of the JSON plan: its `rollout_plans` row, without the plan id the plan
/// carries once, and with whether its blast radius stopped at the cap.
#[derive(serde::Serialize)]
struct ServiceJson<'a> {
    service: &'a str,
    wave: i64,
    depends_on: &'a [String],
    strategy: &'a str,
    traffic_steps: &'a [f64],
    expected_minutes: f64,
    has_history: bool,
    risk: Option<f64>,
    blast_radius: i64,
    blast_radius_is_capped: bool,
    is_on_critical_path: bool,
}

/// The plan as pretty JSON, serialized straight from the rows.
fn json(plan: &Plan) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct PlanJson<'a> {
        #[serde(flatten)]
        plan: &'a Plan,
        services: Vec<ServiceJson<'a>>,
    }
    let services = plan
        .services
        .iter()
        .map(|row| ServiceJson {
            service: &row.service,
            wave: row.wave,
            depends_on: &row.depends_on,
            strategy: &row.strategy,
            traffic_steps: &row.traffic_steps,
            expected_minutes: row.expected_minutes,
            has_history: row.has_history,
            risk: row.risk,
            blast_radius: row.blast_radius,
            blast_radius_is_capped: row.blast_radius as usize >= BLAST_RADIUS_CAP,
            is_on_critical_path: row.is_on_critical_path,
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&PlanJson { plan, services })?;
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
        for service in &wave.services {
            let _ = writeln!(text, "    \"{service}\";");
        }
        text.push_str("  }\n");
    }
    for row in &plan.services {
        for dependency in &row.depends_on {
            let _ = writeln!(text, "  \"{dependency}\" -> \"{}\";", row.service);
        }
    }
    text.push_str("}\n");
    text
}

fn mermaid(plan: &Plan) -> String {
    // Mermaid ids must be plain: services are numbered, their names are the labels.
    let ids: HashMap<&str, usize> = plan
        .services
        .iter()
        .enumerate()
        .map(|(i, row)| (row.service.as_str(), i))
        .collect();
    let mut text = String::from("flowchart LR\n");
    for wave in &plan.waves {
        let _ = writeln!(
            text,
            "  subgraph wave{0}[\"wave {0} ({1:.0} min)\"]",
            wave.wave, wave.expected_minutes
        );
        for service in &wave.services {
            let _ = writeln!(text, "    s{}[\"{service}\"]", ids[service.as_str()]);
        }
        text.push_str("  end\n");
    }
    for row in &plan.services {
        for dependency in &row.depends_on {
            let _ = writeln!(
                text,
                "  s{} --> s{}",
                ids[dependency.as_str()],
                ids[row.service.as_str()]
            );
        }
    }
    text
}
