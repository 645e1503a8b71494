"""The harness's FLEX-MoE ClientApp (:class:`fl_harness.model.MoEModel`).

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
    with updated shared and expert parameters, ``num-examples``, local metrics,
    per-expert feedback (counts, accuracy, loss) and ``expert-weights``: each
    expert's top-k routed-sample usage, the weight the harness aggregates it with.
``evaluate``
    the same model with the aggregated parameters, evaluated on the node's local
    test split.

The node's data comes from the run config (see
:mod:`fl_harness.flower.harness`) and ``node_config["partition-id"]``
/ ``node_config["num-partitions"]``, which Flower's simulation engine sets and which
deployed SuperNodes get from ``flower-supernode --node-config``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from flexassign.integrations.flower.client import (
    load_local_state,
    node_partition,
    save_local_state,
)
from flexassign.integrations.flower.messages import (
    PROFILE_KEY,
    decode_train_instruction,
    encode_evaluate_reply,
    encode_profile,
    encode_train_reply,
)

from .harness import HarnessFederation, federation

__all__ = [
    "handle_evaluate",
    "handle_query",
    "handle_train",
    "make_client_app",
    "node_partition",
]


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
    n = len(c.y)
    if fed.config.capacity_choices is not None:
        return {"client-id": c.cid, "capacity": int(c.capacity), "device-class": str(c.device),
                "num-examples": n}
    from flexassign.alignment import ClientProfile

    fields = ClientProfile.preset(str(c.device)).to_dict()
    return {"client-id": c.cid, **{k.replace("_", "-"): v for k, v in fields.items()},
            "num-examples": n}


def _model(fed: HarnessFederation, arrays: Mapping[str, Any], expert_ids: tuple[int, ...],
           router: Mapping[str, Any]) -> Any:
    """A client model holding exactly the experts ``expert_ids``, with ``router``."""
    import torch

    from fl_harness.model import MoEModel

    model = MoEModel(**fed.model_kwargs, experts=expert_ids)
    sd: dict[str, Any] = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
    sd.update({k if k.startswith("router.") else f"router.{k}": torch.as_tensor(np.asarray(v))
               for k, v in router.items()})
    model.load_state_dict(sd, strict=True)
    return model


def _np(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            for k, v in state.items()}


def _router(context: Context) -> dict[str, Any] | None:
    """The router the node stored, under its ``router.*`` names (``None`` at first)."""
    return load_local_state(context)


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
    model = _model(fed, ins.arrays, ins.expert_ids, router)
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
        router_state=None if stored is None else {k.removeprefix("router."): torch.as_tensor(v)
                                                  for k, v in stored.items()},
    )
    save_local_state(context, {f"router.{k}": v for k, v in res.router_state.items()})
    upd = res.update
    arrays = _np(upd.shared)
    for e, p in upd.expert_states.items():
        arrays.update({f"experts.{e}.{k}": v for k, v in _np(p).items()})
    trained = _model(fed, arrays, tuple(upd.experts), res.router_state)
    acc, loss, n_test = _evaluate(trained, client)
    metrics = {"train-loss": float(upd.train_loss), "accuracy": acc, "loss": loss,
               "num-test-examples": float(n_test)}
    fb: Any = upd.feedback
    if bool(run_config_of(context, run_config).get("report-round-time", False)):
        from flexassign.alignment import Feedback

        fb = Feedback(list(fb.experts), list(fb.counts), accuracy=list(fb.accuracy),
                      loss=list(fb.loss), round_time=time.perf_counter() - t0,
                      train_samples=int(upd.num_samples) * cfg.local_epochs)
    # The harness weights each expert by its top-k routed-sample usage; under the
    # default "mixture" feedback the counts are top-1, so send the usage explicitly.
    content = encode_train_reply(arrays, num_examples=upd.num_samples, feedback=fb,
                                 metrics=metrics, expert_weights=upd.expert_weights)
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
    model = _model(fed, ins.arrays, ins.expert_ids,
                   stored if stored is not None else fed.initial_router)
    acc, loss, n = _evaluate(model, fed.client(pid))
    return Message(encode_evaluate_reply(num_examples=n, metrics={"accuracy": acc, "loss": loss}),
                   reply_to=msg)


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
