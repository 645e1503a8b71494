"""Input conversion and validation for :class:`~flexassign.problem.AssignmentProblem`.

:func:`convert_arguments` turns the constructor's arguments into validated float,
int and bool arrays (or ``None``), raising an error that names the argument in
backticks: :class:`~flexassign.errors.ProblemTypeError` for non-numeric input,
:class:`~flexassign.errors.InvalidProblemError` for wrong shapes and values. The
scalar settings use the shared checks of :mod:`flexassign._validation`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import check_real, is_real
from .errors import InvalidProblemError, ProblemTypeError

__all__ = [
    "MAX_COUNT",
    "MAX_OBJECTIVE",
    "MAX_TOLERANCE",
    "check_tolerance",
    "convert_arguments",
    "first_true",
    "frozen",
]

#: Largest accepted capacity / min_experts (exact in float64).
MAX_COUNT = 2**53
#: Largest accepted balance tolerance (beyond n_experts - 1 it no longer binds anyway).
MAX_TOLERANCE = 1e6
#: Objective magnitudes must stay below this (headroom for sums and shifts in float64).
MAX_OBJECTIVE = 2.0**1020


def frozen(a: np.ndarray) -> np.ndarray:
    """A read-only copy of ``a``."""
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _numeric(name: str, value: Any) -> np.ndarray:
    if isinstance(value, str | bytes):
        raise ProblemTypeError(f"`{name}` must be numeric; got a string")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - numpy raises many types here
        raise ProblemTypeError(f"`{name}` could not be converted to an array: {exc}") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ProblemTypeError(f"`{name}` must be numeric; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ProblemTypeError(f"`{name}` must be real; got dtype {arr.dtype}")
    return arr


def first_true(mask: np.ndarray) -> int | None:
    """The first index where ``mask`` is True, or ``None``."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _per_item(
    name: str, value: Any, size: int, what: str, *, integer: bool, allow_inf: bool = False
) -> np.ndarray:
    """Broadcast a scalar or validate a length-``size`` vector."""
    arr = _numeric(name, value)
    if arr.ndim == 0:
        arr = np.full(size, arr.item())
    elif arr.ndim != 1 or arr.shape[0] != size:
        raise InvalidProblemError(
            f"`{name}` must be a scalar or have shape ({size},) (one value per {what}); "
            f"got shape {arr.shape}"
        )
    arr = arr.astype(np.float64)
    if (i := first_true(np.isnan(arr))) is not None:
        raise InvalidProblemError(f"`{name}` must not contain NaN ({what} {i})")
    if not allow_inf and (i := first_true(np.isinf(arr))) is not None:
        raise InvalidProblemError(f"`{name}` must be finite ({what} {i} is {arr[i]})")
    if (i := first_true(arr < 0)) is not None:
        raise InvalidProblemError(f"`{name}` must be >= 0 ({what} {i} is {arr[i]:g})")
    if integer:
        if (i := first_true(arr != np.round(arr))) is not None:
            raise InvalidProblemError(f"`{name}` must hold integers ({what} {i} is {arr[i]:g})")
        if (i := first_true(arr > MAX_COUNT)) is not None:
            raise InvalidProblemError(
                f"`{name}` must be <= 2**53 ({what} {i} is {arr[i]:.6g}); "
                "counts beyond the number of experts change nothing"
            )
        return arr.astype(np.int64)
    return arr


