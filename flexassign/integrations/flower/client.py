"""FLEX-MoE ClientApp for the harness's MoE model.

A node answers three message types:

``query``
    its capacity profile: ``client-id`` (the harness id of its partition) and
    either its device's :class:`~flexassign.alignment.ClientProfile` fields
    (``compute``, ``memory``, ``downlink``, ``uplink``, ...; the planner derives
    :math:`k_c`) or, with ``capacity-choices``, an explicit ``capacity``.
``train``
    builds a :class:`fl_harness.model.MoEModel` holding *only* the experts it was
    sent, loads the shared parameters and its own router (kept in
    ``context.state`` across rounds, never sent), trains with
    :func:`fl_harness.client.train_client`, stores the updated router and replies
    with updated shared and expert parameters, ``num-examples``, local metrics and
    per-expert feedback (usage counts, accuracy, loss).
``evaluate``
    the same model with the aggregated parameters, evaluated on the node's local
    test split.

The node's data comes from the run config (see
:mod:`~flexassign.integrations.flower.harness`) and ``node_config["partition-id"]``
/ ``node_config["num-partitions"]``, which Flower's simulation engine sets and which
deployed SuperNodes get from ``flower-supernode --node-config``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .harness import HarnessFederation, federation
from .messages import (
    PROFILE_KEY,
    TrainInstruction,
    arrayrecord_to_numpy,
    decode_train_instruction,
    encode_profile,
    encode_train_reply,
    numpy_to_arrayrecord,
)

__all__ = [
    "ROUTER_STATE_KEY",
    "handle_evaluate",
    "handle_query",
    "handle_train",
    "make_client_app",
    "node_partition",
]

#: Key of the router ArrayRecord in ``context.state``.
ROUTER_STATE_KEY = "flexmoe.router"


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


def run_config_of(context: Context, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The node's run config with ``overrides`` applied (they win)."""
    return {**dict(context.run_config), **dict(overrides or {})}


def _federation(context: Context, overrides: Mapping[str, Any] | None) -> HarnessFederation:
    _, n = node_partition(context)
    return federation(run_config_of(context, overrides), num_clients=n)


def _profile(fed: HarnessFederation, pid: int) -> dict[str, Any]:
    """What the harness tells its planner about client ``pid``, as a node would report it.

    With ``capacity-choices`` the harness fixes :math:`k_c` (``set_capacity``); with a
    device mix it registers the device's :class:`~flexassign.alignment.ClientProfile`
    and lets the planner derive :math:`k_c`, so the node reports the profile fields.
    """
    c = fed.client(pid)
    if fed.config.capacity_choices is not None:
        return {"client-id": c.cid, "capacity": int(c.capacity), "device-class": str(c.device)}
    from flexassign.alignment import ClientProfile

    fields = ClientProfile.preset(str(c.device)).to_dict()
    return {"client-id": c.cid, **{k.replace("_", "-"): v for k, v in fields.items()}}


def _model(fed: HarnessFederation, ins: TrainInstruction, router: Mapping[str, Any]) -> Any:
    """A client model holding exactly the received experts, with ``router``."""
    import torch

    from fl_harness.model import MoEModel

    model = MoEModel(**fed.model_kwargs, experts=ins.expert_ids)
    sd: dict[str, Any] = {k: torch.from_numpy(np.asarray(v)) for k, v in ins.shared.items()}
    for e, params in ins.experts.items():
        sd.update({f"experts.{e}.{k}": torch.from_numpy(np.asarray(v)) for k, v in params.items()})
    sd.update({f"router.{k}": torch.as_tensor(np.asarray(v)) for k, v in router.items()})
    model.load_state_dict(sd, strict=True)
    return model


def _np(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            for k, v in state.items()}


def _router(context: Context) -> dict[str, Any] | None:
    rec = context.state.array_records.get(ROUTER_STATE_KEY)
    if rec is None:
        return None
    return arrayrecord_to_numpy(rec)


def handle_query(
    msg: Message, context: Context, *, run_config: Mapping[str, Any] | None = None
) -> Message:
    """Reply with the node's capacity profile."""
    pid, _ = node_partition(context)
    fed = _federation(context, run_config)
    return Message(RecordDict({PROFILE_KEY: encode_profile(_profile(fed, pid))}), reply_to=msg)


