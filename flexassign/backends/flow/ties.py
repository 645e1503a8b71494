r"""Tie-breaking for quantized fitness: a perturbation that keeps the optimum.

When the fitness takes few distinct values (scores on a 5-point scale, rounded
accuracies), most clients are indifferent between several experts at any prices.
Each client's choice at the prices then puts all of them on the same expert (the
first of its ties), the price-induced loads are far outside the bounds whatever the
prices, and both min-cost flow backends spend their time moving that load back
(measured at 3,000 x 64 on scores in {0, 0.25, 0.5, 0.75, 1}: ``flow-warm``'s compiled
repair spent its path budget and handed over to ``flow``, 6-8 s against 0.13 s for
greedy; ``flow`` re-added 22,000 pruned arcs that failed its certificate on ties).

The fix (:func:`tie_broken`): when every fitness value is an integer multiple of a
quantum :math:`q` (found from a sample of entries, then checked on every entry), the
backends solve the problem with fitness :math:`S_{ce} + \varepsilon_{ce}`, where
:math:`0 \le \varepsilon_{ce} < q / (4 (K + 1))` is seeded noise and :math:`K` the
total capacity. Any two assignments' objectives differ by a multiple of :math:`q`,
while the perturbation changes any objective by less than :math:`q/4`; so an optimum
of the perturbed problem (up to its reported rounding error, far below :math:`q/4`) is
an optimum of the original. The answer is evaluated and certified on the original
problem (``stats["tie_break"]`` gives :math:`q`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ...problem import AssignmentProblem
from ...result import Status
from ..base import BackendOutput, SolveOptions

__all__ = ["MIN_PAIRS", "quantum", "solve_tie_broken", "tie_broken", "untie"]

#: Problems smaller than this are left alone (their ties cost little).
MIN_PAIRS = 20_000
#: Entries sampled to decide whether the fitness is quantized.
_SAMPLE = 4096
#: ... it is when at most this many distinct values are among them.
_MAX_DISTINCT = 64
#: Entries per block in the full check and the perturbation.
_BLOCK = 1 << 20
#: Relative tolerance of the grid check (float representation of decimal steps).
_GRID_RTOL = 1e-9


def quantum(problem: AssignmentProblem) -> float | None:
    """The quantum :math:`q > 0` with every fitness value in :math:`q \\mathbb{Z}` (up to
    float representation), when the fitness is quantized with few distinct values;
    ``None`` otherwise (the common, continuous case costs one small sample)."""
    fit = problem.fitness
    n, e = fit.shape
    if n * e < MIN_PAIRS:
        return None
    rng = np.random.default_rng(0)
    flat = fit.reshape(-1)
    values = np.unique(flat[rng.integers(0, flat.size, size=_SAMPLE)])
    if values.size < 2 or values.size > _MAX_DISTINCT:
        return None
    q = float(np.min(np.diff(values)))
    if not (q > 0.0 and math.isfinite(q)):
        return None
    scale = float(np.max(np.abs(values))) / q + 1.0
    tol = _GRID_RTOL * scale
    step = max(1, _BLOCK // e)
    for r0 in range(0, n, step):
        r = fit[r0 : r0 + step] / q
        if float(np.max(np.abs(r - np.rint(r)), initial=0.0)) > tol:
            return None
    return q


def tie_broken(problem: AssignmentProblem, seed: int) -> tuple[AssignmentProblem, float] | None:
    """The perturbed problem and its quantum, or ``None`` when the fitness is not
    quantized (then solve ``problem`` as it is)."""
    q = quantum(problem)
    if q is None:
        return None
    total = float(problem.effective_capacity().sum())
    eps = q / (4.0 * (total + 1.0))
    n, e = problem.shape
    fit = np.array(problem.fitness, dtype=np.float64, copy=True)
    rng = np.random.default_rng([seed, 22])
    step = max(1, _BLOCK // e)
    for r0 in range(0, n, step):
        blk = fit[r0 : r0 + step]
        blk += eps * rng.random(blk.shape)
    return problem.replace(fitness=fit), q


def untie(problem: AssignmentProblem, out: BackendOutput, q: float) -> BackendOutput:
    """The perturbed problem's answer as the original's: the bound stays valid (the
    perturbation only adds, so the original optimum is at most the perturbed one); an
    optimum whose rounding error is below :math:`q/4` is the original's optimum, and its
    bound is its objective."""
    out.stats["tie_break"] = q
    if out.x is None or out.status is not Status.OPTIMAL:
        return out
    err = float(out.stats.get("rounding_error_bound", 0.0) or 0.0)
    if err < q / 4.0:  # exact for the original: no rounding loss is left
        out.bound = problem.objective(out.x)
        out.stats["perturbed_rounding_error_bound"] = err
        out.stats["rounding_error_bound"] = 0.0
    return out


def solve_tie_broken(
    problem: AssignmentProblem,
    options: SolveOptions,
    solve: Callable[[AssignmentProblem, SolveOptions], BackendOutput],
) -> BackendOutput:
    """``solve`` on the tie-broken problem when the fitness is quantized (its answer
    :func:`untie`-d back to ``problem``), else on ``problem`` itself: what both min-cost
    flow backends do first."""
    tied = tie_broken(problem, options.seed)
    if tied is None:
        return solve(problem, options)
    perturbed, q = tied
    return untie(problem, solve(perturbed, options), q)