def _mask(name: str, value: Any, shape: tuple[int, int]) -> np.ndarray | None:
    if value is None:
        return None
    arr = _numeric(name, value)
    if arr.shape != shape:
        raise InvalidProblemError(f"`{name}` must have shape {shape}; got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise InvalidProblemError(f"`{name}` must be boolean (or 0/1)")
        arr = arr.astype(bool)
    return arr


def check_tolerance(tolerance: Any) -> float:
    """The balance tolerance :math:`\\varepsilon` as a float in ``[0, MAX_TOLERANCE]``."""
    tol = check_real("tolerance", tolerance, lo=0.0)
    if tol > MAX_TOLERANCE:
        raise InvalidProblemError(
            f"`tolerance` must be <= {MAX_TOLERANCE:g} (above n_experts - 1 it no longer "
            f"binds); got {tolerance}"
        )
    return tol


def _check_penalty(load_penalty: Any) -> float | None:
    if load_penalty is None:
        return None
    if not is_real(load_penalty):
        raise ProblemTypeError(
            f"`load_penalty` must be a number or None; got {type(load_penalty).__name__}"
        )
    return check_real("load_penalty", load_penalty, lo=0.0, lo_open=True)


def _check_magnitude(
    fitness: np.ndarray,
    capacity: np.ndarray,
    penalty: float | None,
    weights: np.ndarray | None,
    lo: np.ndarray,
    hi: np.ndarray,
) -> None:
    """Reject inputs whose objective could overflow float64 (it must stay computable)."""
    n, e = fitness.shape
    slots = float(np.minimum(capacity, e).sum())
    peak = float(np.max(np.abs(fitness)))
    if peak * max(slots, 1.0) >= MAX_OBJECTIVE:
        raise InvalidProblemError(
            f"`fitness` is too large: entries up to {peak:.3g} over {slots:.0f} assignable "
            "slots could overflow the objective (float64); rescale `fitness` "
            "(every backend solves any scale, e.g. divide by its maximum)"
        )
    if penalty is not None:
        total_w = float(np.sum(weights)) if weights is not None else float(n)
        finite_hi = np.where(np.isfinite(hi), hi, 0.0)
        excess = e * total_w + float(lo.sum()) + float(finite_hi.sum())
        if penalty * excess >= MAX_OBJECTIVE:
            raise InvalidProblemError(
                f"`load_penalty` ({penalty:g}) times the largest possible load excess "
                f"({excess:.3g}) could overflow the objective (float64); lower it"
            )


def _fitness(fitness: Any) -> np.ndarray:
    s = _numeric("fitness", fitness)
    if s.ndim != 2:
        raise InvalidProblemError(
            "`fitness` must be a 2-D array of shape (n_clients, n_experts); "
            f"got {s.ndim}-D with shape {s.shape}"
        )
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise InvalidProblemError(
            f"`fitness` must have at least one client and one expert; got shape {s.shape}"
        )
    s = s.astype(np.float64, copy=False)  # frozen() makes the one copy
    if not np.isfinite(s).all():
        c, j = (int(v) for v in np.argwhere(~np.isfinite(s))[0])
        raise InvalidProblemError(
            f"`fitness` must be finite; entry (client {c}, expert {j}) is {s[c, j]}"
        )
    return s


def convert_arguments(
    fitness: Any,
    capacity: Any,
    min_experts: Any,
    expert_min_load: Any,
    expert_max_load: Any,
    client_weight: Any,
    expert_size: Any,
    client_budget: Any,
    allowed: Any,
    fixed: Any,
    load_penalty: Any,
) -> dict[str, Any]:
    """Every constructor argument converted and checked: ``{field: array, None or float}``.

    The arrays are not yet read-only (the problem freezes them); ``load_penalty`` is a
    float or ``None``. Checks run in argument order, so the first bad argument is the
    one named.

    Examples
    --------
    >>> v = convert_arguments([[1, 2]], 1, 0, None, 3, None, None, None, None, None, None)
    >>> v["capacity"].tolist(), v["expert_max_load"].tolist(), v["client_weight"]
    ([1], [3.0, 3.0], None)
    """
    s = _fitness(fitness)
    n, e = s.shape
    cap = _per_item("capacity", capacity, n, "client", integer=True)
    kmin = _per_item("min_experts", min_experts, n, "client", integer=True)
    if (c := first_true(kmin > cap)) is not None:
        raise InvalidProblemError(
            f"`min_experts` ({kmin[c]} for client {c}) exceeds `capacity` ({cap[c]})"
        )
    lo = (
        np.zeros(e)
        if expert_min_load is None
        else _per_item("expert_min_load", expert_min_load, e, "expert", integer=False)
    )
    hi = (
        np.full(e, np.inf)
        if expert_max_load is None
        else _per_item(
            "expert_max_load", expert_max_load, e, "expert", integer=False, allow_inf=True
        )
    )
    if (j := first_true(lo > hi)) is not None:
        raise InvalidProblemError(
            f"`expert_min_load` ({lo[j]:g} for expert {j}) exceeds `expert_max_load` ({hi[j]:g})"
        )
    w = None
    if client_weight is not None:
        w = _per_item("client_weight", client_weight, n, "client", integer=False)
        if (c := first_true(w <= 0)) is not None:
            raise InvalidProblemError(f"`client_weight` must be > 0 (client {c} is {w[c]:g})")
    if (expert_size is None) != (client_budget is None):
        raise InvalidProblemError(
            "`expert_size` and `client_budget` define the memory knapsack together; "
            "give both or neither"
        )
    size = budget = None
    if expert_size is not None:
        size = _per_item("expert_size", expert_size, e, "expert", integer=False)
        budget = _per_item(
            "client_budget", client_budget, n, "client", integer=False, allow_inf=True
        )
    allow = _mask("allowed", allowed, (n, e))
    fix = _mask("fixed", fixed, (n, e))
    if fix is not None and allow is not None and (fix & ~allow).any():
        c, j = (int(v) for v in np.argwhere(fix & ~allow)[0])
        raise InvalidProblemError(
            f"`fixed` forces the pair (client {c}, expert {j}) that `allowed` forbids"
        )
    pen = _check_penalty(load_penalty)
    _check_magnitude(s, cap, pen, w, lo, hi)
    return {
        "fitness": s,
        "capacity": cap,
        "min_experts": kmin,
        "expert_min_load": lo,
        "expert_max_load": hi,
        "client_weight": w,
        "expert_size": size,
        "client_budget": budget,
        "allowed": allow,
        "fixed": fix,
        "load_penalty": pen,
    }
