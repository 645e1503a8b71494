"""Labels in, labels out: pandas input is aligned by label and results keep the labels."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from flexassign import (  # noqa: E402
    AssignmentProblem,
    InvalidProblemError,
    ProblemTypeError,
    Status,
    evaluate_assignment,
    solve_assignment,
)
from flexassign.alignment import Feedback, Planner  # noqa: E402
from flexassign.labels import Labels, history_frame, plan_frame  # noqa: E402

CLIENTS = ["ana", "bo", "cy", "dee"]
EXPERTS = ["vision", "text", "audio"]


def _fitness() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(rng.random((4, 3)), index=CLIENTS, columns=EXPERTS)


def test_dataframe_round_trips_to_labelled_result() -> None:
    df = _fitness()
    res = solve_assignment(df, capacity=2, tolerance=0.2)
    plain = solve_assignment(df.to_numpy(), capacity=2, tolerance=0.2)
    assert res.success
    np.testing.assert_array_equal(res.x, plain.x)  # labels change nothing in the solve
    assert res.labels == Labels(CLIENTS, EXPERTS)
    assert list(res.assignment) == CLIENTS
    for c, row in zip(CLIENTS, res.x, strict=True):
        assert res.assignment[c] == tuple(EXPERTS[j] for j in np.flatnonzero(row))
    assert res.load_by_expert == {e: float(v) for e, v in zip(EXPERTS, res.loads, strict=True)}


def test_to_frame_is_tidy_and_consistent() -> None:
    df = _fitness()
    w = pd.Series({"dee": 4.0, "cy": 1.0, "bo": 2.0, "ana": 3.0})  # shuffled order
    res = solve_assignment(df, capacity=2, client_weight=w, tolerance=0.5)
    assert res.success, res.message
    frame = res.to_frame()
    assert list(frame.columns) == ["client", "expert", "fitness", "load_share"]
    assert len(frame) == int(res.x.sum())
    for row in frame.itertuples():
        assert row.expert in res.assignment[row.client]
        assert row.fitness == df.loc[row.client, row.expert]
        assert row.load_share == pytest.approx(w[row.client] / res.load_by_expert[row.expert])
    shares = frame.groupby("expert")["load_share"].sum()
    np.testing.assert_allclose(shares.to_numpy(), 1.0)
    assert res.objective == pytest.approx(frame["fitness"].sum())


def test_series_are_aligned_by_label_not_position() -> None:
    df = _fitness()
    cap = pd.Series({"dee": 0, "cy": 1, "bo": 1, "ana": 2})
    res = solve_assignment(df, capacity=cap)
    np.testing.assert_array_equal(res.x.sum(axis=1), [2, 1, 1, 0])
    max_load = pd.Series({"audio": 0.0, "vision": 1.0, "text": 1.0})
    res = solve_assignment(df, capacity=3, expert_max_load=max_load)
    assert res.load_by_expert["audio"] == 0.0
    assert res.load_by_expert["vision"] == 1.0


def test_series_labels_name_an_unlabelled_fitness() -> None:
    fitness = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = solve_assignment(fitness, capacity=pd.Series([1, 1], index=["x", "y"]))
    assert res.assignment == {"x": (0,), "y": (1,)}
    res = solve_assignment(
        fitness, capacity=1, expert_size=pd.Series({"a": 1.0, "b": 2.0}), client_budget=[1.0, 2.0]
    )
    assert res.assignment == {0: ("a",), 1: ("b",)}


def test_masks_as_dataframes_are_aligned_on_both_axes() -> None:
    df = _fitness()
    allowed = pd.DataFrame(True, index=CLIENTS[::-1], columns=EXPERTS[::-1])
    allowed.loc["ana", "vision"] = False
    fixed = pd.DataFrame(False, index=CLIENTS, columns=EXPERTS[::-1])
    fixed.loc["bo", "audio"] = True
    res = solve_assignment(df, capacity=1, allowed=allowed, fixed=fixed)
    assert res.success
    assert "vision" not in res.assignment["ana"]
    assert res.assignment["bo"] == ("audio",)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"capacity": pd.Series({"ana": 1, "bo": 1, "cy": 1})},
            r"`capacity` has no value for client 'dee'",
        ),
        (
            {"capacity": pd.Series({"ana": 1, "bo": 1, "cy": 1, "dee": 1, "eve": 1})},
            r"`capacity` labels client 'eve', which is not in the problem",
        ),
        (
            {"expert_max_load": pd.Series({"vision": 1.0, "text": 1.0})},
            r"`expert_max_load` has no value for expert 'audio'",
        ),
        (
            {"allowed": pd.DataFrame(True, index=CLIENTS, columns=["vision", "text", "video"])},
            r"`allowed` has no value for expert 'audio'",
        ),
    ],
)
def test_misaligned_labels_name_the_argument(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidProblemError, match=match):
        solve_assignment(_fitness(), **kwargs)


def test_bad_label_input_types() -> None:
    with pytest.raises(ProblemTypeError, match=r"`fitness` must be 2-D"):
        solve_assignment(pd.Series([1.0, 2.0]), capacity=1)
    with pytest.raises(ProblemTypeError, match=r"`capacity` must be a scalar, a Series or 1-D"):
        solve_assignment(_fitness(), capacity=pd.DataFrame({"a": [1, 1, 1, 1]}, index=CLIENTS))
    dup = pd.DataFrame(np.ones((2, 2)), index=["a", "a"], columns=["x", "y"])
    with pytest.raises(
        InvalidProblemError, match=r"`clients` labels must be unique; 'a' appears twice"
    ):
        solve_assignment(dup)


def test_arrays_in_keep_positions_and_no_labels() -> None:
    fitness = np.array([[3.0, 1.0], [2.0, 0.0], [1.0, 2.0]])
    res = solve_assignment(fitness, capacity=1, expert_max_load=2)
    assert res.labels is None
    assert res.assignment == {0: (0,), 1: (0,), 2: (1,)}
    assert res.load_by_expert == {0: 2.0, 1: 1.0}
    assert res.experts == [(0,), (0,), (1,)]
    frame = res.to_frame()
    assert frame["client"].tolist() == [0, 1, 2]
    assert frame["fitness"].tolist() == [3.0, 2.0, 2.0]


def test_with_labels_for_an_assignment_problem() -> None:
    p = AssignmentProblem(np.eye(2), capacity=1)
    res = solve_assignment(p).with_labels(["a", "b"], ["e0", "e1"])
    assert res.assignment == {"a": ("e0",), "b": ("e1",)}
    with pytest.raises(InvalidProblemError, match=r"`experts` has 3 labels but the problem has 2"):
        solve_assignment(p).with_labels(["a", "b"], ["e0", "e1", "e2"])
    ext = evaluate_assignment(p, [[0, 1], [1, 0]]).with_labels(["a", "b"], ["e0", "e1"])
    assert ext.to_frame()["expert"].tolist() == ["e1", "e0"]


def test_infeasible_labelled_result_has_no_assignment() -> None:
    res = solve_assignment(_fitness(), capacity=1, min_experts=1, expert_max_load=0.5)
    assert res.status is Status.INFEASIBLE
    assert res.labels == Labels(CLIENTS, EXPERTS)
    assert res.assignment is None and res.load_by_expert is None
    assert res.to_frame().empty


def test_planner_plans_and_history_export() -> None:
    planner = Planner(num_experts=3, strategy="flex", tolerance=0.2, seed=0)
    ids = ["p1", "p2", "p3"]
    for _ in range(2):
        plan = planner.plan_round(ids)
        for cid in ids:
            planner.report(
                cid,
                Feedback(
                    experts=plan[cid], counts=[5] * len(plan[cid]), accuracy=[0.5] * len(plan[cid])
                ),
            )
        planner.end_round()
    frame = plan_frame(plan)
    assert frame.equals(plan.to_frame())
    assert set(frame["round"]) == {plan.round}
    assert set(frame["client"]) <= set(ids)
    pairs = {(r.client, r.expert) for r in frame.itertuples()}
    assert pairs == {(c, e) for c, experts in plan.items() for e in experts}
    hist = history_frame(planner)
    assert list(hist.columns) == ["round", "expert", "load"]
    assert len(hist) == 2 * 3
    np.testing.assert_allclose(
        hist.groupby("expert")["load"].sum().to_numpy(), planner.loads(include_open=False)
    )
    samples = history_frame(planner, "samples")
    np.testing.assert_allclose(
        samples.groupby("expert")["load"].sum().to_numpy(),
        planner.loads("samples", include_open=False),
    )
    with pytest.raises(InvalidProblemError, match="`kind` must be 'clients' or 'samples'"):
        history_frame(planner, "bogus")


def test_docs_labels_examples_run() -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "labels.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/labels.md[python block {i}]", "exec"), {})


def test_every_label_check_names_its_argument() -> None:
    df = _fitness()
    dup = pd.Series([1, 1, 1, 1, 1], index=["ana", "bo", "cy", "dee", "dee"])
    with pytest.raises(InvalidProblemError, match=r"`capacity` has repeated client labels"):
        solve_assignment(df, capacity=dup)
    with pytest.raises(
        ProblemTypeError, match=r"`allowed` must be 2-D \(a DataFrame or an array\)"
    ):
        solve_assignment(df, allowed=pd.Series([True] * 4, index=CLIENTS))
    with pytest.raises(ProblemTypeError, match=r"`clients` must be an iterable of labels; got int"):
        Labels(clients=3, experts=[0])  # type: ignore[arg-type]
    with pytest.raises(ProblemTypeError, match=r"`experts` must be an iterable of labels; got str"):
        Labels(clients=[0], experts="ab")
    with pytest.raises(ProblemTypeError, match=r"`experts` labels must be hashable; got list"):
        Labels(clients=[0], experts=[[1]])
    with pytest.raises(InvalidProblemError, match=r"`clients` has 1 labels but the problem has 2"):
        solve_assignment(np.eye(2)).with_labels(["a"], ["x", "y"])


def test_to_frame_needs_the_problem() -> None:
    from dataclasses import replace

    res = replace(solve_assignment(np.eye(2)), problem=None)
    with pytest.raises(InvalidProblemError, match=r"`result` carries no problem"):
        res.to_frame()
