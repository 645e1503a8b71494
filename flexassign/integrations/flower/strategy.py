r"""FLEX-MoE server strategy for Flower's Message API.

:class:`FlexMoEStrategy` is a :class:`flwr.serverapp.strategy.Strategy`. Each round:

1. **Profiles.** Nodes the planner has not seen are asked (a ``query`` message) for
   their capacity profile; the reply carries a stable ``client-id`` and either an
   explicit ``capacity`` (:meth:`Planner.set_capacity
   <flexassign.alignment.Planner.set_capacity>`) or
   :class:`~flexassign.alignment.ClientProfile` fields (:meth:`Planner.register
   <flexassign.alignment.Planner.register>`, which derives :math:`k_c`).
2. **Sample and plan.** A seeded fraction of the profiled nodes is sampled (sorted by
   client id, so runs are reproducible whatever node ids Flower assigns) and the
   planner solves the round: :math:`A_c` for each sampled client :math:`c`.
3. **Configure.** Node :math:`c` receives the shared parameters, *only* the experts in
   :math:`A_c` (one ``expert.<e>`` ArrayRecord each) and ``expert-ids`` in its
   ConfigRecord (:mod:`~flexassign.integrations.flower.messages`).
4. **Aggregate.** Replies with errors, missing replies and replies that do not decode
   are dropped (counted in ``num-failures``). Shared parameters are averaged by
   sample count and each expert over the nodes that trained it weighted by usage
   (:func:`fl_harness.aggregation.aggregate_shared`,
   :func:`fl_harness.aggregation.aggregate_experts`); experts nobody trained keep
   their weights. Flower's FedAvg cannot do this: it requires identical keys in every
   reply.
5. **Feedback.** Each valid reply's per-expert feedback goes to
   :meth:`Planner.report <flexassign.alignment.Planner.report>`; failed nodes report
   nothing, so their fitness and the usage state are left untouched.

Per-round metrics (``accuracy``, ``loss``, ``utilization-cv``, ``plan-load-cv``,
``solve-time``, ``num-replies``, ``num-failures``, ...) come back as the train
MetricRecord, i.e. in ``Result.train_metrics_clientapp[round]``; federated evaluation
on the round's nodes fills ``Result.evaluate_metrics_clientapp``. Every round's plan is
kept in :attr:`FlexMoEStrategy.history`. With ``checkpoint_dir`` set, the planner state,
global arrays and history are written after every round and :meth:`FlexMoEStrategy.start`
resumes from them.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from .checkpoint import load_checkpoint, save_checkpoint
from .messages import (
    PROFILE_KEY,
    MessageFormatError,
    TrainReply,
    arrayrecord_to_numpy,
    decode_profile,
    decode_train_reply,
    encode_train_instruction,
    join_state,
    numpy_to_arrayrecord,
    split_state,
)

__all__ = ["FlexMoEStrategy", "RoundRecord", "aggregate_replies"]

ClientId = Any  # whatever the planner accepts; the client app sends an int


@dataclass
class RoundRecord:
    """What happened in one round, for inspection and tests.

    Attributes
    ----------
    server_round : int
    sampled : list
        Client ids sampled, ascending.
    plan : dict
        ``{client_id: tuple of expert ids}`` as planned.
    node_of : dict
        ``{client_id: Flower node id}`` for the sampled clients.
    replied : list
        Client ids whose reply was aggregated.
    failed : list
        Client ids that failed, did not reply in time, or sent a malformed reply.
    idle : list
        Sampled client ids planned with no expert (capacity 0); they get no message.
    feedback : dict
        ``{client_id: Feedback}`` reported to the planner.
    solve_time : float
    loads : list of float
        Per-expert load of the plan (clients assigned to each expert).
    lower, upper : list of float
        The per-expert load bounds the planner's problem imposed (empty if none).
    fallback : str or None
        The planner's fallback (soft bounds, greedy) if the hard problem failed.
    metrics : dict
    """

    server_round: int
    sampled: list[Any] = field(default_factory=list)
    plan: dict[Any, tuple[int, ...]] = field(default_factory=dict)
    node_of: dict[Any, int] = field(default_factory=dict)
    replied: list[Any] = field(default_factory=list)
    failed: list[Any] = field(default_factory=list)
    idle: list[Any] = field(default_factory=list)
    feedback: dict[Any, Any] = field(default_factory=dict)
    solve_time: float = float("nan")
    loads: list[float] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    fallback: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable view."""
        return {
            "server_round": self.server_round,
            "sampled": [_jsonable_id(c) for c in self.sampled],
            "plan": [[_jsonable_id(c), list(e)] for c, e in self.plan.items()],
            "replied": [_jsonable_id(c) for c in self.replied],
            "failed": [_jsonable_id(c) for c in self.failed],
            "idle": [_jsonable_id(c) for c in self.idle],
            "feedback": [[_jsonable_id(c), fb.to_dict()] for c, fb in self.feedback.items()],
            "solve_time": self.solve_time,
            "loads": list(self.loads),
            "lower": list(self.lower),
            "upper": list(self.upper),
            "fallback": self.fallback,
            "metrics": dict(self.metrics),
        }


