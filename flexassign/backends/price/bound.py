r"""The price method's bound: :func:`~flexassign.backends._certify.price_bound`, blocked.

The price (Lagrangian) bound is a sum over clients plus a term per expert, so on large
problems it is evaluated on blocks of clients (no :math:`N \times E` temporaries of the
whole problem): each block is the sub-problem of its clients with load bounds 0 (so
its expert term vanishes and no price is clipped), whose
:attr:`~flexassign.backends._certify.PriceBound.upper` is a rigorous upper bound on
that block's part; the expert term is added once, with the prices clipped as
``price_bound`` clips them, and the float64 rounding of the final sum is bounded by
:math:`\gamma_n \sum |t_i|` (Higham 2002, eq. 4.4) and added, rounded up.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ...problem import AssignmentProblem
from .._certify import price_bound

__all__ = ["BLOCK_PAIRS", "clip_prices", "upper_bound"]

FloatArray = NDArray[np.float64]

#: Problems with more client-expert pairs than this are bounded block by block.
BLOCK_PAIRS = 1 << 23
_U = 2.0**-53


def clip_prices(problem: AssignmentProblem, prices: FloatArray) -> FloatArray:
    """Prices as ``price_bound`` uses them: non-finite ones 0, and 0 where they would
    multiply an infinite load bound."""
    p = np.where(np.isfinite(prices), prices, 0.0)
    p = np.where((p > 0) & ~np.isfinite(problem.expert_max_load), 0.0, p)
    return np.where((p < 0) & ~np.isfinite(problem.expert_min_load), 0.0, p)


def upper_bound(
    problem: AssignmentProblem, prices: FloatArray, budget_prices: FloatArray | None = None
) -> tuple[float, float]:
    """A rigorous upper bound on the optimum from ``prices`` (per unit of load) and
    ``budget_prices`` (per unit of memory, per client), and its rounding error."""
    n, e = problem.shape
    p = clip_prices(problem, np.asarray(prices, dtype=np.float64))
    if n * e <= BLOCK_PAIRS:
        pb = price_bound(problem, p, budget_prices=budget_prices)
        return pb.upper, pb.error
    step = max(1, BLOCK_PAIRS // e)
    parts: list[float] = []
    err = 0.0
    zero = np.zeros(e)
    for r0 in range(0, n, step):
        rows = np.arange(r0, min(r0 + step, n))
        sub = problem.take(rows, expert_min_load=zero, expert_max_load=zero)
        mu = None if budget_prices is None else budget_prices[rows]
        pb = price_bound(sub, p, budget_prices=mu)
        if not math.isfinite(pb.upper):
            return pb.upper, math.inf
        parts.append(pb.upper)
        err += pb.error
    pos = np.maximum(p, 0.0)
    neg = np.maximum(-p, 0.0)
    upper = np.where(pos > 0, problem.expert_max_load, 0.0)
    lower = np.where(neg > 0, problem.expert_min_load, 0.0)
    terms = np.concatenate([np.asarray(parts), pos * upper, -(neg * lower)])
    value = float(np.sum(terms))
    # each product rounds once (relative u), the sum of len(terms) terms: gamma_n
    rounding = 1.05 * _U * (terms.size + 4) * float(np.sum(np.abs(terms)))
    return math.nextafter(value + rounding, math.inf), err + rounding
