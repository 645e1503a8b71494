"""Issue 19 A-C in the harness: probe deployment, training-time probe rows reported to
the planner, their cost, ``fitness_rank_corr``, ``churn`` and the CLI's bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from fl_harness import cli  # noqa: E402
from fl_harness.config import ExperimentConfig  # noqa: E402
from fl_harness.data import load_dataset  # noqa: E402
from fl_harness.deploy import ProbeCost, deploy_clients, probe_experts  # noqa: E402
from fl_harness.evaluation import evaluate_round  # noqa: E402
from fl_harness.experiment import run_experiment  # noqa: E402
from fl_harness.federation import SeedStreams, make_planner, setup_clients  # noqa: E402
from fl_harness.model import MoEModel  # noqa: E402
from flexassign.alignment import Planner, ProbeFeedback  # noqa: E402

pytestmark = pytest.mark.torch

TINY = dict(dataset="synthetic", num_samples=400, rounds=3, num_clients=8,
            client_fraction=0.5, local_epochs=1, hidden=8, expert_hidden=8,
            finetune_steps=3, num_experts=4)


def _model(e: int = 4) -> MoEModel:
    return MoEModel(in_features=6, num_classes=3, num_experts=e, hidden=8, expert_hidden=8,
                    generator=torch.Generator().manual_seed(1))


def test_probe_matches_each_expert_alone() -> None:
    m = _model()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 6, generator=g), torch.randint(0, 3, (20,), generator=g)
    p = probe_experts(m, [3, 1], x, y)
    assert p.experts == (3, 1) and p.count == 20 and p.accuracy is not None
    with torch.no_grad():
        for e, loss, acc in zip(p.experts, p.loss, p.accuracy, strict=True):
            logits = m.head(torch.relu(m.experts[str(e)](m.features(x))))
            assert loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
            assert acc == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    with pytest.raises(ValueError, match="`x` is empty"):
        probe_experts(m, [0], x[:0], y[:0])


def test_deploy_keeps_the_k_lowest_loss_experts() -> None:
    m = _model(5)
    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(15, 6, generator=g), torch.randint(0, 3, (15,), generator=g))
            for _ in range(3)]
    chosen, probes = deploy_clients(m, data, [1, 2, 9])
    for ids, p, k in zip(chosen, probes, (1, 2, 5), strict=True):
        assert len(ids) == k and p.experts == (0, 1, 2, 3, 4)
        worst_kept = max(p.loss[e] for e in ids)
        assert all(p.loss[e] >= worst_kept for e in set(range(5)) - set(ids))


def test_probe_cost_counts_extra_downloads() -> None:
    p = ProbeFeedback(experts=[0, 2, 3], loss=[1.0, 2.0, 3.0], count=5)
    c = ProbeCost.of({"a": p, "b": p}, {"a": (0,), "b": (2, 3)}, {0: 4, 1: 4, 2: 8, 3: 8})
    assert (c.probes, c.experts_probed, c.extra_downloads, c.extra_bytes, c.forward_passes) \
        == (2, 6, 3, 8 + 8 + 4, 30)


def test_validation_slice_is_disjoint_and_newcomers_have_none() -> None:
    cfg = ExperimentConfig(**TINY, probe_fraction=0.25)
    data = load_dataset(cfg.dataset, seed=0, num_samples=cfg.num_samples)
    clients = setup_clients(cfg, data, SeedStreams.from_seed(0))
    for c in clients:
        assert c.y_val is not None
        if c.newcomer:
            assert len(c.y_val) == 0 and not c.has_val
            continue
        n = len(c.y) + len(c.y_val)
        assert len(c.y_val) == int(0.25 * n) and len(c.y) >= 1
        rows = {tuple(r) for r in c.x.numpy().round(5)}
        assert not rows & {tuple(r) for r in c.x_val.numpy().round(5)}
        assert not rows & {tuple(r) for r in c.x_test.numpy().round(5)}
    off = setup_clients(cfg.replace(probe_fraction=0.0), data, SeedStreams.from_seed(0))
    assert all(not c.has_val for c in off)


def _trained_clients(cfg: ExperimentConfig) -> tuple[Any, MoEModel, list[Any]]:
    data = load_dataset(cfg.dataset, seed=0, num_samples=cfg.num_samples)
    clients = setup_clients(cfg, data, SeedStreams.from_seed(0))
    planner = make_planner(cfg, clients)
    m = MoEModel(in_features=data.num_features, num_classes=data.num_classes,
                 num_experts=cfg.num_experts, hidden=8, expert_hidden=8)
    for c in clients:
        if not c.newcomer:
            c.router = {k: v.clone() for k, v in m.router.state_dict().items()}
            c.held = (0,)
    return planner, m, clients


def test_evaluate_round_plan_vs_probe() -> None:
    cfg = ExperimentConfig(**TINY)
    planner, m, clients = _trained_clients(cfg)
    test = (clients[0].x_test, clients[0].y_test)
    init = {k: v.clone() for k, v in m.router.state_dict().items()}
    newcomer_plan = {c.cid: (1,) for c in clients if c.newcomer}
    assert np.isnan(evaluate_round(m, clients, newcomer_plan, init, test, finetune_steps=0,
                                   planner=planner)["fitness_rank_corr"])  # rows constant
    for c in clients:
        planner.report_probe(c.cid, ProbeFeedback(experts=range(4), loss=[0.1, 0.2, 0.4, 0.3],
                                                  count=3))
    plan = evaluate_round(m, clients, newcomer_plan, init, test, finetune_steps=2,
                          deploy="plan", planner=planner)
    probe = evaluate_round(m, clients, newcomer_plan, init, test, finetune_steps=2,
                           deploy="probe", planner=planner)
    assert plan["personal_accuracy"] == plan["personal_accuracy_plan"]
    assert plan["newcomer_accuracy"] == plan["newcomer_accuracy_plan"]
    # the plan-deployed values do not depend on the deployment mode
    assert probe["personal_accuracy_plan"] == plan["personal_accuracy_plan"]
    assert probe["newcomer_accuracy_plan"] == plan["newcomer_accuracy_plan"]
    assert -1.0 <= probe["fitness_rank_corr"] <= 1.0
    with pytest.raises(ValueError, match="`deploy`"):
        evaluate_round(m, clients, newcomer_plan, init, test, deploy="oracle")


def test_probe_deployment_uses_the_best_experts() -> None:
    """Every client deploys expert 2, the only one that is not broken."""
    cfg = ExperimentConfig(**TINY)
    _, m, clients = _trained_clients(cfg)
    with torch.no_grad():
        for e in (0, 1, 3):
            for p in m.experts[str(e)].parameters():
                p.mul_(0.0)
            m.experts[str(e)][2].bias.fill_(1e3)   # huge logits: a terrible fit
    init = {k: v.clone() for k, v in m.router.state_dict().items()}
    test = (clients[0].x_test, clients[0].y_test)
    chosen, _ = deploy_clients(m, [(c.x, c.y) for c in clients], [1] * len(clients))
    assert all(ids == (2,) for ids in chosen)
    out = evaluate_round(m, clients, {}, init, test, finetune_steps=0, deploy="probe",
                         capacity_of=lambda c: 1)
    assert out["newcomer_accuracy"] == out["newcomer_accuracy"]   # not NaN: all deploy
    assert np.isnan(out["newcomer_accuracy_plan"])                  # nothing planned


class _Spy(Planner):
    probes: list[tuple[str, ProbeFeedback]]

    def report_probe(self, client_id: Any, probe: ProbeFeedback) -> None:
        self.probes.append((client_id, probe))
        super().report_probe(client_id, probe)


def _spy(cfg: ExperimentConfig) -> _Spy:
    p = _Spy(num_experts=cfg.num_experts, strategy=cfg.strategy, seed=cfg.seed)
    p.probes = []
    return p


def test_run_reports_probe_rows_and_counts_their_cost() -> None:
    planners: list[_Spy] = []

    def factory(cfg: ExperimentConfig) -> _Spy:
        planners.append(_spy(cfg))
        return planners[-1]

    cfg = ExperimentConfig(**TINY, probe_experts=1)
    r = run_experiment(cfg, planner_factory=factory)
    probes = planners[0].probes
    trained = sum(rec.selected - rec.dropped - rec.diverged for rec in r.rounds)
    assert len(probes) == trained == sum(rec.probe_clients for rec in r.rounds) > 0
    caps = r.capacities
    for cid, p in probes:          # at least 2 k_c candidates, as the planner picks them
        assert len(p.experts) >= min(cfg.num_experts, 2 * caps[cid])
    assert sum(rec.probe_pairs for rec in r.rounds) == sum(len(p.experts) for _, p in probes)
    s = r.summary()
    assert s["probe_forward_per_round"] > 0 and s["probe_downloads_per_round"] >= 0
    for key in ("churn", "fitness_rank_corr", "personal_accuracy_plan",
                "newcomer_accuracy_plan", "rounds_to_target"):
        assert key in s
    off = run_experiment(cfg.replace(probe_fraction=0.0), planner_factory=factory)
    assert planners[1].probes == [] and off.summary()["probe_forward_per_round"] == 0


def test_result_json_and_target_metric(tmp_path: Path) -> None:
    cfg = ExperimentConfig(**TINY, target_metric="personal_accuracy", target_accuracy=0.0,
                           deploy="plan")
    r = run_experiment(cfg)
    assert r.rounds_to_target == 1        # any accuracy reaches 0
    d = json.loads((r.save(tmp_path) / "result.json").read_text())
    assert d["deploy"] == "plan" and d["target_metric"] == "personal_accuracy"
    assert d["personal_accuracy"] == d["personal_accuracy_plan"]
    assert "churn" in d and "fitness_rank_corr" in d and "probe_bytes_per_round" in d


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--planner-options", '{"stickiness": -1}'],
         "`--planner-options`: `stickiness` must be finite and >= 0"),
        (["run", "--planner-options", '{"balance_window": 0}'],
         "`--planner-options`: `balance_window` must be >= 1"),
        (["run", "--planner-options", '{"balance_window": 2.5}'],
         "`--planner-options`: `balance_window`"),
        (["run", "--probe-fraction", "0.9"], "`--probe-fraction` must be"),
        (["run", "--probe-experts", "-1"], "`--probe-experts`"),
        (["run", "--deploy", "oracle"], "argument --deploy: invalid choice"),
    ],
)
def test_bad_stability_and_probe_flags(argv: list[str], needle: str,
                                       capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    out = tmp_path / "never"
    try:
        code = cli.main([*argv, "--out", str(out)])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not out.exists()


def test_cli_accepts_stickiness_and_window(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--dataset", "synthetic", "--num-samples", "300", "--rounds", "2",
            "--clients", "6", "--fraction", "0.5", "--epochs", "1", "--quiet",
            "--experts", "4", "--deploy", "probe", "--no-plots", "--out", str(tmp_path),
            "--planner-options", '{"stickiness": 0.2, "balance_window": 3}']
    assert cli.main(argv) == 0
    d = json.loads((tmp_path / "result.json").read_text())
    assert dict(d["config"]["planner_options"]) == {"stickiness": 0.2, "balance_window": 3}
    assert "churn" in json.loads(capsys.readouterr().out.splitlines()[0])
