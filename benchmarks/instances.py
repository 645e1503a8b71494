"""Seeded benchmark instances: clustered fitness, popular experts, capacity tiers.

Clients fall into clusters (think: label-skewed data); each cluster prefers a few
experts, and a Zipf-like popularity makes some experts attractive to everyone, so
the greedy top-k baseline overloads them and the balance constraints bind.

Variants
--------
``count``     count-based loads (totally unimodular), +-20 % balance.
``weighted``  loads weighted by each client's sample count (integers, log-normal).
``knapsack``  count-based loads plus a memory knapsack (expert sizes 1-3 units,
              client budgets of 1.6-2.4 units per expert slot).
Each comes with capacity as a maximum (``exact=False``) or as an exact count
(``exact=True``, ``min_experts = capacity``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexassign import AssignmentProblem

__all__ = ["VARIANTS", "Instance", "make_fitness", "make_instance", "parse_size", "size_arg"]

VARIANTS = ("count", "weighted", "knapsack")


@dataclass(frozen=True)
class Instance:
    name: str
    n: int
    e: int
    variant: str
    exact: bool
    seed: int
    problem: AssignmentProblem


def make_fitness(n: int, e: int, rng: np.random.Generator) -> np.ndarray:
    """Fitness in (0, 1): popularity + cluster preference + client noise."""
    n_clusters = max(2, min(16, e // 4))
    cluster = rng.integers(0, n_clusters, size=n)
    popularity = 1.0 / (1.0 + rng.permutation(e)) ** 0.7  # a few experts everyone likes
    centers = rng.normal(0.0, 1.0, size=(n_clusters, e))
    # each cluster strongly prefers a handful of experts
    favourites = rng.random((n_clusters, e)) < min(0.25, 4.0 / e)
    centers += 2.0 * favourites
    logits = 2.5 * popularity[None, :] + centers[cluster] + 0.6 * rng.normal(size=(n, e))
    return 1.0 / (1.0 + np.exp(-logits))


def make_instance(
    n: int, e: int, variant: str, *, exact: bool = False, seed: int = 0, tolerance: float = 0.2
) -> Instance:
    """Build one seeded instance (same arguments, same instance)."""
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}; got {variant!r}")
    rng = np.random.default_rng([seed, n, e, VARIANTS.index(variant)])
    fitness = make_fitness(n, e, rng)
    capacity = np.minimum(rng.choice([1, 2, 3, 4], size=n, p=[0.2, 0.4, 0.3, 0.1]), e)
    kwargs: dict = {}
    if variant == "weighted":
        kwargs["client_weight"] = np.maximum(
            1, np.round(rng.lognormal(mean=5.0, sigma=0.8, size=n))
        ).astype(float)
    elif variant == "knapsack":
        size = 1 + (rng.random(e) < 0.5) + (rng.random(e) < 0.25)
        kwargs["expert_size"] = size.astype(float)
        kwargs["client_budget"] = np.ceil(capacity * rng.uniform(1.6, 2.4, size=n))
    problem = AssignmentProblem.balanced(
        fitness, capacity=capacity, tolerance=tolerance, exact_capacity=exact, **kwargs
    )
    name = f"{n}x{e}-{variant}-{'exact' if exact else 'max'}"
    return Instance(name, n, e, variant, exact, seed, problem)


def parse_size(text: str) -> tuple[int, int]:
    """``"10000x256"`` (or ``"10_000x256"``) as ``(10000, 256)``.

    Raises ``ValueError`` saying what is expected; the scripts turn it into a one-line
    usage error naming their flag.

    >>> parse_size("10_000x256")
    (10000, 256)
    """
    try:
        n, e = (int(v) for v in text.lower().replace("_", "").split("x"))
    except ValueError:
        raise ValueError(f"must look like 10000x256; got {text!r}") from None
    if n < 1 or e < 2:
        raise ValueError(f"needs at least 1 client and 2 experts; got {text!r}")
    return n, e


def size_arg(text: str) -> tuple[int, int]:
    """:func:`parse_size` as an ``argparse`` type: a bad size becomes a usage error
    (exit code 2) naming the argument, not a traceback."""
    import argparse

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
