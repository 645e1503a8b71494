"""The price method's working state: the frozen choice, the core, the core LP.

:class:`CoreSet` holds, for one view of the problem, every client's candidates and its
choice among them at the current prices (the frozen choice), which clients are in the
core, and the last core LP (its model, values and prices). :mod:`.method` drives it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..base import SolveOptions
from .dual import loads
from .lp import CoreLP, LPSolution
from .view import Candidates, View, candidates, candidates_of, choose, slack

__all__ = ["CoreSet", "Infeasible", "budget_breakers", "excess_share"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


#: Column-generation rounds of one core LP.
_LP_ROUNDS = 16
#: Elastic slack (load units, relative to the largest weight) that counts as in use.
_SLACK_TOL = 1e-7


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.perf_counter(), 1e-3)


class Infeasible(Exception):
    """The core's elastic slacks stay in use with every client open."""


def _state(view: View, cand: Candidates) -> tuple[NDArray[np.bool_], IntArray, FloatArray]:
    held, h = choose(cand.val, view.cap, view.kmin)
    return held, h, slack(cand, h, view.cap, view.kmin)


def excess_share(view: View, load: FloatArray) -> float:
    over = np.where(np.isfinite(view.hi), np.maximum(load - view.hi, 0.0), 0.0)
    under = np.maximum(view.lo - load, 0.0)
    total = float(np.dot(view.w, view.cap)) or 1.0
    return float(over.sum() + under.sum()) / total


