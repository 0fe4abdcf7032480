//! Every reader against its folder of the real conformance corpus.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use maestro_datasets::readers::{self, Chunk, Format, Records, ReportContext};
use maestro_datasets::schema::Ts;

use super::corpus_dir;

fn read_file(
    path: &Path,
    format: Option<Format>,
    context: &ReportContext,
) -> (Result<Format, String>, Records) {
    let bytes = std::fs::read(path).unwrap();
    let detected = format.map(Ok).unwrap_or_else(|| readers::detect(&bytes));
    let mut records = Records::default();
    if let Ok(format) = detected {
        let chunk = Chunk::whole_file(&bytes, "0123456789abcdef0123", Some(Ts(0)), context);
        readers::read_chunk(format, &chunk, &mut records);
    }
    (detected, records)
}

fn files_under(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(extension) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn at_context() -> ReportContext {
    ReportContext {
        at: Ts::parse("2024-01-01T00:00:00Z"),
        ..Default::default()
    }
}

#[test]
fn junit_counts_match_the_expected_counts_shipped_with_the_corpus() {
    let Some(corpus) = corpus_dir() else { return };
    let dir = corpus.join("junit-xml/enricomi");
    let mut checked = 0;
    for expected_path in files_under(&dir, ".results.json") {
        let xml = PathBuf::from(
            expected_path
                .to_string_lossy()
                .replace(".results.json", ".xml"),
        );
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
        let stats = &expected["stats"];
        let n = |key: &str| stats[key].as_i64().unwrap();
        let (format, records) = read_file(&xml, None, &at_context());
        let name = xml.file_name().unwrap().to_string_lossy().to_string();
        if !stats["errors"].as_array().unwrap().is_empty() {
            // The upstream tool could not read it either: it must be rejected whole, not parsed.
            assert!(
                format.is_err() || records.test_results.is_empty(),
                "{name} should be refused"
            );
            assert_eq!(records.read, records.rejected.len() as u64, "{name}");
            checked += 1;
            continue;
        }
        assert_eq!(format, Ok(Format::Junit), "{name}");
        if records.test_results.is_empty() && n("tests") > 0 {
            // The suite declares counts but lists no testcase: nothing to take, said plainly.
            assert_eq!(name, "no-cases-but-tests.xml");
            assert!(
                records.rejected[0].reason.contains("declares 6 tests"),
                "{:?}",
                records.rejected
            );
            checked += 1;
            continue;
        }
        // Per test: the worst status of its executions.
        let mut worst: BTreeMap<&str, u8> = BTreeMap::new();
        let rows = records.test_results.rows();
        for row in &rows {
            let rank = match &*row.status {
                "error" => 3,
                "failed" => 2,
                "skipped" => 1,
                _ => 0,
            };
            let entry = worst.entry(row.test_id.as_str()).or_default();
            *entry = (*entry).max(rank);
        }
        let count = |rank: u8| worst.values().filter(|r| **r == rank).count() as i64;
        assert_eq!(worst.len() as i64, n("tests"), "{name}: tests");
        assert_eq!(count(1), n("tests_skip"), "{name}: skipped");
        assert_eq!(count(2), n("tests_fail"), "{name}: failed");
        assert_eq!(count(3), n("tests_error"), "{name}: errors");
        assert_eq!(records.test_results.len() as i64, n("runs"), "{name}: runs");
        assert!(
            records.rejected.is_empty(),
            "{name}: {:?}",
            records.rejected
        );
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} expected-count files found");
}

#[test]
fn every_junit_producer_in_the_corpus_reads_or_is_refused_whole() {
    let Some(corpus) = corpus_dir() else { return };
    let mut taken = 0;
    for path in files_under(&corpus.join("junit-xml"), ".xml") {
        let (format, records) = read_file(&path, Some(Format::Junit), &at_context());
        assert_eq!(format, Ok(Format::Junit));
        assert_eq!(
            records.read,
            records.accepted() + records.rejected.len() as u64
        );
        let name = path.to_string_lossy();
        let corrupt = name.contains("corrupt") || name.contains("non-junit");
        if corrupt {
            assert!(
                records.test_results.is_empty(),
                "{name} is corrupt and must be refused whole"
            );
            assert_eq!(records.rejected.len(), 1, "{name}");
        } else if !records.test_results.is_empty() {
            taken += 1;
        }
    }
    assert!(taken > 60, "only {taken} JUnit files gave rows");
}

#[test]
fn surefire_flaky_reruns_are_attempts_of_one_test() {
    let Some(corpus) = corpus_dir() else { return };
    let (_, records) = read_file(
        &corpus.join("junit-xml/mikepenz/maven_surefire_flaky/surefire-report.xml"),
        None,
        &at_context(),
    );
    let rows = records.test_results.rows();
    let attempts: Vec<(i64, &str)> = rows.iter().map(|r| (r.attempt, &*r.status)).collect();
    assert_eq!(attempts, [(1, "failed"), (2, "passed")]);
}

#[test]
fn cdevents_conformance_events_map_to_their_tables() {
    let Some(corpus) = corpus_dir() else { return };
    let mut tables: BTreeMap<String, usize> = BTreeMap::new();
    for path in files_under(&corpus.join("cdevents/conformance"), ".json") {
        if path.parent().unwrap().ends_with("formats") {
            continue;
        }
        let (format, records) = read_file(&path, None, &ReportContext::default());
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        assert_eq!(format, Ok(Format::CdEvents), "{name}");
        assert_eq!(records.read, 1, "{name}");
        let table = if !records.changes.is_empty() {
            "changes"
        } else if !records.deployments.is_empty() {
            "deployments"
        } else if !records.incidents.is_empty() {
            "incidents"
        } else if !records.test_results.is_empty() {
            "test_results"
        } else {
            assert!(
                records.rejected[0].reason.contains("no Maestro table"),
                "{name}: {:?}",
                records.rejected
            );
            "_rejected"
        };
        *tables.entry(format!("{name}->{table}")).or_default() += 1;
    }
    for expected in [
        "change_merged->changes",
        "service_deployed->deployments",
        "service_upgraded->deployments",
        "service_rolledback->deployments",
        "incident_detected->incidents",
        "incident_resolved->incidents",
        "testcaserun_finished->test_results",
        "build_finished->_rejected",
    ] {
        assert!(
            tables.contains_key(expected),
            "{expected} not seen in {tables:?}"
        );
    }
}

#[test]
fn otlp_examples_keep_every_metric_kind_and_span() {
    let Some(corpus) = corpus_dir() else { return };
    let dir = corpus.join("otlp-json/proto-examples");
    let (format, metrics) = read_file(&dir.join("metrics.json"), None, &ReportContext::default());
    assert_eq!(format, Ok(Format::OtlpMetrics));
    let kinds: BTreeSet<&str> = metrics.metric_points.iter().map(|p| &*p.kind).collect();
    // The examples hold no summary; the reader's own tests cover summaries.
    assert_eq!(
        kinds,
        BTreeSet::from(["exponential_histogram", "gauge", "histogram", "sum"])
    );
    assert!(metrics.rejected.is_empty(), "{:?}", metrics.rejected);
    assert!(
        metrics
            .metric_points
            .iter()
            .all(|p| &*p.service == "my.service")
    );
    let histogram = metrics
        .metric_points
        .iter()
        .find(|p| &*p.kind == "histogram")
        .unwrap();
    assert!(!histogram.bucket_counts.is_empty());
    let (format, traces) = read_file(&dir.join("trace.json"), None, &ReportContext::default());
    assert_eq!(format, Ok(Format::OtlpTraces));
    assert!(!traces.spans.is_empty());
    assert!(traces.rejected.is_empty(), "{:?}", traces.rejected);
    assert_eq!(traces.spans[0].trace_id.len(), 32);
    let (logs, _) = read_file(&dir.join("logs.json"), None, &ReportContext::default());
    assert!(logs.unwrap_err().contains("logs"));
}

#[test]
fn prometheus_scrapes_read_every_sample() {
    let Some(corpus) = corpus_dir() else { return };
    for path in files_under(&corpus.join("prometheus-exposition"), ".txt") {
        let (format, records) = read_file(&path, None, &ReportContext::default());
        let name = path.to_string_lossy();
        assert_eq!(format, Ok(Format::Prometheus), "{name}");
        assert!(records.metric_points.len() > 5, "{name}");
        assert!(
            records.rejected.is_empty(),
            "{name}: {:?}",
            &records.rejected[..records.rejected.len().min(3)]
        );
        let samples = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(records.metric_points.len(), samples, "{name}");
    }
}

#[test]
fn kubernetes_audit_events_read_and_the_malformed_one_is_rejected() {
    let Some(corpus) = corpus_dir() else { return };
    let mut events = 0;
    for path in files_under(&corpus.join("audit-logs/k8s-audit-falco"), ".json") {
        let (format, records) = read_file(&path, Some(Format::K8sAudit), &ReportContext::default());
        assert!(format.is_ok());
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "fal_01_003.json" {
            assert_eq!(records.audit.len(), 0);
            assert_eq!(records.rejected.len() as u64, records.read);
            assert!(records.rejected[0].reason.contains("auditID"));
        } else {
            assert!(
                records.rejected.is_empty(),
                "{name}: {:?}",
                records.rejected
            );
            events += records.audit.len();
        }
    }
    assert!(events >= 45);
}

#[test]
fn cloudtrail_files_read_and_the_broken_one_is_rejected_whole() {
    let Some(corpus) = corpus_dir() else { return };
    let (mut good, mut broken) = (0, 0);
    for path in files_under(
        &corpus.join("audit-logs/cloudtrail-stratus-red-team"),
        ".json",
    ) {
        let (format, records) = read_file(&path, None, &ReportContext::default());
        if records.audit.is_empty() {
            assert_eq!(records.rejected.len(), 1, "{}", path.display());
            broken += 1;
        } else {
            assert_eq!(format, Ok(Format::CloudTrail));
            assert!(records.audit.iter().all(|a| a.source == "cloudtrail"));
            good += 1;
        }
    }
    assert_eq!((good, broken), (3, 1));
}

#[test]
fn github_deployment_webhooks_read_and_other_events_are_refused() {
    let Some(corpus) = corpus_dir() else { return };
    let dir = corpus.join("deploy-events/github-webhooks");
    for kind in ["deployment", "deployment_status"] {
        for path in files_under(&dir.join(kind), ".json") {
            let (format, records) = read_file(&path, None, &ReportContext::default());
            assert_eq!(format, Ok(Format::GithubDeployment), "{}", path.display());
            assert_eq!(
                records.deployments.len(),
                1,
                "{}: {:?}",
                path.display(),
                records.rejected
            );
        }
    }
    let (format, _) = read_file(
        &dir.join("push/payload.json"),
        None,
        &ReportContext::default(),
    );
    assert!(format.is_err());
}
