"""What the benchmark runs: sizes, variants, methods, and which method runs where.

A *method* is a backend name plus options (and, for ``highs+warm``, a warm start
from ``lp-round`` whose time is included). ``max_pairs`` caps the problem size
(N x E) a method is run on, so the full suite fits in about 30 minutes; ``count_only``
methods need count-based loads (min-cost flow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FULL_SIZES", "METHODS", "QUICK_SIZES", "Method", "applicable"]

#: (N clients, E experts)
FULL_SIZES: tuple[tuple[int, int], ...] = (
    (10, 8),
    (100, 16),
    (1_000, 64),
    (10_000, 64),
    (10_000, 256),
    (100_000, 64),
)
QUICK_SIZES: tuple[tuple[int, int], ...] = ((10, 8), (100, 16))


@dataclass(frozen=True)
class Method:
    """One benchmarked method.

    Attributes
    ----------
    name : str
        Label in the tables.
    backend : str
        ``method=`` for :func:`flexassign.solve_assignment`.
    options : dict
        ``options=`` for it.
    solve_kwargs : dict
        Other keyword arguments for it (e.g. ``mip_gap``).
    max_pairs : dict
        Largest N x E per variant family (``count``, ``weighted``, ``knapsack``); a
        missing family means "not run".
    warm_from : str or None
        Backend whose answer warm-starts this one (its time is added).
    exact : bool
        Whether it proves optimality (its objective must agree with the others').
    """

    name: str
    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    solve_kwargs: dict[str, Any] = field(default_factory=dict)
    max_pairs: dict[str, int] = field(default_factory=dict)
    warm_from: str | None = None
    exact: bool = False


_ALL = 10**9
_SMALL = 64_000  # 1,000 x 64
_MID = 640_000  # 10,000 x 64

METHODS: tuple[Method, ...] = (
    Method("greedy", "greedy", max_pairs={"count": _ALL, "weighted": _ALL, "knapsack": _MID}),
    Method(
        "greedy-balanced",
        "greedy-balanced",
        max_pairs={"count": _MID, "weighted": _MID, "knapsack": _MID},
    ),
    Method("auto", "auto", max_pairs={"count": _ALL}, exact=True),
    Method("flow-full", "flow", options={"prune": False}, max_pairs={"count": _ALL}, exact=True),
    Method(
        "lp-round",
        "lp-round",
        max_pairs={"count": _MID, "weighted": _MID, "knapsack": _MID},
    ),
    # HiGHS's MIP on 10,000 x 64 count-based loads did not return within 120 s (time
    # limit 30 s) in our runs; the LP-based methods cover that size
    Method(
        "highs",
        "highs",
        max_pairs={"count": _SMALL, "weighted": _SMALL, "knapsack": _SMALL},
        exact=True,
    ),
    Method(
        "highs-gap1e-4",
        "highs",
        solve_kwargs={"mip_gap": 1e-4},
        max_pairs={"weighted": _SMALL, "knapsack": _SMALL},
    ),
    Method(
        "highs+warm",
        "highs",
        warm_from="lp-round",
        max_pairs={"weighted": _SMALL, "knapsack": _SMALL},
        exact=True,
    ),
    Method(
        "scipy",
        "scipy",
        max_pairs={"count": _SMALL, "weighted": _SMALL, "knapsack": _SMALL},
        exact=True,
    ),
    Method(
        "cpsat",
        "cpsat",
        max_pairs={"count": _SMALL, "weighted": _SMALL, "knapsack": _SMALL},
        exact=True,
    ),
    Method(
        "pyomo",
        "pyomo",
        max_pairs={"count": _SMALL, "weighted": _SMALL, "knapsack": _SMALL},
        exact=True,
    ),
)


def applicable(method: Method, n: int, e: int, variant: str) -> bool:
    """Whether ``method`` runs on an N x E instance of ``variant``."""
    return n * e <= method.max_pairs.get(variant, 0)
