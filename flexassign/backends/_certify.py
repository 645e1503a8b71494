r"""Bounds that do not rest on a solver's tolerances: the price bound and its rounding error.

A MIP or LP solver proves a bound *up to its own tolerances* (feasibility and
optimality tolerances of about 1e-7 on the model it was given). When the part of the
objective that decides the optimum lies below those tolerances relative to the largest
coefficient the solver sees (a large offset on clients whose count may vary, tiny
fitness next to a load penalty), the solver's "optimal" and its bound can both be
wrong. This module gives what a backend needs to check such a claim independently:

**The price bound** (:func:`price_bound`). For any expert prices :math:`p_e` (per unit
of load; any sign) and memory prices :math:`\mu_c \ge 0`, and every feasible :math:`x`,

.. math::

    \sum_{ce} S_{ce} x_{ce} - \rho \sum_e (s^-_e + s^+_e)
    \;\le\; \sum_e \bigl(p_e^+ U_e - p_e^- L_e\bigr) + \sum_c \mu_c M_c
    + \sum_c \max_{x_c} \sum_e \bigl(S_{ce} - w_c p_e - \mu_c m_e\bigr) x_{ce},

where the inner maximum runs over the 0/1 rows :math:`x_c` with the client's fixed
pairs, only allowed pairs and :math:`k^{\min}_c \le \sum_e x_{ce} \le k_c` (each
client's best experts at the adjusted scores: exact, no solver involved). With hard
bounds it is weak duality for the load and memory rows; with soft bounds it needs
:math:`|p_e| \le \rho` (prices are clipped to that), and a price that would multiply
an infinite bound is clipped to 0. The LP relaxation's duals give the LP bound; any
other prices (zero, or a price method's) give a valid, possibly looser, bound.

**Rounding.** Everything is evaluated in float64 on the client-shifted scores
:math:`S_{ce} - \alpha_c` (:math:`\alpha_c` the midpoint of the client's allowed
fitness), with :math:`\alpha_c` times the count added per client, and
:attr:`PriceBound.error` bounds the difference to the exact value (the standard
:math:`\gamma_n \sum |t_i|` bound for sums of :math:`n` terms in any order, Higham,
*Accuracy and Stability of Numerical Algorithms*, 2002, Lemma 3.1 and eq. 4.4).
:attr:`PriceBound.upper` is therefore an upper bound on the exact optimum of the problem
as stored in float64. :func:`objective_error` bounds the rounding of
:meth:`~flexassign.AssignmentProblem.objective` the same way.

**The check** (:func:`~flexassign.backends._guard.certify`, in
:mod:`flexassign.backends._guard`). A backend's ``OPTIMAL`` (and its ``bound``) stands
when the solver could resolve the objective it was handed
(:func:`~flexassign.backends._guard.solver_resolution`, the ratio of the typical
decisive coefficient difference to the largest coefficient, at least
:data:`~flexassign.backends._guard.MIN_RESOLUTION`) or when the price bound
from the LP duals closes the gap (:func:`proves_optimal`). Otherwise the answer becomes
``FEASIBLE`` with the price bound, and ``stats["bound_check"]`` says which held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..problem import AssignmentProblem

__all__ = [
    "OPTIMAL_RTOL",
    "PriceBound",
    "client_midpoints",
    "objective_error",
    "optimality_tolerance",
    "price_bound",
    "proves_optimal",
]

#: Unit roundoff of float64.
_U = 2.0**-53

#: ``OPTIMAL`` means: within this fraction of the objective's varying scale of the
#: optimum (:func:`optimality_tolerance`), the same 1e-9 as the MIP gap.
OPTIMAL_RTOL = 1e-9


@dataclass(frozen=True)
class PriceBound:
    """An upper bound on the optimum, evaluated in float64, with its rounding error.

    Attributes
    ----------
    value : float
        The bound as computed (``-inf``: some client cannot meet its minimum, so no
        assignment is feasible).
    error : float
        A bound on ``|value - exact value|`` from float64 rounding.
    prices, budget_prices : ndarray
        The (clipped) prices the bound was evaluated at, per expert and per client.
    """

    value: float
    error: float
    prices: NDArray[np.float64]
    budget_prices: NDArray[np.float64]

    @property
    def upper(self) -> float:
        """``value + error``, rounded up: a rigorous upper bound on the optimum."""
        if not math.isfinite(self.value) or self.error == 0.0:
            return self.value  # error 0: every term was 0, the value is exact
        return math.nextafter(self.value + self.error, math.inf)


def _free_sets(problem: AssignmentProblem) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Free allowed pairs and the count of fixed pairs per client."""
    fixed = problem.fixed_mask
    free = problem.allowed_mask & ~fixed
    return free, fixed.sum(axis=1).astype(np.int64)


