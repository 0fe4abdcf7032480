//! Golden results of the SQL reports: each `tests/slt/*.slt` file runs against the `small`
//! fixture lake after every report has been computed for 2026-10-01 to 2026-10-02. A failure
//! prints the expected and the actual rows, which can be pasted back into the file.

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use maestro_reports::LakeSession;
use sqllogictest::{DBOutput, DefaultColumnType};

use super::{reports, runtime, small_lake};

/// The lake's session, as a database sqllogictest can drive.
struct LakeDb {
    session: LakeSession,
    runtime: tokio::runtime::Runtime,
}

#[derive(Debug)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

impl sqllogictest::DB for LakeDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let batches = self
            .runtime
            .block_on(self.session.query(sql))
            .map_err(|e| DbError(e.to_string()))?;
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        let mut columns = 0;
        for batch in &batches {
            columns = batch.num_columns();
            let formatters: Vec<ArrayFormatter<'_>> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| {
                            let text = f.value(row).to_string();
                            if text.is_empty() {
                                "(empty)".into()
                            } else {
                                text
                            }
                        })
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows,
        })
    }
}

#[test]
fn report_sql_matches_the_golden_files() {
    let (_dir, lake) = small_lake();
    reports(&lake, "2026-10-01", "2026-10-02");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "golden files in {}", dir.display());
    for file in files {
        let lake = lake.clone();
        let mut tester = sqllogictest::Runner::new(move || {
            let lake = lake.clone();
            async move {
                let runtime = runtime();
                let session = runtime.block_on(LakeSession::open(&lake)).unwrap();
                Ok(LakeDb { session, runtime })
            }
        });
        if let Err(e) = tester.run_file(&file) {
            panic!("{}: {e}", file.display());
        }
    }
}

#[test]
fn a_waived_alarm_is_an_alarm_again_after_the_waiver_expires() {
    let (_dir, lake) = small_lake();
    let status = |to: &str| {
        let run = reports(&lake, "2026-10-01", to);
        let batch = &run.tables["compliance_results"][0];
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .unwrap()
                .clone()
        };
        let (ids, statuses) = (column("control_id"), column("status"));
        (0..batch.num_rows())
            .find(|i| ids.value(*i) == "ACC-02")
            .map(|i| statuses.value(i).to_string())
            .unwrap()
    };
    assert_eq!(status("2026-10-02"), "waived");
    assert_eq!(status("2026-10-03"), "alarm");
}

/// The lake's text columns are scanned as `Utf8View`; results carry them as the declared
/// `Utf8`, which is what report tables and Rust readers of results expect.
#[test]
fn query_results_carry_text_as_utf8() {
    use datafusion::arrow::datatypes::DataType;
    let (_dir, lake) = small_lake();
    let batches = runtime().block_on(async {
        let session = LakeSession::open(&lake).await.unwrap();
        session
            .query("select service, metric, value from metric_points where service is not null")
            .await
            .unwrap()
    });
    for batch in &batches {
        let types: Vec<&DataType> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.data_type())
            .collect();
        assert_eq!(
            types,
            [&DataType::Utf8, &DataType::Utf8, &DataType::Float64]
        );
    }
    assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
}
