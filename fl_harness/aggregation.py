r"""Server-side aggregation as pure functions.

Shared parts are averaged by sample count (FedAvg):
:math:`\theta = \sum_c n_c \theta_c / \sum_c n_c`.
Each expert is averaged over the clients that trained it, weighted by how many samples
their routers sent to it: :math:`\phi_e = \sum_{c \ni e} u_{ce} \phi_{ce} /
\sum_{c \ni e} u_{ce}`. An expert nobody trained, or whose trainers routed no sample to
it (total usage 0), keeps its current weights. Inputs are never modified.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["aggregate_experts", "aggregate_shared", "weighted_average"]

StateDict = dict[str, Tensor]


def _check_weight(name: str, w: float) -> float:
    w = float(w)
    if not math.isfinite(w) or w < 0:
        raise ValueError(f"`{name}` weights must be finite and >= 0; got {w}")
    return w


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
        raise ValueError("`states` must not be empty")
    if len(states) != len(weights):
        raise ValueError(f"got {len(states)} `states` but {len(weights)} `weights`")
    w = [_check_weight("weights", x) for x in weights]
    total = sum(w)
    if total <= 0:
        raise ValueError("total weight is zero: nothing to average")
    keys = list(states[0].keys())
    for i, s in enumerate(states[1:], start=1):
        if list(s.keys()) != keys:
            raise ValueError(f"state {i} has keys that differ from state 0")
    best = max(range(len(w)), key=w.__getitem__)
    out: StateDict = {}
    for k in keys:
        ref = states[0][k]
        if not torch.is_floating_point(ref):
            out[k] = states[best][k].detach().clone()
            continue
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for s, wi in zip(states, w, strict=True):
            if wi:
                acc += s[k].detach().to(torch.float64) * (wi / total)
        out[k] = acc.to(ref.dtype)
    return out


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
        raise ValueError("`updates` must not be empty")
    return weighted_average([s for s, _ in updates], [n for _, n in updates])


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
    contributions: dict[int, tuple[list[Mapping[str, Tensor]], list[float]]] = {
        e: ([], []) for e in current
    }
    for i, (states, usage) in enumerate(updates):
        for e, s in states.items():
            if e not in contributions:
                raise ValueError(f"update {i} trains expert {e}, which `current` lacks")
            contributions[e][0].append(s)
            contributions[e][1].append(_check_weight("usage", usage.get(e, 0.0)))
    out: dict[int, StateDict] = {}
    for e, (states_e, w_e) in contributions.items():
        if states_e and sum(w_e) > 0:
            out[e] = weighted_average(states_e, w_e)
        else:
            out[e] = {k: v.detach().clone() for k, v in current[e].items()}
    return out
