"""Load-balance statistics shared by the planner, the harness and the Flower strategy."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["coefficient_of_variation"]


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
