"""examples/harness_study.py: the grid it runs and the report it writes (on fake runs)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("scipy")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harness_study.py"


@pytest.fixture(scope="module")
def study() -> Any:
    spec = importlib.util.spec_from_file_location("harness_study", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_runs_capacity_first_with_fixed_targets(study: Any, tmp_path: Path) -> None:
    jobs = study.study_jobs(tmp_path)
    assert len(jobs) == len(study.SETTINGS) * len(study.STRATEGIES) * len(study.EVAL_SEEDS)
    regimes = [fields["regime"] for _, fields in jobs]
    n_cap = regimes.count("capacity")
    assert n_cap == 2 * 4 * 5 and set(regimes[:n_cap]) == {"capacity"}
    for dest, fields in jobs:
        setting = Path(dest).parent.name
        assert fields["target_accuracy"] == study.TARGETS[setting]
        assert fields["target_metric"] == "personal_accuracy"
        if fields["regime"] == "capacity":
            assert fields["rounds"] >= 60
    assert not set(study.TUNING_SEEDS) & set(study.EVAL_SEEDS)


def _fake_run(out: Path, strategy: str, seed: int, personal: float) -> None:
    rounds = []
    for t in range(1, 61):
        acc = personal * t / 60
        row: dict[str, Any] = dict.fromkeys(study_metrics(), None)
        if t % 5 == 0:
            row.update({m: acc for m in study_metrics()}, fitness_rank_corr=0.6)
        rounds.append({"round": t, **row, "utilization_cv": 0.01, "assignment_churn": 0.2})
    d = {"strategy": strategy, "seed": seed, "utilization_cv": 0.01, "churn": 0.2,
         "target_accuracy": 0.5, "wall_time_s": 1.0, "config": {"rounds": 60, "eval_every": 5},
         "rounds": rounds}
    dest = out / "synthetic-capacity" / f"{strategy}-s{seed}"
    dest.mkdir(parents=True)
    (dest / "result.json").write_text(json.dumps(d))


def study_metrics() -> tuple[str, ...]:
    return ("personal_accuracy", "newcomer_accuracy", "global_accuracy", "pool_accuracy",
            "personal_accuracy_plan", "newcomer_accuracy_plan", "fitness_rank_corr")


def test_report_pairs_by_seed_and_states_targets(study: Any, tmp_path: Path) -> None:
    for seed in range(3):
        _fake_run(tmp_path, "greedy", seed, 0.7)
        _fake_run(tmp_path, "flex", seed, 0.85 + 0.01 * seed)
        _fake_run(tmp_path, "balance", seed, 0.6)
    study.write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    df = study.load_runs(tmp_path)
    # last 3 evaluations (rounds 50, 55, 60) of a linear curve
    flex0 = df[(df.strategy == "flex") & (df.seed == 0)].personal_accuracy.iloc[0]
    assert flex0 == pytest.approx(0.85 * (50 + 55 + 60) / 3 / 60)
    d, lo, hi, n = study.paired_ci(study._by_seed(df, "synthetic-capacity", "flex",
                                                  "personal_accuracy"),
                                   study._by_seed(df, "synthetic-capacity", "greedy",
                                                  "personal_accuracy"))
    assert n == 3 and lo < d < hi and d == pytest.approx(0.16 * 55 / 60)
    assert "## Targets of issue 19" in text
    assert "synthetic-capacity, personal: flex − greedy" in text
    assert "mnist5k-capacity: not run" in text
    assert (tmp_path / "curves.csv").exists() and (tmp_path / "runs.csv").exists()
    # rounds to the fixed target 0.75: flex reaches it at round 55, greedy (0.7) never
    mean, reached, runs = study.rounds_to_target(df, "synthetic-capacity", "flex")
    assert (mean, reached, runs) == (55.0, 3, 3)
    g = study.rounds_to_target(df, "synthetic-capacity", "greedy")
    assert g[1] == 0 and g[0] == 65.0
    assert math.isnan(study.first_reach([], 0.5, math.nan))


def test_pilot_uses_tuning_seeds_and_followup_evaluation_seeds(study: Any, tmp_path: Path
                                                               ) -> None:
    pilot = study.pilot_jobs(tmp_path, list(study.PILOT_VARIANTS))
    assert {f["seed"] for _, f in pilot} == set(study.TUNING_SEEDS)
    follow = study.followup_jobs(tmp_path)
    assert {f["seed"] for _, f in follow} == set(study.EVAL_SEEDS)
    for dest, fields in follow:
        setting = Path(dest).parent.name
        assert fields["target_accuracy"] == study.TARGETS[setting]
        cfg = study._config(fields)   # every job is a valid ExperimentConfig
        assert cfg.seed == fields["seed"]
        if setting.endswith("narrow2"):
            assert cfg.expert_hidden == 2 and cfg.num_domains == 10
        if Path(dest).name.startswith("flex-tol1"):
            assert (cfg.strategy, cfg.tolerance) == ("flex", 1.0)
    # folders are unique: no run overwrites another
    assert len({d for d, _ in pilot + follow}) == len(pilot) + len(follow)


@pytest.mark.parametrize("argv, flag", [
    (["--pilot", "nosuch"], "--pilot"),
    (["--followup", "--seeds", "100"], "--seeds"),
    (["--followup", "--settings", "nosuch"], "--settings"),
    (["--followup", "--variants", "nosuch"], "--variants"),
    (["--followup", "--combine", "no/such/study"], "--combine"),
])
def test_bad_flags_exit_2_with_one_line_naming_them(study: Any, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    argv: list[str], flag: str) -> None:
    with pytest.raises(SystemExit) as exc:
        study.main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in err
    assert not (tmp_path / "out").exists()
