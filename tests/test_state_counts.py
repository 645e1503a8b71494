"""Whatever the planner accepts, its state file stores (issue 21, item 4 and the ids).

A report of 10**20 samples used to be accepted and saved, and the saved file then
failed to load; ids such as ``None`` or NaN were planned but could not be saved.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexassign import InvalidFeedbackError, ProblemTypeError
from flexassign.alignment import Feedback, Planner
from flexassign.alignment.feedback import MAX_COUNT


def _feedback(experts: tuple[int, ...], counts: list[Any]) -> Feedback:
    return Feedback(experts=experts, counts=counts, accuracy=[0.5] * len(experts))


def _planner(ids: list[Any]) -> tuple[Planner, dict[Any, tuple[int, ...]]]:
    planner = Planner(num_experts=3, strategy="flex", seed=0)
    for cid in ids:
        planner.set_capacity(cid, 2)
    plan = planner.plan_round(ids)
    return planner, plan


@pytest.mark.parametrize("count", [10**20, 2**63, 1e300, 2**53 + 1, 10**400])
def test_feedback_rejects_counts_a_state_file_cannot_store(count: Any) -> None:
    with pytest.raises(InvalidFeedbackError, match=r"`counts`"):
        Feedback(experts=[0], counts=[count])


def test_feedback_rejects_train_samples_above_the_limit() -> None:
    with pytest.raises(InvalidFeedbackError, match=r"`train_samples`"):
        Feedback(experts=[0], counts=[1], train_samples=10**20)


def test_a_round_cannot_sum_past_what_a_state_file_stores(tmp_path: Path) -> None:
    planner, plan = _planner(["a", "b"])
    shared = set(plan["a"]) & set(plan["b"])
    if not shared:
        pytest.skip("the plan shares no expert")
    for cid in ("a", "b"):
        counts = [MAX_COUNT if e in shared else 1 for e in plan[cid]]
        if cid == "a":
            planner.report(cid, _feedback(plan[cid], counts))
        else:
            with pytest.raises(InvalidFeedbackError, match=r"`feedback.counts`.*2\*\*53"):
                planner.report(cid, _feedback(plan[cid], counts))
    planner.save(tmp_path / "s.json")
    back = Planner.load(tmp_path / "s.json")
    assert back.to_state() == planner.to_state()


counts_st = st.one_of(
    st.integers(min_value=0, max_value=2**64),
    st.sampled_from([2**53, 2**53 + 1, 10**20, 2**63]),
    st.floats(min_value=0, max_value=1e300, allow_nan=False),
)


@given(
    reports=st.lists(st.lists(counts_st, min_size=2, max_size=2), min_size=1, max_size=3),
    close=st.booleans(),
)
def test_whatever_report_accepts_round_trips(
    tmp_path_factory: pytest.TempPathFactory, reports: list[list[Any]], close: bool
) -> None:
    ids = list(range(len(reports)))
    planner, plan = _planner(ids)
    accepted = 0
    for cid, counts in zip(ids, reports, strict=True):
        experts = plan[cid]
        try:
            fb = _feedback(experts, counts[: len(experts)])
        except InvalidFeedbackError:
            continue  # the counts themselves are refused
        try:
            planner.report(cid, fb)
        except InvalidFeedbackError as exc:
            assert "`feedback.counts`" in str(exc)  # the round's total would pass 2**53
            continue
        accepted += 1
    if close:
        planner.plan_round(ids)  # closes the round: loads move into the usage window
    path = tmp_path_factory.mktemp("state") / "s.json"
    planner.save(path)
    back = Planner.load(path)
    assert back.to_state() == planner.to_state()
    if accepted:
        assert back.loads("samples").sum() == planner.loads("samples").sum()


# ---------------------------------------------------------------------------- client ids
@pytest.mark.parametrize("bad", [None, math.nan, 1.5, ("a", 1)])
def test_plan_round_rejects_ids_a_state_file_cannot_store(bad: Any) -> None:
    planner = Planner(num_experts=3, seed=0)
    with pytest.raises(ProblemTypeError, match=r"`client_ids`"):
        planner.plan_round(["a", bad])


def test_report_names_an_unhashable_client_id() -> None:
    planner, plan = _planner(["a"])
    fb = _feedback(plan["a"], [1] * len(plan["a"]))
    with pytest.raises(ProblemTypeError, match=r"`client_id`"):
        planner.report(["a"], fb)  # type: ignore[arg-type]
