r"""FLEX-MoE server strategy for Flower's Message API, for any MoE model.

:class:`FlexMoEStrategy` is a :class:`flwr.serverapp.strategy.Strategy`. The model is
seen only through its parameter names and an :class:`~.layout.ExpertLayout`
(experts, local router/gate parameters, shared rest). Each round:

1. **Profiles.** Nodes the planner has not seen are asked (a ``query`` message) for
   their profile: a stable ``client-id``, an explicit ``capacity``
   (:meth:`Planner.set_capacity <flexassign.alignment.Planner.set_capacity>`) or
   :class:`~flexassign.alignment.ClientProfile` fields (:meth:`Planner.register
   <flexassign.alignment.Planner.register>`), and optionally ``num-examples``, the
   dataset size, which caps the weight the node's replies may claim.
2. **Sample and plan.** A seeded fraction of the profiled nodes is sampled (sorted by
   client id) and the planner solves the round: :math:`A_c` for each sampled client.
3. **Configure.** Node :math:`c` receives the shared parameters and *only* the
   parameters of the experts in :math:`A_c`, under the model's own names
   (:mod:`~flexassign.integrations.flower.messages`).
4. **Validate.** A reply is dropped, logged with node id, client id and reason, and
   counted in ``num-failures`` if it is a Flower error, does not decode, carries a
   name the node was not sent or lacks a shared parameter or part of an expert, has
   a wrong shape or dtype, holds a NaN or infinity, or has feedback that is invalid
   or names experts the node was not assigned. A dropped reply never affects the
   others.
5. **Bound.** The weights replies claim are capped (:func:`bound_replies`):
   ``num-examples`` at the dataset size the node declared in its profile, if any,
   and at ``max_weight_ratio`` (default 10) times the round's median claim; each
   usage count at the (capped) ``num-examples``, since a count is a number of
   samples routed to that expert.
6. **Aggregate.** Shared parameters by ``num-examples``, each expert over the nodes
   that trained it by usage, with ``aggregation`` = ``"mean"``, ``"trimmed-mean"``
   or ``"median"`` (:mod:`flexassign.integrations.aggregation`, the module the
   harness aggregates with too). Experts nobody trained keep their weights.
7. **Feedback.** Each valid reply's (bounded) feedback goes to :meth:`Planner.report
   <flexassign.alignment.Planner.report>`; failed nodes report nothing.

Per-round metrics come back as the train MetricRecord; with ``results_path`` every
round's :class:`FlowerRoundRecord` is appended to a JSON-lines file as the round
ends, and with ``final_model_path`` the final global arrays are saved (``.npz``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from ..._files import atomic_write, jsonable
from ..._validation import check_int, check_optional_real, check_real
from ...alignment import Feedback
from ...errors import InvalidProblemError
from ...metrics import coefficient_of_variation
from ..aggregation import (
    AGGREGATION_METHODS,
    DEFAULT_MAX_WEIGHT_RATIO,
    DEFAULT_TRIM,
    AggregationError,
    aggregate_experts,
    bound_weights,
    check_arrays,
    weighted_average,
)
from .checkpoint import load_checkpoint, save_checkpoint
from .layout import ExpertLayout, LayoutError
from .messages import (
    PROFILE_KEY,
    MessageFormatError,
    TrainReply,
    arrayrecord_to_numpy,
    decode_evaluate_reply,
    decode_profile,
    decode_train_reply,
    encode_train_instruction,
    expert_counts,
    numpy_to_arrayrecord,
)

__all__ = [
    "FlexMoEStrategy",
    "FlowerRoundRecord",
    "aggregate_replies",
    "bound_replies",
    "check_reply",
    "format_metrics",
]

ClientId = Any  # whatever the planner accepts; int or str on the wire
StateDict = dict[str, np.ndarray]


@dataclass
class FlowerRoundRecord:
    """What happened in one Flower round, for inspection, logs and tests.

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
        Client ids that failed, did not reply in time, or sent a reply that was dropped.
    dropped : dict
        ``{client_id: reason}`` for every failed client.
    idle : list
        Sampled client ids planned with no expert (capacity 0); they get no message.
    feedback : dict
        ``{client_id: Feedback}`` reported to the planner (counts bounded).
    weights : dict
        ``{client_id: (claimed num-examples, weight used)}``.
    solve_time : float
    loads : list of float
        Per-expert load of the plan (clients assigned to each expert).
    lower, upper : list of float
        The per-expert load bounds of the planner's problem (empty if none).
    fallback : str or None
    metrics : dict
    """

    server_round: int
    sampled: list[Any] = field(default_factory=list)
    plan: dict[Any, tuple[int, ...]] = field(default_factory=dict)
    node_of: dict[Any, int] = field(default_factory=dict)
    replied: list[Any] = field(default_factory=list)
    failed: list[Any] = field(default_factory=list)
    dropped: dict[Any, str] = field(default_factory=dict)
    idle: list[Any] = field(default_factory=list)
    feedback: dict[Any, Any] = field(default_factory=dict)
    weights: dict[Any, tuple[int, float]] = field(default_factory=dict)
    solve_time: float = float("nan")
    loads: list[float] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    fallback: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable view (non-finite floats as ``null``)."""
        return jsonable({
            "server_round": self.server_round,
            "sampled": list(self.sampled),
            "plan": [[c, list(e)] for c, e in self.plan.items()],
            "node_of": [[c, n] for c, n in self.node_of.items()],
            "replied": list(self.replied),
            "failed": list(self.failed),
            "dropped": [[c, r] for c, r in self.dropped.items()],
            "idle": list(self.idle),
            "feedback": [[c, fb.to_dict()] for c, fb in self.feedback.items()],
            "weights": [[c, list(w)] for c, w in self.weights.items()],
            "solve_time": self.solve_time,
            "loads": list(self.loads),
            "lower": list(self.lower),
            "upper": list(self.upper),
            "fallback": self.fallback,
            "metrics": dict(self.metrics),
        })


