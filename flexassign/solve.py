"""The single entry point: :func:`solve_assignment`."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._start import heuristic_start, keep_better
from ._validation import SEED_MAX, check_real, is_int, is_real
from .backends.base import MIN_SOLVER_TIME, BackendOutput, SolveOptions
from .backends.options import AUTO, options_for, validate_options
from .backends.registry import (
    auto_order,
    check_supported,
    get_backend,
    list_backends,
)
from .errors import InvalidProblemError, ProblemTypeError, UnsupportedProblemError
from .labels import Labels, attach, split_labels
from .problem import AssignmentProblem
from .result import AssignmentResult, Status
from .verify import DEFAULT_TOL, diagnose_infeasibility, verify_assignment

__all__ = ["auto_method", "evaluate_assignment", "solve_assignment"]

_LOG = logging.getLogger(__name__)


def auto_method(problem: AssignmentProblem, *, priced: bool = False, proof: bool = False) -> str:
    """The fastest installed exact method for the problem's structure.

    Min-cost flow when the constraint matrix is totally unimodular (equal client
    weights, no binding knapsack): ``flow-warm`` (price-induced choices repaired to a
    certified optimum, :mod:`flexassign.backends.flow.warm`) for hard bounds, when numba
    is installed from ``registry.WARM_COMPILED_MIN_PAIRS`` client-expert pairs with at
    least ``WARM_COMPILED_MIN_EXPERTS`` experts and as many clients as experts (its
    compiled engine); without numba from ``registry.WARM_MIN_PAIRS`` pairs, or, when
    ``priced`` (expert prices from an earlier round come in ``options["prices"]``), from
    ``WARM_PRICED_ANY_PAIRS`` pairs, or ``WARM_PRICED_MIN_PAIRS`` with at least
    ``WARM_PRICED_CLIENTS_PER_EXPERT`` clients per expert; otherwise ``flow``, which
    from 20,000 pairs solves on each client's best candidate experts (cold prices
    estimated) and proves optimality with a reduced-cost certificate (see
    :mod:`flexassign.backends.flow.cold`).
    Otherwise the first installed exact MIP backend, in the order HiGHS, ``scipy.optimize.milp``,
    CP-SAT, then any other exact one.
    Weighted loads or a binding memory knapsack (hard bounds): the ``price`` method
    (:mod:`flexassign.backends.price.method`), a feasible assignment with a true bound
    at a gap of at most ``mip_gap`` (default 1e-4) at about greedy's pace; ``proof``
    (``mip_gap=0``) takes the MIP order instead (``registry.auto_order``).
    """
    candidates = auto_order(problem, priced=priced, proof=proof)
    for name in candidates:
        backend = get_backend(name)
        if backend.installed() and backend.unsupported_reason(problem) is None:
            return name
    for backend in list_backends():  # any other exact one (third-party backends)
        if (
            backend.exact
            and backend.name not in candidates
            and backend.installed()
            and backend.unsupported_reason(problem) is None
        ):
            return backend.name
    raise UnsupportedProblemError(
        "no installed exact backend can solve this problem; install highspy "
        "(`pip install highspy`) or ortools"
    )


def _check_settings(
    time_limit: Any, mip_gap: Any, seed: Any, threads: Any, verify_tol: Any
) -> tuple[float | None, float | None, int, int | None, float]:
    """The solver settings, converted, or an error naming the argument."""
    if time_limit is not None:
        if not is_real(time_limit):
            raise ProblemTypeError(
                f"`time_limit` must be a number of seconds or None; got {time_limit!r}"
            )
        time_limit = check_real("time_limit", time_limit, lo=0.0, lo_open=True)
    if mip_gap is not None:
        if not is_real(mip_gap):
            raise ProblemTypeError(f"`mip_gap` must be a number or None; got {mip_gap!r}")
        mip_gap = check_real("mip_gap", mip_gap, lo=0.0)
    if not is_int(seed):
        raise ProblemTypeError(f"`seed` must be an integer; got {seed!r}")
    if not 0 <= seed <= SEED_MAX:
        raise InvalidProblemError(f"`seed` must be in [0, 2**31 - 1]; got {seed}")
    if threads is not None and not (is_int(threads) and threads >= 1):
        raise InvalidProblemError(f"`threads` must be a positive integer or None; got {threads!r}")
    if threads is not None and threads > 1024:
        raise InvalidProblemError(f"`threads` must be at most 1024; got {threads}")
    return (
        time_limit,
        mip_gap,
        int(seed),
        None if threads is None else int(threads),
        _check_verify_tol(verify_tol),
    )


def _check_verify_tol(verify_tol: Any, name: str = "verify_tol") -> float:
    """The verifier's relative tolerance, in [0, 0.5] (NaN would switch checks off)."""
    if not is_real(verify_tol):
        raise ProblemTypeError(f"`{name}` must be a number; got {verify_tol!r}")
    if not (math.isfinite(float(verify_tol)) and 0 <= verify_tol <= 0.5):
        raise InvalidProblemError(f"`{name}` must be in [0, 0.5]; got {verify_tol}")
    return float(verify_tol)


