"""One verifier for every backend, and a pre-solve infeasibility diagnosis.

:func:`verify_assignment` recomputes capacity use, memory use, expert loads and the
objective from a 0/1 matrix and lists every broken constraint. :func:`solve_assignment`
runs it on each backend's answer, so an assignment that breaks a constraint is never
reported as a success.

:func:`diagnose_infeasibility` detects the obvious conflicts (per client, per expert
and in aggregate) before any solver runs, and explains them in the user's terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._problem_input import first_true
from ._validation import is_real
from .errors import InvalidProblemError
from .problem import AssignmentProblem
from .result import Violation

__all__ = ["Verification", "diagnose_infeasibility", "verify_assignment"]

#: Relative tolerance for comparing recomputed loads to their bounds.
DEFAULT_TOL = 1e-9


@dataclass(frozen=True)
class Verification:
    """What the verifier recomputed from an assignment."""

    x: NDArray[np.bool_]
    objective: float
    loads: NDArray[np.float64]
    counts: NDArray[np.int64]
    violations: tuple[Violation, ...]

    @property
    def ok(self) -> bool:
        return not self.violations


def _as_assignment(problem: AssignmentProblem, x: ArrayLike) -> NDArray[np.bool_]:
    arr = np.asarray(x)
    if arr.shape != problem.shape:
        raise InvalidProblemError(
            f"`x` must have shape {problem.shape} (the problem's); got {arr.shape}"
        )
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise InvalidProblemError("`x` must be a 0/1 (boolean) matrix")
        arr = arr.astype(bool)
    return arr


def _exceeds(value: np.ndarray, limit: np.ndarray, tol: float) -> np.ndarray:
    finite = np.isfinite(limit)
    slack = tol * np.maximum(1.0, np.abs(np.where(finite, limit, 0.0)))
    return finite & (value > limit + slack)


def verify_assignment(
    problem: AssignmentProblem, x: ArrayLike, *, tol: float = DEFAULT_TOL
) -> Verification:
    """Recompute everything about ``x`` and list the constraints it breaks.

    Parameters
    ----------
    problem : AssignmentProblem
    x : array_like of bool, shape (N, E)
    tol : float
        Relative tolerance on load and memory bounds.

    Returns
    -------
    Verification
        With ``objective`` (penalty for soft bounds included), ``loads``, per-client
        ``counts`` and the tuple of :class:`~flexassign.result.Violation`.

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign import AssignmentProblem
    >>> p = AssignmentProblem(np.ones((2, 2)), capacity=1, expert_max_load=1)
    >>> [str(v) for v in verify_assignment(p, [[1, 0], [1, 0]]).violations]
    ['expert 0 has load 2 > expert_max_load 1']
    """
    if not is_real(tol) or not (math.isfinite(float(tol)) and 0 <= tol <= 0.5):
        # NaN would make every comparison False: no violation could ever be found
        raise InvalidProblemError(f"`tol` must be a number in [0, 0.5]; got {tol!r}")
    xb = _as_assignment(problem, x)
    counts = xb.sum(axis=1, dtype=np.int64)
    if problem.client_weight is None:  # loads count clients: no float copy of x
        loads = xb.sum(axis=0, dtype=np.float64)
    else:
        loads = np.asarray(problem.weights @ xb, dtype=np.float64)
    out: list[Violation] = []
    # each group of checks first asks cheaply whether anything is wrong at all, and only
    # then lists the culprits (a feasible answer is the common case)
    cap, kmin = problem.capacity, problem.min_experts
    if not ((kmin <= counts) & (counts <= cap)).all():
        for c in np.flatnonzero(counts > cap):
            out.append(Violation("capacity", int(c), float(counts[c]), float(cap[c])))
        for c in np.flatnonzero(counts < kmin):
            out.append(Violation("min_experts", int(c), float(counts[c]), float(kmin[c])))
    if problem.expert_size is not None and problem.client_budget is not None:
        mem = xb @ problem.expert_size
        for c in np.flatnonzero(_exceeds(mem, problem.client_budget, tol)):
            out.append(Violation("budget", int(c), float(mem[c]), float(problem.client_budget[c])))
    if not problem.is_soft:
        lo, hi = problem.expert_min_load, problem.expert_max_load
        # within the bounds without any tolerance: nothing to list
        if not ((lo <= loads) & (loads <= hi)).all():
            for e in np.flatnonzero(_exceeds(lo, loads, tol)):
                out.append(Violation("expert_min_load", int(e), float(loads[e]), float(lo[e])))
            for e in np.flatnonzero(_exceeds(loads, hi, tol)):
                out.append(Violation("expert_max_load", int(e), float(loads[e]), float(hi[e])))
    if problem.allowed is not None:
        for c, e in np.argwhere(xb & ~problem.allowed)[:50]:
            out.append(Violation("allowed", (int(c), int(e)), 1.0, 0.0))
    if problem.fixed is not None:
        for c, e in np.argwhere(problem.fixed & ~xb)[:50]:
            out.append(Violation("fixed", (int(c), int(e)), 0.0, 1.0))
    return Verification(
        x=xb,
        objective=problem.objective(xb),
        loads=loads,
        counts=counts,
        violations=tuple(out),
    )


def _fmt(v: float) -> str:
    return f"{v:g}"


def _at(values: np.ndarray | float, i: int) -> Any:
    """``values[i]``, or ``values`` itself when it is one number for every index."""
    return values[i] if isinstance(values, np.ndarray) else values


def _load_unit(problem: AssignmentProblem) -> str:
    return "clients" if problem.client_weight is None else "load"


def diagnose_infeasibility(problem: AssignmentProblem) -> str | None:
    """Return why ``problem`` is certainly infeasible, or ``None`` if no quick check fails.

    The checks are necessary conditions only: ``None`` does not prove feasibility.
    They cover per-client conflicts (fixed pairs vs capacity and budget, too few
    allowed experts), per-expert conflicts (fixed load above the maximum, not enough
    clients may take an expert to reach its minimum) and aggregate ones (total
    capacity against total minimum load, total minimum demand against total maximum
    load). With soft load bounds only the client-side checks apply.

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign import AssignmentProblem
    >>> p = AssignmentProblem(np.ones((5, 3)), capacity=2, expert_min_load=4)
    >>> diagnose_infeasibility(p)
    'total capacity 10 < total minimum expert load 12'
    """
    cap = problem.capacity
    kmin = problem.min_experts
    w = problem.weights
    e_count = problem.n_experts
    # absent masks (the common case) need no pass over an N x E array: their counts
    # are scalars, and the checks they would feed cannot fail
    n_allowed: np.ndarray | int
    n_fixed: np.ndarray | int
    if problem.allowed is None:
        n_allowed = e_count
    else:
        n_allowed = problem.allowed.sum(axis=1)
    if problem.fixed is None:
        n_fixed = 0
    else:
        n_fixed = problem.fixed.sum(axis=1)

    # -- per client
    if problem.fixed is not None and (c := first_true(n_fixed > cap)) is not None:
        return f"client {c} has {_at(n_fixed, c)} fixed experts but capacity {cap[c]}"
    if (kmin > n_allowed).any() and (c := first_true(kmin > n_allowed)) is not None:
        return (
            f"client {c} needs at least {kmin[c]} experts (min_experts) "
            f"but only {_at(n_allowed, c)} are allowed"
        )
    if problem.expert_size is not None and problem.client_budget is not None:
        size = problem.expert_size
        budget = problem.client_budget
        allowed, fixed = problem.allowed_mask, problem.fixed_mask
        fixed_mem = fixed @ size
        if (c := first_true(_exceeds(fixed_mem, budget, DEFAULT_TOL))) is not None:
            return (
                f"client {c}'s fixed experts need memory {_fmt(fixed_mem[c])} "
                f"> client_budget {_fmt(budget[c])}"
            )
        # cheapest way to reach min_experts: fixed ones plus the smallest other allowed
        free = np.where(allowed & ~fixed, size, np.inf)
        free_sorted = np.sort(free, axis=1)
        need = np.maximum(kmin - n_fixed, 0)
        csum = np.concatenate(
            [np.zeros((problem.n_clients, 1)), np.cumsum(free_sorted, axis=1)], axis=1
        )
        least = fixed_mem + csum[np.arange(problem.n_clients), np.minimum(need, problem.n_experts)]
        if (c := first_true(_exceeds(least, budget, DEFAULT_TOL))) is not None:
            return (
                f"client {c} needs at least {kmin[c]} experts but the smallest allowed ones "
                f"need memory {_fmt(least[c])} > client_budget {_fmt(budget[c])}"
            )

    if problem.is_soft:
        return None

    # -- per expert
    lo, hi = problem.expert_min_load, problem.expert_max_load
    unit = _load_unit(problem)
    if problem.uniform_weight is not None:
        lo_i, hi_i = problem.count_bounds()
        if (lo_i > hi_i).any() and (e := first_true(lo_i > hi_i)) is not None:
            return (
                f"expert {e} must take between {_fmt(lo[e])} and {_fmt(hi[e])} {unit}, "
                "and no whole number of clients lies in that range"
            )
    if problem.fixed is not None:  # without fixed pairs the fixed load is 0 <= hi
        fixed_load = w @ problem.fixed
        if (e := first_true(_exceeds(fixed_load, hi, DEFAULT_TOL))) is not None:
            return (
                f"expert {e} has fixed load {_fmt(fixed_load[e])} > expert_max_load {_fmt(hi[e])}"
            )
    if problem.allowed is None:
        if problem.client_weight is None:
            max_load: np.ndarray | float = float(np.count_nonzero(cap))
        else:
            max_load = float(w[cap > 0].sum())
    else:
        can_take = problem.allowed & (cap > 0)[:, None]
        max_load = w @ can_take
    if (
        not (lo <= max_load).all()
        and (e := first_true(_exceeds(lo, np.broadcast_to(max_load, lo.shape), DEFAULT_TOL)))
        is not None
    ):
        if problem.client_weight is None:
            return (
                f"expert {e} needs at least {_fmt(lo[e])} clients but only "
                f"{int(np.count_nonzero(problem.allowed_mask[:, e] & (cap > 0)))} may take it"
            )
        return (
            f"expert {e} needs load at least {_fmt(lo[e])} but the clients that may take it "
            f"weigh only {_fmt(_at(max_load, e))} in total"
        )

    # -- aggregate
    eff_cap = np.minimum(cap, n_allowed)
    total_cap = float(eff_cap.sum() if problem.client_weight is None else eff_cap @ w)
    total_lo = float(lo.sum())
    if total_lo > total_cap * (1 + DEFAULT_TOL) + DEFAULT_TOL:
        return f"total capacity {_fmt(total_cap)} < total minimum expert load {_fmt(total_lo)}"
    total_hi = float(hi.sum())
    total_min = float(kmin.sum() if problem.client_weight is None else kmin @ w)
    if total_min > total_hi * (1 + DEFAULT_TOL) + DEFAULT_TOL:
        return (
            f"total minimum demand {_fmt(total_min)} (min_experts) > "
            f"total maximum expert load {_fmt(total_hi)}"
        )
    return None
