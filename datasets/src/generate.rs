//! The synthetic history generator: a seeded, realistic release-engineering history written in
//! the same real formats users bring (no private format), with the hidden truth beside it.
//!
//! Layout of `--out DIR`:
//! - `sources/` — what a user would ingest: `catalog-info.yaml` (Backstage service graph),
//!   `changes/<service>.csv` (Commit Guru), `cdevents/<day>.jsonl` (deployments, rollbacks,
//!   incidents), `junit/<service>/<run>.xml` (one report per CI run, written with quick-junit),
//!   `otlp/metrics-<day>.jsonl` and `otlp/traces-<day>.jsonl` (collector file-exporter lines),
//!   `audit/k8s-<day>.jsonl` and `audit/cloudtrail-<day>.json`, `openslo/<service>.yaml`.
//! - `truth/` — what no real source records: the true probabilities behind every label
//!   (`changes.csv`, `deployments.csv`, `tests.csv`), the tests that broke outside any change
//!   (`test_breakages.csv`) and `RULES.md`, which restates the rules below. Models are judged
//!   against this oracle.
//!
//! # The hidden rules
//!
//! **Bugs.** A change introduces a defect with probability
//! `sigmoid(-3.6 + 0.45·ln(1+la+ld) + 0.5·entropy + 0.25·ln(1+nf) + 0.6·fix − 0.3·ln(1+exp) +
//! 0.2·ln(1+ndev) + ln(service risk))`: big, scattered changes by inexperienced authors to
//! files many people touch are riskier; bug fixes are riskier still.
//!
//! **Bad deployments.** A deployment goes bad with probability
//! `1 − (1−0.02)·Π(1 − 0.3·p_bug(change))`, raised ×1.6 between 18:00 and 06:00 UTC and ×1.3 on
//! Fridays (capped at 0.95). A bad deployment is rolled back (45%), fails outright (20%), or
//! succeeds and causes an incident (35%); a rolled-back one also causes an incident 30% of the
//! time. While a bad deployment is live (until its rollback, or for 2 h), its service's error
//! rate rises 6–15× and its latency 1.6–2.5×. A canary deployment serves 10% of traffic from the
//! canary track for its first 30 minutes: one-minute series of the canary and baseline tracks
//! (attributes `deployment.track` and `deployment.id`) are written for every canary deployment,
//! and a bad one's regression shows on the canary track only until the 30 minutes are up.
//!
//! **Tests.** Each test covers 1–3 files of its service. In a change's CI run, a test fails with
//! probability 0.65 if the change is buggy and touches a covered file, 0.08 if it touches a
//! covered file without a bug, and 0 otherwise. Tests also break for reasons outside any change
//! (a dependency's release, an expired certificate, a shared fixture): in each run a working test
//! breaks with probability 0.0005, and a broken test fails in every run of its service until it
//! is fixed, 1–12 hours later (`truth/test_breakages.csv`). A flaky test (6% of tests) also fails
//! with its flake probability and then passes on retry; the report records the retry. Durations
//! are log-normal per test; 5% of tests are slow (10–90 s).
//!
//! **Audit.** Most production access is by the deploy service account; 4% of `pods/exec` and
//! secret reads are by humans outside the `break-glass` group, some role grants give
//! `cluster-admin`, and some deployments are approved by their own author or not at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use quick_junit::{
    NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};
use rand::prelude::*;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::schema::Ts;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Seed of the random generator: the same seed gives identical files.
    pub seed: u64,
    /// Days of history.
    pub days: u32,
    /// Number of services.
    pub services: usize,
    /// First day of the history (UTC midnight).
    pub start: Ts,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            seed: 42,
            days: 90,
            services: 8,
            start: Ts::parse("2026-09-01T00:00:00Z").expect("a valid constant"),
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, Default)]
pub struct GenerateSummary {
    /// Files written under `sources/`.
    pub source_files: usize,
    /// Bytes written under `sources/`.
    pub source_bytes: u64,
    /// Changes generated.
    pub changes: usize,
    /// Deployments generated.
    pub deployments: usize,
    /// Incidents generated.
    pub incidents: usize,
    /// Test executions generated (attempts included).
    pub test_results: usize,
    /// Metric data points generated.
    pub metric_points: usize,
    /// Spans generated.
    pub spans: usize,
    /// Audit records generated.
    pub audit_events: usize,
}

const SERVICE_NAMES: [&str; 16] = [
    "api-gateway",
    "checkout",
    "payments",
    "inventory",
    "search",
    "catalog",
    "users",
    "notifications",
    "recommendations",
    "shipping",
    "auth",
    "ledger",
    "pricing",
    "reviews",
    "media",
    "analytics",
];
const MODULES: [&str; 8] = [
    "core", "handlers", "storage", "client", "models", "config", "metrics", "jobs",
];
const STRATEGIES: [&str; 3] = ["canary", "rolling", "blue_green"];
const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

struct Service {
    name: String,
    files: Vec<SourceFile>,
    tests: Vec<TestDef>,
    depends_on: Vec<usize>,
    risk: f64,
    error_rate: f64,
    latency_ms: f64,
    requests_per_min: f64,
    changes_per_day: f64,
    strategy: &'static str,
}

struct SourceFile {
    path: String,
    module: usize,
    lines: f64,
    authors: Vec<usize>,
    last_changed: Option<i64>,
    changes: u32,
}

struct TestDef {
    classname: String,
    name: String,
    file: String,
    covers: Vec<usize>,
    mean_duration_s: f64,
    flake_probability: f64,
    /// Until when the test is broken for reasons outside any change (0: it works).
    broken_until: i64,
}

struct Developer {
    email: String,
    changes: Vec<(i64, usize, usize)>, // (time, service, module)
}

struct GeneratedChange {
    id: String,
    author: usize,
    at: i64,
    files: Vec<usize>,
    p_bug: f64,
    is_buggy: bool,
}

struct Window {
    service: usize,
    from: i64,
    to: i64,
    error_factor: f64,
    latency_factor: f64,
    canary_only_until: Option<i64>,
}

/// The first half hour of a canary deployment, healthy or not: one-minute series of the canary
/// and baseline tracks, tagged with the deployment's id.
struct CanaryRun {
    service: usize,
    deployment_id: String,
    from: i64,
    /// Error and latency factors of the canary track: 1.0 for a healthy canary.
    effect: (f64, f64),
}

/// How long the canary track serves alone before a deployment goes out in full.
const CANARY_MINUTES: i64 = 30;

