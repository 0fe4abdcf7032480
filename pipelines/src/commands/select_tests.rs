//! `maestro select-tests`: the tests a change needs, from the champion test-selection model and
//! the history saved with it, printed with reasons or in a test runner's own syntax.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;

use anyhow::Context;
use maestro_datasets::schema::Ts;
use maestro_datasets::{Lake, WriteMode};
use maestro_models::scoring::DateRange;
use maestro_models::test_registry::{ServedModel, TestRegistry, select_changes};
use maestro_models::test_selection::{
    ChangeRequest, Reason, ServedSelection, Target, TestPick, select_for_change,
};

use crate::Outcome;
use crate::cli::{SelectFormat, SelectTestsArgs};
use crate::config;
use crate::output::print;

pub fn run(args: &SelectTestsArgs, config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    let config = config::load(config_path)?;
    let target = match (&args.budget, args.confidence.or(config.tests.confidence)) {
        (Some(budget), _) => Target::parse_budget(budget)?,
        (None, Some(c)) if c > 0.0 && c <= 1.0 => Target::Confidence(c),
        (None, Some(_)) => anyhow::bail!("--confidence must be above 0 and at most 1"),
        (None, None) => Target::Confidence(0.95),
    };
    let files = match &args.changed_files {
        Some(path) => read_lines(path)?,
        None => args.paths.clone(),
    };
    let tests = args.tests.as_deref().map(read_lines).transpose()?;
    let at = match &args.at {
        Some(text) => {
            Ts::parse(text)
                .with_context(|| format!("--at {text:?} is not an RFC 3339 time"))?
                .0
        }
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_micros() as i64,
    };
    if args.shards == 0 {
        anyhow::bail!("--shards must be at least 1");
    }
    if let Some(shard) = args.shard
        && !(1..=args.shards).contains(&shard)
    {
        anyhow::bail!("--shard {shard} is not one of 1..={}", args.shards);
    }
    let lake = Lake::open_existing(&args.lake.lake)?;
    // The champion the nightly run published; a named version comes from the lake's registry.
    let served = match &args.model {
        Some(version) => TestRegistry::new(lake.root()).load(version)?,
        None => TestRegistry::serving(lake.root()).load_champion()?,
    };
    if args.date.is_some() || args.from.is_some() || args.to.is_some() {
        let range = DateRange {
            from: args.date.clone().or(args.from.clone()),
            to: args.date.clone().or(args.to.clone()),
        };
        print(&record_selections(&lake, &served, target, &config.tests.must_run, &range)?.0)?;
        return Ok(Outcome::Ok);
    }
    let request = ChangeRequest {
        service: args.service.clone(),
        files,
        author: args.author.clone(),
        size: args.lines_changed,
        at,
        tests,
    };
    let mut selection = select_for_change(
        &served.model,
        &served.history,
        &request,
        target,
        &config.tests.must_run,
    )?;
    if args.shards > 1 {
        selection.split_into_shards(args.shards);
    }
    if let Some(shard) = args.shard {
        for test in &mut selection.tests {
            test.selected &= test.shard == Some(shard);
        }
    }
    let text = match args.format {
        SelectFormat::Text => describe(&selection, &served.manifest.version),
        SelectFormat::Json => serde_json::to_string_pretty(&selection)? + "\n",
        format => runner_arguments(&selection, format) + "\n",
    };
    print(&text)?;
    Ok(Outcome::Ok)
}

/// The served model's selection for every change merged in `range`, written to
/// `test_selection` (those dates replaced): a line saying what was written, and the rows
/// written per date.
pub(crate) fn record_selections(
    lake: &Lake,
    served: &ServedModel,
    target: Target,
    must_run: &[String],
    range: &DateRange,
) -> anyhow::Result<(String, std::collections::BTreeMap<String, u64>)> {
    let selections = select_changes(lake, served, target, must_run, range)?;
    let mut txn = lake.begin()?;
    txn.write(&selections.verdicts, WriteMode::ReplacePartitions)?;
    txn.commit()?;
    let (selected, suite) = selections.verdicts.iter().fold((0.0, 0.0), |(s, t), v| {
        (s + v.selected_seconds, t + v.suite_seconds)
    });
    let mut by_date = std::collections::BTreeMap::new();
    for verdict in &selections.verdicts {
        *by_date.entry(verdict.merged_at.date()).or_insert(0) += 1;
    }
    let summary = format!(
        "test_selection: {} changes selected for by {} at {} ({:.1}% of suite time); {} changes of services with no known suite skipped\n",
        selections.verdicts.len(),
        selections.model_version,
        target.label(),
        100.0 * selected / f64::max(suite, f64::MIN_POSITIVE),
        selections.without_suite
    );
    Ok((summary, by_date))
}

