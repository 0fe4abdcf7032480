//! Test selection end to end: pairs are point-in-time correct, the replay trains only on the
//! past, keeps every ranking it scored, and beats the baselines on generated history, and a
//! stored model serves a change's selection from its saved history.

use maestro_models::network::{ModelKind, TrainConfig};
use maestro_models::test_history::PAIR_FEATURES;
use maestro_models::test_history::{History, read_changes, read_runs};
use maestro_models::test_registry::{TestRegistry, train_tests};
use maestro_models::test_selection::{
    ChangeRequest, PairWindow, Reason, ReplayOptions, Target, build_pairs, build_pairs_within,
    replay, select_for_change,
};

use crate::lake_with_history;

#[test]
fn pairs_of_a_run_do_not_depend_on_later_runs() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_history(dir.path(), 20);
    let runs = read_runs(&lake).unwrap();
    let changes = read_changes(&lake).unwrap();
    assert!(runs.windows(2).all(|w| w[0].at <= w[1].at));
    let (all, _) = build_pairs(&runs, &changes, History::default());
    let half = runs.len() / 2;
    let (early, _) = build_pairs(&runs[..half], &changes, History::default());
    assert!(!early.is_empty());
    assert_eq!(all.values[..early.values.len()], early.values[..]);
    // Some pairs failed and some tests were flaky, and flaky ones are not labelled failed.
    assert!(all.failed.iter().any(|f| *f));
    let flaky_failed = runs
        .iter()
        .flat_map(|r| &r.tests)
        .any(|t| t.outcome == maestro_models::test_history::Outcome::Flaky);
    assert!(flaky_failed, "the generator writes flaky reruns");

    // A window keeps the same pairs, with the same features, as the whole walk: every pair from
    // its start and the newest ones before it, and it ends in the same history.
    let from = runs[half].at;
    let start = all.at.partition_point(|at| *at < from);
    let window = PairWindow { from, before: 7 };
    let (kept, history) = build_pairs_within(&runs, &changes, History::default(), window);
    let (_, whole_history) = build_pairs(&runs, &changes, History::default());
    let width = PAIR_FEATURES.len();
    assert_eq!(kept.len(), all.len() - (start - 7));
    assert_eq!(kept.values[..], all.values[(start - 7) * width..]);
    assert_eq!(kept.run[..], all.run[start - 7..]);
    assert_eq!(kept.test[..], all.test[start - 7..]);
    assert_eq!(
        serde_json::to_string(&history).unwrap(),
        serde_json::to_string(&whole_history).unwrap()
    );
}

#[test]
fn the_replay_beats_its_baselines_and_keeps_every_ranking() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_history(dir.path(), 30);
    let options = ReplayOptions {
        retrain_days: 8,
        train: TrainConfig {
            kind: ModelKind::Logistic,
            max_epochs: 30,
            batch_size: 512,
            ..Default::default()
        },
        target: Target::Confidence(0.95),
        ..Default::default()
    };
    let report = replay(&lake, &options).unwrap();
    assert!(report.trainings >= 2);
    let rows_per_policy = report.rows.len() / report.policies.len();
    assert_eq!(
        report.rows.iter().filter(|r| r.policy == "model").count(),
        rows_per_policy
    );
    // Recomputing the model's share of failing tests caught from its rows gives the figure.
    let model_rows: Vec<_> = report.rows.iter().filter(|r| r.policy == "model").collect();
    let failing = model_rows.iter().filter(|r| r.outcome == "failed").count();
    let caught = model_rows
        .iter()
        .filter(|r| r.outcome == "failed" && r.selected)
        .count();
    let model = &report.policies[0];
    assert_eq!(model.policy, "model");
    assert!((model.failing_tests_caught - caught as f64 / failing as f64).abs() < 1e-12);
    let run_all = &report.policies[1];
    assert_eq!(run_all.time_share, 1.0);
    assert!(model.time_share < 0.5, "{model:?}");
    for baseline in &report.policies[2..] {
        assert!(model.apfd > baseline.apfd, "{model:?} vs {baseline:?}");
        assert!(
            model.failing_changes_caught > baseline.failing_changes_caught,
            "{model:?} vs {baseline:?}"
        );
    }
    // The same history and seed give the same replay.
    let again = replay(&lake, &options).unwrap();
    assert_eq!(again.policies, report.policies);
}

