//! Scale runs of Maestro on generated data: each prints seconds, MB/s, rows/s and peak memory.
//!
//! `maestro-scale ingest [--mb N] [--runs N]` times `maestro ingest` on one core
//! (RAYON_NUM_THREADS=1) for JUnit XML, OTLP JSON and audit JSON, each from files built out of a
//! generated history, `--runs` times each (3 by default): the median run, and the MB/s range.
//! `maestro-scale stream [--gb N]` ingests one large OTLP metrics file and reports peak memory.
//! `maestro-scale demo` times `maestro demo` at its default size.
//! `maestro-scale training [--rows N] [--columns N]` times an epoch of logistic regression and of
//! the MLP, and scoring, on synthetic rows (set RAYON_NUM_THREADS=1 for one core).
//! `maestro-scale risk [--days N] [--services N]` trains both risk models on generated history
//! and prints their ROC-AUC beside the baselines and the oracle, then scores the lake and judges
//! every canary against the injected regressions.
//! `maestro-scale tests [--days N] [--services N]` replays test selection at a budget of a third
//! of suite time and prints what the model, the baselines and an oracle of the generator's true
//! failure probabilities caught.
//! `maestro-scale select-tests [--tests N]` times the answer of test selection for one change on
//! a suite of N tests (50,000 by default), once the model and its history are loaded.
//! `maestro-scale reports [--days N] [--services N] [--trace-days N] [--dir DIR]` generates and
//! ingests a large history into DIR/lake (kept for reruns, which reuse it), with the traces of
//! its last `--trace-days` only (23 days of 300 services hold about a million spans), and runs
//! every report and control over it, printing each one's seconds and peak memory, then the
//! executive report's.
//! `maestro-scale plan [--services N] [--edges N] [--dir DIR]` writes a random acyclic service
//! graph of N services and N edges (1M each by default) into a scratch lake (kept in DIR when
//! given) and times `maestro plan --all` over it, printing seconds and peak memory.
//! `maestro-scale nightly [--days N] [--services N] [--dir DIR]` generates a history into DIR
//! (kept, so reruns reuse it) and times the whole nightly `maestro run` over it in a fresh
//! lake, printing each job's seconds, rows and the process's peak memory when it ended.
//! Run them with the release build: `cargo run --release -p maestro-benches -- ingest`.

mod models;
mod reports;

/// The allocator `maestro` runs with, so that runs timed in this process (training, replay,
/// select-tests) measure what the command would take.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use maestro_datasets::generate::{GenerateOptions, generate};

fn main() -> anyhow::Result<()> {
    maestro_models::network::settle_thread_count();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |flag: &str, default: f64| number_flag(&args, flag, default);
    match args.first().map(String::as_str) {
        Some("training") => {
            return models::training_speed(
                number("--rows", 1e6)? as usize,
                number("--columns", 30.0)? as usize,
            );
        }
        Some("risk") => {
            return models::risk_quality(
                number("--days", 150.0)? as u32,
                number("--services", 16.0)? as usize,
            );
        }
        Some("tests") => {
            return models::test_selection_quality(
                number("--days", 90.0)? as u32,
                number("--services", 8.0)? as usize,
            );
        }
        Some("reports") => {
            let dir = dir_flag(&args)?
                .unwrap_or_else(|| std::env::temp_dir().join("maestro-scale-reports"));
            return reports::report_set(
                number("--days", 365.0)? as u32,
                number("--services", 300.0)? as usize,
                number("--trace-days", 23.0)? as u32,
                &dir,
                only_flag(&args)?,
            );
        }
        Some("select-tests") => {
            return models::select_tests_speed(number("--tests", 50_000.0)? as usize);
        }
        _ => {}
    }
    let maestro = maestro_binary()?;
    match args.first().map(String::as_str) {
        Some("ingest") => ingest_throughput(
            &maestro,
            number("--mb", 200.0)?,
            number("--runs", 3.0)? as usize,
        ),
        Some("stream") => stream_memory(&maestro, number("--gb", 2.0)?),
        Some("demo") => demo(&maestro),
        Some("nightly") => {
            let dir = dir_flag(&args)?
                .unwrap_or_else(|| std::env::temp_dir().join("maestro-scale-nightly"));
            nightly(
                &maestro,
                number("--days", 365.0)? as u32,
                number("--services", 300.0)? as usize,
                &dir,
            )
        }
        Some("plan") => {
            let dir = dir_flag(&args)?;
            plan_speed(
                &maestro,
                number("--services", 1e6)? as usize,
                number("--edges", 1e6)? as usize,
                dir.as_deref(),
            )
        }
        _ => bail!(
            "usage: maestro-scale ingest [--mb N] [--runs N] | stream [--gb N] | demo | nightly [--days N] [--services N] [--dir DIR] | plan [--services N] [--edges N] [--dir DIR] | training [--rows N] [--columns N] | risk [--days N] [--services N] | tests [--days N] [--services N] | select-tests [--tests N] | reports [--days N] [--services N] [--trace-days N] [--dir DIR]"
        ),
    }
}