/// Writes a generated history to `out`.
pub fn generate(out: &Path, options: &GenerateOptions) -> Result<GenerateSummary> {
    if options.services == 0 || options.days == 0 {
        return Err(Error::Usage(
            "--services and --days must be at least 1".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut w = Writer::new(out)?;
    let mut summary = GenerateSummary::default();
    let mut services = make_services(&mut rng, options.services);
    let mut developers: Vec<Developer> = (0..(options.services * 4).max(6))
        .map(|i| Developer {
            email: format!("dev{i:02}@example.com"),
            changes: Vec::new(),
        })
        .collect();
    // Give developers some history before day one, so experience varies from the start.
    for (i, dev) in developers.iter_mut().enumerate() {
        let prior = (i * 7) % 40;
        for _ in 0..prior {
            dev.changes.push((
                options.start.0 - DAY * 30,
                rng.random_range(0..options.services),
                rng.random_range(0..MODULES.len()),
            ));
        }
    }
    write_catalog(&mut w, &services)?;
    write_openslo(&mut w, &services)?;

    let start = options.start.0;
    let mut truth_changes = String::from("change_id,service,p_buggy,is_buggy\n");
    let mut truth_breakages = String::from("service,test_id,run_id,broken_at,fixed_at\n");
    let mut truth_deployments =
        String::from("deployment_id,service,p_bad,is_bad,effect,caused_incident_id\n");
    let mut windows: Vec<Window> = Vec::new();
    let mut canaries: Vec<CanaryRun> = Vec::new();
    let mut change_rows: Vec<Vec<String>> = vec![Vec::new(); services.len()];
    let mut deployment_counter = 0usize;
    let mut incident_counter = 0usize;
    let mut run_counter = 0usize;

    for day in 0..options.days as i64 {
        let day_start = start + day * DAY;
        let weekday = (day_start / DAY + 4) % 7; // 1970-01-01 was a Thursday; 0 = Sunday
        let mut cdevents: Vec<(i64, Value)> = Vec::new();
        let mut audit_k8s: Vec<(i64, Value)> = Vec::new();
        let mut cloudtrail: Vec<(i64, Value)> = Vec::new();
        for s in 0..services.len() {
            // Changes of the day, merged during working hours mostly.
            let weekend = weekday == 0 || weekday == 6;
            let rate = services[s].changes_per_day * if weekend { 0.2 } else { 1.0 };
            let count = poisson(&mut rng, rate);
            let mut day_changes: Vec<GeneratedChange> = Vec::new();
            for _ in 0..count {
                let at = day_start + working_time(&mut rng);
                let change = make_change(
                    &mut rng,
                    &mut services,
                    &mut developers,
                    s,
                    at,
                    &mut change_rows,
                )?;
                let _ = writeln!(
                    truth_changes,
                    "{},{},{:.6},{}",
                    change.id, services[s].name, change.p_bug, change.is_buggy
                );
                summary.changes += 1;
                day_changes.push(change);
            }
            day_changes.sort_by_key(|c| c.at);
            // CI: one JUnit report per change.
            for change in &day_changes {
                run_counter += 1;
                summary.test_results += write_junit(
                    &mut w,
                    &mut rng,
                    &mut services[s],
                    change,
                    run_counter,
                    &mut truth_breakages,
                )?;
            }
            // Deployments: after the day's changes, in one or two batches.
            if day_changes.is_empty() {
                continue;
            }
            let batches = if day_changes.len() > 3 && rng.random_bool(0.5) {
                2
            } else {
                1
            };
            let split = day_changes.len() / batches;
            for b in 0..batches {
                let carried: Vec<&GeneratedChange> = if b + 1 == batches {
                    day_changes[b * split..].iter().collect()
                } else {
                    day_changes[b * split..(b + 1) * split].iter().collect()
                };
                let last_merge = carried.iter().map(|c| c.at).max().unwrap_or(day_start);
                let started = last_merge + rng.random_range(10 * MINUTE..4 * HOUR);
                deployment_counter += 1;
                let id = format!("dep-{:06}", deployment_counter);
                let hour = (started % DAY) / HOUR;
                let mut p_bad =
                    1.0 - 0.98 * carried.iter().map(|c| 1.0 - 0.3 * c.p_bug).product::<f64>();
                if !(6..18).contains(&hour) {
                    p_bad *= 1.6;
                }
                if weekday == 5 {
                    p_bad *= 1.3;
                }
                p_bad = p_bad.min(0.95);
                let is_bad = rng.random_bool(p_bad);
                let strategy = if rng.random_bool(0.85) {
                    services[s].strategy
                } else {
                    *STRATEGIES.choose(&mut rng).expect("non-empty")
                };
                let duration = rng.random_range(4 * MINUTE..25 * MINUTE);
                let author = carried[0].author;
                let approver = match rng.random_range(0..100) {
                    0..=3 => Some(author), // self-approved: against good practice
                    4..=6 => None,         // not approved at all
                    _ => Some(
                        (author + 1 + rng.random_range(0..developers.len() - 1)) % developers.len(),
                    ),
                };
                let (outcome, effect) = if !is_bad {
                    ("succeeded", "none")
                } else {
                    match rng.random_range(0..100) {
                        0..=44 => ("rolled_back", "rolled_back"),
                        45..=64 => ("failed", "failed"),
                        _ => ("succeeded", "incident"),
                    }
                };
                let finished = started + duration;
                let mut customs = json!({
                    "deployment_id": id,
                    "service": services[s].name,
                    "change_ids": carried.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
                    "strategy": strategy,
                    "started_at": Ts(started).to_rfc3339(),
                    "initiated_by": developers[author].email,
                });
                if let Some(a) = approver {
                    customs["approved_by"] = json!(developers[a].email);
                }
                let version = format!("1.{}.{}", day, deployment_counter);
                let artifact = format!("pkg:oci/{}@{}", services[s].name, version);
                if outcome == "failed" {
                    customs["outcome"] = json!("failed");
                }
                cdevents.push((
                    finished,
                    cdevent(
                        "service.deployed",
                        "0.2.0",
                        &format!("{id}-deployed"),
                        finished,
                        &services[s].name,
                        json!({"environment": {"id": "production"}, "artifactId": artifact}),
                        customs.clone(),
                    ),
                ));
                let live_until = if outcome == "rolled_back" {
                    let rollback_at = finished + rng.random_range(10 * MINUTE..90 * MINUTE);
                    let mut rollback_custom = customs.clone();
                    rollback_custom["outcome"] = json!("rolled_back");
                    cdevents.push((
                        rollback_at,
                        cdevent(
                            "service.rolledback",
                            "0.2.0",
                            &format!("{id}-rolledback"),
                            rollback_at,
                            &services[s].name,
                            json!({"environment": {"id": "production"}, "artifactId": artifact}),
                            rollback_custom,
                        ),
                    ));
                    rollback_at
                } else if outcome == "failed" {
                    finished + 20 * MINUTE
                } else {
                    finished + 2 * HOUR
                };
                let mut incident_id = String::new();
                if effect == "incident" || (effect == "rolled_back" && rng.random_bool(0.3)) {
                    incident_counter += 1;
                    incident_id = format!("inc-{:05}", incident_counter);
                    let detected = finished + rng.random_range(5 * MINUTE..90 * MINUTE);
                    let resolved = detected + rng.random_range(20 * MINUTE..6 * HOUR);
                    let severity = ["sev1", "sev2", "sev2", "sev3", "sev3", "sev4"]
                        .choose(&mut rng)
                        .expect("non-empty");
                    let content = json!({"description": format!("Elevated errors on {}", services[s].name), "environment": {"id": "production"}, "service": {"id": services[s].name}});
                    let custom = json!({"severity": severity, "caused_by_deployment_id": id});
                    cdevents.push((
                        detected,
                        cdevent(
                            "incident.detected",
                            "0.1.0",
                            &incident_id,
                            detected,
                            &services[s].name,
                            content.clone(),
                            custom.clone(),
                        ),
                    ));
                    cdevents.push((
                        resolved,
                        cdevent(
                            "incident.resolved",
                            "0.1.0",
                            &incident_id,
                            resolved,
                            &services[s].name,
                            content,
                            custom,
                        ),
                    ));
                    summary.incidents += 1;
                }
                let mut canary_effect = (1.0, 1.0);
                if is_bad {
                    let window = Window {
                        service: s,
                        from: started,
                        to: live_until.max(started + CANARY_MINUTES * MINUTE),
                        error_factor: rng.random_range(6.0..15.0),
                        latency_factor: rng.random_range(1.6..2.5),
                        canary_only_until: (strategy == "canary")
                            .then_some(started + CANARY_MINUTES * MINUTE),
                    };
                    canary_effect = (window.error_factor, window.latency_factor);
                    windows.push(window);
                }
                if strategy == "canary" {
                    canaries.push(CanaryRun {
                        service: s,
                        deployment_id: id.clone(),
                        from: started,
                        effect: canary_effect,
                    });
                }
                let _ = writeln!(
                    truth_deployments,
                    "{id},{},{p_bad:.6},{is_bad},{effect},{incident_id}",
                    services[s].name
                );
                summary.deployments += 1;
                audit_k8s.push((
                    started,
                    k8s_event(
                        &mut rng,
                        started,
                        "system:serviceaccount:ci:deployer",
                        &["system:serviceaccounts"],
                        "patch",
                        "deployments",
                        "production",
                        &services[s].name,
                        200,
                    ),
                ));
            }
        }
        // Audit noise and bad practice through the day.
        summary.audit_events += audit_day(
            &mut rng,
            day_start,
            &services,
            &developers,
            &mut audit_k8s,
            &mut cloudtrail,
        );
        write_sorted_lines(
            &mut w,
            &format!("cdevents/{}.jsonl", Ts(day_start).date()),
            cdevents,
        )?;
        write_sorted_lines(
            &mut w,
            &format!("audit/k8s-{}.jsonl", Ts(day_start).date()),
            audit_k8s,
        )?;
        cloudtrail.sort_by_key(|(at, _)| *at);
        let records: Vec<Value> = cloudtrail.into_iter().map(|(_, v)| v).collect();
        w.write(
            &format!("audit/cloudtrail-{}.json", Ts(day_start).date()),
            serde_json::to_string_pretty(&json!({"Records": records}))
                .map_err(internal)?
                .as_bytes(),
        )?;
    }
    summary.audit_events += summary.deployments;

    // Telemetry needs the bad windows of the whole history. Each day draws from its own
    // stream of the seed, so days are written in parallel and still identical on every run.
    let mut windows_by_service: Vec<Vec<Window>> = services.iter().map(|_| Vec::new()).collect();
    for window in windows {
        windows_by_service[window.service].push(window);
    }
    let mut canaries_by_service: Vec<Vec<CanaryRun>> =
        services.iter().map(|_| Vec::new()).collect();
    for canary in canaries {
        canaries_by_service[canary.service].push(canary);
    }
    let telemetry = (0..options.days as i64)
        .into_par_iter()
        .map(|day| {
            let mut day_rng = ChaCha8Rng::seed_from_u64(options.seed);
            day_rng.set_stream(day as u64 + 1);
            let day_start = start + day * DAY;
            let points = write_metrics_day(
                &w,
                &mut day_rng,
                day_start,
                &services,
                &windows_by_service,
                &canaries_by_service,
            )?;
            let spans =
                write_traces_day(&w, &mut day_rng, day_start, &services, &windows_by_service)?;
            Ok((points, spans))
        })
        .collect::<Result<Vec<(usize, usize)>>>()?;
    for (points, spans) in telemetry {
        summary.metric_points += points;
        summary.spans += spans;
    }
    for (s, rows) in change_rows.iter().enumerate() {
        let mut csv = String::from(COMMIT_GURU_HEADER);
        csv.push('\n');
        for row in rows {
            csv.push_str(row);
            csv.push('\n');
        }
        w.write(&format!("changes/{}.csv", services[s].name), csv.as_bytes())?;
    }
    let mut truth_tests =
        String::from("service,test_id,file,covered_files,flake_probability,mean_duration_s\n");
    for service in &services {
        for test in &service.tests {
            let covered: Vec<&str> = test
                .covers
                .iter()
                .map(|f| service.files[*f].path.as_str())
                .collect();
            let _ = writeln!(
                truth_tests,
                "{},{}::{},{},{},{:.4},{:.3}",
                service.name,
                test.classname,
                test.name,
                test.file,
                covered.join(";"),
                test.flake_probability,
                test.mean_duration_s
            );
        }
    }
    w.write_truth("changes.csv", truth_changes.as_bytes())?;
    w.write_truth("deployments.csv", truth_deployments.as_bytes())?;
    w.write_truth("tests.csv", truth_tests.as_bytes())?;
    w.write_truth("test_breakages.csv", truth_breakages.as_bytes())?;
    w.write_truth("RULES.md", rules_text().as_bytes())?;
    summary.source_files = w.files.into_inner();
    summary.source_bytes = w.bytes.into_inner();
    Ok(summary)
}

/// The hidden rules, as written to `truth/RULES.md`: this module's documentation.
fn rules_text() -> String {
    let source = include_str!("generate.rs");
    let rules: String = source
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| {
            format!(
                "{}\n",
                l.trim_start_matches("//!").strip_prefix(' ').unwrap_or("")
            )
        })
        .collect();
    format!("# Generated history: the hidden rules\n\n{rules}")
}

const COMMIT_GURU_HEADER: &str = "commit_hash,author_name,author_date_unix_timestamp,author_email,author_date,commit_message,fix,classification,linked,contains_bug,fixes,ns,nd,nf,entrophy,la,ld,fileschanged,lt,ndev,age,nuc,exp,rexp,sexp,glm_probability,rf_probability,repository_id,issue_id,issue_date,issue_type";

fn make_services(rng: &mut ChaCha8Rng, count: usize) -> Vec<Service> {
    (0..count)
        .map(|i| {
            let name = SERVICE_NAMES
                .get(i)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("service-{i:03}"));
            let file_count = rng.random_range(15..40);
            let files: Vec<SourceFile> = (0..file_count)
                .map(|f| {
                    let module = rng.random_range(0..MODULES.len());
                    SourceFile {
                        path: format!(
                            "src/{}/{}_{f}.rs",
                            MODULES[module],
                            ["mod", "lib", "api", "util", "types"][f % 5]
                        ),
                        module,
                        lines: (rng.random_range(4.0f64..7.5)).exp(),
                        authors: Vec::new(),
                        last_changed: None,
                        changes: 0,
                    }
                })
                .collect();
            let test_count = rng.random_range(30..90);
            let tests = (0..test_count)
                .map(|t| {
                    let first = rng.random_range(0..files.len());
                    let mut covers = vec![first];
                    for _ in 0..rng.random_range(0..3) {
                        // Tests cover files of the same module mostly.
                        let same: Vec<usize> = (0..files.len())
                            .filter(|f| files[*f].module == files[first].module)
                            .collect();
                        let pick = *same.choose(rng).expect("contains first");
                        if !covers.contains(&pick) {
                            covers.push(pick);
                        }
                    }
                    let module = MODULES[files[first].module];
                    let slow = rng.random_bool(0.05);
                    TestDef {
                        classname: format!("{}.{}_test", name.replace('-', "_"), module),
                        name: format!("test_{module}_{t:03}"),
                        file: format!("tests/{module}_test.rs"),
                        covers,
                        mean_duration_s: if slow {
                            rng.random_range(10.0..90.0)
                        } else {
                            (rng.random_range(-4.0f64..0.5)).exp()
                        },
                        flake_probability: if rng.random_bool(0.06) {
                            rng.random_range(0.05..0.25)
                        } else {
                            0.0
                        },
                        broken_until: 0,
                    }
                })
                .collect();
            let depends_on = (i + 1..count)
                .filter(|_| rng.random_bool((2.0 / count as f64).min(0.6)))
                .take(3)
                .collect();
            Service {
                name,
                files,
                tests,
                depends_on,
                risk: rng.random_range(0.6..1.6),
                error_rate: rng.random_range(0.001..0.006),
                latency_ms: rng.random_range(25.0..140.0),
                requests_per_min: rng.random_range(200.0..3000.0),
                changes_per_day: rng.random_range(1.5..5.0),
                strategy: STRATEGIES[i % STRATEGIES.len()],
            }
        })
        .collect()
}

fn make_change(
    rng: &mut ChaCha8Rng,
    services: &mut [Service],
    developers: &mut [Developer],
    s: usize,
    at: i64,
    change_rows: &mut [Vec<String>],
) -> Result<GeneratedChange> {
    let service = &mut services[s];
    let author = rng.random_range(0..developers.len());
    // Files: clustered in one or two modules.
    let nf = (1.0 + (rng.random_range(0.0f64..2.2)).exp())
        .floor()
        .min(service.files.len() as f64) as usize;
    let anchor = rng.random_range(0..service.files.len());
    let mut files = vec![anchor];
    while files.len() < nf {
        let candidate = if rng.random_bool(0.7) {
            let same: Vec<usize> = (0..service.files.len())
                .filter(|f| service.files[*f].module == service.files[anchor].module)
                .collect();
            *same.choose(rng).expect("contains anchor")
        } else {
            rng.random_range(0..service.files.len())
        };
        if !files.contains(&candidate) {
            files.push(candidate);
        }
        if files.len() >= service.files.len() {
            break;
        }
    }
    files.sort_unstable();
    let per_file: Vec<f64> = files
        .iter()
        .map(|_| (rng.random_range(0.5f64..5.5)).exp().floor() + 1.0)
        .collect();
    let total: f64 = per_file.iter().sum();
    let la = (total * rng.random_range(0.5..0.9)).round();
    let ld = (total - la).max(0.0);
    let entropy = if files.len() > 1 {
        -per_file
            .iter()
            .map(|n| n / total)
            .map(|p| p * p.log2())
            .sum::<f64>()
            / (files.len() as f64).log2()
    } else {
        0.0
    };
    let modules: std::collections::BTreeSet<usize> =
        files.iter().map(|f| service.files[*f].module).collect();
    let ns = modules.len() as f64;
    let nd = ns;
    let lt: f64 = files.iter().map(|f| service.files[*f].lines).sum::<f64>() / files.len() as f64;
    let fix = rng.random_bool(0.25);
    let mut devs: std::collections::BTreeSet<usize> = std::collections::BTreeSet::new();
    let mut ages = Vec::new();
    let mut nuc = 0u32;
    for f in &files {
        devs.extend(service.files[*f].authors.iter().copied());
        if let Some(last) = service.files[*f].last_changed {
            ages.push((at - last) as f64 / DAY as f64);
        }
        nuc += service.files[*f].changes;
    }
    let ndev = devs.len() as f64;
    let age = if ages.is_empty() {
        0.0
    } else {
        ages.iter().sum::<f64>() / ages.len() as f64
    };
    let history = &developers[author].changes;
    let exp = history.len() as f64;
    let rexp: f64 = history
        .iter()
        .map(|(t, _, _)| 1.0 / (1.0 + ((at - t) as f64 / (365.0 * DAY as f64)).max(0.0)))
        .sum();
    let sexp = history
        .iter()
        .filter(|(_, hs, hm)| *hs == s && modules.contains(hm))
        .count() as f64;
    let logit = -3.6
        + 0.45 * (1.0 + la + ld).ln()
        + 0.5 * entropy
        + 0.25 * (1.0 + files.len() as f64).ln()
        + if fix { 0.6 } else { 0.0 }
        - 0.3 * (1.0 + exp).ln()
        + 0.2 * (1.0 + ndev).ln()
        + service.risk.ln();
    let p_bug = 1.0 / (1.0 + (-logit).exp());
    let is_buggy = rng.random_bool(p_bug);
    let mut hash_bytes = [0u8; 20];
    rng.fill_bytes(&mut hash_bytes);
    let id: String = hash_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let email = developers[author].email.clone();
    let name = email.split('@').next().unwrap_or_default().to_string();
    let paths: Vec<String> = files
        .iter()
        .map(|f| service.files[*f].path.clone())
        .collect();
    let message = if fix {
        format!("Fix {} handling", MODULES[service.files[anchor].module])
    } else {
        format!("Improve {}", MODULES[service.files[anchor].module])
    };
    let seconds = at / 1_000_000;
    let date = Ts(at)
        .to_datetime()
        .format("%a %b %e %H:%M:%S %Y +0000")
        .to_string();
    let row = [
        id.clone(),
        name,
        seconds.to_string(),
        email,
        date,
        message,
        title(fix),
        if fix {
            "Corrective".into()
        } else {
            "Feature Addition".into()
        },
        "False".into(),
        title(is_buggy),
        String::new(),
        ns.to_string(),
        nd.to_string(),
        files.len().to_string(),
        format!("{entropy:.6}"),
        la.to_string(),
        ld.to_string(),
        paths.join(",CAS_DELIMITER,"),
        format!("{lt:.1}"),
        ndev.to_string(),
        format!("{age:.4}"),
        nuc.to_string(),
        exp.to_string(),
        format!("{rexp:.4}"),
        sexp.to_string(),
        "0".into(),
        "0".into(),
        service.name.clone(),
        String::new(),
        String::new(),
        String::new(),
    ];
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    writer
        .write_record(&row)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let line = String::from_utf8(
        writer
            .into_inner()
            .map_err(|e| Error::Internal(e.to_string()))?,
    )
    .map_err(internal)?;
    change_rows[s].push(line.trim_end().to_string());
    for f in &files {
        let file = &mut service.files[*f];
        if !file.authors.contains(&author) {
            file.authors.push(author);
        }
        file.last_changed = Some(at);
        file.changes += 1;
    }
    for m in &modules {
        developers[author].changes.push((at, s, *m));
    }
    Ok(GeneratedChange {
        id,
        author,
        at,
        files,
        p_bug,
        is_buggy,
    })
}

fn title(flag: bool) -> String {
    if flag { "True".into() } else { "False".into() }
}

/// Writes one CI run's JUnit report; a test that breaks in this run is recorded in `breakages`.
fn write_junit(
    w: &mut Writer,
    rng: &mut ChaCha8Rng,
    service: &mut Service,
    change: &GeneratedChange,
    run: usize,
    breakages: &mut String,
) -> Result<usize> {
    let run_id = format!("ci-{run:06}");
    let started = change.at - rng.random_range(5 * MINUTE..40 * MINUTE);
    let offset = chrono::FixedOffset::east_opt(0).expect("zero offset");
    let timestamp = Ts(started).to_datetime().with_timezone(&offset);
    let mut suite = TestSuite::new(format!("{}-tests", service.name));
    suite.set_timestamp(timestamp);
    suite.add_property(Property::new("maestro.change_id", change.id.clone()));
    suite.add_property(Property::new("maestro.run_id", run_id.clone()));
    suite.add_property(Property::new("maestro.service", service.name.clone()));
    suite.add_property(Property::new(
        "maestro.started_at",
        Ts(started).to_rfc3339(),
    ));
    let mut rows = 0;
    let mut total = 0.0;
    for test in &mut service.tests {
        let touches = test.covers.iter().any(|f| change.files.contains(f));
        let p_fail = match (touches, change.is_buggy) {
            (true, true) => 0.65,
            (true, false) => 0.08,
            _ => 0.0,
        };
        if test.broken_until <= started && rng.random_bool(0.0005) {
            test.broken_until = started + rng.random_range(HOUR..12 * HOUR);
            let _ = writeln!(
                breakages,
                "{},{}::{},{run_id},{},{}",
                service.name,
                test.classname,
                test.name,
                Ts(started).to_rfc3339(),
                Ts(test.broken_until).to_rfc3339()
            );
        }
        let duration = (test.mean_duration_s * rng.random_range(0.7f64..1.4)).max(0.001);
        total += duration;
        let really_fails = rng.random_bool(p_fail) || test.broken_until > started;
        let flakes = !really_fails
            && test.flake_probability > 0.0
            && rng.random_bool(test.flake_probability);
        let mut status = if really_fails {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(format!("assertion failed in {}", test.name));
            status
        } else {
            TestCaseStatus::success()
        };
        if flakes {
            let mut rerun = TestRerun::new(NonSuccessKind::Failure);
            rerun.set_message("timed out waiting for dependency");
            status.add_rerun(rerun);
            rows += 1;
        }
        let mut case = TestCase::new(test.name.clone(), status);
        case.set_classname(test.classname.clone());
        case.set_time(std::time::Duration::from_secs_f64(duration));
        case.extra.insert("file".into(), test.file.clone().into());
        suite.add_test_case(case);
        rows += 1;
    }
    suite.set_time(std::time::Duration::from_secs_f64(total));
    let mut report = Report::new(format!("{} CI", service.name));
    report.add_test_suite(suite);
    let xml = report
        .to_string()
        .map_err(|e| Error::Internal(format!("writing JUnit: {e}")))?;
    w.write(
        &format!("junit/{}/{run_id}.xml", service.name),
        xml.as_bytes(),
    )?;
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
fn cdevent(
    kind: &str,
    version: &str,
    id: &str,
    at: i64,
    service: &str,
    content: Value,
    custom: Value,
) -> Value {
    let subject_id = if kind.starts_with("incident") {
        id.to_string()
    } else {
        format!("service/{service}")
    };
    json!({
        "context": {
            "specversion": "0.4.1",
            "id": id,
            "source": "/maestro/generator",
            "type": format!("dev.cdevents.{kind}.{version}"),
            "timestamp": Ts(at).to_rfc3339(),
        },
        "subject": {"id": subject_id, "source": "/maestro/generator", "content": content},
        "customData": custom,
        "customDataContentType": "application/json",
    })
}

#[allow(clippy::too_many_arguments)]
fn k8s_event(
    rng: &mut ChaCha8Rng,
    at: i64,
    user: &str,
    groups: &[&str],
    verb: &str,
    resource: &str,
    namespace: &str,
    name: &str,
    code: i64,
) -> Value {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let audit_id = format!(
        "{}-{}-{}-{}-{}",
        hex(&id[0..4]),
        hex(&id[4..6]),
        hex(&id[6..8]),
        hex(&id[8..10]),
        hex(&id[10..16])
    );
    let (resource, subresource) = resource
        .split_once('/')
        .map_or((resource, None), |(r, s)| (r, Some(s)));
    let mut object =
        json!({"resource": resource, "namespace": namespace, "name": name, "apiVersion": "v1"});
    if let Some(sub) = subresource {
        object["subresource"] = json!(sub);
    }
    json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "requestURI": format!("/api/v1/namespaces/{namespace}/{resource}/{name}"),
        "verb": verb,
        "user": {"username": user, "groups": groups},
        "sourceIPs": ["10.0.0.1"],
        "objectRef": object,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": Ts(at).to_rfc3339(),
        "stageTimestamp": Ts(at + 20_000).to_rfc3339(),
        "annotations": {"authorization.k8s.io/decision": if code < 400 { "allow" } else { "forbid" }},
    })
}

