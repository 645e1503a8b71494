"""Corrupted planner state files: every bad field raises at load, naming the field.

A planner that loads must never fail later because of its file, so besides the
hand-written corruptions a seeded fuzzer mutates single fields of a real state and
checks: either ``Planner.from_state`` raises ``InvalidProblemError``, or the loaded
planner plans, takes reports and saves without any error.
"""

from __future__ import annotations

import copy
import json
import math
import os
import stat
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from flexassign.alignment import Feedback, ModelCost, Planner, SyntheticPopulation
from flexassign.alignment.state import FORMAT
from flexassign.errors import InvalidProblemError


def _planner(open_round: bool = True) -> Planner:
    cost = ModelCost([2**26, 2**27, 2**26, 2**25], 1e9, shared_param_bytes=2**25)
    planner = Planner(4, seed=3, model_cost=cost, usage_penalty=0.1)
    planner.register("tab", device_class="tablet")
    planner.set_capacity("a", 2)
    planner.set_capacity(7, 1)
    pop = SyntheticPopulation(6, 4, seed=1)
    ids = ["a", "tab", 7, *pop.client_ids[:3]]
    for r in range(3):
        plan = planner.plan_round(ids)
        for i, c in enumerate(ids):
            if (r == 2 and open_round and i % 2) or (r == 1 and c == "client-0"):
                continue  # a dropout, and a half-reported open round
            k = len(plan[c])
            planner.report(c, Feedback(plan[c], [5] * k, accuracy=[0.6] * k))
    return planner