# ------------------------------------------------------------ pure reply handling


def check_reply(
    reply: TrainReply,
    global_arrays: Mapping[str, np.ndarray],
    assigned: Iterable[int],
    *,
    layout: ExpertLayout,
) -> list[int]:
    """Check one decoded reply against the global arrays and the node's plan.

    The reply must carry every shared parameter and, for each expert it returns, all
    of that expert's parameters, for assigned experts only, with the global names,
    shapes and dtypes and finite values; its feedback may name assigned experts only.

    Returns
    -------
    list of int
        The experts the reply returns.

    Raises
    ------
    AggregationError or MessageFormatError
        Saying what is wrong.
    """
    allowed = set(assigned)
    shared, experts = layout.split(global_arrays)
    returned = layout.expert_ids(reply.arrays)
    for name in reply.arrays:
        if layout.is_local(name):
            raise MessageFormatError(f"reply carries local parameter `{name}`")
    extra = [e for e in returned if e not in allowed]
    if extra:
        raise MessageFormatError(f"reply carries experts {extra} the node was not assigned")
    reference: dict[str, np.ndarray] = dict(shared)
    for e in returned:
        reference.update(experts[e])
    check_arrays(reply.arrays, reference, name="arrays")
    fb_extra = [e for e in reply.feedback.experts if e not in allowed]
    if fb_extra:
        raise MessageFormatError(f"feedback names experts {fb_extra} the node was not assigned")
    return returned


def bound_replies(
    replies: Sequence[TrainReply],
    *,
    declared: Sequence[float | None] | None = None,
    max_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO,
) -> list[TrainReply]:
    """Replies with their claimed weights capped (see :func:`~..aggregation.bound_weights`).

    ``num-examples`` becomes ``min(claim, declared size, max_ratio * median claim)``
    (rounded down); each usage count becomes at most that bounded ``num-examples``.
    Feedback accuracy and loss are kept.

    Parameters
    ----------
    replies : sequence of TrainReply
    declared : sequence of float or None, optional
        Per reply, the dataset size the node declared (``None``: none).
    max_ratio : float or None

    Examples
    --------
    >>> fb = Feedback(experts=[0], counts=[10**9])
    >>> rs = [TrainReply({}, n, {}, Feedback(experts=[0], counts=[n])) for n in (10, 12)]
    >>> liar = TrainReply({}, 10**9, {}, fb)
    >>> [(r.num_examples, r.feedback.counts) for r in bound_replies([*rs, liar])]
    [(10, (10,)), (12, (12,)), (120, (120,))]
    """
    if not replies:
        return []
    caps = None
    if declared is not None:
        caps = [math.nan if d is None else float(d) for d in declared]
    bounded = bound_weights([r.num_examples for r in replies], caps=caps, max_ratio=max_ratio)
    out = []
    for r, w in zip(replies, bounded, strict=True):
        n = math.floor(float(w))
        fb = r.feedback
        counts = [min(int(c), n) for c in fb.counts]
        if n != r.num_examples or list(fb.counts) != counts:
            fb = Feedback(fb.experts, counts, accuracy=fb.accuracy, loss=fb.loss,
                          round_time=fb.round_time, train_samples=fb.train_samples)
            r = replace(r, num_examples=n, feedback=fb)
        out.append(r)
    return out


