//! The `maestro` command as a user runs it: demo, generate, ingest, sql, exit codes, and the
//! lake read by other tools.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output};

fn maestro(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maestro"))
        .args(args)
        .output()
        .expect("maestro runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn generate(dir: &Path) {
    let out = maestro(&[
        "generate",
        "--out",
        dir.to_str().unwrap(),
        "--days",
        "2",
        "--services",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn demo_generates_ingests_and_summarises_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = maestro(&[
        "demo",
        "--dir",
        demo.to_str().unwrap(),
        "--days",
        "20",
        "--services",
        "4",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("rejected 0"), "{text}");
    // Logistic regression is the default risk model.
    assert!(
        text.contains("trained deployment-0001 (logistic over"),
        "{text}"
    );
    assert!(text.contains("baseline: JIT logistic"), "{text}");
    assert!(text.contains("oracle"), "{text}");
    // Test selection: trained, replayed against the baselines, and a verdict per change.
    assert!(text.contains("trained tests-0001"), "{text}");
    assert!(text.contains("test_selection: "), "{text}");
    let chart = std::fs::read_to_string(demo.join("lake/reports/test_selection_curve.svg"))
        .expect("the demo draws the test-selection curve");
    assert!(
        chart.starts_with("<svg") && chart.contains("failure_rate (time budget)"),
        "{chart}"
    );
    // The registry lists the model as champion.
    let lake = demo.join("lake");
    let listed = maestro(&["models", "list", "--lake", lake.to_str().unwrap()]);
    let listed = stdout(&listed);
    let line = listed
        .lines()
        .find(|l| l.starts_with("deployment-0001"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.trim_end().ends_with('*'), "{listed}");
    // The test-selection replay runs on the same lake and keeps its rankings.
    let replayed = maestro(&["eval", "tests", "--lake", lake.to_str().unwrap()]);
    let replay_text = stdout(&replayed);
    assert_eq!(replayed.status.code(), Some(0), "{replay_text}");
    assert!(replay_text.contains("recently_failed"), "{replay_text}");
    let kept = maestro(&[
        "sql",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "csv",
        "select count(distinct policy) as policies from test_selection_replay",
    ]);
    assert_eq!(stdout(&kept).trim(), "policies\n5");
    let bad_budget = maestro(&[
        "eval",
        "tests",
        "--lake",
        lake.to_str().unwrap(),
        "--budget",
        "lots",
    ]);
    assert_eq!(bad_budget.status.code(), Some(2));
    for table in [
        "changes",
        "deployments",
        "incidents",
        "test_results",
        "spans",
        "metric_points",
        "audit_events",
        "slos",
        "service_edges",
        "risk_evaluation",
        "risk_verdicts",
        "canary_verdicts",
        "rollback_verdicts",
        "test_selection_replay",
        "test_selection_curve",
        "test_health",
        "test_selection",
        "_ingested",
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{table} ")))
            .unwrap_or_else(|| panic!("{table} missing in {text}"));
        let rows: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(rows > 0, "{table} is empty: {line}");
    }
    assert!(text.contains("canary analyses:"), "{text}");
    assert!(text.contains("rollback judge:"), "{text}");
    // The reports: tables in the lake, the executive report, and an intact audit trail.
    // They are published with the models and verdicts, as the nightly run does.
    let report = demo.join("lake/published/latest/reports/executive");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("Release engineering report") && html.contains("<svg"));
    assert!(
        text.contains(&format!(
            "executive report: {}",
            report.join("report.html").display()
        )),
        "{text}"
    );
    assert!(report.join("prometheus/slo-rules.yaml").exists());
    assert!(text.contains("publish       succeeded"), "{text}");
    let counted = maestro(&[
        "sql",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "csv",
        "select (select count(*) from dora_metrics) > 0 and (select count(*) from slo_status) > 0 \
         and (select count(distinct control_id) from compliance_results) >= 15 as ok",
    ]);
    assert_eq!(stdout(&counted).trim(), "ok\ntrue", "{}", stdout(&counted));
    let verified = maestro(&["audit", "verify", "--lake", lake.to_str().unwrap()]);
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
    assert!(stdout(&verified).contains("intact"));
    check_lake_reads_elsewhere(&demo.join("lake"));
    check_notebooks(&lake);
    check_risk_gate(&demo);
    check_select_tests(&lake);
}

/// `maestro train tests` stores a model that `maestro select-tests` serves in every format.
fn check_select_tests(lake: &Path) {
    let lake_arg = lake.to_str().unwrap();
    let trained = maestro(&["train", "tests", "--lake", lake_arg]);
    let text = stdout(&trained);
    assert_eq!(trained.status.code(), Some(0), "{text}");
    // The demo trained tests-0001 on the same lake: the same seed ranks the held-back runs
    // exactly as well, so the new model is promoted.
    assert!(text.contains("trained tests-0002"), "{text}");
    assert!(text.contains("promoted to champion"), "{text}");
    let query = maestro(&[
        "sql",
        "--lake",
        lake_arg,
        "--format",
        "csv",
        "select service, files[1] as file from changes where cardinality(files) > 0 order by change_id limit 1",
    ]);
    let query = stdout(&query);
    let row = query.lines().nth(1).unwrap().to_string();
    let (service, file) = row.split_once(',').unwrap();
    let dir = lake.parent().unwrap();
    let changed = dir.join("changed.txt");
    std::fs::write(&changed, format!("{file}\n")).unwrap();
    let select = |extra: &[&str]| {
        let mut args = vec![
            "select-tests",
            "--lake",
            lake_arg,
            "--service",
            service,
            "--changed-files",
            changed.to_str().unwrap(),
            "--at",
            "2026-01-01T00:00:00Z",
        ];
        args.extend_from_slice(extra);
        maestro(&args)
    };
    let json = select(&["--format", "json"]);
    assert_eq!(
        json.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let tests = json["tests"].as_array().unwrap();
    let selected = json["selected_tests"].as_u64().unwrap() as usize;
    assert!(selected > 0 && selected <= tests.len(), "{json}");
    assert!(tests.iter().all(|t| t["reason"].is_string()), "{json}");
    let nextest = stdout(&select(&["--format", "nextest"]));
    assert_eq!(nextest.matches("test(=").count(), selected, "{nextest}");
    // Two shards hold the selection between them.
    let shard = |k: &str| {
        let text = stdout(&select(&[
            "--format", "nextest", "--shards", "2", "--shard", k,
        ]));
        text.matches("test(=").count()
    };
    assert_eq!(shard("1") + shard("2"), selected);
    let maven = stdout(&select(&["--format", "maven", "--budget", "100%"]));
    assert!(maven.contains('#'), "{maven}");
    let unknown = maestro(&[
        "select-tests",
        "--lake",
        lake_arg,
        "--service",
        "no-such-service",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no suite known"));
    // Every change of the lake's dates gets a verdict in test_selection.
    let batch = maestro(&["select-tests", "--lake", lake_arg, "--from", "2000-01-01"]);
    assert_eq!(
        batch.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&batch.stderr)
    );
    let counts = maestro(&[
        "sql",
        "--lake",
        lake_arg,
        "--format",
        "csv",
        "select (select count(*) from test_selection) = (select count(*) from changes) as every_change, \
         (select bool_and(selected_tests > 0 and selected_tests <= suite_tests) from test_selection) as sane",
    ]);
    assert_eq!(stdout(&counts).trim(), "every_change,sane\ntrue,true");
}

/// `maestro risk --deployment` scores a pending deployment as the lake's scoring did, exits 1
/// on hold, and refuses what is not a deployment event.
fn check_risk_gate(demo: &Path) {
    let lake = demo.join("lake");
    let lake = lake.to_str().unwrap();
    // A copy of a deployment the lake already scored, under a new id: the same history before
    // it, so the same probability.
    let event = std::fs::read_dir(demo.join("sources/cdevents"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .flat_map(|text| text.lines().map(str::to_string).collect::<Vec<_>>())
        .find(|line| line.contains("service.deployed"))
        .unwrap();
    let mut event: serde_json::Value = serde_json::from_str(&event).unwrap();
    let original = event["customData"]["deployment_id"]
        .as_str()
        .unwrap()
        .to_string();
    event["customData"]["deployment_id"] = "pending-1".into();
    let pending = demo.join("pending.json");
    std::fs::write(&pending, event.to_string()).unwrap();
    let pending = pending.to_str().unwrap();

    let scored = maestro(&[
        "risk",
        "--lake",
        lake,
        "--deployment",
        pending,
        "--format",
        "json",
    ]);
    let verdict: serde_json::Value = serde_json::from_slice(&scored.stdout).unwrap();
    let expected = stdout(&maestro(&[
        "sql",
        "--lake",
        lake,
        "--format",
        "json",
        &format!(
            "select probability, decision from risk_verdicts where deployment_id = '{original}'"
        ),
    ]));
    let expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
    assert_eq!(
        verdict["probability"], expected[0]["probability"],
        "{verdict}"
    );
    assert_eq!(verdict["decision"], expected[0]["decision"]);
    assert_eq!(verdict["top_contributions"].as_array().unwrap().len(), 5);
    assert_eq!(verdict["changes_not_in_lake"], 0);
    let code = if verdict["decision"] == "hold" { 1 } else { 0 };
    assert_eq!(scored.status.code(), Some(code));

    // A change the lake has never seen is said, not silently left out.
    let mut unknown = event.clone();
    unknown["customData"]["change_ids"]
        .as_array_mut()
        .unwrap()
        .push("not-ingested-yet".into());
    let unknown_path = demo.join("pending-unknown.json");
    std::fs::write(&unknown_path, unknown.to_string()).unwrap();
    let noted = maestro(&[
        "risk",
        "--lake",
        lake,
        "--deployment",
        unknown_path.to_str().unwrap(),
    ]);
    assert!(stdout(&noted).contains("1 of its"), "{}", stdout(&noted));

    // Rescoring one date replaces that date's verdicts: same count, nothing added.
    let count = || {
        let out = maestro(&[
            "sql",
            "--lake",
            lake,
            "--format",
            "csv",
            "select count(*) from risk_verdicts",
        ]);
        stdout(&out).lines().nth(1).unwrap().to_string()
    };
    let before = count();
    let date = verdict["started_at"].as_str().unwrap()[..10].to_string();
    let rescored = maestro(&["risk", "--lake", lake, "--date", &date]);
    assert!(
        stdout(&rescored).contains(&format!("deployments of {date} with deployment-0001")),
        "{}",
        stdout(&rescored)
    );
    assert_eq!(count(), before);

    // Thresholds of zero hold everything: the gate fails with exit code 1.
    let strict = demo.join("hold-all.toml");
    std::fs::write(&strict, "[risk]\ncanary_above = 0.0\nhold_above = 0.0\n").unwrap();
    let held = maestro(&[
        "--config",
        strict.to_str().unwrap(),
        "risk",
        "--lake",
        lake,
        "--deployment",
        pending,
    ]);
    assert_eq!(held.status.code(), Some(1), "{}", stdout(&held));
    assert!(stdout(&held).contains(": hold"), "{}", stdout(&held));

    // A file that is not one deployment event is an error, exit code 2.
    let not_a_deployment = maestro(&[
        "risk",
        "--lake",
        lake,
        "--deployment",
        demo.join("sources/openslo")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(not_a_deployment.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&not_a_deployment.stderr)
            .contains("not a CDEvents deployment event"),
        "{}",
        String::from_utf8_lossy(&not_a_deployment.stderr)
    );
}

/// pyarrow, polars and DuckDB read the lake unchanged and agree with Maestro's counts.
/// The notebooks run top to bottom on the demo's lake and what it published.
fn check_notebooks(lake: &Path) {
    let probe = Command::new("python3")
        .args(["-c", "import polars, nbclient, nbformat, ipykernel"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("MAESTRO_REQUIRE_PYTHON").is_none(),
            "python3 with polars, nbclient, nbformat and ipykernel is required (pip install -r notebooks/requirements.txt)"
        );
        eprintln!("skipping the notebooks: pip install -r notebooks/requirements.txt to run them");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run_notebooks.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(lake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("models.ipynb: ") && text.contains("runs_and_data.ipynb: "),
        "{text}"
    );
}

fn check_lake_reads_elsewhere(lake: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_lake.py");
    let probe = Command::new("python3")
        .args(["-c", "import pyarrow, polars, duckdb"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("MAESTRO_REQUIRE_PYTHON").is_none(),
            "python3 with pyarrow, polars and duckdb is required (pip install -r .ci/requirements.txt)"
        );
        eprintln!(
            "skipping the pyarrow/polars/DuckDB check: pip install -r .ci/requirements.txt to run it"
        );
        return;
    }
    let out = Command::new("python3")
        .arg(script)
        .arg(lake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables = counts.as_object().unwrap();
    // The nine raw tables and the eight the demo derives.
    assert_eq!(tables.len(), 17, "{counts}");
    for (table, readers) in tables {
        let sql = maestro(&[
            "sql",
            "--lake",
            lake.to_str().unwrap(),
            "--format",
            "csv",
            &format!("select count(*) as n from {table}"),
        ]);
        let ours: u64 = stdout(&sql).lines().nth(1).unwrap().parse().unwrap();
        for reader in ["pyarrow", "polars", "duckdb"] {
            assert_eq!(readers[reader].as_u64(), Some(ours), "{table} via {reader}");
        }
    }
}

#[test]
fn ingest_twice_reports_duplicates_and_sql_sees_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let lake = dir.path().join("lake");
    let sources = dir.path().join("sources");
    let (lake_s, sources_s) = (lake.to_str().unwrap(), sources.to_str().unwrap());
    let first = maestro(&["ingest", "--lake", lake_s, sources_s]);
    assert_eq!(first.status.code(), Some(0));
    let count = || {
        let out = maestro(&[
            "sql",
            "--lake",
            lake_s,
            "--format",
            "json",
            "select count(*) as n from deployments",
        ]);
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        value[0]["n"].as_u64().unwrap()
    };
    let before = count();
    let second = maestro(&["ingest", "--lake", lake_s, sources_s]);
    assert!(
        stdout(&second).contains("ingested 0 files"),
        "{}",
        stdout(&second)
    );
    assert_eq!(count(), before);
}

#[test]
fn strict_ingest_exits_1_on_rejections_and_keeps_the_good_records() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"context":{"id":"e1","type":"dev.cdevents.incident.detected.0.2.0","timestamp":"2024-01-02T03:04:05Z"},"subject":{"id":"i1","content":{"service":{"id":"api"}}}}"#,
            "\n",
            r#"{"context":{"id":"e2","type":"dev.cdevents.incident.detected.0.2.0","timestamp":17},"subject":{"id":"i2","content":{"service":{"id":"api"}}}}"#,
            "\n"
        ),
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let out = maestro(&[
        "ingest",
        "--strict",
        "--lake",
        lake.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("read 2 = accepted 1 + rejected 1"),
        "{}",
        stdout(&out)
    );
    let rejected = maestro(&[
        "sql",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "csv",
        "select line, reason from _rejected",
    ]);
    assert!(
        stdout(&rejected).contains("2,missing context.timestamp"),
        "{}",
        stdout(&rejected)
    );
}

#[test]
fn sql_refuses_writes_and_reports_errors_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake_s = lake.to_str().unwrap();
    let missing = maestro(&["sql", "--lake", lake_s, "select 1"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no lake at"));
    let catalog = dir.path().join("catalog-info.yaml");
    std::fs::write(&catalog, "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: api\nspec:\n  dependsOn: [component:default/db]\n").unwrap();
    assert_eq!(
        maestro(&["ingest", "--lake", lake_s, catalog.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    for statement in [
        "create table x as select 1",
        "insert into changes select * from changes",
        "copy (select 1) to '/tmp/x.csv'",
        "drop table changes",
    ] {
        let out = maestro(&["sql", "--lake", lake_s, statement]);
        assert_eq!(out.status.code(), Some(2), "{statement}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not supported")
                || String::from_utf8_lossy(&out.stderr).contains("not allowed"),
            "{statement}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ok = maestro(&["sql", "--lake", lake_s, "select count(*) from changes"]);
    assert_eq!(ok.status.code(), Some(0));
    // Tables of different schemas joined without keys: each edge with each edge, and no changes.
    let crossed = maestro(&[
        "sql",
        "--lake",
        lake_s,
        "--format",
        "csv",
        "select (select count(*) from service_edges a, service_edges b) pairs, \
         (select count(*) from service_edges, changes) with_changes",
    ]);
    assert_eq!(
        stdout(&crossed),
        "pairs,with_changes\n1,0\n",
        "{}",
        String::from_utf8_lossy(&crossed.stderr)
    );
    // No rows still prints the columns.
    let none = maestro(&[
        "sql",
        "--lake",
        lake_s,
        "--format",
        "csv",
        "select from_service, to_service from service_edges where false",
    ]);
    assert_eq!(stdout(&none), "from_service,to_service\n");
    // A query may open with a comment, as the report files do; flags still come first or last.
    let commented = maestro(&[
        "sql",
        "--lake",
        lake_s,
        "-- the declared edges\nselect count(*) from service_edges",
        "--format",
        "csv",
    ]);
    assert_eq!(
        stdout(&commented),
        "count(*)\n1\n",
        "{}",
        String::from_utf8_lossy(&commented.stderr)
    );
    let bad = maestro(&["ingest", "--lake", lake_s, "/nonexistent/path"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no such file"));
}

#[test]
fn a_killed_ingest_leaves_no_partial_partition() {
    let dir = tempfile::tempdir().unwrap();
    let out = maestro(&[
        "generate",
        "--out",
        dir.path().to_str().unwrap(),
        "--days",
        "6",
        "--services",
        "6",
    ]);
    assert!(out.status.success());
    let lake = dir.path().join("lake");
    let sources = dir.path().join("sources");
    for delay_ms in [50u64, 200, 600] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_maestro"))
            .args([
                "ingest",
                "--lake",
                lake.to_str().unwrap(),
                sources.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever the kill interrupted, the next run recovers, and the lake ends complete.
        let out = maestro(&[
            "ingest",
            "--lake",
            lake.to_str().unwrap(),
            sources.to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let counts = maestro(&[
            "sql",
            "--lake",
            lake.to_str().unwrap(),
            "--format",
            "csv",
            "select (select count(*) from _ingested) as files, (select count(distinct source_sha256) from _ingested) as distinct_files, (select sum(records_read) from _ingested) as read, (select count(*) from test_results) + (select count(*) from metric_points) as rows",
        ]);
        let line = stdout(&counts).lines().nth(1).unwrap().to_string();
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], fields[1], "a file was recorded twice: {line}");
        assert!(
            !std::fs::read_dir(lake.join("_staging"))
                .unwrap()
                .any(|_| true),
            "staging left behind"
        );
        // Start again from an empty lake for the next delay.
        std::fs::remove_dir_all(&lake).unwrap();
    }
}

/// Part files and models of a lake with their bytes' sha256, for comparing two lakes.
fn lake_contents(lake: &Path) -> Vec<(String, String)> {
    use sha2::{Digest, Sha256};
    let mut files = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = ["raw", "derived", "reports", "models"]
        .iter()
        .map(|d| lake.join(d))
        .collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let digest = Sha256::digest(std::fs::read(&path).unwrap());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                let name = path.strip_prefix(lake).unwrap().display().to_string();
                files.push((name, hex));
            }
        }
    }
    files.sort();
    files
}

/// The line of `job` in a run's table of jobs.
fn job_line(text: &str, job: &str) -> String {
    text.lines()
        .find(|l| l.trim_start().starts_with(&format!("{job} ")) && l.starts_with("  "))
        .unwrap_or_else(|| panic!("no line for {job} in:\n{text}"))
        .to_string()
}

#[test]
fn nightly_run_is_incremental_locked_published_and_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let gen_dir = dir.path().join("gen");
    let out = maestro(&[
        "generate",
        "--out",
        gen_dir.to_str().unwrap(),
        "--days",
        "20",
        "--services",
        "4",
    ]);
    assert!(out.status.success());
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    let config = dir.path().join("maestro.toml");
    std::fs::write(&config, "[run]\nlanding = [\"gen/sources\", \"landing\"]\n").unwrap();
    let run = |lake: &Path, extra: &[&str]| {
        let mut args = vec![
            "--config",
            config.to_str().unwrap(),
            "run",
            "--lake",
            lake.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        maestro(&args)
    };

    // The DAG is derived from what each job reads and writes.
    let graph = stdout(&maestro(&["graph", "--format", "mermaid"]));
    assert!(
        graph.contains("train_risk -->|models/risk| score"),
        "{graph}"
    );
    assert!(graph.contains("reports -->|reports| publish"), "{graph}");
    let dot = stdout(&maestro(&["graph"]));
    assert!(
        dot.starts_with("digraph maestro {") && dot.contains("ingest -> judge"),
        "{dot}"
    );

    // The first run does everything and publishes it.
    let lake = dir.path().join("lake");
    let first = run(&lake, &[]);
    let text = stdout(&first);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for job in [
        "ingest",
        "audit_digest",
        "train_risk",
        "train_tests",
        "score",
        "judge",
        "select_tests",
        "reports",
        "publish",
    ] {
        assert!(job_line(&text, job).contains("succeeded"), "{job}: {text}");
    }
    let latest = lake.join("published/latest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(latest.join("manifest.json")).unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f["path"] == "reports/executive/report.html"),
        "{manifest}"
    );
    assert!(files.iter().any(|f| {
        f["path"]
            .as_str()
            .unwrap()
            .starts_with("verdicts/risk_verdicts/")
    }));
    assert_eq!(
        manifest["models"]["risk/deployment"], "deployment-0001",
        "{manifest}"
    );
    for file in files {
        use sha2::{Digest, Sha256};
        let bytes = std::fs::read(latest.join(file["path"].as_str().unwrap())).unwrap();
        let hex: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(file["sha256"], hex.as_str(), "{}", file["path"]);
    }
    // Published models serve: select-tests and risk read latest.
    assert!(latest.join("models/tests/champions.json").exists());

    // Unchanged inputs: every job is skipped, nothing is republished.
    let again = stdout(&run(&lake, &[]));
    for job in [
        "ingest",
        "train_risk",
        "score",
        "select_tests",
        "reports",
        "publish",
    ] {
        assert!(job_line(&again, job).contains("skipped"), "{job}: {again}");
    }

    // A late JUnit report for an old date reruns test selection from that date on, and
    // nothing that does not read test results.
    let mut reports: Vec<_> = std::fs::read_dir(gen_dir.join("sources/junit/payments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    reports.sort();
    let late = std::fs::read_to_string(&reports[reports.len() / 2]).unwrap();
    let run_id = late
        .split("maestro.run_id\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let late_date = late.split("maestro.started_at\" value=\"").nth(1).unwrap()[..10].to_string();
    std::fs::write(landing.join("late.xml"), late.replace(run_id, "late-run-1")).unwrap();
    let dry = run(&lake, &["--dry-run"]);
    assert!(
        job_line(&stdout(&dry), "ingest").contains("would run"),
        "{}",
        stdout(&dry)
    );
    let late_run = stdout(&run(&lake, &[]));
    assert!(
        job_line(&late_run, "ingest").contains("succeeded"),
        "{late_run}"
    );
    let selected = job_line(&late_run, "select_tests");
    assert!(
        selected.contains("succeeded") && selected.contains(&format!("({late_date}..")),
        "{late_run}"
    );
    assert!(
        job_line(&late_run, "score").contains("skipped"),
        "{late_run}"
    );
    assert!(
        job_line(&late_run, "judge").contains("skipped"),
        "{late_run}"
    );
    assert!(
        job_line(&late_run, "train_tests").contains("skipped"),
        "{late_run}"
    );
    assert!(
        job_line(&late_run, "publish").contains("succeeded"),
        "{late_run}"
    );
    std::fs::remove_file(landing.join("late.xml")).unwrap();

    // Inputs grown past `retrain_growth` retrain a model before it is due by age.
    let eager = dir.path().join("eager.toml");
    std::fs::write(
        &eager,
        "[run]\nlanding = [\"gen/sources\", \"landing\"]\nretrain_growth = 0.00001\n",
    )
    .unwrap();
    std::fs::write(
        landing.join("late2.xml"),
        late.replace(run_id, "late-run-2"),
    )
    .unwrap();
    let grown = stdout(&maestro(&[
        "--config",
        eager.to_str().unwrap(),
        "run",
        "--lake",
        lake.to_str().unwrap(),
    ]));
    assert!(
        job_line(&grown, "train_tests").contains("succeeded"),
        "{grown}"
    );
    assert!(
        job_line(&grown, "train_risk").contains("skipped"),
        "{grown}"
    );
    std::fs::remove_file(landing.join("late2.xml")).unwrap();

    // --select runs only the jobs named, whatever their inputs; an unknown job is an error.
    let selected = stdout(&run(&lake, &["--select", "reports"]));
    assert!(
        job_line(&selected, "reports").contains("succeeded"),
        "{selected}"
    );
    assert!(!selected.contains("  score "), "{selected}");
    assert_eq!(run(&lake, &["--select", "nope"]).status.code(), Some(2));

    // Status: healthy now, stale three days later.
    let status = maestro(&["status", "--lake", lake.to_str().unwrap()]);
    assert_eq!(status.status.code(), Some(0), "{}", stdout(&status));
    let later = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let stale = maestro(&["status", "--lake", lake.to_str().unwrap(), "--at", &later]);
    assert_eq!(stale.status.code(), Some(1), "{}", stdout(&stale));
    assert!(stdout(&stale).contains("stale"), "{}", stdout(&stale));

    // One run at a time: while something holds the lock, a run exits 2 naming the holder.
    let lock_file = std::fs::OpenOptions::new()
        .write(true)
        .open(lake.join("_lock"))
        .unwrap();
    lock_file.lock().unwrap();
    std::fs::write(lake.join("_lock"), "pid 4242 on ci, run run-held").unwrap();
    let refused = run(&lake, &[]);
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("pid 4242") && message.contains("run-held"),
        "{message}"
    );
    drop(lock_file);

    // A run killed anywhere is finished by the next, with the same bytes as a run never
    // killed (whose lake is `lake` without the late file: compare with a fresh reference).
    let reference = dir.path().join("reference");
    assert!(run(&reference, &[]).status.success());
    let killed = dir.path().join("killed");
    for delay_ms in [700u64, 2500, 6000] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_maestro"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "run",
                "--lake",
                killed.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let resumed = run(&killed, &[]);
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(lake_contents(&killed), lake_contents(&reference));

    // CI asks the published models: with the lake's registry gone, select-tests still answers.
    std::fs::remove_dir_all(lake.join("models/tests")).unwrap();
    let served = maestro(&[
        "select-tests",
        "--lake",
        lake.to_str().unwrap(),
        "--service",
        "payments",
    ]);
    assert_eq!(
        served.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&served.stderr)
    );
}

/// The maestro command lines of the scheduling examples, as argument lists.
fn scheduled_commands() -> Vec<(String, Vec<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scheduling");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let words = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .take_while(|w| !matches!(*w, "2>&1" | "|" | ">/dev/null" | "||"))
            .map(str::to_string)
            .collect()
    };
    let mut commands = Vec::new();
    for line in read("crontab").lines().filter(|l| !l.starts_with('#')) {
        if let Some((_, rest)) = line.split_once("&& maestro ") {
            commands.push(("crontab".to_string(), words(rest)));
        }
    }
    let service = read("maestro-nightly.service");
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/maestro "))
        .unwrap();
    commands.push(("systemd".to_string(), words(exec)));
    let cronjob = read("cronjob.yaml");
    let args = cronjob
        .lines()
        .find_map(|l| l.trim().strip_prefix("args: "))
        .unwrap();
    let args: Vec<String> = serde_json::from_str(args).unwrap();
    commands.push(("kubernetes".to_string(), args));
    let airflow = read("airflow_maestro.py");
    for command in airflow.split("bash_command=f\"maestro ").skip(1) {
        let command = command
            .split('"')
            .next()
            .unwrap()
            .replace("{LAKE}", "/srv/maestro/lake");
        commands.push(("airflow".to_string(), words(&command)));
    }
    commands
}

#[test]
fn scheduling_examples_run_maestro_as_its_cli_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let config = dir.path().join("maestro.toml");
    std::fs::write(&config, "[run]\nlanding = [\"landing\"]\n").unwrap();
    assert!(
        maestro(&["run", "--lake", lake.to_str().unwrap()])
            .status
            .success()
    );
    let commands = scheduled_commands();
    assert_eq!(
        commands.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        [
            "crontab",
            "crontab",
            "systemd",
            "kubernetes",
            "airflow",
            "airflow"
        ]
    );
    for (scheduler, args) in commands {
        let mut args: Vec<String> = args
            .into_iter()
            .map(|a| match a.as_str() {
                "/srv/maestro/lake" => lake.display().to_string(),
                "/etc/maestro/maestro.toml" => config.display().to_string(),
                _ => a,
            })
            .collect();
        if args.iter().any(|a| a == "run") {
            args.push("--dry-run".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = Command::new(env!("CARGO_BIN_EXE_maestro"))
            .args(&refs)
            .env("MAESTRO_LAKE", &lake)
            .output()
            .unwrap();
        // 0 or 1 (status on a lake that has not run every job) are answers; 2 is a usage error.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{scheduler}: maestro {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if args.iter().any(|a| a == "json") {
            // Log lines on stderr are JSON objects, for log collectors.
            for line in String::from_utf8_lossy(&out.stderr).lines() {
                assert!(
                    serde_json::from_str::<serde_json::Value>(line).is_ok(),
                    "{scheduler}: {line}"
                );
            }
        }
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scheduling");
    // The Airflow DAG is valid Python (Airflow itself is not installed here).
    let python = Command::new("python3")
        .args(["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())"])
        .arg(examples.join("airflow_maestro.py"))
        .output();
    if let Ok(out) = python {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("python3 not found: the Airflow DAG's syntax is not checked");
    }
}

#[test]
fn plan_blast_radius_stops_at_its_cap_along_a_long_chain() {
    // s000 <- s001 <- ... <- s119: service i has 119 - i dependents.
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake_arg = lake.to_str().unwrap();
    let names: Vec<String> = (0..120).map(|i| format!("s{i:03}")).collect();
    let chain: Vec<(&str, Vec<&str>)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let depends_on = if i == 0 {
                vec![]
            } else {
                vec![names[i - 1].as_str()]
            };
            (name.as_str(), depends_on)
        })
        .collect();
    let components: Vec<(&str, &[&str])> = chain.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    let file = dir.path().join("catalog-info.yaml");
    std::fs::write(&file, catalog(&components)).unwrap();
    let plan = ingest_and_plan(lake_arg, &file);
    let service = |name: &str| planned(&plan, name);
    // Below the cap the count is exact; from it on, the cap is reported and flagged.
    assert_eq!(service("s119")["blast_radius"], 0);
    assert_eq!(service("s020")["blast_radius"], 99);
    assert_eq!(service("s020")["blast_radius_is_capped"], false);
    for capped in ["s019", "s018", "s000"] {
        assert_eq!(service(capped)["blast_radius"], 100, "{capped}");
        assert_eq!(service(capped)["blast_radius_is_capped"], true, "{capped}");
    }
    assert_eq!(service("s000")["wave"], 1);
    assert_eq!(service("s119")["wave"], 120);
    assert_eq!(plan["critical_path"].as_array().unwrap().len(), 120);
    let text = stdout(&maestro(&[
        "plan",
        "--lake",
        lake_arg,
        "--services",
        "s000,s119",
    ]));
    // Two services with no edge between them in the plan: one wave; s000 still counts every
    // service of the graph that depends on it.
    assert!(text.contains("2 services in 1 waves"), "{text}");
    assert!(text.contains(">=100"), "{text}");
}

/// Ingests a catalog into the lake and plans every service, as JSON.
fn ingest_and_plan(lake: &str, catalog_file: &Path) -> serde_json::Value {
    let out = maestro(&["ingest", "--lake", lake, catalog_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    let out = maestro(&["plan", "--lake", lake, "--all", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One service's entry in a JSON plan.
fn planned(plan: &serde_json::Value, name: &str) -> serde_json::Value {
    plan["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("{name} missing: {plan}"))
        .clone()
}

/// A Backstage catalog of components, each with the components it depends on.
fn catalog(components: &[(&str, &[&str])]) -> String {
    components
        .iter()
        .map(|(name, depends_on)| {
            let deps: Vec<String> = depends_on
                .iter()
                .map(|d| format!("    - component:default/{d}\n"))
                .collect();
            format!(
                "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: service\n  owner: team-a\n  lifecycle: production\n  dependsOn:\n{}",
                deps.concat()
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn plan_orders_waves_by_dependencies_and_names_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake_arg = lake.to_str().unwrap();
    // web calls api and auth; api calls db and auth; auth calls db; batch calls db.
    let file = dir.path().join("catalog-info.yaml");
    std::fs::write(
        &file,
        catalog(&[
            ("web", &["api", "auth"]),
            ("api", &["db", "auth"]),
            ("auth", &["db"]),
            ("batch", &["db"]),
            ("db", &[]),
        ]),
    )
    .unwrap();
    let plan = ingest_and_plan(lake_arg, &file);
    let wave = |service: &str| planned(&plan, service);
    assert_eq!(wave("db")["wave"], 1);
    assert_eq!(wave("auth")["wave"], 2);
    assert_eq!(wave("batch")["wave"], 2);
    assert_eq!(wave("api")["wave"], 3);
    assert_eq!(wave("web")["wave"], 4);
    // Everything depends on db, directly or not; nothing depends on web.
    assert_eq!(wave("db")["blast_radius"], 4);
    assert_eq!(wave("auth")["blast_radius"], 2);
    assert_eq!(wave("web")["blast_radius"], 0);
    assert_eq!(
        plan["critical_path"],
        serde_json::json!(["db", "auth", "api", "web"]),
        "{plan}"
    );
    // No history and no risk verdict: an unknown service goes out as the most careful canary.
    assert_eq!(wave("db")["strategy"], "canary");
    assert_eq!(
        wave("db")["traffic_steps"],
        serde_json::json!([1.0, 5.0, 25.0, 50.0, 100.0])
    );
    assert_eq!(wave("db")["has_history"], false);

    // A parallelism limit of one makes a wave per service, in dependency order.
    let out = maestro(&[
        "plan",
        "--lake",
        lake_arg,
        "--services",
        "batch,auth,db",
        "--parallel",
        "1",
    ]);
    let text = stdout(&out);
    assert!(text.contains("3 services in 3 waves"), "{text}");
    let order: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(1)
                .filter(|_| l.trim_start().starts_with(char::is_numeric))
        })
        .collect();
    assert_eq!(order, ["db", "auth", "batch"], "{text}");
    let dot = stdout(&maestro(&[
        "plan", "--lake", lake_arg, "--all", "--format", "dot",
    ]));
    assert!(
        dot.contains("\"db\" -> \"auth\";") && dot.contains("cluster_wave_4"),
        "{dot}"
    );
    let mermaid = stdout(&maestro(&[
        "plan", "--lake", lake_arg, "--all", "--format", "mermaid",
    ]));
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("subgraph wave4"),
        "{mermaid}"
    );
    // Every plan is kept in rollout_plans under its id; the same plan again is kept once.
    let rows = stdout(&maestro(&[
        "sql",
        "--lake",
        lake_arg,
        "--format",
        "csv",
        "select count(distinct plan_id), count(*) from rollout_plans",
    ]));
    assert_eq!(rows.lines().nth(1), Some("2,8"), "{rows}");

    // A service that has deployed but that no edge names is still part of --all: on its own,
    // in the first wave.
    let deployed = dir.path().join("deployed.json");
    std::fs::write(
        &deployed,
        r#"{"context":{"id":"e1","type":"dev.cdevents.service.deployed.0.2.0","timestamp":"2024-01-02T03:04:05Z"},"subject":{"id":"s","content":{"environment":{"id":"prod"},"artifactId":"pkg:oci/mailer@1"}}}"#,
    )
    .unwrap();
    let plan = ingest_and_plan(lake_arg, &deployed);
    assert_eq!(plan["services"].as_array().unwrap().len(), 6, "{plan}");
    let mailer = planned(&plan, "mailer");
    assert_eq!(mailer["wave"], 1);
    assert_eq!(mailer["blast_radius"], 0);
    assert_eq!(mailer["depends_on"], serde_json::json!([]));

    // A cycle has no order: the plan names it and exits 1.
    std::fs::write(
        &file,
        catalog(&[("db", &["web"]), ("web", &["api"]), ("api", &["db"])]),
    )
    .unwrap();
    let out = maestro(&["ingest", "--lake", lake_arg, file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    let out = maestro(&["plan", "--lake", lake_arg, "--services", "db,web,api,auth"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("cycle: api -> db -> web -> api"),
        "{}",
        stdout(&out)
    );
    // An unknown flag value is a usage error.
    assert_eq!(
        maestro(&["plan", "--lake", lake_arg]).status.code(),
        Some(2)
    );
}
