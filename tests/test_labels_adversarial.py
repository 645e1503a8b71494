"""pandas labels an adversary can craft (issue 21, item 8)."""

from __future__ import annotations

import numpy as np
import pytest

from flexassign import InvalidProblemError, solve_assignment

pd = pytest.importorskip("pandas")


def test_repeated_nan_labels_are_not_unique() -> None:
    fit = pd.DataFrame([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], index=[np.nan, np.nan, 1.0])
    with pytest.raises(InvalidProblemError, match=r"`clients` labels must be unique"):
        solve_assignment(fit, capacity=1)


def test_a_nan_label_aligns_across_arguments() -> None:
    fit = pd.DataFrame([[0.1, 0.2], [0.3, 0.4]], index=[np.nan, 1.0], columns=["a", "b"])
    cap = pd.Series([1, 2], index=[1.0, np.nan])  # the NaN client may take 2
    res = solve_assignment(fit, capacity=cap)
    assert res.success
    assert np.array_equal(np.asarray(res.problem.capacity), [2, 1])


@pytest.mark.parametrize("dtype", ["Float64", "Int64"])
def test_nullable_numeric_frames_without_missing_values(dtype: str) -> None:
    fit = pd.DataFrame([[1, 2], [3, 4]], index=["x", "y"], columns=["a", "b"]).astype(dtype)
    res = solve_assignment(fit, capacity=1)
    assert res.assignment == {"x": ("b",), "y": ("b",)}


def test_nullable_boolean_frame_without_missing_values() -> None:
    fit = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], index=["x", "y"], columns=["a", "b"])
    allowed = pd.DataFrame(
        [[True, False], [True, True]], index=["x", "y"], columns=["a", "b"]
    ).astype("boolean")
    res = solve_assignment(fit, capacity=1, allowed=allowed)
    assert res.assignment == {"x": ("a",), "y": ("b",)}


def test_nullable_frame_with_missing_values_is_still_an_error() -> None:
    fit = pd.DataFrame([[1.0, None], [3.0, 4.0]], index=["x", "y"]).astype("Float64")
    with pytest.raises((InvalidProblemError, TypeError), match=r"`fitness`"):
        solve_assignment(fit, capacity=1)
