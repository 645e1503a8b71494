"""Statistics shared by the planner, the harness and the Flower strategy: the load
balance (coefficient of variation) and rank agreement (Spearman correlation)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["coefficient_of_variation", "rank_average", "spearman"]


def coefficient_of_variation(loads: ArrayLike) -> float:
    r"""Coefficient of variation :math:`\sigma / \mu` of a load vector.

    The population standard deviation over the mean. It is undefined, and
    returned as NaN, when the mean is not positive (no load at all, or an
    empty vector): "perfectly balanced" and "nothing trained" must not look alike.

    Examples
    --------
    >>> coefficient_of_variation([2, 2, 2])
    0.0
    >>> round(coefficient_of_variation([0, 2]), 6)
    1.0
    >>> coefficient_of_variation([0, 0])
    nan
    """
    a = np.asarray(loads, dtype=np.float64)
    mean = float(a.mean()) if a.size else 0.0
    return float(a.std()) / mean if mean > 0 else math.nan


def rank_average(values: ArrayLike) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given their average rank (``scipy.stats.rankdata``).

    Examples
    --------
    >>> rank_average([3.0, 1.0, 3.0]).tolist()
    [2.5, 1.0, 2.5]
    """
    a = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    # first index of each run of equal values, and the run's average rank
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], a.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(a.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    r"""Spearman's rank correlation :math:`\rho` of two equal-length 1-D arrays.

    The Pearson correlation of the average ranks (ties averaged), as
    ``scipy.stats.spearmanr``. NaN when fewer than two pairs remain or either side is
    constant (no ranking to agree with). Pairs where either value is NaN are dropped.

    Raises
    ------
    ValueError
        If ``x`` and ``y`` differ in length or are not 1-D (the message names them).

    Examples
    --------
    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40])
    1.0
    >>> spearman([1, 2, 3], [3, 2, 1])
    -1.0
    >>> spearman([1, 1, 1], [1, 2, 3])
    nan
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"`x` and `y` must be 1-D of equal length; got shapes {a.shape} and {b.shape}"
        )
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size < 2:
        return math.nan
    ra, rb = rank_average(a), rank_average(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if den == 0.0:
        return math.nan
    return float(np.clip(float(ra @ rb) / den, -1.0, 1.0))
