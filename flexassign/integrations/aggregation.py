r"""Framework-neutral FLEX-MoE aggregation: pure numpy functions.

The Flower strategy (:mod:`flexassign.integrations.flower`) and the PyTorch harness
(:mod:`fl_harness`) both aggregate through this module, so they aggregate
identically. Nothing here imports torch or Flower, and no input is ever modified.

Shared parameters are averaged by sample count (FedAvg),

.. math:: \theta = \sum_c n_c \theta_c \Big/ \sum_c n_c ,

and each expert over the clients that trained it, weighted by how many samples their
routers sent to it,

.. math:: \phi_e = \sum_{c \ni e} u_{ce} \phi_{ce} \Big/ \sum_{c \ni e} u_{ce} .

An expert nobody trained, or whose trainers routed no sample to it (total usage 0),
keeps its current weights. Besides the weighted mean (``method="mean"``) two robust
per-coordinate rules are available:

``"trimmed-mean"``
    the weighted mean of the central ``1 - 2 trim`` of the weight mass: sort each
    coordinate's values, cut ``trim`` of the total weight from each end (partially
    cutting a state that straddles the cut), average the rest with the remaining
    weights. With equal weights and ``trim = k/m`` it drops the ``k`` smallest and
    ``k`` largest of ``m`` values.
``"median"``
    the weighted median: the value at half of the weight mass (the mean of the two
    values that meet there when the half falls on a boundary; with equal weights this
    is :func:`numpy.median`).

Float arrays are combined in float64 and cast back to their dtype; integer and
boolean arrays (counters, masks) are copied from the highest-weight state.
:func:`bound_weights` caps claimed weights (sample counts, usage counts) so that a
client that lies about its data cannot dominate an average, and
:func:`check_arrays` validates a client's arrays against the global ones.

Examples
--------
>>> import numpy as np
>>> a, b, c = ({"w": np.array([0.0])}, {"w": np.array([3.0])}, {"w": np.array([300.0])})
>>> aggregate_shared([(a, 1), (b, 2)])["w"]
array([2.])
>>> weighted_average([a, b, c], [1, 1, 1], method="median")["w"]
array([3.])
>>> bound_weights([10, 12, 1e9], max_ratio=10.0)
array([ 10.,  12., 120.])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import check_real, is_real
from ..errors import FlexAssignError

__all__ = [
    "AGGREGATION_METHODS",
    "DEFAULT_MAX_WEIGHT_RATIO",
    "DEFAULT_TRIM",
    "AggregationError",
    "aggregate_experts",
    "aggregate_shared",
    "bound_weights",
    "check_arrays",
    "weighted_average",
]

#: Names accepted by ``method``.
AGGREGATION_METHODS = ("mean", "trimmed-mean", "median")
#: Fraction of the weight mass cut from each end by ``"trimmed-mean"``.
DEFAULT_TRIM = 0.2
#: A claimed weight is capped at this multiple of the median claim (:func:`bound_weights`).
DEFAULT_MAX_WEIGHT_RATIO = 10.0

Arrays = Mapping[str, NDArray[Any]]
StateDict = dict[str, NDArray[Any]]


class AggregationError(FlexAssignError, ValueError):
    """Inputs to an aggregation function are inconsistent or invalid."""


def _check_method(method: str, trim: float) -> float:
    if method not in AGGREGATION_METHODS:
        valid = ", ".join(repr(m) for m in AGGREGATION_METHODS)
        raise AggregationError(f"unknown `method` {method!r}; valid: {valid}")
    return check_real("trim", trim, lo=0.0, hi=0.5, hi_open=True, error=AggregationError,
                      type_error=AggregationError)


def _check_weight(name: str, index: int, w: Any) -> float:
    if not is_real(w) or not math.isfinite(float(w)) or float(w) < 0:
        raise AggregationError(f"`{name}` must be finite and >= 0; entry {index} is {w!r}")
    return float(w)


def _is_float(a: NDArray[Any]) -> bool:
    return bool(np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating))


def check_arrays(arrays: Arrays, reference: Arrays, *, name: str = "arrays") -> None:
    """Check that ``arrays`` has exactly the names, shapes and dtypes of ``reference``
    and only finite float values.

    Parameters
    ----------
    arrays : mapping of str to ndarray
        What a client sent.
    reference : mapping of str to ndarray
        The global arrays it must match.
    name : str
        How the error message names ``arrays``.

    Raises
    ------
    AggregationError
        Naming the missing or extra keys, or the first array with a wrong shape,
        dtype or a non-finite value.

    Examples
    --------
    >>> ref = {"w": np.zeros(2, dtype=np.float32)}
    >>> check_arrays({"w": np.ones(2, dtype=np.float32)}, ref)
    >>> check_arrays({"w": np.array([1.0, np.nan], dtype=np.float32)}, ref)
    Traceback (most recent call last):
    ...
    flexassign.integrations.aggregation.AggregationError: `arrays`: `w` has 1 non-finite value(s)
    """
    missing = [k for k in reference if k not in arrays]
    extra = [k for k in arrays if k not in reference]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        raise AggregationError(f"`{name}`: {'; '.join(parts)}")
    for k, ref in reference.items():
        a = arrays[k]
        if not isinstance(a, np.ndarray):
            raise AggregationError(f"`{name}`: `{k}` is a {type(a).__name__}, not an ndarray")
        if a.shape != np.shape(ref):
            raise AggregationError(f"`{name}`: `{k}` has shape {a.shape}; expected {np.shape(ref)}")
        if a.dtype != np.asarray(ref).dtype:
            raise AggregationError(
                f"`{name}`: `{k}` has dtype {a.dtype}; expected {np.asarray(ref).dtype}"
            )
        if _is_float(a):
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            if bad:
                raise AggregationError(f"`{name}`: `{k}` has {bad} non-finite value(s)")


def _combine(stack: NDArray[np.float64], w: NDArray[np.float64], method: str,
             trim: float) -> NDArray[np.float64]:
    """Combine ``stack`` (m, ...) along axis 0 with positive weights ``w`` (m,)."""
    total = float(w.sum())
    shape = (-1,) + (1,) * (stack.ndim - 1)
    if method == "mean":
        return np.tensordot(w / total, stack, axes=1)
    order = np.argsort(stack, axis=0, kind="stable")
    xs = np.take_along_axis(stack, order, axis=0)
    ws = np.broadcast_to(w.reshape(shape), stack.shape)
    ws = np.take_along_axis(ws, order, axis=0)
    cum = np.cumsum(ws, axis=0)
    if method == "trimmed-mean":
        lo, hi = trim * total, (1.0 - trim) * total
        keep = np.clip(np.minimum(cum, hi) - np.maximum(cum - ws, lo), 0.0, None)
        return (keep * xs).sum(axis=0) / keep.sum(axis=0)
    half = total / 2.0
    i_lo = np.argmax(cum >= half, axis=0)[None]
    i_hi = np.argmax(cum > half, axis=0)[None]
    x_lo = np.take_along_axis(xs, i_lo, axis=0)[0]
    x_hi = np.take_along_axis(xs, i_hi, axis=0)[0]
    return 0.5 * (x_lo + x_hi)


def weighted_average(
    states: Sequence[Arrays],
    weights: Sequence[float] | NDArray[Any],
    *,
    method: str = "mean",
    trim: float = DEFAULT_TRIM,
) -> StateDict:
    """Combine state dicts with identical keys and shapes, coordinate by coordinate.

    Parameters
    ----------
    states : sequence of mapping of str to ndarray
        The state dicts.
    weights : sequence of float
        Finite, non-negative weights with a positive sum; states of weight 0 take no
        part (their values are not read).
    method : {"mean", "trimmed-mean", "median"}
        The weighted mean, or a robust rule (see the module docstring).
    trim : float
        Fraction of the weight mass cut from each end by ``"trimmed-mean"``, in
        ``[0, 0.5)``.

    Returns
    -------
    dict of str to ndarray
        New arrays, in the key order of ``states[0]``, with its dtypes.

    Raises
    ------
    AggregationError
        If ``states`` is empty, lengths, keys or shapes differ, a weight is negative
        or not finite, the total weight is zero, or ``method``/``trim`` is invalid.

    Examples
    --------
    >>> s = [{"w": np.array([v])} for v in (1.0, 2.0, 3.0, 100.0)]
    >>> float(weighted_average(s, [1, 1, 1, 1], method="trimmed-mean", trim=0.25)["w"][0])
    2.5
    """
    trim = _check_method(method, trim)
    if len(states) == 0:
        raise AggregationError("`states` must not be empty")
    if len(states) != len(weights):
        raise AggregationError(f"got {len(states)} `states` but {len(weights)} `weights`")
    w = np.array([_check_weight("weights", i, x) for i, x in enumerate(weights)])
    total = float(w.sum())
    if not total > 0 or not math.isfinite(total):
        raise AggregationError("total weight is zero: nothing to average")
    keys = list(states[0].keys())
    for i, s in enumerate(states[1:], start=1):
        if set(s.keys()) != set(keys):
            raise AggregationError(
                f"`states` entry {i} has keys {sorted(s)}; entry 0 has {sorted(keys)}"
            )
    used = [i for i in range(len(states)) if w[i] > 0]
    best = max(range(len(w)), key=lambda i: w[i])
    wu = w[used]
    out: StateDict = {}
    for k in keys:
        ref = np.asarray(states[0][k])
        for i in used:
            if np.shape(states[i][k]) != ref.shape:
                raise AggregationError(
                    f"`states` entry {i}: `{k}` has shape {np.shape(states[i][k])}; "
                    f"entry 0 has {ref.shape}"
                )
        if not _is_float(ref):
            out[k] = np.array(states[best][k], copy=True)
            continue
        stack = np.stack([np.asarray(states[i][k], dtype=np.float64) for i in used])
        out[k] = np.asarray(_combine(stack, wu, method, trim)).astype(ref.dtype, copy=False)
    return out


def aggregate_shared(
    updates: Sequence[tuple[Arrays, float]],
    *,
    method: str = "mean",
    trim: float = DEFAULT_TRIM,
) -> StateDict:
    """FedAvg (or a robust rule) of the shared parameters.

    Parameters
    ----------
    updates : sequence of (state dict, n_samples)
        Each client's shared arrays and its sample count.
    method, trim
        As in :func:`weighted_average`.

    Returns
    -------
    dict of str to ndarray

    Raises
    ------
    AggregationError
        If ``updates`` is empty or every sample count is zero (callers keep the
        current weights then), or as :func:`weighted_average`.

    Examples
    --------
    >>> a, b = {"w": np.array([0.0])}, {"w": np.array([3.0])}
    >>> aggregate_shared([(a, 1), (b, 2)])["w"]
    array([2.])
    """
    if len(updates) == 0:
        raise AggregationError("`updates` must not be empty")
    return weighted_average([s for s, _ in updates], [n for _, n in updates],
                            method=method, trim=trim)


def aggregate_experts(
    current: Mapping[int, Arrays],
    updates: Sequence[tuple[Mapping[int, Arrays], Mapping[int, float]]],
    *,
    method: str = "mean",
    trim: float = DEFAULT_TRIM,
) -> dict[int, StateDict]:
    """Usage-weighted per-expert averaging.

    Parameters
    ----------
    current : mapping of int to state dict
        Every global expert's current arrays.
    updates : sequence of (expert_states, usage)
        For each client: ``{e: arrays}`` for the experts it trained, and ``{e: u_ce}``
        its usage count per trained expert (a missing entry counts as 0).
    method, trim
        As in :func:`weighted_average`.

    Returns
    -------
    dict of int to state dict
        One entry per expert of ``current``; untrained experts (or trained with zero
        total usage) keep copies of their current arrays.

    Raises
    ------
    AggregationError
        If an update names an expert ``current`` lacks, its arrays differ from the
        expert's current names or shapes, or a usage is negative or not finite.

    Examples
    --------
    >>> cur = {0: {"w": np.array([0.0])}, 1: {"w": np.array([9.0])}}
    >>> up = [({0: {"w": np.array([1.0])}}, {0: 1}), ({0: {"w": np.array([4.0])}}, {0: 2})]
    >>> out = aggregate_experts(cur, up)
    >>> out[0]["w"], out[1]["w"]
    (array([3.]), array([9.]))
    """
    trim = _check_method(method, trim)
    contributions: dict[int, tuple[list[Arrays], list[float]]] = {e: ([], []) for e in current}
    for i, (states, usage) in enumerate(updates):
        for e, s in states.items():
            if e not in contributions:
                raise AggregationError(f"`updates` entry {i} trains expert {e}, which "
                                       "`current` lacks")
            ref = current[e]
            if set(s) != set(ref) or any(np.shape(s[k]) != np.shape(ref[k]) for k in ref):
                raise AggregationError(
                    f"`updates` entry {i}: expert {e}'s arrays differ from the current "
                    "ones in names or shapes"
                )
            contributions[e][0].append(s)
            contributions[e][1].append(_check_weight("usage", i, usage.get(e, 0.0)))
    out: dict[int, StateDict] = {}
    for e, (states_e, w_e) in contributions.items():
        if states_e and sum(w_e) > 0:
            out[e] = weighted_average(states_e, w_e, method=method, trim=trim)
        else:
            out[e] = {k: np.array(v, copy=True) for k, v in current[e].items()}
    return out


def bound_weights(
    claims: ArrayLike,
    *,
    caps: ArrayLike | None = None,
    max_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO,
) -> NDArray[np.float64]:
    r"""Cap claimed weights so that no claim dominates an average by lying.

    Each claim :math:`w_i` becomes :math:`\min(w_i, \mathrm{cap}_i, r\,\tilde w)`, with
    :math:`\mathrm{cap}_i` a per-claim bound (e.g. the dataset size the client
    declared; ``inf`` or NaN for none), :math:`r` = ``max_ratio`` and :math:`\tilde w`
    the median of the positive claims after the per-claim caps. With ``r = 10`` a
    client claiming :math:`10^9` samples weighs at most :math:`10 \tilde w`, whatever
    it claims; among :math:`m - 1` honest clients that all claim :math:`\tilde w` its
    share of the average is at most :math:`10/(10 + m - 1)`. The median itself moves
    only if at least half of the claims lie.

    Parameters
    ----------
    claims : array_like of float
        Finite, non-negative claims.
    caps : array_like of float, optional
        Per-claim upper bounds (NaN or ``inf``: none).
    max_ratio : float or None
        ``r >= 1``; ``None`` disables the median bound.

    Returns
    -------
    ndarray of float64

    Raises
    ------
    AggregationError
        If a claim is negative or not finite, ``caps`` has another length or a
        negative entry, or ``max_ratio < 1``.

    Examples
    --------
    >>> bound_weights([10, 12, 1e9], caps=[np.inf, 5, np.nan], max_ratio=None)
    array([1.e+01, 5.e+00, 1.e+09])
    """
    w = np.asarray(claims, dtype=np.float64).reshape(-1)
    for i, x in enumerate(w):
        if not math.isfinite(x) or x < 0:
            raise AggregationError(f"`claims` must be finite and >= 0; entry {i} is {x}")
    out = w.copy()
    if caps is not None:
        c = np.asarray(caps, dtype=np.float64).reshape(-1)
        if c.shape != w.shape:
            raise AggregationError(f"`caps` has {c.size} entries but `claims` has {w.size}")
        if np.any(c < 0):
            raise AggregationError("`caps` must be >= 0 (NaN or inf: no cap)")
        out = np.where(np.isnan(c), out, np.minimum(out, c))
    if max_ratio is not None:
        r = check_real("max_ratio", max_ratio, lo=1.0, error=AggregationError,
                       type_error=AggregationError)
        positive = out[out > 0]
        if positive.size:
            out = np.minimum(out, r * float(np.median(positive)))
    return out
