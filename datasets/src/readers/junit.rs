//! JUnit/xUnit XML from any common producer -> `test_results`.
//!
//! Handles `<testsuites>` or a bare `<testsuite>` root, suites nested in suites, the status
//! elements `<failure>`, `<error>`, `<skipped>` and a `status` attribute (tst, cunit), and
//! surefire's reruns: `<flakyFailure>`/`<flakyError>` (failed attempts before a pass) and
//! `<rerunFailure>`/`<rerunError>` (further failed attempts). Every attempt is its own row, and a
//! test repeated in the same run gets the next attempt number, so a flaky test shows as one.
//!
//! Change, run, service and time come from suite `<properties>` (`maestro.change_id`,
//! `maestro.run_id`, `maestro.service`, `maestro.started_at`), else from the command line, else
//! from the suite's `timestamp`.
//!
//! Why quick-xml events rather than `quick_junit::Report::deserialize`: that deserializer is
//! documented as experimental and expects quick-junit's own dialect (it requires attributes that
//! half the producers in the field omit, and has no place for `status` attributes or suites
//! without names); a streaming pass over quick-xml events accepts every dialect and never
//! expands entities beyond the five predefined ones.

use std::borrow::Cow;
use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::{Chunk, Records, TestResultRef, truncate_raw};
use crate::schema::Ts;

/// Deeper nesting than this is not a test report but an attack or an accident.
const MAX_DEPTH: usize = 64;

#[derive(Default)]
struct Suite<'a> {
    name: Option<String>,
    timestamp: Option<Ts>,
    /// The `tests` count the suite declares, to notice a suite that lists none of them.
    declared_tests: Option<u64>,
    /// Whether testcases sit in this suite or in suites nested in it.
    has_cases: bool,
    properties: HashMap<String, String>,
    cases: Vec<Case<'a>>,
}

/// A `<testcase>` as read: its tag, whose attributes are parsed only when the suite closes and
/// its rows are written, straight from the input.
struct Case<'a> {
    tag: Cow<'a, str>,
    /// Outcome elements in document order, with their message.
    outcomes: Vec<(Outcome, Option<String>)>,
    offset: i64,
}

/// A testcase's attributes, borrowed from its element where they hold no entity.
#[derive(Default)]
struct CaseAttributes<'e> {
    name: Option<Cow<'e, str>>,
    classname: Option<Cow<'e, str>>,
    file: Option<Cow<'e, str>>,
    duration_s: Option<f64>,
    timestamp: Option<Ts>,
    status: Option<Cow<'e, str>>,
}

/// The elements inside a `<testcase>` that say how it went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failure,
    Error,
    Skipped,
    /// surefire: a failed attempt before the final pass.
    FlakyFailure,
    FlakyError,
    /// surefire: a further failed attempt after the first.
    RerunFailure,
    RerunError,
}

impl Outcome {
    fn from_element(local_name: &[u8]) -> Option<Outcome> {
        Some(match local_name {
            b"failure" => Outcome::Failure,
            b"error" => Outcome::Error,
            b"skipped" => Outcome::Skipped,
            b"flakyFailure" => Outcome::FlakyFailure,
            b"flakyError" => Outcome::FlakyError,
            b"rerunFailure" => Outcome::RerunFailure,
            b"rerunError" => Outcome::RerunError,
            _ => return None,
        })
    }
}

/// Reads one JUnit/xUnit XML file.
pub fn read(chunk: &Chunk<'_>, out: &mut Records) {
    let report_rows = out.test_results.start_report(chunk.bytes.len());
    match parse(chunk, out) {
        // A test met more than once in a run is retried: its rows are its attempts.
        Ok(()) => out.test_results.number_attempts(report_rows),
        // Nothing of a corrupt report is half taken.
        Err(reason) => out.reject_whole_file(reason, truncate_raw(chunk.bytes)),
    }
}

