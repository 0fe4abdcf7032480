//! Test selection end to end: pairs are point-in-time correct, and the replay trains only on the
//! past, keeps every ranking it scored, and beats the baselines on generated history.


use maestro_models::network::{ModelKind, TrainConfig};
use maestro_models::test_history::{History, read_changes, read_runs};
use maestro_models::test_selection::{ReplayOptions, Target, build_pairs, replay};

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
