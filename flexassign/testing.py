"""Tools for testing assignment code: Hypothesis strategies, an oracle, assertions.

For teams that write their own assignment policy (a heuristic, a wrapper around
:func:`~flexassign.solve_assignment`, a scheduler that edits plans) and want to test
it the way flexassign tests its own backends:

- :func:`problems` and :func:`feasible_problems` are Hypothesis strategies that
  generate :class:`~flexassign.AssignmentProblem` instances with any mix of features
  (count or weighted loads, a memory knapsack, allowed/fixed masks, soft bounds,
  mixed-sign fitness). :func:`feasible_problems` builds each problem around a hidden
  assignment, so it is feasible by construction; :func:`problems` may be infeasible.
- :func:`assert_valid_assignment` fails with every broken constraint spelled out.
- :func:`assert_optimal` compares an assignment's objective with an independent
  reference: a dense ``scipy.optimize.milp`` model that shares no code with the
  backends (:func:`reference_solution`), a backend name, a result, or a number.
- :func:`random_problem` is the same generator without Hypothesis, from a
  ``numpy.random.Generator``.

This module imports Hypothesis (``pip install "flexassign[testing]"``); the rest of
flexassign never does.

Examples
--------
Testing a user's own heuristic in a few lines (each client takes its best experts,
then the test checks the claims the heuristic makes):

>>> import numpy as np
>>> from hypothesis import given, settings
>>> from flexassign import verify_assignment
>>> from flexassign.testing import assert_valid_assignment, problems
>>> def top_k(problem):
...     order = np.argsort(-problem.fitness, axis=1, kind="stable")
...     x = np.zeros(problem.shape, dtype=bool)
...     for c, k in enumerate(problem.capacity):
...         x[c, order[c, :k]] = True
...     return x
>>> @settings(max_examples=20, derandomize=True, database=None)
... @given(problems(knapsack=False, masks=False, fixed=False, tolerance=None))
... def test_top_k_respects_capacity(problem):
...     x = top_k(problem)
...     assert (x.sum(axis=1) <= problem.capacity).all()
...     if problem.min_experts.max() == 0:  # no minimum and no load bounds: always valid
...         assert_valid_assignment(problem, x)
>>> test_top_k_respects_capacity()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as exc:  # pragma: no cover - hypothesis is in the test environment
    raise ImportError(
        'flexassign.testing needs Hypothesis: pip install "flexassign[testing]"'
    ) from exc

from .errors import InvalidProblemError, ProblemTypeError
from .problem import AssignmentProblem
from .result import AssignmentResult
from .verify import DEFAULT_TOL, verify_assignment

__all__ = [
    "Reference",
    "assert_optimal",
    "assert_valid_assignment",
    "feasible_problems",
    "problems",
    "random_problem",
    "reference_solution",
]

_TOLERANCES: st.SearchStrategy[float | None] = st.sampled_from((None, 0.0, 0.2, 0.5))


# =================================================================== generators
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


def _feature(draw: st.DrawFn, value: bool | None) -> bool:
    return draw(st.booleans()) if value is None else bool(value)


def _size(draw: st.DrawFn, name: str, value: int | tuple[int, int]) -> int:
    lo, hi = (value, value) if isinstance(value, int) else value
    if isinstance(lo, bool) or isinstance(hi, bool) or not (1 <= lo <= hi):
        raise InvalidProblemError(f"`{name}` must be a positive int or a (min, max) pair")
    return draw(st.integers(int(lo), int(hi)))


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
    n = _size(draw, "clients", clients)
    e = _size(draw, "experts", experts)
    tol = draw(tolerance) if isinstance(tolerance, st.SearchStrategy) else tolerance
    seed = draw(st.integers(0, 2**32 - 1))
    return random_problem(
        np.random.default_rng(seed),
        n=n,
        e=e,
        weighted=_feature(draw, weighted),
        knapsack=_feature(draw, knapsack),
        masks=_feature(draw, masks),
        fixed=_feature(draw, fixed),
        soft=_feature(draw, soft),
        mixed_sign=_feature(draw, mixed_sign),
        exact=_feature(draw, exact),
        tolerance=tol,
    )


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
    n = _size(draw, "clients", clients)
    e = _size(draw, "experts", experts)
    flags = {
        name: _feature(draw, value)
        for name, value in (
            ("weighted", weighted),
            ("knapsack", knapsack),
            ("masks", masks),
            ("fixed", fixed),
            ("mixed_sign", mixed_sign),
            ("balanced", balanced),
        )
    }
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


# ===================================================================== the oracle
@dataclass(frozen=True)
class Reference:
    """The independent reference model's answer.

    Attributes
    ----------
    feasible : bool
    objective : float
        Optimal objective (NaN when infeasible).
    x : ndarray of bool or None
        An optimal assignment (None when infeasible).
    """

    feasible: bool
    objective: float
    x: NDArray[np.bool_] | None


def reference_solution(problem: AssignmentProblem) -> Reference:
    """Solve ``problem`` with a dense ``scipy.optimize.milp`` model written from scratch.

    The model is built directly from the problem's arrays with dense matrices and
    shares no code with the backends (not even the sparse model builder), so
    agreement with it is real evidence. Dense: meant for test-sized problems (a few
    hundred pairs).

    Examples
    --------
    >>> from flexassign import AssignmentProblem
    >>> ref = reference_solution(AssignmentProblem(np.eye(2), capacity=1, expert_max_load=1))
    >>> ref.feasible, ref.objective
    (True, 2.0)

    The model stops at a relative MIP gap of 1e-12 and HiGHS's default absolute gap
    of 1e-6, so its objective is optimal to within about 1e-6.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    p = problem
    n, e = p.shape
    nv = n * e
    soft = p.load_penalty is not None
    nvar = nv + (2 * e if soft else 0)
    c = np.zeros(nvar)
    c[:nv] = -p.fitness.reshape(-1)
    if soft:
        c[nv:] = p.load_penalty
    lb = np.zeros(nvar)
    ub = np.full(nvar, np.inf)
    ub[:nv] = 1.0
    if p.allowed is not None:
        ub[:nv][~p.allowed.reshape(-1)] = 0.0
    if p.fixed is not None:
        lb[:nv][p.fixed.reshape(-1)] = 1.0
    rows, lo, hi = [], [], []
    for ci in range(n):
        r = np.zeros(nvar)
        r[ci * e : (ci + 1) * e] = 1.0
        rows.append(r)
        lo.append(p.min_experts[ci])
        hi.append(p.capacity[ci])
        if p.expert_size is not None and p.client_budget is not None:
            r = np.zeros(nvar)
            r[ci * e : (ci + 1) * e] = p.expert_size
            rows.append(r)
            lo.append(-np.inf)
            hi.append(p.client_budget[ci])
    w = p.weights
    for j in range(e):
        r = np.zeros(nvar)
        r[j:nv:e] = w
        if soft:
            r[nv + j] = 1.0  # shortfall below L
            r[nv + e + j] = -1.0  # excess above U
        rows.append(r)
        lo.append(p.expert_min_load[j])
        hi.append(p.expert_max_load[j])
    integrality = np.zeros(nvar)
    integrality[:nv] = 1
    res = milp(
        c,
        constraints=LinearConstraint(np.array(rows), np.array(lo), np.array(hi)),
        bounds=Bounds(lb, ub),
        integrality=integrality,
        options={"mip_rel_gap": 1e-12},
    )
    if res.status == 2:
        return Reference(False, float("nan"), None)
    if res.status != 0:
        raise RuntimeError(f"the reference MIP failed: {res.message}")
    x = res.x[:nv].reshape(n, e) > 0.5
    return Reference(True, p.objective(x), x)


