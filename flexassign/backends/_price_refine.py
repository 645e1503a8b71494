r"""Cheap price refinement for ``flow-warm``: a few damped tâtonnement steps.

``flow-warm`` needs expert prices close to the optimal duals: the closer they are, the
fewer clients it must leave open for its exact solve. Prices handed over from the last
round are off by the fitness drift since then. This module moves them towards the
optimum using only each client's few best *candidate* experts (already computed by
``flow-warm``'s pass over the fitness matrix), so a step costs :math:`O(N k)`, not
:math:`O(N E)`.

A step recomputes every client's price-induced choice among its candidates, then asks
of each expert what price change would put its load back inside its bounds (or, where
complementary slackness fails, bring its price to zero): an overloaded expert lowers its
price by the :math:`r`-th smallest *exit margin* of its holders (how much lower its
price must go before a holder prefers something else), an underloaded one raises it by
the :math:`r`-th smallest *entry margin* of the clients that could take it. All experts
move at once, damped (the clients an expert sheds land on other experts, which move
too).

This is a heuristic: nothing here is trusted. The refined prices only choose which
clients ``flow-warm`` solves exactly; its certificate decides optimality.

Its sibling for *cold* starts is ``flow._estimate_prices``: it moves prices from zero
on every client's full row (an expert's first holders may be anywhere when nothing is
known yet), in fitness units, and takes two rounds. Starting from nearly right prices,
full rows are wasted work and fixed candidates suffice; starting from nothing, fixed
candidates miss the experts that become attractive (measured: this module as a cold
estimate was slower for ``flow`` at 1,000 x 64, and ``_estimate_prices`` as the cold
estimate of ``flow-warm`` at 10,000 x 256 left its excess share near zero but its
prices so far off that the solve took twice as long as from the sample estimate).

Examples
--------
>>> import numpy as np
>>> idx = np.array([[0, 1], [0, 1], [0, 1]])  # three clients, both experts candidates
>>> val = np.array([[10.0, 4.0], [9.0, 5.0], [8.0, 6.0]])  # u, sorted per client
>>> one = np.ones(3, dtype=np.int64)
>>> delta = refine_prices(idx, val, one, one, np.array([1, 1]), np.array([2, 2]),
...                       np.zeros(2, dtype=np.int64), steps=3, damping=0.8)
>>> [int(v) for v in delta]  # expert 0 (held by all three, room for two) gets cheaper
[-2, 2]

At these prices the third client (``8 - 2 < 6 + 2``) moves to expert 1: loads 2 and 1.
Undamped (``damping=1.0``) both experts overshoot and two clients would move.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["refine_prices"]

_NEG = -(2.0**61)
#: Margins are clipped to 2**40 - 1 cost units for sorting (experts take the bits above).
_MARGIN_BITS = 40
_MARGIN_CAP = (1 << _MARGIN_BITS) - 1
#: Unheld candidates that may enter a client's choice in one step: the next three.
_ENTRY_SLOTS = 3


def refine_prices(
    idx: NDArray[np.integer],
    val: NDArray[np.float64],
    cap: NDArray[np.int64],
    kmin: NDArray[np.int64],
    lo: NDArray[np.int64],
    hi: NDArray[np.int64],
    prices: NDArray[np.int64],
    *,
    steps: int,
    damping: float,
) -> NDArray[np.int64]:
    r"""Integer price changes that bring the candidate-restricted loads into bounds.

    Parameters
    ----------
    idx, val : ndarray, shape (n, m)
        Each client's candidate experts and their :math:`u = S + p` at ``prices``
        (integer-valued floats; ``val`` below ``-2**60`` marks a pair the client may
        not take).
    cap, kmin : ndarray of int64, shape (n,)
        Each client's maximum and minimum number of experts (``cap <= m - 1`` unless
        ``m`` is every expert).
    lo, hi : ndarray of int64, shape (E,)
        Load bounds per expert.
    prices : ndarray of int64, shape (E,)
        The prices ``val`` was computed with (only their signs are used, for
        complementary slackness).
    steps : int
        Number of steps (fewer when the loads fit and slackness holds).
    damping : float
        Share of each expert's wanted change taken per step, in (0, 1].

    Returns
    -------
    ndarray of int64, shape (E,)
        The change to add to ``prices``.
    """
    n, m = val.shape
    e = lo.size
    delta = np.zeros(e, dtype=np.float64)
    if n == 0 or m < 2:
        return delta.astype(np.int64)
    rows = np.arange(n)
    slot = np.arange(m)[None, :]
    must = slot < kmin[:, None]  # fixed per slot: held whatever the prices
    may = slot < cap[:, None]
    allowed = val > _NEG / 2
    base = prices.astype(np.float64)
    us, ids = val, idx  # ``val`` is sorted: the first step needs no sort
    for it in range(steps):
        if it:
            u = np.where(allowed, val + delta[idx], _NEG)
            order = np.argsort(-u, axis=1, kind="stable")
            us = np.take_along_axis(u, order, axis=1)
            ids = np.take_along_axis(idx, order, axis=1)
        ok = us > _NEG / 2
        held = ok & (must | (may & (us > 0)))
        h = held.sum(axis=1)
        load = np.bincount(ids[held], minlength=e)
        p = base + delta
        over = np.maximum(load - hi, 0)
        under = np.maximum(lo - load, 0)
        # complementary slackness: a bonus only at the lower bound, a penalty only at
        # the upper one; otherwise the price heads for zero (but not past it)
        down = np.where(over > 0, over, np.where((p > 0) & (load > lo), load - lo, 0))
        up = np.where(under > 0, under, np.where((p < 0) & (load < hi), hi - load, 0))
        if not (down.any() or up.any()):
            break
        step = np.zeros(e)
        if down.any():
            # exit: how far a held expert's u may fall before the client leaves it
            # (for the next candidate, or for nothing when above its minimum)
            nxt = np.where(h < m, us[rows, np.minimum(h, m - 1)], _NEG)
            alt = np.where(h > kmin, np.maximum(nxt, 0.0), nxt)
            r, c = np.nonzero(held & (down > 0)[ids])
            margins = us[r, c] - alt[r]
            step -= _quantile_step(ids[r, c], margins, down, np.where(over > 0, np.inf, p))
        if up.any():
            # entry: how far an unheld candidate's u must rise before the client takes
            # it (past its weakest held expert, or past zero when it has room)
            low = us[rows, np.maximum(h - 1, 0)]
            bar = np.where(h < cap, np.minimum(low, 0.0), low)
            # (the next few candidates only: later ones need larger rises)
            near = ok & ~held & (slot < (h + _ENTRY_SLOTS)[:, None])
            r, c = np.nonzero(near & (up > 0)[ids])
            margins = bar[r] - us[r, c]
            step += _quantile_step(ids[r, c], margins, up, np.where(under > 0, np.inf, -p))
        delta += np.rint(damping * step)
    return delta.astype(np.int64)


def _quantile_step(
    experts: NDArray[np.integer],
    margins: NDArray[np.float64],
    need: NDArray[np.int64],
    limit: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Per expert: one cost unit past the ``need``-th smallest of its margins (all of
    them when it has fewer), at most ``limit``; zero where nothing is needed."""
    e = need.size
    out = np.zeros(e)
    if experts.size == 0:
        return out
    # one int64 key per entry: expert in the high bits, margin (clipped: only small
    # margins are ever picked) in the low ones; a single sort groups both
    km = np.clip(margins, 0, _MARGIN_CAP).astype(np.int64)
    key = np.sort((experts.astype(np.int64) << _MARGIN_BITS) | km)
    ke = key >> _MARGIN_BITS
    start = np.searchsorted(ke, np.arange(e))
    r = np.minimum(need, np.bincount(ke, minlength=e))
    has = r > 0
    pick = (key[start[has] + r[has] - 1] & _MARGIN_CAP).astype(np.float64) + 1.0
    out[has] = np.minimum(pick, limit[has])
    return out
