"""The FLEX-MoE Flower app in Flower's simulation engine (Ray backend, in-process).

Four supernodes, two rounds, every node sampled; node ``partition-id = 1`` raises in
round 2. Checks: each node received exactly its planned experts (and nothing else),
the plan's expert loads stayed within the planner's bounds, the new global experts
(including partially-trained ones) equal hand-computed usage-weighted means of the
valid replies, and the failure left the global state and the planner consistent.
The same configuration run by the harness (:func:`fl_harness.experiment.run_experiment`)
makes the same planner decisions from the same feedback.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # loopback only: no telemetry
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")
pytest.importorskip("torch")

from flwr.app import ConfigRecord, Context, Message
from flwr.simulation import run_simulation

from fl_harness.flower import make_client_app, make_server_app
from fl_harness.flower.client import handle_train, node_partition
from fl_harness.flower.harness import experiment_config
from fl_harness.flower.server import make_planner
from flexassign.integrations.flower import ExpertLayout
from flexassign.integrations.flower.messages import (
    arrayrecord_to_numpy,
    decode_train_instruction,
    decode_train_reply,
    expert_weights,
)

split_state = ExpertLayout().split

pytestmark = pytest.mark.flower

NUM_NODES = 4
FAILING_PARTITION, FAILING_ROUND = 1, 2
RUN_CONFIG: dict[str, Any] = {
    "dataset": "synthetic",
    "num-samples": 400,
    "partition": "iid",
    "capacity-choices": "1,2,3",
    "num-experts": 4,
    "hidden": 16,
    "expert-hidden": 16,
    "local-epochs": 1,
    "client-fraction": 1.0,
    "tolerance": 0.1,
    "seed": 0,
    "num-server-rounds": 2,
    "min-available-nodes": NUM_NODES,
    "round-timeout": 300.0,
    "profile-timeout": 300.0,  # Ray actors start slowly on a loaded machine
}


def _train_with_receipt(msg: Message, context: Context, *, run_config: Any = None) -> Message:
    """The real train handler, plus a record of what arrived; fails once on purpose."""
    ins = decode_train_instruction(msg.content)
    pid, _ = node_partition(context)
    if pid == FAILING_PARTITION and ins.server_round == FAILING_ROUND:
        raise RuntimeError("injected node failure")
    reply = handle_train(msg, context, run_config=run_config)
    received = sorted(msg.content.array_records["arrays"].keys())
    reply.content["received"] = ConfigRecord(
        {"expert-ids": list(ins.expert_ids), "records": received}
    )
    return reply


@pytest.fixture(scope="module")
def sim() -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": {}}

    def hook(strategy: Any) -> None:
        out["strategy"] = strategy
        original = strategy.aggregate_train

        def aggregate_train(server_round: int, replies: Any) -> Any:
            replies = list(replies)
            before = dict(strategy._global)
            arrays, metrics = original(server_round, replies)
            out["rounds"][server_round] = {
                "replies": replies,
                "before": before,
                "after": None if arrays is None else arrayrecord_to_numpy(arrays),
                "metrics": dict(metrics),
            }
            return arrays, metrics

        strategy.aggregate_train = aggregate_train

    run_simulation(
        server_app=make_server_app(run_config=RUN_CONFIG, on_strategy=hook),
        client_app=make_client_app(run_config=RUN_CONFIG, train=_train_with_receipt),
        num_supernodes=NUM_NODES,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": 2, "num_gpus": 0, "include_dashboard": False},
        },
    )
    return out


def test_both_rounds_ran(sim: dict[str, Any]) -> None:
    strategy = sim["strategy"]
    assert sorted(strategy.history) == [1, 2]
    assert sorted(sim["rounds"]) == [1, 2]
    for rnd in (1, 2):
        m = sim["rounds"][rnd]["metrics"]
        for key in ("accuracy", "utilization-cv", "solve-time", "plan-load-cv", "num-failures"):
            assert key in m
        assert np.isfinite(m["solve-time"]) and m["solve-time"] >= 0


def test_each_node_received_exactly_its_planned_experts(sim: dict[str, Any]) -> None:
    strategy = sim["strategy"]
    for rnd, data in sim["rounds"].items():
        record = strategy.history[rnd]
        client_of = {n: c for c, n in record.node_of.items()}
        seen = 0
        for msg in data["replies"]:
            if msg.has_error():
                continue
            c = client_of[msg.metadata.src_node_id]
            got = msg.content.config_records["received"]
            planned = list(record.plan[c])
            assert list(got["expert-ids"]) == planned
            shared, experts = split_state(data["before"])
            expected = sorted([*shared, *(k for e in planned for k in experts[e])])
            assert list(got["records"]) == expected
            assert not any(k.startswith("router.") for k in got["records"])
            # and it trained (sent back) nothing outside its plan
            assert set(split_state(decode_train_reply(msg.content).arrays)[1]) <= set(planned)
            seen += 1
        assert seen == len(record.replied)


def test_expert_load_bounds_held(sim: dict[str, Any]) -> None:
    for record in sim["strategy"].history.values():
        assert record.fallback is None, record.fallback
        loads = np.asarray(record.loads)
        assert loads.sum() == sum(len(e) for e in record.plan.values())
        assert record.lower and record.upper
        assert np.all(loads >= np.asarray(record.lower) - 1e-9)
        assert np.all(loads <= np.asarray(record.upper) + 1e-9)


def test_aggregation_matches_hand_computed_means(sim: dict[str, Any]) -> None:
    partial_checked = 0
    for data in sim["rounds"].values():
        valid = [decode_train_reply(m.content) for m in data["replies"] if not m.has_error()]
        before_shared, before_experts = split_state(data["before"])
        after_shared, after_experts = split_state(data["after"])
        n = np.array([r.num_examples for r in valid], dtype=float)
        for k in before_shared:
            want = sum(w * r.arrays[k].astype(np.float64)
                       for w, r in zip(n, valid, strict=True)) / n.sum()
            np.testing.assert_allclose(after_shared[k], want, rtol=1e-5, atol=1e-6)
        for e, params in before_experts.items():
            trainers = [r for r in valid if e in split_state(r.arrays)[1]]
            # the harness nodes send their top-k usage as expert-weights
            assert all(r.expert_weights is not None for r in trainers)
            usage = np.array([expert_weights(r)[e] for r in trainers], dtype=float)
            for k, old in params.items():
                if not trainers or usage.sum() == 0:
                    np.testing.assert_array_equal(after_experts[e][k], old)
                    continue
                want = sum(u * r.arrays[k].astype(np.float64)
                           for u, r in zip(usage, trainers, strict=True)) / usage.sum()
                np.testing.assert_allclose(after_experts[e][k], want, rtol=1e-5, atol=1e-6)
            if 0 < len(trainers) < len(valid):
                partial_checked += 1
    assert partial_checked > 0, "no partially-trained expert in this run"


@pytest.fixture(scope="module")
def harness_log() -> list[tuple[str, Any, Any]]:
    """The harness's own run of the same configuration, planner calls recorded."""
    from fl_harness.experiment import run_experiment

    log: list[tuple[str, Any, Any]] = []
    cfg = experiment_config(RUN_CONFIG, num_clients=NUM_NODES).replace(
        rounds=RUN_CONFIG["num-server-rounds"]
    )

    def factory(config: Any) -> Any:
        planner = make_planner(config)
        plan_round, report = planner.plan_round, planner.report

        def recording_plan(ids: Any, **kw: Any) -> Any:
            plan = plan_round(ids, **kw)
            log.append(("plan", list(ids), {c: tuple(plan[c]) for c in plan}))
            return plan

        def recording_report(cid: Any, fb: Any) -> None:
            log.append(("report", cid, fb))
            report(cid, fb)

        planner.plan_round, planner.report = recording_plan, recording_report
        return planner

    run_experiment(cfg, planner_factory=factory)
    return log


