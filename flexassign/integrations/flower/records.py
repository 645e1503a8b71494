"""What the Flower strategy records per round: the record, its metrics, its log lines.

:class:`FlowerRoundRecord` is one round as the strategy saw it (sampled clients, plan,
replies, drops, bounded weights, loads); :func:`round_metrics` turns it into the
round's train MetricRecord; :func:`append_record` appends it to a JSON-lines results
file; :func:`plan_record` starts it from the planner's plan; :func:`evaluate_metrics`
combines evaluation replies; :func:`format_metrics` renders a MetricRecord for logs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from logging import WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import MetricRecord
from flwr.common import log

from ..._files import jsonable
from ...metrics import coefficient_of_variation
from ..aggregation import bound_weights
from .messages import TrainReply

__all__ = [
    "FlowerRoundRecord",
    "append_record",
    "evaluate_metrics",
    "format_metrics",
    "plan_record",
    "round_metrics",
    "scalar_metrics",
]


@dataclass
class FlowerRoundRecord:
    """What happened in one Flower round, for inspection, logs and tests.

    Attributes
    ----------
    server_round : int
    sampled : list
        Client ids sampled, ascending.
    plan : dict
        ``{client_id: tuple of expert ids}`` as planned.
    node_of : dict
        ``{client_id: Flower node id}`` for the sampled clients.
    replied : list
        Client ids whose reply was aggregated.
    failed : list
        Client ids that failed, did not reply in time, or sent a reply that was dropped.
    dropped : dict
        ``{client_id: reason}`` for every failed client.
    idle : list
        Sampled client ids planned with no expert (capacity 0); they get no message.
    feedback : dict
        ``{client_id: Feedback}`` reported to the planner (counts bounded).
    feedback_rejected : dict
        ``{client_id: reason}`` for each aggregated reply whose feedback the planner
        rejected (e.g. a loss but no accuracy under the accuracy signal); such a
        client counts as a planner dropout though its arrays were used.
    weights : dict
        ``{client_id: (claimed num-examples, weight used)}``.
    solve_time : float
    loads : list of float
        Per-expert load of the plan (clients assigned to each expert).
    lower, upper : list of float
        The per-expert load bounds of the planner's problem (empty if none).
    fallback : str or None
    metrics : dict
    """

    server_round: int
    sampled: list[Any] = field(default_factory=list)
    plan: dict[Any, tuple[int, ...]] = field(default_factory=dict)
    node_of: dict[Any, int] = field(default_factory=dict)
    replied: list[Any] = field(default_factory=list)
    failed: list[Any] = field(default_factory=list)
    dropped: dict[Any, str] = field(default_factory=dict)
    idle: list[Any] = field(default_factory=list)
    feedback: dict[Any, Any] = field(default_factory=dict)
    feedback_rejected: dict[Any, str] = field(default_factory=dict)
    weights: dict[Any, tuple[int, float]] = field(default_factory=dict)
    solve_time: float = float("nan")
    loads: list[float] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    fallback: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def drop(self, client: Any, reason: str) -> None:
        """Mark ``client``'s reply dropped for ``reason`` (and log it)."""
        self.dropped[client] = reason
        log(WARNING, "Round %d: dropping reply of node %d (client %s): %s",
            self.server_round, self.node_of[client], client, reason)

    def reject_feedback(self, client: Any, reason: str) -> None:
        """Record that the planner rejected ``client``'s feedback (and log it)."""
        self.feedback_rejected[client] = reason
        log(WARNING, "Round %d: planner rejected the feedback of node %d (client %s): %s",
            self.server_round, self.node_of[client], client, reason)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable view (non-finite floats as ``null``)."""
        return jsonable({
            "server_round": self.server_round,
            "sampled": list(self.sampled),
            "plan": [[c, list(e)] for c, e in self.plan.items()],
            "node_of": [[c, n] for c, n in self.node_of.items()],
            "replied": list(self.replied),
            "failed": list(self.failed),
            "dropped": [[c, r] for c, r in self.dropped.items()],
            "idle": list(self.idle),
            "feedback": [[c, fb.to_dict()] for c, fb in self.feedback.items()],
            "feedback_rejected": [[c, r] for c, r in self.feedback_rejected.items()],
            "weights": [[c, list(w)] for c, w in self.weights.items()],
            "solve_time": self.solve_time,
            "loads": list(self.loads),
            "lower": list(self.lower),
            "upper": list(self.upper),
            "fallback": self.fallback,
            "metrics": dict(self.metrics),
        })



def format_metrics(metrics: Mapping[str, Any], digits: int = 4) -> str:
    """``{key: value}`` with floats rounded to ``digits`` significant digits, for logs.

    >>> format_metrics({"accuracy": 0.912345678, "num-replies": 3})
    '{accuracy: 0.9123, num-replies: 3}'
    """
    parts = []
    for k, v in metrics.items():
        if isinstance(v, float):
            parts.append(f"{k}: {v:.{digits}g}")
        else:
            parts.append(f"{k}: {v}")
    return "{" + ", ".join(parts) + "}"


def scalar_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of a MetricRecord as floats (lists dropped)."""
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float)}



