r"""Exact min-cost flow backend (OR-Tools ``SimpleMinCostFlow``).

Network, for count-based loads (all client weights equal to :math:`w`)::

    source --[k_c - kmin_c, cost 0]--> client c   (client c also supplies kmin_c)
    client c --[1, cost -S_ce]--> expert e        (allowed, not fixed)
    expert e --[U_e - L_e, cost 0]--> sink        (expert e demands L_e)
    source --[sum(k_c - kmin_c), cost 0]--> sink  (bypass: unused capacity)

Fixed pairs are taken out first (their client's capacity and their expert's bounds
shrink by one). With soft bounds the expert's demand is replaced by a convex
piecewise-linear arc chain to the sink whose slopes are the penalty.

Costs must be integers. Fitness is multiplied by a power of two :math:`2^k`
(``stats["objective_scale_exponent"]``, applied with ``ldexp`` so that tiny scales
such as 1e-300 need no overflowing float), chosen as large as int64 arithmetic allows
(costs of order :math:`2^{60}` divided by the total flow, the node count and
:math:`4(E+2)`), and rounded, so any fitness scale works. When fitness is integral the
scale is 1 and the result is exact; otherwise the optimum can be missed by at most
``stats["rounding_error_bound"]`` (the total flow times one rounding step), which is
reported as the gap between ``objective`` and ``bound``.

``time_limit`` is not supported: a min-cost flow runs to completion (polynomial time);
:func:`~flexassign.solve_assignment` says so in ``message``.

**Pruned path** (from ``_PRUNE_MIN_PAIRS`` = 20,000 client-expert pairs when
``max(k) + prune_margin <= E / 4``; ``options={"prune": "auto" | True | False}``).
Only a few arcs per client can matter, so the flow is first solved on *candidate*
arcs: each client's ``max(k) + prune_margin`` best experts by fitness plus an
expert price. The prices come from ``options["prices"]`` (e.g. the previous round's
``stats["expert_prices"]``: a warm start across rounds); cold, from 1,000,000 pairs,
from solving a random tenth of the clients first, and below that from
:func:`_estimate_prices` (two rounds of simultaneous price moves that put each
expert's load, with every client at its best experts, back inside its bounds;
``stats["price_source"]`` says which). The first candidate network is solved as it
is; if it is infeasible, artificial arcs of large cost are added to keep it feasible
(``stats["artificial_arcs"]``). Optimality for the *full* network is then proved with a
dual certificate: shortest-path potentials of the experts in the candidate residual
graph (clients eliminated, Bellman-Ford on an :math:`(E+1)^2` matrix) must leave every
pruned arc with a non-negative reduced cost, for some choice of client potential.
Pruned arcs that fail are added back and the flow is solved again; if the candidate set
grows past half of all arcs, or the certified optimum still uses an artificial arc, the
full network is solved instead. The answer is always the exact optimum (up to the
cost rounding above); ``stats`` report ``rounds``, ``added_arcs``, ``arcs``,
``price_source`` and ``price_time``.

Code: this module solves (full network, or candidates with the certificate);
:mod:`.network` builds the network and runs OR-Tools; :mod:`.prices` holds the
price estimate.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ...errors import InvalidProblemError
from ...problem import AssignmentProblem
from ...result import Status
from ..base import BackendOutput, SolveOptions
from .network import (
    _Flow,
    _int_costs,
    _Network,
    _prepare,
    _run,
    _to_fitness,
)
from .prices import best_sorted, estimate_prices
from .residual import min_swap_costs
from .ties import solve_tie_broken

__all__ = ["solve"]

#: Problems with at least this many client-expert pairs solve on candidate arcs
#: (``prune="auto"``); measured in docs/benchmarks.md ("Mid-size and small problems").
_PRUNE_MIN_PAIRS = 20_000
#: From this many pairs cold prices come from solving a sample of the clients; below,
#: from :func:`_estimate_prices` (measured: at 10,000 x 64 the estimate gives 88 ms
#: against 136 ms with the sample; at 30,000 x 64 the sample wins, 266 against 490 ms).
_SAMPLE_MIN_PAIRS = 1_000_000
#: Estimated prices: a client whose next experts (up to this many beyond its
#: ``max(k) + prune_margin`` candidates) lie within ``_SPREAD_FACTOR`` times the last
#: price move of its weakest held expert gets them as candidates too. Measured on the
#: k = 1 cell at 1,000 x 64, seeds 0-19: 7 of 20 needed a second round (mean 5.8 ms,
#: worst 8.4) without, none with 2 and 2 (mean 4.9 ms, worst 5.3; about 540 more arcs);
#: factor 1 left 5, factor 3 added 1,200 arcs and 0.1 ms.
_SPREAD_EXTRA = 2
_SPREAD_FACTOR = 2.0


def _client_arcs(net: _Network, x: np.ndarray, flow: _Flow) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest residual arc O -> client (``add``) and client -> O (``drop``) per client.

    ``O`` merges source and sink. Regular: the client may take one more expert (cost 0)
    or give one up (cost 0); artificial: undo (cost ``-big_m``) or use (``+big_m``) an
    artificial unit of its minimum. Missing arcs cost ``2**62``.
    """
    big = np.int64(2) ** 62
    used = x.sum(axis=1) + flow.art_client
    add = np.where(used < net.cap_r, 0, big)
    drop = np.where(used > net.kmin_r, 0, big)
    if net.hard and flow.art_client.any():
        add = np.where(flow.art_client > 0, np.minimum(add, -net.big_m), add)
    if net.hard:
        drop = np.minimum(drop, np.where(flow.art_client < net.kmin_r, net.big_m, big))
    return add.astype(np.int64), drop.astype(np.int64)


