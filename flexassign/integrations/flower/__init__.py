"""FLEX-MoE for Flower (``flwr>=1.41,<1.42``, Message API).

Install with ``pip install "flexassign[flower,torch]"``. Importing this package imports
Flower; the rest of flexassign never does.

* :class:`FlexMoEStrategy` -- server strategy: profiles nodes, samples, plans with
  :class:`flexassign.alignment.Planner`, sends each node only its experts, aggregates
  shared parameters by sample count and experts by usage, feeds feedback back,
  tolerates failed nodes, checkpoints and resumes.
* :func:`make_server_app`, :func:`make_client_app` -- ready ``ServerApp`` and
  ``ClientApp`` for the harness's MoE model (:mod:`fl_harness`).
* :mod:`~flexassign.integrations.flower.messages` -- the wire format.

See ``docs/flower.md`` and ``examples/flower/``.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "flexassign.integrations.flower needs Flower: pip install 'flexassign[flower,torch]'"
    ) from exc

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .client import handle_evaluate, handle_query, handle_train, make_client_app
from .messages import (
    MessageFormatError,
    TrainInstruction,
    TrainReply,
    decode_train_instruction,
    decode_train_reply,
    encode_train_instruction,
    encode_train_reply,
)
from .server import build_strategy, make_planner, make_server_app, run_server
from .strategy import FlexMoEStrategy, RoundRecord, aggregate_replies

__all__ = [
    "Checkpoint",
    "FlexMoEStrategy",
    "MessageFormatError",
    "RoundRecord",
    "TrainInstruction",
    "TrainReply",
    "aggregate_replies",
    "build_strategy",
    "decode_train_instruction",
    "decode_train_reply",
    "encode_train_instruction",
    "encode_train_reply",
    "handle_evaluate",
    "handle_query",
    "handle_train",
    "load_checkpoint",
    "make_client_app",
    "make_planner",
    "make_server_app",
    "run_server",
    "save_checkpoint",
]