fn parse(chunk: &Chunk<'_>, out: &mut Records) -> Result<(), String> {
    // Reading from the slice itself, events borrow the input: nothing is copied per element.
    let mut reader = Reader::from_reader(chunk.bytes);
    // Checked once for the whole report, so that tags are text without a check of their own.
    let text = std::str::from_utf8(chunk.bytes).ok();
    let tag_text = |start: usize, end: usize| -> Cow<'_, str> {
        match text.and_then(|t| t.get(start..end)) {
            Some(tag) => Cow::Borrowed(tag),
            None => String::from_utf8_lossy(&chunk.bytes[start..end]),
        }
    };
    reader.config_mut().trim_text(true);
    let mut suites: Vec<Suite<'_>> = Vec::new();
    let mut case: Option<Case<'_>> = None;
    let mut depth = 0usize;
    let mut saw_junit_root = false;
    let mut report = Report::default();
    loop {
        let offset = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|e| format!("corrupt XML at byte {}: {e}", reader.error_position()))?;
        let (element, is_empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(element) => {
                depth = depth.saturating_sub(1);
                match element.local_name().as_ref() {
                    b"testcase" => {
                        if let (Some(done), Some(suite)) = (case.take(), suites.last_mut()) {
                            suite.cases.push(done);
                        }
                    }
                    b"testsuite" | b"testsuites" => {
                        close_suite(&mut suites, chunk, out, &mut report)?
                    }
                    _ => {}
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let tag = || tag_text(offset, reader.buffer_position() as usize);
        if !is_empty {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(format!("XML nested deeper than {MAX_DEPTH} elements"));
            }
        }
        match element.local_name().as_ref() {
            b"testsuites" | b"testsuite" => {
                saw_junit_root = true;
                suites.push(suite_from(&tag()));
                if is_empty {
                    close_suite(&mut suites, chunk, out, &mut report)?;
                }
            }
            b"testcase" => {
                if suites.is_empty() {
                    saw_junit_root = true;
                    suites.push(Suite::default());
                }
                let new_case = Case {
                    tag: tag(),
                    outcomes: Vec::new(),
                    offset: chunk.first_offset + offset as i64,
                };
                if is_empty {
                    suites
                        .last_mut()
                        .expect("pushed above")
                        .cases
                        .push(new_case);
                } else {
                    case = Some(new_case);
                }
            }
            b"property" => {
                let tag = tag();
                if let (Some(key), Some(value), Some(suite)) =
                    (attr(&tag, "name"), attr(&tag, "value"), suites.last_mut())
                {
                    suite.properties.entry(key).or_insert(value);
                }
            }
            name => {
                if let (Some(kind), Some(case)) = (Outcome::from_element(name), case.as_mut()) {
                    let tag = tag();
                    let message = attr(&tag, "message").or_else(|| attr(&tag, "type"));
                    case.outcomes.push((kind, message));
                }
            }
        }
    }
    if !saw_junit_root {
        return Err(
            "XML without <testsuites>, <testsuite> or <testcase>: not a JUnit/xUnit report".into(),
        );
    }
    if !suites.is_empty() {
        return Err("truncated XML: a <testsuite> is never closed".into());
    }
    Ok(())
}

/// What one report's suites share: the count of testcases without a name, and a buffer for
/// test ids.
#[derive(Default)]
struct Report {
    unnamed: usize,
    test_id: String,
}

#[derive(Clone, Copy)]
enum Status {
    Passed,
    Failed,
    Error,
    Skipped,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Error => "error",
            Status::Skipped => "skipped",
        }
    }
}