fn audit_day(
    rng: &mut ChaCha8Rng,
    day_start: i64,
    services: &[Service],
    developers: &[Developer],
    k8s: &mut Vec<(i64, Value)>,
    cloudtrail: &mut Vec<(i64, Value)>,
) -> usize {
    let mut count = 0;
    let humans: Vec<&str> = developers.iter().map(|d| d.email.as_str()).collect();
    for _ in 0..rng.random_range(4..12) {
        let at = day_start + rng.random_range(0..DAY);
        let service = &services[rng.random_range(0..services.len())].name;
        let break_glass = rng.random_bool(0.5);
        let human = *humans.choose(rng).expect("developers exist");
        let groups: &[&str] = if break_glass {
            &["break-glass", "system:authenticated"]
        } else {
            &["developers", "system:authenticated"]
        };
        let (verb, resource) = match rng.random_range(0..10) {
            0..=4 => ("create", "pods/exec"),
            5..=7 => ("get", "secrets"),
            8 => ("delete", "persistentvolumeclaims"),
            _ => ("delete", "statefulsets"),
        };
        // Outside break-glass, a human's production access is against good practice; most
        // such requests are the deploy account's and only some humans do it (4%).
        if !break_glass && !rng.random_bool(0.04) {
            k8s.push((
                at,
                k8s_event(
                    rng,
                    at,
                    "system:serviceaccount:ops:operator",
                    &["system:serviceaccounts"],
                    verb,
                    resource,
                    "production",
                    service,
                    200,
                ),
            ));
        } else {
            k8s.push((
                at,
                k8s_event(
                    rng,
                    at,
                    human,
                    groups,
                    verb,
                    resource,
                    "production",
                    service,
                    200,
                ),
            ));
        }
        count += 1;
    }
    if rng.random_bool(0.15) {
        let at = day_start + rng.random_range(0..DAY);
        let human = *humans.choose(rng).expect("developers exist");
        let mut event = k8s_event(
            rng,
            at,
            human,
            &["developers"],
            "create",
            "clusterrolebindings",
            "",
            &format!("grant-{}", human.split('@').next().unwrap_or("x")),
            201,
        );
        event["requestObject"] = json!({"roleRef": {"kind": "ClusterRole", "name": if rng.random_bool(0.5) { "cluster-admin" } else { "view" }}, "subjects": [{"kind": "User", "name": human}]});
        k8s.push((at, event));
        count += 1;
    }
    for _ in 0..rng.random_range(3..8) {
        let at = day_start + rng.random_range(0..DAY);
        let human = *humans.choose(rng).expect("developers exist");
        let (source, name, resource, error) = match rng.random_range(0..12) {
            0..=3 => (
                "signin.amazonaws.com",
                "ConsoleLogin",
                "arn:aws:iam::123456789012:user/x".to_string(),
                None,
            ),
            4..=6 => (
                "sts.amazonaws.com",
                "AssumeRole",
                "arn:aws:iam::123456789012:role/break-glass".to_string(),
                None,
            ),
            7..=8 => (
                "secretsmanager.amazonaws.com",
                "GetSecretValue",
                format!(
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-db",
                    services[rng.random_range(0..services.len())].name
                ),
                None,
            ),
            9 => (
                "s3.amazonaws.com",
                "DeleteBucket",
                "arn:aws:s3:::old-exports".to_string(),
                if rng.random_bool(0.3) {
                    Some("AccessDenied")
                } else {
                    None
                },
            ),
            10 => (
                "rds.amazonaws.com",
                "DeleteDBInstance",
                "arn:aws:rds:us-east-1:123456789012:db:staging-db".to_string(),
                None,
            ),
            _ => (
                "s3.amazonaws.com",
                "PutBucketPolicy",
                "arn:aws:s3:::artifacts".to_string(),
                None,
            ),
        };
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let mut record = json!({
            "eventVersion": "1.08",
            "eventID": hex(&id),
            "eventTime": Ts(at).to_datetime().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "eventSource": source,
            "eventName": name,
            "awsRegion": "us-east-1",
            "eventType": "AwsApiCall",
            "userIdentity": {"type": "IAMUser", "arn": format!("arn:aws:iam::123456789012:user/{human}"), "userName": human},
            "sourceIPAddress": "203.0.113.10",
            "resources": [{"ARN": resource}],
            "managementEvent": true,
        });
        if let Some(code) = error {
            record["errorCode"] = json!(code);
        }
        cloudtrail.push((at, record));
        count += 1;
    }
    count
}

