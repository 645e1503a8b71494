r"""Per-round training feedback from one client.

After training its assigned experts :math:`A_c`, client :math:`c` reports for each
:math:`e \in A_c` the usage count :math:`u_{ce}` (samples its local router sent to
:math:`e`), the accuracy :math:`a_{ce} \in [0, 1]` and the mean loss :math:`l_{ce} \ge 0`
on those samples. :class:`Feedback` checks everything that can be checked without the
planner's state at construction; :meth:`Planner.report <flexassign.alignment.Planner.report>`
checks the rest (known expert ids, experts actually assigned) before changing anything.

:class:`ProbeFeedback` is its sibling for the dense, unbiased signal: the loss (and
accuracy) of each *probed* expert on the client's local validation slice, measured
with the global model *before* local training, for experts the client did not train
too (:meth:`Planner.report_probe <flexassign.alignment.Planner.report_probe>`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._files import jsonable
from .._validation import is_int, is_real
from ..errors import InvalidFeedbackError

__all__ = ["MAX_COUNT", "MAX_PROBE_LOSS", "Feedback", "ProbeFeedback", "check_round_load"]

#: The largest sample count a report may carry, per expert, and the largest sample load
#: an expert may collect in one round: what a planner state file stores exactly (JSON
#: numbers read as float64 integers; :meth:`Planner.load` rejects more).
MAX_COUNT = 2**53

#: Largest probe loss accepted (nats). A cross-entropy beyond it carries no ranking
#: information the loss signal could use (:math:`e^{-50}` underflows every signal),
#: so a larger value is treated as a malformed row.
MAX_PROBE_LOSS = 1e4


def _number(name: str, value: Any, i: int) -> float:
    if not is_real(value):
        raise InvalidFeedbackError(
            f"`{name}` must hold numbers; entry {i} is {type(value).__name__} {value!r}"
        )
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        return math.inf if value > 0 else -math.inf


def _seq(name: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise InvalidFeedbackError(
            f"`{name}` must be a sequence (one entry per expert); got {type(value).__name__}"
        )
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise InvalidFeedbackError(f"`{name}` must be 1-D; got shape {arr.shape}")
    return tuple(arr.tolist())


@dataclass(frozen=True, init=False)
class Feedback:
    """What one client reports after a round, one entry per trained expert.

    Parameters
    ----------
    experts : sequence of int
        Expert ids the client trained (a subset of what it was assigned; no repeats).
    counts : sequence of int
        :math:`u_{ce} \\ge 0`, samples routed to each expert.
    accuracy : sequence of float, optional
        :math:`a_{ce} \\in [0, 1]` on the routed samples. Needed by the accuracy signal.
    loss : sequence of float, optional
        :math:`l_{ce} \\ge 0`, mean loss on the routed samples. Needed by the loss signal.
    round_time : float, optional
        Measured wall time of the client's round in seconds (download, training,
        upload); refines the client's throughput estimate.
    train_samples : int, optional
        Local samples processed this round (epochs x dataset size); defaults to
        :math:`\\sum_e u_{ce}`. Used with ``round_time``.

    Raises
    ------
    InvalidFeedbackError
        Mismatched lengths, repeated or negative expert ids, negative or fractional
        counts, counts (or ``train_samples``) above :data:`MAX_COUNT`, NaN or infinite
        values, accuracy outside :math:`[0, 1]`, negative loss, a non-positive
        ``round_time``. NaN accuracy or loss is accepted only where the
        count is 0 (no samples, nothing measured); such entries carry no signal value.

    Examples
    --------
    >>> fb = Feedback(experts=[0, 3], counts=[120, 40], accuracy=[0.8, 0.6], loss=[0.5, 1.1])
    >>> fb.experts, fb.total_count
    ((0, 3), 160)
    """

    experts: tuple[int, ...]
    counts: tuple[int, ...]
    accuracy: tuple[float, ...] | None
    loss: tuple[float, ...] | None
    round_time: float | None
    train_samples: int | None

    def __init__(
        self,
        experts: Sequence[int],
        counts: Sequence[int],
        accuracy: Sequence[float] | None = None,
        loss: Sequence[float] | None = None,
        *,
        round_time: float | None = None,
        train_samples: int | None = None,
    ) -> None:
        ex = _expert_ids(experts)
        n = len(ex)
        cnt_raw = _seq("counts", counts)
        if len(cnt_raw) != n:
            raise InvalidFeedbackError(
                f"`counts` has {len(cnt_raw)} entries but `experts` has {n}"
            )
        cnt: list[int] = []
        for i, v in enumerate(cnt_raw):
            f = _number("counts", v, i)
            if not math.isfinite(f) or f < 0 or f != round(f):
                raise InvalidFeedbackError(
                    f"`counts` must hold non-negative integers; entry {i} (expert {ex[i]}) is {v}"
                )
            if f > MAX_COUNT or (is_int(v) and int(v) > MAX_COUNT):
                raise InvalidFeedbackError(
                    f"`counts` must be at most 2**53 (what a planner state file stores); "
                    f"entry {i} (expert {ex[i]}) is {v}"
                )
            cnt.append(int(f))

        def values(name: str, raw: Any, upper: float | None) -> tuple[float, ...] | None:
            if raw is None:
                return None
            seq = _seq(name, raw)
            if len(seq) != n:
                raise InvalidFeedbackError(
                    f"`{name}` has {len(seq)} entries but `experts` has {n}"
                )
            out: list[float] = []
            for i, v in enumerate(seq):
                f = _number(name, v, i)
                if math.isnan(f):
                    if cnt[i] != 0:
                        raise InvalidFeedbackError(
                            f"`{name}` is NaN for expert {ex[i]} (entry {i}), which has "
                            f"{cnt[i]} samples; NaN is accepted only where the count is 0"
                        )
                elif not math.isfinite(f) or f < 0 or (upper is not None and f > upper):
                    rng = "[0, 1]" if upper is not None else "finite and >= 0"
                    raise InvalidFeedbackError(
                        f"`{name}` must be {'in ' if upper is not None else ''}{rng}; "
                        f"entry {i} (expert {ex[i]}) is {f}"
                    )
                out.append(f)
            return tuple(out)

        acc = values("accuracy", accuracy, 1.0)
        los = values("loss", loss, None)
        rt = None
        if round_time is not None:
            rt = _number("round_time", round_time, 0)
            if not (math.isfinite(rt) and rt > 0):
                raise InvalidFeedbackError(f"`round_time` must be finite and > 0; got {rt}")
        ts = None
        if train_samples is not None:
            f = _number("train_samples", train_samples, 0)
            if not math.isfinite(f) or f < 0 or f != round(f) or f > MAX_COUNT:
                raise InvalidFeedbackError(
                    f"`train_samples` must be a non-negative integer, at most 2**53; "
                    f"got {train_samples}"
                )
            ts = int(f)
        object.__setattr__(self, "experts", tuple(ex))
        object.__setattr__(self, "counts", tuple(cnt))
        object.__setattr__(self, "accuracy", acc)
        object.__setattr__(self, "loss", los)
        object.__setattr__(self, "round_time", rt)
        object.__setattr__(self, "train_samples", ts)

    @property
    def total_count(self) -> int:
        """:math:`\\sum_e u_{ce}`."""
        return int(sum(self.counts))

    @property
    def samples(self) -> int:
        """Local samples processed: ``train_samples`` or, if not given, ``total_count``."""
        return self.total_count if self.train_samples is None else self.train_samples

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable view (NaN written as ``None``)."""
        out: dict[str, Any] = jsonable(
            {
                "experts": self.experts,
                "counts": self.counts,
                "accuracy": self.accuracy,
                "loss": self.loss,
                "round_time": self.round_time,
                "train_samples": self.train_samples,
            }
        )
        return out


