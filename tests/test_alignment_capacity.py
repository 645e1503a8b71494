"""Client capacity profiling: presets, derivation of k_c, monotonicity, refinement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexassign.alignment import (
    DEFAULT_DEADLINE,
    DEFAULT_MODEL_COST,
    DEVICE_PRESETS,
    ClientProfile,
    ModelCost,
    capacity_limits,
)
from flexassign.errors import InvalidProblemError, ProblemTypeError

GiB = 2**30
MiB = 2**20

profiles = st.builds(
    ClientProfile,
    compute=st.floats(1e9, 1e13),
    memory=st.floats(0.1 * GiB, 32 * GiB),
    downlink=st.floats(1e5, 1e9),
    uplink=st.floats(1e5, 1e9),
    samples_per_round=st.integers(0, 5000),
)
factors = st.floats(1.0, 20.0)
costs = st.sampled_from(
    [
        DEFAULT_MODEL_COST,
        ModelCost(
            [16 * MiB, 32 * MiB, 64 * MiB, 128 * MiB, 8 * MiB, 8 * MiB],
            [2e8, 4e8, 8e8, 1.6e9, 1e8, 1e8],
            shared_param_bytes=16 * MiB,
            shared_flops_per_sample=5e8,
            routed_fraction=0.5,
            reserve_bytes=128 * MiB,
        ),
    ]
)


def test_presets_are_ordered_by_capability() -> None:
    ks = [
        capacity_limits(p, DEFAULT_MODEL_COST, DEFAULT_DEADLINE).max_experts
        for p in DEVICE_PRESETS.values()
    ]
    assert list(DEVICE_PRESETS) == [
        "low-end-phone", "high-end-phone", "tablet", "laptop", "edge-server"
    ]
    assert ks == sorted(ks) and ks[0] >= 1 and ks[-1] == DEFAULT_MODEL_COST.num_experts
    for name, p in DEVICE_PRESETS.items():
        assert p.device_class == name
    assert ClientProfile.preset("tablet", availability=0.3).availability == 0.3
    with pytest.raises(InvalidProblemError, match="unknown `device_class` 'toaster'"):
        ClientProfile.preset("toaster")


@given(
    p=profiles,
    field=st.sampled_from(["compute", "memory", "downlink", "uplink"]),
    f=factors,
    cost=costs,
    deadline=st.floats(1.0, 3600.0),
)
def test_capacity_monotone_in_resources(
    p: ClientProfile, field: str, f: float, cost: ModelCost, deadline: float
) -> None:
    base = capacity_limits(p, cost, deadline)
    more = capacity_limits(p.replace(**{field: getattr(p, field) * f}), cost, deadline)
    assert more.max_experts >= base.max_experts
    if base.memory_budget is not None:
        assert more.memory_budget is not None and more.memory_budget >= base.memory_budget


@given(p=profiles, d=st.floats(1.0, 3600.0), f=factors, cost=costs)
def test_capacity_monotone_in_deadline(
    p: ClientProfile, d: float, f: float, cost: ModelCost
) -> None:
    assert (
        capacity_limits(p, cost, d * f).max_experts >= capacity_limits(p, cost, d).max_experts
    )
    assert capacity_limits(p, cost, None).max_experts >= capacity_limits(p, cost, d).max_experts


@given(p=profiles, d=st.floats(1.0, 3600.0), cost=costs)
def test_capacity_is_feasible_and_maximal(p: ClientProfile, d: float, cost: ModelCost) -> None:
    lim = capacity_limits(p, cost, d)
    k = lim.max_experts
    if k > 0:
        assert cost.round_time(p, k) <= d * (1 + 1e-9)  # the k largest meet the deadline
        smallest = np.sort(cost.param_bytes)[:k].sum() + cost.shared_param_bytes
        assert cost.reserve_bytes + cost.memory_factor * smallest <= p.memory * (1 + 1e-9)
    if k < cost.num_experts:
        over_time = cost.round_time(p, k + 1) > d
        smallest = np.sort(cost.param_bytes)[: k + 1].sum() + cost.shared_param_bytes
        over_mem = cost.reserve_bytes + cost.memory_factor * smallest > p.memory
        assert over_time or over_mem


def test_hand_computed_limit_and_budget() -> None:
    cost = ModelCost(
        [100.0, 200.0, 300.0], [10.0, 10.0, 10.0], shared_param_bytes=50.0, memory_factor=2.0
    )
    # memory 1000 -> 500 parameter bytes -> 450 for experts: the 2 smallest (300) fit
    prof = ClientProfile(compute=1e12, memory=1000.0, downlink=1e12, uplink=1e12)
    lim = capacity_limits(prof, cost)
    assert lim.max_experts == 2 and lim.binding == "memory"
    assert lim.memory_budget == pytest.approx(450.0)
    # deadline: bytes 50 + largest experts, both directions at 100 B/s, no compute
    slow = prof.replace(downlink=100.0, uplink=100.0, samples_per_round=0)
    # k=1: (50 + 300) * 2 / 100 = 7 s; k=2: (50 + 500) * 2 / 100 = 11 s
    assert capacity_limits(slow, cost, 10.0).max_experts == 1
    assert capacity_limits(slow, cost, 10.0).binding == "deadline"
    assert capacity_limits(slow, cost, 1.0).max_experts == 0


def test_uniform_cost_has_no_budget() -> None:
    lim = capacity_limits(DEVICE_PRESETS["laptop"], DEFAULT_MODEL_COST, DEFAULT_DEADLINE)
    assert lim.memory_budget is None


def test_refine_is_an_ema_of_measured_throughput() -> None:
    cost = ModelCost(1e6, 1e9, num_experts=4, shared_flops_per_sample=1e9)
    prof = ClientProfile(
        compute=1e10, memory=GiB, downlink=1e6, uplink=1e6, samples_per_round=100
    )
    # 2 experts: comm = 2e6/1e6 * 2 = 4 s; work = 100 * (1e9 + 2e9) = 3e11 FLOP
    new = prof.refine(round_time=34.0, n_experts=2, cost=cost, rate=0.5)
    measured = 3e11 / 30.0
    assert new.compute == pytest.approx(0.5 * 1e10 + 0.5 * measured)
    assert new.memory == prof.memory and new.samples_per_round == 100
    # a faster-than-comm measurement is attributed 5% to compute, never divides by <= 0
    fast = prof.refine(round_time=1.0, n_experts=[0, 1], cost=cost, rate=1.0)
    assert fast.compute == pytest.approx(3e11 / 0.05)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"compute": 0}, InvalidProblemError, "`compute` must be finite and > 0"),
        ({"memory": float("nan")}, InvalidProblemError, "`memory` must be finite"),
        ({"uplink": "fast"}, ProblemTypeError, "`uplink` must be a number"),
        ({"availability": 1.5}, InvalidProblemError, "`availability` must be finite"),
        ({"samples_per_round": 2.5}, InvalidProblemError, "`samples_per_round` must be an int"),
    ],
)
def test_profile_validation(kwargs: dict, exc: type, match: str) -> None:
    base = {"compute": 1e9, "memory": 1e9, "downlink": 1e6, "uplink": 1e6}
    with pytest.raises(exc, match=match):
        ClientProfile(**{**base, **kwargs})


def test_model_cost_validation() -> None:
    with pytest.raises(InvalidProblemError, match="`num_experts` is required"):
        ModelCost(1.0, 1.0)
    with pytest.raises(InvalidProblemError, match="equal length"):
        ModelCost([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(InvalidProblemError, match="`param_bytes` must be finite and >= 0"):
        ModelCost([-1.0, 2.0], 1.0)
    with pytest.raises(InvalidProblemError, match="`memory_factor` must be >= 1"):
        ModelCost(1.0, 1.0, num_experts=2, memory_factor=0.5)
    c = ModelCost([1.0, 2.0], 3.0, routed_fraction=0.5)
    assert ModelCost.from_dict(c.to_dict()) == c
