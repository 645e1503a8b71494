r"""A synthetic feedback model for studying planners without training anything.

Each client :math:`c` has a hidden true fitness :math:`T_{ce} \in [0.05, 0.95]` for
every expert: a global skew (some experts suit most clients, which is what makes
greedy top-k pile onto them) plus a client-specific preference,

.. math::

    T_{ce} = \mathrm{clip}\big(0.3 + 0.4\,\sigma\, g_e + 0.3\, z_{ce} + 0.05\,\epsilon_{ce},
    \; 0.05,\; 0.95\big),

with :math:`g_e` decreasing linearly from 1 (expert 0) to 0, :math:`\sigma` the
``skew``, :math:`z_{ce} = 1` for the client's two "home" experts (0 otherwise) and
:math:`\epsilon \sim N(0, 1)`. When the client trains a set :math:`A` of experts, its
:math:`n_c` samples are routed to them in proportion to :math:`T_{ce}`, and the
reported accuracy on expert :math:`e` is Binomial(:math:`u_{ce}, T_{ce}`) /
:math:`u_{ce}`, the loss :math:`-\ln T_{ce}` plus noise. A client drops out (never
reports) with probability ``dropout``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validation import check_int, check_real
from ..errors import InvalidProblemError, ProblemTypeError
from .feedback import Feedback
from .planner import Planner

__all__ = ["SyntheticPopulation", "simulate"]


@dataclass
class SyntheticPopulation:
    """Clients with hidden true fitness, and a seeded feedback generator.

    Parameters
    ----------
    num_clients, num_experts : int
    skew : float
        :math:`\\sigma`, strength of the global preference for low-index experts.
    dropout : float
        Probability that a selected client never reports.
    samples : int
        :math:`n_c`, samples each client routes per round.
    seed : int
    """

    num_clients: int
    num_experts: int
    skew: float = 1.0
    dropout: float = 0.0
    samples: int = 200
    seed: int = 0
    true_fitness: NDArray[np.float64] = field(init=False, repr=False)
    client_ids: list[str] = field(init=False, repr=False)
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.num_clients = check_int("num_clients", self.num_clients, lo=1)
        self.num_experts = check_int("num_experts", self.num_experts, lo=1)
        self.skew = check_real("skew", self.skew, lo=0.0)
        self.dropout = check_real("dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        self.samples = check_int("samples", self.samples, lo=1)
        self.seed = check_int("seed", self.seed, lo=0)
        gen = np.random.default_rng(self.seed)
        n, e = self.num_clients, self.num_experts
        g = np.linspace(1.0, 0.0, e)
        z = np.zeros((n, e))
        for c in range(n):
            z[c, gen.choice(e, size=min(2, e), replace=False)] = 1.0
        noise = gen.standard_normal((n, e))
        self.true_fitness = np.clip(0.3 + 0.4 * self.skew * g + 0.3 * z + 0.05 * noise, 0.05, 0.95)
        self.client_ids = [f"client-{c}" for c in range(n)]
        self.rng = np.random.default_rng(gen.integers(2**63))

    def index(self, client_id: Hashable) -> int:
        return self.client_ids.index(str(client_id))

    def sample_clients(self, m: int) -> list[str]:
        """``m`` distinct clients drawn uniformly."""
        check_int("m", m, lo=0)
        idx = self.rng.choice(self.num_clients, size=min(m, self.num_clients), replace=False)
        return [self.client_ids[i] for i in sorted(idx)]

    def feedback(self, client_id: Hashable, experts: Sequence[int]) -> Feedback | None:
        """What the client reports after training ``experts`` (``None``: it dropped out)."""
        if self.dropout and self.rng.random() < self.dropout:
            return None
        ex = list(experts)
        t = self.true_fitness[self.index(client_id), ex]
        if not ex:
            return Feedback(experts=[], counts=[], accuracy=[], loss=[])
        counts = self.rng.multinomial(self.samples, t / t.sum())
        correct = self.rng.binomial(counts, t)
        acc = np.where(counts > 0, correct / np.maximum(counts, 1), 0.0)
        loss = np.maximum(-np.log(t) + 0.05 * self.rng.standard_normal(len(ex)), 0.0)
        return Feedback(
            experts=ex, counts=counts.tolist(), accuracy=acc.tolist(), loss=loss.tolist()
        )

    def quality(self, client_id: Hashable, experts: Sequence[int]) -> float:
        """Mean true fitness of an assignment (NaN if empty)."""
        ex = list(experts)
        if not ex:
            return math.nan
        return float(self.true_fitness[self.index(client_id), ex].mean())


def simulate(
    planner: Planner,
    population: SyntheticPopulation,
    *,
    rounds: int,
    clients_per_round: int,
) -> dict[str, Any]:
    """Run ``rounds`` of plan -> feedback -> report and collect metrics.

    Returns
    -------
    dict
        ``cv`` (cumulative utilization CV after each round), ``quality`` (mean true
        fitness of the assigned pairs per round), ``fallbacks`` (rounds flex relaxed),
        ``explored`` (fraction of (client, expert) pairs of participating clients
        ever tried), ``loads`` (final cumulative client-trainings per expert).
    """
    if not isinstance(planner, Planner):
        raise ProblemTypeError(f"`planner` must be a Planner; got {type(planner).__name__}")
    if not isinstance(population, SyntheticPopulation):
        raise ProblemTypeError(
            f"`population` must be a SyntheticPopulation; got {type(population).__name__}"
        )
    if population.num_experts != planner.num_experts:
        raise InvalidProblemError(
            f"`population` has {population.num_experts} experts but `planner` has "
            f"{planner.num_experts}"
        )
    check_int("rounds", rounds, lo=0)
    check_int("clients_per_round", clients_per_round, lo=0)
    cvs: list[float] = []
    quality: list[float] = []
    fallbacks = 0
    for _ in range(rounds):
        ids = population.sample_clients(clients_per_round)
        plan = planner.plan_round(ids)
        fallbacks += plan.fallback is not None
        q = [population.quality(c, plan[c]) for c in ids if plan[c]]
        quality.append(float(np.mean(q)) if q else math.nan)
        for c in ids:
            fb = population.feedback(c, plan[c])
            if fb is not None:
                planner.report(c, fb)
        cvs.append(planner.utilization_cv())
    planner.end_round()
    seen = planner.fitness.clients()
    obs = planner.fitness.observations(seen)
    return {
        "cv": cvs,
        "quality": quality,
        "fallbacks": fallbacks,
        "explored": float((obs > 0).mean()) if len(seen) else 0.0,
        "loads": planner.loads().tolist(),
    }
