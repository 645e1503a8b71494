r"""Client capacity profiling: how many experts a client can train this round.

A :class:`ClientProfile` gives a client's sustained training throughput :math:`F_c`
(FLOP/s), memory available to training :math:`M_c` (bytes), downlink and uplink
bandwidth :math:`B^\downarrow_c, B^\uparrow_c` (bytes/s), availability, and the local
work per round :math:`S_c` (samples processed: dataset size x local epochs). A
:class:`ModelCost` gives the shared part (feature extractor, router) and each expert
:math:`e`: parameter bytes :math:`p_e` and training FLOPs per routed sample
:math:`f_e` (forward + backward, about 3x forward).

Training a set :math:`A` of experts costs, with sequential download, training and
upload,

.. math::

    T_c(A) = \frac{p_0 + \sum_{e\in A} p_e}{B^\downarrow_c}
           + \frac{S_c\,(f_0 + \rho \sum_{e\in A} f_e)}{F_c}
           + \frac{p_0 + \sum_{e\in A} p_e}{B^\uparrow_c},
    \qquad
    \mathrm{Mem}_c(A) = r_0 + \mu\,\big(p_0 + \textstyle\sum_{e\in A} p_e\big),

where :math:`\rho \in (0, 1]` is the fraction of samples each assigned expert
processes (1 = dense over assigned experts, the conservative default), :math:`\mu`
the training memory factor (weights, gradients and two Adam moments: 4) and
:math:`r_0` a reserve for activations and runtime. The client can train :math:`A`
if :math:`T_c(A) \le D` (the round deadline) and :math:`\mathrm{Mem}_c(A) \le M_c`.
:func:`capacity_limits` derives

* :math:`k_c`, the largest :math:`k \le E` such that the :math:`k` *largest* experts
  meet the deadline (time must hold whichever experts are chosen) and the :math:`k`
  *smallest* fit in memory;
* when expert sizes differ, the memory budget :math:`(M_c - r_0)/\mu - p_0` in
  parameter bytes, which the planner passes to the solver as a knapsack
  (``expert_size = p``, ``client_budget``), so memory holds exactly.

Every constraint is monotone: more memory, compute or bandwidth, or a later
deadline, never lowers :math:`k_c` or the budget.

Profiles are declared, taken from :data:`~.presets.DEVICE_PRESETS`, or refined from measured
round times (:meth:`ClientProfile.refine`): the measured throughput
:math:`\hat F = S (f_0 + \rho \sum_A f_e) / \max(T^{meas} - T^{comm}, 0.05\,T^{meas})`
updates :math:`F_c \leftarrow (1-\omega) F_c + \omega \hat F`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from .._validation import check_real, has_keys, is_int, is_real
from ..errors import InvalidProblemError, ProblemTypeError

__all__ = [
    "CapacityLimits",
    "ClientProfile",
    "ModelCost",
    "capacity_limits",
]



def _pos(name: str, value: Any, *, allow_zero: bool = False, upper: float | None = None) -> float:
    """A finite number > 0 (>= 0 with ``allow_zero``), at most ``upper``."""
    return check_real(name, value, lo=0.0, lo_open=not allow_zero, hi=upper)


@dataclass(frozen=True)
class ClientProfile:
    """A client's resources (validated, immutable; use :meth:`replace` to change).

    Parameters
    ----------
    compute : float
        Sustained training throughput, FLOP/s (not the chip's peak).
    memory : float
        Bytes of memory training may use.
    downlink, uplink : float
        Bandwidth in bytes/s.
    availability : float
        Probability in (0, 1] that the client is online and finishes a round when
        selected. The planner records it; simulations use it for dropouts and
        client sampling. It does not change :math:`k_c`.
    samples_per_round : int
        Local samples processed per round (dataset size x local epochs).
    device_class : str
        A label (a :data:`DEVICE_PRESETS` key for presets, ``"custom"`` otherwise).

    Examples
    --------
    >>> p = ClientProfile.preset("laptop")
    >>> p.device_class, p.memory / 2**30
    ('laptop', 8.0)
    """

    compute: float
    memory: float
    downlink: float
    uplink: float
    availability: float = 1.0
    samples_per_round: int = 1000
    device_class: str = "custom"

    def __post_init__(self) -> None:
        for name in ("compute", "memory", "downlink", "uplink"):
            object.__setattr__(self, name, _pos(name, getattr(self, name)))
        object.__setattr__(
            self, "availability", _pos("availability", self.availability, upper=1.0)
        )
        s = _pos("samples_per_round", self.samples_per_round, allow_zero=True)
        if s != round(s):
            raise InvalidProblemError(
                f"`samples_per_round` must be an integer; got {self.samples_per_round!r}"
            )
        object.__setattr__(self, "samples_per_round", int(s))
        if not isinstance(self.device_class, str):
            raise ProblemTypeError(
                f"`device_class` must be a string; got {type(self.device_class).__name__}"
            )

    @classmethod
    def preset(cls, device_class: str, **overrides: Any) -> ClientProfile:
        """A profile from :data:`~.presets.DEVICE_PRESETS`, with optional field overrides."""
        from .presets import DEVICE_PRESETS

        try:
            base = DEVICE_PRESETS[device_class]
        except (KeyError, TypeError):
            valid = ", ".join(repr(k) for k in DEVICE_PRESETS)
            raise InvalidProblemError(
                f"unknown `device_class` {device_class!r}; valid: {valid}"
            ) from None
        return base.replace(**overrides) if overrides else base

    def replace(self, **changes: Any) -> ClientProfile:
        """A re-validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def refine(
        self,
        *,
        round_time: float,
        n_experts: int | Sequence[int],
        cost: ModelCost,
        samples: int | None = None,
        rate: float = 0.3,
    ) -> ClientProfile:
        r"""Update ``compute`` with an EMA of the throughput measured in one round.

        Parameters
        ----------
        round_time : float
            Measured seconds for download, training and upload.
        n_experts : int or sequence of int
            How many experts were trained, or their ids (for unequal sizes).
        cost : ModelCost
        samples : int, optional
            Samples processed (default ``samples_per_round``); also EMA-updated.
        rate : float
            :math:`\omega \in (0, 1]`.
        """
        t = _pos("round_time", round_time)
        w = _pos("rate", rate, upper=1.0)
        ids = cost.expert_ids(n_experts)
        s = self.samples_per_round if samples is None else int(samples)
        nbytes = cost.shared_param_bytes + float(cost.param_bytes[ids].sum())
        comm = nbytes / self.downlink + nbytes / self.uplink
        work = s * cost.work_per_sample(ids)
        if work <= 0:
            return self
        measured = work / max(t - comm, 0.05 * t)
        new_s = round((1 - w) * self.samples_per_round + w * s)
        return self.replace(
            compute=(1 - w) * self.compute + w * measured, samples_per_round=int(new_s)
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, init=False)
class ModelCost:
    """The cost of the shared model part and of each expert.

    Parameters
    ----------
    param_bytes : float or sequence of float
        :math:`p_e`, bytes of each expert's parameters (a scalar for equal experts;
        then ``num_experts`` is required).
    flops_per_sample : float or sequence of float
        :math:`f_e`, training FLOPs (forward + backward) per sample routed to it.
    num_experts : int, optional
        Needed when both are scalars.
    shared_param_bytes, shared_flops_per_sample : float
        :math:`p_0, f_0`, the shared feature extractor and router.
    routed_fraction : float
        :math:`\\rho \\in (0, 1]`.
    memory_factor : float
        :math:`\\mu \\ge 1`, training bytes per parameter byte (4 for Adam).
    reserve_bytes : float
        :math:`r_0`, memory for activations and runtime.
    """

    param_bytes: np.ndarray
    flops_per_sample: np.ndarray
    shared_param_bytes: float
    shared_flops_per_sample: float
    routed_fraction: float
    memory_factor: float
    reserve_bytes: float

    def __init__(
        self,
        param_bytes: float | Sequence[float],
        flops_per_sample: float | Sequence[float],
        *,
        num_experts: int | None = None,
        shared_param_bytes: float = 0.0,
        shared_flops_per_sample: float = 0.0,
        routed_fraction: float = 1.0,
        memory_factor: float = 4.0,
        reserve_bytes: float = 0.0,
    ) -> None:
        pb = _costs("param_bytes", param_bytes)
        fl = _costs("flops_per_sample", flops_per_sample)
        sizes = {a.shape[0] for a in (pb, fl) if a.ndim == 1}
        if pb.ndim > 1 or fl.ndim > 1 or len(sizes) > 1:
            raise InvalidProblemError(
                "`param_bytes` and `flops_per_sample` must be scalars or 1-D of equal length"
            )
        if sizes:
            e = sizes.pop()
            if num_experts is not None and num_experts != e:
                raise InvalidProblemError(
                    f"`num_experts` is {num_experts} but the per-expert costs have {e} entries"
                )
        elif num_experts is None:
            raise InvalidProblemError("`num_experts` is required when both costs are scalars")
        else:
            e = int(num_experts)
        if e < 1:
            raise InvalidProblemError(f"`num_experts` must be >= 1; got {e}")
        pb = np.broadcast_to(pb, (e,)).copy()
        fl = np.broadcast_to(fl, (e,)).copy()
        for name, arr in (("param_bytes", pb), ("flops_per_sample", fl)):
            if not np.isfinite(arr).all() or (arr < 0).any():
                raise InvalidProblemError(f"`{name}` must be finite and >= 0")
            arr.setflags(write=False)
        object.__setattr__(self, "param_bytes", pb)
        object.__setattr__(self, "flops_per_sample", fl)
        object.__setattr__(
            self,
            "shared_param_bytes",
            _pos("shared_param_bytes", shared_param_bytes, allow_zero=True),
        )
        object.__setattr__(
            self,
            "shared_flops_per_sample",
            _pos("shared_flops_per_sample", shared_flops_per_sample, allow_zero=True),
        )
        object.__setattr__(
            self, "routed_fraction", _pos("routed_fraction", routed_fraction, upper=1.0)
        )
        mf = _pos("memory_factor", memory_factor)
        if mf < 1:
            raise InvalidProblemError(f"`memory_factor` must be >= 1; got {memory_factor!r}")
        object.__setattr__(self, "memory_factor", mf)
        object.__setattr__(
            self, "reserve_bytes", _pos("reserve_bytes", reserve_bytes, allow_zero=True)
        )

    @property
    def num_experts(self) -> int:
        return int(self.param_bytes.shape[0])

    @property
    def uniform(self) -> bool:
        """Whether every expert has the same parameter bytes."""
        return bool(np.all(self.param_bytes == self.param_bytes[0]))

    def expert_ids(self, experts: int | Sequence[int]) -> np.ndarray:
        """Ids from a sequence, or the ``k`` largest experts for an int ``k``."""
        if is_int(experts):
            k = int(cast(int, experts))
            if not 0 <= k <= self.num_experts:
                raise InvalidProblemError(
                    f"`n_experts` must be in 0..{self.num_experts}; got {k}"
                )
            return np.argsort(-self.param_bytes, kind="stable")[:k]
        ids = np.asarray(list(experts), dtype=np.int64)  # type: ignore[arg-type]
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_experts):
            raise InvalidProblemError(f"expert ids must be in 0..{self.num_experts - 1}")
        return ids

    def work_per_sample(self, ids: np.ndarray) -> float:
        r""":math:`f_0 + \rho \sum_{e \in A} f_e`."""
        return self.shared_flops_per_sample + self.routed_fraction * float(
            self.flops_per_sample[ids].sum()
        )

    def round_time(self, profile: ClientProfile, experts: int | Sequence[int]) -> float:
        """:math:`T_c(A)` in seconds (an int ``k`` means the ``k`` largest experts)."""
        ids = self.expert_ids(experts)
        nbytes = self.shared_param_bytes + float(self.param_bytes[ids].sum())
        compute = profile.samples_per_round * self.work_per_sample(ids) / profile.compute
        return nbytes / profile.downlink + compute + nbytes / profile.uplink

    def to_dict(self) -> dict[str, Any]:
        return {
            "param_bytes": self.param_bytes.tolist(),
            "flops_per_sample": self.flops_per_sample.tolist(),
            "shared_param_bytes": self.shared_param_bytes,
            "shared_flops_per_sample": self.shared_flops_per_sample,
            "routed_fraction": self.routed_fraction,
            "memory_factor": self.memory_factor,
            "reserve_bytes": self.reserve_bytes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCost:
        """A cost from :meth:`to_dict`'s output; missing or unknown keys are errors."""
        keys = {f.name for f in dataclasses.fields(cls)}
        if not has_keys(data, keys):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise InvalidProblemError(f"`model_cost` must have the keys {sorted(keys)}; got {got}")
        d = dict(data)
        return cls(d.pop("param_bytes"), d.pop("flops_per_sample"), **d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelCost) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))


