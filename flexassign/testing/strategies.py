"""Problem generators: :func:`random_problem` and the Hypothesis strategies."""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as exc:  # pragma: no cover - hypothesis is in the test environment
    raise ImportError(
        'flexassign.testing needs Hypothesis: pip install -e ".[testing]" -c constraints.txt'
    ) from exc

from .._validation import is_int
from ..errors import InvalidProblemError
from ..problem import AssignmentProblem

__all__ = ["feasible_problems", "problems", "random_problem"]

_TOLERANCES: st.SearchStrategy[float | None] = st.sampled_from((None, 0.0, 0.2, 0.5))


def random_problem(
    rng: np.random.Generator,
    *,
    n: int,
    e: int,
    weighted: bool = False,
    knapsack: bool = False,
    masks: bool = False,
    fixed: bool = False,
    soft: bool = False,
    mixed_sign: bool = False,
    exact: bool = False,
    tolerance: float | None = 0.3,
) -> AssignmentProblem:
    """A random problem of ``n`` clients and ``e`` experts; it may be infeasible.

    Parameters
    ----------
    rng : numpy.random.Generator
    n, e : int
        Clients and experts.
    weighted : bool
        Client weights in 1..19 (else loads count clients).
    knapsack : bool
        Expert sizes in 1..4 and client budgets in 0..9.
    masks : bool
        About a quarter of the pairs forbidden.
    fixed : bool
        About a tenth of the allowed pairs forced (never more than a client's capacity).
    soft : bool
        Soft load bounds (``load_penalty`` 0.05, 0.5 or 3).
    mixed_sign : bool
        Standard-normal fitness (else uniform on [0, 1)).
    exact : bool
        Every client takes exactly its capacity (``exact_capacity``).
    tolerance : float or None
        Balance tolerance for :meth:`AssignmentProblem.balanced`; ``None`` gives no
        load bounds.

    Examples
    --------
    >>> p = random_problem(np.random.default_rng(0), n=4, e=3, knapsack=True)
    >>> p.shape, p.has_knapsack
    ((4, 3), True)
    """
    fitness = rng.normal(size=(n, e)) if mixed_sign else rng.random((n, e))
    cap = rng.integers(0, min(e, 3) + 1, size=n)
    kw: dict[str, Any] = {}
    if weighted:
        kw["client_weight"] = rng.integers(1, 20, size=n).astype(float)
    if knapsack:
        kw["expert_size"] = rng.integers(1, 5, size=e).astype(float)
        kw["client_budget"] = rng.integers(0, 10, size=n).astype(float)
    allowed = None
    if masks:
        allowed = rng.random((n, e)) > 0.25
        kw["allowed"] = allowed
    if fixed:
        base = allowed if allowed is not None else np.ones((n, e), dtype=bool)
        fx = base & (rng.random((n, e)) < 0.1)
        # keep fixed counts within capacity so the instance is not trivially invalid
        for ci in range(n):
            idx = np.flatnonzero(fx[ci])
            if idx.size > cap[ci]:
                fx[ci, idx[cap[ci] :]] = False
        kw["fixed"] = fx
    if soft:
        kw["load_penalty"] = float(rng.choice([0.05, 0.5, 3.0]))
    if tolerance is None:
        return AssignmentProblem(fitness, capacity=cap, **kw)
    return AssignmentProblem.balanced(
        fitness, capacity=cap, tolerance=tolerance, exact_capacity=exact, **kw
    )


def _draw_shape(
    draw: st.DrawFn, clients: int | tuple[int, int], experts: int | tuple[int, int]
) -> tuple[int, int]:
    """``(clients, experts)``, each a given size or drawn from an inclusive range."""
    sizes = []
    for name, value in (("clients", clients), ("experts", experts)):
        lo, hi = (value, value) if isinstance(value, int) else value
        if not (is_int(lo) and is_int(hi) and 1 <= lo <= hi):
            raise InvalidProblemError(f"`{name}` must be a positive int or a (min, max) pair")
        sizes.append(draw(st.integers(int(lo), int(hi))))
    return sizes[0], sizes[1]


def _draw_features(draw: st.DrawFn, **flags: bool | None) -> dict[str, bool]:
    """Each flag as given, or drawn (in the order given) when ``None``."""
    return {name: draw(st.booleans()) if value is None else bool(value)
            for name, value in flags.items()}


