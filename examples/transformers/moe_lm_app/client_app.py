"""ClientApp: a node trains the experts it holds of the tiny Mixtral, on its own topic.

Every step that depends on the model is a helper of
:mod:`flexassign.integrations.torch_client`: ``load_received`` (strict),
``restrict_routers`` (the router sees only the held experts), ``expert_feedback``
(per-expert token counts and loss), ``trained_arrays`` (what goes back).
"""

from __future__ import annotations

import torch
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
from flexassign.integrations.torch_client import (
    expert_feedback,
    load_received,
    restrict_routers,
    trained_arrays,
)

from .task import LAYOUT, ROUTERS, Partition, evaluate, load_data, make_model, token_losses, train

app = ClientApp()


def _data(context: Context) -> tuple[int, Partition]:
    pid, _ = node_partition(context)
    cfg = context.run_config
    return pid, load_data(pid, seq_len=int(cfg["seq-len"]), num_train=int(cfg["num-train"]),
                          num_val=int(cfg["num-val"]), seed=int(cfg["seed"]))


def _model(context: Context, arrays: dict) -> torch.nn.Module:
    cfg = context.run_config
    # one thread per node: simulated nodes share the machine's cores (more threads per
    # process oversubscribe them: a tiny model's step then takes seconds, not ms)
    torch.set_num_threads(int(cfg.get("num-threads", 1)))
    model = make_model(int(cfg["num-experts"]), int(cfg["dim"]), int(cfg["top-k"]),
                       int(cfg["seed"]), seq_len=int(cfg["seq-len"]))
    # strict: a name the model lacks, a wrong shape or dtype is an error naming it
    load_received(model, arrays, layout=LAYOUT, local=load_local_state(context))
    return model


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Profile: a stable client id, k_c (capacity) and the number of training tokens."""
    pid, data = _data(context)
    choices = [int(c) for c in str(context.run_config["capacity-choices"]).split(",")]
    profile = {"client-id": f"{data.category}-{pid}", "capacity": choices[pid % len(choices)],
               "num-examples": data.train_tokens}
    return Message(RecordDict({"profile": encode_profile(profile)}), reply_to=msg)


@app.train()
def train_handler(msg: Message, context: Context) -> Message:
    ins = decode_train_instruction(msg.content)
    pid, data = _data(context)
    cfg = context.run_config
    model = _model(context, ins.arrays)
    with restrict_routers(model, ins.expert_ids, num_experts=int(cfg["num-experts"]),
                          routers=ROUTERS) as routers:
        train_loss = train(model, data.train, epochs=int(cfg["local-epochs"]),
                           lr=float(cfg["lr"]), batch_size=int(cfg["batch-size"]),
                           seed=int(cfg["seed"]) * 100_003 + ins.server_round * 1009 + pid)
        routers.clear()  # feedback: one pass over the training data with the trained model
        with torch.no_grad():
            losses = token_losses(model, data.train)
        counts, loss, _ = expert_feedback(routers.routing(), losses, ins.expert_ids)
    save_local_state(context, LAYOUT.local_part(model.state_dict()))
    content = encode_train_reply(
        trained_arrays(model, ins.expert_ids, layout=LAYOUT),
        num_examples=data.train_tokens,
        feedback=Feedback(experts=list(ins.expert_ids), counts=counts, loss=loss),
        metrics={"loss": train_loss},
    )
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate_handler(msg: Message, context: Context) -> Message:
    ins = decode_train_instruction(msg.content)
    _, data = _data(context)
    model = _model(context, ins.arrays)
    with restrict_routers(model, ins.expert_ids, num_experts=int(context.run_config["num-experts"]),
                          routers=ROUTERS):
        val_loss = evaluate(model, data.val)
    n = int(data.val.shape[0] * (data.val.shape[1] - 1))
    return Message(encode_evaluate_reply(num_examples=n, metrics={"loss": val_loss}),
                   reply_to=msg)
