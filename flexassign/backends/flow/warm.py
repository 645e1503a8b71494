r"""Warm-started exact min-cost flow for count-based problems (``method="flow-warm"``).

The count-based problem (equal client weights, no binding knapsack, hard load bounds)
is a min-cost flow whose optimal duals are one *price* :math:`p_e` per expert (relative
to the merged source/sink node ``O``). Given prices, every client's best choice is
local: with :math:`u_{ce} = S_{ce} + p_e` (in integer cost units, see below) it takes
its :math:`k^{\min}_c` best experts by :math:`u` and any further ones, up to
:math:`k_c`, with :math:`u_{ce} > 0`. An assignment :math:`x` is optimal if and only if
some prices satisfy

1. every client ``c`` holding the set :math:`X_c`: :math:`\min_{e \in X_c} u_{ce} \ge
   \max_{e \notin X_c} u_{ce}` (over its free experts); if :math:`|X_c| < k_c` then
   no unheld expert has :math:`u_{ce} > 0`; if :math:`|X_c| > k^{\min}_c` then no held
   expert has :math:`u_{ce} < 0`;
2. every expert ``e`` with load :math:`\ell_e`: :math:`p_e \ge 0` if :math:`\ell_e < U_e`
   and :math:`p_e \le 0` if :math:`\ell_e > L_e`;

(complementary slackness; these are the reduced costs of the flow network in
:mod:`flexassign.backends.flow.cold`, with the client nodes eliminated), plus primal
feasibility. Because :math:`E \ll N`, prices are cheap to carry and most clients'
choices are settled by them.

Algorithm
---------
1. Start from prices: ``options["prices"]`` (e.g. the previous round's
   ``stats["expert_prices"]``), or, cold, from the same solver run on a random quarter
   of the clients (recursively, down to about 1,000 clients with the compiled engine or
   ``max(8 E, 4096)`` with the OR-Tools one, with load bounds scaled to the sample;
   each level starts from the prices of the one below, the smallest is solved by
   ``flow``; with ``engine="auto"`` a level of at most 200 clients per expert takes
   the compiled engine even when the top level takes OR-Tools). Handed-over prices
   that put more than 10 % of the load outside the bounds (2.5 % with the OR-Tools
   engine, whose open set grows with it; prices of a different problem, of a round
   long ago, or of a population that changed) are dropped for this cold start
   (``stats["stale_prices"]``). A price is added to fitness (the convention of
   ``flow``'s ``expert_prices``: a bonus for an expert that needs clients, negative for
   one that has too many). Without prices (small problems) a few refinement steps from
   zero give a rough guess.
2. One block-wise pass over the fitness matrix (compiled when numba is installed):
   each client's top ``k_max + margin + 1`` experts by :math:`u` (its *candidates*;
   the last one bounds the :math:`u` of every other expert). With prices, three damped
   tâtonnement steps on the candidates alone refine them (:mod:`.prices`: each
   expert moves its price by the quantile of its holders' exit margins, or its
   candidates' entry margins, that would put its load back inside its bounds).
3. An *engine* turns the price-induced choice into a certified optimum
   (``options["engine"]``, ``stats["engine"]``):

   ``"ssp"`` (compiled, numba; :mod:`.warm_ssp`, :mod:`.ssp_kernel`)
       Successive shortest paths on the residual graph compressed onto the
       :math:`E + 1` expert and ``O`` nodes: each arc is the cheapest client swap,
       drop or take between two nodes, kept up to date as clients move, and Dijkstra
       on the dense matrix moves the load the prices left outside the bounds, one
       unit per path, keeping the potentials (the prices) dual feasible. Experts
       that the starting choice leaves short, and any that no candidate arc can
       reach, get their cheapest takers as extra arcs (else a path through few
       candidates raises such an expert's price past the optimum's). Then
       NumPy re-checks complementary slackness on every candidate and expert, and
       off the candidates by the bound of step 2 plus the largest price rise, with
       an exact full-row re-check where that bound is not enough (the takers and
       that re-check are compiled passes too on unmasked problems); clients that fail
       get fresh candidates at the new prices and the repair goes on. The cost
       grows with the load to move (about 110 paths at 10,000 x 256 from the
       previous round's prices) and, per path, with :math:`E^2` and the clients per
       expert, so ``"auto"`` takes it up to 2,000 clients per expert (500 from
       handed-over prices, which may leave more load to move).
   ``"ortools"``
       Clients with small *slack* (how far the prices may move before their choice
       can change) are *open* (the smallest slacks, 5 times the share of load the
       prices left outside the bounds before refinement, 7 times for a sample's
       prices while experts have fewer than 1,000 clients each, 2-60 % of the
       clients; with no prices: everyone, plus each expert's best clients as arcs);
       the others are *frozen* at their choice. The open clients, restricted to
       their own capacity plus ``margin`` best candidates, are solved exactly with
       OR-Tools ``SimpleMinCostFlow`` against the load bounds left by the frozen
       clients (artificial arcs of large cost keep that network feasible; if they
       carry flow, clients that can move to or from those experts are opened). New
       prices are the greatest potentials below the old ones in the open clients'
       compressed residual graph (Bellman-Ford on a dense matrix). Certificate: a
       frozen client whose slack exceeds the spread of the price change provably
       keeps its choice; the few others are re-checked exactly on their full row,
       as are open clients' pruned arcs. Failures reopen clients or add arcs, and
       the round repeats. (Re-freezing everyone at the new prices and drawing a
       small open set around the failures instead was tried: with refined prices it
       cost more rounds, e.g. 6 rounds and 133 ms against 2 rounds and 92 ms at
       10,000 x 256, tuning seed 8. So was freezing only the open clients whose
       slack exceeds 2-8 times the last price change over their own candidates: 3
       rounds and 105-112 ms on the same instance.)

   If the compiled repair cannot finish (its path budget spent, no path even with
   takers, or its answer failing the NumPy checks) the OR-Tools engine takes over
   (``stats["engine_fallback"]``).

When every check passes, the prices prove the assignment optimal for the full problem.
If the OR-Tools engine's open set grows past 75 % of the clients, a frozen client's
load cannot be placed, or no certificate comes within ``max_rounds``, the ``flow``
backend solves the problem instead, through the registry (``stats["fallback"]`` says
why). Memory stays lean: no :math:`N \times E` integer or float temporaries (blocks of
at most 2**21 entries), only the boolean answer and the per-client top candidates.

Code: this module is the driver (prices, engines, fallback, the answer);
:mod:`.warm_data` holds the problem in integer cost units and the passes over the
fitness matrix, :mod:`.warm_ssp` and :mod:`.ssp_kernel` the compiled engine,
:mod:`.warm_network` the OR-Tools engine (open set, exact solve, checks),
:mod:`.warm_levels` the cold start's sample levels, :mod:`.prices` the refinement.

Costs are integers: fitness times a power of two (as in ``flow``), so the result is
exact for integral fitness and otherwise within ``stats["rounding_error_bound"]``.

Options
-------
``prices``
    :math:`E` finite expert prices in fitness units (``stats["expert_prices"]`` of an
    earlier solve, from ``flow`` or ``flow-warm``); a wrong or stale guess costs time,
    never correctness.
``prune_margin``
    Extra candidate experts per client beyond its capacity (default 4, >= 1).
``max_rounds``
    Certificate rounds before falling back to ``flow`` (default 12, >= 1).
``engine``
    ``"auto"`` (default: ``"ssp"`` up to 2,000 clients per expert, 500 from handed-over
    prices, when numba is installed, else ``"ortools"``), ``"ssp"`` or ``"ortools"``.

Stats
-----
``expert_prices`` (the certified prices: pass them back next round), ``engine``,
``engine_fallback`` (why the compiled repair handed over), ``rounds``,
``rechecked_rows``; the compiled engine: ``paths`` (augmenting paths per round),
``start_excess`` (units of load its first round had to move), ``recandidated`` (per
round, clients given fresh candidates), ``added_takers``; the OR-Tools engine:
``open_clients``, ``open_arcs``, ``reopened`` and ``added_arcs`` (per failed round),
``refined_excess``; both: ``price_source`` (``"options"``, ``"sample"`` or ``"zero"``),
``levels`` (sample sizes solved, cold start), ``initial_excess`` (share of the load
outside the bounds at the starting prices; ``refined_excess`` the same after the
refinement), ``refined_price_change`` (rms, fitness units), ``stale_prices``
(handed-over prices dropped, and why), ``price_time``,
``certificate``, ``solver_status``, ``rounding_error_bound``, ``objective_scale`` and
``objective_scale_exponent`` (costs are fitness times ``2**exponent``), ``build_time``,
``solve_time``; when ``flow`` took over, its own stats plus ``fallback`` and
``warm_stats``.

Examples
--------
>>> import numpy as np
>>> from flexassign import AssignmentProblem, solve_assignment
>>> rng = np.random.default_rng(0)
>>> p = AssignmentProblem.balanced(rng.random((300, 6)), capacity=2, tolerance=0.1)
>>> cold = solve_assignment(p, method="flow-warm")
>>> warm = solve_assignment(p, method="flow-warm",
...                         options={"prices": cold.stats["expert_prices"]})
>>> full = solve_assignment(p, method="flow", options={"prune": False})
>>> cold.status.value, abs(warm.objective - full.objective) < 1e-9
('optimal', True)
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ...errors import InvalidProblemError
from ...problem import AssignmentProblem
from ...result import Status
from ..base import BackendOutput, SolveOptions
from ..options import WARM_ENGINES
from . import warm_levels as _levels
from . import warm_ssp as _warm_ssp
from .ties import solve_tie_broken
from .warm_data import _Data, _Fallback, _prepare
from .warm_solve import _integer_prices, _solve_data, _Solved, _StalePrices

__all__ = ["ENGINES", "solve"]

#: ``options["engine"]`` (declared with the other options; ``"auto"``: see :func:`_engine`).
ENGINES = WARM_ENGINES
#: ``engine="auto"`` takes the compiled repair up to this many clients per expert.
#: Measured cold (``python -m benchmarks.tune_constants --load-kernels``, CPU time,
#: ratio to greedy, tuning seeds; after the vectorized Dijkstra): 100,000 x 64 (1,563
#: per expert), seeds 11-12, six families: OR-Tools geometric mean 1.91x, worst 3.30x
#: (harness), compiled 1.78x, worst 2.55x; 100,000 x 32 (3,125 per expert), seed 11,
#: four families: 3.22x / 3.30x, worst 3.51x / 4.22x; 200,000 x 64 (3,125): 1.66x /
#: 3.49x, worst 1.93x / 5.68x (a path's row updates visit an expert's holders).
_SSP_MAX_PER_EXPERT = 2000
#: The same from handed-over prices (``options["prices"]``): they may leave far more
#: load to move than a cold start's sample levels, one path per unit. Measured with the
#: rule above for every start (``python -m benchmarks --speed --families all``, seed 0,
#: 100,000 x 64, ratio to greedy against the OR-Tools engine's run before): the
#: benchmark family after a population shift 11.2x (3.1 s) against 2.2x; next rounds
#: of the same population 1.4-1.8x against 1.0-1.4x.
_SSP_MAX_PER_EXPERT_WARM = 500
#: What the compiled candidate pass and price refinement save the OR-Tools engine per
#: client-expert pair (measured cold at 100,000 x 64, seed 11, CPU time, kernels loaded
#: against not: benchmark family 4.26x -> 3.02x greedy, low rank 3.90x -> 2.84x, about
#: 0.3 s of 6.4 M pairs; harness scores 5.0x / 5.2x, no gain): with it a process that
#: solves such problems repeatedly loads the kernels after about three solves.
_PASSES_SAVING_PER_PAIR_S = 4.0e-8
#: Handed-over prices that leave more than this share of the load outside the bounds
#: are dropped for a cold start (measured: prices from a different problem left 85-131 %
#: outside and cost 0.9-2.1 s through two rounds and the fallback to ``flow``, against
#: 0.11-0.25 s cold, at 20,000 x 64 and 10,000 x 256; at 20,000 x 128 with fitness drift
#: 0.1-0.3 since the prices' round they left 10-14 % and the warm solve took 162-271 ms
#: against 144-175 ms cold, with drift 0.03 7 % and 117 against 154 ms; a previous
#: round's prices at the benchmark's drift 0.01 leave about 1-4 %).
_STALE_EXCESS = 0.1
#: The same for the OR-Tools engine, whose open set grows with the load out of place.
#: Measured at 100,000 x 64 (CPU time; round-1 prices of ``family_rounds``' benchmark
#: family, seed 11, on round 2 = round 1 plus fitness drift): 1.1 % outside, warm 0.51 s
#: against 0.58 s cold; 6.2 %, 1.15 against 0.68 s; 11 %, 3.9 against 0.62 s. With 20 %
#: new clients from a fresh draw (seeds 0 and 11), 4.6-8.3 % outside opened 35-46 % of
#: the clients: 5.2-7.0 s against 0.6-1.2 s cold. Round 2 of the same population
#: leaves 0-0.5 %.
_STALE_EXCESS_ORTOOLS = 0.025
def _options(problem: AssignmentProblem, extra: Any) -> tuple[int, int, np.ndarray | None, str]:
    """``prune_margin``, ``max_rounds``, ``prices`` and ``engine`` (checked and
    defaulted by :func:`~flexassign.backends.options.validate_options` before any
    backend runs)."""
    margin = int(extra.get("prune_margin", 4))
    rounds = int(extra.get("max_rounds", 12))
    if margin < 1 or rounds < 1:  # only reachable when solve() is called directly
        raise InvalidProblemError(
            "`options['prune_margin']` and `options['max_rounds']` must be >= 1"
        )
    prices = extra.get("prices")
    if prices is not None:
        prices = np.asarray(prices, dtype=np.float64)
        if prices.shape != (problem.n_experts,) or not np.isfinite(prices).all():
            raise InvalidProblemError(
                f"`options['prices']` must be {problem.n_experts} finite expert prices"
            )
    engine = extra.get("engine", "auto")
    if engine not in ENGINES:
        raise InvalidProblemError(f"`options['engine']` must be one of {ENGINES}; got {engine!r}")
    return margin, rounds, prices, engine


def _engine(requested: str, data: _Data, *, warm: bool) -> str:
    """The engine for ``data``: ``"auto"`` takes the compiled repair while experts have
    at most ``_SSP_MAX_PER_EXPERT`` clients each (``_SSP_MAX_PER_EXPERT_WARM`` from
    handed-over prices, ``warm``; above, a path's row updates cost more than the OR-Tools
    engine's solve), numba is installed and the kernels pay for their load or compile in
    this process (:func:`.kernel_state.pays_off`: a one-shot solve takes OR-Tools rather
    than spend seconds loading them)."""
    if requested == "ssp" and not _warm_ssp.available():
        raise InvalidProblemError(
            "`options['engine']='ssp'` needs numba: "
            'pip install -e ".[compiled]" -c constraints.txt (from a clone)'
        )
    if requested != "auto":
        return requested
    few = data.n <= (_SSP_MAX_PER_EXPERT_WARM if warm else _SSP_MAX_PER_EXPERT) * data.e
    if not (few and _warm_ssp.available()):
        return "ortools"
    from .kernel_state import pays_off

    return "ssp" if pays_off(data.n, data.e) else "ortools"


def _passes_pay(data: _Data) -> bool:
    """Whether the OR-Tools engine takes the compiled candidate pass and price
    refinement: :func:`.kernel_state.pays_off` at ``_PASSES_SAVING_PER_PAIR_S`` (always
    when the kernels are loaded, never without numba, else once the savings forgone
    without them reach their load cost in this process)."""
    from .kernel_state import pays_off

    return pays_off(data.n, data.e, saving_per_pair=_PASSES_SAVING_PER_PAIR_S)


def _assemble(problem: AssignmentProblem, solved: _Solved) -> tuple[np.ndarray, float]:
    """The assignment and its objective (summed over the chosen pairs only)."""
    n, e = problem.shape
    fit = problem.fitness
    x = np.zeros((n, e), dtype=bool) if problem.fixed is None else problem.fixed.copy()
    value = 0.0 if problem.fixed is None else float(fit[problem.fixed].sum())
    x[solved.rows, solved.experts] = True
    value += float(fit[solved.rows, solved.experts].sum())
    return x, value


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    """Solve ``problem``; quantized fitness is tie-broken first (:mod:`.ties`)."""
    return solve_tie_broken(problem, options, _solve)


def _solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    t0 = time.perf_counter()
    margin, max_rounds, prices, engine = _options(problem, options.extra)
    stats: dict[str, Any] = {}
    try:
        data, _, exact, total = _prepare(problem)
        if int(data.cap.max(initial=0)) == 0:
            raise _Fallback("no client has a free slot")
        requested = engine
        engine = _engine(engine, data, warm=prices is not None)
        data.compiled = engine == "ssp" or _passes_pay(data)
        # the OR-Tools engine may hand over to the compiled one (warm_solve's
        # _SWITCH_REOPENED) only when the caller left the engine to us
        switch = requested == "auto"
        stats["objective_scale"] = math.ldexp(1.0, min(data.scale_exp, 1023))
        stats["objective_scale_exponent"] = data.scale_exp
        t1 = time.perf_counter()
        levels: list[int] = []
        solved = None
        kept = dict(stats)  # what a cold restart keeps
        if prices is not None:
            p0: np.ndarray | None = _integer_prices(prices, data)
            stats["price_source"] = "options"
            stats["price_time"] = time.perf_counter() - t1
            stats["build_time"] = time.perf_counter() - t0
            try:
                limit = _STALE_EXCESS if engine == "ssp" else _STALE_EXCESS_ORTOOLS
                solved = _solve_data(
                    data, p0, margin, max_rounds, stats, limit, engine=engine, switch=switch
                )
            except _StalePrices as stale:  # worse than none: start cold instead
                stats.clear()
                stats.update(kept)
                stats["stale_prices"] = f"{stale.share:.0%} of the load outside the bounds"
                # the rule for handed-over prices kept the compiled repair out: a cold
                # start takes the cold rule
                if requested == "auto" and data.n > _SSP_MAX_PER_EXPERT_WARM * data.e:
                    engine = _engine(requested, data, warm=False)
                    data.compiled = engine == "ssp" or data.compiled
                t1 = time.perf_counter()
        if solved is None:
            rng = np.random.default_rng(options.seed)
            levels_ssp = _levels._SSP_LEVELS and requested == "auto" and engine == "ortools"
            levels_ssp = levels_ssp and data.compiled and _warm_ssp.available()
            p0 = _levels._cold_prices(data, margin, max_rounds, rng, levels, engine, levels_ssp)
            stats["price_source"] = "sample" if p0 is not None else "zero"
            stats["levels"] = levels
            stats["price_time"] = time.perf_counter() - t1
            stats["build_time"] = time.perf_counter() - t0
            solved = _solve_data(
                data,
                p0,
                margin,
                max_rounds,
                stats,
                open_factor=_levels._sample_factor(data),
                engine=engine,
                switch=switch,
            )
    except _Fallback as exc:
        from ..registry import get_backend  # the reference solver, through the registry

        out = get_backend("flow").load()(problem, options)
        out.stats["fallback"] = f"flow-warm: {exc}; solved by flow"
        out.stats["warm_stats"] = {k: v for k, v in stats.items() if k != "expert_prices"}
        return out
    x, value = _assemble(problem, solved)
    stats.update(
        solver_status="optimal",
        expert_prices=np.ldexp(solved.prices.astype(np.float64), -data.scale_exp),
        solve_time=time.perf_counter() - t0 - stats["build_time"],
    )
    # each unit carries at most half a cost step of rounding, in ours and in the optimum
    err = 0.0 if exact else math.ldexp(2.0 * float(total), -data.scale_exp)
    stats["rounding_error_bound"] = err
    return BackendOutput(Status.OPTIMAL, x=x, bound=value + err, stats=stats)
