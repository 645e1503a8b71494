"""The wire format between the FLEX-MoE ServerApp and any ClientApp.

Every payload is a Flower :class:`~flwr.app.RecordDict` holding plain state dicts
under the model's own parameter names; the keys are fixed here and nowhere else.

Train (or evaluate) instruction, server -> node::

    "arrays"   ArrayRecord   shared parameters + the node's assigned experts, under the
                             model's names (e.g. "blocks.1.experts.3.w"); never a local
                             (router/gate) parameter
    "config"   ConfigRecord  "server-round": int, "expert-ids": list[int], plus the
                             run's training settings (lr, local-epochs, ...)

Train reply, node -> server::

    "arrays"   ArrayRecord   updated shared parameters + the experts it trained
                             (each expert complete), same names, shapes and dtypes
    "metrics"  MetricRecord  "num-examples" (local training samples), "accuracy",
                             "loss", ... (finite scalars)
    "feedback" MetricRecord  per-expert parallel lists "experts", "counts" (samples
                             routed to the expert, each sample counted once), optional
                             "accuracy", "loss", and scalars "round-time",
                             "train-samples"
    "expert-weights"
               MetricRecord  optional: parallel lists "experts", "weights": the
                             aggregation weight of each expert the reply trains
                             (finite, >= 0, one per trained expert); absent, each
                             expert is weighted by its feedback "counts"
    "profile"  ConfigRecord  optional: an updated profile
    "probe"    MetricRecord  optional: a probe row measured before local training on a
                             local validation slice: parallel lists "experts", "loss",
                             optional "accuracy", and scalar "count" (validation
                             samples); any experts, not only the trained ones. A
                             malformed row is dropped and logged; the reply stands

Query reply (profile), node -> server::

    "profile"  ConfigRecord  "client-id" (int or str, stable across runs) and either
                             "capacity" (k_c) or ClientProfile fields ("compute",
                             "memory", ... or "device-class"); optional
                             "num-examples" (the node's dataset size, which caps the
                             weight its replies may claim)

Evaluate reply, node -> server::

    "metrics"  MetricRecord  "num-examples", "accuracy", "loss", ...

On a client, with ``ins = decode_train_instruction(msg.content)``::

    model.load_state_dict({k: torch.from_numpy(v) for k, v in ins.arrays.items()},
                          strict=False)
    ...train...
    content = encode_train_reply(state, num_examples=n, feedback=Feedback(...),
                                 keys=ins.arrays)   # optionally expert_weights={e: w}

This module imports only numpy, :mod:`flwr.app` and flexassign.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common import log
from numpy.typing import NDArray

from ..._validation import is_real
from ...alignment import Feedback, ProbeFeedback
from ...errors import FlexAssignError, InvalidFeedbackError

__all__ = [
    "ARRAYS_KEY",
    "CONFIG_KEY",
    "EXPERT_WEIGHTS_KEY",
    "FEEDBACK_KEY",
    "METRICS_KEY",
    "PROBE_KEY",
    "PROFILE_KEY",
    "MessageFormatError",
    "TrainInstruction",
    "TrainReply",
    "arrayrecord_to_numpy",
    "decode_evaluate_reply",
    "decode_profile",
    "decode_train_instruction",
    "decode_train_reply",
    "encode_evaluate_reply",
    "encode_profile",
    "encode_train_instruction",
    "encode_train_reply",
    "expert_counts",
    "expert_weights",
    "numpy_to_arrayrecord",
]

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
FEEDBACK_KEY = "feedback"
PROFILE_KEY = "profile"
EXPERT_WEIGHTS_KEY = "expert-weights"
PROBE_KEY = "probe"
_RESERVED = ("server-round", "expert-ids")

StateDict = dict[str, NDArray[Any]]


class MessageFormatError(FlexAssignError, ValueError):
    """A message's content does not follow the FLEX-MoE wire format."""


def numpy_to_arrayrecord(arrays: Mapping[str, Any]) -> ArrayRecord:
    """An ArrayRecord holding copies of ``arrays`` (numpy arrays or torch tensors)."""
    out = ArrayRecord()
    for name, value in arrays.items():
        if hasattr(value, "detach"):  # a torch tensor; avoid importing torch here
            value = value.detach().cpu().numpy()
        out[str(name)] = Array(np.ascontiguousarray(np.asarray(value)))
    return out


