r"""The core LP, kept in one HiGHS object and grown in place (warm-started re-solves).

The core LP (the model of :mod:`.core`, without integrality) changes between solves
only by growing: clients join the core (a count row, a memory row, their pairs),
pairs join by column generation, and the frozen load moves the load rows' bounds.
HiGHS keeps its basis across such changes, so a re-solve after a few new columns
takes a few simplex iterations where a fresh solve takes thousands.

Layout: rows are the :math:`E` load rows first, then one count row (and one memory
row, with a knapsack) per core client in the order they joined; columns are the
:math:`2E` elastic slacks first, :math:`E` anchors (fixed at 0, for
:meth:`CoreLP.crash`), then pairs and deficit columns as they come. Costs
(minimised) are minus the fitness, shifted by the midpoint of the client's free
fitness where its count is forced, times a power of two fixed at construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import _highs
from ..base import SolveOptions
from .view import View

__all__ = ["CRASH", "CoreLP", "LPSolution"]

#: Whether a fresh LP starts from the basis its prices give (:meth:`CoreLP.crash`).
CRASH = True
#: ... unless more than this share of the clients tie at the edge of their choice.
CRASH_TIES = 0.05

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass
class LPSolution:
    """One solve of the core LP, in view terms."""

    status: str
    clients: IntArray  # the core clients (view-local rows), sorted
    pair_client: IntArray  # position in ``clients`` of each pair
    pair_expert: IntArray
    x: FloatArray  # pair values
    prices: FloatArray  # per unit of load
    mem: FloatArray | None  # per view client (0 outside the core), with a knapsack
    slack: FloatArray  # s^- + s^+ per expert
    short: IntArray  # core clients (view-local) whose deficit column is in use


def _row_extremes(view: View, rows: IntArray) -> tuple[FloatArray, FloatArray]:
    """Largest and smallest free fitness per client (0 where it has none)."""
    a = view.adjusted(rows, np.zeros(view.e))
    has = np.isfinite(a).any(axis=1)
    hi = np.where(has, np.where(np.isfinite(a), a, -np.inf).max(axis=1), 0.0)
    lo = np.where(has, np.where(np.isfinite(a), a, np.inf).min(axis=1), 0.0)
    return hi, lo


def _unique(a: IntArray) -> IntArray:
    """Sorted distinct values (by sorting: numpy's hashed ``unique`` is slower here)."""
    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if a.size else a


class CoreLP:
    """The growing core LP of one view."""

    def __init__(self, view: View, options: SolveOptions) -> None:
        import highspy

        self.view = view
        e = view.e
        self.inf = highspy.kHighsInf
        peak = max(abs(view.fit_max), abs(view.fit_min))
        span = view.fit_max - view.fit_min
        self.scale_exp = 0 if peak == 0.0 else -math.frexp(peak)[1] + 1
        w_min = float(np.min(view.w)) if view.n else 1.0
        self.penalty = 4.0 * math.ldexp(span, self.scale_exp) / w_min + 4.0
        h = _highs.new_highs(options)
        h.setOptionValue("presolve", "off")
        self.h = h
        self.threads = _highs.threads_of(options)
        nz = np.zeros(0, dtype=np.int32)
        h.addRows(e, np.full(e, -self.inf), np.full(e, self.inf), 0, nz, nz, np.zeros(0))
        ex = np.arange(e, dtype=np.int32)
        starts = np.arange(2 * e, dtype=np.int32)
        h.addCols(
            2 * e,
            np.full(2 * e, self.penalty),
            np.zeros(2 * e),
            np.full(2 * e, self.inf),
            2 * e,
            starts,
            np.concatenate([ex, ex]),
            np.concatenate([np.ones(e), -np.ones(e)]),
        )
        # anchors: one fixed (at 0) column per load row whose cost :meth:`crash` sets
        # to the row's starting price, so that a basis can give the row that dual
        h.addCols(
            e,
            np.zeros(e),
            np.zeros(e),
            np.zeros(e),
            e,
            np.arange(e, dtype=np.int32),
            ex,
            np.ones(e),
        )
        self.n_rows = e
        self.n_cols = 3 * e
        self.count_row = np.full(view.n, -1, dtype=np.int64)
        self.mem_row = np.full(view.n, -1, dtype=np.int64)
        self.alpha = np.zeros(view.n)
        self.pair_keys: list[IntArray] = []  # key = client * E + expert, per pair column
        self.pair_scores: list[FloatArray] = []  # their fitness
        self.known = np.zeros((view.n, e), dtype=bool)  # pairs with a column
        self.deficit_of: list[int] = []  # client of each deficit column, in order
        self.deficit_cols: list[int] = []

    # ------------------------------------------------------------------ growth
    def add_clients(self, rows: IntArray) -> None:
        """Count (and memory) rows for the clients ``rows`` not yet in the LP."""
        view = self.view
        rows = rows[self.count_row[rows] < 0]
        if rows.size == 0:
            return
        forced = view.kmin[rows] >= view.cap[rows]
        if forced.any():
            hi, lo = _row_extremes(view, rows[forced])
            self.alpha[rows[forced]] = 0.5 * hi + 0.5 * lo
        k = rows.size
        nz = np.zeros(0, dtype=np.int32)
        self.h.addRows(
            k,
            view.kmin[rows].astype(np.float64),
            view.cap[rows].astype(np.float64),
            0,
            nz,
            nz,
            np.zeros(0),
        )
        self.count_row[rows] = self.n_rows + np.arange(k)
        self.n_rows += k
        if view.size is not None and view.budget is not None:
            has = rows[np.isfinite(view.budget[rows])]
            if has.size:
                self.h.addRows(
                    has.size,
                    np.full(has.size, -self.inf),
                    view.budget[has],
                    0,
                    nz,
                    nz,
                    np.zeros(0),
                )
                self.mem_row[has] = self.n_rows + np.arange(has.size)
                self.n_rows += has.size
            need = rows[view.kmin[rows] > 0]
            if need.size:  # a deficit column keeps a forced count feasible
                self.h.addCols(
                    need.size,
                    np.full(need.size, self.penalty),
                    np.zeros(need.size),
                    np.full(need.size, self.inf),
                    need.size,
                    np.arange(need.size, dtype=np.int32),
                    self.count_row[need].astype(np.int32),
                    np.ones(need.size),
                )
                self.deficit_of.extend(need.tolist())
                self.deficit_cols.extend(range(self.n_cols, self.n_cols + need.size))
                self.n_cols += need.size

    def add_pairs(self, rows: IntArray, experts: IntArray) -> int:
        """Columns for the pairs (view-local rows) not yet in the LP; how many new."""
        view = self.view
        e = view.e
        keys = rows.astype(np.int64) * e + experts
        keys = _unique(keys)
        keys = keys[~self.known[keys // e, keys % e]]
        if keys.size == 0:
            return 0
        r = keys // e
        x = keys % e
        self.add_clients(_unique(r))
        score = view.scores(r, x)
        cost = -np.ldexp(score - self.alpha[r], self.scale_exp)
        q = keys.size
        mem = self.mem_row[r]
        has_mem = mem >= 0
        per = 2 + has_mem.astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(per)[:-1]]).astype(np.int32)
        nnz = int(per.sum())
        idx = np.empty(nnz, dtype=np.int32)
        val = np.empty(nnz)
        idx[starts] = self.count_row[r]
        val[starts] = 1.0
        idx[starts + 1] = x
        val[starts + 1] = view.w[r]
        if has_mem.any():
            assert view.size is not None
            at = starts[has_mem] + 2
            idx[at] = mem[has_mem]
            val[at] = view.size[x[has_mem]]
        self.h.addCols(q, cost, np.zeros(q), np.ones(q), nnz, starts, idx, val)
        self.pair_keys.append(keys)
        self.pair_scores.append(score)
        self.known[r, x] = True
        self.n_cols += q
        return q

    def set_frozen(self, frozen_load: FloatArray) -> None:
        """Load rows' bounds: what the frozen clients leave."""
        view = self.view
        lo = view.lo - frozen_load
        hi = np.where(np.isfinite(view.hi), view.hi - frozen_load, self.inf)
        e = view.e
        self.h.changeRowsBounds(e, np.arange(e, dtype=np.int32), lo, hi)

    def set_box(self, prices: FloatArray | None, radius: FloatArray | None) -> None:
        """Elastic columns at the box's edges (load bought at ``prices + radius``,
        sold at ``prices - radius``), or at the penalty (``None``)."""
        e = self.view.e
        if prices is None or radius is None:
            cost = np.full(2 * e, self.penalty)
        else:
            lo = -np.ldexp(prices - radius, self.scale_exp)
            hi = np.ldexp(prices + radius, self.scale_exp)
            cost = np.concatenate([lo, hi])
        self.h.changeColsCost(2 * e, np.arange(2 * e, dtype=np.int32), cost)

    # ------------------------------------------------------------------ basis
    def crash(self, prices: FloatArray) -> bool:
        """A dual feasible starting basis at ``prices`` (before the first solve).

        Each load row with a price gets it as its dual: its anchor column (fixed at
        0, its cost set to the price) is basic and the row sits at the bound that
        the price's sign prices; a row without a price is basic. Every client then
        holds its best choice at the prices: a client whose count row binds has its
        weakest held pair basic (its count row's dual is that pair's adjusted
        score), the others their count row; held pairs sit at 1, the rest at 0, the
        elastic columns at 0 (their costs lie beyond the prices). Every reduced
        cost has the right sign, so the dual simplex starts there and only repairs
        the load rows that the choice leaves out of bounds (from the slack basis a
        fresh core LP took 5,000 iterations, from this one 1,200 on 10,000 x 256).
        Not with memory rows: their duals are unknown, and with them basic (dual 0)
        the 100,000 x 64 knapsack cell's LPs took 11.0 s instead of 9.3 s. Returns
        whether a basis was set.
        """
        import highspy

        view = self.view
        e = view.e
        if not CRASH or view.size is not None or not self.pair_keys:
            return False
        p = np.where(np.isfinite(prices), prices, 0.0)
        up = (p > 0) & np.isfinite(view.hi)
        down = (p < 0) & np.isfinite(view.lo)
        p = np.where(up | down, p, 0.0)
        # (the anchor's reduced cost -cost - row dual is 0 at row dual -price)
        self.h.changeColsCost(
            e, np.arange(2 * e, 3 * e, dtype=np.int32), -np.ldexp(p, self.scale_exp)
        )
        keys = np.concatenate(self.pair_keys)
        r, x = keys // e, keys % e
        a = np.concatenate(self.pair_scores) - view.w[r] * p[x]
        # by client, then adjusted score, largest first: one unstable sort of a
        # composite key (a client's span of 2 (max - min) + 2 keeps clients apart;
        # scores closer than about 1e-11 of the span may swap, which only costs HiGHS
        # iterations): 0.9 ms instead of 7.5 ms for ``lexsort`` on 36,000 pairs
        top = float(a.max(initial=0.0))
        span = 2.0 * (top - float(a.min(initial=0.0))) + 2.0
        order = np.argsort(r * span + (top - a))
        ro = r[order]
        rank = np.arange(order.size) - np.searchsorted(ro, ro, side="left")
        cap, kmin = view.cap[ro], view.kmin[ro]
        held_o = (rank < kmin) | ((rank < cap) & (a[order] > 0))
        h = np.bincount(ro[held_o], minlength=view.n)
        weakest = np.full(view.n, np.inf)
        np.minimum.at(weakest, ro[held_o], a[order][held_o])
        tight_up = (h > 0) & (h >= view.cap)
        tight_lo = (h > 0) & (h <= view.kmin) & (h < view.cap) & (weakest < 0)
        basic_o = held_o & (tight_up | tight_lo)[ro] & (rank == h[ro] - 1)
        # ties between a client's weakest held pair and its next: a basis from such
        # a choice is degenerate (quantized scores: a 3,500-client LP took 11 s from
        # it, 3 s from HiGHS's own start), so many of them leave the start to HiGHS
        ao = a[order]
        nxt = np.flatnonzero(held_o[:-1] & ~held_o[1:] & (ro[:-1] == ro[1:]))
        if nxt.size and np.count_nonzero(ao[nxt] == ao[nxt + 1]) > CRASH_TIES * view.n:
            return False
        S = highspy.HighsBasisStatus
        col = np.zeros(self.n_cols, dtype=np.int8)  # 0 lower, 1 basic, 2 upper
        col[2 * e : 3 * e][up | down] = 1
        pair_col = np.flatnonzero(self._is_pair())[order]
        col[pair_col[held_o]] = 2
        col[pair_col[basic_o]] = 1
        row = np.full(self.n_rows, 1, dtype=np.int8)
        row[:e][up] = 2
        row[:e][down] = 0
        clients = np.flatnonzero(self.count_row >= 0)
        row[self.count_row[clients[tight_up[clients]]]] = 2
        row[self.count_row[clients[tight_lo[clients]]]] = 0
        status = np.array([S.kLower, S.kBasic, S.kUpper], dtype=object)
        basis = highspy.HighsBasis()
        basis.col_status = status[col].tolist()
        basis.row_status = status[row].tolist()
        basis.valid = True
        return bool(self.h.setBasis(basis) == highspy.HighsStatus.kOk)

    def _is_pair(self) -> NDArray[np.bool_]:
        """Which columns are pairs (in the order of ``pair_keys``)."""
        is_pair = np.ones(self.n_cols, dtype=bool)
        is_pair[: 3 * self.view.e] = False
        is_pair[np.asarray(self.deficit_cols, dtype=np.int64)] = False
        return is_pair

    # ------------------------------------------------------------------ solve
    def solve(self, time_limit: float | None) -> LPSolution:
        view = self.view
        e = view.e
        h = self.h
        if time_limit is not None:
            h.setOptionValue("time_limit", max(float(time_limit), 1e-3))
        _highs.run(h, self.threads)
        status = _highs.outcome(h)
        keys = np.concatenate(self.pair_keys) if self.pair_keys else np.zeros(0, np.int64)
        r, pe = keys // e, keys % e
        clients = np.flatnonzero(self.count_row >= 0)
        pos = np.full(view.n, -1)
        pos[clients] = np.arange(clients.size)
        sol: Any = h.getSolution()
        empty = np.zeros(0)
        if status != "optimal" or not sol.value_valid or not sol.dual_valid:
            return LPSolution(
                status, clients, pos[r], pe, empty, empty, None, empty, empty.astype(np.int64)
            )
        v = np.asarray(sol.col_value, dtype=np.float64)
        y = -np.asarray(sol.row_dual, dtype=np.float64)
        prices = np.ldexp(y[:e], -self.scale_exp)
        mem = None
        if view.size is not None:
            mem = np.zeros(view.n)
            has = self.mem_row >= 0
            mem[has] = np.maximum(np.ldexp(y[self.mem_row[has]], -self.scale_exp), 0.0)
        slack = v[:e] + v[e : 2 * e]
        x = np.empty(keys.size)
        x[:] = v[self._is_pair()]
        short = np.zeros(0, dtype=np.int64)
        if self.deficit_cols:
            dv = v[np.asarray(self.deficit_cols)]
            short = np.asarray(self.deficit_of, dtype=np.int64)[dv > 1e-9]
        return LPSolution(status, clients, pos[r], pe, x, prices, mem, slack, short)