def check_round_load(sample_loads: Any, feedback: Feedback, client_id: Any) -> None:
    """Raise unless adding ``feedback.counts`` keeps every expert's sample load of the
    round (``sample_loads``, indexed by expert) within :data:`MAX_COUNT`.

    Whatever :meth:`Planner.report` accepts must survive ``save`` and ``load``: a state
    file stores a round's sample loads exactly only up to ``2**53``.
    """
    for j, n in zip(feedback.experts, feedback.counts, strict=True):
        total = float(sample_loads[j]) + float(n)
        if total > MAX_COUNT:
            raise InvalidFeedbackError(
                f"`feedback.counts` of client {client_id!r} would bring expert {j}'s sample "
                f"load this round to {total:.6g}, above 2**53 (what a planner state file "
                "stores)"
            )


def _expert_ids(value: Any) -> list[int]:
    """Distinct non-negative integer expert ids (errors name ``experts``)."""
    ex: list[int] = []
    for i, v in enumerate(_seq("experts", value)):
        if not is_int(v):
            raise InvalidFeedbackError(
                f"`experts` must hold integer expert ids; entry {i} is {v!r}"
            )
        if v < 0:
            raise InvalidFeedbackError(f"`experts` must be >= 0; entry {i} is {v}")
        ex.append(int(v))
    if len(set(ex)) != len(ex):
        dup = next(e for e in ex if ex.count(e) > 1)
        raise InvalidFeedbackError(f"`experts` lists expert {dup} more than once")
    return ex