def arrayrecord_to_numpy(record: ArrayRecord) -> StateDict:
    """The arrays of ``record`` as a ``{name: ndarray}`` dict (insertion order kept).

    Raises
    ------
    MessageFormatError
        If an entry cannot be read as a numpy array.
    """
    out: StateDict = {}
    for name, arr in record.items():
        try:
            out[name] = np.array(arr.numpy(), copy=True)
        except Exception as exc:  # a corrupt buffer, an unknown dtype string, ...
            raise MessageFormatError(f"array `{name}` cannot be read: {exc}") from exc
    return out


def _finite_int(name: str, value: Any) -> int:
    """A non-negative integer-valued number (int or float such as 3.0)."""
    if not is_real(value):
        raise MessageFormatError(f"`{name}` must be a number; got {type(value).__name__}")
    f = float(value)
    if not math.isfinite(f) or f < 0 or f != round(f):
        raise MessageFormatError(f"`{name}` must be a finite integer >= 0; got {value!r}")
    return int(f)


def _expert_weights(experts: Any, weights: Any) -> dict[int, float]:
    """``{expert: weight}`` from parallel lists, checked like feedback counts.

    Expert ids are distinct integers >= 0; weights finite numbers >= 0, one per id.
    """
    experts = experts if isinstance(experts, list | tuple) else [experts]
    weights = weights if isinstance(weights, list | tuple) else [weights]
    if len(experts) != len(weights):
        raise MessageFormatError(
            f"`expert-weights` has {len(experts)} experts but {len(weights)} weights")
    out: dict[int, float] = {}
    for e, w in zip(experts, weights, strict=True):
        eid = _finite_int("expert-weights", e)
        if eid in out:
            raise MessageFormatError(f"`expert-weights` names expert {eid} twice")
        if not is_real(w) or not math.isfinite(float(w)) or float(w) < 0:
            raise MessageFormatError(
                f"`expert-weights` of expert {eid} must be finite and >= 0; got {w!r}")
        out[eid] = float(w)
    return out


# ------------------------------------------------------------------ instructions


@dataclass(frozen=True)
class TrainInstruction:
    """Decoded train (or evaluate) instruction: what one node was sent for one round.

    Attributes
    ----------
    server_round : int
    expert_ids : tuple of int
        The experts planned for this node, sorted.
    arrays : dict of str to ndarray
        Shared parameters and the assigned experts under the model's names, ready for
        ``model.load_state_dict(..., strict=False)`` after conversion to tensors.
    config : dict
        The remaining ConfigRecord entries (training settings).
    """

    server_round: int
    expert_ids: tuple[int, ...]
    arrays: StateDict
    config: dict[str, Any] = field(default_factory=dict)


def encode_train_instruction(
    *,
    server_round: int,
    arrays: Mapping[str, Any],
    expert_ids: Iterable[int],
    config: Mapping[str, Any] | None = None,
) -> RecordDict:
    """Content of one node's train or evaluate message.

    Parameters
    ----------
    server_round : int
    arrays : mapping of str to array
        Shared parameters plus only the node's experts (model names).
    expert_ids : iterable of int
        The node's experts.
    config : mapping, optional
        Extra ConfigRecord entries; not modified. ``server-round`` and ``expert-ids``
        are reserved.
    """
    extra = dict(config or {})
    for reserved in _RESERVED:
        if reserved in extra:
            raise MessageFormatError(f"`config` must not set the reserved key `{reserved}`")
    ids = sorted(int(e) for e in expert_ids)
    cfg = ConfigRecord({**extra, "server-round": int(server_round), "expert-ids": ids})
    return RecordDict({ARRAYS_KEY: numpy_to_arrayrecord(arrays), CONFIG_KEY: cfg})


def decode_train_instruction(content: RecordDict) -> TrainInstruction:
    """Parse and check a train or evaluate instruction.

    Raises
    ------
    MessageFormatError
        If a record or a reserved config entry is missing or malformed.
    """
    if ARRAYS_KEY not in content.array_records:
        raise MessageFormatError(f"instruction lacks the `{ARRAYS_KEY}` ArrayRecord")
    if CONFIG_KEY not in content.config_records:
        raise MessageFormatError(f"instruction lacks the `{CONFIG_KEY}` ConfigRecord")
    cfg = dict(content.config_records[CONFIG_KEY])
    if "expert-ids" not in cfg or "server-round" not in cfg:
        raise MessageFormatError("instruction config must carry `server-round` and `expert-ids`")
    raw_ids = cfg.pop("expert-ids")
    ids = raw_ids if isinstance(raw_ids, list) else [raw_ids]
    expert_ids = tuple(sorted(_finite_int("expert-ids", e) for e in ids))
    server_round = _finite_int("server-round", cfg.pop("server-round"))
    return TrainInstruction(
        server_round=server_round,
        expert_ids=expert_ids,
        arrays=arrayrecord_to_numpy(content.array_records[ARRAYS_KEY]),
        config=cfg,
    )