/// `windows` and `canaries` are indexed by service.
fn write_metrics_day(
    w: &Writer,
    rng: &mut ChaCha8Rng,
    day_start: i64,
    services: &[Service],
    windows: &[Vec<Window>],
    canaries: &[Vec<CanaryRun>],
) -> Result<usize> {
    const STEP: i64 = 15 * MINUTE;
    let mut lines = String::new();
    let mut points = 0;
    for (s, service) in services.iter().enumerate() {
        for hour in 0..24 {
            let mut metrics: Vec<Value> = Vec::new();
            // `track`: the canary or baseline track and the deployment under analysis.
            let series = |track: Option<(&str, &str)>,
                          t: i64,
                          step: i64,
                          traffic_share: f64,
                          effect: (f64, f64),
                          rng: &mut ChaCha8Rng,
                          metrics: &mut Vec<Value>| {
                let hour_of_day = ((t % DAY) / HOUR) as f64;
                let diurnal = 0.6
                    + 0.4
                        * ((hour_of_day - 6.0) / 24.0 * std::f64::consts::TAU)
                            .sin()
                            .max(-0.5);
                let requests = (service.requests_per_min
                    * diurnal
                    * traffic_share
                    * (step / MINUTE) as f64
                    * rng.random_range(0.9..1.1))
                .round()
                .max(1.0);
                let error_rate = (service.error_rate * effect.0).min(0.9);
                // Counts of errors are Poisson: rounding an expected count would bias small
                // tracks (a canary's 0.6 expected errors would always read as one).
                let expected_errors = requests * error_rate * rng.random_range(0.7..1.3);
                let errors = poisson(rng, expected_errors) as f64;
                let latency = service.latency_ms * effect.1;
                let mut counts = vec![0u64; LATENCY_BOUNDS.len() + 1];
                let mut sum = 0.0;
                let samples = 200usize;
                for _ in 0..samples {
                    let v = latency * (rng.random_range(-0.6f64..0.9)).exp();
                    sum += v;
                    let bucket = LATENCY_BOUNDS
                        .iter()
                        .position(|b| v <= *b)
                        .unwrap_or(LATENCY_BOUNDS.len());
                    counts[bucket] += 1;
                }
                let scale = requests / samples as f64;
                let counts: Vec<String> = counts
                    .iter()
                    .map(|c| ((*c as f64) * scale).round().to_string())
                    .collect();
                let mut attributes = vec![
                    json!({"key": "deployment.environment", "value": {"stringValue": "production"}}),
                ];
                if let Some((track, deployment_id)) = track {
                    attributes
                        .push(json!({"key": "deployment.track", "value": {"stringValue": track}}));
                    attributes.push(
                        json!({"key": "deployment.id", "value": {"stringValue": deployment_id}}),
                    );
                }
                let start = (t - step) * 1000;
                let end = t * 1000;
                let number = |value: f64| json!({"startTimeUnixNano": start.to_string(), "timeUnixNano": end.to_string(), "asDouble": value, "attributes": attributes});
                metrics.push(json!({"name": "http.server.requests", "unit": "{request}", "sum": {"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [number(requests)]}}));
                metrics.push(json!({"name": "http.server.errors", "unit": "{request}", "sum": {"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [number(errors)]}}));
                metrics.push(json!({"name": "http.server.duration", "unit": "ms", "histogram": {"aggregationTemporality": 1, "dataPoints": [{
                    "startTimeUnixNano": start.to_string(), "timeUnixNano": end.to_string(), "count": (requests as u64).to_string(), "sum": sum * scale,
                    "bucketCounts": counts, "explicitBounds": LATENCY_BOUNDS, "attributes": attributes}]}}));
                metrics.push(json!({"name": "process.cpu.utilization", "unit": "1", "gauge": {"dataPoints": [number((0.25 * diurnal * effect.1.sqrt() * rng.random_range(0.8..1.2)).min(1.0))]}}));
            };
            for q in 1..=(HOUR / STEP) {
                let t = day_start + hour * HOUR + q * STEP;
                let window = windows[s].iter().find(|w| w.from < t && t <= w.to + STEP);
                let effect = match window {
                    Some(w) if w.canary_only_until.is_none_or(|until| t > until) => {
                        (w.error_factor, w.latency_factor)
                    }
                    _ => (1.0, 1.0),
                };
                series(None, t, STEP, 1.0, effect, rng, &mut metrics);
            }
            // Canary analysis windows: one-minute series for the canary and baseline tracks.
            for canary in &canaries[s] {
                for m in 1..=CANARY_MINUTES {
                    let t = canary.from + m * MINUTE;
                    if t <= day_start + hour * HOUR || t > day_start + (hour + 1) * HOUR {
                        continue;
                    }
                    series(
                        Some(("canary", &canary.deployment_id)),
                        t,
                        MINUTE,
                        0.1,
                        canary.effect,
                        rng,
                        &mut metrics,
                    );
                    series(
                        Some(("baseline", &canary.deployment_id)),
                        t,
                        MINUTE,
                        0.9,
                        (1.0, 1.0),
                        rng,
                        &mut metrics,
                    );
                }
            }
            points += metrics.len();
            push_otlp_line(&mut lines, "Metrics", &service.name, json!(metrics));
        }
    }
    w.write(
        &format!("otlp/metrics-{}.jsonl", Ts(day_start).date()),
        lines.as_bytes(),
    )?;
    Ok(points)
}

/// `windows` is indexed by service.
fn write_traces_day(
    w: &Writer,
    rng: &mut ChaCha8Rng,
    day_start: i64,
    services: &[Service],
    windows: &[Vec<Window>],
) -> Result<usize> {
    let mut lines = String::new();
    let mut spans_written = 0;
    for hour in 0..24 {
        let mut by_service: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
        for (s, _) in services.iter().enumerate() {
            for _ in 0..2 {
                let t = day_start + hour * HOUR + rng.random_range(0..HOUR);
                let mut trace_id = [0u8; 16];
                rng.fill_bytes(&mut trace_id);
                trace_span(
                    rng,
                    services,
                    windows,
                    s,
                    &hex(&trace_id),
                    None,
                    t,
                    0,
                    &mut by_service,
                );
            }
        }
        for (s, spans) in by_service {
            spans_written += spans.len();
            push_otlp_line(&mut lines, "Spans", &services[s].name, json!(spans));
        }
    }
    w.write(
        &format!("otlp/traces-{}.jsonl", Ts(day_start).date()),
        lines.as_bytes(),
    )?;
    Ok(spans_written)
}

/// One span of `service` and, recursively, its calls to dependencies; returns its end time.
#[allow(clippy::too_many_arguments)]
fn trace_span(
    rng: &mut ChaCha8Rng,
    services: &[Service],
    windows: &[Vec<Window>],
    s: usize,
    trace_id: &str,
    parent: Option<&str>,
    start: i64,
    depth: usize,
    out: &mut BTreeMap<usize, Vec<Value>>,
) -> i64 {
    let mut span_id = [0u8; 8];
    rng.fill_bytes(&mut span_id);
    let span_id = hex(&span_id);
    let window = windows[s].iter().find(|w| w.from < start && start <= w.to);
    let (error_factor, latency_factor) =
        window.map_or((1.0, 1.0), |w| (w.error_factor, w.latency_factor));
    let own =
        (services[s].latency_ms * latency_factor * (rng.random_range(-0.5f64..0.7)).exp() * 1000.0)
            as i64;
    let mut cursor = start + own / 3;
    if depth < 3 {
        for dependency in services[s].depends_on.clone() {
            cursor = trace_span(
                rng,
                services,
                windows,
                dependency,
                trace_id,
                Some(&span_id),
                cursor,
                depth + 1,
                out,
            ) + 200;
        }
    }
    let end = cursor + own * 2 / 3;
    let is_error = rng.random_bool((services[s].error_rate * error_factor * 4.0).min(0.9));
    let mut span = json!({
        "traceId": trace_id,
        "spanId": span_id,
        "name": if depth == 0 { "GET /api" } else { "rpc.call" },
        "kind": if depth == 0 { 2 } else { 3 },
        "startTimeUnixNano": (start * 1000).to_string(),
        "endTimeUnixNano": (end * 1000).to_string(),
        "attributes": [{"key": "http.route", "value": {"stringValue": "/api"}}],
        "status": if is_error { json!({"code": 2, "message": "upstream error"}) } else { json!({}) },
    });
    if let Some(parent) = parent {
        span["parentSpanId"] = json!(parent);
    }
    out.entry(s).or_default().push(span);
    end
}

/// Appends one OTLP JSON request (`resourceMetrics` or `resourceSpans`) for a service, as the
/// collector's file exporter writes it: one request per line.
fn push_otlp_line(lines: &mut String, signal: &str, service: &str, items: Value) {
    let items_key = signal.to_ascii_lowercase();
    let request = json!({
        format!("resource{signal}"): [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            format!("scope{signal}"): [{"scope": {"name": "maestro.generator", "version": "1"}, items_key: items}],
        }],
    });
    lines.push_str(&request.to_string());
    lines.push('\n');
}

fn write_catalog(w: &mut Writer, services: &[Service]) -> Result<()> {
    let mut yaml = String::new();
    for service in services {
        let _ = writeln!(
            yaml,
            "---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {}\nspec:\n  type: service\n  lifecycle: production\n  owner: team-{}",
            service.name,
            &service.name[..1]
        );
        if !service.depends_on.is_empty() {
            let _ = writeln!(yaml, "  dependsOn:");
            for d in &service.depends_on {
                let _ = writeln!(yaml, "    - component:default/{}", services[*d].name);
            }
        }
    }
    w.write("catalog-info.yaml", yaml.as_bytes())
}

/// The typical duration of a root span of service `s` in ms: its own latency plus its
/// dependencies' calls, which `trace_span` makes one after another down to depth 3.
fn typical_trace_ms(services: &[Service], s: usize, depth: usize) -> f64 {
    let calls: f64 = if depth < 3 {
        services[s]
            .depends_on
            .iter()
            .map(|d| typical_trace_ms(services, *d, depth + 1))
            .sum()
    } else {
        0.0
    };
    services[s].latency_ms + calls
}

/// Latency buckets of the `http.server.duration` histograms, in ms.
const LATENCY_BOUNDS: [f64; 10] = [
    10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0,
];

/// Three SLOs per service, set with headroom over the service's normal behaviour as a team
/// would set them, so that only bad deployments burn much budget: availability (errors over
/// requests, an error budget of at least 2.5 times the normal error rate), latency (requests
/// under a bucket bound at least 2.4 times the typical latency) and span latency (root server
/// spans, which include the calls to dependencies, under a bound at least 2.4 times their
/// typical duration). Windows and budgeting vary across services so that every kind
/// is exercised: rolling 28 and 30 days, calendar months and quarters, occurrences and
/// timeslices.
fn write_openslo(w: &mut Writer, services: &[Service]) -> Result<()> {
    for (i, service) in services.iter().enumerate() {
        let name = &service.name;
        let budget = [0.0025, 0.005, 0.01, 0.02]
            .into_iter()
            .find(|b| *b >= 2.5 * service.error_rate)
            .unwrap_or(0.05);
        let availability = 1.0 - budget;
        let bound_over = |typical: f64| {
            LATENCY_BOUNDS
                .into_iter()
                .find(|b| *b >= 2.4 * typical)
                .unwrap_or(LATENCY_BOUNDS[LATENCY_BOUNDS.len() - 1])
        };
        let threshold = bound_over(service.latency_ms);
        let span_threshold = bound_over(typical_trace_ms(services, i, 0));
        let availability_window = match i % 3 {
            0 => "    - duration: 28d\n      isRolling: true\n",
            1 => "    - duration: 30d\n      isRolling: true\n",
            _ => {
                "    - duration: 1M\n      isRolling: false\n      calendar:\n        startTime: 2020-01-01 00:00:00\n        timeZone: UTC\n"
            }
        };
        let (latency_budgeting, latency_window, latency_objective) = match i % 3 {
            0 => (
                "Occurrences",
                "    - duration: 7d\n      isRolling: true\n",
                format!(
                    "    - displayName: fast requests\n      op: lte\n      value: {threshold}\n      target: 0.95\n"
                ),
            ),
            1 => (
                "Timeslices",
                "    - duration: 28d\n      isRolling: true\n",
                format!(
                    "    - displayName: fast 15-minute slices\n      op: lte\n      value: {threshold}\n      target: 0.98\n      timeSliceTarget: 0.95\n      timeSliceWindow: 15m\n"
                ),
            ),
            _ => (
                "Occurrences",
                "    - duration: 1Q\n      isRolling: false\n      calendar:\n        startTime: 2020-01-01 00:00:00\n        timeZone: UTC\n",
                format!(
                    "    - displayName: fast requests\n      op: lte\n      value: {threshold}\n      target: 0.95\n"
                ),
            ),
        };
        let yaml = format!(
            "apiVersion: openslo/v1\nkind: SLO\nmetadata:\n  name: {name}-availability\n  displayName: {name} availability\nspec:\n  service: {name}\n  budgetingMethod: Occurrences\n  indicator:\n    metadata:\n      name: {name}-errors\n    spec:\n      ratioMetric:\n        counter: true\n        bad:\n          metricSource:\n            type: otlp\n            spec:\n              metric: http.server.errors\n        total:\n          metricSource:\n            type: otlp\n            spec:\n              metric: http.server.requests\n  timeWindow:\n{availability_window}  objectives:\n    - displayName: availability\n      target: {availability}\n\
---\napiVersion: openslo/v1\nkind: SLO\nmetadata:\n  name: {name}-latency\n  displayName: {name} latency\nspec:\n  service: {name}\n  budgetingMethod: {latency_budgeting}\n  indicator:\n    metadata:\n      name: {name}-latency\n    spec:\n      thresholdMetric:\n        metricSource:\n          type: otlp\n          spec:\n            metric: http.server.duration\n  timeWindow:\n{latency_window}  objectives:\n{latency_objective}\
---\napiVersion: openslo/v1\nkind: SLO\nmetadata:\n  name: {name}-span-latency\n  displayName: {name} latency seen in traces\nspec:\n  service: {name}\n  budgetingMethod: Occurrences\n  indicator:\n    metadata:\n      name: {name}-span-latency\n    spec:\n      thresholdMetric:\n        metricSource:\n          type: spans\n          spec: {{}}\n  timeWindow:\n    - duration: 28d\n      isRolling: true\n  objectives:\n    - displayName: fast root spans\n      op: lte\n      value: {span_threshold}\n      target: 0.9\n",
        );
        w.write(&format!("openslo/{name}.yaml"), yaml.as_bytes())?;
    }
    Ok(())
}

/// Writes one JSON object per line in time order. A quiet day writes no file: an
/// empty file is what a truncated export looks like, and ingest refuses it.
fn write_sorted_lines(w: &mut Writer, path: &str, mut events: Vec<(i64, Value)>) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    events.sort_by_key(|(at, _)| *at);
    let mut text = String::new();
    for (_, event) in events {
        text.push_str(&event.to_string());
        text.push('\n');
    }
    w.write(path, text.as_bytes())
}

/// A time of day weighted towards working hours (UTC), in microseconds.
fn working_time(rng: &mut ChaCha8Rng) -> i64 {
    let hour = if rng.random_bool(0.85) {
        rng.random_range(8..18)
    } else {
        rng.random_range(0..24)
    };
    hour * HOUR + rng.random_range(0..HOUR)
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> usize {
    match rand_distr::Poisson::new(lambda) {
        Ok(distribution) => distribution.sample(rng) as usize,
        // A zero (or degenerate) rate: nothing happens.
        Err(_) => 0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// Writes files under `sources/` and `truth/`, counting what it wrote.
struct Writer {
    root: PathBuf,
    files: AtomicUsize,
    bytes: AtomicU64,
}

impl Writer {
    fn new(root: &Path) -> Result<Writer> {
        for sub in ["sources", "truth"] {
            let dir = root.join(sub);
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(Writer {
            root: root.to_path_buf(),
            files: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    fn write(&self, relative: &str, bytes: &[u8]) -> Result<()> {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.put(&self.root.join("sources").join(relative), bytes)
    }

    fn write_truth(&self, relative: &str, bytes: &[u8]) -> Result<()> {
        self.put(&self.root.join("truth").join(relative), bytes)
    }

    fn put(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut files = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(root).unwrap().display().to_string(),
                    fs::read(&p).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn same_seed_gives_identical_files() {
        let options = GenerateOptions {
            days: 2,
            services: 3,
            ..Default::default()
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate(a.path(), &options).unwrap();
        generate(b.path(), &options).unwrap();
        assert_eq!(tree(a.path()), tree(b.path()));
        let other = tempfile::tempdir().unwrap();
        generate(other.path(), &GenerateOptions { seed: 7, ..options }).unwrap();
        assert_ne!(tree(a.path()), tree(other.path()));
    }

    #[test]
    fn a_broken_test_fails_in_every_run_until_it_is_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let options = GenerateOptions {
            days: 20,
            services: 3,
            ..Default::default()
        };
        generate(dir.path(), &options).unwrap();
        // Every test result of the history, read back with the JUnit reader.
        let context = crate::readers::ReportContext::default();
        let mut results = Vec::new();
        for (path, bytes) in tree(&dir.path().join("sources/junit")) {
            let chunk = crate::readers::Chunk::whole_file(&bytes, &path, None, &context);
            let mut records = crate::readers::Records::default();
            crate::readers::junit::read(&chunk, &mut records);
            results.extend(records.test_results.rows());
        }
        let breakages = fs::read_to_string(dir.path().join("truth/test_breakages.csv")).unwrap();
        // Breakages checked, and of those, ones that outlasted the run in which they broke.
        let (mut checked, mut lasting) = (0, 0);
        for line in breakages.lines().skip(1) {
            let [_, test_id, _, broken_at, fixed_at] = line.split(',').collect::<Vec<_>>()[..]
            else {
                panic!("a breakage has five columns: {line}");
            };
            let (broken_at, fixed_at) =
                (Ts::parse(broken_at).unwrap(), Ts::parse(fixed_at).unwrap());
            let runs: Vec<_> = results
                .iter()
                .filter(|r| {
                    r.test_id == test_id && r.started_at >= broken_at && r.started_at < fixed_at
                })
                .collect();
            assert!(!runs.is_empty(), "{test_id} broke in a run of its own");
            assert!(
                runs.iter().all(|r| &*r.status == "failed"),
                "{test_id}: {runs:?}"
            );
            checked += 1;
            lasting += usize::from(runs.len() > 1);
        }
        assert!(
            lasting > 0,
            "of {checked} breakages, none outlasted its first run"
        );
    }
}