/// The folder after `--dir` in `args`, when the flag is given.
fn dir_flag(args: &[String]) -> anyhow::Result<Option<PathBuf>> {
    match args.iter().position(|a| a == "--dir") {
        Some(i) => Ok(Some(PathBuf::from(
            args.get(i + 1).context("--dir needs a folder")?,
        ))),
        None => Ok(None),
    }
}

/// The report names after `--only` (comma-separated), or none to run the whole set.
fn only_flag(args: &[String]) -> anyhow::Result<Vec<String>> {
    match args.iter().position(|a| a == "--only") {
        Some(i) => Ok(args
            .get(i + 1)
            .context("--only needs report names, such as slo_events,slo_alerts")?
            .split(',')
            .map(str::to_string)
            .collect()),
        None => Ok(Vec::new()),
    }
}

/// The number after `flag` in `args`, or `default` when the flag is absent.
fn number_flag(args: &[String], flag: &str, default: f64) -> anyhow::Result<f64> {
    match args.iter().position(|a| a == flag) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} takes a number")),
        None => Ok(default),
    }
}

/// The `maestro` binary built beside this one (same profile).
fn maestro_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("maestro");
    if !path.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p maestro-pipelines)",
            path.display()
        );
    }
    Ok(path)
}

/// A history to copy bench files from.
fn history(scratch: &Path) -> anyhow::Result<PathBuf> {
    let dir = scratch.join("history");
    generate(
        &dir,
        &GenerateOptions {
            days: 14,
            services: 12,
            ..Default::default()
        },
    )?;
    Ok(dir.join("sources"))
}

fn files_with(dir: &Path, needle: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().contains(needle) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copies `sources` into `out` until it holds `bytes`, each copy distinct (so none is skipped
/// as a duplicate): JUnit copies get a trailing comment, JSON lines are concatenated.
fn build_input(sources: &[PathBuf], out: &Path, bytes: u64, as_lines: bool) -> anyhow::Result<u64> {
    fs::create_dir_all(out)?;
    let mut written = 0u64;
    let mut copy = 0usize;
    if as_lines {
        let mut file = std::io::BufWriter::new(fs::File::create(out.join("input.jsonl"))?);
        while written < bytes {
            for source in sources {
                let content = fs::read(source)?;
                file.write_all(&content)?;
                written += content.len() as u64;
            }
        }
        file.flush()?;
    } else {
        while written < bytes {
            for source in sources {
                let mut content = fs::read(source)?;
                content.extend_from_slice(format!("\n<!-- copy {copy} -->\n").as_bytes());
                copy += 1;
                fs::write(out.join(format!("{copy:07}.xml")), &content)?;
                written += content.len() as u64;
                if written >= bytes {
                    break;
                }
            }
        }
    }
    settle_writes();
    Ok(written)
}

/// Waits until the kernel has written out what was just written, so that its writeback does
/// not run during, and count in, the ingest timed next.
#[allow(unsafe_code)]
fn settle_writes() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

struct Measured {
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_mb: f64,
    /// Percent of the machine's CPU time its hypervisor gave elsewhere during the run, where
    /// the system says.
    steal_percent: Option<f64>,
    stdout: String,
}

/// Ticks of CPU time stolen by the hypervisor and of all CPU time, since boot (Linux's
/// `/proc/stat`): on a shared virtual machine the same run is slower while the first climbs.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    // user, nice, system, idle, iowait, irq, softirq, steal; guest time is within user's.
    let ticks: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    Some((*ticks.get(7)?, ticks.iter().sum()))
}

/// Runs `maestro` and measures wall time, CPU time and that child's peak resident memory.
fn run_measured(maestro: &Path, args: &[&str], one_core: bool) -> anyhow::Result<Measured> {
    let output_file = tempfile::NamedTempFile::new()?;
    let ticks_before = cpu_ticks();
    let started = Instant::now();
    let mut command = Command::new(maestro);
    command.args(args).stdout(output_file.reopen()?);
    if one_core {
        command.env("RAYON_NUM_THREADS", "1");
    }
    let child = command.spawn()?;
    let (status, cpu_seconds, peak_rss_mb) = wait_with_usage(child.id())?;
    let seconds = started.elapsed().as_secs_f64();
    let steal_percent = match (ticks_before, cpu_ticks()) {
        (Some((steal0, total0)), Some((steal1, total1))) if total1 > total0 => {
            Some(100.0 * steal1.saturating_sub(steal0) as f64 / (total1 - total0) as f64)
        }
        _ => None,
    };
    let stdout = fs::read_to_string(output_file.path())?;
    if status != 0 {
        bail!("maestro {args:?} exited with status {status}: {stdout}");
    }
    Ok(Measured {
        seconds,
        cpu_seconds,
        peak_rss_mb,
        steal_percent,
        stdout,
    })
}

/// Waits for one child and returns (exit status, CPU seconds, peak RSS in MB) of that child.
#[allow(unsafe_code)]
fn wait_with_usage(pid: u32) -> anyhow::Result<(i32, f64, f64)> {
    let mut status = 0;
    // SAFETY: wait4 writes into the status and the zeroed rusage we own; pid is our child.
    let (rc, usage) = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let rc = libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage);
        (rc, usage)
    };
    if rc < 0 {
        bail!("waiting for maestro: {}", std::io::Error::last_os_error());
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((
        exit,
        seconds(usage.ru_utime) + seconds(usage.ru_stime),
        usage.ru_maxrss as f64 / 1024.0,
    ))
}

