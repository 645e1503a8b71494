r"""Price steps on the candidates: weighted tâtonnement towards the Lagrangian dual.

The Lagrangian dual of the load rows, :math:`\min_\pi g(\pi)` with

.. math::

    g(\pi) = \sum_c \max_{x_c} \sum_e (S_{ce} - w_c \pi_e) x_{ce}
           + \sum_e (\pi_e^+ U_e - \pi_e^- L_e),

has the subgradient :math:`U_e - \ell_e(\pi)` (or :math:`L_e - \ell_e`), where
:math:`\ell_e` is the load of every client's best choice. :func:`price_steps` moves
every expert's price at once to the value that would bring its own load back inside
its bounds if nothing else moved: an overloaded expert raises its price until
holders of total weight equal to the excess would leave (holder ``c`` leaves at a
rise of its *exit margin* over :math:`w_c`), an underloaded one lowers it until
enough candidates would come (at their *entry margin* over :math:`w_c`), and where
complementary slackness fails (a price away from zero with the load off that
bound) it heads for zero. A weighted quantile per expert, on the candidates only
(:math:`O(N m)` per step). Steps are damped: the clients an expert sheds land on
other experts, which move too. The prices only need to be close: the exact step
(:mod:`.core`) solves the clients they leave uncertain.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .view import Candidates, View, choose

__all__ = ["loads", "price_steps"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Unheld candidates that may enter a client's choice in one step.
_ENTRY_SLOTS = 3


def loads(view: View, idx: IntArray, held: NDArray[np.bool_]) -> FloatArray:
    """Per-expert load of the held candidates."""
    r, c = np.nonzero(held)
    return np.bincount(idx[r, c], weights=view.w[r], minlength=view.e).astype(np.float64)


def _weighted_quantile(
    experts: IntArray, t: FloatArray, wt: FloatArray, need: FloatArray, limit: FloatArray
) -> FloatArray:
    """Per expert: the smallest ``t`` at which the entries of that expert with ``t``
    at most it weigh at least ``need`` (the largest when they weigh less), a little
    past it, at most ``limit``; zero where nothing is needed or nobody can move."""
    e = need.size
    out = np.zeros(e)
    if experts.size == 0:
        return out
    # one sort on a composite key (expert, then t scaled into [0, 1)): an
    # approximate order within an expert is fine for a step (2x faster than lexsort)
    lo, hi = float(t.min()), float(t.max())
    span = hi - lo if hi > lo else 1.0
    o = np.argsort(experts * 2.0 + (t - lo) / span)
    ex, ts, ws = experts[o], t[o], wt[o]
    cw = np.cumsum(ws)
    start = np.searchsorted(ex, np.arange(e), side="left")
    end = np.searchsorted(ex, np.arange(e), side="right")
    has = (end > start) & (need > 0)
    if not has.any():
        return out
    base = np.where(start > 0, cw[np.maximum(start - 1, 0)], 0.0)
    target = base + need
    pos = np.searchsorted(cw, target[has] * (1 - 1e-12), side="left")
    pos = np.minimum(np.maximum(pos, start[has]), end[has] - 1)
    pick = ts[pos]
    pick = pick + 1e-9 * np.maximum(np.abs(pick), 1e-12) + 1e-15
    out[has] = np.minimum(np.maximum(pick, 0.0), limit[has])
    return out


def price_steps(
    view: View,
    cand: Candidates,
    prices: FloatArray,
    *,
    steps: int,
    damping: float = 0.8,
    tol: float = 0.0,
) -> FloatArray:
    """Prices after up to ``steps`` damped steps on the candidates ``cand``
    (computed at ``prices``); stops early when every load fits its bounds within
    ``tol`` (load units) and complementary slackness holds. Returns the prices
    visited (the start included) with the least dual value on the candidates: the
    steps can overshoot (on 10,000 x 256 with log-normal weights four of them took
    the dual from 17 above the LP to 257 above it)."""
    n, m = cand.val.shape
    e = view.e
    if n == 0:
        return prices.copy()
    w = view.w
    rows = np.arange(n)
    slot = np.arange(m)[None, :]
    delta = np.zeros(e)
    finite_hi = np.isfinite(view.hi)
    best_g, best_delta = np.inf, delta.copy()
    for it in range(steps + 1):
        if it:
            u = cand.val - w[:, None] * delta[cand.idx]
            order = np.argsort(-u, axis=1, kind="stable")
            us = np.take_along_axis(u, order, axis=1)
            ids = np.take_along_axis(cand.idx, order, axis=1)
            out = cand.out - w * delta.min()  # the largest possible rise of an outsider
        else:
            us, ids, out = cand.val, cand.idx, cand.out
        held, h = choose(us, view.cap, view.kmin)
        load = loads(view, ids, held)
        p = prices + delta
        g = _dual_value(view, us, held, p)
        if g < best_g:
            best_g, best_delta = g, delta.copy()
        if it == steps:
            break
        over = np.where(finite_hi, np.maximum(load - view.hi, 0.0), 0.0)
        under = np.maximum(view.lo - load, 0.0)
        down = np.where(
            over > tol, over, np.where((p < 0) & (load > view.lo + tol), load - view.lo, 0.0)
        )
        up = np.where(
            under > tol, under, np.where((p > 0) & (load < view.hi - tol), view.hi - load, 0.0)
        )
        if not (down.any() or up.any()):
            break
        step = np.zeros(e)
        if down.any():  # raise the price: holders leave at their exit margin / w
            nxt = np.where(h < m, us[rows, np.minimum(h, m - 1)], out)
            alt = np.where(h > view.kmin, np.maximum(nxt, 0.0), nxt)
            r, c = np.nonzero(held & (down > 0)[ids])
            t = (us[r, c] - alt[r]) / w[r]
            t = np.where(np.isfinite(t), t, 0.0)
            step += _weighted_quantile(ids[r, c], t, w[r], down, np.where(over > 0, np.inf, -p))
        if up.any():  # lower the price: candidates come at their entry margin / w
            low = np.where(h > 0, us[rows, np.maximum(h - 1, 0)], np.inf)
            bar = np.where(h < view.cap, np.minimum(low, 0.0), low)
            near = (us > -np.inf) & ~held & (slot < (h + _ENTRY_SLOTS)[:, None])
            r, c = np.nonzero(near & (up > 0)[ids])
            t = (bar[r] - us[r, c]) / w[r]
            t = np.where(np.isfinite(t), t, 0.0)
            step -= _weighted_quantile(ids[r, c], t, w[r], up, np.where(under > 0, np.inf, p))
        delta += damping * step
    return prices + best_delta


def _dual_value(view: View, us: FloatArray, held: NDArray[np.bool_], p: FloatArray) -> float:
    """The Lagrangian dual value on the candidates (their best choice ``held`` at the
    prices ``p``, values ``us``): the steps keep the best prices they visit."""
    if np.any((p > 0) & ~np.isfinite(view.hi)):
        return np.inf
    hi = np.where(np.isfinite(view.hi), view.hi, 0.0)
    bounds = np.where(p > 0, p * hi, p * view.lo)
    return float(np.where(held, us, 0.0).sum() + bounds.sum())