# ===================================================================== assertions
def assert_valid_assignment(
    problem: AssignmentProblem, x: ArrayLike, *, tol: float = DEFAULT_TOL, max_listed: int = 10
) -> None:
    """Fail unless ``x`` satisfies every constraint of ``problem``.

    The message lists each broken constraint in the problem's terms (client or
    expert index, the recomputed value and the bound), up to ``max_listed``.

    Raises
    ------
    AssertionError
        ``x`` has the wrong shape, is not 0/1, or breaks a constraint.
    ProblemTypeError
        ``problem`` is not an :class:`~flexassign.AssignmentProblem`.

    Examples
    --------
    >>> from flexassign import AssignmentProblem
    >>> p = AssignmentProblem(np.ones((2, 2)), capacity=1, expert_max_load=1)
    >>> assert_valid_assignment(p, [[1, 0], [0, 1]])
    >>> assert_valid_assignment(p, [[1, 1], [1, 0]])
    Traceback (most recent call last):
    ...
    AssertionError: the assignment breaks 2 constraint(s):
      - client 0 takes 2 experts > capacity 1
      - expert 0 has load 2 > expert_max_load 1
    """
    if not isinstance(problem, AssignmentProblem):
        raise ProblemTypeError(
            f"`problem` must be an AssignmentProblem; got {type(problem).__name__}"
        )
    try:
        check = verify_assignment(problem, x, tol=tol)
    except InvalidProblemError as exc:
        raise AssertionError(f"not an assignment for this problem: {exc}") from None
    if check.violations:
        listed = [f"  - {v}" for v in check.violations[:max_listed]]
        more = len(check.violations) - max_listed
        if more > 0:
            listed.append(f"  - and {more} more")
        raise AssertionError(
            f"the assignment breaks {len(check.violations)} constraint(s):\n" + "\n".join(listed)
        )