def _as_problem(
    problem: AssignmentProblem | ArrayLike, kwargs: dict[str, Any]
) -> tuple[AssignmentProblem, Labels | None]:
    if isinstance(problem, AssignmentProblem):
        if kwargs:
            raise ProblemTypeError(
                "problem arguments (" + ", ".join(f"`{k}`" for k in sorted(kwargs)) + ") "
                "cannot be combined with an AssignmentProblem; use problem.replace(...)"
            )
        return problem, None
    fitness, kwargs, labels = split_labels(problem, kwargs)  # pandas labels, if any
    if "tolerance" in kwargs:
        tol = kwargs.pop("tolerance")
        return AssignmentProblem.balanced(fitness, tolerance=tol, **kwargs), labels
    return AssignmentProblem(fitness, **kwargs), labels


def solve_assignment(
    problem: AssignmentProblem | ArrayLike,
    /,
    *,
    method: str = "auto",
    time_limit: float | None = None,
    mip_gap: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    verbose: bool = False,
    options: Mapping[str, Any] | None = None,
    verify_tol: float = DEFAULT_TOL,
    **problem_kwargs: Any,
) -> AssignmentResult:
    """Solve a client-expert assignment problem and verify the answer.

    Parameters
    ----------
    problem : AssignmentProblem or array_like of shape (N, E)
        The problem, or a fitness matrix; then ``problem_kwargs`` build it
        (:meth:`AssignmentProblem.balanced` when ``tolerance`` is among them).
    method : str
        ``"auto"`` (min-cost flow for totally unimodular problems, MIP otherwise),
        or a backend name from :func:`~flexassign.available_backends`.
    time_limit : float, optional
        Seconds for the whole call, > 0: checking the input, the start heuristics and
        building the model count against it, and the solver gets what is left (per
        backend, with measured overshoots: ``docs/problem.md``). Exact MIP backends
        start from the ``greedy-balanced`` (or ``lp-round``) assignment when it is
        feasible and return the best assignment known when stopped (``TIME_LIMIT``,
        with bound and gap); when nothing is left before the solver could start, it is
        not run and ``message`` says where the time went. A call that runs past the
        limit by more than 0.5 s + 50 % says so in ``message`` (and
        ``stats["time_limit_exceeded"]``). Backends without a limit (``flow``, the
        greedy ones) say so in ``message`` and ``stats["time_limit_ignored"]``.
    mip_gap : float, optional
        Relative gap at which MIP backends may stop (result is then FEASIBLE).
    seed : int
        Solver random seed in ``[0, 2**31 - 1]``; the same input and seed give the same
        assignment.
    threads : int, optional
        Solver threads, 1 to 1024 (default: one, for determinism). Changing it between
        solves is safe (HiGHS's process-wide scheduler is reset when it changes).
    verbose : bool
        Show the solver log.
    options : Mapping, optional
        Backend-specific options (e.g. ``{"warm_start": x}`` for ``highs``), checked
        against the backend's declared list before solving (``flexassign backends``
        prints it): an unknown key or a bad value raises an error naming it.
    verify_tol : float
        Relative tolerance of the verifier on load and memory bounds, in ``[0, 0.5]``.
    **problem_kwargs
        :class:`AssignmentProblem` arguments, when ``problem`` is an array.

    Returns
    -------
    AssignmentResult
        Verified: ``success`` is True only if ``x`` satisfies every constraint.

    Raises
    ------
    InvalidProblemError, ProblemTypeError
        Bad problem data, settings or options (a :class:`ValueError` /
        :class:`TypeError`), with the argument named in backticks.
    UnknownMethodError, BackendNotInstalledError, UnsupportedProblemError
        ``method`` is unknown, its package is missing, or it cannot model the problem.

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign import solve_assignment
    >>> fitness = np.array([[3.0, 1.0], [2.0, 0.0], [1.0, 2.0]])
    >>> res = solve_assignment(fitness, capacity=1, expert_max_load=2, method="flow")
    >>> res.status.value, res.experts, res.objective
    ('optimal', [(0,), (0,), (1,)], 7.0)
    """
    t0 = time.perf_counter()
    prob, labels = _as_problem(problem, dict(problem_kwargs))
    limit, gap, seed_, threads_, tol = _check_settings(
        time_limit, mip_gap, seed, threads, verify_tol
    )
    ignored: list[str] = []
    if method == "auto":
        # one list of options at every size: checked against all that auto may pick
        checked = validate_options("auto", AUTO, options, prob)
        priced = checked.get("prices") is not None
        name = auto_method(prob, priced=priced, proof=gap == 0)
        _LOG.info("auto chose %s for %s", name, prob)
        backend = get_backend(name)
        extra, ignored = options_for(name, backend.options, checked, prob)
    else:
        name = method
        backend = get_backend(name)
        check_supported(backend, prob)
        extra = validate_options(backend.name, backend.options, options, prob)
    solve_fn = backend.load()
    opts = SolveOptions(
        time_limit=limit,
        mip_gap=gap,
        seed=seed_,
        threads=threads_,
        verbose=bool(verbose),
        extra=extra,
    )

    diagnosis = diagnose_infeasibility(prob)
    if diagnosis is not None and backend.kind != "baseline":
        out = BackendOutput(Status.INFEASIBLE, message=diagnosis, stats={"presolve": "infeasible"})
        return attach(_finish(prob, backend.name, backend.exact, out, t0, tol), labels)
    timed = limit is not None and backend.kind != "baseline" and backend.time_limit
    start = None
    t_start = 0.0
    t_solver = time.perf_counter()
    if timed and diagnosis is None:
        assert limit is not None
        start, opts = heuristic_start(prob, backend, opts, t0 + limit)
        t_start = time.perf_counter() - t_solver
    if timed:
        assert limit is not None
        # the whole call counts: the backend gets what validation and the start left
        left = limit - (time.perf_counter() - t0)
        opts = dataclasses.replace(opts, time_limit=max(left, 0.0))
    t_solver = time.perf_counter()
    if timed and opts.time_limit is not None and opts.time_limit <= MIN_SOLVER_TIME:
        out = BackendOutput(
            Status.TIME_LIMIT,
            message=f"time_limit={limit:g} s was spent before {name} could start "
            f"({_time_split(t_solver - t0, t_start)})",
            stats={"build_time": 0.0, "solve_time": 0.0},
        )
    else:
        try:
            out = solve_fn(prob, opts)
        except (InvalidProblemError, ProblemTypeError, UnsupportedProblemError):
            raise
        except Exception as exc:  # a solver crash is reported, not hidden
            out = BackendOutput(Status.ERROR, message=f"{name} raised {type(exc).__name__}: {exc}")
    if start is not None:
        out = keep_better(prob, out, start)
    if ignored:
        out.stats["ignored_options"] = ignored
    if timed:
        out.stats["start_time"] = t_start
        assert limit is not None and opts.time_limit is not None
        _report_overrun(out, name, limit, opts.time_limit, t0, t_start, t_solver)
        if "time_limit_exceeded" in out.stats:
            _LOG.warning("%s: %s", name, out.message)
    if limit is not None and not backend.time_limit:
        out.stats["time_limit_ignored"] = True
        out.message = (
            f"{out.message}; time_limit ignored: {name} runs to completion (it has no time limit)"
        ).lstrip("; ")
    if diagnosis is not None:
        out.message = f"{out.message}; the problem is infeasible: {diagnosis}".lstrip("; ")
    return attach(_finish(prob, backend.name, backend.exact, out, t0, tol), labels)