fn close_suite(
    suites: &mut Vec<Suite<'_>>,
    chunk: &Chunk<'_>,
    out: &mut Records,
    report: &mut Report,
) -> Result<(), String> {
    let Some(suite) = suites.pop() else {
        return Err("unbalanced XML: a suite closes that never opened".into());
    };
    // Properties and timestamps of enclosing suites apply to nested ones.
    let lookup = |keys: &[&str]| -> Option<&str> {
        std::iter::once(&suite)
            .chain(suites.iter().rev())
            .find_map(|s| keys.iter().find_map(|k| s.properties.get(*k)))
            .map(String::as_str)
    };
    let context = chunk.context;
    let change_id =
        lookup(&["maestro.change_id", "change_id", "git.commit"]).or(context.change_id.as_deref());
    let service = lookup(&["maestro.service", "service"]).or(context.service.as_deref());
    let default_run_id;
    let run_id =
        match lookup(&["maestro.run_id", "run_id", "ci.run_id"]).or(context.run_id.as_deref()) {
            Some(run_id) => run_id,
            None => {
                default_run_id = format!(
                    "report-{}",
                    &chunk.source_sha256[..chunk.source_sha256.len().min(16)]
                );
                &default_run_id
            }
        };
    let property_time = lookup(&["maestro.started_at", "started_at"]).map(|t| (Ts::parse(t), t));
    let suite_time = std::iter::once(&suite)
        .chain(suites.iter().rev())
        .find_map(|s| s.timestamp);
    let suite_name = std::iter::once(&suite)
        .chain(suites.iter().rev())
        .find_map(|s| s.name.as_deref())
        .unwrap_or_default();

    if let Some(declared) = suite
        .declared_tests
        .filter(|n| *n > 0 && !suite.has_cases && suite.cases.is_empty())
    {
        // Counts without testcases carry no test identity to store; say so rather than drop them.
        out.reject(
            None,
            None,
            format!("suite {suite_name:?} declares {declared} tests but lists no <testcase>: nothing to store"),
            suite_name.as_bytes(),
        );
    }
    for case in &suite.cases {
        out.read += 1;
        let attributes = case_attributes(&case.tag);
        let unnamed_label;
        let name: &str = match &attributes.name {
            Some(name) => name,
            None => {
                report.unnamed += 1;
                unnamed_label = format!("(unnamed testcase {})", report.unnamed);
                &unnamed_label
            }
        };
        let classname = attributes.classname.as_deref();
        let started_at = match (&property_time, attributes.timestamp) {
            (_, Some(at)) => at,
            (Some((Some(at), _)), None) => *at,
            (Some((None, text)), None) => {
                out.rejected.push(case_rejection(
                    case,
                    classname,
                    name,
                    format!("property maestro.started_at {text:?} is not a time"),
                ));
                continue;
            }
            (None, None) => match context.at.or(suite_time) {
                Some(at) => at,
                None => {
                    out.rejected.push(case_rejection(
                        case,
                        classname,
                        name,
                        "no time: the report has no timestamp and no --at was given".into(),
                    ));
                    continue;
                }
            },
        };
        report.test_id.clear();
        if let Some(class) = classname {
            report.test_id.push_str(class);
            report.test_id.push_str("::");
        }
        report.test_id.push_str(name);
        let main_message = case
            .outcomes
            .iter()
            .find(|(kind, _)| matches!(kind, Outcome::Error | Outcome::Failure | Outcome::Skipped))
            .and_then(|(_, m)| m.as_deref());
        // Attempts in order: flaky failures (before the final pass), the main result, reruns.
        let retries = |before_pass: bool| {
            case.outcomes.iter().filter_map(move |(kind, message)| {
                let status = match (kind, before_pass) {
                    (Outcome::FlakyFailure, true) | (Outcome::RerunFailure, false) => {
                        Status::Failed
                    }
                    (Outcome::FlakyError, true) | (Outcome::RerunError, false) => Status::Error,
                    _ => return None,
                };
                Some((status, message.as_deref(), None))
            })
        };
        let runs = retries(true)
            .chain(std::iter::once((
                main_status(case, attributes.status.as_deref()),
                main_message,
                attributes.duration_s,
            )))
            .chain(retries(false));
        for (status, message, duration_s) in runs {
            out.test_results.push(&TestResultRef {
                run_id,
                change_id,
                service,
                suite: suite_name,
                test_id: &report.test_id,
                classname,
                name,
                file: attributes.file.as_deref(),
                status: status.name(),
                duration_s,
                // Numbered when the report is read whole.
                attempt: 0,
                started_at,
                message,
                source_format: "junit",
            });
        }
    }
    if !suite.cases.is_empty() {
        suites.iter_mut().for_each(|s| s.has_cases = true);
    }
    Ok(())
}