@st.composite
def problems(
    draw: st.DrawFn,
    *,
    clients: int | tuple[int, int] = (1, 7),
    experts: int | tuple[int, int] = (1, 5),
    weighted: bool | None = None,
    knapsack: bool | None = None,
    masks: bool | None = None,
    fixed: bool | None = None,
    soft: bool | None = None,
    mixed_sign: bool | None = None,
    exact: bool | None = None,
    tolerance: float | st.SearchStrategy[float | None] | None = _TOLERANCES,
) -> AssignmentProblem:
    """Hypothesis strategy: random problems that may be infeasible.

    Each feature flag is ``True`` (always), ``False`` (never) or ``None`` (drawn, so
    Hypothesis shrinks it away when it does not matter); sizes and flags shrink,
    the values come from a generator seeded by a drawn integer (see
    :func:`random_problem` for the distributions).

    Parameters
    ----------
    clients, experts : int or (int, int)
        A size or an inclusive range of sizes.
    weighted, knapsack, masks, fixed, soft, mixed_sign, exact : bool or None
        Features, as in :func:`random_problem`.
    tolerance : float, None or a strategy
        Balance tolerance (``None``: no load bounds); drawn from
        ``(None, 0.0, 0.2, 0.5)`` by default.

    Examples
    --------
    >>> from hypothesis import given, settings
    >>> @settings(max_examples=10, derandomize=True, database=None)
    ... @given(problems(clients=(2, 4), weighted=True))
    ... def check(p):
    ...     assert 2 <= p.n_clients <= 4 and p.client_weight is not None
    >>> check()
    """
    n, e = _draw_shape(draw, clients, experts)
    tol = draw(tolerance) if isinstance(tolerance, st.SearchStrategy) else tolerance
    seed = draw(st.integers(0, 2**32 - 1))
    flags = _draw_features(draw, weighted=weighted, knapsack=knapsack, masks=masks, fixed=fixed,
                           soft=soft, mixed_sign=mixed_sign, exact=exact)
    return random_problem(np.random.default_rng(seed), n=n, e=e, tolerance=tol, **flags)


@st.composite
def feasible_problems(
    draw: st.DrawFn,
    *,
    clients: int | tuple[int, int] = (1, 7),
    experts: int | tuple[int, int] = (1, 5),
    weighted: bool | None = None,
    knapsack: bool | None = None,
    masks: bool | None = None,
    fixed: bool | None = None,
    mixed_sign: bool | None = None,
    balanced: bool | None = None,
) -> AssignmentProblem:
    """Hypothesis strategy: problems that are feasible by construction.

    A hidden assignment :math:`x^0` is drawn first; every constraint is then set so
    that :math:`x^0` satisfies it: capacities and minimums around its row counts,
    budgets at or above its memory use, ``allowed`` containing it, ``fixed`` inside
    it, and (``balanced``) load bounds bracketing its loads. Solvers must therefore
    never report these problems infeasible. Load bounds are hard (no soft penalty).
    Every array is drawn by Hypothesis element by element, so a failing example
    shrinks to a small, simple problem (fewer pairs, zeros, fewer features).

    Parameters
    ----------
    clients, experts : int or (int, int)
        A size or an inclusive range of sizes.
    weighted, knapsack, masks, fixed, mixed_sign : bool or None
        Features, as in :func:`problems`.
    balanced : bool or None
        Give every expert load bounds around the hidden assignment's loads.

    Examples
    --------
    >>> from hypothesis import given, settings
    >>> from flexassign import solve_assignment
    >>> @settings(max_examples=10, derandomize=True, database=None)
    ... @given(feasible_problems(knapsack=True))
    ... def check(p):
    ...     assert solve_assignment(p).success
    >>> check()
    """
    n, e = _draw_shape(draw, clients, experts)
    flags = _draw_features(draw, weighted=weighted, knapsack=knapsack, masks=masks, fixed=fixed,
                           mixed_sign=mixed_sign, balanced=balanced)
    shape = (n, e)
    # fitness on a 1/1000 grid: differences far above MIP solvers' absolute gap (1e-6),
    # and ties, which heuristics must handle, are common
    grid = st.integers(-1000 if flags["mixed_sign"] else 0, 1000)
    fitness = draw(hnp.arrays(np.int64, shape, elements=grid)) / 1000.0
    x0 = draw(hnp.arrays(np.bool_, shape))
    counts = x0.sum(axis=1)
    spare = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 1)))
    below = draw(hnp.arrays(np.int64, n, elements=st.integers(0, e)))
    kw: dict[str, Any] = {
        "capacity": np.minimum(counts + spare, e),
        "min_experts": np.maximum(counts - below, 0),
    }
    weights = np.ones(n)
    if flags["weighted"]:
        weights = draw(hnp.arrays(np.float64, n, elements=st.integers(1, 19))).astype(float)
        kw["client_weight"] = weights
    if flags["knapsack"]:
        size = draw(hnp.arrays(np.float64, e, elements=st.integers(1, 4)))
        kw["expert_size"] = size
        kw["client_budget"] = x0 @ size + draw(
            hnp.arrays(np.float64, n, elements=st.integers(0, 2))
        )
    if flags["masks"]:
        kw["allowed"] = x0 | draw(hnp.arrays(np.bool_, shape))
    if flags["fixed"]:
        kw["fixed"] = x0 & draw(hnp.arrays(np.bool_, shape))
    if flags["balanced"]:
        loads = weights @ x0
        slack = draw(hnp.arrays(np.float64, e, elements=st.floats(0.0, 0.5)))
        kw["expert_min_load"] = np.floor(loads * (1.0 - slack))
        kw["expert_max_load"] = np.ceil(loads * (1.0 + slack))
    return AssignmentProblem(fitness, **kw)
