"""``flow-warm``'s compiled engine: repair the price-induced choice by successive
shortest paths, then certify it on every client's full row.

:mod:`.ssp_kernel` does the repair on the candidate arcs (compiled with numba; see
its docstring for the compressed residual graph). This module runs it and checks its
answer independently, in NumPy:

1. on the candidates: every client's held experts are at least as good, by
   :math:`u = g + p`, as its other candidates (and positive or negative where its
   capacity or minimum says), and every expert's load is within its bounds and at the
   bound its price's sign calls for (complementary slackness);
2. off the candidates: a client's best other expert is at most its worst candidate at
   the prices the candidates were picked at plus the largest price rise since; clients
   where that bound is not enough are re-checked exactly on their full row.

A client that fails step 2 gets fresh candidates at the new prices and the repair
continues from there. If step 1 ever fails the kernel is wrong: the caller falls back
to the OR-Tools engine (``stats["engine_fallback"]``), never to an unproven answer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..registry import compiled_kernel
from .warm_data import _BLOCK, _NEG, _best_off, _compiled_pass, _Data, _top

__all__ = ["available", "solve_candidates"]

#: Largest |price| (integer cost units) the checks accept: every u stays exact.
_P_LIMIT = 2**51
_G_INVALID = -(2**61)
#: Extra candidates per round for clients that get fresh ones (measured on k = 1 with
#: exact loads, 2 clients per expert, 500 x 256, seeds 60-61: without it 12 rounds and
#: a handover to OR-Tools, 32-57 ms; ``flow`` 15-17 ms).
_WIDEN = 4
#: Give the experts that the starting choice leaves short their cheapest takers before
#: the first path (measured cold on the clustered family at 10,000 x 256, seed 0:
#: without, an expert 10 clients short reached through candidates only rose 0.19 past
#: its optimal price, 2,416 clients were re-chosen and 2,860 paths taken, 1.2-1.9 s).
_TAKERS_FIRST = True
#: The repair recomputes a single swap arc, not its row, where a client's move only
#: invalidates that one, through an ``E x n`` int16 table of candidate slots: up to this
#: many pairs (16 MiB) and experts (the per-path arc list is ``(E + 1)^2``). Measured on
#: the full level of 10,000 x 256 cold starts (captured kernel inputs, best of 10): 87 ->
#: 66 ms (harness scores), 83 -> 66 ms (the benchmark's), the same paths and optimum.
_SINGLE_ARC_PAIRS = 8_000_000
_SINGLE_ARC_EXPERTS = 2048
#: A re-checked client's exact best u off its candidates becomes its bound for the next
#: round (from the prices it was checked at) instead of the bound from its candidates'
#: prices (False: the older rule, for A/B runs). Harness scores, 10,000 x 256 cold (seed
#: 11): the second round's re-check went from all 10,000 clients to none (19,997 -> 10,000
#: rows re-checked in all).
_RECHECK_BOUND = True


class _EngineFailed(Exception):
    """The repair engine cannot finish; the OR-Tools engine takes over."""


def available() -> bool:
    """Whether the compiled kernels can run: numba is installed (looked up without
    importing it; a broken install shows at first use and hands over to OR-Tools)."""
    from ..registry import compiled_engine_installed

    return compiled_engine_installed()


def gains(idx: np.ndarray, val: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Integer gains ``u - p`` of candidates ``idx`` with values ``val`` at prices ``p``."""
    ok = val > _NEG // 2
    g = np.full(val.shape, _G_INVALID, dtype=np.int64)
    g[ok] = val[ok].astype(np.int64) - p[idx[ok]]
    return g


