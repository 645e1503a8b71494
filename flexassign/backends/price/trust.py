r"""The exact price step: the core LP inside a trust region of prices.

At prices :math:`\pi` every client has a choice (its best free experts by adjusted
score, :mod:`.view`) and a *slack*: how far any one adjusted score may move before
that choice changes. Give every expert a radius :math:`r_e` and consider only prices
in the box :math:`|\pi'_e - \pi_e| \le r_e`. A client whose slack is at least
:math:`2 w_c \max_{e \in \text{cand}(c)} r_e` (and whose best non-candidate stays
below its weakest held expert) keeps its choice everywhere in the box: it is *frozen*,
its load a constant. The others form the *core*. The Lagrangian dual
:math:`\min_\pi g(\pi)` restricted to the box is then exactly the LP

.. math::

    \max \sum_{\text{core}} S_{ce} x_{ce} + \sum_e \big((\pi_e - r_e) d_e
    - (\pi_e + r_e) b_e\big)
    \quad\text{s.t.}\quad L_e - F_e \le \sum_{\text{core}} w_c x_{ce} + d_e - b_e
    \le U_e - F_e

(plus each core client's count and memory rows): the elastic columns :math:`d, b
\ge 0` price load at the box's edges, so the LP's load duals are the minimiser of
:math:`g` over the box. When no elastic column is in use the minimiser lies inside the
box: by convexity it minimises :math:`g` everywhere, and the frozen choices with the
LP's values are an optimal solution of the LP relaxation. Otherwise the box moves to
the new prices, the radii of the experts at an edge double, and the step repeats.

The smallest view of a cold start is solved whole instead (:mod:`.whole`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..base import SolveOptions
from .lp import CoreLP
from .view import BLOCK, Candidates, View, candidates_of, choose, price_out, reprice, slack

__all__ = ["Infeasible", "LevelSolution", "Struggle", "refresh", "solve_level"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Box moves before a level gives up (its last LP is kept: the bound stays true).
MAX_MOVES = 12
#: Pricing rounds (column generation for the core) once the box settles.
_PRICING = 3
#: Elastic load (relative to the largest weight) that counts as in use.
_SLACK_TOL = 1e-9


class Infeasible(Exception):
    """The load bounds cannot be met even with every pair a candidate."""


class Struggle(RuntimeError):
    """The core outgrew the limit it was given (the prices were too far off)."""


@dataclass
class LevelSolution:
    """The LP relaxation of one view at its final prices.

    ``prices`` per unit of load; ``cand`` the candidates at them; ``frozen_rows`` /
    ``frozen_experts`` the frozen clients' pairs and ``frozen_load`` their load;
    ``clients`` the core (view-local, sorted) with LP pairs ``pair_client`` (position
    in ``clients``), ``pair_expert`` and values ``x``; ``mem`` memory prices per view
    client (knapsack only); ``converged``: no elastic column in use.
    """

    prices: FloatArray
    cand: Candidates
    frozen_rows: IntArray
    frozen_experts: IntArray
    frozen_load: FloatArray
    clients: IntArray
    pair_client: IntArray
    pair_expert: IntArray
    x: FloatArray
    mem: FloatArray | None
    converged: bool


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.perf_counter(), 1e-3)


def _breakers(view: View, cand: Candidates, held: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Clients whose choice breaks their memory budget."""
    if view.size is None or view.budget is None:
        return np.zeros(view.n, dtype=bool)
    used = np.where(held, view.size[cand.idx], 0.0).sum(axis=1)
    return np.asarray(used > view.budget * (1 + 1e-12), dtype=bool)


def _core(
    view: View, cand: Candidates, held: NDArray[np.bool_], h: IntArray, r: FloatArray
) -> NDArray[np.bool_]:
    """Clients whose choice may change inside the box of radii ``r``: the weakest
    held expert at its lowest (score minus ``w r``) against the strongest other at
    its highest (candidates, the outside bound with the largest radius, and zero
    where an optional slot is involved)."""
    w = view.w[:, None]
    ok = cand.val > -np.inf
    rad = np.where(ok, r[cand.idx], 0.0)
    low = np.where(held, cand.val - w * rad, np.inf).min(axis=1)
    high = np.where(ok & ~held, cand.val + w * rad, -np.inf).max(axis=1)
    high = np.maximum(high, cand.out + view.w * float(r.max(initial=0.0)))
    optional_held = (h > view.kmin) & (h > 0)
    open_slot = h < view.cap
    bad = (low < high) & (h > 0)
    bad |= optional_held & (low < 0)
    bad |= open_slot & (high > 0)
    return np.asarray(bad, dtype=bool)


