r"""Server-side aggregation for torch state dicts: the one framework-neutral
implementation, :mod:`flexassign.integrations.aggregation`, with torch <-> numpy
conversion at the boundary. The Flower strategy calls the same functions, so the
harness and Flower aggregate identically.

Shared parts are averaged by sample count (FedAvg):
:math:`\theta = \sum_c n_c \theta_c / \sum_c n_c`.
Each expert is averaged over the clients that trained it, weighted by how many samples
their routers sent to it: :math:`\phi_e = \sum_{c \ni e} u_{ce} \phi_{ce} /
\sum_{c \ni e} u_{ce}`. An expert nobody trained, or whose trainers routed no sample to
it (total usage 0), keeps its current weights. Inputs are never modified. Errors are
:class:`~flexassign.integrations.aggregation.AggregationError` (a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from flexassign.integrations import aggregation as _np_agg

__all__ = ["aggregate_experts", "aggregate_shared", "weighted_average"]

StateDict = dict[str, Tensor]


def _to_numpy(state: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _to_torch(state: Mapping[str, np.ndarray], like: Mapping[str, Tensor]) -> StateDict:
    return {k: torch.from_numpy(np.array(v, copy=True)).to(like[k].dtype)
            for k, v in state.items()}


def weighted_average(states: Sequence[Mapping[str, Tensor]],
                     weights: Sequence[float]) -> StateDict:
    """Weighted mean of state dicts with identical keys and shapes.

    Parameters
    ----------
    states : sequence of mapping
        The state dicts.
    weights : sequence of float
        Non-negative weights with a positive sum.

    Returns
    -------
    dict
        New tensors (float tensors averaged in float64, cast back to their dtype;
        non-float tensors are taken from the highest-weight state).

    Raises
    ------
    ValueError
        If `states` is empty, lengths or keys differ, or the total weight is zero.
    """
    if len(states) == 0:
        raise _np_agg.AggregationError("`states` must not be empty")
    out = _np_agg.weighted_average([_to_numpy(s) for s in states], list(weights))
    return _to_torch(out, states[0])


def aggregate_shared(updates: Sequence[tuple[Mapping[str, Tensor], float]]) -> StateDict:
    """FedAvg of the shared parameters.

    Parameters
    ----------
    updates : sequence of (state_dict, n_samples)
        Each client's shared tensors and its sample count.

    Returns
    -------
    dict
        The sample-weighted mean.

    Raises
    ------
    ValueError
        If `updates` is empty or every sample count is zero (the caller keeps the
        current weights then).

    Examples
    --------
    >>> import torch
    >>> a, b = {"w": torch.tensor([0.0])}, {"w": torch.tensor([3.0])}
    >>> aggregate_shared([(a, 1), (b, 2)])["w"]
    tensor([2.])
    """
    if len(updates) == 0:
        raise _np_agg.AggregationError("`updates` must not be empty")
    out = _np_agg.aggregate_shared([(_to_numpy(s), n) for s, n in updates])
    return _to_torch(out, updates[0][0])


def aggregate_experts(
    current: Mapping[int, Mapping[str, Tensor]],
    updates: Sequence[tuple[Mapping[int, Mapping[str, Tensor]], Mapping[int, float]]],
) -> dict[int, StateDict]:
    """Usage-weighted per-expert averaging.

    Parameters
    ----------
    current : mapping of int to state dict
        Every global expert's current tensors (keys relative to ``experts.{e}.``).
    updates : sequence of (expert_states, usage)
        For each client: ``{e: tensors}`` for the experts it trained, and ``{e: u_ce}``
        its usage count per trained expert (a missing entry counts as 0).

    Returns
    -------
    dict of int to state dict
        One entry per expert in `current`; untrained experts (or trained with zero total
        usage) keep copies of their current tensors.

    Raises
    ------
    ValueError
        If an update names an expert not in `current`, or a usage is negative/non-finite.

    Examples
    --------
    >>> import torch
    >>> cur = {0: {"w": torch.tensor([0.0])}, 1: {"w": torch.tensor([9.0])}}
    >>> up = [({0: {"w": torch.tensor([1.0])}}, {0: 1}),
    ...       ({0: {"w": torch.tensor([4.0])}}, {0: 2})]
    >>> out = aggregate_experts(cur, up)
    >>> out[0]["w"], out[1]["w"]
    (tensor([3.]), tensor([9.]))
    """
    out = _np_agg.aggregate_experts(
        {e: _to_numpy(s) for e, s in current.items()},
        [({e: _to_numpy(s) for e, s in states.items()}, dict(usage))
         for states, usage in updates])
    return {e: _to_torch(s, current[e]) for e, s in out.items()}
