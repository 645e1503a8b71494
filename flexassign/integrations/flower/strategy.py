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
5. **Bound.** The weights replies claim are capped (:func:`~.replies.bound_replies`):
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
round's :class:`~.records.FlowerRoundRecord` is appended to a JSON-lines file as the round
ends, and with ``final_model_path`` the final global arrays are saved (``.npz``).

This module holds the Flower hooks; the work they delegate lives in :mod:`.nodes`
(waiting, profiling, sampling, matching replies), :mod:`.replies` (checking, bounding,
aggregating, reporting), :mod:`.records` (the round record and its metrics) and
:mod:`.loop` (the round loop of :meth:`FlexMoEStrategy.start`).
"""


from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from ..._files import write_npz_atomic
from ..._validation import check_int, check_optional_real, check_real
from ...errors import InvalidProblemError
from ..aggregation import (
    AGGREGATION_METHODS,
    DEFAULT_MAX_WEIGHT_RATIO,
    DEFAULT_TRIM,
    AggregationError,
)
from ..layout import ExpertLayout, LayoutError
from .checkpoint import load_checkpoint, save_checkpoint
from .loop import run_strategy
from .messages import (
    arrayrecord_to_numpy,
    encode_train_instruction,
    numpy_to_arrayrecord,
)
from .nodes import (
    NodeDirectory,
    match_replies,
    query_profiles,
    sample_clients,
    wait_for_nodes,
)
from .records import (
    FlowerRoundRecord,
    evaluate_metrics,
    plan_record,
    round_metrics,
    scalar_metrics,
)
from .replies import (
    StateDict,
    accept_evaluations,
    accept_replies,
    aggregate_replies,
    report_replies,
)

__all__ = ["FlexMoEStrategy"]


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
        JSON-lines file; one :meth:`~.records.FlowerRoundRecord.to_json` line is appended as
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
        #: which node is which client, and what each client declared
        self.nodes = NodeDirectory()
        self._pending: dict[int, FlowerRoundRecord] = {}
        self._sent: dict[int, list[tuple[Message, Any]]] = {}
        self._global: StateDict | None = None

    # ------------------------------------------------------------------ logging

    @property
    def profiles(self) -> dict[Any, dict[str, Any]]:
        """``{client id: profile fields}`` as last registered with the planner."""
        return self.nodes.profiles

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
        nodes = wait_for_nodes(
            grid, min_available=self.min_available_nodes, wait_timeout=self.wait_timeout,
            progress_interval=self.progress_interval,
            settle_time=0.0 if self._settled else self.settle_time,
        )
        self._settled = True
        return nodes

    def _collect_profiles(self, grid: Grid, node_ids: Iterable[int], server_round: int) -> None:
        """Query nodes without a known profile and register them with the planner."""
        unknown = self.nodes.unknown(node_ids)
        for node, profile in query_profiles(grid, unknown, server_round=server_round,
                                            timeout=self.profile_timeout).items():
            try:
                self.nodes.register(node, profile, self.planner)
            except (ValueError, TypeError) as exc:
                log(WARNING, "Node %d sent an unusable profile (%s); not planned this round",
                    node, exc)

    # ------------------------------------------------------------------- train

    def set_global_arrays(self, arrays: ArrayRecord) -> StateDict:
        """Take ``arrays`` as the global model (local parameters left out); checked."""
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
        state = self.set_global_arrays(arrays)
        shared, experts = self.layout.split(state)
        nodes = self._wait_for_nodes(grid)
        self._collect_profiles(grid, nodes, server_round)
        connected = self.nodes.connected(nodes)
        if len(connected) < self.min_train_nodes:
            log(WARNING, "Round %d: only %d profiled nodes (< min_train_nodes %d); skipping",
                server_round, len(connected), self.min_train_nodes)
            return []
        sampled = sample_clients(server_round, list(connected), fraction=self.fraction_train,
                                 min_nodes=self.min_train_nodes, seed=self.seed,
                                 sampler=self.sampler)
        record = plan_record(server_round, sampled, self.planner.plan_round(sampled),
                             node_of=connected, num_experts=len(experts))
        self._pending[server_round] = record
        log(INFO, "configure_train: round %d, planned %d of %d nodes in %.3fs; loads %s",
            server_round, len(sampled), len(nodes), record.solve_time,
            [int(x) for x in record.loads])

        extra = {**self.train_config, **{k: v for k, v in config.items()
                                         if k not in ("server-round", "expert-ids")}}
        per_node = dict(self.node_config_fn(server_round, sampled)) if self.node_config_fn else {}
        messages = []
        for c in sampled:
            if not record.plan[c]:
                continue
            messages.append(self._instruction(
                record, c, shared, experts, config={**extra, **dict(per_node.get(c, {}))},
                message_type=MessageType.TRAIN))
        # Grids set each message's id in place when they push it; error replies that
        # Flower generates for an unreachable node are matched back through it.
        self._sent[server_round] = list(zip(messages, [c for c in sampled if record.plan[c]],
                                            strict=True))
        return messages

    @staticmethod
    def _instruction(
        record: FlowerRoundRecord,
        client: Any,
        shared: Mapping[str, np.ndarray],
        experts: Mapping[int, Mapping[str, np.ndarray]],
        *,
        config: Mapping[str, Any],
        message_type: str,
    ) -> Message:
        """The message sending ``client`` the shared parameters and its planned experts."""
        arrays = dict(shared)
        for e in record.plan[client]:
            arrays.update(experts[e])
        content = encode_train_instruction(server_round=record.server_round, arrays=arrays,
                                           expert_ids=record.plan[client], config=config)
        return Message(content, dst_node_id=record.node_of[client], message_type=message_type,
                       group_id=str(record.server_round))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check, bound and aggregate the replies, report feedback, return round metrics.

        Never raises because of a reply: bad replies are dropped and logged.
        """
        record = self._pending.pop(server_round, None)
        if record is None or self._global is None:
            return None, None
        decoded = accept_replies(
            record, match_replies(replies, node_of=record.node_of,
                                  sent=self._sent.pop(server_round, []), server_round=server_round),
            self._global, layout=self.layout, declared=self.nodes.declared_examples,
            max_ratio=self.max_weight_ratio,
        )
        try:
            new_state = aggregate_replies(self._global, list(decoded.values()), layout=self.layout,
                                          method=self.aggregation, trim=self.trim)
        except (AggregationError, ValueError) as exc:  # pragma: no cover - checked above
            log(ERROR, "Round %d: aggregation failed (%s); keeping the global model",
                server_round, exc)
            new_state = dict(self._global)
            for c in decoded:
                record.drop(c, f"aggregation failed: {exc}")
            decoded = {}
        record.replied = list(decoded)
        record.failed = [c for c in record.sampled if c in record.dropped]
        report_replies(record, decoded, planner=self.planner, nodes=self.nodes)
        util = getattr(self.planner, "utilization_cv", None)
        metrics = round_metrics(record, list(decoded.values()),
                                utilization_cv=float(util()) if callable(util) else float("nan"))
        record.metrics = scalar_metrics(metrics)
        self.history[server_round] = record
        self._global = new_state
        return numpy_to_arrayrecord(new_state), metrics

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
            out.append(self._instruction(record, record.replied[i], shared, experts,
                                         config=extra, message_type=MessageType.EVALUATE))
        return out

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Sample-weighted mean of the evaluation metrics (claims bounded as in training)."""
        rows = accept_evaluations(replies, server_round=server_round)
        return evaluate_metrics(rows, max_ratio=self.max_weight_ratio)

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
        self.nodes.forget_nodes()
        return ckpt.server_round, numpy_to_arrayrecord(ckpt.arrays)

    def save_model(self, path: str | Path, arrays: ArrayRecord) -> Path:
        """Write ``arrays`` to ``path`` as ``.npz`` (atomically; names kept verbatim)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        return write_npz_atomic(target, arrayrecord_to_numpy(arrays), name="final_model_path")

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
        return run_strategy(
            self, grid, initial_arrays, num_rounds=num_rounds, timeout=timeout,
            train_config=train_config, evaluate_config=evaluate_config, evaluate_fn=evaluate_fn,
        )

    def history_json(self) -> str:
        """Every round's :class:`~.records.FlowerRoundRecord` as JSON."""
        return json.dumps([self.history[r].to_json() for r in sorted(self.history)], indent=1)