/// Peak resident memory of this process so far, in MB.
#[allow(unsafe_code)]
fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage writes into the zeroed rusage we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    usage.ru_maxrss as f64 / 1024.0
}

/// Times `maestro ingest --lake LAKE INPUT`, on one core or on all.
fn run_ingest(
    maestro: &Path,
    lake: &Path,
    input: &Path,
    one_core: bool,
) -> anyhow::Result<Measured> {
    let lake = lake.to_str().context("utf-8 path")?;
    let input = input.to_str().context("utf-8 path")?;
    run_measured(maestro, &["ingest", "--lake", lake, input], one_core)
}

/// Records read, from the ingest summary line `records: read N = ...`.
fn records_read(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("records: read "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Times the ingest of each format `runs` times, each into a fresh lake, and prints the run of
/// median time with the range of MB/s: single runs on shared machines vary by 10-30%.
fn ingest_throughput(maestro: &Path, mb: f64, runs: usize) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let sources = history(scratch.path())?;
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>10} {:>15} {:>12} {:>11} {:>9}",
        "format", "MB", "seconds", "cpu s", "MB/s", "MB/s range", "rows/s", "peak MB", "steal %"
    );
    for (name, needle, as_lines) in [
        ("junit", "junit/", false),
        ("otlp-json", "otlp/metrics-", true),
        ("audit-json", "audit/k8s-", true),
    ] {
        let input = scratch.path().join(name);
        let bytes = build_input(
            &files_with(&sources, needle)?,
            &input,
            (mb * 1e6) as u64,
            as_lines,
        )?;
        let lake = scratch.path().join(format!("lake-{name}"));
        let mut measured = Vec::new();
        for _ in 0..runs.max(1) {
            measured.push(run_ingest(maestro, &lake, &input, true)?);
            fs::remove_dir_all(&lake)?;
        }
        measured.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let megabytes = bytes as f64 / 1e6;
        let m = &measured[measured.len() / 2];
        let rows = records_read(&m.stdout);
        let range = format!(
            "{:.1}-{:.1}",
            megabytes / measured[measured.len() - 1].seconds,
            megabytes / measured[0].seconds
        );
        // The most taken by the hypervisor in any run: a wide range with steal is the machine.
        let steal = measured
            .iter()
            .filter_map(|m| m.steal_percent)
            .reduce(f64::max)
            .map_or("n/a".to_string(), |p| format!("{p:.1}"));
        println!(
            "{:<12} {:>9.1} {:>9.2} {:>9.2} {:>10.1} {:>15} {:>12.0} {:>11.0} {:>9}",
            name,
            megabytes,
            m.seconds,
            m.cpu_seconds,
            megabytes / m.seconds,
            range,
            rows as f64 / m.seconds,
            m.peak_rss_mb,
            steal
        );
        fs::remove_dir_all(&input)?;
    }
    Ok(())
}

fn stream_memory(maestro: &Path, gb: f64) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let sources = history(scratch.path())?;
    let input = scratch.path().join("big");
    let bytes = build_input(
        &files_with(&sources, "otlp/metrics-")?,
        &input,
        (gb * 1e9) as u64,
        true,
    )?;
    let lake = scratch.path().join("lake");
    let m = run_ingest(maestro, &lake, &input, false)?;
    let rows = records_read(&m.stdout);
    println!(
        "one OTLP metrics file of {:.2} GB: {:.1} s, {:.1} MB/s, {:.0} rows/s, peak memory {:.0} MB",
        bytes as f64 / 1e9,
        m.seconds,
        bytes as f64 / 1e6 / m.seconds,
        rows as f64 / m.seconds,
        m.peak_rss_mb
    );
    Ok(())
}

