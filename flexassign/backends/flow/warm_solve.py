"""``flow-warm``'s exact step: a certified optimum of the problem view from prices.

:func:`_solve_data` runs the two engines of :mod:`.warm` (the compiled repair of
:mod:`.warm_ssp` and the OR-Tools open-set rounds of :mod:`.warm_network`) on a
:class:`~.warm_data._Data` from integer prices, refining handed-over prices first
(:func:`_refine`, :mod:`.prices`) and, without prices, starting from ``flow``'s cold
estimate or a few refinement steps from zero. The driver (prices, sample levels, the
fallback to ``flow``, the answer) is :mod:`.warm`; the measurements behind the
constants below are in its docstring and beside each constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import warm_ssp as _warm_ssp
from .prices import estimate_prices, refine_prices
from .warm_data import (
    _BIG,
    _NEG,
    _choose,
    _Data,
    _excess_share,
    _Fallback,
    _slack,
    _top,
)
from .warm_network import (
    _expert_candidates,
    _held_min,
    _open_holders,
    _open_takers,
    _potentials,
    _recheck_frozen,
    _recheck_open,
    _solve_open,
    _State,
    _Sub,
    _widen,
)

__all__: list[str] = []

#: Augmenting paths one repair round may take: at least this many, or this many per
#: client (a warm start at 10,000 x 256 takes about 110, 1 % of the clients).
_SSP_MIN_PATHS = 2000
_SSP_PATHS_PER_CLIENT = 0.5
_CERTIFICATE = "prices satisfy complementary slackness for every client and expert"

#: With prices: open this many times the share of load that the handed-over (or
#: sample) prices put outside the bounds, before refinement (the clients with the
#: smallest slack after it), at least ``_OPEN_MIN``, at most ``_OPEN_FIRST``.
#: (Measured on round-2 instances, tuning seeds 1-3, CPU of the solve: at 10,000 x 256
#: 20 % certifies in one round in 59-60 ms where 15 % took 5-6 rounds (77-94 ms) and
#: 60 % 98-104 ms; at 100,000 x 64 4 % took 320 ms against 473 ms for 20 %; at
#: 100,000 x 256 6-10 % 520-530 ms against 681 ms for 20 %. The rule gives 22 %, 4 %
#: and 16 %.)
_OPEN_EXCESS = 5.0
_OPEN_FIRST = 0.6
_OPEN_MIN = 0.02
#: Price refinement before the first exact solve (see ``prices.refine_prices``): damped
#: steps on every client's candidates (measured at 10,000 x 256: three steps take the
#: price error from 1.7e-3 to 4.2e-4 rms; more steps stall near 3.5e-4; refining
#: only the half of the clients with the smallest slack made seed 2 take 5-9 rounds).
_REFINE_STEPS = 3
_REFINE_DAMPING = 0.8
_ZERO_REFINE_STEPS = 5
_ZERO_REFINE_EXTRA = 8
#: The same rough guess for the compiled repair, which moves load cheaply: fewer steps
#: on fewer extra candidates (measured on 1,000 x 64, tuning seeds 50-55, mean of best
#: of 5: k = 1 exact loads 3.62 ms and the count cell 5.84 ms with 2 steps on 2 extra,
#: 3.7-4.5 and 5.8-6.6 ms for 2-4 steps on 2-8 extra; 5 steps on 8 extra 5.7 / 7.3 ms;
#: no guess 6.8 / 16.5 ms).
_SSP_ZERO_REFINE_STEPS = 2
_SSP_ZERO_REFINE_EXTRA = 2
_SSP_ESTIMATE = True
#: The compiled repair's candidates at the sample levels of a cold start, from
#: ``_SSP_WIDE_MIN_EXPERTS`` experts: every expert up to ``_SSP_FULL_PAIRS`` pairs, at
#: least ``_SSP_WIDE`` up to ``_SSP_WIDE_PAIRS``. With ``max(k) + margin + 1``
#: candidates, prices that move at a small level by more than the spread of a client's
#: candidates (harness scores: 0.001 between a client's first and ninth at the
#: 2,500-client level, prices moving 0.02) leave most clients to be re-chosen off their
#: candidates and the load moved back. Measured cold, tuning seeds 11-13, ratio to
#: greedy in CPU time (``python -m benchmarks.tune_constants``; its docstring has the
#: command): at 10,000 x 256 clustered 7.8-9.2x -> 4.0-6.3x (its 625-client level
#: re-chose 603-624 of 625 clients in each of 12 rounds, 1.0-1.4 s, then handed over to
#: OR-Tools; with every expert, one round of 136-245 paths), harness seed 12 11.9x ->
#: 7.3x (1,695 of 2,500 re-chosen at the second level), the other families within
#: +-0.3x; 64 candidates at the second level were slower than 32. At 5,000 x 512
#: (seed 11) clustered 45x -> 25x, harness 41x -> 18x, benchmark and uniform 8.8 /
#: 9.8x -> 10.1 / 12.0x. With fewer experts it costs more than it saves (geometric
#: mean over four families, seeds 11-12: 10,000 x 64 4.2x -> 5.4x, 10,000 x 128 3.8x
#: -> 4.2x), hence the threshold.
_SSP_FULL_PAIRS = 200_000
_SSP_WIDE_PAIRS = 1_000_000
_SSP_WIDE = 32
_SSP_WIDE_MIN_EXPERTS = 256
#: Fall back to ``flow`` once more than this fraction of the clients is open.
_OPEN_MAX = 0.75
#: The OR-Tools engine hands over to the compiled repair (from the prices the level
#: started from) when a round re-opens more than this share of the clients. Measured at
#: 100,000 x 64, clustered scores with 20 % new clients from a fresh draw (seed 0, cold, CPU): the
#: 25,000-client level re-opened 3,579 then 8,359 clients (6 rounds, 1.35 s) and the top
#: level 15,769 (2.1 s); the compiled repair solves the same levels in 0.11 and 0.59 s.
#: Cold starts of the other families re-open 0-0.6 %.
_SWITCH_REOPENED = 0.05
#: Largest |price| in integer cost units (costs plus prices stay below 2**51).
_PRICE_LIMIT = 2**49


class _StalePrices(Exception):
    """Handed-over prices put so much load outside the bounds that a cold start wins."""

    def __init__(self, share: float) -> None:
        super().__init__(share)
        self.share = share


def _refine_steps(
    data: _Data, idx: np.ndarray, val: np.ndarray, p: np.ndarray, steps: int
) -> np.ndarray:
    """Price change from ``steps`` refinement steps on the candidates ``idx, val``."""
    return refine_prices(
        idx,
        val,
        data.cap,
        data.kmin,
        data.lo,
        data.hi,
        p,
        steps=steps,
        damping=_REFINE_DAMPING,
        compiled=data.compiled,
    )


def _rms(delta: np.ndarray, data: _Data) -> float:
    """Root mean square of a price change, in fitness units."""
    return math.ldexp(float(np.sqrt(np.mean(delta.astype(np.float64) ** 2))), -data.scale_exp)


def _refine(
    data: _Data, p: np.ndarray, top_idx: np.ndarray, top_val: np.ndarray, stats: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Refined prices, the candidates re-sorted at them, and an upper bound on every
    client's u outside its candidates (``None`` when every expert is a candidate)."""
    delta = _refine_steps(data, top_idx, top_val, p, _REFINE_STEPS)
    stats["refined_price_change"] = _rms(delta, data)
    bound_out = None
    if top_val.shape[1] < data.e:  # other experts: at most the last candidate + the largest rise
        last = top_val[:, -1]
        bound_out = np.where(last > _NEG // 2, last + float(max(int(delta.max()), 0)), _NEG)
    u = np.where(top_val > _NEG // 2, top_val + delta[top_idx].astype(np.float64), _NEG)
    order = np.argsort(-u, axis=1, kind="stable")
    return (
        p + delta,
        np.take_along_axis(top_idx, order, axis=1),
        np.take_along_axis(u, order, axis=1),
        bound_out,
    )


@dataclass
class _Solved:
    """A certified optimum of a ``_Data``: integer prices and the chosen pairs."""

    prices: np.ndarray  # (E,) int64, relative to O
    rows: np.ndarray  # chosen pairs: data-local client rows ...
    experts: np.ndarray  # ... and their experts


def _solve_data(
    data: _Data,
    p0: np.ndarray | None,
    margin: int,
    max_rounds: int,
    stats: dict[str, Any],
    stale_above: float | None = None,
    open_factor: float = _OPEN_EXCESS,
    engine: str = "ortools",
    switch: bool = False,
    certify: bool = True,
) -> _Solved:
    """Certified optimum of ``data`` starting from integer prices ``p0`` (refined first),
    or, without prices, from zero prices (with the OR-Tools engine every client open).
    Raises ``_StalePrices`` when ``p0`` puts more than ``stale_above`` of the load
    outside the bounds.

    ``engine="ssp"`` repairs the price-induced choice with the compiled kernel
    (:mod:`.warm_ssp`); if that cannot finish, the OR-Tools engine takes over
    (``stats["engine_fallback"]``). The OR-Tools engine hands over to the compiled one
    when a round re-opens more than ``_SWITCH_REOPENED`` of the clients and ``switch``
    allows it (``stats["engine_switch"]``; once per solve). ``certify=False`` (a sample
    level, whose prices only start the next level) lets the compiled repair stop at the
    optimum over its candidate arcs, unchecked; the OR-Tools engine always certifies.
    """
    n, e = data.n, data.e
    kmax = int(data.cap.max(initial=0))
    m = min(e, kmax + margin)
    m1 = min(e, m + 1)
    if engine == "ssp" and data.rows is not None and e >= _SSP_WIDE_MIN_EXPERTS:
        if n * e <= _SSP_FULL_PAIRS:
            m1 = e
        elif n * e <= _SSP_WIDE_PAIRS:
            m1 = min(e, max(m1, _SSP_WIDE))
    p = np.zeros(e, dtype=np.int64) if p0 is None else p0.astype(np.int64).copy()
    # condition 2 fixes a price's sign where a bound cannot bind: start there
    p[data.hi >= n] = np.maximum(p[data.hi >= n], 0)
    p[data.lo == 0] = np.minimum(p[data.lo == 0], 0)
    steps, extra = (
        (_SSP_ZERO_REFINE_STEPS, _SSP_ZERO_REFINE_EXTRA)
        if engine == "ssp"
        else (_ZERO_REFINE_STEPS, _ZERO_REFINE_EXTRA)
    )
    if p0 is None and engine == "ssp" and _SSP_ESTIMATE:
        # no prices: ``flow``'s cold estimate on full rows (these problems are small)
        guess = _estimate(data)
        if guess is not None:
            p = guess
    elif p0 is None and m1 < e and steps:
        # no prices: a rough guess from refinement on wider candidates picks better
        # candidate arcs (fewer rounds of added arcs or fresh candidates)
        wide_idx, wide_val = _top(data, p, None, min(e, m1 + extra))
        p = p + _refine_steps(data, wide_idx, wide_val, p, steps)
        del wide_idx, wide_val
    # every expert a candidate, no prices to start from: the compiled repair needs no
    # order (the sort was 10-14 ms of a 625 x 256 level); OR-Tools sorts if it takes over
    in_order = not (engine == "ssp" and m1 >= e and p0 is None)
    top_idx, top_val = _top(data, p, None, m1, sort=in_order)
    bound_out = None
    frac = 1.0
    if p0 is not None:
        h0, _ = _choose(top_val, data.cap, data.kmin)
        share = _excess_share(data, top_idx, h0)
        stats["initial_excess"] = share
        if stale_above is not None and share > stale_above:
            raise _StalePrices(share)
        frac = min(max(open_factor * share, _OPEN_MIN), _OPEN_FIRST)
    if engine == "ssp":
        start = p
        if p0 is not None:  # refined prices to start from; the candidates stay as picked
            delta = _refine_steps(data, top_idx, top_val, p, _REFINE_STEPS)
            stats["refined_price_change"] = _rms(delta, data)
            start = p + delta
        try:
            prices, cand, held = _warm_ssp.solve_candidates(
                data,
                top_idx,
                top_val,
                p,
                start,
                max_rounds=max_rounds,
                max_paths=max(_SSP_MIN_PATHS, int(_SSP_PATHS_PER_CLIENT * n)),
                stats=stats,
                certify=certify,
            )
        except _warm_ssp._EngineFailed as exc:
            stats["engine_fallback"] = str(exc)
        else:
            stats["engine"] = "ssp"
            stats["rounds"] = len(stats["paths"])
            if certify:
                stats["certificate"] = _CERTIFICATE
            held_rows, held_slots = np.nonzero(held)
            return _Solved(prices, held_rows, cand[held_rows, held_slots])
    stats["engine"] = "ortools"
    if not in_order:
        order = np.argsort(-top_val, axis=1, kind="stable")
        top_idx = np.take_along_axis(top_idx, order, axis=1)
        top_val = np.take_along_axis(top_val, order, axis=1)
    if p0 is not None:
        p, top_idx, top_val, bound_out = _refine(data, p, top_idx, top_val, stats)
    h, slack = _choose(top_val, data.cap, data.kmin)
    if bound_out is not None:
        low = np.where(h > 0, top_val[np.arange(n), np.maximum(h - 1, 0)], _BIG)
        slack = np.minimum(slack, _slack(low, bound_out, h, data.cap, data.kmin))
    st = _State(
        data=data,
        p=p,
        top_idx=top_idx,
        h=h,
        slack=slack,
        is_open=np.zeros(n, dtype=bool),
        m=m,
        margin=margin,
        outside=np.full(n, float(_NEG)),
    )
    if p0 is not None:
        stats["refined_excess"] = _excess_share(data, top_idx, h)
    k_open = max(1, math.ceil(frac * n))
    if k_open >= n:
        first = np.arange(n)
    else:
        first = np.argpartition(slack, k_open - 1)[:k_open]
    first = np.sort(first)
    st.open_rows(first, (top_idx[first], top_val[first]))  # same prices: no second pass
    if bound_out is not None:
        st.outside[first] = np.maximum(st.outside[first], bound_out[first])
    del top_val
    if k_open >= n and m < e:
        _expert_candidates(st, int(data.lo.max(initial=0)) + margin)
    for rnd in range(1, max_rounds + 1):
        stats["rounds"] = rnd
        if frac < 1 and int(st.is_open.sum()) > max(_OPEN_MAX * n, 64):
            raise _Fallback(f"open set grew past {_OPEN_MAX:.0%} of the clients")
        fload = st.frozen_load()
        over = np.flatnonzero(fload > data.hi)
        if over.size:  # frozen clients alone overload an expert: open its holders
            _open_holders(st, over, fload - data.hi)
            continue
        sub = _solve_open(st, fload)
        loads = fload + np.bincount(sub.ae[sub.flow > 0], minlength=e)
        if sub.art_client.any():  # give these clients every arc, or their experts room
            _widen(st, sub.rows[sub.art_client > 0], loads)
            continue
        if sub.art_expert.any():  # more clients must come to these experts
            _open_takers(st, np.flatnonzero(sub.art_expert), sub.art_expert)
            continue
        dist = _potentials(st, sub, loads)
        new_p = dist[:e] - dist[e]
        delta = new_p - st.p
        up = int(delta.max())
        st.p = new_p
        # frozen clients: proven while their slack exceeds how far the prices moved
        # for them: any expert's rise (an unheld one may overtake) plus the largest
        # fall among the experts they hold
        frozen = np.flatnonzero(~st.is_open)
        st.slack[frozen] -= max(up, 0) - _held_min(st, frozen, delta)
        fails = _recheck_frozen(st, frozen[st.slack[frozen] < 0])
        # open clients: pruned arcs below the lowest u a client must keep
        held = sub.flow > 0
        r = sub.rows.size
        u_arc = sub.cost + st.p[sub.ae]
        low = np.full(r, _BIG, dtype=np.int64)
        np.minimum.at(low, sub.ac[held], u_arc[held])
        used = np.bincount(sub.ac[held], minlength=r)
        tau = np.where(used < data.cap[sub.rows], np.minimum(low, 0), low)
        st.outside[sub.rows] += up
        out = st.outside[sub.rows]
        st.outside[sub.rows] = np.where(out <= _NEG // 2, _NEG, out)
        check = np.flatnonzero(st.outside[sub.rows] > tau)
        added = _recheck_open(st, sub, check, tau[check]) if check.size else 0
        if fails.size == 0 and added == 0:
            stats["certificate"] = _CERTIFICATE
            stats["open_clients"] = int(sub.rows.size)
            stats["open_arcs"] = int(sub.ac.size)
            stats["rechecked_rows"] = st.rechecked
            rows, experts = _pairs(st, sub)
            return _Solved(dist[:e] - dist[e], rows, experts)
        stats.setdefault("reopened", []).append(int(fails.size))
        stats.setdefault("added_arcs", []).append(added)
        wide = fails.size > _SWITCH_REOPENED * n
        if wide and switch and data.compiled and _warm_ssp.available():
            # the prices moved far from where they started: every frozen client may be
            # next, and the open set would grow round by round; the compiled repair
            # starts again from the same prices (its cost grows with the paths, not
            # with the clients; from this round's prices it took many more paths)
            stats["engine_switch"] = (
                f"round {rnd} re-opened {fails.size} clients ({fails.size / n:.0%}): "
                "the compiled repair instead"
            )
            return _solve_data(data, p0, margin, max_rounds, stats, engine="ssp", switch=False)
        st.open_rows(fails)
    raise _Fallback(f"no certificate after {max_rounds} rounds")


def _estimate(data: _Data) -> np.ndarray | None:
    """Integer prices from ``flow``'s cold estimate (two rounds of simultaneous moves on
    full rows, :func:`.prices.estimate_prices`), or ``None`` when prices cannot matter."""
    rows = data.full()
    free = None
    if data.allowed is not None or data.fixed is not None:
        free = np.ones((data.n, data.e), dtype=bool)
        if data.allowed is not None:
            free &= data.allowed[rows]
        if data.fixed is not None:
            free &= ~data.fixed[rows]
    fit = data.fitness if data.rows is None else data.fitness[rows]
    est = estimate_prices(fit, data.cap, data.lo, data.hi, free=free)
    return None if est is None else _integer_prices(est[0], data)


def _integer_prices(prices: np.ndarray, data: _Data) -> np.ndarray:
    """Prices in fitness units as integer cost units of ``data`` (bounded so that every
    cost plus price stays exact in float64)."""
    scaled = np.rint(np.ldexp(prices, data.scale_exp))
    return np.clip(scaled, -_PRICE_LIMIT, _PRICE_LIMIT).astype(np.int64)


def _pairs(st: _State, sub: _Sub) -> tuple[np.ndarray, np.ndarray]:
    """The OR-Tools engine's chosen pairs: frozen clients' prefixes and the open flow."""
    frozen = ~st.is_open
    rows, experts = [], []
    for t in range(int(st.h.max(initial=0))):
        r = np.flatnonzero(frozen & (st.h > t))
        rows.append(r)
        experts.append(st.top_idx[r, t].astype(np.int64))
    held = sub.flow > 0
    rows.append(sub.rows[sub.ac[held]])
    experts.append(sub.ae[held].astype(np.int64))
    return np.concatenate(rows), np.concatenate(experts)
