r"""The price method's bound: the Lagrangian (price) bound in one blocked top-k pass.

For expert prices :math:`\pi` (per unit of load) and memory prices :math:`\mu_c \ge 0`,

.. math::

    g(\pi, \mu) = \sum_c \max_{k^{\min}_c \le |T| \le k_c} \sum_{e \in T}
        (S_{ce} - w_c \pi_e - \mu_c m_e) + \sum_c \mu_c M_c
        + \sum_e \max(\pi_e U_e, \pi_e L_e)

bounds every feasible assignment's objective from above, whatever the prices (weak
Lagrangian duality: docs/problem.md). It is
:func:`~flexassign.backends._certify.price_bound`'s formula; this module evaluates it
without an :math:`N \times E` sort or temporary: blocks of rows, each client's
:math:`k_c` best free adjusted scores by ``partition``, and a rigorous bound on the
float64 rounding. A computed adjusted score :math:`\hat a_{ce}` is
:math:`a_{ce}` up to :math:`4u(|S_{ce}| + |w_c \pi_e| + |\mu_c m_e|)` (three
roundings), so the best computed choice exceeds the exact best by less than
:math:`\delta_c = 4u\,t_c\,A_c` with :math:`t_c` the pairs taken and :math:`A_c`
the client's largest magnitude, and the best computed choice is the best of the
computed scores (the top-k of a block is exact on the values it compares). Prefix sums
of at most :math:`E` terms add :math:`\gamma_E` of their magnitude, and the final sum
of :math:`N + E + N` terms :math:`\gamma_{2N+E}` (Higham 2002, eq. 4.4). The reported
upper value adds all of it, rounded up.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ...problem import AssignmentProblem
from .view import BLOCK  # the block size of every pass over the fitness matrix

__all__ = ["clip_prices", "upper_bound"]

FloatArray = NDArray[np.float64]

_U = 2.0**-53


def clip_prices(problem: AssignmentProblem, prices: FloatArray) -> FloatArray:
    """Prices as ``price_bound`` uses them: non-finite ones 0, 0 where they would
    multiply an infinite load bound, within the penalty of soft bounds."""
    p = np.where(np.isfinite(prices), prices, 0.0)
    p = np.where((p > 0) & ~np.isfinite(problem.expert_max_load), 0.0, p)
    p = np.where((p < 0) & ~np.isfinite(problem.expert_min_load), 0.0, p)
    if problem.load_penalty is not None:
        rho = float(problem.load_penalty)
        p = np.clip(p, -rho, rho)
    return np.asarray(p, dtype=np.float64)


def _budget_prices(problem: AssignmentProblem, mu: FloatArray | None) -> FloatArray | None:
    if mu is None or not problem.has_knapsack or problem.client_budget is None:
        return None
    m = np.asarray(mu, dtype=np.float64).reshape(-1)
    if m.shape != (problem.n_clients,):
        raise ValueError(f"`budget_prices` must have shape ({problem.n_clients},)")
    m = np.where(np.isfinite(m) & (m > 0), m, 0.0)
    m = np.where(np.isfinite(problem.client_budget), m, 0.0)
    return m if m.any() else None


def _block(
    problem: AssignmentProblem, rows: slice, p: FloatArray, mu: FloatArray | None
) -> tuple[FloatArray, FloatArray, bool]:
    """Each client's best value, its rounding bound, and whether it is infeasible."""
    fit = np.asarray(problem.fitness[rows], dtype=np.float64)
    n, e = fit.shape
    w = np.asarray(problem.weights[rows], dtype=np.float64)
    a = np.multiply(w[:, None], p[None, :])
    np.subtract(fit, a, out=a)
    # each magnitude |S| + |w p| (+ mu m) is at most the row's largest |S| plus w times
    # the largest |p| (plus mu times the largest size): a valid, cheaper ``peak``
    peak = np.maximum(fit.max(axis=1), -fit.min(axis=1)) + np.abs(w) * float(
        np.abs(p).max(initial=0.0)
    )
    if mu is not None:
        assert problem.expert_size is not None
        size = problem.expert_size
        a -= mu[rows][:, None] * size[None, :]
        peak += mu[rows] * float(np.abs(size).max(initial=0.0))
    cap = np.minimum(problem.capacity[rows], e).astype(np.int64)
    kmin = problem.min_experts[rows].astype(np.int64)
    fixed_part = np.zeros(n)
    n_fixed = np.zeros(n, dtype=np.int64)
    if problem.allowed is not None or problem.fixed is not None:
        fixed = problem.fixed_mask[rows]
        free = problem.allowed_mask[rows] & ~fixed
        if problem.fixed is not None:
            fixed_part = np.where(fixed, a, 0.0).sum(axis=1)
            n_fixed = fixed.sum(axis=1)
        a[~free] = -np.inf
        n_free = free.sum(axis=1)
    else:
        n_free = np.full(n, e)
    lo = np.maximum(kmin - n_fixed, 0)
    hi = np.minimum(cap - n_fixed, n_free)
    if np.any(hi < lo):
        return np.zeros(0), np.zeros(0), True
    k = int(hi.max(initial=0))
    if k == 0:
        top = np.zeros((n, 0))
    elif k < e:
        # the k largest values (``partition``: values only, 4-5x faster than
        # ``argpartition``), largest first
        top = -np.sort(-np.partition(a, e - k, axis=1)[:, e - k :], axis=1)
    else:
        top = -np.sort(-a, axis=1)
    top = np.where(np.isfinite(top), top, 0.0)
    prefix = np.concatenate([np.zeros((n, 1)), np.cumsum(top, axis=1)], axis=1)
    t = np.arange(k + 1)[None, :]
    ok = (t >= lo[:, None]) & (t <= hi[:, None])
    best = fixed_part + np.where(ok, prefix, -np.inf).max(axis=1)
    taken = (n_fixed + hi).astype(np.float64)
    # scores: 4u each; prefix and fixed sums: gamma_(E+2) of their magnitudes
    err = peak * taken * (4.0 * _U + 1.05 * _U * (e + 2) * (1.0 + 4.0 * _U))
    return best, np.where(taken > 0, err, 0.0), False