def _potentials(
    net: _Network,
    held: tuple[np.ndarray, np.ndarray, np.ndarray],
    open_: tuple[np.ndarray, np.ndarray, np.ndarray],
    flow: _Flow,
    add: np.ndarray,
    drop: np.ndarray,
) -> np.ndarray | None:
    """Node potentials of the experts and of the merged source/sink ``O``.

    Shortest-path distances (from a virtual root joined to every node at cost 0) in the
    residual network of the candidate arcs, with the client nodes eliminated: a
    path expert e -> client c -> expert e' costs ``C[c,e] - C[c,e']`` (c holds e, may
    take e'). ``held`` and ``open_`` are (client, expert, cost) of the candidate pairs
    with flow 1 and 0, sorted by client. Returns ``d`` of length ``E + 1`` (``d[E]``
    is ``O``), or None if the residual graph has a negative cycle.
    """
    n, e = net.n, net.e
    big = np.int64(2) ** 62
    W = np.full((e + 1, e + 1), big, dtype=np.int64)
    Wf = W.reshape(-1)
    hub = e
    hc, he, c_held = held
    oc, oe, c_open = open_
    # expert -> expert through a client: for each held slot of the client
    min_swap_costs(Wf, e + 1, n, held, open_)
    # O -> expert: a client with room takes an open candidate
    ok = add[oc] < big
    np.minimum.at(Wf, hub * (e + 1) + oe[ok], add[oc[ok]] - c_open[ok])
    # expert -> O: a client above its minimum drops a held expert
    ok = drop[hc] < big
    np.minimum.at(Wf, he[ok] * (e + 1) + hub, c_held[ok] + drop[hc[ok]])
    # expert arcs: forward residual (more load) and backward (less load)
    fwd = flow.expert < net.exp_cap
    np.minimum.at(Wf, net.exp_of_arc[fwd] * (e + 1) + hub, net.exp_cost[fwd])
    bwd = flow.expert > 0
    np.minimum.at(Wf, hub * (e + 1) + net.exp_of_arc[bwd], -net.exp_cost[bwd])
    if net.hard:  # source -> expert artificial arcs (absent when art_expert is all zero
        # and exp_floor is zero; present otherwise)
        fwd = flow.art_expert < net.exp_floor
        np.minimum.at(Wf, hub * (e + 1) + np.flatnonzero(fwd), np.full(int(fwd.sum()), net.big_m))
        bwd = flow.art_expert > 0
        np.minimum.at(Wf, np.flatnonzero(bwd) * (e + 1) + hub, np.full(int(bwd.sum()), -net.big_m))
    np.fill_diagonal(W, big)
    # Bellman-Ford, vectorized over the dense (E+1) x (E+1) matrix. No mask for the
    # missing arcs: |d| stays far below 2**61 (the cost scale bounds every path), so
    # d + big neither overflows nor undercuts a real distance.
    d = np.zeros(e + 1, dtype=np.int64)
    for _ in range(e + 3):
        via = (d[:, None] + W).min(axis=0)
        new = np.minimum(d, via)
        if np.array_equal(new, d):
            return d
        d = new
    return None