def client_midpoints(problem: AssignmentProblem) -> NDArray[np.float64]:
    r""":math:`\alpha_c`: the midpoint of each client's allowed fitness (0 when none).

    Computed as ``0.5 * hi + 0.5 * lo`` (no overflow); the shift :math:`S_{ce} -
    \alpha_c` removes a per-client offset from every score of the client.
    """
    allowed = problem.allowed_mask
    fit = problem.fitness
    any_ = allowed.any(axis=1)
    hi = np.where(any_, np.where(allowed, fit, -np.inf).max(axis=1), 0.0)
    lo = np.where(any_, np.where(allowed, fit, np.inf).min(axis=1), 0.0)
    return np.asarray(0.5 * hi + 0.5 * lo, dtype=np.float64)


def _clip_prices(
    problem: AssignmentProblem, prices: ArrayLike | None, budget_prices: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    n, e = problem.shape
    p = np.zeros(e) if prices is None else np.array(prices, dtype=np.float64).reshape(-1)
    if p.shape != (e,):
        raise ValueError(f"`prices` must have shape ({e},); got {p.shape}")
    p = np.where(np.isfinite(p), p, 0.0)
    upper = problem.expert_max_load
    lower = problem.expert_min_load
    p = np.where((p > 0) & ~np.isfinite(upper), 0.0, p)
    p = np.where((p < 0) & ~np.isfinite(lower), 0.0, p)
    if problem.load_penalty is not None:
        rho = float(problem.load_penalty)
        p = np.clip(p, -rho, rho)
    mu = np.zeros(n)
    if budget_prices is not None and problem.has_knapsack:
        mu = np.array(budget_prices, dtype=np.float64).reshape(-1)
        if mu.shape != (n,):
            raise ValueError(f"`budget_prices` must have shape ({n},); got {mu.shape}")
        mu = np.where(np.isfinite(mu) & (mu > 0), mu, 0.0)
        assert problem.client_budget is not None
        mu = np.where(np.isfinite(problem.client_budget), mu, 0.0)
    return p, mu


def price_bound(
    problem: AssignmentProblem,
    prices: ArrayLike | None = None,
    *,
    budget_prices: ArrayLike | None = None,
) -> PriceBound:
    """The price (Lagrangian) upper bound on the optimum, with its float64 rounding error.

    Parameters
    ----------
    problem : AssignmentProblem
    prices : array_like, shape (E,), optional
        Price per unit of load on each expert (positive: load costs; negative: load
        pays). ``None`` is all zero (each client's best experts, balance ignored).
        Non-finite entries count as 0; entries are clipped where they would make the
        bound infinite (module docstring).
    budget_prices : array_like, shape (N,), optional
        Price per unit of memory of each client's knapsack (negative entries count as
        0); ignored without a knapsack.

    Returns
    -------
    PriceBound
        ``upper`` is a valid upper bound on every feasible assignment's objective,
        whatever the prices (the LP's duals make it the LP bound).

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign import AssignmentProblem
    >>> p = AssignmentProblem(np.array([[3.0, 1.0], [2.0, 0.0]]), capacity=1,
    ...                       expert_max_load=1)
    >>> price_bound(p).value  # both clients take expert 0
    5.0
    >>> price_bound(p, [1.0, 0.0]).value  # expert 0 priced: 1 + (2 + 0) + 1 * 1
    4.0
    """
    n, e = problem.shape
    p, mu = _clip_prices(problem, prices, budget_prices)
    free, n_fixed = _free_sets(problem)
    alpha = client_midpoints(problem)
    w = problem.weights
    fit = problem.fitness
    # adjusted, client-shifted scores d'_ce = (S_ce - alpha_c) - w_c p_e - mu_c m_e
    wp = w[:, None] * p[None, :]
    shifted = fit - alpha[:, None]
    d = shifted - wp
    mag = np.abs(shifted) + np.abs(wp)
    if problem.has_knapsack and mu.any():
        assert problem.expert_size is not None
        mm = mu[:, None] * problem.expert_size[None, :]
        d = d - mm
        mag = mag + np.abs(mm)
    allowed = problem.allowed_mask
    fixed = problem.fixed_mask
    fixed_sum = np.where(fixed, d, 0.0).sum(axis=1)
    # each client's free pairs by adjusted score, best first
    key = np.where(free, d, -np.inf)
    srt = -np.sort(-key, axis=1)
    n_free = free.sum(axis=1)
    prefix = np.concatenate(
        [np.zeros((n, 1)), np.cumsum(np.where(np.isfinite(srt), srt, 0.0), axis=1)], axis=1
    )
    lo = np.maximum(problem.min_experts - n_fixed, 0)
    hi = np.minimum(problem.capacity - n_fixed, n_free)
    if np.any(hi < lo):
        return PriceBound(-math.inf, 0.0, p, mu)
    t = np.arange(e + 1)[None, :]
    # value of taking the t best free pairs: alpha_c (fixed + t) + fixed part + prefix
    count = (n_fixed[:, None] + t).astype(np.float64)
    vals = alpha[:, None] * count + fixed_sum[:, None] + prefix
    ok = (t >= lo[:, None]) & (t <= hi[:, None])
    best = np.where(ok, vals, -np.inf).max(axis=1)
    terms = [best]
    pos = np.maximum(p, 0.0)
    neg = np.maximum(-p, 0.0)
    upper = np.where(pos > 0, problem.expert_max_load, 0.0)
    lower = np.where(neg > 0, problem.expert_min_load, 0.0)
    expert_terms = pos * upper - neg * lower
    terms.append(expert_terms)
    if problem.has_knapsack and mu.any():
        assert problem.client_budget is not None
        terms.append(mu * problem.client_budget)
    value = float(sum(float(np.sum(tt)) for tt in terms))
    # rounding: each d' has <= 4 roundings on its magnitude (plus 1 for the shift);
    # a client's best sums <= E + 2 terms; the total sums N + E (+ N) terms
    cap = (n_fixed + np.maximum(hi, 0)).astype(np.float64)
    per_client = (
        np.abs(alpha) * cap * 2.0
        + np.where(allowed, mag, 0.0).sum(axis=1) * (1.0 + 6.0 * _U)
        + np.abs(fixed_sum)
    )
    per_client = np.where(cap > 0, per_client, 0.0)  # a client that takes nothing adds 0
    big = float(np.sum(per_client)) + float(np.sum(np.abs(expert_terms)))
    if len(terms) > 2:
        big += float(np.sum(np.abs(terms[2])))
    n_terms = 2 * e + 3 * n + 16
    error = 1.05 * _U * (n_terms + 8) * big
    return PriceBound(value, error, p, mu)


def objective_error(problem: AssignmentProblem, x: ArrayLike) -> float:
    """A bound on the float64 rounding error of ``problem.objective(x)``.

    The objective sums the chosen fitness entries (and, with soft bounds, the penalty
    on each expert's load excess): ``gamma_n`` times the sum of the magnitudes.
    """
    xb = np.asarray(x, dtype=bool)
    k = int(xb.sum())
    mag = float(np.abs(problem.fitness[xb]).sum())
    n_terms = k + 2
    if problem.load_penalty is not None:
        loads = problem.weights @ xb
        mag += float(problem.load_penalty) * float(
            np.sum(np.abs(loads)) + np.sum(np.abs(problem.expert_min_load))
        ) + float(problem.load_penalty) * float(
            np.sum(
                np.abs(np.where(np.isfinite(problem.expert_max_load), problem.expert_max_load, 0.0))
            )
        )
        n_terms += problem.n_clients + 2 * problem.n_experts + 4
    return 1.05 * _U * n_terms * mag


def _varying_scale(problem: AssignmentProblem) -> float:
    """Sum over clients of (capacity x the spread of its allowed fitness), plus the
    spread of the midpoints across clients times the total capacity: how much the
    objective can vary between assignments apart from a common offset per slot. When
    that is 0 (one common value), the value times the counts that may vary plus (soft
    bounds) the load penalty times all the load the clients place."""
    allowed = problem.allowed_mask
    fit = problem.fitness
    any_ = allowed.any(axis=1)
    if not any_.any():
        return 0.0
    hi = np.where(any_, np.where(allowed, fit, -np.inf).max(axis=1), 0.0)
    lo = np.where(any_, np.where(allowed, fit, np.inf).min(axis=1), 0.0)
    k = problem.effective_capacity().astype(np.float64)
    within = float(np.sum(k * (0.5 * hi - 0.5 * lo))) * 2.0
    alpha = client_midpoints(problem)[any_]
    across = (float(alpha.max()) * 0.5 - float(alpha.min()) * 0.5) * 2.0 * float(k.sum())
    if within + across > 0.0:
        return within + across
    # every client's allowed fitness is one common value: only how many pairs are taken
    # can change the objective, in steps of that value, and (soft bounds) the penalty,
    # by at most the penalty times all the load the clients place
    free = np.maximum(k - problem.min_experts.astype(np.float64), 0.0)[any_]
    penalty = 0.0
    if problem.load_penalty is not None:
        w = np.ones(len(k)) if problem.client_weight is None else problem.client_weight
        penalty = float(problem.load_penalty) * float(np.sum(np.abs(w) * k))
    return float(np.sum(np.abs(alpha) * free)) + penalty


def optimality_tolerance(problem: AssignmentProblem, x: ArrayLike) -> float:
    """How far below a proven bound an objective may lie and still count as optimal.

    :data:`OPTIMAL_RTOL` times the objective's varying scale (what choices can change
    apart from a common offset per slot) plus the rounding error of the objective: a
    common offset of 1e8 on every fitness does not make 1e-1 "optimal enough".
    """
    return OPTIMAL_RTOL * _varying_scale(problem) + objective_error(problem, x)


def proves_optimal(problem: AssignmentProblem, x: ArrayLike, bound: PriceBound) -> bool:
    """True when ``bound.upper`` lies within :func:`optimality_tolerance` of ``x``'s objective."""
    f = problem.objective(x)
    return bool(bound.upper <= f + optimality_tolerance(problem, x))