def _time_split(before: float, t_start: float) -> str:
    """Where the time before the backend went, as text."""
    return f"{before - t_start:.2f} s checking the input, {t_start:.2f} s on start heuristics"


def overrun_slack(limit: float) -> float:
    """Seconds past ``time_limit`` a call may run before ``message`` reports the overrun:
    0.5 s plus half the limit (verification, result building, a solver's last check)."""
    return 0.5 + 0.5 * limit


def _report_overrun(
    out: BackendOutput,
    name: str,
    limit: float,
    given: float,
    t0: float,
    t_start: float,
    t_solver: float,
) -> None:
    """Say in ``message`` (and ``stats["time_limit_exceeded"]``) where the time went when
    the call ran well past ``time_limit``; nothing when it kept to it."""
    now = time.perf_counter()
    over = (now - t0) - limit
    if over <= overrun_slack(limit):
        return
    out.stats["time_limit_exceeded"] = over
    build = out.stats.get("build_time")
    solve = out.stats.get("solve_time")
    parts = [_time_split(t_solver - t0, t_start)]
    if t_solver - t0 > limit:
        out.stats["time_limit_exceeded"] = over
        out.message = (
            f"{out.message}; time_limit={limit:g} s exceeded by {over:.2f} s: it was spent "
            f"before {name} started ({parts[0]})"
        ).lstrip("; ")
        return
    if isinstance(build, float) and isinstance(solve, float):
        parts.append(f"{build:.2f} s building the model, {solve:.2f} s in the solver")
        solver_given = max(given - build, 0.0)
        if solve > solver_given + overrun_slack(solver_given):
            why = "the solver did not stop at its limit"
        elif build >= solve:
            why = "building the model took longer than the time left"
        else:
            why = "the backend overran"
    else:
        parts.append(f"{now - t_solver:.2f} s in {name}")
        why = f"{name} did not stop at its limit"
    out.message = (
        f"{out.message}; time_limit={limit:g} s exceeded by {over:.2f} s: {why} "
        f"({', '.join(parts)})"
    ).lstrip("; ")


