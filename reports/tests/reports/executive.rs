//! The executive report: the same bytes on every run, its text as a snapshot, and a real
//! browser's rendering of its HTML.

use std::process::Command;

use maestro_reports::definitions;
use maestro_reports::executive::{Rendered, build, render};

use super::{reports, runtime, small_lake};

fn executive(lake: &maestro_datasets::Lake) -> Rendered {
    let run = reports(lake, "2026-10-02", "2026-10-02");
    let definitions = definitions::load(None).unwrap();
    let report = runtime().block_on(build(lake, &run, &definitions)).unwrap();
    render(&report).unwrap()
}

#[test]
fn the_report_is_the_same_on_every_run_and_its_text_is_stable() {
    let (_dir, lake) = small_lake();
    let first = executive(&lake);
    let second = executive(&lake);
    assert_eq!(first.html, second.html);
    assert_eq!(first.json, second.json);
    insta::assert_snapshot!("executive_markdown", first.markdown);
    // Every headline of the Markdown is in the HTML and the JSON too.
    for label in [
        "Production deployments",
        "Change failure rate",
        "Compliance alarms",
    ] {
        assert!(
            first.html.contains(label) && first.json.contains(label),
            "{label}"
        );
    }
}

/// Chromium as the project's CI installs it; `None` (with a note) where it is absent, unless
/// MAESTRO_REQUIRE_CHROMIUM is set.
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("MAESTRO_REQUIRE_CHROMIUM").is_none(),
            "MAESTRO_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        eprintln!(
            "chromium not found: the report's rendering is not checked (apt-get install chromium)"
        );
    }
    found
}

#[test]
fn the_html_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        return;
    };
    let (dir, lake) = small_lake();
    let rendered = executive(&lake);
    let page = dir.path().join("report.html");
    std::fs::write(&page, &rendered.html).unwrap();
    let profile = dir.path().join("profile");
    let shot = dir.path().join("report.png");
    let run = |extra: &[&str]| {
        let output = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1000,4000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    // The DOM the browser built: every chart is an SVG element with drawing in it, and every
    // table row made it.
    let dom = run(&["--dump-dom"]);
    let charts = rendered.html.matches("<figure class=\"chart\">").count();
    assert!(charts >= 5, "the report has its charts");
    assert_eq!(
        dom.matches("<svg").count(),
        charts,
        "each chart parsed as SVG"
    );
    assert!(dom.matches("<polyline").count() + dom.matches("<rect").count() > charts);
    assert_eq!(
        dom.matches("<tr data-metric=").count(),
        rendered.json.matches("\"metric\": ").count(),
        "every headline row is in the page"
    );
    // And it paints: a screenshot of the page is far from blank.
    run(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::metadata(&shot).unwrap().len();
    assert!(png > 30_000, "a screenshot of {png} bytes is nearly blank");
}

#[test]
fn prometheus_accepts_the_generated_rules() {
    let (dir, lake) = small_lake();
    let slos = runtime()
        .block_on(async {
            let session = maestro_reports::LakeSession::open(&lake).await?;
            maestro_reports::monitoring::lake_slos(&session).await
        })
        .unwrap();
    let rules = maestro_reports::monitoring::prometheus_rules(&slos);
    assert!(rules.contains("alert: SLOErrorBudgetBurnFast"), "{rules}");
    // Expressions are YAML double-quoted strings, so their quotes are escaped.
    assert!(
        rules.contains(r#"sum(rate(http_server_errors_total{job=\"api\"}[1h]))"#),
        "{rules}"
    );
    // Latency under 250 ms errs by the share above it; a slow share, whose good events lie
    // above 250 ms, errs by the share within it.
    let within = r#"(sum(rate(http_server_duration_milliseconds_bucket{job=\"api\",le=\"250\"}[1h])) / sum(rate(http_server_duration_milliseconds_count{job=\"api\"}[1h])))"#;
    assert!(rules.contains(&format!("1 - {within}")), "{rules}");
    assert!(rules.contains(&format!("\"{within}\"")), "{rules}");
    // api has three SLOs (availability, latency and the slow share), each with two panels.
    let dashboard = maestro_reports::monitoring::grafana_dashboard("api", &slos);
    assert_eq!(dashboard["panels"].as_array().map(Vec::len), Some(6));
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, &rules).unwrap();
    match Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
    {
        Ok(output) => assert!(
            output.status.success(),
            "promtool refused the rules:\n{}{}\n{rules}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(_) => {
            assert!(
                std::env::var_os("MAESTRO_REQUIRE_PROMTOOL").is_none(),
                "MAESTRO_REQUIRE_PROMTOOL is set but promtool is not installed"
            );
            eprintln!("promtool not found: the rules are not checked (apt-get install prometheus)");
        }
    }
}