def _state() -> dict[str, Any]:
    return _planner().to_state()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets ``state[path]`` (dotted; ints index lists)."""

    def apply(state: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.lstrip("-").isdigit() else k for k in path.split(".")]
        node: Any = state
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return apply


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("nan fitness", _set("clients.0.fitness.0", math.nan), r"`state.clients\['a'\].fitness`"),
    ("fitness above 1", _set("clients.0.fitness.1", 1.5), r"`state.clients\['a'\].fitness`"),
    ("negative observation", _set("clients.0.observations.0", -1), r"observations"),
    ("negative reports", _set("clients.0.reports", -1), r"`state.clients\['a'\].reports`"),
    ("fractional reports", _set("clients.0.reports", 2.5), r"reports"),
    ("capacity -3", _set("capacities.0.1", -3), r"`state.capacities\['a'\]` must be >= 0"),
    ("capacity bool", _set("capacities.0.1", True), r"`state.capacities\['a'\]`"),
    ("open expert 99", _set("open_round.assignments.0.1", [0, 99]), r"expert ids in 0..3"),
    ("reported stranger", _set("open_round.reported", ["zzz"]), r"`state.open_round.reported`"),
    ("open load too high", _set("open_round.client_loads", [9.0, 0, 0, 0]), r"client_loads\[0\]"),
    ("usage decay 5", _set("usage.decay", 5), r"`usage.decay` must be"),
    ("config decay 5", _set("config.usage_decay", 5), r"`state.config`: `usage_decay` must be"),
    ("negative dropouts", _set("dropouts.0.1", -1), r"`state.dropouts\['client-0'\]`"),
    ("dropouts above rounds", _set("dropouts.0.1", 50), r"`state.dropouts\['client-0'\]`"),
    ("round 2.7", _set("round", 2.7), r"`state.round` must be an integer"),
    ("round off by one", _set("round", 4), r"`state.round` is 4"),
    ("negative load", _set("usage.client_loads.0.0", -1.0), r"`usage.client_loads`"),
    ("usage score", _set("usage.usage_score", [9.0, 0, 0, 0]), r"usage_score"),
    ("rng", _set("rng.state.inc", 2), r"`state.rng`"),
    ("rng type", _set("rng", "seed"), r"`state.rng`"),
    ("unknown strategy", _set("config.strategy", "best"), r"unknown `strategy` 'best'"),
    ("unknown method", _set("config.method", "simplex"), r"unknown `method` 'simplex'"),
    ("unknown config key", _set("config.speed", 1), r"`config` has unknown key\(s\) \['speed'\]"),
    ("fitness config", _set("config.fitness.beta", 0), r"`beta` must be"),
    ("model cost keys", _set("config.model_cost", {"param_bytes": [1] * 4}), r"`model_cost`"),
    ("profile compute", _set("profiles.0.1.compute", -1.0), r"`state.profiles\['tab'\]`"),
    ("profile field", _set("profiles.0.1.speed", 1.0), r"`state.profiles\['tab'\]`"),
    ("bool id", _set("capacities.0.0", True), r"client id of type bool"),
    ("prices length", _set("prices", [0.0]), r"`state.prices`"),
    ("unknown top-level", _set("extra", 1), r"unknown field\(s\) \['extra'\]"),
    ("time limit", _set("config.time_limit", -1), r"`time_limit` must be"),
]


@pytest.mark.parametrize(("name", "mutate", "match"), CASES, ids=[c[0] for c in CASES])
def test_corrupted_field_raises_at_load_naming_it(
    name: str, mutate: Callable[[dict[str, Any]], None], match: str, tmp_path
) -> None:
    state = _state()
    mutate(state)
    with pytest.raises(InvalidProblemError, match=match):
        Planner.from_state(state)
    # the same through a file (json writes NaN as a literal, which loads and is rejected)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(InvalidProblemError, match=match):
        Planner.load(path)


def test_missing_fields_are_named() -> None:
    state = _state()
    del state["dropouts"]
    with pytest.raises(InvalidProblemError, match=r"missing field\(s\) \['dropouts'\]"):
        Planner.from_state(state)
    state = _state()
    del state["open_round"]["reported"]
    with pytest.raises(InvalidProblemError, match="missing field 'reported'"):
        Planner.from_state(state)


def test_version_1_files_load_with_defaults() -> None:
    state = _state()
    state["version"] = 1
    del state["prices"], state["stability"]
    for key in ("time_limit", "mip_gap"):
        del state["config"][key]
    restored = Planner.from_state(state)
    assert restored.config.time_limit is None and restored.prices is None
    with pytest.raises(InvalidProblemError, match=r"unknown field\(s\) \['prices'\]"):
        Planner.from_state({**state, "prices": None})


def test_version_2_files_load_with_defaults() -> None:
    state = _state()
    state["version"] = 2
    del state["stability"]
    for key in ("stickiness", "balance_window"):
        del state["config"][key]
    for key in ("prior_rank", "train_signal"):
        del state["config"]["fitness"][key]
    state["config"]["fitness"]["zero_count_signal"] = 0.0  # what version 2 wrote
    restored = Planner.from_state(state)
    assert restored.config.stickiness == 0.0 and restored.config.balance_window == 1
    assert restored.config.fitness.zero_count_signal == 0.0  # kept as written
    assert restored.churn() != restored.churn()  # no history: NaN
    with pytest.raises(InvalidProblemError, match=r"unknown field\(s\) \['stability'\]"):
        Planner.from_state({**state, "stability": None})


_VALUES = [-3, -1, 0, 1, 2.7, 5, 99, 1e308, math.nan, True, None, "x", [], {}, [0, 99]]


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))] + [path]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))] + [path]
    return [path]


def _exercise(planner: Planner, tmp_path: Any) -> None:
    """Use a loaded planner the way a federation would; nothing may raise."""
    for _ in range(2):
        ids = ["a", "tab", 7, "new"]
        plan = planner.plan_round(ids)
        for c in ids:
            k = len(plan[c])
            planner.report(c, Feedback(plan[c], [3] * k, accuracy=[0.5] * k, loss=[1.0] * k))
    planner.utilization_cv()
    planner.save(tmp_path / "again.json")
    assert Planner.load(tmp_path / "again.json").to_state() == planner.to_state()


@pytest.mark.filterwarnings("error")  # overflow warnings count as failures too
def test_fuzzed_state_either_raises_at_load_or_works(tmp_path) -> None:
    base = _state()
    leaves = [p for p in _leaves(base) if p and p[0] not in ("format", "version")]
    rng = np.random.default_rng(0)
    loaded = 0
    for trial in range(800):
        state = copy.deepcopy(base)
        path = leaves[rng.integers(len(leaves))]
        value = _VALUES[rng.integers(len(_VALUES))]
        node: Any = state
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = copy.deepcopy(value)
        try:
            planner = Planner.from_state(state)
        except InvalidProblemError:
            continue
        loaded += 1
        try:
            _exercise(planner, tmp_path)
        except Exception as exc:  # pragma: no cover - the failure report
            pytest.fail(f"trial {trial}: state[{path}] = {value!r} loaded but then failed: {exc!r}")
    assert 0 < loaded < 800  # some mutations are harmless (e.g. a count 0 -> 1), most are not


def test_save_into_missing_folder_names_path(tmp_path) -> None:
    planner = Planner(4)
    with pytest.raises(InvalidProblemError, match=r"`path`: folder .*missing.* does not exist"):
        planner.save(tmp_path / "missing" / "s.json")
    assert os.listdir(tmp_path) == []


def test_saved_file_honours_umask(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        Planner(4).save(tmp_path / "s.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "s.json").st_mode) == 0o644


def test_state_file_format_is_stable() -> None:
    planner = _planner(open_round=False)
    planner.end_round()
    state = planner.to_state()
    assert state["format"] == FORMAT and state["open_round"] is None
    restored = Planner.from_state(json.loads(json.dumps(state)))
    assert restored.to_state() == state