def _bound_met(bound: float | None, objective: float) -> bool:
    return bound is not None and bound <= objective + 1e-9 * max(1.0, abs(objective))


def evaluate_assignment(
    problem: AssignmentProblem,
    x: ArrayLike,
    *,
    method: str = "external",
    message: str = "",
    verify_tol: float = DEFAULT_TOL,
) -> AssignmentResult:
    """Verify an assignment made outside :func:`solve_assignment` and wrap it as a result.

    For policies that are not solvers (a random draw, an assignment imposed by the
    caller): the same verifier runs, so the result is ``FEASIBLE`` when ``x`` satisfies
    every constraint and ``VIOLATES_CONSTRAINTS`` (with the violations listed) otherwise.
    It never claims optimality.

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign import AssignmentProblem
    >>> p = AssignmentProblem(np.ones((2, 2)), capacity=1, expert_max_load=1)
    >>> evaluate_assignment(p, [[1, 0], [1, 0]], method="random").status.value
    'violates_constraints'
    """
    t0 = time.perf_counter()
    if not isinstance(problem, AssignmentProblem):
        raise ProblemTypeError(
            f"`problem` must be an AssignmentProblem; got {type(problem).__name__}"
        )
    tol = _check_verify_tol(verify_tol)
    out = BackendOutput(Status.FEASIBLE, x=np.asarray(x), message=message)
    return _finish(problem, method, False, out, t0, tol)


def _finish(
    problem: AssignmentProblem,
    name: str,
    exact: bool,
    out: BackendOutput,
    t0: float,
    tol: float,
    stats: dict[str, Any] | None = None,
) -> AssignmentResult:
    status = out.status
    message = out.message
    merged = {**(stats or {}), **out.stats}
    if out.x is None:
        if status in (Status.OPTIMAL, Status.FEASIBLE):
            status, message = (
                Status.ERROR,
                f"{name} claimed {status.value} without an assignment",
            )
        return AssignmentResult(
            status=status,
            x=None,
            objective=float("nan"),
            bound=out.bound,
            gap=None,
            loads=None,
            runtime=time.perf_counter() - t0,
            method=name,
            message=message or status.value,
            stats=merged,
            problem=problem,
        )
    check = verify_assignment(problem, out.x, tol=tol)
    if not exact and status is Status.OPTIMAL and not _bound_met(out.bound, check.objective):
        # only exact methods may claim optimality, or a heuristic that hands over a
        # proven bound equal to its objective (lp-round on an integral LP)
        status = Status.FEASIBLE
    if check.violations:
        broken = "; ".join(str(v) for v in check.violations[:5])
        more = len(check.violations) - 5
        broken += f"; and {more} more" if more > 0 else ""
        if exact:
            status = Status.ERROR
            message = f"{name} returned an assignment that breaks constraints: {broken}"
        else:
            status = Status.VIOLATES_CONSTRAINTS
            message = f"{message}: breaks {len(check.violations)} constraint(s): {broken}".lstrip(
                ": "
            )
    bound = out.bound
    if bound is not None and not np.isfinite(bound):
        bound = None
    if status is Status.OPTIMAL and bound is None:
        bound = check.objective
    if bound is not None and not check.violations:
        # a bound below a feasible objective is no bound (solver tolerances): lift it
        bound = max(bound, check.objective)
    gap = None
    if bound is not None and not check.violations:
        gap = max(0.0, bound - check.objective) / max(abs(check.objective), 1.0)
    if not message:
        message = {
            Status.OPTIMAL: "optimal assignment found",
            Status.FEASIBLE: "feasible assignment found (optimality not proven)",
        }.get(status, status.value)
    return AssignmentResult(
        status=status,
        x=check.x,
        objective=check.objective,
        bound=bound,
        gap=gap,
        loads=check.loads,
        runtime=time.perf_counter() - t0,
        method=name,
        message=message,
        violations=check.violations,
        stats=merged,
        problem=problem,
    )
