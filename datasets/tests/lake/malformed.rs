//! Malformed input never panics: it becomes rejections, and counts still reconcile.

use maestro_datasets::readers::{self, Chunk, Format, Records, ReportContext};
use maestro_datasets::schema::Ts;
use proptest::prelude::*;

const SAMPLES: [(Format, &str); 11] = [
    (
        Format::GithubDeployment,
        r#"{"action":"created","deployment":{"id":7,"sha":"abc","ref":"main","environment":"production","created_at":"2024-01-01T00:00:00Z","creator":{"login":"bob"}},"repository":{"name":"api"}}"#,
    ),
    (
        Format::BackstageCatalog,
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: api\nspec:\n  dependsOn:\n    - component:default/db\n",
    ),
    (
        Format::CdEvents,
        r#"{"context":{"id":"e1","type":"dev.cdevents.service.deployed.0.2.0","timestamp":"2024-01-02T03:04:05Z"},"subject":{"id":"s","content":{"environment":{"id":"prod"},"artifactId":"pkg:oci/api@1"}}}"#,
    ),
    (
        Format::Junit,
        r#"<?xml version="1.0"?><testsuites><testsuite name="s" timestamp="2024-01-01T00:00:00"><testcase classname="A" name="t" time="0.1"><failure message="x">boom</failure></testcase><testcase name="u"/></testsuite></testsuites>"#,
    ),
    (
        Format::OtlpMetrics,
        r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},"scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":[{"timeUnixNano":"1700000000000000000","asDouble":1.5}]}}]}]}]}"#,
    ),
    (
        Format::OtlpTraces,
        r#"{"resourceSpans":[{"resource":{"attributes":[]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"op","startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000"}]}]}]}"#,
    ),
    (
        Format::Prometheus,
        "# TYPE up gauge\nup{job=\"api\"} 1 1700000000000\nhttp_total{code=\"200\"} 5\n",
    ),
    (
        Format::K8sAudit,
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a1","stage":"ResponseComplete","verb":"get","user":{"username":"bob"},"objectRef":{"resource":"secrets","namespace":"prod","name":"db"},"responseStatus":{"code":200},"stageTimestamp":"2024-01-01T00:00:00Z"}"#,
    ),
    (
        Format::CloudTrail,
        r#"{"Records":[{"eventID":"1","eventTime":"2024-01-01T00:00:00Z","eventName":"DeleteBucket","eventSource":"s3.amazonaws.com","userIdentity":{"arn":"arn:aws:iam::1:user/bob"}}]}"#,
    ),
    (
        Format::OpenSlo,
        "apiVersion: openslo/v1\nkind: SLO\nmetadata:\n  name: a\nspec:\n  service: api\n  budgetingMethod: Occurrences\n  indicator:\n    spec:\n      ratioMetric:\n        counter: true\n        bad:\n          metricSource:\n            spec:\n              metric: http_errors_total\n        total:\n          metricSource:\n            spec:\n              query: http_requests_total\n  timeWindow:\n    - duration: 28d\n      isRolling: true\n  objectives:\n    - target: 0.99\n",
    ),
    (
        Format::CommitGuruCsv,
        "commit_hash,author_date_unix_timestamp,la,ld,contains_bug,fix\nabc,1700000000,10,2,True,False\n",
    ),
];

fn read(format: Format, bytes: &[u8]) -> Records {
    let context = ReportContext::default();
    let chunk = Chunk::whole_file(bytes, "00000000000000000000", Some(Ts(0)), &context);
    let mut records = Records::default();
    readers::read_chunk(format, &chunk, &mut records);
    records
}

fn reconciles(records: &Records) -> bool {
    records.read >= records.rejected.len() as u64
}

#[test]
fn every_sample_reads_cleanly() {
    for (format, text) in SAMPLES {
        let records = read(format, text.as_bytes());
        assert!(
            records.rejected.is_empty(),
            "{format}: {:?}",
            records.rejected
        );
        assert!(records.rows() > 0, "{format}");
    }
}

#[test]
fn hostile_inputs_are_rejected_not_fatal() {
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_xml = format!(
        "<testsuites>{}{}</testsuites>",
        "<testsuite>".repeat(10_000),
        "</testsuite>".repeat(10_000)
    );
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><testsuite name="&c;" timestamp="2024-01-01T00:00:00"><testcase name="&c;"/></testsuite>"#;
    let huge_numbers = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":[{"timeUnixNano":"99999999999999999999999","asDouble":1e999}]}}]}]}]}"#;
    let cases: Vec<(Format, Vec<u8>)> = vec![
        (Format::CdEvents, deep_json.clone().into_bytes()),
        (Format::K8sAudit, deep_json.into_bytes()),
        (Format::Junit, deep_xml.into_bytes()),
        (Format::Junit, bomb.as_bytes().to_vec()),
        (Format::OtlpMetrics, huge_numbers.as_bytes().to_vec()),
        (
            Format::CommitGuruCsv,
            b"commit_hash,author_date_unix_timestamp\nabc,1e400\n\xff\xfe,1\n".to_vec(),
        ),
        (
            Format::Prometheus,
            b"up 1e99999\nx{a=\"\xff\"} 1\n".to_vec(),
        ),
        (Format::OpenSlo, b"a: &a [*a, *a, *a]\n".to_vec()),
    ];
    for (format, bytes) in cases {
        let records = read(format, &bytes);
        assert!(reconciles(&records), "{format}");
        assert!(
            !records.rejected.is_empty() || records.rows() > 0,
            "{format}: nothing said about hostile input"
        );
        // An entity bomb must not expand: nothing grows beyond its source.
        for row in records.test_results.rows() {
            assert!(row.name.len() < 1000);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn truncated_samples_never_panic(index in 0..SAMPLES.len(), cut in 0.0f64..1.0) {
        let (format, text) = SAMPLES[index];
        let bytes = &text.as_bytes()[..(text.len() as f64 * cut) as usize];
        let records = read(format, bytes);
        prop_assert!(reconciles(&records));
    }

    #[test]
    fn corrupted_samples_never_panic(index in 0..SAMPLES.len(), flips in proptest::collection::vec((0usize..10_000, any::<u8>()), 1..8)) {
        let (format, text) = SAMPLES[index];
        let mut bytes = text.as_bytes().to_vec();
        for (position, byte) in flips {
            let at = position % bytes.len();
            bytes[at] = byte;
        }
        let records = read(format, &bytes);
        prop_assert!(reconciles(&records));
    }

    #[test]
    fn arbitrary_bytes_are_detected_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(format) = readers::detect(&bytes) {
            let records = read(format, &bytes);
            prop_assert!(reconciles(&records));
        }
    }
}