def assert_optimal(
    problem: AssignmentProblem,
    x: ArrayLike,
    *,
    reference: str | AssignmentResult | Reference | float | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-6,
) -> None:
    """Fail unless ``x`` is valid and its objective matches the optimum.

    Parameters
    ----------
    problem : AssignmentProblem
    x : array_like of bool, shape (N, E)
    reference : None, str, AssignmentResult, Reference or float
        Where the optimum comes from: ``None`` solves the independent dense MIP
        (:func:`reference_solution`); a string names a backend for
        :func:`~flexassign.solve_assignment`; a result or :class:`Reference` gives
        its objective; a number is the optimal objective itself.
    rtol, atol : float
        Objectives match when ``|obj - opt| <= atol + rtol * max(1, |opt|)``. The
        default ``atol`` is HiGHS's default absolute MIP gap (1e-6): the reference
        model and the MIP backends stop within it, so a smaller one can flag an
        optimal answer whose objective differs from theirs in the seventh digit.

    Raises
    ------
    AssertionError
        ``x`` breaks a constraint, falls short of the optimum (the message gives both
        objectives and the gap), beats it (then the reference is wrong), or the
        reference finds the problem infeasible.
    ProblemTypeError
        ``reference`` is none of the accepted types.

    Examples
    --------
    >>> from flexassign import AssignmentProblem
    >>> p = AssignmentProblem([[3.0, 2.0], [2.0, 0.0]], capacity=1, expert_max_load=1)
    >>> assert_optimal(p, [[0, 1], [1, 0]])
    >>> assert_optimal(p, [[1, 0], [0, 1]], reference="highs")
    Traceback (most recent call last):
    ...
    AssertionError: objective 3 is below the optimum 4 (method 'highs') by 1 (25.000% relative)
    """
    assert_valid_assignment(problem, x)
    objective = problem.objective(x)
    optimum, source = _optimum(problem, reference)
    if optimum is None:
        raise AssertionError(
            f"{source} says the problem is infeasible, yet the assignment is valid "
            f"(objective {objective:.10g}): the reference is wrong"
        )
    slack = atol + rtol * max(1.0, abs(optimum))
    if objective < optimum - slack:
        gap = optimum - objective
        raise AssertionError(
            f"objective {objective:.10g} is below the optimum {optimum:.10g} ({source}) "
            f"by {gap:.6g} ({gap / max(1.0, abs(optimum)):.3%} relative)"
        )
    if objective > optimum + slack:
        raise AssertionError(
            f"objective {objective:.10g} beats the claimed optimum {optimum:.10g} "
            f"({source}): the reference is not optimal"
        )


def _optimum(
    problem: AssignmentProblem, reference: str | AssignmentResult | Reference | float | None
) -> tuple[float | None, str]:
    if reference is None:
        ref = reference_solution(problem)
        return (ref.objective if ref.feasible else None), "reference MIP"
    if isinstance(reference, Reference):
        return (reference.objective if reference.feasible else None), "given Reference"
    if isinstance(reference, str):
        from .solve import solve_assignment

        res = solve_assignment(problem, method=reference)
        return _from_result(res, f"method {reference!r}")
    if isinstance(reference, AssignmentResult):
        return _from_result(reference, f"result of {reference.method!r}")
    if isinstance(reference, bool) or not isinstance(reference, int | float | np.number):
        raise ProblemTypeError(
            "`reference` must be None, a backend name, an AssignmentResult, a Reference "
            f"or a number; got {type(reference).__name__}"
        )
    return float(reference), "given optimum"


def _from_result(res: AssignmentResult, source: str) -> tuple[float | None, str]:
    from .result import Status

    if res.status is Status.INFEASIBLE:
        return None, source
    if res.status is not Status.OPTIMAL:
        raise AssertionError(
            f"`reference` is not a proven optimum: {source} returned {res.status.value} "
            f"({res.message})"
        )
    return res.objective, source
