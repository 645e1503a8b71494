"""The count-based problem as ``flow-warm`` sees it: integer costs, candidate passes.

``flow-warm`` (:mod:`flexassign.backends.flow.warm`) works on the problem with fixed
pairs taken out (:class:`_Data`, possibly a random row sample), in integer cost units
(fitness times a power of two, as in ``flow``). This module holds that view and the
block-wise passes over the fitness matrix: each client's best candidates at given
prices, its price-induced choice and its slack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...problem import AssignmentProblem
from ..registry import compiled_kernel

#: Sentinels for "no arc" (kept far from int64 overflow when added or subtracted).
_NEG = -(2**61)
_BIG = 2**61
#: Cost units: max |cost| times flow, nodes and path length stays below this (as in
#: ``flow``), and every cost plus price stays an integer that float64 holds exactly.
_MAX_COST_PRODUCT = 2.0**60
_MAX_EXACT = 2.0**51
#: Elements per block of rows in the passes over the fitness matrix.
_BLOCK = 1 << 21
#: Pick the takers and re-check clients off their candidates (the compiled repair's
#: re-checks and the OR-Tools engine's frozen clients) with the compiled passes where
#: the problem is unmasked; the NumPy code computes the same (takers up to ties).
#: Measured cold at 10,000 x 256 (seed 11): takers 37 -> 9 ms of the full level, the
#: exact re-checks of the harness family 44 -> 7 ms each (two per solve); at 100,000 x 64
#: on harness scores (kernels loaded, CPU, three runs each) the OR-Tools engine's
#: 85,000-87,000 re-checked rows 155-212 -> 53-62 ms (seed 11), 113-165 -> 41-52 ms
#: (seed 12).
_COMPILED_PASSES = True
#: A cold start's sample levels take one in this many clients (measured at 10,000 x 256
#: cold, tuning seeds 1-4: one in 4 gives 6.5x greedy, one in 3 6.7x, one in 2 7.9x).
_SAMPLE_DIVISOR = 4


class _Fallback(Exception):
    """The warm path gives up; ``flow`` solves the problem."""


@dataclass
class _Data:
    """The count-based problem with fixed pairs taken out (possibly a row sample)."""

    fitness: np.ndarray  # (N_full, E) float64, never copied
    rows: np.ndarray | None  # row sample (indices into fitness) or None for all rows
    allowed: np.ndarray | None  # full-size masks, indexed through rows
    fixed: np.ndarray | None
    cap: np.ndarray  # (n,) int64: capacity left after fixed pairs
    kmin: np.ndarray  # (n,) int64: minimum left after fixed pairs
    lo: np.ndarray  # (E,) int64: clients each expert needs beyond its fixed ones
    hi: np.ndarray  # (E,) int64: clients each expert may take beyond its fixed ones
    scale_exp: int  # costs are fitness * 2**scale_exp (an exponent: 2**1100 overflows)
    #: use the compiled helpers (candidates, price steps): set by the engine choice, so
    #: a solve that does not pay for loading the kernels never loads them
    compiled: bool = True

    @property
    def n(self) -> int:
        return int(self.cap.size)

    @property
    def e(self) -> int:
        return int(self.fitness.shape[1])

    def u(self, sel: slice | np.ndarray, p: np.ndarray) -> np.ndarray:
        """:math:`u = \\mathrm{round}(S \\cdot 2^k) + p` for the selected rows, ``_NEG``
        on pairs a client may not take. Integers held exactly in float64 (below 2**52)."""
        idx: slice | np.ndarray = sel
        if self.rows is not None:
            idx = self.rows[sel]
        u = np.ldexp(self.fitness[idx], self.scale_exp)
        np.rint(u, out=u)
        u += p.astype(np.float64)[None, :]
        if self.allowed is not None:
            u[~self.allowed[idx]] = _NEG
        if self.fixed is not None:
            u[self.fixed[idx]] = _NEG
        u[self.cap[sel] == 0] = _NEG
        return u

    def full(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Indices into ``fitness`` of the given sample-local rows (of every row of
        this problem when ``None``)."""
        if rows is None:
            return np.arange(self.n) if self.rows is None else self.rows
        return rows if self.rows is None else self.rows[rows]

    def cost(self, rows: np.ndarray, experts: np.ndarray) -> np.ndarray:
        """Integer costs of the given pairs (rows are sample-local)."""
        r = self.full(rows)
        return np.rint(np.ldexp(self.fitness[r, experts], self.scale_exp)).astype(np.int64)