# ----------------------------------------------------------------------- replies


@dataclass(frozen=True)
class TrainReply:
    """Decoded train reply of one node.

    Attributes
    ----------
    arrays : dict of str to ndarray
        Updated shared and expert parameters (model names).
    num_examples : int
        Local training samples claimed; the weight of the shared-parameter average
        (the strategy bounds it).
    metrics : dict of str to float
        Scalar metrics (``accuracy``, ``loss``, ...), ``num-examples`` excluded.
    feedback : flexassign.alignment.Feedback
    profile : dict or None
        Capacity profile, when the node attached one.
    expert_weights : dict of int to float or None
        Per trained expert, its aggregation weight, when the node sent one (the
        strategy checks that it names exactly the experts the reply trains and bounds
        it like the counts); ``None``: experts are weighted by ``feedback.counts``.
        See :func:`expert_weights`.
    probe : flexassign.alignment.ProbeFeedback or None
        The node's probe row, when it sent a valid one (a malformed row is dropped
        with a warning and leaves ``None``).
    """

    arrays: StateDict
    num_examples: int
    metrics: dict[str, float]
    feedback: Feedback
    profile: dict[str, Any] | None = None
    expert_weights: dict[int, float] | None = None
    probe: ProbeFeedback | None = None


def _probe_record(probe: Any) -> MetricRecord:
    rec = MetricRecord({
        "experts": [int(e) for e in probe.experts],
        "loss": [float(v) for v in probe.loss],
        "count": int(probe.count),
    })
    if getattr(probe, "accuracy", None) is not None:
        rec["accuracy"] = [float(v) for v in probe.accuracy]
    return rec


def _decode_probe(rec: Mapping[str, Any]) -> ProbeFeedback | None:
    """The probe row in ``rec``, or ``None`` (logged) when it is malformed."""

    def seq(v: Any) -> Any:
        return v if isinstance(v, list) else [v]

    try:
        if "experts" not in rec or "loss" not in rec or "count" not in rec:
            raise MessageFormatError("it lacks `experts`, `loss` or `count`")
        return ProbeFeedback(
            seq(rec["experts"]),
            seq(rec["loss"]),
            accuracy=None if rec.get("accuracy") is None else seq(rec["accuracy"]),
            count=rec["count"],
        )
    except (MessageFormatError, InvalidFeedbackError, TypeError, ValueError,
            OverflowError) as exc:
        log(WARNING, "train reply `probe` row dropped: %s", exc)
        return None


def _feedback_record(feedback: Any) -> MetricRecord:
    fb = MetricRecord({
        "experts": [int(e) for e in feedback.experts],
        "counts": [int(c) for c in feedback.counts],
    })
    for name in ("accuracy", "loss"):
        values = getattr(feedback, name, None)
        if values is not None:
            fb[name] = [float(v) for v in values]
    round_time = getattr(feedback, "round_time", None)
    if round_time is not None:
        fb["round-time"] = float(round_time)
    train_samples = getattr(feedback, "train_samples", None)
    if train_samples is not None:
        fb["train-samples"] = int(train_samples)
    return fb