#[test]
fn a_stored_model_serves_selections_and_refuses_a_changed_history() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_history(dir.path(), 24);
    let options = ReplayOptions {
        train: TrainConfig {
            kind: ModelKind::Logistic,
            max_epochs: 30,
            batch_size: 512,
            ..Default::default()
        },
        ..Default::default()
    };
    let outcome = train_tests(&lake, &options, 0.2).unwrap();
    assert!(outcome.promoted, "{}", outcome.reason);
    let manifest = &outcome.manifest;
    assert!(manifest.training.rows > 0 && manifest.held_back.changes > 0);
    assert!(manifest.training.to < manifest.history_runs_until);
    let registry = TestRegistry::new(lake.root());
    assert_eq!(
        registry.champion().unwrap().as_deref(),
        Some(manifest.version.as_str())
    );
    assert!(
        registry
            .card(&manifest.version)
            .unwrap()
            .contains("Held-back replay")
    );

    let served = registry.load_champion().unwrap();
    // Every test seen has a health row; the generator's flaky tests surface for quarantine.
    assert_eq!(outcome.health_rows, served.history.test_count());
    assert!(outcome.quarantine > 0 && outcome.quarantine < outcome.health_rows / 4);
    let service = served.history.services().next().unwrap().to_string();
    let suite = served.history.suite(&service).to_vec();
    let state = served.history.test(&suite[0]).unwrap();
    // A change to the first test's own module, and a test CI knows but history does not.
    let module_file = state
        .file
        .as_deref()
        .and_then(|f| f.strip_prefix("tests/"))
        .and_then(|f| f.strip_suffix("_test.rs"))
        .map(|module| format!("src/{module}/api_1.rs"))
        .unwrap();
    let mut tests = suite.clone();
    tests.push("brand.new_test::test_it".to_string());
    let request = ChangeRequest {
        service: Some(service.clone()),
        files: vec![module_file],
        at: served.manifest.history_runs_until,
        tests: Some(tests),
        ..Default::default()
    };
    let must_run = vec![suite[1].clone()];
    let selection = select_for_change(
        &served.model,
        &served.history,
        &request,
        Target::Confidence(0.9),
        &must_run,
    )
    .unwrap();
    assert_eq!(selection.tests.len(), suite.len() + 1);
    let new = selection
        .tests
        .iter()
        .find(|t| t.test_id == "brand.new_test::test_it")
        .unwrap();
    assert_eq!((new.reason, new.probability), (Reason::NewTest, None));
    let forced = selection
        .tests
        .iter()
        .find(|t| t.test_id == suite[1])
        .unwrap();
    assert_eq!(forced.reason, Reason::MustRun);
    assert!(
        selection.selected_tests < selection.tests.len(),
        "a change to one module does not need every test"
    );
    // Selected tests come first.
    let first_skipped = selection.tests.iter().position(|t| !t.selected).unwrap();
    assert!(selection.tests[first_skipped..].iter().all(|t| !t.selected));

    // Without files, history alone still ranks; a budget of 0 s keeps only the forced tests.
    let history_only = ChangeRequest {
        files: Vec::new(),
        ..request.clone()
    };
    let lean = select_for_change(
        &served.model,
        &served.history,
        &history_only,
        Target::Seconds(0.0),
        &must_run,
    )
    .unwrap();
    assert_eq!(lean.selected_tests, 2);

    // A history edited after training is refused.
    let path = registry.root().join(&manifest.version).join("history.json");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(b' ');
    std::fs::write(&path, bytes).unwrap();
    let error = registry.load(&manifest.version).err().unwrap().to_string();
    assert!(error.contains("sha256"), "{error}");
}