fn main_status(case: &Case<'_>, status_attribute: Option<&str>) -> Status {
    let has = |kind: Outcome| case.outcomes.iter().any(|(k, _)| *k == kind);
    if has(Outcome::Error) {
        return Status::Error;
    }
    if has(Outcome::Failure) {
        return Status::Failed;
    }
    if has(Outcome::Skipped) {
        return Status::Skipped;
    }
    match status_attribute.map(str::to_ascii_lowercase).as_deref() {
        Some("failed" | "failure" | "fail") => Status::Failed,
        Some("error" | "errored") => Status::Error,
        Some("skipped" | "disabled" | "notrun" | "ignored" | "skip") => Status::Skipped,
        _ => Status::Passed,
    }
}

fn case_rejection(
    case: &Case<'_>,
    classname: Option<&str>,
    name: &str,
    reason: String,
) -> super::RejectedRecord {
    super::RejectedRecord {
        line: None,
        byte_offset: Some(case.offset),
        reason,
        raw: format!(
            "<testcase classname={:?} name={:?}>",
            classname.unwrap_or(""),
            name
        ),
    }
}

fn suite_from(tag: &str) -> Suite<'static> {
    let mut suite = Suite::default();
    for_each_attribute(tag, |key, value| match key {
        "name" => suite.name = Some(value.into_owned()),
        "timestamp" => suite.timestamp = Ts::parse(&value),
        "tests" => suite.declared_tests = value.trim().parse().ok(),
        _ => {}
    });
    // Room for the cases the suite declares, within reason: the count is the producer's word.
    let declared = suite.declared_tests.unwrap_or_default().min(4096);
    suite.cases.reserve(declared as usize);
    suite
}

fn case_attributes(tag: &str) -> CaseAttributes<'_> {
    let mut case = CaseAttributes::default();
    for_each_attribute(tag, |key, value| match key {
        "name" => case.name = Some(value),
        "classname" => case.classname = Some(value),
        "class" => case.classname = case.classname.take().or(Some(value)),
        "file" => case.file = Some(value),
        "time" => case.duration_s = parse_seconds(&value),
        "timestamp" => case.timestamp = Ts::parse(&value),
        "status" => case.status = Some(value),
        "result" => case.status = case.status.take().or(Some(value)),
        _ => {}
    });
    case
}

/// Seconds as producers write them, some with thousands separators ("1,234.5").
fn parse_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    text.parse().ok().or_else(|| {
        text.contains(',')
            .then(|| text.replace(',', "").parse().ok())?
    })
}

/// Calls `visit` with each non-empty attribute of a start tag (`<name a="1" b='2'/>`, with any
/// space before it): (local name, value with predefined and numeric entities expanded; a value
/// whose entities cannot be expanded is kept as written). Values borrow the tag unless they hold
/// entities.
///
/// quick-xml has found the tag's end with its quotes balanced; this only splits the pairs.
/// quick-xml's own attribute iterator steps byte by byte and checks each value's UTF-8 again,
/// and took as long as the rest of the parse of a report: the report is checked once.
fn for_each_attribute<'t>(tag: &'t str, mut visit: impl FnMut(&str, Cow<'t, str>)) {
    let bytes = tag.as_bytes();
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    // Past `<` and the element's name.
    let Some(open) = memchr::memchr(b'<', bytes) else {
        return;
    };
    let mut at = open + 1;
    while at < bytes.len() && !is_space(bytes[at]) && !matches!(bytes[at], b'/' | b'>') {
        at += 1;
    }
    // Each pair: space, key, `=` with optional space around it, then a quoted value.
    while let Some(eq) = find_either(&bytes[at..], b'=', b'=').map(|i| at + i) {
        let key = tag[at..eq].trim_ascii();
        let mut start = eq + 1;
        while start < bytes.len() && is_space(bytes[start]) {
            start += 1;
        }
        let Some(&quote @ (b'"' | b'\'')) = bytes.get(start) else {
            return;
        };
        // The closing quote, noting on the way whether the value holds an entity.
        let mut end = start + 1;
        let mut has_entity = false;
        loop {
            match find_either(&bytes[end..], quote, b'&') {
                Some(i) if bytes[end + i] == b'&' => {
                    has_entity = true;
                    end += i + 1;
                }
                Some(i) => {
                    end += i;
                    break;
                }
                None => return,
            }
        }
        let raw = &tag[start + 1..end];
        at = end + 1;
        let value = if has_entity {
            quick_xml::escape::unescape(raw).unwrap_or(Cow::Borrowed(raw))
        } else {
            Cow::Borrowed(raw)
        };
        if !value.is_empty() {
            let local_name = match key.bytes().rposition(|b| b == b':') {
                Some(colon) => &key[colon + 1..],
                None => key,
            };
            visit(local_name, value);
        }
    }
}

