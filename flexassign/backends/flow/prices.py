r"""Expert price guesses for the min-cost-flow backends: simultaneous price moves.

Both min-cost-flow backends prune the network to each client's few best experts by
fitness plus an expert *price* (an estimate of the optimal duals of the load bounds)
and prove the result optimal with a certificate, so a price guess only ever costs time.
Both guesses here move every expert's price at once towards the value that would put
its load back inside its bounds:

:func:`estimate_prices` (cold, ``flow``)
    From zero prices, on every client's full row (when nothing is known, an expert's
    future holders may be anywhere), in fitness units. Two rounds: each client holds
    its ``k`` best experts by fitness plus price; an overloaded expert lowers its price
    to halfway between the advantages of the last holder it must shed and the first it
    keeps, an underloaded one raises it to halfway between the gaps of the last client
    it needs and the next.
:func:`refine_prices` (near the answer, ``flow-warm``)
    From prices that are nearly right (the previous round's, or a sample's), on each
    client's few *candidate* experts only (already computed by ``flow-warm``'s pass over
    the fitness matrix), so a step costs :math:`O(N k)`, not :math:`O(N E)`, in the
    integer cost units of ``flow-warm``. A step recomputes every client's choice among
    its candidates; an overloaded expert lowers its price by the :math:`r`-th smallest
    *exit margin* of its holders (how much lower its price must go before a holder
    prefers something else), an underloaded one raises it by the :math:`r`-th smallest
    *entry margin* of the clients that could take it, and where complementary
    slackness fails (a bonus away from the lower bound, a penalty away from the upper
    one) the price heads for zero. Steps are damped (the clients an expert sheds land
    on other experts, which move too).

Why two: from nothing, fixed candidates miss the experts that become attractive
(``refine_prices`` as ``flow``'s cold estimate was slower: k = 1 at 1,000 x 64, mean
9.3 against 5.7 ms over 12 seeds); near the answer, full rows are wasted work, and
``estimate_prices`` as ``flow-warm``'s cold estimate balanced the loads but left the
prices so far from the duals that the solve took about as long as from a sample
(10,000 x 256: 7.4-7.8x greedy against 7.6x).

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

>>> fit = np.array([[0.9, 0.1], [0.8, 0.3], [0.7, 0.6]])
>>> prices, spread = estimate_prices(fit, one, np.array([1, 1]), np.array([2, 2]))
>>> bool(prices[0] < prices[1])  # the expert everyone wants gets the lower price
True
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..registry import compiled_kernel

__all__ = ["best_sorted", "estimate_prices", "refine_prices"]

_NEG = -(2.0**61)
#: Margins are clipped to 2**40 - 1 cost units for sorting (experts take the bits above).
_MARGIN_BITS = 40
_MARGIN_CAP = (1 << _MARGIN_BITS) - 1
#: Unheld candidates that may enter a client's choice in one step: the next three.
_ENTRY_SLOTS = 3


def best_sorted(g: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``m`` largest entries, best first: (columns, values), both (N, m).

    ``m <= 2`` takes row maxima (much cheaper than a partition); ``g`` is left as given.
    """
    n, e = g.shape
    if m <= 2:
        rows = np.arange(n)
        j1 = g.argmax(axis=1)
        v1 = g[rows, j1]
        if m == 1:
            return j1[:, None], v1[:, None]
        g[rows, j1] = -np.inf
        j2 = g.argmax(axis=1)
        v2 = g[rows, j2]
        g[rows, j1] = v1
        return np.stack([j1, j2], axis=1), np.stack([v1, v2], axis=1)
    top = np.argpartition(g, e - m, axis=1)[:, e - m :]  # the m best, unordered
    val = np.take_along_axis(g, top, axis=1)
    order = np.argsort(-val, axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(val, order, axis=1)


def estimate_prices(
    fitness: np.ndarray,
    cap: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    free: np.ndarray | None = None,
    rounds: int = 2,
) -> tuple[np.ndarray, float] | None:
    """Cold expert prices (fitness units) from ``rounds`` rounds of simultaneous price
    moves on full rows, and the largest move of the last round (how far off they may
    still be); ``None`` when prices cannot matter (no client takes an expert, or every
    client takes every one).

    Parameters
    ----------
    fitness : ndarray, shape (N, E)
        Fitness (only read).
    cap : ndarray of int, shape (N,)
        Experts each client takes (its free capacity).
    lo, hi : ndarray, shape (E,)
        Hard load bounds per expert.
    free : ndarray of bool, shape (N, E), optional
        Pairs that may be taken (``None``: all).
    rounds : int
        Rounds of moves (a second corrects most of how the first moves interact).
    """
    n, e = fitness.shape
    kmax = int(cap.max()) if n else 0
    if kmax == 0 or kmax >= e:
        return None
    m = kmax + 1
    base = fitness if free is None else np.where(free, fitness, -np.inf)
    span = float(fitness.max() - fitness.min()) + 1.0  # no price move needs to be larger
    prices = np.zeros(e)
    spread = 0.0
    with np.errstate(invalid="ignore"):  # -inf - -inf (masked pairs): no price signal
        for _ in range(rounds):
            moved = _price_round(base, free is None, prices, cap, m, lo, hi, span)
            if moved is None:
                spread = 0.0  # nothing moves: the prices fit every bound
                break
            spread = float(np.abs(moved - prices).max())
            prices = moved
    return prices, spread


def _price_round(
    base: np.ndarray,
    all_free: bool,
    p: np.ndarray,
    k: np.ndarray,
    m: int,
    lo: np.ndarray,
    hi: np.ndarray,
    span: float,
) -> np.ndarray | None:
    """One round of :func:`estimate_prices`: the moved prices, or None if none moves."""
    n, e = base.shape
    rows = np.arange(n)
    cols = np.arange(m)
    g = base + p
    top, val = best_sorted(g, m)
    held_slot = cols[None, :] < k[:, None]  # held: each row's first k_c
    if not all_free:  # ... that are free (a row may have fewer than k_c)
        held_slot &= val > -np.inf
    hc, hs = np.nonzero(held_slot)
    he = top[hc, hs]
    load = np.bincount(he, minlength=e)
    dp = np.zeros(e)
    excess = load - hi
    over = np.flatnonzero(excess > 0)
    if over.size:
        adv = val[hc, hs] - val[hc, k[hc]]  # what dropping the expert costs the client
        o = np.lexsort((adv, he))
        he_s, adv_s = he[o], adv[o]
        start = np.searchsorted(he_s, over)
        shed = start + excess[over]  # the first holder kept, when hi > 0
        a = adv_s[shed - 1]
        b = np.where(hi[over] > 0, adv_s[np.minimum(shed, adv_s.size - 1)], a)
        dp[over] = -0.5 * (a + b)
    short = lo - load
    under = np.flatnonzero(short > 0)
    if under.size:
        worst = val[rows, np.maximum(k - 1, 0)]
        gaps = worst[:, None] - g[:, under]  # what taking the expert costs the client
        pos = np.full(e, -1)
        pos[under] = np.arange(under.size)
        held = pos[he] >= 0
        gaps[hc[held], pos[he[held]]] = np.inf  # holders are not takers
        if not all_free:
            # no capacity, or unheld slots (fewer free experts than capacity): no taker
            gaps[~np.isfinite(gaps) | (k == 0)[:, None]] = np.inf
        r = short[under]
        kth = min(int(r.max()), n - 1)
        part = np.sort(np.partition(gaps, kth, axis=0)[: kth + 1], axis=0)
        which = np.arange(under.size)
        dp[under] = 0.5 * (part[np.minimum(r - 1, kth), which] + part[np.minimum(r, kth), which])
    dp = np.clip(np.nan_to_num(dp, nan=0.0, posinf=span, neginf=-span), -span, span)
    if not dp.any():
        return None
    return p + dp


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
    compiled: bool = True,
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
    compiled : bool
        Run the steps compiled (:func:`.ssp_kernel.refine_steps`, the same result)
        when numba is installed.

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
    kernel = compiled_kernel("refine_steps") if compiled else None
    if kernel is not None:  # the same steps, compiled (numba)
        out = kernel(
            np.ascontiguousarray(idx, dtype=np.int64),
            np.ascontiguousarray(val, dtype=np.float64),
            cap.astype(np.int64),
            kmin.astype(np.int64),
            lo.astype(np.int64),
            hi.astype(np.int64),
            prices.astype(np.float64),
            int(steps),
            float(damping),
            _ENTRY_SLOTS,
            float(_NEG),
            _MARGIN_CAP,
        )
        return np.asarray(out).astype(np.int64)
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