def _scale(problem: AssignmentProblem, total_flow: int) -> tuple[int, bool]:
    """Exponent ``k`` of the power-of-two cost scale ``2**k`` (as in ``flow``) and
    whether costs are exact."""
    n, e = problem.shape
    fit = problem.fitness
    peak = 0.0
    step = max(1, _BLOCK // e)
    for r0 in range(0, n, step):
        blk = fit[r0 : r0 + step]
        peak = max(peak, float(blk.max()), -float(blk.min()))
    # integral fitness: a few entries usually settle it before a full pass
    probe = fit[:: max(1, n // 64)][:, :: max(1, e // 16)]
    integral = bool(np.all(probe == np.round(probe)))
    for r0 in range(0, n, step) if integral else ():
        blk = fit[r0 : r0 + step]
        if not np.all(blk == np.round(blk)):
            integral = False
            break
    limit = _MAX_COST_PRODUCT / (max(total_flow + 1, n + e + 3) * 4 * (e + 2))
    limit = min(limit, _MAX_EXACT / (4 * (e + 2)))
    if peak == 0.0 or (integral and peak <= limit):
        return 0, integral
    exp = math.floor(math.log2(limit) - math.log2(peak))
    while math.ldexp(peak, exp) > limit:
        exp -= 1
    return exp, False


def _prepare(problem: AssignmentProblem) -> tuple[_Data, np.ndarray, bool, int]:
    """The data without fixed pairs, the fixed load per expert, exactness, total flow."""
    n, e = problem.shape
    fixed = problem.fixed
    if fixed is not None:
        f_cnt = fixed.sum(axis=1)
        f_load = fixed.sum(axis=0).astype(np.int64)
    else:
        f_cnt = np.zeros(n, dtype=np.int64)
        f_load = np.zeros(e, dtype=np.int64)
    cap = np.maximum(problem.capacity - f_cnt, 0).astype(np.int64)
    kmin = np.maximum(problem.min_experts - f_cnt, 0).astype(np.int64)
    if problem.allowed is not None:  # a client cannot take more than it may
        free_cnt = problem.allowed.sum(axis=1) - f_cnt
        cap = np.minimum(cap, np.maximum(free_cnt, 0))
        if (kmin > cap).any():
            raise _Fallback("a client has fewer free experts than its minimum")
    lo_i, hi_i = problem.count_bounds()
    lo = np.maximum(lo_i - f_load, 0).astype(np.int64)
    hi = (hi_i - f_load).astype(np.int64)
    if (hi < 0).any() or (hi < lo).any():
        raise _Fallback("fixed pairs exceed an expert's maximum load")
    total = int(cap.sum())
    scale_exp, exact = _scale(problem, total)
    data = _Data(problem.fitness, None, problem.allowed, fixed, cap, kmin, lo, hi, scale_exp)
    return data, f_load, exact, total


def _masked(data: _Data) -> bool:
    """Whether some pair may not be taken (an ``allowed`` or ``fixed`` mask, or a client
    without a free slot)."""
    return data.allowed is not None or data.fixed is not None or bool((data.cap == 0).any())


def _compiled_rows(data: _Data) -> bool:
    """Whether a compiled pass over the fitness rows may stand in for the NumPy one: the
    kernels are wanted, the problem is unmasked and its cost scale is an exact float
    multiplication (``2**scale_exp`` finite)."""
    return data.compiled and not _masked(data) and abs(data.scale_exp) < 1000


def _compiled_pass(data: _Data) -> bool:
    """Whether the compiled passes that pick takers and re-check clients off their
    candidates (:func:`.ssp_kernel.cheapest_takers`,
    :func:`.ssp_kernel.off_candidate_best`) may stand in for NumPy's:
    :func:`_compiled_rows`, and ``_COMPILED_PASSES`` not switched off."""
    return _COMPILED_PASSES and _compiled_rows(data)


def _best_off(
    data: _Data, rows: np.ndarray, p: np.ndarray, cand: np.ndarray, gain: np.ndarray
) -> np.ndarray | None:
    """Each selected client's best u over the experts off its listed ones (``cand``,
    ``gain``: the selected rows; a gain above ``-2**59`` lists the expert), ``-inf``
    where it lists every expert: the compiled pass
    :func:`.ssp_kernel.off_candidate_best`; ``None`` where :func:`_compiled_pass` does
    not hold or the kernels are missing (the caller runs its NumPy code)."""
    kernel = compiled_kernel("off_candidate_best") if _compiled_pass(data) else None
    if kernel is None:
        return None
    where = data.full(rows)
    return np.asarray(
        kernel(
            data.fitness,
            where.astype(np.int64),
            math.ldexp(1.0, data.scale_exp),
            p.astype(np.float64),
            np.ascontiguousarray(cand, dtype=np.int64),
            np.ascontiguousarray(gain, dtype=np.int64),
        )
    )


def _top(
    data: _Data, p: np.ndarray, sel: np.ndarray | None, m1: int, *, sort: bool = True
) -> tuple[np.ndarray, ...]:
    """Each selected client's ``m1`` best experts by u, sorted (indices, values);
    with ``sort=False`` and ``m1 >= E`` every expert in its own order (no sort)."""
    e = data.e
    rows = np.arange(data.n) if sel is None else sel
    if not sort and m1 >= e:
        u = data.u(slice(None) if sel is None else rows, p)
        return np.broadcast_to(np.arange(e, dtype=np.int32), u.shape).copy(), u
    idx = np.empty((rows.size, m1), dtype=np.int32)
    val = np.empty((rows.size, m1), dtype=np.float64)
    masked = _masked(data)
    compiled = m1 < e and _compiled_rows(data)
    kernel = compiled_kernel("top_candidates") if compiled else None
    if kernel is not None:
        where = data.full(rows)
        scale = math.ldexp(1.0, data.scale_exp)  # multiplying by it is exact
        kernel(data.fitness, where.astype(np.int64), scale, p.astype(np.float64), idx, val)
        return idx, val
    step = max(1, _BLOCK // e)
    # integer u and the expert index packed in one int64 key: one value partition and a
    # small sort replace an index partition and two gathers (when every |u| fits)
    bits = max(1, (e - 1).bit_length())
    low_key = -(2 ** (61 - bits))
    peak = _MAX_EXACT / (4 * (e + 2)) + float(np.abs(p).max(initial=0))
    keyed = m1 < e and peak < 2.0 ** (60 - bits)
    cols = np.arange(e, dtype=np.int64)
    for r0 in range(0, rows.size, step):
        r1 = min(rows.size, r0 + step)
        u = data.u(slice(r0, r1) if sel is None else rows[r0:r1], p)
        if keyed:
            key = u.astype(np.int64)
            if masked:
                np.maximum(key, low_key, out=key)
            key <<= bits
            key |= cols  # the low bits of a multiple of 2**bits are zero, sign or not
            key.partition(e - m1, axis=1)  # in place: no copy of the block
            best = np.sort(key[:, e - m1 :], axis=1)[:, ::-1]
            idx[r0:r1] = best & (2**bits - 1)
            v = (best >> bits).astype(np.float64)  # floor division: exactly u again
            v[v <= low_key] = _NEG
            val[r0:r1] = v
            continue
        if m1 < e:
            part = np.argpartition(u, e - m1, axis=1)[:, e - m1 :]
            pv = np.take_along_axis(u, part, axis=1)
        else:
            part = np.broadcast_to(np.arange(e), u.shape)
            pv = u
        order = np.argsort(-pv, axis=1, kind="stable")
        idx[r0:r1] = np.take_along_axis(part, order, axis=1)
        val[r0:r1] = np.take_along_axis(pv, order, axis=1)
    return idx, val


def _choose(val: np.ndarray, cap: np.ndarray, kmin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Price-induced choice (held = a prefix of the candidates, sorted best first: the
    first ``kmin``, then each positive one up to ``cap``) and its slack."""
    n, m1 = val.shape
    # the positive values are a prefix: count them instead of masking every slot
    h = np.minimum(np.maximum(kmin, np.minimum(cap, (val > 0).sum(axis=1))), m1)
    rows = np.arange(n)
    worst = val[rows, np.maximum(h - 1, 0)]  # the lowest held value
    if ((h > 0) & (worst <= _NEG // 2)).any():
        raise _Fallback("a client cannot reach its minimum")
    low = np.where(h > 0, worst, _BIG)
    high = np.where(h < m1, val[rows, np.minimum(h, m1 - 1)], _NEG)
    return h, _slack(low, high, h, cap, kmin)


def _slack(
    low: np.ndarray, high: np.ndarray, h: np.ndarray, cap: np.ndarray, kmin: np.ndarray
) -> np.ndarray:
    """How far prices may spread before condition 1 can fail (negative: it fails)."""
    s = np.minimum(low - high, _BIG)
    s = np.minimum(s, np.where(h < cap, -high, _BIG))
    return np.minimum(s, np.where(h > kmin, low, _BIG))


def _excess_share(data: _Data, top_idx: np.ndarray, h: np.ndarray) -> float:
    """Share of the load that the choice ``top_idx[c, :h[c]]`` puts outside the bounds."""
    load = np.zeros(data.e, dtype=np.int64)
    for t in range(int(h.max(initial=0))):
        load += np.bincount(top_idx[h > t, t], minlength=data.e)
    excess = np.maximum(load - data.hi, 0) + np.maximum(data.lo - load, 0)
    return float(excess.sum()) / max(float(load.sum()), 1.0)


def _sample(data: _Data, rng: np.random.Generator) -> _Data:
    """A random quarter of the clients, with the load bounds scaled to their capacity."""
    n = data.n
    idx = np.sort(rng.choice(n, size=n // _SAMPLE_DIVISOR, replace=False))
    cap, kmin = data.cap[idx], data.kmin[idx]
    frac = float(cap.sum()) / max(float(data.cap.sum()), 1.0)
    lo = np.floor(data.lo * frac).astype(np.int64)
    hi = np.where(data.hi >= n, idx.size, np.ceil(data.hi * frac)).astype(np.int64)
    rows = data.full(idx)
    return _Data(
        data.fitness,
        rows,
        data.allowed,
        data.fixed,
        cap,
        kmin,
        lo,
        np.maximum(hi, lo),
        data.scale_exp,
        data.compiled,
    )
