"""The wire format between the FLEX-MoE ServerApp and ClientApp.

Every payload is a Flower :class:`~flwr.app.RecordDict`. The keys are fixed here
and nowhere else, so the server strategy, the client app and user code that talks
to either share one definition.

Train instruction (server -> node)::

    "shared"      ArrayRecord   shared parameters (features, head, ...), full names
    "expert.<e>"  ArrayRecord   one per assigned expert e; names relative to the
                                expert module ("0.weight", not "experts.3.0.weight")
    "config"      ConfigRecord  "server-round": int, "expert-ids": list[int], plus
                                the run's training settings (lr, local-epochs, ...)

Train reply (node -> server)::

    "shared"      ArrayRecord   updated shared parameters
    "expert.<e>"  ArrayRecord   one per expert the node trained (subset of expert-ids)
    "metrics"     MetricRecord  "num-examples" (weight of the shared average),
                                "accuracy", "loss", ... (scalars)
    "feedback"    MetricRecord  per-expert feedback, parallel lists:
                                "experts", "counts", "accuracy", "loss"
    "profile"     ConfigRecord  the node's capacity profile (optional on train)

Query reply (node -> server, before the node is first planned)::

    "profile"     ConfigRecord  "client-id": int plus capacity fields

Routers never appear in any message: they stay in the node's ``context.state``.

This module imports only numpy and :mod:`flwr.app`; torch is not needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from numpy.typing import NDArray

from ...alignment import Feedback
from ...errors import FlexAssignError, InvalidFeedbackError

__all__ = [
    "CONFIG_KEY",
    "EXPERT_KEY_PREFIX",
    "EXPERT_PARAM_PREFIX",
    "FEEDBACK_KEY",
    "METRICS_KEY",
    "PROFILE_KEY",
    "ROUTER_PARAM_PREFIX",
    "SHARED_KEY",
    "MessageFormatError",
    "TrainInstruction",
    "TrainReply",
    "arrayrecord_to_numpy",
    "decode_profile",
    "decode_train_instruction",
    "decode_train_reply",
    "encode_profile",
    "encode_train_instruction",
    "encode_train_reply",
    "expert_record_key",
    "join_state",
    "numpy_to_arrayrecord",
    "split_state",
]

SHARED_KEY = "shared"
EXPERT_KEY_PREFIX = "expert."
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
FEEDBACK_KEY = "feedback"
PROFILE_KEY = "profile"
#: State-dict prefix of the expert modules (``experts.<e>.<param>``).
EXPERT_PARAM_PREFIX = "experts."
#: State-dict prefix of the per-client router, which never leaves the node.
ROUTER_PARAM_PREFIX = "router."

NDArrayF = NDArray[Any]
StateDict = dict[str, NDArrayF]


class MessageFormatError(FlexAssignError, ValueError):
    """A message's content does not follow the FLEX-MoE wire format."""


def expert_record_key(expert: int) -> str:
    """RecordDict key of expert ``expert``'s ArrayRecord (``"expert.<e>"``)."""
    return f"{EXPERT_KEY_PREFIX}{int(expert)}"


def numpy_to_arrayrecord(arrays: Mapping[str, Any]) -> ArrayRecord:
    """An ArrayRecord holding copies of ``arrays`` (numpy arrays or torch tensors)."""
    out = ArrayRecord()
    for name, value in arrays.items():
        if hasattr(value, "detach"):  # a torch tensor; avoid importing torch here
            value = value.detach().cpu().numpy()
        out[name] = Array(np.ascontiguousarray(np.asarray(value)))
    return out


def arrayrecord_to_numpy(record: ArrayRecord) -> StateDict:
    """The arrays of ``record`` as a ``{name: ndarray}`` dict (insertion order kept)."""
    return {name: np.array(arr.numpy(), copy=True) for name, arr in record.items()}


# --------------------------------------------------------------------------- state


def split_state(state: Mapping[str, Any]) -> tuple[StateDict, dict[int, StateDict]]:
    """Split a full MoE state dict into shared parameters and per-expert parameters.

    Parameters
    ----------
    state : mapping of str to array
        Keys ``experts.<e>.<param>`` go to expert ``e`` under ``<param>``; keys
        starting with ``router.`` are dropped (routers are per-client); every other
        key is shared.

    Returns
    -------
    shared : dict
    experts : dict of int to dict
        Sorted by expert id.
    """
    shared: StateDict = {}
    experts: dict[int, StateDict] = {}
    for name, value in state.items():
        arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if name.startswith(ROUTER_PARAM_PREFIX):
            continue
        if name.startswith(EXPERT_PARAM_PREFIX):
            head, _, rest = name[len(EXPERT_PARAM_PREFIX) :].partition(".")
            if not head.isdigit() or not rest:
                raise MessageFormatError(
                    f"state key `{name}` does not have the form `experts.<int>.<param>`"
                )
            experts.setdefault(int(head), {})[rest] = arr
        else:
            shared[name] = arr
    return shared, dict(sorted(experts.items()))


