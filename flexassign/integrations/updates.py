r"""One round's aggregate from clients' updates, for any framework (numpy only).

:func:`aggregate_updates` is the aggregation step of :class:`FlexMoEStrategy
<flexassign.integrations.flower.FlexMoEStrategy>` without Flower types: the Flower
strategy calls it, and an NVIDIA FLARE controller or a hand-written loop can call it
too, so every framework aggregates a round identically. It imports numpy and
flexassign only.

Examples
--------
>>> import numpy as np
>>> from flexassign.integrations.layout import ExpertLayout
>>> layout = ExpertLayout(expert=None, local=None, stacked=r"^w$")
>>> glob = {"b": np.zeros(1), "w": np.zeros((2, 1))}
>>> ups = [({"b": np.ones(1), "w[0]": np.full((1, 1), 4.0)}, 1, {0: 1.0}),
...        ({"b": np.full(1, 4.0), "w[0]": np.full((1, 1), 1.0)}, 2, {0: 3.0})]
>>> out = aggregate_updates(glob, ups, layout=layout)
>>> out["b"], out["w"].ravel()
(array([3.]), array([1.75, 0.  ]))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .aggregation import DEFAULT_TRIM, aggregate_experts, weighted_average
from .layout import ExpertLayout

__all__ = ["Update", "aggregate_updates"]

#: One client's update: its arrays (shared + trained experts, :meth:`ExpertLayout.select`
#: names), its sample count :math:`n_c`, and each trained expert's weight :math:`u_{ce}`.
Update = tuple[Mapping[str, Any], float, Mapping[int, float]]


def aggregate_updates(
    global_arrays: Mapping[str, np.ndarray],
    updates: Sequence[Update],
    *,
    layout: ExpertLayout,
    method: str = "mean",
    trim: float = DEFAULT_TRIM,
) -> dict[str, np.ndarray]:
    r"""New global arrays from checked updates.

    Shared parameters: :math:`\theta = \sum_c n_c \theta_c / \sum_c n_c` over the
    updates (or the trimmed mean / median with those weights). Expert :math:`e`: the
    same over the updates that carry :math:`e`, weighted by :math:`u_{ce}` (a missing
    entry counts as 0); stacked blocks are written back into their tensors. Experts
    no update carries, or with zero total weight, keep their current value; with no
    updates or zero total samples the shared parameters are kept too. Inputs are not
    modified.

    Parameters
    ----------
    global_arrays : mapping of str to ndarray
        Current global arrays (shared + every expert; no local parameter).
    updates : sequence of (arrays, n_samples, {expert: weight})
        Updates that passed :meth:`ExpertLayout.check_update`.
    layout : ExpertLayout
    method, trim
        See :func:`flexassign.integrations.aggregation.weighted_average`.

    Returns
    -------
    dict of str to ndarray
        Same names (and order), shapes and dtypes as ``global_arrays``.
    """
    shared, experts = layout.split(global_arrays)
    new_shared = {k: np.array(v, copy=True) for k, v in shared.items()}
    if updates and sum(float(n) for _, n, _ in updates) > 0 and shared:
        states = [{k: a[k] for k in shared} for a, _, _ in updates]
        new_shared = weighted_average(states, [float(n) for _, n, _ in updates],
                                      method=method, trim=trim)
    per_client = []
    for arrays, _, weights in updates:
        _, sent = layout.split(arrays)
        per_client.append((sent, {e: float(weights.get(e, 0.0)) for e in sent}))
    new_experts = aggregate_experts(experts, per_client, method=method, trim=trim)
    merged: dict[str, Any] = dict(new_shared)
    for params in new_experts.values():
        merged.update(params)
    # named arrays are replaced, stacked blocks written back into their tensors
    return layout.merge(global_arrays, merged)
