"""Cold-start prices for ``flow-warm``: nested random samples of the clients.

Without handed-over prices, :func:`_cold_prices` solves a random quarter of the
clients first (recursively, down to about 1,000 clients with the compiled engine or
``max(8 E, 4096)`` with the OR-Tools one), with the load bounds scaled to the sample;
each level starts from the prices of the one below, and the top level
(:mod:`.warm`) from the prices of the last. A level's prices are only a hint: the
compiled repair stops a level at the optimum over its candidate arcs, and an unlucky
sample that cannot be solved hands on the prices it started from.
"""

from __future__ import annotations

import numpy as np

from ...errors import InvalidProblemError
from ...problem import AssignmentProblem
from ...result import Status
from ..base import SolveOptions
from .warm_data import _Data, _Fallback, _sample
from .warm_solve import _OPEN_EXCESS, _integer_prices, _solve_data

__all__: list[str] = []

#: The OR-Tools engine's first open set (``warm_solve._OPEN_EXCESS`` times the share of
#: load out of place) for prices from a sample level while experts have fewer than
#: ``_SAMPLE_FEW_PER_EXPERT`` clients each: a small sample's prices miss in more places
#: (measured cold, tuning seeds: 10,000 x 256, seeds 1-6, 7 times gives 5.9x greedy in
#: two rounds, 5 times 6.4x in two to three, 9-12 times 6.1-6.2x; 100,000 x 256 2.32x
#: against 2.47x; but 100,000 x 64, 1,560 clients per expert, 3.09x against 2.84x).
_OPEN_EXCESS_SAMPLE = 7.0
_SAMPLE_FEW_PER_EXPERT = 1000
#: Cold start: solve a random quarter of the clients first while above this many.
_SAMPLE_MIN_PER_EXPERT = 8
_SAMPLE_MIN = 4096
#: The same for the compiled repair, whose levels are cheap: down to 1,000 clients
#: (measured cold at 10,000 x 256, tuning seeds 11-13, ratio to greedy: levels 625
#: (by ``flow``) and 2,500 gave 2.56-2.72x, one level of 2,500 2.80-3.10x, three
#: levels down to 156 2.91x, no sample 9.1x, the smallest level by the repair from
#: two refinement steps instead of ``flow`` 3.66x).
_SSP_SAMPLE_MIN_PER_EXPERT = 1
_SSP_SAMPLE_MIN = 1000
#: The smallest sample level is solved by ``flow`` (measured on 2,500 x 256 samples of
#: 10,000 x 256 round-2 instances, tuning seeds 1-3: 44-61 ms CPU against 86-131 ms
#: for everyone open here). The compiled repair solves its smallest level itself,
#: from ``flow``'s cold estimate (tuning seeds 11-14 at 10,000 x 256: 2.91x greedy
#: against 3.02x with ``flow``; with a third level down to 156 clients 3.47x).
_FLOW_SAMPLE = True
_SSP_FLOW_SAMPLE = False
#: Sample levels with at most ``_SSP_LEVEL_MAX_PER_EXPERT`` clients per expert take
#: the compiled repair when ``auto`` gives the top level to OR-Tools (and the compiled
#: passes are loaded). Measured cold at 100,000 x 64 (tuning seed 11, CPU, kernels
#: loaded): the 6,250-client level (98 per expert) 46-112 ms with OR-Tools against
#: 38-50 ms compiled on the benchmark, low-rank and harness families; the 25,000-client
#: level (390 per expert) 124-174 against 161-276 ms.
_SSP_LEVELS = True
_SSP_LEVEL_MAX_PER_EXPERT = 200
#: The compiled repair stops a sample level at the optimum over its candidate arcs,
#: without the checks and fresh-candidate rounds off them: the level's prices only
#: start the next one, whose own certificate covers every client.
_HINT_LEVELS = True


def _sample_factor(data: _Data) -> float:
    """First-round open-set factor for prices that come from a sample level."""
    few = data.n < _SAMPLE_FEW_PER_EXPERT * data.e
    return _OPEN_EXCESS_SAMPLE if few else _OPEN_EXCESS


def _cold_prices(
    data: _Data,
    margin: int,
    max_rounds: int,
    rng: np.random.Generator,
    levels: list[int],
    engine: str,
    levels_ssp: bool = False,
) -> np.ndarray | None:
    """Integer prices from solving nested random samples, smallest first (each level
    starts from the prices of the one below); ``None`` when ``data`` is small enough to
    solve without them. With ``levels_ssp`` the levels few enough per expert for the
    compiled repair take it although ``engine`` (the top level's) is OR-Tools."""
    e = data.e
    per, least = (
        (_SSP_SAMPLE_MIN_PER_EXPERT, _SSP_SAMPLE_MIN)
        if engine == "ssp"
        else (_SAMPLE_MIN_PER_EXPERT, _SAMPLE_MIN)
    )
    if data.n <= max(per * e, least):
        return None
    sub = _sample(data, rng)
    p = _cold_prices(sub, margin, max_rounds, rng, levels, engine, levels_ssp)
    if p is None and _FLOW_SAMPLE and (engine != "ssp" or _SSP_FLOW_SAMPLE):  # the smallest level
        p = _flow_prices(sub)
        if p is not None:
            levels.append(sub.n)
            return p
    try:
        solved = _solve_data(
            sub,
            p,
            margin,
            max_rounds,
            {},
            open_factor=_sample_factor(sub),
            engine=_level_engine(engine, sub, levels_ssp),
            switch=levels_ssp,
            certify=not _HINT_LEVELS,
        )
    except _Fallback:  # an unlucky sample: its prices are only a hint
        return p
    levels.append(sub.n)
    return solved.prices.astype(np.int64)


def _level_engine(engine: str, sub: _Data, levels_ssp: bool) -> str:
    """The engine of a sample level: the top level's, or the compiled repair where
    ``levels_ssp`` allows it and the level has few enough clients per expert."""
    if levels_ssp and sub.n <= _SSP_LEVEL_MAX_PER_EXPERT * sub.e:
        return "ssp"
    return engine


def _flow_prices(data: _Data) -> np.ndarray | None:
    """Integer prices of the row sample ``data`` from solving it with ``flow`` (its cheap
    cold estimate and candidate arcs beat everyone-open here), or ``None`` if that
    fails (e.g. the scaled bounds leave the sample infeasible)."""
    from ..registry import get_backend  # the reference solver, through the registry

    rows = data.full()
    allowed = None if data.allowed is None else data.allowed[rows]
    if data.fixed is not None:  # fixed pairs are accounted for in cap and the bounds
        allowed = ~data.fixed[rows] if allowed is None else allowed & ~data.fixed[rows]
    try:
        sample = AssignmentProblem(
            data.fitness[rows],
            capacity=data.cap,
            min_experts=data.kmin,
            expert_min_load=data.lo,
            expert_max_load=data.hi,
            allowed=allowed,
        )
        # the pruned path: it certifies with expert potentials and reports them
        out = get_backend("flow").load()(sample, SolveOptions(extra={"prune": True}))
    except (InvalidProblemError, ValueError):
        return None
    prices = out.stats.get("expert_prices")
    if out.status is not Status.OPTIMAL or prices is None:
        return None
    return _integer_prices(np.asarray(prices, dtype=np.float64), data)
