//! Commit Guru-style change CSV -> `changes`, with the 14 just-in-time defect metrics.
//!
//! Columns follow Commit Guru's export: `commit_hash`, `author_name`,
//! `author_date_unix_timestamp`, `fix`, `contains_bug`, `ns nd nf entrophy la ld lt ndev age nuc
//! exp rexp sexp`, `fileschanged` (joined with `CAS_DELIMITER`), `repository_id`. Only
//! `commit_hash` and `author_date_unix_timestamp` are required; a metric that is present must be
//! a number, or the row is rejected.

use std::collections::HashMap;

use super::{Chunk, Records};
use crate::schema::{Change, Ts};

/// Reads a change CSV.
pub fn read(chunk: &Chunk<'_>, out: &mut Records) {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(chunk.bytes);
    let headers = match reader.byte_headers() {
        Ok(h) => h
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_string())
            .collect::<Vec<_>>(),
        Err(e) => return out.reject_whole_file(format!("unreadable CSV header: {e}"), chunk.bytes),
    };
    let column: HashMap<&str, usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), i))
        .collect();
    for required in ["commit_hash", "author_date_unix_timestamp"] {
        if !column.contains_key(required) {
            return out.reject_whole_file(
                format!("change CSV without a {required} column"),
                chunk.bytes,
            );
        }
    }
    let mut record = csv::ByteRecord::new();
    loop {
        let position = reader.position().clone();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                out.reject(
                    Some(position.line() as i64),
                    Some(chunk.first_offset + position.byte() as i64),
                    format!("unreadable CSV row: {e}"),
                    b"",
                );
                continue;
            }
        }
        let line = Some(position.line() as i64);
        let offset = Some(chunk.first_offset + position.byte() as i64);
        let raw = record.as_slice().to_vec();
        match change(&record, &column, &headers, chunk) {
            Ok(row) => {
                out.read += 1;
                out.changes.push(row);
            }
            Err(reason) => out.reject(line, offset, reason, &join_fields(&record, &raw)),
        }
    }
}

fn join_fields(record: &csv::ByteRecord, _raw: &[u8]) -> Vec<u8> {
    record.iter().collect::<Vec<_>>().join(&b","[..])
}

fn change(
    record: &csv::ByteRecord,
    column: &HashMap<&str, usize>,
    headers: &[String],
    chunk: &Chunk<'_>,
) -> Result<Change, String> {
    if record.len() != headers.len() {
        return Err(format!(
            "row has {} fields, the header {}",
            record.len(),
            headers.len()
        ));
    }
    let text = |name: &str| -> Result<Option<String>, String> {
        match column.get(name) {
            None => Ok(None),
            Some(&i) => {
                let bytes = record.get(i).unwrap_or_default();
                let value = std::str::from_utf8(bytes)
                    .map_err(|_| format!("{name} is not valid UTF-8"))?
                    .trim();
                Ok((!value.is_empty()).then(|| value.to_string()))
            }
        }
    };
    let number = |name: &str| -> Result<Option<f64>, String> {
        match text(name)? {
            None => Ok(None),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Some)
                .ok_or_else(|| format!("{name} {v:?} is not a number")),
        }
    };
    let flag = |name: &str| -> Result<Option<bool>, String> {
        match text(name)?
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => Ok(None),
            Some("true" | "1" | "t" | "yes") => Ok(Some(true)),
            Some("false" | "0" | "f" | "no") => Ok(Some(false)),
            Some(other) => Err(format!("{name} {other:?} is not true or false")),
        }
    };
    let change_id = text("commit_hash")?.ok_or("empty commit_hash")?;
    let seconds =
        number("author_date_unix_timestamp")?.ok_or("empty author_date_unix_timestamp")?;
    if !(0.0..4.0e9).contains(&seconds) {
        return Err(format!(
            "author_date_unix_timestamp {seconds} is out of range"
        ));
    }
    let files = text("fileschanged")?
        .map(|f| {
            f.split("CAS_DELIMITER")
                .flat_map(|part| part.split(','))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let la = number("la")?;
    let ld = number("ld")?;
    Ok(Change {
        change_id,
        service: text("repository_id")?
            .or_else(|| chunk.context.service.clone())
            .unwrap_or_else(|| "unknown".into()),
        author: text("author_email")?.or(text("author_name")?),
        merged_at: Ts::from_secs_f64(seconds),
        files,
        lines_added: la.map(|v| v as i64),
        lines_deleted: ld.map(|v| v as i64),
        ns: number("ns")?,
        nd: number("nd")?,
        nf: number("nf")?,
        entropy: number("entrophy")?.or(number("entropy")?),
        la,
        ld,
        lt: number("lt")?,
        fix: flag("fix")?,
        ndev: number("ndev")?,
        age: number("age")?,
        nuc: number("nuc")?,
        exp: number("exp")?,
        rexp: number("rexp")?,
        sexp: number("sexp")?,
        is_buggy: flag("contains_bug")?,
        message: text("commit_message")?,
        source_format: "commit-guru-csv".into(),
    })
}