/// Where `a` or `b` first occurs in `bytes`. Attribute keys and values are a few words long:
/// looking at eight bytes at a time, in registers, costs less on them than memchr's dispatch
/// and vector set-up, which took a tenth of the parse of a report.
fn find_either(bytes: &[u8], a: u8, b: u8) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // The high bit of each byte of `word` that is zero is set, and maybe those of bytes above
    // one (from the borrow): the lowest bit set is the first zero byte, read little-endian.
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let first_in = |word: u64| {
        let found = zero_bytes(word ^ (ONES * a as u64)) | zero_bytes(word ^ (ONES * b as u64));
        (found != 0).then(|| found.trailing_zeros() as usize / 8)
    };
    let word_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let len = bytes.len();
    if len < 8 {
        return bytes.iter().position(|&c| c == a || c == b);
    }
    let mut at = 0;
    while at + 8 <= len {
        if let Some(i) = first_in(word_at(at)) {
            return Some(at + i);
        }
        at += 8;
    }
    // The last eight bytes, some already seen and found clear: a match is among the new ones.
    (at < len)
        .then(|| first_in(word_at(len - 8)).map(|i| len - 8 + i))
        .flatten()
}

/// An attribute's value, unescaped when it can be (predefined and numeric entities only).
fn attr(tag: &str, key: &str) -> Option<String> {
    let mut found = None;
    for_each_attribute(tag, |name, value| {
        if found.is_none() && name == key {
            found = Some(value.into_owned());
        }
    });
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::readers::ReportContext;

    fn read_xml(xml: &str, context: &ReportContext) -> Records {
        let chunk = Chunk::whole_file(xml.as_bytes(), "abcdef0123456789ff", None, context);
        let mut out = Records::default();
        read(&chunk, &mut out);
        out
    }

    #[test]
    fn find_either_finds_the_first_of_two_bytes_wherever_it_is() {
        for len in 0..=19 {
            assert_eq!(find_either(&vec![b'a'; len], b'=', b'"'), None);
            for at in 0..len {
                for (first, second) in [(b'=', b'"'), (b'"', b'=')] {
                    let mut text = vec![b'a'; len];
                    text[at] = first;
                    text[len - 1] = if at == len - 1 { first } else { second };
                    let found = find_either(&text, b'=', b'"');
                    assert_eq!(found, Some(at), "{} at {at} of {len}", first as char);
                }
            }
        }
        assert_eq!(find_either("é=".as_bytes(), b'=', b'='), Some(2));
    }

    #[test]
    fn properties_name_change_run_and_service() {
        let xml = r#"<testsuite name="s" timestamp="2024-03-01T10:00:00">
            <properties><property name="maestro.change_id" value="c9"/><property name="maestro.service" value="api"/>
            <property name="maestro.run_id" value="run-7"/></properties>
            <testcase classname="A" name="t" time="1,5"/></testsuite>"#;
        let out = read_xml(xml, &ReportContext::default());
        let rows = out.test_results.rows();
        let row = &rows[0];
        assert_eq!(row.change_id.as_deref(), Some("c9"));
        assert_eq!(row.service.as_deref(), Some("api"));
        assert_eq!(&*row.run_id, "run-7");
        assert_eq!(row.started_at, Ts::parse("2024-03-01T10:00:00Z").unwrap());
    }

    #[test]
    fn flaky_reruns_become_attempts() {
        let xml = r#"<testsuite name="s"><testcase classname="A" name="t" time="2">
            <flakyFailure message="boom"/><flakyError message="bang"/></testcase></testsuite>"#;
        let context = ReportContext {
            at: Some(Ts(0)),
            ..Default::default()
        };
        let out = read_xml(xml, &context);
        let rows = out.test_results.rows();
        let statuses: Vec<_> = rows.iter().map(|r| (r.attempt, &*r.status)).collect();
        assert_eq!(statuses, [(1, "failed"), (2, "error"), (3, "passed")]);
        assert_eq!(out.read, 1);
    }

    #[test]
    fn a_test_repeated_in_a_run_is_its_next_attempt_and_runs_count_apart() {
        let suite = |run: &str| {
            format!(
                r#"<testsuite name="s"><properties><property name="maestro.run_id" value="{run}"/>
                </properties><testcase classname="A" name="t"/><testcase classname="A" name="u"/></testsuite>"#
            )
        };
        let xml = format!(
            "<testsuites>{}{}{}</testsuites>",
            suite("r1"),
            suite("r2"),
            suite("r1")
        );
        let context = ReportContext {
            at: Some(Ts(0)),
            ..Default::default()
        };
        let rows = read_xml(&xml, &context).test_results.rows();
        let attempts: Vec<_> = rows
            .iter()
            .map(|r| (&*r.run_id, r.test_id.as_str(), r.attempt))
            .collect();
        assert_eq!(
            attempts,
            [
                ("r1", "A::t", 1),
                ("r1", "A::u", 1),
                ("r2", "A::t", 1),
                ("r2", "A::u", 1),
                ("r1", "A::t", 2),
                ("r1", "A::u", 2)
            ]
        );
    }

    #[test]
    fn without_any_time_a_case_is_rejected_not_dropped() {
        let out = read_xml(
            r#"<testsuite><testcase name="t"/></testsuite>"#,
            &ReportContext::default(),
        );
        assert_eq!((out.read, out.accepted()), (1, 0));
        assert!(out.rejected[0].reason.contains("--at"));
    }

    #[test]
    fn attributes_split_as_xml_writes_them() {
        let tag = "\n  <x:testcase a = 'one' xsi:b=\"t&lt;&#x41;\" c=\"a>b\" d=\"\" e=\"&bogus;\"\tf='x\"y'/>";
        let mut seen = Vec::new();
        for_each_attribute(tag, |key, value| {
            seen.push((key.to_string(), value.into_owned()))
        });
        let expected = [
            ("a", "one"),
            ("b", "t<A"),
            ("c", "a>b"),
            ("e", "&bogus;"),
            ("f", "x\"y"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(
            attr("<property name='k' value=\"v\">", "value").as_deref(),
            Some("v")
        );
        // A tag cut short keeps the pairs before the cut.
        assert_eq!(
            attr("<testcase name=\"n\" time=\"1", "name").as_deref(),
            Some("n")
        );
        assert_eq!(attr("<testcase name=\"n\" time=\"1", "time"), None);
    }

    #[test]
    fn a_report_that_is_not_utf8_keeps_its_other_characters() {
        let xml = b"<testsuite name=\"s\" timestamp=\"2024-03-01T10:00:00\"><testcase name=\"caf\xe9\" classname=\"A\"/></testsuite>";
        let context = ReportContext::default();
        let chunk = Chunk::whole_file(xml, "abcdef0123456789ff", None, &context);
        let mut out = Records::default();
        read(&chunk, &mut out);
        let rows = out.test_results.rows();
        assert_eq!(rows[0].name, "caf\u{fffd}");
        assert_eq!(rows[0].classname.as_deref(), Some("A"));
    }

    #[test]
    fn truncated_and_entity_bombs_are_rejected_whole() {
        let context = ReportContext {
            at: Some(Ts(0)),
            ..Default::default()
        };
        let truncated = read_xml(
            r#"<testsuite name="s"><testcase name="a"/><testcase name="b"#,
            &context,
        );
        assert_eq!((truncated.read, truncated.test_results.len()), (1, 0));
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
            <testsuite name="s"><testcase name="&lol2;"/></testsuite>"#;
        let out = read_xml(bomb, &context);
        assert_eq!(out.read, 1);
        assert!(out.test_results.rows().iter().all(|r| r.name.len() < 100));
    }
}