def budget_breakers(view: View, cand: Candidates, held: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Clients whose choice at the prices breaks their memory budget."""
    if view.size is None or view.budget is None:
        return np.zeros(view.n, dtype=bool)
    used = np.where(held, view.size[cand.idx], 0.0).sum(axis=1)
    return np.asarray(used > view.budget * (1 + 1e-12), dtype=bool)


class CoreSet:
    """One solve of a view: the frozen choice, the core, and the rounds."""

    def __init__(self, view: View, cand: Candidates, options: SolveOptions, stats: dict[str, Any]):
        self.view = view
        self.cand = cand
        self.options = options
        self.stats = stats
        self.held, self.h, self.slack = _state(view, cand)
        self.core = np.zeros(view.n, dtype=bool)
        self.extra: dict[int, set[int]] = {}  # more pairs for core clients
        self.prices: FloatArray | None = None
        self.mem: FloatArray | None = None
        self.core_lp: CoreLP | None = None  # the core LP, grown in place
        self.lp_sol: LPSolution | None = None  # its last solution ...
        self.lp_frozen: FloatArray | None = None  # ... and the frozen load it had

    # ---------------------------------------------------------------- core set
    def open_smallest(self, k: int) -> None:
        """Open the ``k`` frozen clients with the smallest slack per unit of weight."""
        frozen = np.flatnonzero(~self.core & (self.view.cap > 0))
        if frozen.size == 0 or k <= 0:
            return
        key = self.slack[frozen] / self.view.w[frozen]
        if k < frozen.size:
            frozen = frozen[np.argpartition(key, k - 1)[:k]]
        self.core[frozen] = True

    def open_around(self, experts: IntArray, amount: FloatArray) -> int:
        """Open clients around ``experts`` whose elastic slack the core LP used: frozen
        clients that hold it or have it as a candidate, the smallest slack first, about
        three times ``amount`` of weight (at least 8); where they weigh too little,
        also clients of any kind that lack the expert, which get it as an extra pair.
        Returns how many clients opened or got a pair."""
        view, cand = self.view, self.cand
        opened = 0
        for e, need in zip(experts.tolist(), amount.tolist(), strict=True):
            frozen = ~self.core & (view.cap > 0)
            has_e = (cand.idx == e).any(axis=1)
            rows = np.flatnonzero(frozen & has_e)
            rows = rows[np.argsort(self.slack[rows] / view.w[rows], kind="stable")]
            cw = np.cumsum(view.w[rows])
            k = max(8, int(np.searchsorted(cw, 3.0 * need)) + 1)
            pick = rows[:k]
            self.core[pick] = True
            opened += pick.size
            got = float(cw[min(k, cw.size) - 1]) if cw.size else 0.0
            if got >= 3.0 * need:
                continue
            lack = (view.cap > 0) & ~has_e
            for r in self.extra_rows(e):
                lack[r] = False
            if view.free is not None:
                lack &= view.free[view.index(np.arange(view.n)), e]
            rows = np.flatnonzero(lack)
            rows = rows[np.argsort(self.slack[rows] / view.w[rows], kind="stable")]
            cw = np.cumsum(view.w[rows])
            k = max(8, int(np.searchsorted(cw, 3.0 * need - got)) + 1)
            pick = rows[:k]
            self.core[pick] = True
            for r in pick.tolist():
                self.extra.setdefault(r, set()).add(e)
            opened += pick.size
        return opened

    def extra_rows(self, e: int) -> list[int]:
        return [r for r, es in self.extra.items() if e in es]

    # ---------------------------------------------------------------- the LP / MIP
    def frozen_load(self) -> FloatArray:
        held = self.held & ~self.core[:, None]
        return loads(self.view, self.cand.idx, held)

    def pairs(self) -> tuple[IntArray, IntArray, IntArray]:
        clients = np.flatnonzero(self.core)
        idx = self.cand.idx[clients]
        ok = self.cand.val[clients] > -np.inf
        pc, slot = np.nonzero(ok)
        pe = idx[pc, slot]
        if self.extra:
            pos = np.full(self.view.n, -1)
            pos[clients] = np.arange(clients.size)
            more_c, more_e = [], []
            for r, es in self.extra.items():
                if pos[r] >= 0:
                    for e in es:
                        more_c.append(pos[r])
                        more_e.append(e)
            if more_c:
                pc = np.concatenate([pc, np.asarray(more_c, dtype=np.int64)])
                pe = np.concatenate([pe, np.asarray(more_e, dtype=np.int64)])
                key = np.unique(pc * self.view.e + pe)
                pc, pe = key // self.view.e, key % self.view.e
        if self.view.free is not None:  # extra pairs must be free too
            ok = self.view.free[self.view.index(clients[pc]), pe]
            pc, pe = pc[ok], pe[ok]
        return clients, pc.astype(np.int64), pe.astype(np.int64)

    def lp(self, deadline: float | None) -> bool:
        """Solve the core LP by column generation (one :class:`.lp.CoreLP`, grown in
        place): after each solve, core clients get the pairs of their best choice at
        the new prices they lack, and while an elastic slack is in use clients around
        its expert open. True when neither changes anything (no slack in use). Sets
        the prices, the memory prices and the LP solution; raises :class:`Infeasible`
        when nothing can relieve a slack."""
        view = self.view
        if self.core_lp is None:
            self.core_lp = CoreLP(view, self.options)
        lp = self.core_lp
        for _ in range(_LP_ROUNDS):
            clients, pc, pe = self.pairs()
            frozen = self.frozen_load()
            lp.add_clients(clients)
            lp.add_pairs(clients[pc], pe)
            lp.set_frozen(frozen)
            t = time.perf_counter()
            sol = lp.solve(_left(deadline))
            self.stats["lp_time"] = self.stats.get("lp_time", 0.0) + time.perf_counter() - t
            self.stats["lp_solves"] = self.stats.get("lp_solves", 0) + 1
            if sol.status != "optimal":
                raise RuntimeError(f"the core LP was not solved ({sol.status})")
            self.prices, self.mem = sol.prices, sol.mem
            self.lp_sol, self.lp_frozen = sol, frozen
            used = np.flatnonzero(sol.slack > _SLACK_TOL * float(np.max(view.w)))
            added = self.price_out(clients)
            if sol.short.size:
                added += self.give_all(sol.short)
            if used.size == 0 and added == 0:
                return True
            if used.size and self.open_around(used, sol.slack[used]) == 0 and added == 0:
                raise Infeasible("the LP relaxation is infeasible: the load bounds cannot be met")
        return False

    def give_all(self, rows: IntArray) -> int:
        """Every free pair, as extra pairs, for the clients ``rows``; how many new."""
        view = self.view
        added = 0
        for r in rows.tolist():
            free = (
                np.arange(view.e)
                if view.free is None
                else np.flatnonzero(view.free[r if view.rows is None else view.rows[r]])
            )
            have = self.extra.setdefault(int(r), set())
            before = len(have)
            have.update(int(v) for v in free.tolist())
            added += len(have) - before
        return added

    def price_out(self, clients: IntArray) -> int:
        """Give core clients the pairs of their best choice at the current prices that
        the LP lacked; returns how many."""
        view, prices = self.view, self.prices
        assert prices is not None
        e = view.e
        a = view.adjusted(clients, prices)
        if self.mem is not None and view.size is not None:
            a -= self.mem[clients][:, None] * view.size[None, :]
        kmax = int(view.cap[clients].max(initial=0))
        if kmax == 0:
            return 0
        top = candidates_of(a, min(kmax, e))
        held, _ = choose(top.val, view.cap[clients], view.kmin[clients])
        r, c = np.nonzero(held)
        key = clients[r].astype(np.int64) * e + top.idx[r, c]
        assert self.core_lp is not None
        known = self.core_lp.known
        new = [k for k in key.tolist() if k not in known]
        for k in new:
            self.extra.setdefault(k // e, set()).add(k % e)
        return len(new)

    def frozen_value(self) -> float:
        """Fitness of every client's current choice (the objective's scale)."""
        r, c = np.nonzero(self.held)
        return float(self.view.scores(r, self.cand.idx[r, c]).sum())

    def refresh(self, prices: FloatArray, m: int) -> tuple[FloatArray, Candidates]:
        """Fresh candidates at ``prices`` for everyone; per frozen client, the gain of
        its best choice over its frozen one (0 for the core), and each client's value
        at its best choice."""
        view = self.view
        new = candidates(view, prices, m)
        held2, _ = choose(new.val, view.cap, view.kmin)
        best = np.where(held2, new.val, 0.0).sum(axis=1)
        n = view.n
        r, c = np.nonzero(self.held)
        e_ = self.cand.idx[r, c]
        cur_val = view.scores(r, e_) - view.w[r] * prices[e_]
        cur = np.bincount(r, weights=cur_val, minlength=n)
        gain = np.where(self.core, 0.0, np.maximum(best - cur, 0.0))
        # frozen clients keep their candidates (their choice is among them); the core
        # and the clients about to open take the fresh ones
        return gain, new

    def adopt(self, new: Candidates, rows: IntArray) -> None:
        """Give ``rows`` the fresh candidates ``new`` (and their choice and slack)."""
        self.cand.idx[rows] = new.idx[rows]
        self.cand.val[rows] = new.val[rows]
        self.cand.out[rows] = new.out[rows]
        sub = Candidates(new.idx[rows], new.val[rows], new.out[rows])
        cap, kmin = self.view.cap[rows], self.view.kmin[rows]
        held, h = choose(sub.val, cap, kmin)
        self.held[rows], self.h[rows] = held, h
        self.slack[rows] = slack(sub, h, cap, kmin)