def join_state(shared: Mapping[str, Any], experts: Mapping[int, Mapping[str, Any]]) -> StateDict:
    """Inverse of :func:`split_state` (without a router)."""
    out: StateDict = {k: np.asarray(v) for k, v in shared.items()}
    for e in sorted(experts):
        for rest, v in experts[e].items():
            out[f"{EXPERT_PARAM_PREFIX}{int(e)}.{rest}"] = np.asarray(v)
    return out


# ------------------------------------------------------------------ train messages


@dataclass(frozen=True)
class TrainInstruction:
    """Decoded train instruction: what one node was sent for one round.

    Attributes
    ----------
    server_round : int
    expert_ids : tuple of int
        The experts planned for this node, sorted; exactly the keys of ``experts``.
    shared : dict of str to ndarray
    experts : dict of int to dict of str to ndarray
    config : dict
        The remaining ConfigRecord entries (training settings).
    """

    server_round: int
    expert_ids: tuple[int, ...]
    shared: StateDict
    experts: dict[int, StateDict]
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainReply:
    """Decoded train reply of one node.

    Attributes
    ----------
    shared : dict of str to ndarray
    experts : dict of int to dict of str to ndarray
        The experts the node sends back (those it trained).
    num_examples : int
        Local training samples; the weight of the shared-parameter average.
    metrics : dict of str to float
        Scalar metrics (``accuracy``, ``loss``, ...), ``num-examples`` excluded.
    feedback : flexassign.alignment.Feedback
        Ready for :meth:`Planner.report <flexassign.alignment.Planner.report>`.
    profile : dict or None
        Capacity profile, when the node attached one.
    """

    shared: StateDict
    experts: dict[int, StateDict]
    num_examples: int
    metrics: dict[str, float]
    feedback: Feedback
    profile: dict[str, Any] | None = None


def _experts_in(content: RecordDict) -> dict[int, StateDict]:
    experts: dict[int, StateDict] = {}
    for key, rec in content.array_records.items():
        if not key.startswith(EXPERT_KEY_PREFIX):
            continue
        suffix = key[len(EXPERT_KEY_PREFIX) :]
        if not suffix.isdigit():
            raise MessageFormatError(f"record key `{key}` does not have the form `expert.<int>`")
        experts[int(suffix)] = arrayrecord_to_numpy(rec)
    return dict(sorted(experts.items()))


def encode_train_instruction(
    *,
    server_round: int,
    shared: Mapping[str, Any],
    experts: Mapping[int, Mapping[str, Any]],
    config: Mapping[str, Any] | None = None,
) -> RecordDict:
    """Content of one node's train message: shared parameters plus only its experts.

    Parameters
    ----------
    server_round : int
    shared : mapping of str to array
    experts : mapping of int to mapping of str to array
        The node's assigned experts and nothing else; their ids become
        ``config["expert-ids"]``.
    config : mapping, optional
        Extra ConfigRecord entries; not modified. ``server-round`` and ``expert-ids``
        are reserved.
    """
    extra = dict(config or {})
    for reserved in ("server-round", "expert-ids"):
        if reserved in extra:
            raise MessageFormatError(f"`config` must not set the reserved key `{reserved}`")
    ids = sorted(int(e) for e in experts)
    cfg = ConfigRecord({**extra, "server-round": int(server_round), "expert-ids": ids})
    content = RecordDict({SHARED_KEY: numpy_to_arrayrecord(shared), CONFIG_KEY: cfg})
    for e in ids:
        content[expert_record_key(e)] = numpy_to_arrayrecord(experts[e])
    return content


def decode_train_instruction(content: RecordDict) -> TrainInstruction:
    """Parse and check a train instruction (see :func:`encode_train_instruction`)."""
    if SHARED_KEY not in content.array_records:
        raise MessageFormatError(f"train instruction lacks the `{SHARED_KEY}` ArrayRecord")
    if CONFIG_KEY not in content.config_records:
        raise MessageFormatError(f"train instruction lacks the `{CONFIG_KEY}` ConfigRecord")
    cfg = dict(content.config_records[CONFIG_KEY])
    if "expert-ids" not in cfg or "server-round" not in cfg:
        raise MessageFormatError("train config must carry `server-round` and `expert-ids`")
    expert_ids = tuple(sorted(int(e) for e in cfg.pop("expert-ids")))  # type: ignore[union-attr]
    server_round = int(cfg.pop("server-round"))  # type: ignore[arg-type]
    experts = _experts_in(content)
    if tuple(experts) != expert_ids:
        raise MessageFormatError(
            f"config `expert-ids` {list(expert_ids)} does not match the expert "
            f"ArrayRecords sent {list(experts)}"
        )
    return TrainInstruction(
        server_round=server_round,
        expert_ids=expert_ids,
        shared=arrayrecord_to_numpy(content.array_records[SHARED_KEY]),
        experts=experts,
        config=cfg,
    )