def round_metrics(
    record: FlowerRoundRecord, replies: Sequence[TrainReply], *, utilization_cv: float
) -> MetricRecord:
    """The round's train MetricRecord.

    ``accuracy`` and ``loss``: means over ``replies`` weighted by their (bounded)
    ``num-examples``; ``utilization-cv``: the planner's, if finite; ``plan-load-cv``:
    the coefficient of variation of the plan's per-expert loads, if finite;
    ``solve-time``, if measured; and the counts ``num-sampled``, ``num-replies``,
    ``num-failures``, ``num-feedback-rejected`` (aggregated replies whose feedback the
    planner rejected), ``num-examples``.

    Examples
    --------
    >>> rec = FlowerRoundRecord(server_round=1, sampled=["a", "b"], replied=["a"],
    ...                         failed=["b"], loads=[1.0, 1.0], solve_time=0.5)
    >>> from flexassign.alignment import Feedback
    >>> r = TrainReply({}, 4, {"accuracy": 0.5}, Feedback(experts=[0], counts=[4]))
    >>> dict(round_metrics(rec, [r], utilization_cv=float("nan")))  # doctest: +ELLIPSIS
    {'accuracy': 0.5, 'plan-load-cv': 0.0, 'solve-time': 0.5, 'num-sampled': 2, ...}
    """
    m = MetricRecord()
    for key in ("accuracy", "loss"):
        vals = [(r.metrics[key], r.num_examples) for r in replies if key in r.metrics]
        w = sum(n for _, n in vals)
        if vals and w > 0:
            m[key] = float(sum(v * n for v, n in vals) / w)
    if math.isfinite(utilization_cv):
        m["utilization-cv"] = float(utilization_cv)
    plan_cv = coefficient_of_variation(record.loads) if record.loads else math.nan
    if math.isfinite(plan_cv):
        m["plan-load-cv"] = float(plan_cv)
    if math.isfinite(record.solve_time):
        m["solve-time"] = float(record.solve_time)
    m["num-sampled"] = len(record.sampled)
    m["num-replies"] = len(record.replied)
    m["num-failures"] = len(record.failed)
    m["num-feedback-rejected"] = len(record.feedback_rejected)
    m["num-examples"] = int(sum(r.num_examples for r in replies))
    return m


def append_record(path: Path, record: FlowerRoundRecord) -> None:
    """Append ``record`` as one JSON line to ``path`` (parents created), flushed."""
    line = json.dumps(record.to_json(), allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()


def plan_record(
    server_round: int,
    sampled: Sequence[Any],
    plan: Any,
    *,
    node_of: Mapping[Any, int],
    num_experts: int,
) -> FlowerRoundRecord:
    """A round's record as planned: the plan, nodes, solve time, loads and bounds.

    ``plan`` maps each sampled client to its expert ids (a
    :class:`~flexassign.alignment.Plan`, or any mapping); its ``result.runtime``,
    ``problem`` load bounds and ``fallback`` are recorded when present. ``idle`` lists
    the sampled clients planned with no expert.

    Examples
    --------
    >>> rec = plan_record(3, ["a", "b"], {"a": [1], "b": []}, node_of={"a": 7, "b": 8},
    ...                   num_experts=2)
    >>> rec.plan, rec.node_of, rec.loads, rec.idle
    ({'a': (1,), 'b': ()}, {'a': 7, 'b': 8}, [0.0, 1.0], ['b'])
    """
    record = FlowerRoundRecord(server_round=server_round, sampled=list(sampled))
    record.plan = {c: tuple(int(e) for e in plan[c]) for c in sampled}
    record.node_of = {c: node_of[c] for c in sampled}
    result = getattr(plan, "result", None)
    record.solve_time = float(getattr(result, "runtime", float("nan")))
    loads = np.zeros(num_experts)
    for assigned in record.plan.values():
        for e in assigned:
            loads[e] += 1
    record.loads = loads.tolist()
    problem = getattr(plan, "problem", None)
    if problem is not None:
        record.lower = np.asarray(problem.expert_min_load, dtype=float).tolist()
        record.upper = np.asarray(problem.expert_max_load, dtype=float).tolist()
    record.fallback = getattr(plan, "fallback", None)
    record.idle = [c for c in sampled if not record.plan[c]]
    return record


def evaluate_metrics(
    rows: Sequence[tuple[Mapping[str, float], int]], *, max_ratio: float | None
) -> MetricRecord | None:
    """Weighted mean of evaluation metrics; ``None`` with no rows or zero weight.

    ``rows`` are ``(metrics, num-examples)`` pairs; the claimed counts are capped by
    :func:`~flexassign.integrations.aggregation.bound_weights` (``max_ratio`` times
    the median) and the keys common to every row are averaged with those weights;
    ``num-examples`` is the sum of the claims.

    Examples
    --------
    >>> dict(evaluate_metrics([({"accuracy": 1.0}, 10), ({"accuracy": 0.0}, 30)],
    ...                       max_ratio=None))
    {'accuracy': 0.25, 'num-examples': 40}
    """
    if not rows:
        return None
    weights = bound_weights([n for _, n in rows], max_ratio=max_ratio)
    total = float(weights.sum())
    if total <= 0:
        return None
    keys = set.intersection(*(set(r) for r, _ in rows))
    out = MetricRecord({k: float(sum(r[k] * w for (r, _), w in zip(rows, weights,
                                                                     strict=True)) / total)
                        for k in sorted(keys)})
    out["num-examples"] = int(sum(n for _, n in rows))
    return out