def _costs(name: str, value: Any) -> np.ndarray:
    """A number or a sequence of numbers as a float array (booleans and text are errors)."""
    items = value.tolist() if isinstance(value, np.ndarray) else value
    flat = items if isinstance(items, list | tuple) else [items]
    if not all(is_real(v) for v in flat):
        raise ProblemTypeError(f"`{name}` must be a number or a sequence of numbers")
    return np.asarray(flat if flat is items else items, dtype=np.float64)


@dataclass(frozen=True)
class CapacityLimits:
    """What a client can train this round.

    Attributes
    ----------
    max_experts : int
        :math:`k_c`.
    memory_budget : float or None
        Parameter bytes available for experts (set when expert sizes differ).
    round_time : float
        Predicted seconds to train :math:`k_c` of the largest experts.
    binding : str
        What limits :math:`k_c`: ``"deadline"``, ``"memory"`` or ``"experts"`` (all fit).
    """

    max_experts: int
    memory_budget: float | None
    round_time: float
    binding: str


def capacity_limits(
    profile: ClientProfile, cost: ModelCost, deadline: float | None = None
) -> CapacityLimits:
    """Derive :math:`k_c` (and the memory budget) from a profile and a deadline.

    Parameters
    ----------
    profile : ClientProfile
    cost : ModelCost
    deadline : float, optional
        Round deadline :math:`D` in seconds; ``None`` means no deadline.

    Examples
    --------
    >>> from flexassign.alignment.presets import DEFAULT_MODEL_COST, DEVICE_PRESETS
    >>> [capacity_limits(p, DEFAULT_MODEL_COST, 300.0).max_experts
    ...  for p in DEVICE_PRESETS.values()]
    [1, 3, 6, 8, 8]
    """
    d = math.inf if deadline is None else _pos("deadline", deadline)
    e = cost.num_experts
    budget_params = (profile.memory - cost.reserve_bytes) / cost.memory_factor
    budget = budget_params - cost.shared_param_bytes
    smallest = np.concatenate([[0.0], np.cumsum(np.sort(cost.param_bytes))])
    mem_k = -1
    if budget >= 0:
        mem_k = int(np.searchsorted(smallest, budget * (1 + 1e-12), side="right")) - 1
    time_k = -1
    for k in range(e + 1):
        if cost.round_time(profile, k) <= d * (1 + 1e-12):
            time_k = k
        else:
            break
    k = max(min(mem_k, time_k, e), 0)
    binding = "experts" if k == e else ("memory" if mem_k <= time_k else "deadline")
    return CapacityLimits(
        max_experts=k,
        memory_budget=None if cost.uniform else max(budget, 0.0),
        round_time=cost.round_time(profile, k),
        binding=binding,
    )