def encode_train_reply(
    *,
    shared: Mapping[str, Any],
    experts: Mapping[int, Mapping[str, Any]],
    num_examples: int,
    feedback: Any,
    metrics: Mapping[str, float] | None = None,
    profile: Mapping[str, Any] | None = None,
) -> RecordDict:
    """Content of a node's train reply (see the module docstring for the layout).

    Parameters
    ----------
    shared, experts
        Updated parameters; ``experts`` holds only the experts the node trained.
    num_examples : int
        Local training samples.
    feedback : Feedback-like
        Any object with ``experts`` and ``counts`` and optional ``accuracy``,
        ``loss``, ``round_time``, ``train_samples`` attributes
        (:class:`flexassign.alignment.Feedback`, the harness's ``ExpertFeedback``).
    metrics : mapping of str to float, optional
        Extra scalar metrics (``accuracy``, ``loss``, ...).
    profile : mapping, optional
        The node's capacity profile.
    """
    m = MetricRecord({k: float(v) for k, v in (metrics or {}).items()})
    m["num-examples"] = int(num_examples)
    fb = MetricRecord(
        {
            "experts": [int(e) for e in feedback.experts],
            "counts": [int(c) for c in feedback.counts],
        }
    )
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
    content = RecordDict(
        {SHARED_KEY: numpy_to_arrayrecord(shared), METRICS_KEY: m, FEEDBACK_KEY: fb}
    )
    for e in sorted(int(e) for e in experts):
        content[expert_record_key(e)] = numpy_to_arrayrecord(experts[e])
    if profile is not None:
        content[PROFILE_KEY] = encode_profile(profile)
    return content


def decode_train_reply(content: RecordDict) -> TrainReply:
    """Parse and check a train reply (see :func:`encode_train_reply`)."""
    if SHARED_KEY not in content.array_records:
        raise MessageFormatError(f"train reply lacks the `{SHARED_KEY}` ArrayRecord")
    for key in (METRICS_KEY, FEEDBACK_KEY):
        if key not in content.metric_records:
            raise MessageFormatError(f"train reply lacks the `{key}` MetricRecord")
    metrics = dict(content.metric_records[METRICS_KEY])
    if "num-examples" not in metrics:
        raise MessageFormatError("train reply metrics lack `num-examples`")
    num_examples = int(metrics.pop("num-examples"))  # type: ignore[arg-type]
    if num_examples < 0:
        raise MessageFormatError(f"`num-examples` must be >= 0; got {num_examples}")
    fb = content.metric_records[FEEDBACK_KEY]
    if "experts" not in fb or "counts" not in fb:
        raise MessageFormatError("train reply feedback lacks `experts` or `counts`")
    try:
        feedback = Feedback(
            [int(e) for e in fb["experts"]],  # type: ignore[union-attr]
            [int(c) for c in fb["counts"]],  # type: ignore[union-attr]
            accuracy=fb.get("accuracy"),  # type: ignore[arg-type]
            loss=fb.get("loss"),  # type: ignore[arg-type]
            round_time=fb.get("round-time"),  # type: ignore[arg-type]
            train_samples=fb.get("train-samples"),  # type: ignore[arg-type]
        )
    except InvalidFeedbackError as exc:
        raise MessageFormatError(f"train reply feedback is invalid: {exc}") from exc
    profile = (
        decode_profile(content.config_records[PROFILE_KEY])
        if PROFILE_KEY in content.config_records
        else None
    )
    return TrainReply(
        shared=arrayrecord_to_numpy(content.array_records[SHARED_KEY]),
        experts=_experts_in(content),
        num_examples=num_examples,
        metrics={k: float(v) for k, v in metrics.items() if not isinstance(v, list)},
        feedback=feedback,
        profile=profile,
    )


# ------------------------------------------------------------------------ profiles


def encode_profile(profile: Mapping[str, Any]) -> ConfigRecord:
    """A capacity profile as a ConfigRecord (scalars; ``None`` entries dropped)."""
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
        out[k] = v
    return out


def decode_profile(record: ConfigRecord) -> dict[str, Any]:
    """Inverse of :func:`encode_profile`."""
    return dict(record)