def refresh(view: View, cand: Candidates, prices: FloatArray, rows: IntArray) -> None:
    """Exact candidates at ``prices`` for the clients ``rows`` (in place)."""
    m = cand.idx.shape[1]
    step = max(1, BLOCK // view.e)
    for r0 in range(0, rows.size, step):
        sel = rows[r0 : r0 + step]
        got = candidates_of(view.adjusted(sel, prices), m)
        cand.idx[sel], cand.val[sel], cand.out[sel] = got.idx, got.val, got.out


def solve_level(
    view: View,
    prices: FloatArray,
    cand: Candidates,
    options: SolveOptions,
    stats: dict[str, Any],
    *,
    target: int,
    max_moves: int = 0,
    deadline: float | None = None,
    exact: bool = True,
    max_core: int | None = None,
) -> LevelSolution:
    """The LP relaxation of ``view`` from ``prices`` (``cand``: the candidates at
    them) by trust-region core LPs of about ``target`` clients (at most ``max_moves``
    moves, then one LP without a box; ``exact=False``, a sample level whose prices
    are all that is used: the last box's LP after ``max_moves``); raises
    :class:`Infeasible`, :class:`Struggle` when the core grows past ``max_core``
    clients, or ``RuntimeError`` when an LP is not solved in time."""
    e = view.e
    w = view.w
    r: FloatArray | None = None
    tol = _SLACK_TOL * float(np.max(w, initial=1.0))
    lp = CoreLP(view, options)
    in_lp = np.zeros(view.n, dtype=bool)
    moves = 0
    pricing = 0
    fresh = True
    m = cand.idx.shape[1]
    while True:
        held, h = choose(cand.val, view.cap, view.kmin)
        sl = slack(cand, h, view.cap, view.kmin)
        if r is None:
            key = sl / w
            kth = float(np.partition(key, min(target, view.n - 1))[min(target, view.n - 1)])
            r = np.full(e, max(kth, 1e-300) / 2.0)
        core = _core(view, cand, held, h, r) | _breakers(view, cand, held)
        rows = np.flatnonzero(core)
        refresh(view, cand, prices, rows)
        held, h = choose(cand.val, view.cap, view.kmin)
        in_lp |= core
        if max_core is not None and int(in_lp.sum()) > max_core:
            raise Struggle(f"the core grew to {int(in_lp.sum())} clients")
        fr, fc = np.nonzero(held & ~in_lp[:, None])
        f_exp = cand.idx[fr, fc]
        frozen = np.bincount(f_exp, weights=w[fr], minlength=e).astype(np.float64)
        pc, slot = np.nonzero(cand.val[rows] > -np.inf)
        lp.add_clients(rows)
        lp.add_pairs(rows[pc], cand.idx[rows][pc, slot])
        lp.set_frozen(frozen)
        last = exact and moves + 1 >= max(max_moves, 1)
        lp.set_box(None if last else prices, None if last else r)
        if fresh:  # the box moved: a dual feasible basis at its centre (fewer
            # iterations than HiGHS's last basis: 1,000 instead of 1,700 a move)
            fresh = False
            lp.crash(prices)
        t = time.perf_counter()
        sol = lp.solve(_left(deadline))
        stats["lp_time"] = stats.get("lp_time", 0.0) + time.perf_counter() - t
        stats["lp_solves"] = stats.get("lp_solves", 0) + 1
        stats.setdefault("core_sizes", []).append(int(in_lp.sum()))
        if sol.status != "optimal":
            raise RuntimeError(f"the core LP was not solved ({sol.status})")
        used = np.flatnonzero(sol.slack > tol)
        if last and used.size:  # the penalty LP of the last move needs slack: give up
            raise RuntimeError("the trust region did not settle and the load bounds bind")
        new_p = sol.prices
        if used.size == 0 and not last and pricing < _PRICING:
            # converged: core clients' best choices at the new prices the LP lacks?
            pricing += 1
            c, x = price_out(view, new_p, m, lp.known, rows=np.flatnonzero(in_lp), mem=sol.mem)
            if c.size and lp.add_pairs(c, x):
                continue
        moves += 1
        if used.size == 0 or last or moves >= max(max_moves, 1):
            stats["moves"] = stats.get("moves", 0) + moves
            return LevelSolution(
                prices=new_p,
                cand=reprice(cand, w, new_p - prices),
                frozen_rows=fr.astype(np.int64),
                frozen_experts=f_exp.astype(np.int64),
                frozen_load=frozen,
                clients=sol.clients,
                pair_client=sol.pair_client,
                pair_expert=sol.pair_expert,
                x=sol.x,
                mem=sol.mem,
                converged=used.size == 0 and not last,
            )
        fresh = True
        hit = np.zeros(e, dtype=bool)
        hit[used] = True
        r = np.where(hit, 2.0 * r, r)
        cand = reprice(cand, w, new_p - prices)
        prices = new_p
