"""Pure reply handling for the Flower strategy: check, bound, aggregate.

:func:`check_reply` rejects a decoded :class:`~.messages.TrainReply` that does not
fit the node's plan or the global model, :func:`bound_replies` caps the weights
replies claim, and :func:`aggregate_replies` combines the survivors into new global
arrays; these three see no Flower type. :func:`accept_replies` applies the first two
to a round's Flower replies and records each drop and weight in the round's record;
:func:`report_replies` hands the accepted replies' feedback to the planner, and
:func:`accept_evaluations` decodes evaluation replies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Message
from flwr.common import log

from ...alignment import Feedback
from ..aggregation import (
    DEFAULT_MAX_WEIGHT_RATIO,
    DEFAULT_TRIM,
    AggregationError,
    bound_weights,
)
from ..layout import ExpertLayout, LayoutError
from ..updates import aggregate_updates
from .messages import (
    MessageFormatError,
    TrainReply,
    decode_evaluate_reply,
    decode_train_reply,
    expert_weights,
)
from .nodes import NodeDirectory
from .records import FlowerRoundRecord

__all__ = [
    "StateDict",
    "accept_evaluations",
    "accept_replies",
    "aggregate_replies",
    "bound_replies",
    "check_reply",
    "report_replies",
]

StateDict = dict[str, np.ndarray]


def check_reply(
    reply: TrainReply,
    global_arrays: Mapping[str, np.ndarray],
    assigned: Iterable[int],
    *,
    layout: ExpertLayout,
) -> list[int]:
    """Check one decoded reply against the global arrays and the node's plan.

    The reply's arrays must pass :meth:`ExpertLayout.check_update
    <flexassign.integrations.layout.ExpertLayout.check_update>` (every shared
    parameter and, for each expert it returns, all of that expert's parameters and
    stacked blocks, for assigned experts only, with the global names, shapes and
    dtypes and finite values); its feedback may name assigned experts only;
    its ``expert_weights``, when sent, must name exactly the experts it returns.

    Returns
    -------
    list of int
        The experts the reply returns.

    Raises
    ------
    AggregationError, LayoutError or MessageFormatError
        Saying what is wrong.
    """
    allowed = {int(e) for e in assigned}
    returned = layout.check_update(reply.arrays, global_arrays, allowed)
    fb_extra = [e for e in reply.feedback.experts if e not in allowed]
    if fb_extra:
        raise MessageFormatError(f"feedback names experts {fb_extra} the node was not assigned")
    if reply.expert_weights is not None and set(reply.expert_weights) != set(returned):
        raise MessageFormatError(
            f"`expert-weights` name experts {sorted(reply.expert_weights)} but the reply "
            f"trains {sorted(returned)}")
    return returned


def bound_replies(
    replies: Sequence[TrainReply],
    *,
    declared: Sequence[float | None] | None = None,
    max_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO,
) -> list[TrainReply]:
    """Replies with their claimed weights capped (see :func:`~..aggregation.bound_weights`).

    ``num-examples`` becomes ``min(claim, declared size, max_ratio * median claim)``
    (rounded down); each usage count, and each ``expert_weights`` entry when sent,
    becomes at most that bounded ``num-examples``. Feedback accuracy and loss are kept.

    Parameters
    ----------
    replies : sequence of TrainReply
    declared : sequence of float or None, optional
        Per reply, the dataset size the node declared (``None``: none).
    max_ratio : float or None

    Examples
    --------
    >>> fb = Feedback(experts=[0], counts=[10**9])
    >>> rs = [TrainReply({}, n, {}, Feedback(experts=[0], counts=[n])) for n in (10, 12)]
    >>> liar = TrainReply({}, 10**9, {}, fb)
    >>> [(r.num_examples, r.feedback.counts) for r in bound_replies([*rs, liar])]
    [(10, (10,)), (12, (12,)), (120, (120,))]
    >>> heavy = replace(rs[0], expert_weights={0: 1e9})
    >>> bound_replies([heavy, *rs[1:]])[0].expert_weights
    {0: 10.0}
    """
    if not replies:
        return []
    caps = None
    if declared is not None:
        caps = [math.nan if d is None else float(d) for d in declared]
    bounded = bound_weights([r.num_examples for r in replies], caps=caps, max_ratio=max_ratio)
    out = []
    for r, w in zip(replies, bounded, strict=True):
        n = math.floor(float(w))
        fb = r.feedback
        counts = [min(int(c), n) for c in fb.counts]
        if n != r.num_examples or list(fb.counts) != counts:
            fb = Feedback(fb.experts, counts, accuracy=fb.accuracy, loss=fb.loss,
                          round_time=fb.round_time, train_samples=fb.train_samples)
            r = replace(r, num_examples=n, feedback=fb)
        if r.expert_weights is not None:
            weights = {e: min(float(w), float(n)) for e, w in r.expert_weights.items()}
            if weights != r.expert_weights:
                r = replace(r, expert_weights=weights)
        out.append(r)
    return out


def aggregate_replies(
    global_arrays: Mapping[str, np.ndarray],
    replies: Sequence[TrainReply],
    *,
    layout: ExpertLayout | None = None,
    method: str = "mean",
    trim: float = DEFAULT_TRIM,
) -> StateDict:
    r"""New global arrays from checked (and bounded) replies.

    Shared parameters: :math:`\theta = \sum_c n_c \theta_c / \sum_c n_c` over the
    replies (or the trimmed mean / median with those weights). Expert :math:`e`:
    the same over the replies that carry :math:`e`, weighted by the reply's
    ``expert_weights[e]`` when it sent them, else by the usage count :math:`u_{ce}`
    in its feedback (:func:`~.messages.expert_weights`). Experts no reply carries,
    or with zero total weight, keep their current value; with no replies or zero
    total samples the shared parameters are kept too. Inputs are not modified.
    The arithmetic is :func:`flexassign.integrations.updates.aggregate_updates`,
    which other frameworks call directly.

    Parameters
    ----------
    global_arrays : mapping of str to ndarray
        Current global arrays (shared + every expert; no local parameter).
    replies : sequence of TrainReply
        Replies that passed :func:`check_reply`.
    layout : ExpertLayout, optional
    method, trim
        See :func:`flexassign.integrations.aggregation.weighted_average`.

    Returns
    -------
    dict of str to ndarray
        Same names (and order), shapes and dtypes as ``global_arrays``.
    """
    updates = [(r.arrays, r.num_examples, expert_weights(r)) for r in replies]
    return aggregate_updates(global_arrays, updates, layout=layout or ExpertLayout(),
                             method=method, trim=trim)


def accept_replies(
    record: FlowerRoundRecord,
    matched: Iterable[tuple[Any, Message]],
    global_arrays: Mapping[str, np.ndarray],
    *,
    layout: ExpertLayout,
    declared: Mapping[Any, int],
    max_ratio: float | None,
) -> dict[Any, TrainReply]:
    """The round's usable replies, decoded, checked and bounded, in sampled order.

    ``matched`` holds ``(client id, Flower reply)`` pairs (see
    :func:`~.nodes.match_replies`). A Flower error, a reply that does not decode or
    fails :func:`check_reply`, and a planned client with no reply are dropped
    (:meth:`FlowerRoundRecord.drop`). The rest are bounded by :func:`bound_replies`
    (``declared``: client -> declared dataset size); ``record.weights`` gets each
    client's claimed and used weight.
    """
    decoded: dict[Any, TrainReply] = {}
    for c, msg in matched:
        if msg.has_error():
            record.drop(c, f"Flower error {msg.error.code}: {msg.error.reason}")
            continue
        try:
            reply = decode_train_reply(msg.content)
            check_reply(reply, global_arrays, record.plan[c], layout=layout)
        except (MessageFormatError, AggregationError, LayoutError) as exc:
            record.drop(c, str(exc))
            continue
        decoded[c] = reply
    for c in record.sampled:
        if record.plan[c] and c not in decoded and c not in record.dropped:
            record.drop(c, "no reply (node gone or round timeout)")
    ordered = [c for c in record.sampled if c in decoded]
    bounded = bound_replies([decoded[c] for c in ordered],
                            declared=[declared.get(c) for c in ordered], max_ratio=max_ratio)
    out: dict[Any, TrainReply] = {}
    for c, r in zip(ordered, bounded, strict=True):
        record.weights[c] = (decoded[c].num_examples, float(r.num_examples))
        if r.num_examples != decoded[c].num_examples:
            log(WARNING, "Round %d: node %d (client %s) claims %d examples; weighted as %d",
                record.server_round, record.node_of[c], c, decoded[c].num_examples,
                r.num_examples)
        capped = _capped_claims(decoded[c], r)
        if capped:
            log(WARNING, "Round %d: node %d (client %s) per-expert claims capped at %d: %s",
                record.server_round, record.node_of[c], c, r.num_examples, capped)
        out[c] = r
    return out


def _capped_claims(claimed: TrainReply, used: TrainReply) -> str:
    """Which per-expert counts / weights :func:`bound_replies` lowered ('' if none)."""
    parts = [
        f"count of expert {e} {a} -> {b}"
        for e, a, b in zip(claimed.feedback.experts, claimed.feedback.counts,
                           used.feedback.counts, strict=True)
        if a != b
    ]
    if claimed.expert_weights is not None and used.expert_weights is not None:
        parts += [
            f"weight of expert {e} {w:g} -> {used.expert_weights[e]:g}"
            for e, w in claimed.expert_weights.items()
            if w != used.expert_weights[e]
        ]
    return "; ".join(parts)


def report_replies(
    record: FlowerRoundRecord,
    replies: Mapping[Any, TrainReply],
    *,
    planner: Any,
    nodes: NodeDirectory,
) -> None:
    """Report each accepted reply's feedback (and probe row) to ``planner``; register
    updated profiles.

    ``record.feedback`` gets the feedback the planner took; feedback it rejects goes to
    ``record.feedback_rejected`` (counted as ``num-feedback-rejected``) and is logged
    with node, client and reason. A probe row the planner rejects, or a profile it
    cannot use, is logged and skipped; the other replies are unaffected.
    """
    report_probe = getattr(planner, "report_probe", None)  # a duck-typed planner may lack it
    for c, reply in replies.items():
        if reply.probe is not None and report_probe is not None:
            try:
                report_probe(c, reply.probe)
            except (ValueError, TypeError) as exc:
                log(WARNING, "Round %d: planner rejected the probe row of node %d (client %s): "
                    "%s", record.server_round, record.node_of[c], c, exc)
        try:
            planner.report(c, reply.feedback)
            record.feedback[c] = reply.feedback
        except (ValueError, TypeError) as exc:
            record.reject_feedback(c, str(exc))
        if reply.profile is not None:
            try:
                nodes.register(record.node_of[c], {"client-id": c, **reply.profile}, planner)
            except (ValueError, TypeError) as exc:
                log(WARNING, "Round %d: unusable profile from client %s: %s",
                    record.server_round, c, exc)


def accept_evaluations(
    replies: Iterable[Message], *, server_round: int
) -> list[tuple[dict[str, float], int]]:
    """``(metrics, num-examples)`` of each evaluation reply that decodes (others logged)."""
    rows: list[tuple[dict[str, float], int]] = []
    for msg in replies:
        node = msg.metadata.src_node_id
        if msg.has_error():
            log(WARNING, "Round %d: evaluation failed on node %d: %s", server_round, node,
                msg.error.reason)
            continue
        try:
            n, rec = decode_evaluate_reply(msg.content)
        except MessageFormatError as exc:
            log(WARNING, "Round %d: dropping evaluation of node %d: %s", server_round,
                node, exc)
            continue
        rows.append((rec, n))
    return rows