def solve_candidates(
    data: _Data,
    idx: np.ndarray,
    val: np.ndarray,
    p_base: np.ndarray,
    p_start: np.ndarray,
    *,
    max_rounds: int,
    max_paths: int,
    stats: dict[str, Any],
    certify: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Certified optimum of ``data``: prices, candidates and which of them are held.

    Parameters
    ----------
    data : _Data
        The problem (fixed pairs taken out).
    idx, val : ndarray, shape (n, m)
        Each client's ``m`` best experts by :math:`u` at ``p_base``, best first (the
        last one bounds every other expert's u).
    p_base, p_start : ndarray of int64, shape (E,)
        The prices ``val`` was computed at, and the prices to start the repair from.
    max_rounds : int
        Rounds of fresh candidates for clients that fail the check off the candidates.
    max_paths : int
        Augmenting paths per round before giving up.
    stats : dict
        Receives ``paths`` (per round), ``start_excess``, ``recandidated``,
        ``rechecked_rows``.
    certify : bool
        ``False``: stop at the optimum over the candidate arcs, unchecked (a sample
        level's prices are only a hint for the next level, which checks its own).

    Returns
    -------
    prices, idx, held : ndarray
        Certified prices (int64, relative to O), the final candidates (int64) and a
        boolean mask of the held ones.

    Raises
    ------
    _EngineFailed
        No augmenting path on the candidates, the path budget spent, prices out of
        range, a failed check on the candidates, or no certificate within
        ``max_rounds``.
    """
    try:
        from .ssp_kernel import NO_PATH, OPTIMAL, ssp
    except ImportError as exc:  # numba present but broken
        raise _EngineFailed(f"the compiled kernels failed to import: {exc}") from None

    n, m = val.shape
    e = data.e
    single = n * e <= _SINGLE_ARC_PAIRS and e < _SINGLE_ARC_EXPERTS
    cand = idx.astype(np.int64)
    gain = gains(cand, val, p_base)
    # bound on each client's u off its candidates: last[c] + the largest rise since the
    # prices its candidates were picked at (base[group[c]])
    last = val[:, -1].astype(np.float64) if m < e else None
    group = np.zeros(n, dtype=np.int64)
    bases = [p_base.astype(np.int64)]
    held = np.zeros((n, m), dtype=np.bool_)
    init = np.arange(n, dtype=np.int64)
    p = p_start.astype(np.int64)
    stats["paths"] = []
    stats["recandidated"] = []
    rechecked = 0
    for _ in range(max_rounds):
        if _TAKERS_FIRST and last is not None and init.size and not stats["paths"]:
            # the price-induced choice first (no paths): experts it leaves short get
            # their cheapest takers as arcs before any path is sought, or a path on the
            # candidates alone may raise their price far past the optimum's (every
            # client off its candidates then has to be re-chosen and moved back, one
            # unit per path). First round only: doing it again after each re-choice
            # widened every client's arrays (harness scores: 2,063 takers, the same
            # paths 40 % slower)
            ssp(cand, gain, data.kmin, data.cap, data.lo, data.hi, p, held, init, 0, False)
            init = init[:0]
            if _has_deficit(data, cand, held, p):
                cand, gain, held, init = _add_takers(data, cand, gain, held, p)
                stats["added_takers"] = stats.get("added_takers", 0) + int(init.size)
        status, p_new, paths, excess = ssp(
            cand, gain, data.kmin, data.cap, data.lo, data.hi, p, held, init, max_paths, single
        )
        stats["paths"].append(int(paths))
        stats.setdefault("start_excess", int(excess))
        p = np.asarray(p_new, dtype=np.int64)
        if np.abs(p).max(initial=0) >= _P_LIMIT:
            raise _EngineFailed("prices out of range")
        if status == NO_PATH:
            # an expert short of clients that no candidate arc reaches: give it the
            # clients that would take it most cheaply, and go on from here
            cand, gain, held, init = _add_takers(data, cand, gain, held, p)
            if init.size == 0:
                raise _EngineFailed("no augmenting path on candidates")
            stats["added_takers"] = stats.get("added_takers", 0) + int(init.size)
            continue
        if status != OPTIMAL:
            raise _EngineFailed("path budget spent")
        if not certify:
            stats["recandidated"].append(0)
            break
        low, h = _check_candidates(data, cand, gain, held, p)
        if last is None:
            break
        rise = np.array([max(int((p - b).max()), 0) for b in bases], dtype=np.float64)
        bound = np.where(last > _NEG // 2, last + rise[group], float(_NEG))
        suspect = (bound > low) | ((h < data.cap) & (bound > 0))
        rows = np.flatnonzero(suspect)
        rechecked += int(rows.size)
        if rows.size == 0:
            stats["recandidated"].append(0)
            break
        bad, best = _recheck(data, cand, gain, rows, low[rows], h[rows], p)
        stats["recandidated"].append(int(bad.size))
        if bad.size == 0:
            break
        # a re-checked client's exact best off its candidates at these prices bounds it
        # in the next round (plus that round's rise), so a few paths later only the
        # clients they touch are re-checked again, not every client a large rise since
        # the first prices made suspect (harness scores: 10,000 re-checks -> a few)
        if _RECHECK_BOUND:
            group[rows] = len(bases)
            last[rows] = best
        else:
            group[bad] = len(bases)
        bases.append(p.copy())
        # fresh candidates at the new prices, a few more each round (where prices
        # swing, e.g. with two clients per expert, the old width keeps missing)
        width = min(e, m + _WIDEN * len(stats["recandidated"]))
        if width > cand.shape[1]:
            cand, gain, held = _pad(cand, gain, held, width - cand.shape[1])
        new_idx, new_val = _top(data, p.astype(np.float64), bad, width)
        cand[bad, :width] = new_idx
        gain[bad, :width] = gains(new_idx.astype(np.int64), new_val, p)
        gain[bad, width:] = _G_INVALID  # taker slots: the fresh candidates cover them
        last[bad] = new_val[:, -1] if width < e else _NEG
        init = bad.astype(np.int64)
    else:
        raise _EngineFailed(f"no certificate after {max_rounds} rounds")
    stats["rechecked_rows"] = rechecked
    return p, cand, held


def _shortfall(data: _Data, cand: np.ndarray, held: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Clients each expert lacks at prices ``p``: below its lower bound, or below its
    upper bound while its price is negative (the bound that price calls for)."""
    load = np.bincount(cand[held], minlength=data.e)
    want = np.where(p < 0, data.hi, data.lo)
    return np.maximum(want - load, 0)


def _has_deficit(data: _Data, cand: np.ndarray, held: np.ndarray, p: np.ndarray) -> bool:
    return bool(_shortfall(data, cand, held, p).any())


def _check_candidates(
    data: _Data, cand: np.ndarray, gain: np.ndarray, held: np.ndarray, p: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Complementary slackness on the candidate arcs and the expert bounds; returns
    each client's lowest held u (``+inf`` when it holds none) and its count."""
    valid = gain > _G_INVALID // 2
    u = np.where(valid, gain + p[cand], 0)
    h = held.sum(axis=1)
    low = np.where(held, u, np.iinfo(np.int64).max).min(axis=1)
    high = np.where(valid & ~held, u, np.iinfo(np.int64).min).max(axis=1)
    ok = (
        (h >= data.kmin)
        & (h <= data.cap)
        & (low >= high)
        & ((h >= data.cap) | (high <= 0))
        & ((h <= data.kmin) | (low >= 0))
    )
    if not ok.all() or (held & ~valid).any():
        raise _EngineFailed("the repair broke complementary slackness on a candidate")
    load = np.bincount(cand[held], minlength=data.e)
    fits = (load >= data.lo) & (load <= data.hi)
    slack = ((p <= 0) | (load == data.lo)) & ((p >= 0) | (load == data.hi))
    if not (fits & slack).all():
        raise _EngineFailed("the repair left an expert outside its bounds or its price")
    return low.astype(np.float64), h


def _recheck(
    data: _Data,
    cand: np.ndarray,
    gain: np.ndarray,
    rows: np.ndarray,
    low: np.ndarray,
    h: np.ndarray,
    p: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The clients among ``rows`` that prefer an expert off their candidates (exact,
    on full rows, block-wise), and each row's best u off its candidates (``-inf`` or
    ``_NEG`` where it has none)."""
    e = data.e
    pf = p.astype(np.float64)
    best = _best_off(data, rows, pf, cand[rows], gain[rows])
    if best is not None:
        fail = (best > low) | ((h < data.cap[rows]) & (best > 0))
        return rows[fail], best
    bad = []
    bests = []
    step = max(1, _BLOCK // e)
    for r0 in range(0, rows.size, step):
        sel = rows[r0 : r0 + step]
        u = data.u(sel, pf)
        vr, vs = np.nonzero(gain[sel] > _G_INVALID // 2)
        u[vr, cand[sel][vr, vs]] = _NEG  # the candidates themselves are checked already
        best = u.max(axis=1)
        lo_r, h_r = low[r0 : r0 + step], h[r0 : r0 + step]
        fail = (best > lo_r) | ((h_r < data.cap[sel]) & (best > 0))
        bad.append(sel[fail])
        bests.append(best)
    if not bad:
        return rows[:0], np.empty(0)
    return np.concatenate(bad), np.concatenate(bests)


def _column_u(data: _Data, experts: np.ndarray, p: np.ndarray) -> np.ndarray:
    """u of every client for the given experts, shape (n, len(experts)) (``_NEG``
    where a client may not take one)."""
    rows = data.full()
    sub = np.ix_(rows, experts)  # only the wanted columns (no copy of whole rows)
    u = np.rint(np.ldexp(data.fitness[sub], data.scale_exp))
    u += p[experts].astype(np.float64)[None, :]
    if data.allowed is not None:
        u[~data.allowed[sub]] = _NEG
    if data.fixed is not None:
        u[data.fixed[sub]] = _NEG
    u[data.cap == 0] = _NEG
    return u


def _add_takers(
    data: _Data, cand: np.ndarray, gain: np.ndarray, held: np.ndarray, p: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate arcs for the experts below their required load: for each, the
    clients (without it as a candidate) that would take it at the least loss, twice
    its shortfall plus eight. Returns the widened arrays and the clients changed."""
    lack = _shortfall(data, cand, held, p)
    short = np.flatnonzero(lack)
    if short.size == 0:
        return cand, gain, held, np.zeros(0, dtype=np.int64)
    h = held.sum(axis=1)
    u_held = np.where(held, gain + p[cand], np.iinfo(np.int64).max)
    low = np.where(h >= data.cap, u_held.min(axis=1), 0).astype(np.float64)
    want = (2 * lack[short] + 8).astype(np.int64)
    picked = _compiled_takers(data, short, want, low, cand, gain, p)
    if picked is None:
        picked = _numpy_takers(data, short, want, low, cand, gain, p)
    keep = picked >= 0
    r = picked[keep].astype(np.int64)
    if r.size == 0:
        return cand, gain, held, r
    d_all = np.broadcast_to(short[None, :], keep.shape)[keep]
    order = np.argsort(r, kind="stable")
    r, d_all = r[order], d_all[order]
    slot = np.arange(r.size) - np.searchsorted(r, r)  # 0, 1, ... within each client
    m = cand.shape[1]
    cand, gain, held = _pad(cand, gain, held, int(slot.max()) + 1)
    cand[r, m + slot] = d_all
    gain[r, m + slot] = data.cost(r, d_all)
    return cand, gain, held, np.unique(r).astype(np.int64)


def _numpy_takers(
    data: _Data,
    short: np.ndarray,
    want: np.ndarray,
    low: np.ndarray,
    cand: np.ndarray,
    gain: np.ndarray,
    p: np.ndarray,
) -> np.ndarray:
    """What :func:`_compiled_takers` returns, in NumPy (any problem): for each expert in
    ``short`` (a column), its ``want`` clients by increasing loss, -1 past them."""
    u_col = _column_u(data, short, p)
    # pairs already among the candidates are not takers
    col = np.full(data.e, -1, dtype=np.int64)
    col[short] = np.arange(short.size)
    vr, vs = np.nonzero(gain > _G_INVALID // 2)
    hit = col[cand[vr, vs]]
    u_col[vr[hit >= 0], hit[hit >= 0]] = _NEG
    loss = np.where(u_col <= _NEG // 2, np.inf, low[:, None] - u_col)
    k = int(min(want.max(), loss.shape[0]))
    if k < loss.shape[0]:  # each column's k smallest losses, then the wanted prefix
        part = np.argpartition(loss, k - 1, axis=0)[:k]
    else:
        part = np.broadcast_to(np.arange(loss.shape[0])[:, None], loss.shape)
    pl = np.take_along_axis(loss, part, axis=0)
    order = np.argsort(pl, axis=0, kind="stable")
    part = np.take_along_axis(part, order, axis=0)
    pl = np.take_along_axis(pl, order, axis=0)
    keep = (np.arange(k)[:, None] < want[None, :]) & np.isfinite(pl)
    return np.where(keep, part, -1)


def _compiled_takers(
    data: _Data,
    short: np.ndarray,
    want: np.ndarray,
    low: np.ndarray,
    cand: np.ndarray,
    gain: np.ndarray,
    p: np.ndarray,
) -> np.ndarray | None:
    """:func:`.ssp_kernel.cheapest_takers` on an unmasked problem (one pass over the
    rows instead of a column gather and partition: 37 of 212 ms of the full level at
    10,000 x 256), or ``None`` where the NumPy code must run."""
    kernel = compiled_kernel("cheapest_takers") if _compiled_pass(data) else None
    if kernel is None:
        return None
    rows = data.full().astype(np.int64)
    out: np.ndarray = kernel(
        data.fitness,
        rows,
        math.ldexp(1.0, data.scale_exp),
        p.astype(np.float64),
        short.astype(np.int64),
        want,
        low,
        cand,
        gain,
    )
    return out


def _pad(
    cand: np.ndarray, gain: np.ndarray, held: np.ndarray, extra: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arrays with ``extra`` empty candidate slots appended to every client."""
    n = cand.shape[0]
    return (
        np.hstack([cand, np.zeros((n, extra), dtype=np.int64)]),
        np.hstack([gain, np.full((n, extra), _G_INVALID, dtype=np.int64)]),
        np.hstack([held, np.zeros((n, extra), dtype=np.bool_)]),
    )
