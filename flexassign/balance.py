r"""The balance-bound formula, in one place: load bounds around a target, load excess.

Used by :meth:`flexassign.AssignmentProblem.rebalanced` (hence
:meth:`~flexassign.AssignmentProblem.balanced`) and by the planner's per-round bounds
(:mod:`flexassign.alignment.policies`); :func:`load_excess` is the soft-bound penalty's
measure in :meth:`~flexassign.AssignmentProblem.objective`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["BOUND_RTOL", "balance_bounds", "load_excess"]

#: Relative slack that keeps float noise from moving a load bound by a whole unit
#: (and from turning float load bounds into the wrong integer count bounds).
BOUND_RTOL = 1e-9


def balance_bounds(
    target: ArrayLike, tolerance: float, unit: float | None = 1.0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r"""Load bounds :math:`[L_e, U_e]` around target loads :math:`t_e`: the one balance formula.

    .. math::

        L_e = u \left\lfloor \frac{(1-\varepsilon)\, t_e}{u} \right\rfloor, \qquad
        U_e = u \left\lceil \frac{(1+\varepsilon)\, t_e}{u} \right\rceil,

    where :math:`u` (``unit``) is the granularity of achievable loads: 1 when loads
    count clients, the common weight when all client weights are equal, their
    greatest common divisor when all are integers. With ``unit=None`` (weights of
    no common granularity, e.g. data fractions) the bounds are not rounded:
    :math:`L_e = (1-\varepsilon) t_e`, :math:`U_e = (1+\varepsilon) t_e`.
    A relative slack of :data:`BOUND_RTOL` keeps float noise from widening the
    bounds by a whole unit, and :math:`L_e \ge 0`. Used by
    :meth:`~flexassign.AssignmentProblem.rebalanced` and by the planner's per-round
    bounds.

    Examples
    --------
    >>> lo, hi = balance_bounds([14 / 3], 0.1)
    >>> lo.tolist(), hi.tolist()
    ([4.0], [6.0])
    >>> [b.tolist() for b in balance_bounds(10 / 3, 0.1, unit=2.0)]
    [2.0, 4.0]
    >>> [round(float(b), 6) for b in balance_bounds(1.0, 0.1, unit=None)]
    [0.9, 1.1]
    """
    t = np.asarray(target, dtype=np.float64)
    lo = (1.0 - tolerance) * t
    hi = (1.0 + tolerance) * t
    if unit is not None:
        slack = BOUND_RTOL * np.maximum(1.0, t / unit)
        lo = unit * np.floor(lo / unit + slack)
        hi = unit * np.ceil(hi / unit - slack)
    return np.maximum(lo, 0.0), hi


def load_excess(loads: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> NDArray[np.float64]:
    """Per expert, how far a load lies outside ``[lower, upper]`` (0 inside).

    Examples
    --------
    >>> load_excess([1, 5, 3], 2, 4).tolist()
    [1.0, 1.0, 0.0]
    """
    y = np.asarray(loads, dtype=np.float64)
    return np.maximum(np.asarray(lower) - y, 0.0) + np.maximum(y - np.asarray(upper), 0.0)
