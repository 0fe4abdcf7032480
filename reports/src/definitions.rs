//! Report and control definitions: `.sql` files whose leading `/* ... */` comment holds their
//! metadata as TOML.
//!
//! A report file ends in `select * from final` and writes the report table named after the
//! file (a view file is only registered, for the reports that build on it); its header documents every column, and a run checks that the query returns exactly
//! those columns, so the documentation cannot drift from the SQL. A control file returns one row
//! per resource (`resource`, `status`, `reason`); its header carries the control's id, title,
//! severity and framework mappings, and its rows go to `compliance_results`.
//!
//! Maestro's own files are compiled in from `reports/sql/`; users add theirs from a folder
//! named in `maestro.toml`, read at run time, so no rebuild is needed. A user file may not take
//! the name of a built-in one: each table has one definition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// Maestro's own definitions, by their path under `reports/sql/` (listed by `build.rs`).
const BUILT_IN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/built_in.rs"));

/// What a definition computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A report table.
    Report,
    /// A result later reports build on, computed once per run and kept in memory but not
    /// written to the lake: for intermediate results too large to be worth keeping.
    View,
    /// A compliance control.
    Control,
}

/// How bad a control's alarm is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Low,
    /// Fix in the normal course of work.
    Medium,
    /// Fix soon.
    High,
    /// Fix now.
    Critical,
}

impl Severity {
    /// The lowercase name, as written in files and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The TOML header of a definition file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// report or control.
    pub kind: Kind,
    /// One line a reader of the report understands.
    pub title: String,
    /// What it computes and how, for the appendix.
    pub description: String,
    /// Reports: the schema version of the table, raised when its columns change.
    #[serde(default = "first_version")]
    pub version: u32,
    /// Reports: every column of the result, in order, with its meaning.
    #[serde(default)]
    pub columns: Vec<Column>,
    /// Report tables this one reads, which must be computed first.
    #[serde(default)]
    pub after: Vec<String>,
    /// Controls: a stable id such as `REL-01`.
    pub id: Option<String>,
    /// Controls: how bad an alarm is.
    pub severity: Option<Severity>,
    /// Controls: SOC 2 Trust Services Criteria it evidences.
    #[serde(default)]
    pub soc2: Vec<String>,
    /// Controls: ISO/IEC 27001:2022 Annex A controls it evidences.
    #[serde(default)]
    pub iso27001: Vec<String>,
    /// Controls: GDPR articles it evidences.
    #[serde(default)]
    pub gdpr: Vec<String>,
}

fn first_version() -> u32 {
    1
}

/// One documented column of a report.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// What it holds, with its unit.
    pub doc: String,
}

/// One report or control.
#[derive(Debug, Clone)]
pub struct Definition {
    /// The file name without `.sql`: the report's table, or the control's file.
    pub name: String,
    /// Where it came from: `reports/sql/<path>` for built-in files, else the user's path.
    pub origin: String,
    /// Its metadata.
    pub header: Header,
    /// The whole file, header included, as run.
    pub sql: String,
}

/// Every definition: built-in ones, then those of `user_dir` (recursively, `*.sql`).
pub fn load(user_dir: Option<&Path>) -> Result<Vec<Definition>> {
    let mut definitions = BUILT_IN
        .iter()
        .map(|(path, text)| parse(&format!("reports/sql/{path}"), text))
        .collect::<Result<Vec<_>>>()?;
    if let Some(dir) = user_dir {
        let mut files = Vec::new();
        sql_files(dir, &mut files)?;
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::Definition(format!("reading {}: {e}", path.display())))?;
            definitions.push(parse(&path.display().to_string(), &text)?);
        }
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for definition in &definitions {
        if let Some(first) = seen.insert(&definition.name, &definition.origin) {
            return Err(Error::Definition(format!(
                "{} and {} are both named {:?}: each report or control needs its own name",
                first, definition.origin, definition.name
            )));
        }
    }
    Ok(definitions)
}

fn sql_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::Definition(format!("reading the folder {}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(|e| Error::Definition(format!("reading {}: {e}", dir.display())))?
            .path();
        if path.is_dir() {
            sql_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "sql") {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses one file: its header and SQL.
pub fn parse(origin: &str, text: &str) -> Result<Definition> {
    let fail = |reason: String| Error::Definition(format!("{origin}: {reason}"));
    let name = Path::new(origin)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .ok_or_else(|| fail("no file name".into()))?;
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(fail(format!(
            "{name:?} is not a table name: use lowercase letters, digits and _"
        )));
    }
    let body = text.trim_start();
    let header_text = body
        .strip_prefix("/*")
        .and_then(|rest| rest.split_once("*/"))
        .map(|(header, _)| header)
        .ok_or_else(|| {
            fail("the file must begin with a /* ... */ comment holding its metadata as TOML".into())
        })?;
    let header: Header = toml::from_str(header_text).map_err(|e| fail(format!("header: {e}")))?;
    match header.kind {
        Kind::Report | Kind::View => {
            if header.columns.is_empty() {
                return Err(fail("a report documents its columns ([[columns]])".into()));
            }
        }
        Kind::Control => {
            if header.id.is_none() || header.severity.is_none() {
                return Err(fail("a control needs an id and a severity".into()));
            }
            if header.soc2.is_empty() && header.iso27001.is_empty() && header.gdpr.is_empty() {
                return Err(fail(
                    "a control maps to at least one clause of soc2, iso27001 or gdpr".into(),
                ));
            }
        }
    }
    Ok(Definition {
        name,
        origin: origin.to_string(),
        header,
        sql: text.to_string(),
    })
}
