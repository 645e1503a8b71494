"""FLEX-MoE for Flower (``flwr>=1.41,<1.43``, Message API), for any MoE model.

Install with ``pip install -e ".[flower]" -c constraints.txt`` (from a clone). This
package imports only numpy, Flower and flexassign (never torch, never
:mod:`fl_harness`); the rest of flexassign never imports Flower.

* :class:`FlexMoEStrategy` -- server strategy: profiles nodes, samples, plans with
  :class:`flexassign.alignment.Planner`, sends each node only its experts, checks and
  bounds every reply, aggregates shared parameters by sample count and experts by
  usage (mean, trimmed mean or median), feeds feedback back, checkpoints and resumes.
* :class:`ExpertLayout` -- which of your model's parameters are experts (named: the id
  is a regex group, so an expert may span layers; or stacked tensors cut per expert)
  and which stay on the client; re-exported from the framework-neutral
  :mod:`flexassign.integrations.layout`.
* :mod:`~flexassign.integrations.flower.messages` -- the wire format: plain state
  dicts under the model's own names (:func:`decode_train_instruction`,
  :func:`encode_train_reply`, :func:`encode_profile`).
* :mod:`~flexassign.integrations.flower.client` -- helpers for your ClientApp (and
  :mod:`flexassign.integrations.torch_client` for a PyTorch model).

The strategy's jobs live in one module each: ``strategy`` (the Flower hooks),
``nodes`` (waiting for, profiling and sampling nodes; matching replies),
``replies`` (checking, bounding and aggregating replies, no Flower types),
``records`` (the per-round record, its metrics and results file), ``loop`` (the round
loop of :meth:`FlexMoEStrategy.start`) and ``checkpoint``.

The harness's own ready-made Flower app lives in :mod:`fl_harness.flower`. See
``docs/flower.md`` and ``examples/flower/``.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "flexassign.integrations.flower needs Flower: pip install -e '.[flower]' "
        "-c constraints.txt (from a clone)"
    ) from exc

from ..layout import ExpertLayout, LayoutError
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .client import LOCAL_STATE_KEY, load_local_state, node_partition, save_local_state
from .messages import (
    MessageFormatError,
    TrainInstruction,
    TrainReply,
    decode_evaluate_reply,
    decode_profile,
    decode_train_instruction,
    decode_train_reply,
    encode_evaluate_reply,
    encode_profile,
    encode_train_instruction,
    encode_train_reply,
)
from .records import FlowerRoundRecord, format_metrics
from .replies import aggregate_replies, bound_replies, check_reply
from .strategy import FlexMoEStrategy

__all__ = [
    "LOCAL_STATE_KEY",
    "Checkpoint",
    "ExpertLayout",
    "FlexMoEStrategy",
    "FlowerRoundRecord",
    "LayoutError",
    "MessageFormatError",
    "TrainInstruction",
    "TrainReply",
    "aggregate_replies",
    "bound_replies",
    "check_reply",
    "decode_evaluate_reply",
    "decode_profile",
    "decode_train_instruction",
    "decode_train_reply",
    "encode_evaluate_reply",
    "encode_profile",
    "encode_train_instruction",
    "encode_train_reply",
    "format_metrics",
    "load_checkpoint",
    "load_local_state",
    "node_partition",
    "save_checkpoint",
    "save_local_state",
]
