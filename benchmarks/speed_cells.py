"""More interleaved speed cells: count-based families and weighted/knapsack problems.

Part of ``python -m benchmarks --speed`` (:mod:`benchmarks.speed` runs the cells and
writes the report); each cell runs its methods interleaved in one process and reports
the best of the repeats and the ratio to greedy, as there.

*Family cells* (issue 22, item 4): a count-based problem of each family of
:mod:`benchmarks.families` (capacities 1, 2, 4; tolerance 0.1). ``cold`` solves it from
nothing; ``warm`` is the next round after 20 % of the clients were replaced by new
clients of the same population, solved from the first round's ``expert_prices``;
``shift`` the same with the new clients from a fresh draw of the family (its popular
experts or latent factors change: a 20 % shift of the load). ``flow`` and
``flow-warm`` run beside ``auto`` with the same options (the rule must never be more
than 10 % slower than the faster of the two).

*Weighted and knapsack cells* (items 1, 2, 5): :func:`benchmarks.instances.make_instance`
problems (log-normal sample-count weights, or expert sizes and budgets; tolerance
0.1) with ``auto`` (the ``price`` method) cold and warm (round 2: fitness drift 0.01,
round 1's prices); the reported ``gap`` is the method's own, against its true bound.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from flexassign import AssignmentProblem, solve_assignment

from .families import FAMILIES, family_rounds
from .instances import make_instance

__all__ = [
    "FAMILY_CASES",
    "FAMILY_QUICK",
    "FAMILY_SIZES",
    "WEIGHTED_QUICK",
    "WEIGHTED_SIZES",
    "family_cells",
    "weighted_cells",
]

FAMILY_SIZES: tuple[tuple[int, int], ...] = ((10_000, 256), (100_000, 64))
FAMILY_QUICK: tuple[tuple[int, int], ...] = ((2_000, 32),)
WEIGHTED_SIZES: tuple[tuple[int, int], ...] = ((10_000, 256), (100_000, 64), (1_000_000, 64))
WEIGHTED_QUICK: tuple[tuple[int, int], ...] = ((2_000, 32),)
#: Share of the clients replaced between the two rounds of a family's warm cell.
CHANGED = 0.2
#: A family's cells: ``cold`` (round 1 from nothing), ``warm`` (round 2, ``CHANGED`` of
#: the clients replaced by new ones of the same population, from round 1's prices) and
#: ``shift`` (the same, with the new clients from a fresh draw of the family: a shift of
#: the population's taste).
FAMILY_CASES = ("cold", "warm", "shift")
TOLERANCE = 0.1
#: Full-network reference up to this many pairs (above: ``flow`` on candidate arcs).
REF_FULL_PAIRS = 6_400_000


#: The solver stats a cell keeps as ``detail``.
DETAIL_KEYS = (
    "engine", "rounds", "open_clients", "price_source", "fallback", "pruned", "core_clients"
)


def solver_run(
    problem: AssignmentProblem, method: str, **kw: Any
) -> Callable[[], dict[str, Any]]:
    """A timed callable: one ``solve_assignment`` call and what a speed cell records."""

    def run() -> dict[str, Any]:
        res = solve_assignment(problem, method=method, **kw)
        st = res.stats
        return {
            "status": res.status.value,
            "objective": None if math.isnan(res.objective) else res.objective,
            "backend": res.method,
            "gap": res.gap,
            "detail": {k: st[k] for k in DETAIL_KEYS if k in st},
            "exact": res.status.value == "optimal",
        }

    return run


def family_cells(
    *,
    sizes: tuple[tuple[int, int], ...],
    families: tuple[str, ...],
    repeats: int,
    seed: int,
    interleave: Callable[..., dict[str, dict[str, Any]]],
    make_cell: Callable[..., dict[str, Any]],
    log: Any = sys.stderr,
    cases: tuple[str, ...] = FAMILY_CASES,
) -> list[dict[str, Any]]:
    """One cell per family, size and case of ``cases`` (``interleave`` and ``make_cell``
    are :mod:`benchmarks.speed`'s)."""
    bad = [c for c in cases if c not in FAMILY_CASES]
    if bad:
        raise ValueError(f"unknown family case {bad[0]!r}; valid: {', '.join(FAMILY_CASES)}")
    cells = []
    for name in families:
        if name not in FAMILIES:
            raise ValueError(f"unknown family {name!r}; valid: {', '.join(FAMILIES)}")
        for n, e in sizes:
            p1, p2 = family_rounds(name, n, e, seed=seed, changed=CHANGED, tolerance=TOLERANCE)
            rounds = {"cold": p1, "warm": p2}
            if "shift" in cases:
                rounds["shift"] = family_rounds(
                    name, n, e, seed=seed, changed=CHANGED, tolerance=TOLERANCE, shift=True
                )[1]
            prices = solve_assignment(p1, method="flow-warm").stats.get("expert_prices")
            for case in cases:
                p = rounds[case]
                full = n * e <= REF_FULL_PAIRS
                ref = solve_assignment(p, method="flow", options={"prune": False} if full else None)
                opts = None if case == "cold" else {"prices": prices}
                methods = {"greedy": solver_run(p, "greedy")}
                for method in ("auto", "flow", "flow-warm"):
                    methods[method] = solver_run(p, method, options=opts)
                label = f"{n}x{e} {name} {case}"
                results = interleave(methods, repeats, log, label)
                cells.append(
                    make_cell(
                        f"{n}x{e}",
                        n,
                        e,
                        f"count, {name}, {case}",
                        results,
                        ref.objective,
                        "flow, full network" if full else "flow, candidate arcs + certificate",
                    )
                )
    return cells


def _drifted(p: AssignmentProblem, seed: int) -> AssignmentProblem:
    rng = np.random.default_rng([seed, 2])
    return p.replace(fitness=p.fitness + 0.01 * rng.standard_normal(p.shape))


def weighted_cells(
    *,
    sizes: tuple[tuple[int, int], ...],
    variants: tuple[str, ...],
    repeats: int,
    seed: int,
    interleave: Callable[..., dict[str, dict[str, Any]]],
    memory: Callable[[Callable[[], Any]], float],
    memory_min_pairs: int = 1_000_000,
    log: Any = sys.stderr,
) -> list[dict[str, Any]]:
    """One cell per variant and size: greedy, ``auto`` cold and warm, gap reported."""
    cells = []
    for variant in variants:
        for n, e in sizes:
            p1 = make_instance(n, e, variant, seed=seed, tolerance=TOLERANCE).problem
            prices = solve_assignment(p1).stats.get("expert_prices")
            p2 = _drifted(p1, seed)
            del p1
            methods = {"greedy": solver_run(p2, "greedy"), "auto (cold)": solver_run(p2, "auto")}
            if prices is not None:
                methods["auto (warm)"] = solver_run(p2, "auto", options={"prices": prices})
            results = interleave(methods, repeats, log, f"{n}x{e} {variant}")
            if n * e >= memory_min_pairs:
                for name in ("auto (cold)", "greedy"):
                    results[name]["extra_mib"] = memory(methods[name])
            g = results["greedy"]["best"]
            g_cpu = results["greedy"]["best_cpu"]
            for r in results.values():
                r["ratio_to_greedy"] = r["best"] / g
                r["cpu_ratio_to_greedy"] = r["best_cpu"] / g_cpu
                r["matches_reference"] = False
            cells.append(
                {
                    "size": f"{n}x{e}",
                    "n": n,
                    "e": e,
                    "case": variant,
                    "reference": math.nan,
                    "reference_method": "none (the gap is against each method's own bound)",
                    "methods": results,
                }
            )
    return cells


def extra_targets(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 22's targets for the family and weighted/knapsack cells."""
    out = []
    limits = {"weighted": (1e-4, 10.0), "knapsack": (1e-3, 20.0)}
    for c in cells:
        if c["case"] in limits:
            gap_max, ratio_max = limits[c["case"]]
            for mode in ("cold", "warm"):
                m = c["methods"].get(f"auto ({mode})")
                if not m:
                    continue
                gap = m.get("gap")
                ok = gap is not None and gap <= gap_max and m["ratio_to_greedy"] <= ratio_max
                out.append(
                    {
                        "target": f"{c['size']} {c['case']} auto ({mode}): gap <= {gap_max:g} "
                        f"in <= {ratio_max:g}x greedy",
                        "measured": f"{m['ratio_to_greedy']:.2f}x (CPU "
                        f"{m['cpu_ratio_to_greedy']:.2f}x), gap "
                        f"{'none' if gap is None else f'{gap:.2e}'}",
                        "met": ok,
                    }
                )
        elif c["case"].startswith("count, ") and c["case"].count(",") == 2:
            mode = c["case"].rsplit(", ", 1)[1]
            m = c["methods"]
            auto = m["auto"]
            faster = min(m["flow"]["best"], m["flow-warm"]["best"])
            limit = 3.0 if mode == "cold" else 2.0
            ok = (
                auto["ratio_to_greedy"] <= limit
                and auto["best"] <= 1.1 * faster
                and auto["matches_reference"]
            )
            out.append(
                {
                    "target": f"{c['size']} {c['case']}: auto <= {limit:g}x greedy and "
                    "<= 1.1x the faster of flow / flow-warm",
                    "measured": f"{auto['ratio_to_greedy']:.2f}x greedy, "
                    f"{auto['best'] / faster:.2f}x the faster"
                    f"{'' if auto['matches_reference'] else ', DIFFERENT optimum'}",
                    "met": ok,
                }
            )
    return out