def _jsonable_id(c: Any) -> Any:
    return c.item() if isinstance(c, np.generic) else c


def aggregate_replies(
    shared: Mapping[str, np.ndarray],
    experts: Mapping[int, Mapping[str, np.ndarray]],
    replies: Sequence[TrainReply],
) -> tuple[dict[str, np.ndarray], dict[int, dict[str, np.ndarray]]]:
    r"""New global shared and expert parameters from decoded train replies.

    Shared parameters: :math:`\theta = \sum_c n_c \theta_c / \sum_c n_c` over the
    replies. Expert :math:`e`: :math:`\phi_e = \sum_{c \ni e} u_{ce} \phi_{ce} /
    \sum_{c \ni e} u_{ce}` over the replies that carry :math:`e`, with :math:`u_{ce}`
    the usage count in the reply's feedback. Experts no reply carries, or with zero
    total usage, keep their current value; with no replies (or zero total samples)
    the shared parameters are kept too. This is a thin numpy adapter around
    :func:`fl_harness.aggregation.aggregate_shared` and
    :func:`fl_harness.aggregation.aggregate_experts`, so the harness and Flower
    aggregate identically. Inputs are not modified.

    Parameters
    ----------
    shared : mapping of str to ndarray
        Current shared parameters.
    experts : mapping of int to mapping of str to ndarray
        Current parameters of every expert.
    replies : sequence of TrainReply

    Returns
    -------
    shared, experts : dict
        New arrays (same keys, shapes and dtypes as the inputs).
    """
    import torch

    from fl_harness.aggregation import aggregate_experts, aggregate_shared

    def to_t(d: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.asarray(v)) for k, v in d.items()}

    def to_np(d: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in d.items()}

    new_shared = {k: np.array(v, copy=True) for k, v in shared.items()}
    if replies and sum(r.num_examples for r in replies) > 0:
        for i, r in enumerate(replies):
            if set(r.shared) != set(shared):
                raise MessageFormatError(
                    f"reply {i} has shared keys {sorted(r.shared)}; expected {sorted(shared)}"
                )
        new_shared = to_np(aggregate_shared([(to_t(r.shared), r.num_examples) for r in replies]))
    updates = []
    for r in replies:
        usage = dict(zip(r.feedback.experts, r.feedback.counts, strict=True))
        states = {e: to_t(s) for e, s in r.experts.items()}
        updates.append((states, {e: float(usage.get(e, 0)) for e in r.experts}))
    new_experts = aggregate_experts({e: to_t(s) for e, s in experts.items()}, updates)
    return new_shared, {e: to_np(s) for e, s in sorted(new_experts.items())}


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of a MetricRecord as floats (lists dropped)."""
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float)}


def _cv(values: Sequence[float]) -> float:
    a = np.asarray(values, dtype=np.float64)
    m = float(a.mean()) if a.size else 0.0
    return float(a.std() / m) if m > 0 else 0.0


class FlexMoEStrategy(Strategy):
    """Load-balanced client-expert assignment as a Flower strategy.

    Parameters
    ----------
    planner : flexassign.alignment.Planner
        Owns fitness, usage and capacity state; the strategy only calls
        ``register``, ``plan_round``, ``report``, ``utilization_cv`` and ``save``.
    fraction_train : float
        Fraction of profiled nodes sampled per round (at least ``min_train_nodes``).
    min_train_nodes, min_available_nodes : int
        Minimum nodes trained per round and connected before a round starts.
    fraction_evaluate : float
        Fraction of the round's trained nodes asked to evaluate (0 disables).
    seed : int
        Seeds node sampling.
    train_config : mapping, optional
        Extra entries for every train ConfigRecord (lr, local-epochs, ...).
    checkpoint_dir : str or Path, optional
        Where :meth:`start` writes the planner, arrays and history after every round
        and from where it resumes.
    profile_timeout : float
        Seconds to wait for profile replies.
    wait_timeout : float
        Seconds to wait for ``min_available_nodes`` to connect before giving up.
    settle_time : float
        Before the first round, also wait until the number of connected nodes has not
        changed for this many seconds (nodes of a federation register one by one).
    planner_factory : callable, optional
        ``path -> Planner`` used to restore a checkpoint; ``Planner.load`` by default.
    sampler : callable, optional
        ``(server_round, client_ids) -> sampled client ids`` replacing the default
        seeded sampling (``client_ids`` are the connected, profiled clients, sorted).
        :func:`~flexassign.integrations.flower.server.harness_sampler` reproduces the
        harness's client selection.
    node_config_fn : callable, optional
        ``(server_round, sampled) -> {client_id: {key: value}}``: per-node entries
        added to that node's train ConfigRecord (e.g. a ``train-seed``).
    """

    def __init__(
        self,
        *,
        planner: Any,
        fraction_train: float = 1.0,
        min_train_nodes: int = 1,
        min_available_nodes: int = 1,
        fraction_evaluate: float = 1.0,
        seed: int = 0,
        train_config: Mapping[str, Any] | None = None,
        checkpoint_dir: str | Path | None = None,
        profile_timeout: float = 120.0,
        wait_timeout: float = 300.0,
        settle_time: float = 1.0,
        planner_factory: Callable[[Path], Any] | None = None,
        sampler: Callable[[int, Sequence[Any]], Sequence[Any]] | None = None,
        node_config_fn: Callable[[int, Sequence[Any]], Mapping[Any, Mapping[str, Any]]]
        | None = None,
    ) -> None:
        if not 0.0 < fraction_train <= 1.0:
            raise ValueError(f"`fraction_train` must be in (0, 1]; got {fraction_train}")
        if not 0.0 <= fraction_evaluate <= 1.0:
            raise ValueError(f"`fraction_evaluate` must be in [0, 1]; got {fraction_evaluate}")
        if min_train_nodes < 1 or min_available_nodes < 1:
            raise ValueError("`min_train_nodes` and `min_available_nodes` must be >= 1")
        self.planner = planner
        self.fraction_train = float(fraction_train)
        self.min_train_nodes = int(min_train_nodes)
        self.min_available_nodes = int(min_available_nodes)
        self.fraction_evaluate = float(fraction_evaluate)
        self.seed = int(seed)
        self.train_config = dict(train_config or {})
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.profile_timeout = float(profile_timeout)
        self.wait_timeout = float(wait_timeout)
        self.settle_time = float(settle_time)
        self._settled = False
        self.planner_factory = planner_factory
        self.sampler = sampler
        self.node_config_fn = node_config_fn
        self.history: dict[int, RoundRecord] = {}
        self.profiles: dict[Any, dict[str, Any]] = {}
        self._client_of_node: dict[int, Any] = {}
        self._pending: dict[int, RoundRecord] = {}
        self._global_arrays: ArrayRecord | None = None

    # ------------------------------------------------------------------ logging

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(INFO, "\t├──> FLEX-MoE planner: %s", type(self.planner).__name__)
        log(INFO, "\t├──> Sampling: fraction_train %.2f, min nodes %d (available %d)",
            self.fraction_train, self.min_train_nodes, self.min_available_nodes)
        log(INFO, "\t├──> Evaluation: fraction of trained nodes %.2f", self.fraction_evaluate)
        log(INFO, "\t└──> Checkpoints: %s", self.checkpoint_dir or "off")

    # ---------------------------------------------------------------- profiles

    def _wait_for_nodes(self, grid: Grid) -> list[int]:
        deadline = time.monotonic() + self.wait_timeout
        while len(nodes := sorted(grid.get_node_ids())) < self.min_available_nodes:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(nodes)} nodes connected after {self.wait_timeout:.0f}s; "
                    f"`min_available_nodes` is {self.min_available_nodes}"
                )
            time.sleep(0.5)
        if not self._settled and self.settle_time > 0:
            stable_since, count = time.monotonic(), len(nodes)
            while time.monotonic() - stable_since < self.settle_time:
                time.sleep(min(0.2, self.settle_time))
                if len(nodes := sorted(grid.get_node_ids())) != count:
                    stable_since, count = time.monotonic(), len(nodes)
        self._settled = True
        return nodes

    def _collect_profiles(self, grid: Grid, node_ids: Iterable[int], server_round: int) -> None:
        """Query nodes without a known profile and register them with the planner."""
        unknown = [n for n in node_ids if n not in self._client_of_node]
        if not unknown:
            return
        msgs = [
            Message(
                RecordDict({"config": ConfigRecord({"server-round": server_round})}),
                dst_node_id=n,
                message_type=MessageType.QUERY,
                group_id=f"profile-{server_round}",
            )
            for n in unknown
        ]
        for reply in grid.send_and_receive(msgs, timeout=self.profile_timeout):
            node = reply.metadata.src_node_id
            if reply.has_error() or PROFILE_KEY not in reply.content.config_records:
                log(WARNING, "Node %d sent no capacity profile; not planned this round", node)
                continue
            self._register(node, decode_profile(reply.content.config_records[PROFILE_KEY]))

    def _register(self, node_id: int, profile: Mapping[str, Any]) -> None:
        prof = dict(profile)
        client_id = prof.pop("client-id", node_id)
        if client_id in self.profiles and self._known_node(client_id) not in (None, node_id):
            log(WARNING, "Client id %s reported by node %d is already used by node %s",
                client_id, node_id, self._known_node(client_id))
        self._client_of_node[node_id] = client_id
        if self.profiles.get(client_id) != prof:
            self.profiles[client_id] = prof
            if "capacity" in prof:
                # An explicit k_c, as the harness sets it.
                self.planner.set_capacity(client_id, int(prof["capacity"]))
            else:
                self.planner.register(client_id, profile=_to_client_profile(prof))

    def _known_node(self, client_id: Any) -> int | None:
        for n, c in self._client_of_node.items():
            if c == client_id:
                return n
        return None

    # ------------------------------------------------------------------- train

    def _sample(self, server_round: int, clients: Sequence[Any]) -> list[Any]:
        ordered = sorted(clients)
        if self.sampler is not None:
            chosen = list(self.sampler(server_round, ordered))
            unknown = [c for c in chosen if c not in set(ordered)]
            if unknown or len(set(chosen)) != len(chosen):
                raise ValueError(f"`sampler` returned unknown or repeated clients: {chosen}")
            return chosen
        k = max(int(len(ordered) * self.fraction_train), self.min_train_nodes)
        k = min(k, len(ordered))
        if k == len(ordered):
            return ordered
        rng = np.random.default_rng([self.seed, server_round])
        idx = np.sort(rng.choice(len(ordered), size=k, replace=False))
        return [ordered[i] for i in idx]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Profile new nodes, sample, plan, and build one message per sampled node."""
        nodes = self._wait_for_nodes(grid)
        self._collect_profiles(grid, nodes, server_round)
        connected = {self._client_of_node[n]: n for n in nodes if n in self._client_of_node}
        if len(connected) < self.min_train_nodes:
            log(WARNING, "Round %d: only %d profiled nodes (< min_train_nodes %d); skipping",
                server_round, len(connected), self.min_train_nodes)
            return []
        sampled = self._sample(server_round, list(connected))
        plan = self.planner.plan_round(sampled)
        result = getattr(plan, "result", None)
        record = RoundRecord(server_round=server_round, sampled=list(sampled))
        record.plan = {c: tuple(int(e) for e in plan[c]) for c in sampled}
        record.node_of = {c: connected[c] for c in sampled}
        record.solve_time = float(getattr(result, "runtime", float("nan")))
        num_experts = len(split_state(arrayrecord_to_numpy(arrays))[1])
        loads = np.zeros(num_experts)
        for assigned in record.plan.values():
            for e in assigned:
                loads[e] += 1
        record.loads = loads.tolist()
        problem = getattr(plan, "problem", None)
        if problem is not None:
            record.lower = np.asarray(problem.expert_min_load, dtype=float).tolist()
            record.upper = np.asarray(problem.expert_max_load, dtype=float).tolist()
        record.fallback = getattr(plan, "fallback", None)
        self._pending[server_round] = record
        self._global_arrays = arrays
        log(INFO, "configure_train: round %d, planned %d of %d nodes in %.3fs; loads %s",
            server_round, len(sampled), len(nodes), record.solve_time, loads.astype(int).tolist())

        shared, experts = split_state(arrayrecord_to_numpy(arrays))
        extra = {**self.train_config, **{k: v for k, v in config.items()
                                         if k not in ("server-round", "expert-ids")}}
        per_node = dict(self.node_config_fn(server_round, sampled)) if self.node_config_fn else {}
        record.idle = [c for c in sampled if not record.plan[c]]
        messages = []
        for c in sampled:
            if not record.plan[c]:
                continue
            content = encode_train_instruction(
                server_round=server_round,
                shared=shared,
                experts={e: experts[e] for e in record.plan[c]},
                config={**extra, **dict(per_node.get(c, {}))},
            )
            messages.append(
                Message(content, dst_node_id=record.node_of[c], message_type=MessageType.TRAIN,
                        group_id=str(server_round))
            )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the valid replies, report feedback, and return round metrics."""
        record = self._pending.pop(server_round, None)
        if record is None or self._global_arrays is None:
            return None, None
        client_of = {n: c for c, n in record.node_of.items()}
        decoded: dict[Any, TrainReply] = {}
        for msg in replies:
            c = client_of.get(msg.metadata.src_node_id)
            if c is None:
                continue
            if msg.has_error():
                log(WARNING, "Round %d: client %s failed: %s", server_round, c, msg.error.reason)
                continue
            try:
                reply = decode_train_reply(msg.content)
                extra = set(reply.experts) - set(record.plan[c])
                if extra:
                    raise MessageFormatError(f"sent experts {sorted(extra)} it was not assigned")
            except (MessageFormatError, ValueError, KeyError, TypeError) as exc:
                log(WARNING, "Round %d: dropping reply of client %s: %s", server_round, c, exc)
                continue
            decoded[c] = reply
        ordered = [c for c in record.sampled if c in decoded]
        record.replied = ordered
        record.failed = [c for c in record.sampled if c not in decoded and record.plan[c]]

        shared, experts = split_state(arrayrecord_to_numpy(self._global_arrays))
        try:
            new_shared, new_experts = aggregate_replies(
                shared, experts, [decoded[c] for c in ordered]
            )
        except (MessageFormatError, ValueError) as exc:
            log(WARNING, "Round %d: aggregation failed (%s); keeping the global model",
                server_round, exc)
            new_shared, new_experts = shared, experts
            ordered = []
            record.failed = [c for c in record.sampled if record.plan[c]]
            record.replied = []

        for c in ordered:
            fb = decoded[c].feedback
            try:
                self.planner.report(c, fb)
                record.feedback[c] = fb
            except ValueError as exc:
                log(WARNING, "Round %d: planner rejected feedback of client %s: %s",
                    server_round, c, exc)
            profile = decoded[c].profile
            if profile is not None:
                self._register(record.node_of[c], {"client-id": c, **profile})

        metrics = self._round_metrics(record, [decoded[c] for c in ordered])
        record.metrics = _scalars(metrics)
        self.history[server_round] = record
        arrays = numpy_to_arrayrecord(join_state(new_shared, new_experts))
        self._global_arrays = arrays
        return arrays, metrics

    def _round_metrics(self, record: RoundRecord, replies: Sequence[TrainReply]) -> MetricRecord:
        m = MetricRecord()
        total = sum(r.num_examples for r in replies)
        for key in ("accuracy", "loss"):
            vals = [(r.metrics[key], r.num_examples) for r in replies if key in r.metrics]
            w = sum(n for _, n in vals)
            if vals and w > 0:
                m[key] = float(sum(v * n for v, n in vals) / w)
        util = getattr(self.planner, "utilization_cv", None)
        if callable(util):
            m["utilization-cv"] = float(util())
        m["plan-load-cv"] = _cv(record.loads)
        m["solve-time"] = float(record.solve_time)
        m["num-sampled"] = len(record.sampled)
        m["num-replies"] = len(record.replied)
        m["num-failures"] = len(record.failed)
        m["num-examples"] = int(total)
        return m

    # ---------------------------------------------------------------- evaluate

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask the round's trained nodes to evaluate their experts with their router."""
        record = self.history.get(server_round)
        if record is None or self.fraction_evaluate == 0.0 or not record.replied:
            return []
        k = max(1, round(len(record.replied) * self.fraction_evaluate))
        rng = np.random.default_rng([self.seed, server_round, 1])
        chosen = sorted(rng.choice(len(record.replied), size=k, replace=False).tolist())
        shared, experts = split_state(arrayrecord_to_numpy(arrays))
        extra = {k2: v for k2, v in config.items() if k2 not in ("server-round", "expert-ids")}
        out = []
        for i in chosen:
            c = record.replied[i]
            content = encode_train_instruction(
                server_round=server_round,
                shared=shared,
                experts={e: experts[e] for e in record.plan[c]},
                config=extra,
            )
            out.append(Message(content, dst_node_id=record.node_of[c],
                               message_type=MessageType.EVALUATE, group_id=str(server_round)))
        return out

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Sample-weighted mean of the evaluation metrics."""
        rows: list[tuple[dict[str, float], int]] = []
        for msg in replies:
            if msg.has_error() or "metrics" not in msg.content.metric_records:
                continue
            rec = _scalars(msg.content.metric_records["metrics"])
            n = int(rec.pop("num-examples", 0))
            rows.append((rec, n))
        total = sum(n for _, n in rows)
        if not rows or total <= 0:
            return None
        keys = set.intersection(*(set(r) for r, _ in rows))
        out = MetricRecord({k: float(sum(r[k] * n for r, n in rows) / total) for k in sorted(keys)})
        out["num-examples"] = int(total)
        return out

    # ------------------------------------------------------------ checkpoints

    def save(self, directory: str | Path, *, server_round: int, arrays: ArrayRecord) -> Path:
        """Write planner state, global arrays and history to ``directory``."""
        return save_checkpoint(
            directory,
            planner=self.planner,
            arrays=arrayrecord_to_numpy(arrays),
            server_round=server_round,
            history=[self.history[r].to_json() for r in sorted(self.history)],
        )

    def restore(self, directory: str | Path) -> tuple[int, ArrayRecord] | None:
        """Load a checkpoint written by :meth:`save`; ``None`` if there is none.

        Replaces :attr:`planner` with the saved one and returns the last completed
        round and the global arrays. Node-id mappings are not restored: node ids are
        per-run, so nodes are profiled again (clients keep their ids).
        """
        ckpt = load_checkpoint(directory, planner_factory=self.planner_factory,
                               planner_type=type(self.planner))
        if ckpt is None:
            return None
        self.planner = ckpt.planner
        self.profiles = {}
        self._client_of_node = {}
        return ckpt.server_round, numpy_to_arrayrecord(ckpt.arrays)

    # ------------------------------------------------------------------ start

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run ``num_rounds`` rounds (train, then evaluate), resuming from a checkpoint.

        Same contract as :meth:`flwr.serverapp.strategy.Strategy.start`, plus: when
        ``checkpoint_dir`` holds a checkpoint, training continues after its last
        completed round with its arrays and planner state, and a checkpoint is written
        after every round.
        """
        log(INFO, "Starting %s strategy:", type(self).__name__)
        self.summary()
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        arrays = initial_arrays
        first = 1
        if self.checkpoint_dir is not None:
            restored = self.restore(self.checkpoint_dir)
            if restored is not None:
                done, arrays = restored
                first = done + 1
                log(INFO, "Resuming from %s after round %d", self.checkpoint_dir, done)
        result.arrays = arrays
        if evaluate_fn is not None and first == 1:
            res = evaluate_fn(0, arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        t0 = time.time()
        for rnd in range(first, num_rounds + 1):
            log(INFO, "")
            log(INFO, "[ROUND %s/%s]", rnd, num_rounds)
            replies = grid.send_and_receive(
                self.configure_train(rnd, arrays, train_config, grid), timeout=timeout
            )
            new_arrays, train_metrics = self.aggregate_train(rnd, replies)
            if new_arrays is not None:
                arrays = new_arrays
                result.arrays = arrays
            if train_metrics is not None:
                log(INFO, "\t└──> Train MetricRecord: %s", train_metrics)
                result.train_metrics_clientapp[rnd] = train_metrics
            eval_msgs = list(self.configure_evaluate(rnd, arrays, evaluate_config, grid))
            if eval_msgs:
                ev = self.aggregate_evaluate(rnd, grid.send_and_receive(eval_msgs, timeout=timeout))
                if ev is not None:
                    log(INFO, "\t└──> Evaluate MetricRecord: %s", ev)
                    result.evaluate_metrics_clientapp[rnd] = ev
            if evaluate_fn is not None:
                res = evaluate_fn(rnd, arrays)
                if res is not None:
                    result.evaluate_metrics_serverapp[rnd] = res
            if self.checkpoint_dir is not None:
                self.save(self.checkpoint_dir, server_round=rnd, arrays=arrays)
        log(INFO, "Strategy execution finished in %.2fs", time.time() - t0)
        for line in io.StringIO(str(result)):
            log(INFO, "\t%s", line.rstrip("\n"))
        return result

    def history_json(self) -> str:
        """Every round's :class:`RoundRecord` as JSON."""
        return json.dumps([self.history[r].to_json() for r in sorted(self.history)], indent=1)


def _to_client_profile(fields: Mapping[str, Any]) -> Any:
    """Turn reported profile fields (hyphenated) into a ``ClientProfile``.

    A bare ``device-class`` naming a preset gives that preset; other fields override.
    """
    from flexassign.alignment import ClientProfile

    kw = {k.replace("-", "_"): v for k, v in fields.items()}
    device = kw.get("device_class")
    if device is not None and not {"compute", "memory", "downlink", "uplink"} <= set(kw):
        rest = {k: v for k, v in kw.items() if k != "device_class"}
        return ClientProfile.preset(str(device), **rest)
    return ClientProfile(**kw)
