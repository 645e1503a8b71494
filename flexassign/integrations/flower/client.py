"""Client-side helpers for a FLEX-MoE ClientApp around any model (numpy only).

A node's ClientApp answers three message types; with your own model it needs little
beyond your training loop (see ``examples/flower/flexmoe_app/client_app.py``):

``query``
    reply ``RecordDict({"profile": encode_profile({...})})`` with a stable
    ``client-id``, a ``capacity`` (or ClientProfile fields) and optionally
    ``num-examples`` (see :mod:`~flexassign.integrations.flower.messages`).
``train``
    ``ins = decode_train_instruction(msg.content)``; load ``ins.arrays`` and the
    node's local parameters (:func:`load_local_state`) into the model, train only
    ``ins.expert_ids``, keep the local parameters (:func:`save_local_state`), reply
    with ``encode_train_reply(state, num_examples=..., feedback=Feedback(...),
    keys=ins.arrays)``.
``evaluate``
    the same instruction; reply with ``encode_evaluate_reply(...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import Context

from .messages import StateDict, arrayrecord_to_numpy, numpy_to_arrayrecord

__all__ = ["LOCAL_STATE_KEY", "load_local_state", "node_partition", "save_local_state"]

#: Key of the local (router/gate) ArrayRecord in ``context.state``.
LOCAL_STATE_KEY = "flexmoe.local"


def load_local_state(context: Context) -> StateDict | None:
    """The local parameters this node stored in its ``context.state``; ``None`` before
    its first round."""
    rec = context.state.array_records.get(LOCAL_STATE_KEY)
    return None if rec is None else arrayrecord_to_numpy(rec)


def save_local_state(context: Context, arrays: Mapping[str, Any]) -> None:
    """Keep ``arrays`` (numpy arrays or tensors) in the node's ``context.state``.

    Flower keeps ``context.state`` for the duration of a run, on the node; nothing
    stored here is ever sent.
    """
    context.state[LOCAL_STATE_KEY] = numpy_to_arrayrecord(arrays)


def node_partition(context: Context) -> tuple[int, int]:
    """``(partition-id, num-partitions)`` from the node config.

    Raises
    ------
    ValueError
        If the node config lacks either key (start deployed SuperNodes with
        ``--node-config "partition-id=<i> num-partitions=<n>"``).
    """
    cfg = context.node_config
    if "partition-id" not in cfg or "num-partitions" not in cfg:
        raise ValueError(
            "node_config must set `partition-id` and `num-partitions` (simulation sets "
            "them; deployed SuperNodes need --node-config \"partition-id=0 num-partitions=N\")"
        )
    return int(cfg["partition-id"]), int(cfg["num-partitions"])
