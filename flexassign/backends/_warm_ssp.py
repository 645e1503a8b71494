"""``flow-warm``'s compiled engine: repair the price-induced choice by successive
shortest paths, then certify it on every client's full row.

:mod:`._ssp_kernel` does the repair on the candidate arcs (compiled with numba; see
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

from typing import Any

import numpy as np

from ._warm_data import _BLOCK, _NEG, _Data, _top

__all__ = ["available", "solve_candidates"]

#: Largest |price| (integer cost units) the checks accept: every u stays exact.
_P_LIMIT = 2**51
_G_INVALID = -(2**61)


class _EngineFailed(Exception):
    """The repair engine cannot finish; the OR-Tools engine takes over."""


def available() -> bool:
    """Whether the compiled kernels can be imported (numba installed)."""
    try:
        from . import _ssp_kernel  # noqa: F401
    except ImportError:
        return False
    return True


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
    from ._ssp_kernel import OPTIMAL, ssp

    n, m = val.shape
    e = data.e
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
        status, p_new, paths, excess = ssp(
            cand, gain, data.kmin, data.cap, data.lo, data.hi, p, held, init, max_paths
        )
        stats["paths"].append(int(paths))
        stats.setdefault("start_excess", int(excess))
        if status != OPTIMAL:
            reason = "path budget spent" if status == 2 else "no augmenting path on candidates"
            raise _EngineFailed(reason)
        p = np.asarray(p_new, dtype=np.int64)
        if np.abs(p).max(initial=0) >= _P_LIMIT:
            raise _EngineFailed("prices out of range")
        low, h = _check_candidates(data, cand, gain, held, p)
        if last is None:
            break
        rise = np.array([max(int((p - b).max()), 0) for b in bases], dtype=np.float64)
        bound = np.where(last > _NEG // 2, last + rise[group], float(_NEG))
        suspect = (bound > low) | ((h < data.cap) & (bound > 0))
        rows = np.flatnonzero(suspect)
        rechecked += int(rows.size)
        bad = _recheck(data, cand, rows, low[rows], h[rows], p) if rows.size else rows
        stats["recandidated"].append(int(bad.size))
        if bad.size == 0:
            break
        new_idx, new_val = _top(data, p.astype(np.float64), bad, m)
        cand[bad] = new_idx
        gain[bad] = gains(new_idx.astype(np.int64), new_val, p)
        last[bad] = new_val[:, -1]
        group[bad] = len(bases)
        bases.append(p.copy())
        init = bad.astype(np.int64)
    else:
        raise _EngineFailed(f"no certificate after {max_rounds} rounds")
    stats["rechecked_rows"] = rechecked
    return p, cand, held


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
    data: _Data, cand: np.ndarray, rows: np.ndarray, low: np.ndarray, h: np.ndarray, p: np.ndarray
) -> np.ndarray:
    """The clients among ``rows`` that prefer an expert off their candidates (exact,
    on full rows, block-wise)."""
    e = data.e
    pf = p.astype(np.float64)
    bad = []
    step = max(1, _BLOCK // e)
    for r0 in range(0, rows.size, step):
        sel = rows[r0 : r0 + step]
        u = data.u(sel, pf)
        u[np.arange(sel.size)[:, None], cand[sel]] = _NEG
        best = u.max(axis=1)
        lo_r, h_r = low[r0 : r0 + step], h[r0 : r0 + step]
        fail = (best > lo_r) | ((h_r < data.cap[sel]) & (best > 0))
        bad.append(sel[fail])
    return np.concatenate(bad) if bad else rows[:0]