/// Non-empty trimmed lines of a file, or of stdin for "-".
fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The selected tests in the syntax a runner takes directly. An empty selection is an
/// expression that selects nothing where the runner has one.
pub(crate) fn runner_arguments(selection: &ServedSelection, format: SelectFormat) -> String {
    let selected: Vec<&TestPick> = selection.tests.iter().filter(|t| t.selected).collect();
    match format {
        SelectFormat::Nextest => {
            if selected.is_empty() {
                return "none()".into();
            }
            selected
                .iter()
                .map(|t| format!("test(={})", t.name))
                .collect::<Vec<_>>()
                .join(" | ")
        }
        SelectFormat::Pytest => selected
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
        SelectFormat::Maven => {
            // Surefire: Class#method+method2, one entry per class, in run order.
            let mut classes: Vec<(String, Vec<&str>)> = Vec::new();
            for t in &selected {
                let class = t.classname.clone().unwrap_or_default();
                match classes.iter_mut().find(|(c, _)| *c == class) {
                    Some((_, methods)) => methods.push(&t.name),
                    None => classes.push((class, vec![&t.name])),
                }
            }
            classes
                .iter()
                .map(|(class, methods)| format!("{class}#{}", methods.join("+")))
                .collect::<Vec<_>>()
                .join(",")
        }
        SelectFormat::Gradle => selected
            .iter()
            .map(|t| match &t.classname {
                Some(class) => format!("--tests {class}.{}", t.name),
                None => format!("--tests {}", t.name),
            })
            .collect::<Vec<_>>()
            .join(" "),
        SelectFormat::Text | SelectFormat::Json => String::new(),
    }
}

/// Every test in run order, with why it runs or does not.
fn describe(selection: &ServedSelection, version: &str) -> String {
    let goal = match selection.target {
        Target::Confidence(c) => format!("confidence {c}"),
        Target::TimeShare(s) => format!("a budget of {:.0}% of suite time", 100.0 * s),
        Target::Seconds(s) => format!("a budget of {s:.0} s"),
    };
    let mut text = format!(
        "{} of {} tests of {} selected by {version} at {goal}: {:.1} s of {:.1} s ({:.1}%), estimated chance of catching a failing change {:.1}%\n",
        selection.selected_tests,
        selection.tests.len(),
        selection.service,
        selection.selected_seconds,
        selection.total_seconds,
        100.0 * selection.selected_seconds / selection.total_seconds.max(f64::MIN_POSITIVE),
        100.0 * selection.confidence
    );
    for (k, seconds) in selection.shard_seconds.iter().enumerate() {
        let _ = writeln!(text, "  shard {}: {seconds:.1} s", k + 1);
    }
    let _ = writeln!(
        text,
        "  {:<4} {:>5} {:<56} {:>11} {:>9}  reason",
        "run", "shard", "test", "probability", "seconds"
    );
    for t in &selection.tests {
        let reason = match t.reason {
            Reason::NewTest => "new test: never seen, always run",
            Reason::MustRun => "must-run in maestro.toml",
            Reason::Ranked => "likely to fail for this change, per second of test time",
            Reason::Skipped => "skipped: the target was met without it",
        };
        let _ = writeln!(
            text,
            "  {:<4} {:>5} {:<56} {:>11} {:>9.2}  {reason}",
            if t.selected { "yes" } else { "no" },
            t.shard.map_or(String::new(), |k| k.to_string()),
            t.test_id,
            t.probability
                .map_or("n/a".to_string(), |p| format!("{p:.4}")),
            t.duration_s
        );
    }
    text
}
