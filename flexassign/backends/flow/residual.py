"""Residual-graph glue shared by the min-cost-flow backends (``flow`` and ``flow-warm``).

Both certify an assignment, or improve it, on the *compressed* residual graph whose
nodes are the E experts plus one hub node ``O`` (a client's unused capacity). This
module builds its expert-to-expert arcs once for both.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["min_swap_costs"]


def min_swap_costs(
    w_flat: NDArray[np.int64],
    width: int,
    rows: int,
    held: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]],
    open_: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]],
) -> None:
    r"""Lower ``w_flat[e * width + e']`` to the cheapest swap of ``e`` for ``e'`` by one client.

    A client holding expert :math:`e` that could take the open candidate
    :math:`e'` instead moves one unit of load from :math:`e` to :math:`e'` at cost
    :math:`C_{ce} - C_{ce'}`; the arc weight is the minimum over clients (in place).

    Parameters
    ----------
    w_flat : ndarray of int64
        The ``width x width`` arc-weight matrix, flattened (row = from-expert).
    width : int
        Row length of the matrix (``E + 1`` with the hub).
    rows : int
        Number of clients; client indices are ``0 .. rows - 1``.
    held, open_ : tuple of three int64 arrays
        ``(client, expert, cost)`` of the held arcs (sorted by client) and of the
        open candidate arcs.

    Examples
    --------
    >>> w = np.full(9, 99, dtype=np.int64)
    >>> held = (np.array([0]), np.array([0]), np.array([5]))
    >>> open_ = (np.array([0]), np.array([1]), np.array([3]))
    >>> min_swap_costs(w, 3, 1, held, open_)
    >>> int(w[0 * 3 + 1])
    2
    """
    hc, he, c_held = held
    oc, oe, c_open = open_
    starts = np.searchsorted(hc, np.arange(rows))
    slot = np.arange(hc.size) - starts[hc]
    kmax = int(slot.max()) + 1 if slot.size else 0
    held_by_slot = np.full((kmax, rows), -1, dtype=np.int64)
    cost_by_slot = np.zeros((kmax, rows), dtype=np.int64)
    held_by_slot[slot, hc] = he
    cost_by_slot[slot, hc] = c_held
    for t in range(kmax):
        src = held_by_slot[t, oc]
        ok = src >= 0
        np.minimum.at(w_flat, src[ok] * width + oe[ok], cost_by_slot[t, oc[ok]] - c_open[ok])