def test_harness_and_flower_agree(sim: dict[str, Any], harness_log: list[Any]) -> None:
    plans = [entry for entry in harness_log if entry[0] == "plan"]
    history = sim["strategy"].history
    assert len(plans) == len(history) == RUN_CONFIG["num-server-rounds"]
    for rnd, (_, ids, plan) in enumerate(plans, start=1):
        assert history[rnd].sampled == ids
        assert history[rnd].plan == plan
    # round 1's feedback (everything round 2 was planned from) is the same too
    reports = [e for e in harness_log if e[0] == "report"][: len(history[1].replied)]
    for _, cid, fb in reports:
        mine = history[1].feedback[cid]
        assert mine.experts == fb.experts and mine.counts == fb.counts
        np.testing.assert_allclose(mine.accuracy, fb.accuracy, atol=1e-6)
        np.testing.assert_allclose(mine.loss, fb.loss, rtol=1e-5)


def test_node_failure_does_not_corrupt_state(sim: dict[str, Any]) -> None:
    strategy = sim["strategy"]
    record = strategy.history[FAILING_ROUND]
    failed = [c for c in record.sampled if c.endswith(f"-{FAILING_PARTITION:d}")
              or c.endswith(f"-{FAILING_PARTITION:02d}")]
    assert record.failed == failed and len(failed) == 1
    assert record.replied == [c for c in record.sampled if c not in failed]
    assert failed[0] not in record.feedback
    m = sim["rounds"][FAILING_ROUND]["metrics"]
    assert m["num-failures"] == 1 and m["num-replies"] == NUM_NODES - 1
    # global state intact: same keys, shapes and dtypes, all finite
    before, after = sim["rounds"][FAILING_ROUND]["before"], sim["rounds"][FAILING_ROUND]["after"]
    assert list(after) == list(before)
    for k in before:
        assert after[k].shape == before[k].shape and after[k].dtype == before[k].dtype
        assert np.all(np.isfinite(after[k]))
    # planner: the silent client is a dropout once the round closes, and planning goes on
    planner = strategy.planner
    plan = planner.plan_round(record.sampled)
    assert planner.dropouts(failed[0]) == 1
    assert set(plan) == set(record.sampled)