def aggregate_replies(
    global_arrays: Mapping[str, np.ndarray],
    replies: Sequence[TrainReply],
    *,
    layout: ExpertLayout | None = None,
    method: str = "mean",
    trim: float = DEFAULT_TRIM,
) -> StateDict:
    r"""New global arrays from checked (and bounded) replies.

    Shared parameters: :math:`\theta = \sum_c n_c \theta_c / \sum_c n_c` over the
    replies (or the trimmed mean / median with those weights). Expert :math:`e`:
    the same over the replies that carry :math:`e`, weighted by the usage count
    :math:`u_{ce}` in the reply's feedback. Experts no reply carries, or with zero
    total usage, keep their current value; with no replies or zero total samples the
    shared parameters are kept too. Inputs are not modified.

    Parameters
    ----------
    global_arrays : mapping of str to ndarray
        Current global arrays (shared + every expert; no local parameter).
    replies : sequence of TrainReply
        Replies that passed :func:`check_reply`.
    layout : ExpertLayout, optional
    method, trim
        See :func:`flexassign.integrations.aggregation.weighted_average`.

    Returns
    -------
    dict of str to ndarray
        Same names (and order), shapes and dtypes as ``global_arrays``.
    """
    layout = layout or ExpertLayout()
    shared, experts = layout.split(global_arrays)
    new_shared: StateDict = {k: np.array(v, copy=True) for k, v in shared.items()}
    if replies and sum(r.num_examples for r in replies) > 0 and shared:
        states = [{k: r.arrays[k] for k in shared} for r in replies]
        new_shared = weighted_average(states, [r.num_examples for r in replies],
                                      method=method, trim=trim)
    updates = []
    for r in replies:
        _, sent = layout.split(r.arrays)
        usage = expert_counts(r.feedback)
        updates.append((sent, {e: float(usage.get(e, 0)) for e in sent}))
    new_experts = aggregate_experts(experts, updates, method=method, trim=trim)
    merged = {**new_shared}
    for params in new_experts.values():
        merged.update(params)
    return {k: merged[k] for k in global_arrays if k in merged}


