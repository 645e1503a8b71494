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

from ..base import SolveOptions
from .core import CoreModel, build_core, solve_core
from .view import View

__all__ = ["ATTEMPTS", "FRAC_TOL", "relax_and_fix"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: An LP value within this of 0 or 1 counts as integral.
FRAC_TOL = 1e-6
#: MIP attempts, each with more core clients freed (the last: the whole core).
ATTEMPTS = 4
#: Elastic slack (load units, relative to the largest weight) that counts as in use.
_SLACK_TOL = 1e-6


def relax_and_fix(
    view: View,
    model: CoreModel,
    x_lp: FloatArray,
    frozen_load: FloatArray,
    options: SolveOptions,
    *,
    abs_gap: float,
    time_limit: float | None,
    stats: dict[str, Any],
) -> NDArray[np.bool_] | None:
    """A 0/1 value for every pair of ``model`` (the core LP's pairs), or ``None``."""
    e = view.e
    pc, pe = model.pair_client, model.pair_expert
    k = model.clients.size
    w = view.w[model.clients]
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
        sub = build_core(view, model.clients[free], pos[pc[mine]], pe[mine], load)
        left = None if time_limit is None else max(time_limit - (time.perf_counter() - t0), 1e-3)
        last = attempt == ATTEMPTS - 1
        sol = solve_core(
            sub, e, options, integer=True, abs_gap=abs_gap, time_limit=left, elastic=last
        )
        stats.setdefault("mip_clients", []).append(int(free.sum()))
        short = sol.deficit is not None and float(sol.deficit.max(initial=0)) > 1e-9
        if sol.x is not None and sol.slack is not None and not short and float(
            sol.slack.max(initial=0)
        ) <= tol:
            out = fixed.copy()
            out[np.flatnonzero(mine)] = sol.x > 0.5
            return out
        if free.all():
            return None
        # free the core clients that hold an expert the freed ones could use
        touched = np.zeros(e, dtype=bool)
        touched[pe[mine]] = True
        holders = np.zeros(k, dtype=bool)
        holders[pc[rounded & touched[pe]]] = True
        grow = np.flatnonzero(holders & ~free)
        limit = max(2 * int(free.sum()), 64)
        if grow.size > limit:
            grow = np.random.default_rng(attempt).choice(grow, size=limit, replace=False)
        free[grow] = True
    return None
