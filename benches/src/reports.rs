//! The report set at scale: every SQL report and control over a large generated lake, with the
//! seconds and peak memory of each, then the executive report.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_datasets::generate::{GenerateOptions, generate};
use maestro_datasets::ingest::{IngestOptions, ingest};
use maestro_reports::LakeSession;
use maestro_reports::run::run_reports;
use maestro_reports::{definitions, executive};

/// Resident memory sampled every few milliseconds on a background thread, so the peak of each
/// report can be read from the samples taken while it ran.
struct MemorySampler {
    samples: Arc<Mutex<Vec<(Instant, f64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemorySampler {
    fn start() -> MemorySampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(mb) = resident_mb() {
                        samples
                            .lock()
                            .expect("the sampler's lock is never poisoned")
                            .push((Instant::now(), mb));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        MemorySampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// The highest sample taken between `from` and `from + seconds`; for a stretch shorter than
    /// the sampling interval, the sample just after it.
    fn peak_between(&self, from: Instant, seconds: f64) -> f64 {
        let to = from + Duration::from_secs_f64(seconds);
        let samples = self
            .samples
            .lock()
            .expect("the sampler's lock is never poisoned");
        let within = samples
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, mb)| *mb)
            .fold(f64::NAN, f64::max);
        if within.is_nan() {
            samples
                .iter()
                .find(|(at, _)| *at > to)
                .map_or(0.0, |(_, mb)| *mb)
        } else {
            within
        }
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// This process's resident memory now, in MB (Linux: the second field of /proc/self/statm).
fn resident_mb() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / 1e6)
}

/// Generates and ingests `days` x `services` of history into `dir/lake` unless that lake
/// already holds data (then it is reused as is), and runs every report over it. Only the last
/// `trace_days` of traces are ingested: the target lake holds far fewer spans than a year of
/// every service's traces.
///
/// With `only` names, runs just those reports (each with what it runs after named too), to
/// time one query without the whole set.
pub fn report_set(
    days: u32,
    services: usize,
    trace_days: u32,
    dir: &Path,
    only: Vec<String>,
) -> anyhow::Result<()> {
    let lake_dir = dir.join("lake");
    if !lake_dir.join("raw").exists() {
        let started = Instant::now();
        let summary = generate(
            dir,
            &GenerateOptions {
                days,
                services,
                ..Default::default()
            },
        )?;
        println!(
            "generated {days} days x {services} services in {:.1} s: {:.1} GB of sources",
            started.elapsed().as_secs_f64(),
            summary.source_bytes as f64 / 1e9
        );
        let trace_files = drop_early_traces(&dir.join("sources/otlp"), trace_days as usize)?;
        println!("keeping the traces of the last {trace_files} days");
        let started = Instant::now();
        let lake = Lake::open(&lake_dir)?;
        ingest(
            &lake,
            &[dir.join("sources")],
            &IngestOptions::default(),
            &|_| {},
        )?;
        println!("ingested in {:.1} s", started.elapsed().as_secs_f64());
        // The sources are not needed once in the lake, and they are large.
        std::fs::remove_dir_all(dir.join("sources"))?;
    } else {
        println!("reusing the lake at {}", lake_dir.display());
    }
    let lake = Lake::open_existing(&lake_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let counts = runtime.block_on(async {
        let session = LakeSession::open(&lake).await?;
        let mut counts = Vec::new();
        for table in [
            "metric_points",
            "test_results",
            "spans",
            "deployments",
            "slos",
        ] {
            let batches = session
                .query(&format!("select count(*) from {table}"))
                .await?;
            let count = batches
                .first()
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::Int64Array>()
                })
                .map_or(0, |a| a.value(0));
            counts.push(format!("{count} {table}"));
        }
        anyhow::Ok(counts)
    })?;
    println!("lake: {}", counts.join(", "));

    let mut definitions = definitions::load(None)?;
    if !only.is_empty() {
        definitions.retain(|d| only.contains(&d.name));
        anyhow::ensure!(
            definitions.len() == only.len(),
            "--only names a report that does not exist: {}",
            only.join(", ")
        );
    }
    let sampler = MemorySampler::start();
    let run_started = Instant::now();
    let started = run_started;
    let run = runtime
        .block_on(run_reports(&lake, &definitions, &[], None))
        .context("running the reports")?;
    let set_seconds = started.elapsed().as_secs_f64();
    println!(
        "{:<40} {:>10} {:>9} {:>9}",
        "report", "rows", "seconds", "peak MB"
    );
    for timing in &run.timings {
        println!(
            "{:<40} {:>10} {:>9.2} {:>9.0}",
            timing.name,
            timing.rows,
            timing.seconds,
            sampler.peak_between(timing.started, timing.seconds)
        );
    }
    let queries: f64 = run.timings.iter().map(|t| t.seconds).sum();
    println!(
        "report set: {set_seconds:.1} s ({queries:.1} s in queries, the rest reading the lake and writing the tables), peak {:.0} MB",
        sampler.peak_between(started, set_seconds)
    );
    if !only.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let report = runtime.block_on(executive::build(&lake, &run, &definitions))?;
    let rendered = executive::render(&report)?;
    let executive_seconds = started.elapsed().as_secs_f64();
    println!(
        "executive report: {executive_seconds:.1} s ({} KB of HTML), peak {:.0} MB",
        rendered.html.len() / 1024,
        sampler.peak_between(started, executive_seconds)
    );
    println!(
        "whole report set with the executive report: {:.1} s, peak {:.0} MB",
        set_seconds + executive_seconds,
        sampler.peak_between(run_started, set_seconds + executive_seconds)
    );
    Ok(())
}

/// Removes every `traces-<date>.jsonl` in `otlp` but the newest `keep`; returns how many remain.
fn drop_early_traces(otlp: &Path, keep: usize) -> anyhow::Result<usize> {
    let mut traces: Vec<_> = std::fs::read_dir(otlp)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    traces.retain(|path| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("traces-"))
    });
    // The names end in ISO dates, so name order is day order.
    traces.sort();
    let early = traces.len().saturating_sub(keep);
    for path in &traces[..early] {
        std::fs::remove_file(path)?;
    }
    Ok(traces.len() - early)
}