fn demo(maestro: &Path) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("demo");
    let m = run_measured(
        maestro,
        &["demo", "--dir", dir.to_str().context("utf-8 path")?],
        false,
    )?;
    println!(
        "maestro demo (default size): {:.1} s wall, {:.1} s CPU, peak memory {:.0} MB",
        m.seconds, m.cpu_seconds, m.peak_rss_mb
    );
    Ok(())
}

/// Times `maestro plan --all` on a random acyclic graph: each edge goes from a service to one
/// with a smaller number, so every service depends only on older ones. With `dir`, the lake is
/// kept there (as `lake-plan`) for profiling; otherwise it is removed afterwards.
fn plan_speed(
    maestro: &Path,
    services: usize,
    edges: usize,
    dir: Option<&Path>,
) -> anyhow::Result<()> {
    use maestro_datasets::schema::ServiceEdge;
    use rand::{Rng, SeedableRng};
    let scratch = tempfile::tempdir()?;
    let lake_dir = match dir {
        Some(dir) => {
            let kept = dir.join("lake-plan");
            if kept.exists() {
                std::fs::remove_dir_all(&kept)
                    .with_context(|| format!("removing the old {}", kept.display()))?;
            }
            kept
        }
        None => scratch.path().join("lake"),
    };
    let lake = maestro_datasets::Lake::open(&lake_dir)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let name = |i: usize| format!("svc-{i:07}");
    let mut rows = Vec::with_capacity(edges);
    while rows.len() < edges {
        let from = rng.random_range(1..services);
        let to = rng.random_range(0..from);
        rows.push(ServiceEdge {
            from_service: name(from),
            to_service: name(to),
            source: "catalog".into(),
        });
    }
    let mut txn = lake.begin()?;
    txn.write(&rows, maestro_datasets::WriteMode::Upsert)?;
    txn.commit()?;
    drop(rows);
    let lake_arg = lake_dir.to_str().context("utf-8 path")?;
    for format in ["table", "json"] {
        let m = run_measured(
            maestro,
            &["plan", "--lake", lake_arg, "--all", "--format", format],
            false,
        )?;
        let waves = m
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .split(" services in ")
            .nth(1)
            .unwrap_or("?")
            .to_string();
        println!(
            "maestro plan --all --format {format}: {services} services, {edges} edges: {:.2} s, peak memory {:.0} MB, {:.1} MB of output{}",
            m.seconds,
            m.peak_rss_mb,
            m.stdout.len() as f64 / 1e6,
            if format == "table" {
                format!(" ({})", waves.split(',').next().unwrap_or("?"))
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Generates a history once into `dir`, then times `maestro run` over all of it in a new lake.
fn nightly(maestro: &Path, days: u32, services: usize, dir: &Path) -> anyhow::Result<()> {
    let history = dir.join(format!("history-{days}d-{services}s"));
    if !history.join("sources").is_dir() {
        let started = Instant::now();
        generate(
            &history,
            &GenerateOptions {
                days,
                services,
                ..Default::default()
            },
        )?;
        println!(
            "generated {days} days x {services} services in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let lake = dir.join("lake");
    if lake.exists() {
        fs::remove_dir_all(&lake)?;
    }
    let config = dir.join("maestro.toml");
    fs::write(
        &config,
        format!("[run]\nlanding = [{:?}]\n", history.join("sources")),
    )?;
    let m = run_measured(
        maestro,
        &[
            "--config",
            config.to_str().context("utf-8 path")?,
            "run",
            "--lake",
            lake.to_str().context("utf-8 path")?,
        ],
        false,
    )?;
    let table: Vec<&str> = m
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("run run-"))
        .collect();
    println!("{}", table.join("\n"));
    // The run resets its high-water mark before each job, so the child's own peak is its last
    // job's: the run's peak is the largest of the jobs' (the table's fifth column).
    let job_peak_mb = table
        .iter()
        .skip(2)
        .filter_map(|line| line.split_whitespace().nth(4)?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    println!(
        "nightly run over {days} days x {services} services: {:.1} s wall, {:.1} s CPU, peak memory {:.0} MB (the largest job's)",
        m.seconds, m.cpu_seconds, job_peak_mb
    );
    Ok(())
}