def handle_train(
    msg: Message, context: Context, *, run_config: Mapping[str, Any] | None = None
) -> Message:
    """Train the received experts with the node's router; see the module docstring.

    ``run_config`` entries override the context's run config (for apps started
    without one, e.g. by :func:`flwr.simulation.run_simulation`).
    """
    import torch

    from fl_harness.client import train_client

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    pid, _ = node_partition(context)
    fed = _federation(context, run_config)
    client = fed.client(pid)
    ins = decode_train_instruction(msg.content)
    stored = _router(context)
    router = stored if stored is not None else fed.initial_router
    model = _model(fed, ins, router)
    cfg = fed.config
    if "train-seed" in ins.config:
        seed = int(ins.config["train-seed"])
    else:
        seed = int(np.random.default_rng([cfg.seed, ins.server_round, pid]).integers(2**62))
    res = train_client(
        client_id=client.cid,
        global_model=model,
        experts=ins.expert_ids,
        x=client.x,
        y=client.y,
        training=cfg.local_training,
        generator=torch.Generator().manual_seed(seed),
        router_state=None if stored is None else {k: torch.as_tensor(v) for k, v in stored.items()},
    )
    context.state[ROUTER_STATE_KEY] = numpy_to_arrayrecord(res.router_state)
    upd = res.update
    trained = _model(
        fed,
        TrainInstruction(ins.server_round, tuple(upd.experts), _np(upd.shared),
                         {e: _np(p) for e, p in upd.expert_states.items()}),
        res.router_state,
    )
    acc, loss, n_test = _evaluate(trained, client)
    metrics = {"train-loss": float(upd.train_loss), "accuracy": acc, "loss": loss,
               "num-test-examples": float(n_test)}
    fb: Any = upd.feedback
    if bool(run_config_of(context, run_config).get("report-round-time", False)):
        from flexassign.alignment import Feedback

        fb = Feedback(list(fb.experts), list(fb.counts), accuracy=list(fb.accuracy),
                      loss=list(fb.loss), round_time=time.perf_counter() - t0,
                      train_samples=int(upd.num_samples) * cfg.local_epochs)
    content = encode_train_reply(
        shared=upd.shared,
        experts=upd.expert_states,
        num_examples=upd.num_samples,
        feedback=fb,
        metrics=metrics,
        profile=None,
    )
    return Message(content, reply_to=msg)


def _evaluate(model: Any, client: Any) -> tuple[float, float, int]:
    """Accuracy and mean loss on the local test split (train split if it is empty)."""
    import torch
    import torch.nn.functional as F

    x, y = (client.x_test, client.y_test) if len(client.y_test) else (client.x, client.y)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(F.cross_entropy(logits, y))
        acc = float((logits.argmax(1) == y).float().mean())
    return acc, loss, len(y)


def handle_evaluate(
    msg: Message, context: Context, *, run_config: Mapping[str, Any] | None = None
) -> Message:
    """Evaluate the received shared parameters and experts with the node's router."""
    import torch

    torch.set_num_threads(1)
    pid, _ = node_partition(context)
    fed = _federation(context, run_config)
    ins = decode_train_instruction(msg.content)
    stored = _router(context)
    model = _model(fed, ins, stored if stored is not None else fed.initial_router)
    acc, loss, n = _evaluate(model, fed.client(pid))
    return Message(
        RecordDict({"metrics": MetricRecord({"accuracy": acc, "loss": loss, "num-examples": n})}),
        reply_to=msg,
    )


Handler = Callable[..., Message]


def make_client_app(
    *,
    run_config: Mapping[str, Any] | None = None,
    train: Handler = handle_train,
    evaluate: Handler = handle_evaluate,
    query: Handler = handle_query,
) -> ClientApp:
    """The FLEX-MoE :class:`~flwr.clientapp.ClientApp`.

    Parameters
    ----------
    run_config : mapping, optional
        Entries overriding the run config Flower passes in ``context.run_config``.
    train, evaluate, query : callable, optional
        ``(Message, Context, *, run_config) -> Message`` handlers; the defaults train
        the harness MoE. Wrap them to add behaviour (e.g. fault injection in tests).
    """
    overrides = dict(run_config or {})
    app = ClientApp()

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        return train(msg, context, run_config=overrides)

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        return evaluate(msg, context, run_config=overrides)

    @app.query()
    def _query(msg: Message, context: Context) -> Message:
        return query(msg, context, run_config=overrides)

    return app


def router_of(context: Context) -> ArrayRecord | None:
    """The router a node keeps in its state (``None`` before its first round)."""
    return context.state.array_records.get(ROUTER_STATE_KEY)