def _violations(
    net: _Network,
    x: np.ndarray,
    C: np.ndarray,
    d: np.ndarray,
    held: tuple[np.ndarray, np.ndarray, np.ndarray],
    add: np.ndarray,
) -> np.ndarray:
    """Pairs outside the candidate set whose reduced cost disproves optimality.

    With expert potentials ``d[:E]`` and ``d[E]`` for the merged source/sink, client c
    needs a potential :math:`\\pi_c` with ``lower_c <= pi_c <= upper_c`` where
    ``lower_c = max(d_O - drop_c, max over open pairs of d_e + C_ce)`` and
    ``upper_c = min(d_O + add_c, min over held pairs of d_e + C_ce)``. The candidate
    optimum guarantees this over candidate pairs; if it holds over all pairs, the
    candidate optimum is optimal for the full network. Returns the (N, E) mask of
    non-candidate pairs with ``d_e + C_ce > upper_c`` (all False when proven).
    """
    e = net.e
    big = np.int64(2) ** 62
    hc, he, c_held = held
    upper = np.where(add < big, d[e] + add, big)
    np.minimum.at(upper, hc, c_held + d[he])
    # C_ce > upper_c - d_e, without overflow: upper <= 2**62 and |d| < 2**61
    thresh = np.minimum(upper, big // 2)[:, None] - d[None, :e]
    bad = C > thresh
    if not net.all_free:
        bad &= net.free
    bad &= ~x
    return bad


def _solve_full(
    problem: AssignmentProblem, net: _Network, C: np.ndarray | None
) -> tuple[str, np.ndarray | None, dict]:
    n, e = net.n, net.e
    ci: np.ndarray | None = None
    ei: np.ndarray | None = None
    if net.all_free:  # every pair, row-major: no mask to scan or fancy-index
        cost = (C if C is not None else _int_costs(problem.fitness, net)).reshape(-1)
    else:
        ci, ei = np.nonzero(net.free)
        cost = C[ci, ei] if C is not None else _int_costs(problem.fitness[ci, ei], net)
    status, flow = _run(net, ci, ei, cost)
    stats = {"arcs": int(cost.size), "pruned": False}
    if status != "optimal" or flow is None:
        return status, None, stats
    if ci is None or ei is None:
        x = flow.pair.reshape(n, e) > 0
    else:
        x = np.zeros((n, e), dtype=bool)
        chosen = flow.pair > 0
        x[ci[chosen], ei[chosen]] = True
    return status, x, stats


def _top_per_row(key: np.ndarray, k: int) -> np.ndarray:
    """(N, k) column indices of each row's k largest entries (any order)."""
    n, e = key.shape
    if k >= e:
        return np.tile(np.arange(e), (n, 1))
    return np.argpartition(key, e - k, axis=1)[:, e - k :]


def _uncertain_candidates(
    key: np.ndarray, k: int, cap: np.ndarray, tau: float
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate arcs (client, expert), sorted by client: each row's ``k`` best by
    ``key``, plus up to ``_SPREAD_EXTRA`` next ones within ``tau`` of the row's
    ``cap``-th best (a price error of that size could make the client take them)."""
    n = key.shape[0]
    m = k + _SPREAD_EXTRA
    top, val = best_sorted(key, m)
    held = val[np.arange(n), np.maximum(cap - 1, 0)]
    pick = np.ones((n, m), dtype=bool)
    pick[:, k:] = val[:, k:] >= (held - tau)[:, None]
    rows, slots = np.nonzero(pick)
    return rows, top[rows, slots]


def _estimate_prices(
    problem: AssignmentProblem, net: _Network, rounds: int = 2
) -> tuple[np.ndarray, float] | None:
    """Cold expert prices for ``problem`` from :func:`.prices.estimate_prices` (in
    fitness units) and the largest move of the last round; ``None`` for soft bounds or
    when prices cannot matter."""
    if not net.hard:
        return None
    return estimate_prices(
        problem.fitness,
        net.cap_r,
        net.exp_floor,
        net.exp_floor + net.exp_cap,
        free=None if net.all_free else net.free,
        rounds=rounds,
    )


def _sample_prices(
    problem: AssignmentProblem, net: _Network, margin: int, seed: int
) -> np.ndarray | None:
    """Expert prices (in fitness units) from a random tenth of the clients.

    The clients' share of the load bounds is scaled down with them. The prices are
    only used to choose candidates, so any error costs rounds, never correctness.
    """
    n, e = problem.shape
    m = max(8 * e, n // 10)
    if m >= n // 2:
        return None
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=m, replace=False))
    frac = m / n
    lo = np.floor(problem.expert_min_load * frac)
    hi = np.where(
        np.isfinite(problem.expert_max_load), np.ceil(problem.expert_max_load * frac), np.inf
    )
    sub = problem.take(idx, expert_min_load=lo, expert_max_load=hi)
    sub_net = _prepare(sub)
    status, _, _, d = _solve_pruned(sub, sub_net, margin, 4, prices=None, seed=seed)
    if status != "optimal" or d is None:
        return None
    return _to_fitness(d[:e], sub_net)


def _solve_pruned(
    problem: AssignmentProblem,
    net: _Network,
    margin: int,
    max_rounds: int,
    prices: np.ndarray | None,
    seed: int,
    spread: float = 0.0,
) -> tuple[str, np.ndarray | None, dict, np.ndarray | None]:
    """Min-cost flow on candidate arcs, certified by reduced costs; see :func:`solve`.

    ``spread`` (fitness units, estimated prices only): how far the prices may still be
    off; clients with close alternatives get up to ``_SPREAD_EXTRA`` more candidates.
    """
    n, e = net.n, net.e
    stats: dict = {"pruned": True, "rounds": 0, "added_arcs": []}
    t0 = time.perf_counter()
    C = _int_costs(problem.fitness, net)
    kmax = int(net.cap_r.max()) if n else 0
    k = min(e, kmax + margin)
    stats["candidates_per_client"] = k
    # candidates: each client's top-k free experts by fitness plus the expert's price
    key = problem.fitness if prices is None else problem.fitness + prices[None, :]
    cand: np.ndarray | None = None
    if prices is not None and net.all_free and spread > 0 and k + _SPREAD_EXTRA <= e:
        ci, ei = _uncertain_candidates(key, k, net.cap_r, _SPREAD_FACTOR * spread)
        stats["uncertain_arcs"] = int(ci.size) - n * k
    elif prices is not None and net.all_free:  # the arcs straight from the top-k, by client
        ci = np.arange(n).repeat(k)
        ei = _top_per_row(key, k).reshape(-1)
    else:
        top = _top_per_row(key if net.all_free else np.where(net.free, key, -np.inf), k)
        cand = np.zeros((n, e), dtype=bool)
        cand[np.arange(n)[:, None], top] = True
        if prices is None:
            # each expert's best clients, enough to meet its minimum load with room to spare
            need = int(net.exp_floor.max()) + margin if e else 0
            if need >= n:
                cand[:] = True
            elif need > 0:
                top_c = _top_per_row(np.where(net.free, problem.fitness, -np.inf).T, need)
                cand[top_c, np.arange(e)[:, None]] = True
        if not net.all_free:
            cand &= net.free
    stats["candidate_time"] = time.perf_counter() - t0
    full_arcs = n * e if net.all_free else int(net.free.sum())
    artificial = False  # first try without: a feasible candidate network solves faster
    for _ in range(max_rounds):
        stats["rounds"] += 1
        if cand is not None:
            ci, ei = np.nonzero(cand)
        cost = C[ci, ei]
        status, flow = _run(net, ci, ei, cost, artificial=artificial)
        if status == "infeasible" and not artificial and net.hard:
            artificial = True
            stats["artificial_arcs"] = True
            status, flow = _run(net, ci, ei, cost, artificial=True)
        if status != "optimal" or flow is None:
            stats["fallback"] = f"candidate network {status}"
            break
        chosen = flow.pair > 0
        x = np.zeros((n, e), dtype=bool)
        x[ci[chosen], ei[chosen]] = True
        held = (ci[chosen], ei[chosen], cost[chosen])
        opened = (ci[~chosen], ei[~chosen], cost[~chosen])
        add, drop = _client_arcs(net, x, flow)
        d = _potentials(net, held, opened, flow, add, drop)
        if d is None:  # cannot happen for an optimal candidate flow
            stats["fallback"] = "negative cycle in the candidate residual graph"
            break
        bad = _violations(net, x, C, d, held, add)
        n_bad = int(bad.sum())
        if n_bad == 0:
            stats["arcs"] = int(ci.size)
            if flow.art_client.any() or flow.art_expert.any():
                # optimal only with artificial units: the problem is infeasible (or
                # big_m too small); the full network decides
                stats["fallback"] = "certified optimum uses artificial arcs"
                break
            stats["certificate"] = "reduced costs of all pruned arcs are non-negative"
            return "optimal", x, stats, d
        stats["added_arcs"].append(n_bad)
        if cand is None:
            cand = np.zeros((n, e), dtype=bool)
            cand[ci, ei] = True
        cand |= bad
        if int(cand.sum()) > full_arcs // 2:
            stats["fallback"] = "candidate set grew past half of all arcs"
            break
    else:
        stats["fallback"] = f"no certificate after {max_rounds} rounds"
    status, x_full, full_stats = _solve_full(problem, net, C)
    stats["arcs"] = full_stats["arcs"]
    return status, x_full, stats, None


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    """Solve ``problem``; quantized fitness is tie-broken first (:mod:`.ties`)."""
    return solve_tie_broken(problem, options, _solve)


def _solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    t0 = time.perf_counter()
    net = _prepare(problem)
    n, e = net.n, net.e
    extra = options.extra
    prune = extra.get("prune", "auto")
    margin = int(extra.get("prune_margin", 4))
    max_rounds = int(extra.get("max_rounds", 8))
    prices = extra.get("prices")
    if prices is not None:
        prices = np.asarray(prices, dtype=np.float64)
        if prices.shape != (e,) or not np.isfinite(prices).all():
            raise InvalidProblemError(
                f"`options['prices']` must be {e} finite expert prices (e.g. "
                "result.stats['expert_prices'] of an earlier round)"
            )
    kmax = int(net.cap_r.max()) if n else 0
    if prune == "auto":
        prune = n * e >= _PRUNE_MIN_PAIRS and kmax + margin <= e // 4
    t_build = time.perf_counter() - t0
    d = None
    if prune and kmax > 0:
        t1 = time.perf_counter()
        source = "options"
        if prices is None and n * e >= _SAMPLE_MIN_PAIRS:
            prices, source = _sample_prices(problem, net, margin, options.seed), "sample"
        spread = 0.0
        if prices is None:  # too small for a sample that pays
            estimate = _estimate_prices(problem, net)
            if estimate is not None:
                (prices, spread), source = estimate, "estimate"
        if prices is None:
            source = "none"
        price_time = time.perf_counter() - t1
        status, x_free, stats, d = _solve_pruned(
            problem, net, margin, max_rounds, prices, options.seed, spread
        )
        stats["price_time"] = price_time
        stats["price_source"] = source
        if d is not None:
            stats["expert_prices"] = _to_fitness(d[:e] - d[e], net)
    else:
        status, x_free, stats = _solve_full(problem, net, None)
    stats.update(
        build_time=t_build,
        solve_time=time.perf_counter() - t0 - t_build,
        objective_scale=math.ldexp(1.0, min(net.scale_exp, 1023)),
        objective_scale_exponent=net.scale_exp,
        network_nodes=n + e + 2,
        solver_status=status,
    )
    if status == "infeasible":
        return BackendOutput(
            Status.INFEASIBLE,
            message="no flow meets every client minimum and expert load bound",
            stats=stats,
        )
    if status != "optimal" or x_free is None:
        return BackendOutput(Status.ERROR, message=status, stats=stats)
    x = x_free if problem.fixed is None else problem.fixed | x_free
    # Each assigned unit carries at most 0.5 / 2**scale_exp rounding error, both in the
    # solution found and in the true optimum: the true optimum exceeds ours by at most
    # this (a unit crosses one pair arc and, with soft bounds, one penalty arc).
    err = 0.0 if net.exact_costs else math.ldexp(2.0 * float(net.total_flow), -net.scale_exp)
    stats["rounding_error_bound"] = err
    # exact costs: the verifier's objective is the bound (solve_assignment fills it in)
    bound = problem.objective(x) + err if err else None
    return BackendOutput(Status.OPTIMAL, x=x, bound=bound, stats=stats)
