"""ClientApp: the node's side of FLEX-MoE for the two-block model of ``task.py``.

``query`` reports the node's profile, ``train`` trains the experts it was sent (its
gates stay here, in ``context.state``), ``evaluate`` scores the aggregated model.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from flexassign.alignment import Feedback
from flexassign.integrations.flower import (
    decode_train_instruction,
    encode_evaluate_reply,
    encode_profile,
    encode_train_reply,
    load_local_state,
    node_partition,
    save_local_state,
)
from flexassign.integrations.torch_client import load_received

from .task import (
    LAYOUT,
    Net,
    Partition,
    evaluate,
    expert_feedback,
    load_data,
    make_model,
    train,
)

app = ClientApp()


def _data(context: Context) -> tuple[int, Partition]:
    pid, n = node_partition(context)
    cfg = context.run_config
    return pid, load_data(pid, n, alpha=float(cfg["alpha"]), seed=int(cfg["seed"]))


def _model(context: Context, arrays: dict[str, np.ndarray], expert_ids: tuple[int, ...]) -> Net:
    """The model with the received shared/expert arrays and this node's own gates."""
    cfg = context.run_config
    model = make_model(int(cfg["num-experts"]), int(cfg["dim"]), int(cfg["top-k"]),
                       int(cfg["seed"]))
    # strict: a name the model lacks or a wrong shape is a LayoutError naming it; the
    # node's own gates (None before its first round) are loaded with the arrays
    load_received(model, arrays, layout=LAYOUT, local=load_local_state(context))
    model.hold(expert_ids)
    return model


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Profile: a stable client id, k_c (capacity) and the local dataset size."""
    pid, data = _data(context)
    choices = [int(c) for c in str(context.run_config["capacity-choices"]).split(",")]
    profile = {
        "client-id": str(context.node_config.get("client-id", f"client-{pid}")),
        "capacity": int(context.node_config.get("capacity", choices[pid % len(choices)])),
        "num-examples": len(data.y_train),
    }
    return Message(RecordDict({"profile": encode_profile(profile)}), reply_to=msg)


@app.train()
def train_handler(msg: Message, context: Context) -> Message:
    ins = decode_train_instruction(msg.content)
    pid, data = _data(context)
    cfg = context.run_config
    model = _model(context, ins.arrays, ins.expert_ids)
    train_loss = train(model, data.x_train, data.y_train, epochs=int(cfg["local-epochs"]),
                       lr=float(cfg["lr"]), batch_size=int(cfg["batch-size"]),
                       seed=int(cfg["seed"]) * 100_003 + ins.server_round * 1009 + pid)
    state = model.state_dict()
    save_local_state(context, LAYOUT.local_part(state))  # gates stay on this node
    counts, acc, loss = expert_feedback(model, data.x_train, data.y_train, ins.expert_ids)
    test_acc, test_loss = evaluate(model, data.x_test, data.y_test)
    content = encode_train_reply(
        state,
        num_examples=len(data.y_train),
        feedback=Feedback(list(ins.expert_ids), counts, accuracy=acc, loss=loss),
        metrics={"train-loss": train_loss, "accuracy": test_acc, "loss": test_loss},
        keys=ins.arrays,  # send back exactly what was received: shared + own experts
    )
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate_handler(msg: Message, context: Context) -> Message:
    ins = decode_train_instruction(msg.content)
    _, data = _data(context)
    model = _model(context, ins.arrays, ins.expert_ids)
    acc, loss = evaluate(model, data.x_test, data.y_test)
    return Message(encode_evaluate_reply(num_examples=len(data.y_test),
                                         metrics={"accuracy": acc, "loss": loss}),
                   reply_to=msg)