@dataclass(frozen=True, init=False)
class ProbeFeedback:
    r"""A probe row: each probed expert's fit to one client's data, before training.

    The client runs the global model (shared parts, its own router or none, and one
    expert at a time) forward on a local validation slice it does not train on, and
    reports per probed expert :math:`e` the mean loss :math:`l^{p}_{ce}` and, optionally,
    the accuracy :math:`a^{p}_{ce}`. Unlike :class:`Feedback` it covers experts the client
    was *not* assigned, and it is measured on held-out data, so it says "does :math:`e`
    fit my data", not "did my router use :math:`e`".

    Parameters
    ----------
    experts : sequence of int
        Probed expert ids (distinct, >= 0; at least one).
    loss : sequence of float
        Mean loss of each probed expert on the slice: finite, in
        :math:`[0,` :data:`MAX_PROBE_LOSS` :math:`]`.
    accuracy : sequence of float, optional
        Accuracy of each probed expert on the slice, in :math:`[0, 1]`.
    count : int
        Validation samples the row was measured on (>= 1).

    Raises
    ------
    InvalidFeedbackError
        No experts, mismatched lengths, repeated or negative expert ids, NaN, infinite,
        negative or too large losses, accuracies outside :math:`[0, 1]`, a count that is
        not an integer >= 1. Every probed expert was measured, so NaN is never accepted.

    Examples
    --------
    >>> p = ProbeFeedback(experts=[0, 1, 2], loss=[0.4, 2.3, 1.1], count=32)
    >>> p.experts, p.count, p.best(2)
    ((0, 1, 2), 32, (0, 2))
    """

    experts: tuple[int, ...]
    loss: tuple[float, ...]
    accuracy: tuple[float, ...] | None
    count: int

    def __init__(
        self,
        experts: Sequence[int],
        loss: Sequence[float],
        accuracy: Sequence[float] | None = None,
        *,
        count: int,
    ) -> None:
        ex = _expert_ids(experts)
        if not ex:
            raise InvalidFeedbackError("`experts` of a probe row must name at least one expert")
        n = len(ex)

        def values(name: str, raw: Any, hi: float) -> tuple[float, ...]:
            seq = _seq(name, raw)
            if len(seq) != n:
                raise InvalidFeedbackError(
                    f"`{name}` has {len(seq)} entries but `experts` has {n}"
                )
            out: list[float] = []
            for i, v in enumerate(seq):
                f = _number(name, v, i)
                if not (math.isfinite(f) and 0.0 <= f <= hi):
                    raise InvalidFeedbackError(
                        f"`{name}` must be finite and in [0, {hi:g}]; entry {i} "
                        f"(expert {ex[i]}) is {f}"
                    )
                out.append(f)
            return tuple(out)

        los = values("loss", loss, MAX_PROBE_LOSS)
        acc = None if accuracy is None else values("accuracy", accuracy, 1.0)
        f = _number("count", count, 0)
        if not math.isfinite(f) or f < 1 or f != round(f) or f > 2**53:
            raise InvalidFeedbackError(f"`count` must be an integer >= 1; got {count!r}")
        object.__setattr__(self, "experts", tuple(ex))
        object.__setattr__(self, "loss", los)
        object.__setattr__(self, "accuracy", acc)
        object.__setattr__(self, "count", int(f))

    def best(self, k: int) -> tuple[int, ...]:
        """The ``k`` probed experts of lowest loss (ties: lower id first), sorted by id."""
        if not is_int(k) or k < 0:
            raise InvalidFeedbackError(f"`k` must be an integer >= 0; got {k!r}")
        order = sorted(range(len(self.experts)), key=lambda i: (self.loss[i], self.experts[i]))
        return tuple(sorted(self.experts[i] for i in order[: int(k)]))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable view."""
        out: dict[str, Any] = jsonable(
            {
                "experts": self.experts,
                "loss": self.loss,
                "accuracy": self.accuracy,
                "count": self.count,
            }
        )
        return out
