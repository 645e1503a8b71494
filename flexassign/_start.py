"""A fast feasible start for a backend that runs under a time limit.

:func:`~flexassign.solve_assignment` calls :func:`heuristic_start` before an exact or
heuristic backend that honours ``time_limit``: the better feasible answer of the fast
heuristics (:data:`START_METHODS`) becomes its ``warm_start`` and, through
:func:`keep_better`, the answer when the backend finds nothing better in time. A
feasible ``warm_start`` the caller passed competes with them.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .backends.base import BackendOutput, SolveOptions
from .backends.registry import Backend, get_backend
from .problem import AssignmentProblem
from .result import Status
from .verify import verify_assignment

__all__ = ["START_METHODS", "Start", "heuristic_start", "keep_better"]


#: Fast heuristics that give a time-limited backend a start, in order, with the share
#: of the remaining limit each may use (None: unbounded, it is fast). The better
#: feasible one is kept; lp-round also brings a valid LP bound.
START_METHODS = (("greedy-balanced", None), ("lp-round", 0.4))


@dataclasses.dataclass(frozen=True)
class Start:
    x: np.ndarray
    objective: float
    bound: float | None
    method: str
    #: the heuristic whose bound ``bound`` is (lp-round's LP bound, say, while ``x``
    #: is greedy-balanced's assignment)
    bound_method: str | None = None


def heuristic_start(
    problem: AssignmentProblem, backend: Backend, opts: SolveOptions, deadline: float
) -> tuple[Start | None, SolveOptions]:
    """A feasible start from a fast heuristic, for a backend under a time limit.

    It is handed over as ``warm_start`` when the backend declares that option (and the
    caller gave none); it is kept as the answer if the backend finds nothing better
    within its limit, and lp-round's LP bound tightens a missing or weaker solver
    bound. ``deadline`` (a :func:`time.perf_counter` time) is when the whole call's
    ``time_limit`` runs out: each heuristic with a share gets that share of the time
    left before it. The caller gives the backend what is left afterwards
    (``opts.time_limit`` is returned unchanged).
    """
    start = None
    given = opts.extra.get("warm_start")
    if given is not None:
        # the caller's own start competes too: a solver stopped before it read the
        # start (a loaded machine, a limit of hundredths of a second) never loses it
        x = np.asarray(given, dtype=bool)
        if x.shape == problem.shape and verify_assignment(problem, x).ok:
            start = Start(x, problem.objective(x), None, "warm_start")
    for method, share in START_METHODS:
        heuristic = get_backend(method)
        if method == backend.name or not heuristic.installed():
            continue
        if heuristic.unsupported_reason(problem) is not None:
            continue
        left = deadline - time.perf_counter()
        if share is not None and (opts.time_limit is None or left <= 0.05 * opts.time_limit):
            break
        limit = None if share is None else share * left
        try:
            out = heuristic.load()(
                problem, SolveOptions(time_limit=limit, seed=opts.seed, threads=opts.threads)
            )
        except Exception:  # a start is a convenience: never let it break the solve
            continue
        if out.x is not None and verify_assignment(problem, out.x).ok:
            x = np.asarray(out.x, dtype=bool)
            objective = problem.objective(x)
            bound = None if start is None else start.bound
            bound_method = None if start is None else start.bound_method
            if out.bound is not None and (bound is None or out.bound < bound):
                bound, bound_method = out.bound, method
            if start is None or objective > start.objective:
                start = Start(x, objective, bound, method, bound_method)
            else:
                start = dataclasses.replace(start, bound=bound, bound_method=bound_method)
    if start is None:
        return None, opts
    extra = dict(opts.extra)
    declared = backend.options is None or any(s.name == "warm_start" for s in backend.options)
    if declared and extra.get("warm_start") is None:
        extra["warm_start"] = start.x
    return start, dataclasses.replace(opts, extra=extra)


def keep_better(problem: AssignmentProblem, out: BackendOutput, start: Start) -> BackendOutput:
    """Merge a time-limited answer with the heuristic start: the better assignment, the
    tighter of the two valid bounds."""
    if out.status not in (Status.TIME_LIMIT, Status.FEASIBLE):
        return out
    if start.bound is not None and (out.bound is None or start.bound < out.bound):
        out.bound = start.bound
        out.stats["bound_from"] = start.bound_method or start.method
    if out.x is not None and verify_assignment(problem, out.x).ok:
        if problem.objective(out.x) >= start.objective:
            return out
    note = f"kept the {start.method} start, the best assignment known when the solver stopped"
    out.x = start.x
    out.stats["incumbent"] = start.method
    out.message = f"{out.message}; {note}".lstrip("; ")
    return out