def upper_bound(
    problem: AssignmentProblem, prices: FloatArray, budget_prices: FloatArray | None = None
) -> tuple[float, float]:
    """A rigorous upper bound on the optimum from ``prices`` (per unit of load) and
    ``budget_prices`` (per unit of memory, per client), and its rounding error
    (``-inf`` with error 0 when some client cannot meet its minimum)."""
    n, e = problem.shape
    p = clip_prices(problem, np.asarray(prices, dtype=np.float64))
    mu = _budget_prices(problem, budget_prices)
    step = max(1, BLOCK // max(e, 1))
    parts: list[FloatArray] = []
    err = 0.0
    for r0 in range(0, n, step):
        best, e_blk, bad = _block(problem, slice(r0, min(r0 + step, n)), p, mu)
        if bad:
            return -math.inf, 0.0
        parts.append(best)
        err += float(e_blk.sum())
    pos = np.maximum(p, 0.0)
    neg = np.maximum(-p, 0.0)
    upper = np.where(pos > 0, problem.expert_max_load, 0.0)
    lower = np.where(neg > 0, problem.expert_min_load, 0.0)
    terms = [*parts, pos * upper, -(neg * lower)]
    if mu is not None:
        assert problem.client_budget is not None
        terms.append(mu * problem.client_budget)
    value = math.fsum(float(np.sum(t)) for t in terms)
    # each partial np.sum: gamma of its length on its magnitude; the products: u each
    mag = sum(float(np.sum(np.abs(t))) for t in terms)
    rounding = 1.05 * _U * (2 * n + e + 8) * mag + err
    return math.nextafter(value + rounding, math.inf), rounding