def encode_train_reply(
    arrays: Mapping[str, Any],
    *,
    num_examples: int,
    feedback: Any,
    metrics: Mapping[str, float] | None = None,
    profile: Mapping[str, Any] | None = None,
    keys: Iterable[str] | None = None,
    expert_weights: Mapping[int, float] | None = None,
    probe: Any = None,
) -> RecordDict:
    """Content of a node's train reply.

    Parameters
    ----------
    arrays : mapping of str to array
        The node's updated parameters under the model's names (numpy arrays or torch
        tensors), e.g. ``model.state_dict()``.
    num_examples : int
        Local training samples.
    feedback : Feedback-like
        Any object with ``experts`` and ``counts`` and optional ``accuracy``, ``loss``,
        ``round_time``, ``train_samples`` (:class:`flexassign.alignment.Feedback`).
    metrics : mapping of str to float, optional
        Extra scalar metrics (``accuracy``, ``loss``, ...).
    profile : mapping, optional
        An updated capacity profile.
    keys : iterable of str, optional
        Send only these names, typically ``keys=ins.arrays`` (what the node was sent):
        drops local parameters and experts it does not hold.
    expert_weights : mapping of int to float, optional
        The aggregation weight of each expert the reply trains (finite, >= 0, one
        per trained expert), e.g. its top-k routed-sample count when the feedback
        ``counts`` measure something else. Without it the server weights each expert
        by its feedback count. Sent as the ``expert-weights`` MetricRecord.
    probe : ProbeFeedback-like, optional
        A probe row (:class:`flexassign.alignment.ProbeFeedback`: ``experts``,
        ``loss``, optional ``accuracy``, ``count``) measured before local training on
        a validation slice; sent as the ``probe`` MetricRecord.

    Raises
    ------
    MessageFormatError
        If a name in ``keys`` is missing from ``arrays``, or ``expert_weights`` has a
        negative or non-finite weight.

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign.alignment import Feedback
    >>> content = encode_train_reply({"experts.1.w": np.ones(2)}, num_examples=8,
    ...                              feedback=Feedback(experts=[1], counts=[3]),
    ...                              expert_weights={1: 5})
    >>> reply = decode_train_reply(content)
    >>> reply.feedback.counts, reply.expert_weights, expert_weights(reply)
    ((3,), {1: 5.0}, {1: 5.0})
    """
    if keys is not None:
        wanted = list(keys)
        missing = [k for k in wanted if k not in arrays]
        if missing:
            raise MessageFormatError(f"`arrays` lacks {missing[:5]} named in `keys`")
        arrays = {k: arrays[k] for k in wanted}
    m = MetricRecord({k: float(v) for k, v in (metrics or {}).items()})
    m["num-examples"] = int(num_examples)
    content = RecordDict({ARRAYS_KEY: numpy_to_arrayrecord(arrays), METRICS_KEY: m,
                          FEEDBACK_KEY: _feedback_record(feedback)})
    if profile is not None:
        content[PROFILE_KEY] = encode_profile(profile)
    if expert_weights is not None:
        ids = list(expert_weights)
        checked = _expert_weights(ids, [expert_weights[e] for e in ids])
        content[EXPERT_WEIGHTS_KEY] = MetricRecord(
            {"experts": list(checked), "weights": list(checked.values())})
    if probe is not None:
        content[PROBE_KEY] = _probe_record(probe)
    return content


