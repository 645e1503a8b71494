r"""Relax and fix: the core LP's integral clients keep their LP choice, a small MIP
decides the fractional ones.

A basic optimal solution of the core LP has only about one or two fractional clients
per binding load or memory row, so the MIP that rounds them is tiny. It runs against
the load everybody else leaves and stops at an absolute gap (a share of the whole
problem's gap budget). If it is infeasible (or its elastic slacks stay in use), the
core clients that hold one of the experts involved are freed too, up to
:data:`ATTEMPTS` times, the last time the whole core.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import _highs
from ..base import SolveOptions
from .core import CoreModel, build_core, solve_core
from .trust import LevelSolution
from .view import View

__all__ = ["ATTEMPTS", "FRAC_TOL", "dive", "relax_and_fix"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: An LP value within this of 0 or 1 counts as integral (a basic column near a bound
#: counts as fractional: its rounding would move weight w_c times it).
FRAC_TOL = 1e-9
#: MIP attempts, each with more core clients freed (the last: the whole core).
ATTEMPTS = 4
#: Elastic slack (load units, relative to the largest weight) that counts as in use.
_SLACK_TOL = 1e-6


#: Seconds a rounding MIP may take (its best assignment is kept; the gap says the rest).
_MIP_SECONDS = 2.0
#: Attempts that dive (the first ones); the later ones solve a MIP.
_DIVES = 0
#: Dive steps (LP re-solves) per fractional client before the MIP takes over.
_DIVE_STEPS_PER_CLIENT = 3


def dive(
    sub: CoreModel, e: int, options: SolveOptions, time_limit: float | None
) -> FloatArray | None:
    """Round the LP of ``sub`` by diving: fix the pairs at (or near) 1, then the
    largest fractional one (or, if that leaves the LP infeasible, fix it to 0), and
    re-solve (HiGHS keeps its basis), until the LP is integral. ``None`` when a dive
    step leaves no feasible LP. Elastic slacks are closed: the dive stays feasible."""
    import highspy

    q = sub.pair_client.size
    d = sub.deficit.size
    n_cols = q + 2 * e + d
    h = _highs.new_highs(options, time_limit=time_limit)
    h.setOptionValue("presolve", "off")
    lo = np.zeros(n_cols)
    hi = np.concatenate([np.ones(q), np.zeros(2 * e + d)])
    _highs.pass_model(
        h, sub.cost, sub.A, lo, hi, sub.row_lo, sub.row_hi, np.zeros(n_cols, dtype=np.int32)
    )
    threads = _highs.threads_of(options)
    steps = _DIVE_STEPS_PER_CLIENT * max(int(sub.clients.size), 1) + 8
    batch: NDArray[np.int64] | None = None  # the last batch fixed to 1
    batches = True
    for _ in range(steps):
        _highs.run(h, threads)
        if _highs.outcome(h) != "optimal":
            if batch is None:
                return None
            lo[batch] = 0.0  # undo the batch; from now on one pair at a time
            h.changeColsBounds(batch.size, batch.astype(np.int32), lo[batch], hi[batch])
            batch, batches = None, False
            continue
        batch = None
        x = np.asarray(h.getSolution().col_value, dtype=np.float64)[:q]
        frac = (x > FRAC_TOL) & (x < 1 - FRAC_TOL)
        if not frac.any():
            return x
        up = np.flatnonzero(frac & (x >= 0.9) & (lo[:q] < 1)) if batches else np.zeros(0, int)
        if up.size > 1:
            lo[up] = 1.0
            h.changeColsBounds(up.size, up.astype(np.int32), lo[up], hi[up])
            batch = up
            continue
        j = int(np.flatnonzero(frac)[np.argmax(x[frac])])
        h.changeColBounds(j, 1.0, 1.0)
        h.run()
        if h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
            lo[j] = 1.0
        else:
            hi[j] = 0.0
            h.changeColBounds(j, 0.0, 0.0)
    return None


def relax_and_fix(
    view: View,
    lp: LevelSolution,
    options: SolveOptions,
    *,
    abs_gap: float,
    time_limit: float | None,
    stats: dict[str, Any],
) -> NDArray[np.bool_] | None:
    """A 0/1 value for every pair of the core LP ``lp``, or ``None``."""
    frozen_load = lp.frozen_load
    e = view.e
    pc, pe, x_lp = lp.pair_client, lp.pair_expert, lp.x
    k = lp.clients.size
    w = view.w[lp.clients]
    frac_pair = (x_lp > FRAC_TOL) & (x_lp < 1 - FRAC_TOL)
    free = np.zeros(k, dtype=bool)
    free[pc[frac_pair]] = True
    stats["fractional_clients"] = int(free.sum())
    rounded = x_lp > 0.5
    if not free.any():
        return rounded
    t0 = time.perf_counter()
    tol = _SLACK_TOL * float(np.max(view.w))
    for attempt in range(ATTEMPTS):
        if attempt == ATTEMPTS - 1:
            free[:] = True
        fixed = rounded & ~free[pc]
        load = frozen_load + np.bincount(pe[fixed], weights=w[pc[fixed]], minlength=e)
        mine = free[pc]
        pos = np.cumsum(free) - 1
        sub = build_core(view, lp.clients[free], pos[pc[mine]], pe[mine], load)
        left = None if time_limit is None else max(time_limit - (time.perf_counter() - t0), 1e-3)
        last = attempt == ATTEMPTS - 1
        if attempt < _DIVES:  # a dive first, then the MIP on the same clients
            xd = dive(sub, e, options, left)
            stats.setdefault("dive", []).append(xd is not None)
            if xd is not None:
                out = fixed.copy()
                out[np.flatnonzero(mine)] = xd > 0.5
                return out
        cap = _MIP_SECONDS if left is None else min(left, _MIP_SECONDS)
        sol = solve_core(
            sub, e, options, integer=True, abs_gap=abs_gap, time_limit=cap, elastic=last
        )
        stats.setdefault("mip_clients", []).append(int(free.sum()))
        short = sol.deficit is not None and float(sol.deficit.max(initial=0)) > 1e-9
        if (
            sol.x is not None
            and sol.slack is not None
            and not short
            and float(sol.slack.max(initial=0)) <= tol
        ):
            out = fixed.copy()
            out[np.flatnonzero(mine)] = sol.x > 0.5
            return out
        if free.all():
            return None
        _grow(free, pc, pe, rounded, mine, e, attempt)
    return None


def _grow(
    free: NDArray[np.bool_],
    pc: IntArray,
    pe: IntArray,
    rounded: NDArray[np.bool_],
    mine: NDArray[np.bool_],
    e: int,
    attempt: int,
) -> None:
    """Free (in place) core clients that hold an expert the freed ones could use: at
    most twice as many as are free (at least 64), drawn at random."""
    touched = np.zeros(e, dtype=bool)
    touched[pe[mine]] = True
    holders = np.zeros(free.size, dtype=bool)
    holders[pc[rounded & touched[pe]]] = True
    grow = np.flatnonzero(holders & ~free)
    limit = max(2 * int(free.sum()), 64)
    if grow.size > limit:
        grow = np.random.default_rng(attempt).choice(grow, size=limit, replace=False)
    free[grow] = True
