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
use maestro_datasets::schema::{Row, ServiceEdge};
use maestro_datasets::{Lake, WriteMode};
use maestro_reports::LakeSession;

use crate::Outcome;
use crate::cli::{PlanArgs, PlanFormat};
use crate::config;
use crate::output::print;
use crate::plan::{BLAST_RADIUS_CAP, Cycles, Plan, PlanInputs, plan};

pub fn run(args: &PlanArgs, config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let thresholds = config::load(config_path)?.risk.thresholds();
    let lake = Lake::open_existing(&args.lake.lake)?;
    let mut inputs = super::runtime()?.block_on(load_inputs(&lake))?;
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
    let loaded = started.elapsed().as_secs_f64();
    let planned = match plan(&inputs, services.as_deref(), args.parallel) {
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
    let mut txn = lake.begin()?;
    txn.write(&planned.services, WriteMode::Upsert)?;
    txn.commit()?;
    print(&match args.format {
        PlanFormat::Table => table(&planned),
        PlanFormat::Json => serde_json::to_string_pretty(&json(&planned))? + "\n",
        PlanFormat::Dot => dot(&planned),
        PlanFormat::Mermaid => mermaid(&planned),
    })?;
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

/// The graph, durations and risks from the lake.
async fn load_inputs(lake: &Lake) -> anyhow::Result<PlanInputs> {
    let session = LakeSession::open(lake).await?;
    // Declared dependencies, read as they are (the planner drops repeated edges), and calls
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
    let mut pairs = Vec::new();
    for batch in &edges {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("service edges without {name}"))
                .map(|c| c.as_string::<i32>().clone())
        };
        let (from, to) = (column("from_service")?, column("to_service")?);
        for i in 0..batch.num_rows() {
            pairs.push((from.value(i).to_string(), to.value(i).to_string()));
        }
    }
    pairs.sort();
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
    Ok(PlanInputs {
        edges: pairs,
        minutes,
        risk,
        canary_above: 0.0,
        hold_above: 0.0,
    })
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

fn blast(radius: i64) -> String {
    if radius as usize >= BLAST_RADIUS_CAP {
        format!(">={radius}")
    } else {
        radius.to_string()
    }
}

fn table(plan: &Plan) -> String {
    let mut text = format!(
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
        let steps: Vec<String> = row.traffic_steps.iter().map(|s| format!("{s}")).collect();
        let _ = writeln!(
            text,
            "  {:>4}  {:<24} {:<8} {:<22} {:>8.0} {:>6} {:>6}  {}{}",
            row.wave,
            row.service,
            row.strategy,
            steps.join(">"),
            row.expected_minutes,
            row.risk.map_or("-".into(), |r| format!("{r:.2}")),
            blast(row.blast_radius),
            row.depends_on.join(", "),
            if row.is_on_critical_path {
                "  [critical path]"
            } else {
                ""
            }
        );
    }
    text
}

fn json(plan: &Plan) -> serde_json::Value {
    let services: Vec<serde_json::Value> = plan
        .services
        .iter()
        .map(|row| {
            serde_json::json!({
                "service": row.service,
                "wave": row.wave,
                "depends_on": row.depends_on,
                "strategy": row.strategy,
                "traffic_steps": row.traffic_steps,
                "expected_minutes": row.expected_minutes,
                "has_history": row.has_history,
                "risk": row.risk,
                "blast_radius": row.blast_radius,
                "blast_radius_is_capped": row.blast_radius as usize >= BLAST_RADIUS_CAP,
                "is_on_critical_path": row.is_on_critical_path,
            })
        })
        .collect();
    let mut value = serde_json::to_value(plan).unwrap_or_default();
    value["services"] = serde_json::Value::Array(services);
    value
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