def _scalar_metrics(record: Mapping[str, Any], what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in record.items():
        if isinstance(v, list):
            continue
        f = float(v)
        if not math.isfinite(f):
            raise MessageFormatError(f"{what} metric `{k}` is not finite: {v!r}")
        out[k] = f
    return out


def decode_train_reply(content: RecordDict) -> TrainReply:
    """Parse and check a train reply (see :func:`encode_train_reply`).

    Checks the format, ``num-examples`` (a finite integer >= 0), the metrics (finite),
    the feedback (:class:`~flexassign.alignment.Feedback`'s checks) and the optional
    ``expert-weights`` (distinct expert ids, finite weights >= 0). Whether the arrays
    fit the global model, and the weights name exactly the experts trained, is the
    strategy's check. An optional ``probe`` row is untrusted too: checked by
    :class:`~flexassign.alignment.ProbeFeedback`, and dropped with a warning (never an
    error) when malformed.

    Raises
    ------
    MessageFormatError
        Saying what is wrong.
    """
    if ARRAYS_KEY not in content.array_records:
        raise MessageFormatError(f"train reply lacks the `{ARRAYS_KEY}` ArrayRecord")
    for key in (METRICS_KEY, FEEDBACK_KEY):
        if key not in content.metric_records:
            raise MessageFormatError(f"train reply lacks the `{key}` MetricRecord")
    metrics = dict(content.metric_records[METRICS_KEY])
    if "num-examples" not in metrics:
        raise MessageFormatError("train reply metrics lack `num-examples`")
    num_examples = _finite_int("num-examples", metrics.pop("num-examples"))
    fb = content.metric_records[FEEDBACK_KEY]
    if "experts" not in fb or "counts" not in fb:
        raise MessageFormatError("train reply feedback lacks `experts` or `counts`")

    def seq(v: Any) -> Any:
        return v if isinstance(v, list) else [v]

    try:
        feedback = Feedback(
            seq(fb["experts"]),
            seq(fb["counts"]),
            accuracy=None if fb.get("accuracy") is None else seq(fb["accuracy"]),
            loss=None if fb.get("loss") is None else seq(fb["loss"]),
            round_time=fb.get("round-time"),  # type: ignore[arg-type]
            train_samples=fb.get("train-samples"),  # type: ignore[arg-type]
        )
    except (InvalidFeedbackError, TypeError, ValueError, OverflowError) as exc:
        raise MessageFormatError(f"train reply feedback is invalid: {exc}") from exc
    profile = (decode_profile(content.config_records[PROFILE_KEY])
               if PROFILE_KEY in content.config_records else None)
    weights = None
    if EXPERT_WEIGHTS_KEY in content.metric_records:
        rec = content.metric_records[EXPERT_WEIGHTS_KEY]
        if "experts" not in rec or "weights" not in rec:
            raise MessageFormatError("train reply `expert-weights` lacks `experts` or `weights`")
        weights = _expert_weights(rec["experts"], rec["weights"])
    return TrainReply(
        arrays=arrayrecord_to_numpy(content.array_records[ARRAYS_KEY]),
        num_examples=num_examples,
        metrics=_scalar_metrics(metrics, "train reply"),
        feedback=feedback,
        profile=profile,
        expert_weights=weights,
        probe=(_decode_probe(content.metric_records[PROBE_KEY])
               if PROBE_KEY in content.metric_records else None),
    )


def encode_evaluate_reply(*, num_examples: int, metrics: Mapping[str, float]) -> RecordDict:
    """Content of an evaluate reply: ``metrics`` plus ``num-examples``."""
    m = MetricRecord({k: float(v) for k, v in metrics.items()})
    m["num-examples"] = int(num_examples)
    return RecordDict({METRICS_KEY: m})


def decode_evaluate_reply(content: RecordDict) -> tuple[int, dict[str, float]]:
    """``(num_examples, metrics)`` of an evaluate reply.

    Raises
    ------
    MessageFormatError
        If the record is missing, ``num-examples`` is not a finite integer >= 0, or a
        metric is not finite.
    """
    if METRICS_KEY not in content.metric_records:
        raise MessageFormatError(f"evaluate reply lacks the `{METRICS_KEY}` MetricRecord")
    metrics = dict(content.metric_records[METRICS_KEY])
    n = _finite_int("num-examples", metrics.pop("num-examples", 0))
    return n, _scalar_metrics(metrics, "evaluate reply")


# ---------------------------------------------------------------------- profiles


def encode_profile(profile: Mapping[str, Any]) -> ConfigRecord:
    """A profile as a ConfigRecord (scalars; ``None`` entries dropped).

    Parameters
    ----------
    profile : mapping
        ``client-id`` (int or str), ``capacity`` or
        :class:`~flexassign.alignment.ClientProfile` fields (hyphenated), and
        optionally ``num-examples``, the node's dataset size.

    Examples
    --------
    >>> rec = encode_profile({"client-id": "hospital-3", "capacity": 2, "num-examples": 800})
    >>> decode_profile(rec)
    {'client-id': 'hospital-3', 'capacity': 2, 'num-examples': 800}
    """
    out = ConfigRecord()
    for k, v in profile.items():
        if v is None:
            continue
        if isinstance(v, np.generic):
            v = v.item()
        if not isinstance(v, bool | int | float | str):
            raise MessageFormatError(
                f"profile field `{k}` must be a scalar; got {type(v).__name__}"
            )
        out[str(k)] = v
    return out


def decode_profile(record: ConfigRecord | Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`encode_profile`, with checks.

    Raises
    ------
    MessageFormatError
        If ``client-id`` is missing or not an int/str, ``capacity`` or
        ``num-examples`` is not a finite integer >= 0, or a field is not a scalar.
    """
    prof = dict(record)
    if "client-id" not in prof:
        raise MessageFormatError("profile lacks `client-id`")
    cid = prof["client-id"]
    if isinstance(cid, bool) or not isinstance(cid, int | str):
        raise MessageFormatError(f"profile `client-id` must be an int or str; got {cid!r}")
    for key in ("capacity", "num-examples"):
        if key in prof:
            prof[key] = _finite_int(key, prof[key])
    for k, v in prof.items():
        if not isinstance(v, bool | int | float | str):
            raise MessageFormatError(
                f"profile field `{k}` must be a scalar; got {type(v).__name__}"
            )
    return prof


def expert_counts(feedback: Feedback) -> dict[int, int]:
    """``{expert: count}`` of a feedback."""
    return dict(zip(feedback.experts, feedback.counts, strict=True))


def expert_weights(reply: TrainReply) -> dict[int, float]:
    """``{expert: aggregation weight}`` of a reply.

    The reply's ``expert_weights`` when it sent them, else its feedback counts.
    """
    if reply.expert_weights is not None:
        return dict(reply.expert_weights)
    return {e: float(c) for e, c in expert_counts(reply.feedback).items()}