def format_metrics(metrics: Mapping[str, Any], digits: int = 4) -> str:
    """``{key: value}`` with floats rounded to ``digits`` significant digits, for logs.

    >>> format_metrics({"accuracy": 0.912345678, "num-replies": 3})
    '{accuracy: 0.9123, num-replies: 3}'
    """
    parts = []
    for k, v in metrics.items():
        if isinstance(v, float):
            parts.append(f"{k}: {v:.{digits}g}")
        else:
            parts.append(f"{k}: {v}")
    return "{" + ", ".join(parts) + "}"


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of a MetricRecord as floats (lists dropped)."""
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float)}


# ----------------------------------------------------------------------- strategy


class FlexMoEStrategy(Strategy):
    """Load-balanced client-expert assignment as a Flower strategy, for any MoE model.

    Parameters
    ----------
    planner : flexassign.alignment.Planner
        Owns fitness, usage and capacity state; the strategy calls ``register``,
        ``set_capacity``, ``plan_round``, ``report``, ``utilization_cv`` and ``save``.
    layout : ExpertLayout, optional
        Which parameters are experts and which stay on clients; the default is the
        harness model's naming (``experts.<e>.*``, ``router.*``).
    fraction_train : float
        Fraction of profiled nodes sampled per round (at least ``min_train_nodes``).
    min_train_nodes, min_available_nodes : int
        Minimum nodes trained per round and connected before a round starts.
    fraction_evaluate : float
        Fraction of the round's trained nodes asked to evaluate (0 disables).
    seed : int
        Seeds node sampling.
    aggregation : {"mean", "trimmed-mean", "median"}
        How shared and expert parameters are combined.
    trim : float
        Weight fraction cut from each end by ``"trimmed-mean"``, in ``[0, 0.5)``.
    max_weight_ratio : float or None
        A reply's ``num-examples`` is capped at this multiple of the round's median
        claim (default 10; ``None`` disables this cap, the profile cap stays).
    train_config : mapping, optional
        Extra entries for every train ConfigRecord (lr, local-epochs, ...).
    checkpoint_dir : str or Path, optional
        Where :meth:`start` writes the planner, arrays and history after every round
        and from where it resumes.
    results_path : str or Path, optional
        JSON-lines file; one :meth:`FlowerRoundRecord.to_json` line is appended as
        each round ends.
    final_model_path : str or Path, optional
        ``.npz`` file the final global arrays are written to when :meth:`start` ends.
    profile_timeout : float
        Seconds to wait for profile replies.
    wait_timeout : float
        Seconds to wait for ``min_available_nodes`` to connect before giving up
        (progress is logged every ``progress_interval`` seconds meanwhile).
    settle_time : float
        Before the first round, also wait until the number of connected nodes has not
        changed for this many seconds.
    progress_interval : float
        Seconds between "waiting for nodes" log lines.
    planner_factory : callable, optional
        ``path -> Planner`` used to restore a checkpoint; ``Planner.load`` by default.
    sampler : callable, optional
        ``(server_round, client_ids) -> sampled client ids`` replacing the default
        seeded sampling (``client_ids`` sorted).
    node_config_fn : callable, optional
        ``(server_round, sampled) -> {client_id: {key: value}}``: per-node entries
        added to that node's train ConfigRecord (e.g. a ``train-seed``).

    Raises
    ------
    InvalidProblemError or ProblemTypeError
        Naming the bad argument.
    """

    def __init__(
        self,
        *,
        planner: Any,
        layout: ExpertLayout | None = None,
        fraction_train: float = 1.0,
        min_train_nodes: int = 1,
        min_available_nodes: int = 1,
        fraction_evaluate: float = 1.0,
        seed: int = 0,
        aggregation: str = "mean",
        trim: float = DEFAULT_TRIM,
        max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO,
        train_config: Mapping[str, Any] | None = None,
        checkpoint_dir: str | Path | None = None,
        results_path: str | Path | None = None,
        final_model_path: str | Path | None = None,
        profile_timeout: float = 120.0,
        wait_timeout: float = 300.0,
        settle_time: float = 1.0,
        progress_interval: float = 10.0,
        planner_factory: Callable[[Path], Any] | None = None,
        sampler: Callable[[int, Sequence[Any]], Sequence[Any]] | None = None,
        node_config_fn: Callable[[int, Sequence[Any]], Mapping[Any, Mapping[str, Any]]]
        | None = None,
    ) -> None:
        if layout is None:
            layout = ExpertLayout()
        if not isinstance(layout, ExpertLayout):
            raise LayoutError(f"`layout` must be an ExpertLayout; got {type(layout).__name__}")
        self.fraction_train = check_real("fraction_train", fraction_train, lo=0.0, hi=1.0,
                                         lo_open=True)
        self.fraction_evaluate = check_real("fraction_evaluate", fraction_evaluate, lo=0.0,
                                            hi=1.0)
        self.min_train_nodes = check_int("min_train_nodes", min_train_nodes, lo=1)
        self.min_available_nodes = check_int("min_available_nodes", min_available_nodes, lo=1)
        if aggregation not in AGGREGATION_METHODS:
            raise InvalidProblemError(
                f"unknown `aggregation` {aggregation!r}; valid: "
                f"{', '.join(repr(m) for m in AGGREGATION_METHODS)}"
            )
        self.aggregation = aggregation
        self.trim = check_real("trim", trim, lo=0.0, hi=0.5, hi_open=True)
        self.max_weight_ratio = check_optional_real("max_weight_ratio", max_weight_ratio, lo=1.0)
        self.profile_timeout = check_real("profile_timeout", profile_timeout, lo=0.0, lo_open=True)
        self.wait_timeout = check_real("wait_timeout", wait_timeout, lo=0.0)
        self.settle_time = check_real("settle_time", settle_time, lo=0.0)
        self.progress_interval = check_real("progress_interval", progress_interval, lo=0.0,
                                            lo_open=True)
        self.planner = planner
        self.layout = layout
        self.seed = check_int("seed", seed)
        self.train_config = dict(train_config or {})
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.results_path = None if results_path is None else Path(results_path)
        self.final_model_path = None if final_model_path is None else Path(final_model_path)
        self._settled = False
        self.planner_factory = planner_factory
        self.sampler = sampler
        self.node_config_fn = node_config_fn
        self.history: dict[int, FlowerRoundRecord] = {}
        self.profiles: dict[Any, dict[str, Any]] = {}
        self.declared_examples: dict[Any, int] = {}
        self._client_of_node: dict[int, Any] = {}
        self._pending: dict[int, FlowerRoundRecord] = {}
        self._sent: dict[int, list[tuple[Message, Any]]] = {}
        self._global: StateDict | None = None

    # ------------------------------------------------------------------ logging

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(INFO, "\t├──> FLEX-MoE planner: %s (%d experts)", type(self.planner).__name__,
            getattr(self.planner, "num_experts", -1))
        log(INFO, "\t├──> Layout: expert %r, local %r", self.layout.expert, self.layout.local)
        log(INFO, "\t├──> Sampling: fraction_train %.2f, min nodes %d (available %d)",
            self.fraction_train, self.min_train_nodes, self.min_available_nodes)
        log(INFO, "\t├──> Aggregation: %s; claimed weights capped at %s x the median",
            self.aggregation if self.aggregation != "trimmed-mean"
            else f"trimmed-mean (trim {self.trim:g})",
            "no" if self.max_weight_ratio is None else f"{self.max_weight_ratio:g}")
        log(INFO, "\t├──> Evaluation: fraction of trained nodes %.2f", self.fraction_evaluate)
        log(INFO, "\t└──> Checkpoints: %s; results: %s; final model: %s",
            self.checkpoint_dir or "off", self.results_path or "off",
            self.final_model_path or "off")

    # ---------------------------------------------------------------- profiles

    def _wait_for_nodes(self, grid: Grid) -> list[int]:
        start = time.monotonic()
        deadline = start + self.wait_timeout
        next_log = start
        while len(nodes := sorted(grid.get_node_ids())) < self.min_available_nodes:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(
                    f"only {len(nodes)} of the required {self.min_available_nodes} nodes "
                    f"(`min-available-nodes`) connected within {self.wait_timeout:g}s "
                    "(`wait-timeout`); start more SuperNodes or lower `min-available-nodes`"
                )
            if now >= next_log:
                log(INFO, "Waiting for nodes to connect: %d connected (minimum required: %d; "
                    "giving up in %.0fs)", len(nodes), self.min_available_nodes, deadline - now)
                next_log = now + self.progress_interval
            time.sleep(min(0.5, max(deadline - now, 0.01)))
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
            Message(RecordDict({"config": ConfigRecord({"server-round": server_round})}),
                    dst_node_id=n, message_type=MessageType.QUERY,
                    group_id=f"profile-{server_round}")
            for n in unknown
        ]
        answered = set()
        for reply in grid.send_and_receive(msgs, timeout=self.profile_timeout):
            node = reply.metadata.src_node_id
            answered.add(node)
            if reply.has_error():
                log(WARNING, "Node %d sent no profile (error: %s); not planned this round",
                    node, reply.error.reason)
                continue
            try:
                if PROFILE_KEY not in reply.content.config_records:
                    raise MessageFormatError(f"reply lacks the `{PROFILE_KEY}` ConfigRecord")
                self._register(node, decode_profile(reply.content.config_records[PROFILE_KEY]))
            except (ValueError, TypeError) as exc:
                log(WARNING, "Node %d sent an unusable profile (%s); not planned this round",
                    node, exc)
        for node in unknown:
            if node not in answered:
                log(WARNING, "Node %d did not answer the profile query within %.0fs", node,
                    self.profile_timeout)

    def _register(self, node_id: int, profile: Mapping[str, Any]) -> None:
        prof = dict(profile)
        client_id = prof.pop("client-id")
        declared = prof.pop("num-examples", None)
        other = self._known_node(client_id)
        if other not in (None, node_id):
            raise MessageFormatError(f"client id {client_id!r} is already used by node {other}")
        if self.profiles.get(client_id) != prof:
            if "capacity" in prof:
                self.planner.set_capacity(client_id, int(prof["capacity"]))
            else:
                self.planner.register(client_id, profile=_to_client_profile(prof))
            self.profiles[client_id] = prof
        self._client_of_node[node_id] = client_id
        if declared is not None:
            self.declared_examples[client_id] = int(declared)

    def _known_node(self, client_id: Any) -> int | None:
        for n, c in self._client_of_node.items():
            if c == client_id:
                return n
        return None

    # ------------------------------------------------------------------- train

    def _sample(self, server_round: int, clients: Sequence[Any]) -> list[Any]:
        ordered = sorted(clients, key=lambda c: (isinstance(c, str), c))
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

    def _set_global(self, arrays: ArrayRecord) -> StateDict:
        state = arrayrecord_to_numpy(arrays)
        local = [k for k in state if self.layout.is_local(k)]
        if local:
            log(INFO, "Keeping %d local parameter(s) out of the global model (%s%s)",
                len(local), ", ".join(local[:3]), ", ..." if len(local) > 3 else "")
        state = self.layout.public(state)
        self.layout.check_model(state, num_experts=getattr(self.planner, "num_experts", None))
        self._global = state
        return state

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Profile new nodes, sample, plan, and build one message per sampled node."""
        state = self._set_global(arrays)
        shared, experts = self.layout.split(state)
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
        record = FlowerRoundRecord(server_round=server_round, sampled=list(sampled))
        record.plan = {c: tuple(int(e) for e in plan[c]) for c in sampled}
        record.node_of = {c: connected[c] for c in sampled}
        record.solve_time = float(getattr(result, "runtime", float("nan")))
        loads = np.zeros(len(experts))
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
        log(INFO, "configure_train: round %d, planned %d of %d nodes in %.3fs; loads %s",
            server_round, len(sampled), len(nodes), record.solve_time, loads.astype(int).tolist())

        extra = {**self.train_config, **{k: v for k, v in config.items()
                                         if k not in ("server-round", "expert-ids")}}
        per_node = dict(self.node_config_fn(server_round, sampled)) if self.node_config_fn else {}
        record.idle = [c for c in sampled if not record.plan[c]]
        messages = []
        for c in sampled:
            if not record.plan[c]:
                continue
            out = dict(shared)
            for e in record.plan[c]:
                out.update(experts[e])
            content = encode_train_instruction(
                server_round=server_round, arrays=out, expert_ids=record.plan[c],
                config={**extra, **dict(per_node.get(c, {}))},
            )
            messages.append(Message(content, dst_node_id=record.node_of[c],
                                    message_type=MessageType.TRAIN, group_id=str(server_round)))
        # Grids set each message's id in place when they push it; error replies that
        # Flower generates for an unreachable node are matched back through it.
        self._sent[server_round] = list(zip(messages, [c for c in sampled if record.plan[c]],
                                            strict=True))
        return messages

    def _drop(self, record: FlowerRoundRecord, client: Any, reason: str) -> None:
        record.dropped[client] = reason
        log(WARNING, "Round %d: dropping reply of node %d (client %s): %s",
            record.server_round, record.node_of[client], client, reason)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check, bound and aggregate the replies, report feedback, return round metrics.

        Never raises because of a reply: bad replies are dropped and logged.
        """
        record = self._pending.pop(server_round, None)
        if record is None or self._global is None:
            return None, None
        client_of = {n: c for c, n in record.node_of.items()}
        by_message = {m.metadata.message_id: c for m, c in self._sent.pop(server_round, [])
                      if m.metadata.message_id}
        decoded: dict[Any, TrainReply] = {}
        for msg in replies:
            node = msg.metadata.src_node_id
            c = client_of.get(node)
            if c is None:  # e.g. an error reply Flower made for a node that went away
                c = by_message.get(msg.metadata.reply_to_message_id)
            if c is None:
                log(WARNING, "Round %d: ignoring a reply from node %d, which was not sent "
                    "a train message", server_round, node)
                continue
            if c in decoded or c in record.dropped:
                log(WARNING, "Round %d: ignoring a second reply from node %d (client %s)",
                    server_round, node, c)
                continue
            if msg.has_error():
                self._drop(record, c, f"Flower error {msg.error.code}: {msg.error.reason}")
                continue
            try:
                reply = decode_train_reply(msg.content)
                check_reply(reply, self._global, record.plan[c], layout=self.layout)
            except (MessageFormatError, AggregationError, LayoutError) as exc:
                self._drop(record, c, str(exc))
                continue
            decoded[c] = reply
        for c in record.sampled:
            if record.plan[c] and c not in decoded and c not in record.dropped:
                self._drop(record, c, "no reply (node gone or round timeout)")
        ordered = [c for c in record.sampled if c in decoded]
        bounded = bound_replies([decoded[c] for c in ordered],
                                declared=[self.declared_examples.get(c) for c in ordered],
                                max_ratio=self.max_weight_ratio)
        for c, r in zip(ordered, bounded, strict=True):
            record.weights[c] = (decoded[c].num_examples, float(r.num_examples))
            if r.num_examples != decoded[c].num_examples:
                log(WARNING, "Round %d: node %d (client %s) claims %d examples; weighted as %d",
                    server_round, record.node_of[c], c, decoded[c].num_examples, r.num_examples)
            decoded[c] = r
        try:
            new_state = aggregate_replies(self._global, bounded, layout=self.layout,
                                          method=self.aggregation, trim=self.trim)
        except (AggregationError, ValueError) as exc:  # pragma: no cover - checked above
            log(ERROR, "Round %d: aggregation failed (%s); keeping the global model",
                server_round, exc)
            new_state = dict(self._global)
            for c in ordered:
                self._drop(record, c, f"aggregation failed: {exc}")
            ordered = []
        record.replied = ordered
        record.failed = [c for c in record.sampled if c in record.dropped]

        for c in ordered:
            reply = decoded[c]
            try:
                self.planner.report(c, reply.feedback)
                record.feedback[c] = reply.feedback
            except (ValueError, TypeError) as exc:
                log(WARNING, "Round %d: planner rejected feedback of node %d (client %s): %s",
                    server_round, record.node_of[c], c, exc)
            if reply.profile is not None:
                try:
                    self._register(record.node_of[c], {"client-id": c, **reply.profile})
                except (ValueError, TypeError) as exc:
                    log(WARNING, "Round %d: unusable profile from client %s: %s",
                        server_round, c, exc)

        metrics = self._round_metrics(record, [decoded[c] for c in ordered])
        record.metrics = _scalars(metrics)
        self.history[server_round] = record
        self._global = new_state
        return numpy_to_arrayrecord(new_state), metrics

    def _round_metrics(self, record: FlowerRoundRecord,
                       replies: Sequence[TrainReply]) -> MetricRecord:
        m = MetricRecord()
        for key in ("accuracy", "loss"):
            vals = [(r.metrics[key], r.num_examples) for r in replies if key in r.metrics]
            w = sum(n for _, n in vals)
            if vals and w > 0:
                m[key] = float(sum(v * n for v, n in vals) / w)
        util = getattr(self.planner, "utilization_cv", None)
        if callable(util):
            cv = float(util())
            if math.isfinite(cv):
                m["utilization-cv"] = cv
        plan_cv = coefficient_of_variation(record.loads) if record.loads else math.nan
        if math.isfinite(plan_cv):
            m["plan-load-cv"] = float(plan_cv)
        if math.isfinite(record.solve_time):
            m["solve-time"] = float(record.solve_time)
        m["num-sampled"] = len(record.sampled)
        m["num-replies"] = len(record.replied)
        m["num-failures"] = len(record.failed)
        m["num-examples"] = int(sum(r.num_examples for r in replies))
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
        shared, experts = self.layout.split(self.layout.public(arrayrecord_to_numpy(arrays)))
        extra = {k2: v for k2, v in config.items() if k2 not in ("server-round", "expert-ids")}
        out = []
        for i in chosen:
            c = record.replied[i]
            sent = dict(shared)
            for e in record.plan[c]:
                sent.update(experts[e])
            content = encode_train_instruction(server_round=server_round, arrays=sent,
                                               expert_ids=record.plan[c], config=extra)
            out.append(Message(content, dst_node_id=record.node_of[c],
                               message_type=MessageType.EVALUATE, group_id=str(server_round)))
        return out

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Sample-weighted mean of the evaluation metrics (claims bounded as in training)."""
        rows: list[tuple[dict[str, float], int]] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                log(WARNING, "Round %d: evaluation failed on node %d: %s", server_round, node,
                    msg.error.reason)
                continue
            try:
                n, rec = decode_evaluate_reply(msg.content)
            except MessageFormatError as exc:
                log(WARNING, "Round %d: dropping evaluation of node %d: %s", server_round,
                    node, exc)
                continue
            rows.append((rec, n))
        if not rows:
            return None
        weights = bound_weights([n for _, n in rows], max_ratio=self.max_weight_ratio)
        total = float(weights.sum())
        if total <= 0:
            return None
        keys = set.intersection(*(set(r) for r, _ in rows))
        out = MetricRecord({k: float(sum(r[k] * w for (r, _), w in zip(rows, weights,
                                                                         strict=True)) / total)
                            for k in sorted(keys)})
        out["num-examples"] = int(sum(n for _, n in rows))
        return out

    # ------------------------------------------------------------ checkpoints

    def save(self, directory: str | Path, *, server_round: int, arrays: ArrayRecord) -> Path:
        """Write planner state, global arrays and history to ``directory``."""
        return save_checkpoint(
            directory, planner=self.planner, arrays=arrayrecord_to_numpy(arrays),
            server_round=server_round,
            history=[self.history[r].to_json() for r in sorted(self.history)],
        )

    def restore(self, directory: str | Path) -> tuple[int, ArrayRecord] | None:
        """Load a checkpoint written by :meth:`save`; ``None`` if there is none.

        Replaces :attr:`planner` with the saved one and returns the last completed
        round and the global arrays. Node ids are per run, so nodes are profiled again
        (clients keep their ids).
        """
        ckpt = load_checkpoint(directory, planner_factory=self.planner_factory,
                               planner_type=type(self.planner))
        if ckpt is None:
            return None
        self.planner = ckpt.planner
        self.profiles = {}
        self._client_of_node = {}
        return ckpt.server_round, numpy_to_arrayrecord(ckpt.arrays)

    def _append_result(self, record: FlowerRoundRecord) -> None:
        assert self.results_path is not None
        line = json.dumps(record.to_json(), allow_nan=False) + "\n"
        self.results_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.results_path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()

    def save_model(self, path: str | Path, arrays: ArrayRecord) -> Path:
        """Write ``arrays`` to ``path`` as ``.npz`` (atomically; names kept verbatim)."""
        state = arrayrecord_to_numpy(arrays)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(target, lambda fh: np.savez(fh, **state),  # type: ignore[arg-type]
                            name="final_model_path")

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

        Same contract as :meth:`flwr.serverapp.strategy.Strategy.start`, plus: local
        parameters in ``initial_arrays`` are kept out of the global model; when
        ``checkpoint_dir`` holds a checkpoint, training continues after its last
        completed round; each round's record is appended to ``results_path``; the
        final arrays are written to ``final_model_path``.

        Raises
        ------
        LayoutError
            If the layout finds no expert in ``initial_arrays`` (or other ids than the
            planner's).
        TimeoutError
            If too few nodes connect within ``wait_timeout``.
        """
        log(INFO, "Starting %s strategy:", type(self).__name__)
        self.summary()
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        arrays = numpy_to_arrayrecord(self._set_global(initial_arrays))
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
            messages = list(self.configure_train(rnd, arrays, train_config, grid))
            replies = grid.send_and_receive(messages, timeout=timeout) if messages else []
            new_arrays, train_metrics = self.aggregate_train(rnd, replies)
            if new_arrays is not None:
                arrays = new_arrays
                result.arrays = arrays
            if train_metrics is not None:
                log(INFO, "\t└──> Train MetricRecord: %s", format_metrics(train_metrics))
                result.train_metrics_clientapp[rnd] = train_metrics
            eval_msgs = list(self.configure_evaluate(rnd, arrays, evaluate_config, grid))
            if eval_msgs:
                ev = self.aggregate_evaluate(rnd, grid.send_and_receive(eval_msgs, timeout=timeout))
                if ev is not None:
                    log(INFO, "\t└──> Evaluate MetricRecord: %s", format_metrics(ev))
                    result.evaluate_metrics_clientapp[rnd] = ev
            if evaluate_fn is not None:
                res = evaluate_fn(rnd, arrays)
                if res is not None:
                    result.evaluate_metrics_serverapp[rnd] = res
            if self.results_path is not None and rnd in self.history:
                self._append_result(self.history[rnd])
            if self.checkpoint_dir is not None:
                self.save(self.checkpoint_dir, server_round=rnd, arrays=arrays)
        if self.final_model_path is not None:
            path = self.save_model(self.final_model_path, arrays)
            log(INFO, "Final model (%d arrays) saved to %s", len(arrays), path)
        log(INFO, "Strategy execution finished in %.2fs", time.time() - t0)
        for rnd, m in sorted(result.train_metrics_clientapp.items()):
            log(INFO, "\tround %d train: %s", rnd, format_metrics(m))
        for rnd, m in sorted(result.evaluate_metrics_clientapp.items()):
            log(INFO, "\tround %d evaluate: %s", rnd, format_metrics(m))
        return result

    def history_json(self) -> str:
        """Every round's :class:`FlowerRoundRecord` as JSON."""
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
