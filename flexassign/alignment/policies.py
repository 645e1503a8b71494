r"""Assignment policies: how one round's experts are chosen, one small function each.

Every policy receives a :class:`RoundInput` (the participants' capacities
:math:`k_c`, the optional memory knapsack, the scores and the usage history) and
returns a :class:`Decision` (the problem, the verified result, and what had to be
relaxed). :data:`POLICIES` maps each public name to its :class:`Policy`; the
planner, the FL harness and the Flower integration take their names from it.

The planner scores client :math:`c`'s experts as

.. math::

    S_{ce} = \hat Q_{ce} + b_{ce} - \lambda\, u_e + \xi_{ce},

fitness with the prior where unobserved, exploration bonus, usage penalty
(:math:`\lambda` = ``usage_penalty``, default :attr:`Policy.usage_penalty`) and a
seeded tie-break :math:`\xi_{ce} \sim U(0, 10^{-6})`.

``"flex"``
    FLEX-MoE: maximize :math:`\sum S_{ce} x_{ce}` with every client taking exactly
    :math:`k_c` experts and expert loads within :math:`[L_e, U_e]` from
    :func:`~flexassign.problem.balance_bounds` around targets :math:`t_e` shifted
    toward experts behind their fair share (:func:`~.usage.deficit_targets`,
    :func:`flex_bounds`). If that is infeasible the bounds are made soft
    (``soft_penalty``), then greedy is used; :attr:`Decision.fallback` records it.
``"greedy"``
    The paper's baseline: each client takes its top-:math:`k_c` by score.
``"desirability"``
    The companion paper's alignment: per client, top-:math:`k_c` by the composite
    desirability :math:`\hat Q + b - \lambda u` (:math:`\lambda` 0.3 by default).
``"random"``
    Each client takes :math:`k_c` experts uniformly at random (with a knapsack,
    those that still fit, in random order).

Greedy, desirability and random are verified against the plain tolerance bounds
(no deficit shift) so that the result reports the balance they break.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..backends.greedy import BUDGET_RTOL, fill_in_order
from ..errors import InvalidProblemError, UnsupportedProblemError
from ..problem import AssignmentProblem, balance_bounds, load_excess
from ..result import AssignmentResult
from ..solve import evaluate_assignment, solve_assignment
from .usage import deficit_targets

if TYPE_CHECKING:
    from .config import PlannerConfig

_LOG = logging.getLogger(__name__)

__all__ = [
    "POLICIES",
    "STRATEGIES",
    "Decision",
    "Policy",
    "RoundInput",
    "check_strategy",
    "flex_bounds",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Methods that take ``options["prices"]`` (a warm start): ``auto`` (every problem),
#: the min-cost flow pair (count-based problems) and ``price`` (weighted or knapsack).
PRICED_METHODS = ("auto", "flow", "flow-warm", "price")


@dataclass(frozen=True)
class RoundInput:
    """What a policy sees of one round (built by the planner).

    Attributes
    ----------
    config : PlannerConfig
    capacity : ndarray of int, shape (N,)
        :math:`k_c` per participating client.
    knapsack : mapping
        ``{}`` or ``{"expert_size": ..., "client_budget": ...}`` (memory knapsack).
    scores : ndarray, shape (N, E), or None
        :math:`S` with the tie-break; ``None`` for policies that do not score.
    rng : numpy.random.Generator
        The planner's generator (the random policy draws from it).
    cumulative : ndarray, shape (E,)
        Cumulative client-trainings per expert (flex's deficit targets).
    prices : ndarray, shape (E,), or None
        The previous flex solve's expert prices, a warm start for the flow solver.
    recent : ndarray, shape (E,), or None
        Client-trainings per expert over the last ``balance_window - 1`` closed rounds
        (flex's window bounds); ``None`` (or zeros) for per-round bounds.
    """

    config: PlannerConfig
    capacity: IntArray
    knapsack: Mapping[str, Any]
    scores: FloatArray | None
    rng: np.random.Generator
    cumulative: FloatArray
    prices: FloatArray | None = None
    recent: FloatArray | None = None


@dataclass(frozen=True)
class Decision:
    """A policy's answer: the problem, the verified result, and any fallback."""

    problem: AssignmentProblem
    result: AssignmentResult
    fallback: str | None = None


@dataclass(frozen=True)
class Policy:
    """A named policy: its function, default usage penalty, and whether it scores."""

    name: str
    decide: Callable[[RoundInput], Decision]
    usage_penalty: float = 0.0
    scored: bool = True


def check_strategy(strategy: Any) -> str:
    """``strategy`` if it names a policy, else an error listing the valid names."""
    if not isinstance(strategy, str) or strategy not in POLICIES:
        raise InvalidProblemError(
            f"unknown `strategy` {strategy!r}; valid: {', '.join(repr(s) for s in POLICIES)}"
        )
    return strategy


# ===================================================================== bounds
def flex_bounds(
    capacity: ArrayLike,
    cumulative: ArrayLike,
    config: PlannerConfig,
    upper: ArrayLike | None = None,
    recent: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    r"""Flex's load bounds for a round: ``(L, U, targets)``.

    :math:`t = ` :func:`~.usage.deficit_targets` of the cumulative client-trainings
    with :math:`K = \sum_c k_c`, caps :math:`h_e` (``upper``; default: clients with
    :math:`k_c > 0`) and floors :math:`m_e` = clients with :math:`k_c = E` (they take
    every expert). :math:`[L_e, U_e]` is :func:`~flexassign.problem.balance_bounds`
    of :math:`t` (loads count clients: unit 1), raised to :math:`m_e` and capped at
    :math:`h_e`.

    **Balance window** (``config.balance_window`` :math:`W`, ``recent`` :math:`P_e`,
    the client-trainings of the last :math:`W - 1` closed rounds): the tolerance
    applies to the window's load :math:`P_e + x_e` around its target :math:`P_e + t_e`,

    .. math::

        L_e = \lfloor (1-\varepsilon)(P_e + t_e) \rfloor - P_e, \qquad
        U_e = \lceil (1+\varepsilon)(P_e + t_e) \rceil - P_e,

    so one round may deviate from :math:`t_e` by up to :math:`\varepsilon (P_e + t_e)`
    as long as the window stays balanced, and the deficit-shifted targets carry what
    it left over into the next rounds. With :math:`W = 1` (:math:`P = 0`) these are
    the per-round bounds above. The window bounds always contain :math:`t_e`.
    """
    k = np.asarray(capacity, dtype=np.float64)
    e = config.num_experts
    h = np.full(e, float((k > 0).sum())) if upper is None else np.asarray(upper, float)
    m = np.minimum(np.full(e, float((k >= e).sum())), h)
    t = deficit_targets(cumulative, float(k.sum()), h, config.deficit_shift, lower=m)
    p = np.zeros(e) if recent is None else np.asarray(recent, dtype=np.float64)
    lo, hi = balance_bounds(p + t, config.tolerance, unit=1.0)
    lo, hi = np.maximum(lo - p, 0.0), hi - p
    lo = np.maximum(lo, m)
    return lo, np.minimum(np.maximum(hi, lo), h), t


# ===================================================================== helpers
def plain_problem(inp: RoundInput, scores: ArrayLike) -> AssignmentProblem:
    """Exact-capacity problem with the plain tolerance bounds (no deficit shift)."""
    return AssignmentProblem.balanced(
        scores,
        capacity=inp.capacity,
        tolerance=inp.config.tolerance,
        exact_capacity=True,
        **inp.knapsack,
    )


def solve(
    problem: AssignmentProblem, config: PlannerConfig, prices: FloatArray | None = None
) -> AssignmentResult:
    """Solve with the configured method and limits; unsupported methods fall back to auto.

    ``prices`` go to the solver as ``options["prices"]`` when the method takes them
    for this problem: ``auto`` always (it hands them to ``flow-warm`` or ``price``),
    ``flow``/``flow-warm`` on count-based problems, ``price`` on the others.
    """
    settings = config.solver_settings()
    takes = config.method == "auto" or (
        config.method in PRICED_METHODS and (config.method == "price") != problem.is_unimodular
    )
    if prices is not None and takes and prices.shape == (problem.n_experts,):
        settings["options"] = {"prices": prices}
    try:
        return solve_assignment(problem, **settings)
    except UnsupportedProblemError:
        if config.method == "auto":
            raise
        _LOG.info("method %r cannot model this round's problem: solving with 'auto'", config.method)
        settings["method"] = "auto"
        return solve_assignment(problem, **settings)


def _with_message(result: AssignmentResult, message: str) -> AssignmentResult:
    return dataclasses.replace(result, message=message)


# ===================================================================== policies
def flex(inp: RoundInput) -> Decision:
    """FLEX-MoE: exact balanced assignment; soft bounds, then greedy, if infeasible."""
    assert inp.scores is not None
    cfg, k, knap = inp.config, inp.capacity, inp.knapsack
    upper = None
    if knap:
        budget = np.asarray(knap["client_budget"], dtype=np.float64)
        fits = cfg.cost.param_bytes[None, :] <= budget[:, None] * (1 + BUDGET_RTOL)
        upper = ((k[:, None] > 0) & fits).sum(axis=0).astype(np.float64)
    lo, hi, _ = flex_bounds(k, inp.cumulative, cfg, upper, inp.recent)
    problem = AssignmentProblem(
        inp.scores, capacity=k, min_experts=k, expert_min_load=lo, expert_max_load=hi, **knap
    )
    result = solve(problem, cfg, inp.prices)
    if result.success:
        return Decision(problem, result)
    soft = problem.replace(load_penalty=cfg.soft_penalty)
    soft_result = solve(soft, cfg)
    if soft_result.success and soft_result.loads is not None:
        broken = float(load_excess(soft_result.loads, lo, hi).sum())
        note = (
            f"hard balance bounds infeasible ({result.message}); solved with soft bounds "
            f"(load_penalty={cfg.soft_penalty:g}), total excess load {broken:g}"
        )
        _LOG.info("flex fallback: %s", note)
        return Decision(soft, _with_message(soft_result, note), "soft-bounds")
    greedy_result = solve_assignment(problem, method="greedy", seed=cfg.seed)
    note = f"flex failed ({result.message}; soft: {soft_result.message}); fell back to greedy top-k"
    _LOG.warning("flex fallback: %s", note)
    return Decision(problem, _with_message(greedy_result, note), "greedy")


def greedy(inp: RoundInput) -> Decision:
    """The paper's baseline: each client's top-:math:`k_c` by score."""
    assert inp.scores is not None
    problem = plain_problem(inp, inp.scores)
    return Decision(problem, solve_assignment(problem, method="greedy", seed=inp.config.seed))


def desirability(inp: RoundInput) -> Decision:
    r"""The companion paper's alignment: top-:math:`k_c` by :math:`\hat Q + b - \lambda u`.

    The usage penalty is in the scores (:attr:`Policy.usage_penalty` 0.3 by default).
    """
    return greedy(inp)


def random(inp: RoundInput) -> Decision:
    """Each client takes :math:`k_c` experts in a uniformly random order."""
    n, e = inp.capacity.shape[0], inp.config.num_experts
    problem = plain_problem(inp, np.zeros((n, e)))
    order = np.stack([inp.rng.permutation(e) for _ in range(n)]) if n else np.zeros((0, e), int)
    if inp.knapsack:
        size = inp.config.cost.param_bytes
        budget = np.asarray(inp.knapsack["client_budget"], dtype=np.float64)
        x = fill_in_order(order, inp.capacity, size, budget)
    else:
        x = np.zeros((n, e), dtype=bool)
        take = np.arange(e)[None, :] < inp.capacity[:, None]
        np.put_along_axis(x, order, take, axis=1)
    result = evaluate_assignment(problem, x, method="random", message="uniformly random experts")
    return Decision(problem, result)


#: Every policy by its public name (``Planner(strategy=...)``, the harness, Flower).
POLICIES: Mapping[str, Policy] = MappingProxyType(
    {
        "flex": Policy("flex", flex),
        "greedy": Policy("greedy", greedy),
        "desirability": Policy("desirability", desirability, usage_penalty=0.3),
        "random": Policy("random", random, scored=False),
    }
)

#: The policy names, in order.
STRATEGIES: tuple[str, ...] = tuple(POLICIES)
