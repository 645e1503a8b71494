"""The planner: client registry, rounds, and delegation to the alignment components.

:class:`Planner` holds the state of a federation's alignment (fitness
:class:`~.fitness.FitnessTracker`, usage :class:`~.usage.UsageMonitor`, client
:class:`~.registry.ClientRegistry`, the :class:`~.rounds.OpenRound`) and, each
round, hands the participants to a policy from :data:`~.policies.POLICIES`
(see :mod:`.policies` for the scores and the strategies). Its parameters are one
:class:`~.config.PlannerConfig`. It saves itself as the sum of its components'
``to_dict`` inside :mod:`.state`'s versioned envelope.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import check_int
from ..errors import (
    FlexAssignError,
    InvalidFeedbackError,
    InvalidProblemError,
    ProblemTypeError,
)
from ..metrics import spearman
from ..problem import AssignmentProblem
from ..solve import evaluate_assignment
from . import state as state_file
from .capacity import CapacityLimits, ClientProfile
from .config import PlannerConfig, planner_options, planner_signature
from .feedback import Feedback, ProbeFeedback, check_round_load
from .fitness import FitnessTracker
from .plan import Plan, empty_result, expert_lists
from .policies import POLICIES, Decision, RoundInput, check_strategy, flex_bounds
from .registry import ClientRegistry, check_id, check_ids, id_from_json, id_to_json
from .rounds import OpenRound, imposed_matrix
from .stability import StabilityTracker
from .usage import UsageMonitor, UtilizationStats, windowed_stats

__all__ = ["Planner"]

_TIE_BREAK = 1e-6

FloatArray = NDArray[np.float64]


def _check_id(client_id: Any) -> None:
    check_id(client_id)  # a str or an integer, as plan_round requires


class Planner:
    """Dynamic client-expert alignment: fitness, usage and capacity state, and planning.

    Parameters
    ----------
    num_experts : int
        :math:`E`.
    *args
        ``strategy``, ``tolerance`` and ``seed`` may also be given by position.
    **options
        Any :class:`~.config.PlannerConfig` field: ``strategy``, ``tolerance``,
        ``seed``, ``fitness``, ``usage_penalty``, ``usage_decay``, ``deficit_shift``,
        ``soft_penalty``, ``default_capacity``, ``model_cost``, ``deadline``,
        ``throughput_rate``, ``method``, ``time_limit``, ``mip_gap``, ``stickiness``,
        ``balance_window`` (see there for meanings and defaults). Unknown names raise an
        error listing the valid ones.

    Examples
    --------
    >>> planner = Planner(num_experts=4, strategy="flex", tolerance=0.1, seed=0)
    >>> plan = planner.plan_round(["a", "b"])
    >>> sorted(len(v) for v in plan.values())
    [2, 2]
    >>> planner.report("a", Feedback(experts=plan["a"], counts=[10, 5], accuracy=[0.8, 0.6]))
    """

    def __init__(self, num_experts: int, *args: Any, **options: Any) -> None:
        self._init_state(planner_options(num_experts, args, options))

    @classmethod
    def from_config(cls, config: PlannerConfig) -> Planner:
        """A fresh planner with the given configuration."""
        if not isinstance(config, PlannerConfig):
            raise ProblemTypeError(f"`config` must be a PlannerConfig; got {type(config).__name__}")
        self = cls.__new__(cls)
        self._init_state(config)
        return self

    def _init_state(self, config: PlannerConfig) -> None:
        self.config = config
        self.fitness = FitnessTracker(config.num_experts, config.fitness)
        self.usage = UsageMonitor(config.num_experts, decay=config.usage_decay)
        self.clients = ClientRegistry()
        self.stability = StabilityTracker()
        self.rng = np.random.Generator(np.random.PCG64(config.seed))
        self.round = 0  # index of the next plan
        self._open: OpenRound | None = None
        #: expert prices of the last flex solve (a warm start for the next one)
        self.prices: FloatArray | None = None

    # ================================================================= clients
    @property
    def num_experts(self) -> int:
        return self.config.num_experts

    def register(
        self,
        client_id: Hashable,
        profile: ClientProfile | None = None,
        *,
        device_class: str | None = None,
        capacity: int | None = None,
    ) -> None:
        """Declare a client's profile (or a preset ``device_class``) and/or capacity."""
        self.clients.register(client_id, profile, device_class=device_class, capacity=capacity)

    def set_capacity(self, client_id: Hashable, capacity: int | None) -> None:
        """Fix a client's :math:`k_c` (overrides its profile); ``None`` clears it."""
        self.clients.set_capacity(client_id, capacity)

    def profile(self, client_id: Hashable) -> ClientProfile | None:
        """The client's profile, or ``None``."""
        return self.clients.profiles.get(client_id)

    def capacity_limits(self, client_id: Hashable) -> CapacityLimits:
        """:math:`k_c` and memory budget the next plan will use for this client."""
        return self.clients.limits(client_id, self.config)

    def forget(self, client_id: Hashable) -> None:
        """Remove everything known about a client (it left the federation)."""
        self.fitness.forget(client_id)
        self.clients.forget(client_id)
        self.stability.forget(client_id)
        if self._open is not None:
            self._open.drop(client_id)

    def dropouts(self, client_id: Hashable) -> int:
        """Rounds in which the client was assigned experts and never reported."""
        return self.clients.dropouts.get(client_id, 0)

    # ================================================================= planning
    def scores(self, client_ids: Sequence[Hashable], strategy: str | None = None) -> FloatArray:
        r""":math:`\hat Q + b - \lambda u` for the given clients (without tie-break)."""
        lam = self.config.penalty(check_strategy(strategy or self.config.strategy))
        s = self.fitness.optimistic(client_ids)
        if lam:
            s = s - lam * self.usage.usage_score()[None, :]
        return s

    def flex_bounds(
        self, capacities: ArrayLike, upper: ArrayLike | None = None
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Flex's load bounds ``(L, U, targets)`` for the next round
        (:func:`~.policies.flex_bounds` with this planner's usage history)."""
        return flex_bounds(
            capacities, self.usage.cumulative("clients"), self.config, upper, self._recent()
        )

    def _recent(self) -> FloatArray | None:
        """Client-trainings of the last ``balance_window - 1`` closed rounds (or None)."""
        w = self.config.balance_window
        if w <= 1 or self.usage.rounds == 0:
            return None
        out: FloatArray = self.usage.history("clients")[-(w - 1) :].sum(axis=0)
        return out

    def stickiness_bonus(self, client_ids: Sequence[Hashable]) -> FloatArray:
        r""":math:`\sigma\,[e \in A_c]`: ``stickiness`` on the experts each client trained
        at its last participation, shape (len(ids), E) (zeros when ``stickiness`` is 0)."""
        return self.stability.bonus(list(client_ids), self.num_experts, self.config.stickiness)

    def plan_round(self, client_ids: Iterable[Hashable], *, strategy: str | None = None) -> Plan:
        """Close the open round and plan the next one for the participating clients.

        Parameters
        ----------
        client_ids : iterable of hashable
            This round's participants (distinct). Clients never seen get the prior.
        strategy : str, optional
            Overrides the planner's strategy for this round.

        Returns
        -------
        Plan
            ``plan[client_id]`` is the sorted tuple of expert ids to train.

        Raises
        ------
        InvalidProblemError, ProblemTypeError
            Repeated or unhashable client ids, an unknown strategy. Solver outcomes
            never raise: flex falls back to soft bounds, then to greedy.
        """
        strat = check_strategy(strategy or self.config.strategy)
        ids = check_ids(client_ids)
        self.end_round()
        n, e = len(ids), self.num_experts
        if n == 0:
            result = empty_result(e)
            plan = Plan(
                self.round,
                strat,
                (),
                MappingProxyType({}),
                result,
                None,
                (),
                message=result.message,
            )
            self._open_round({})
            return plan
        cfg = self.config
        limits = [self.clients.limits(c, cfg) for c in ids]
        k = np.array([lim.max_experts for lim in limits], dtype=np.int64)
        knap: dict[str, Any] = {}
        if any(lim.memory_budget is not None for lim in limits):
            knap = {
                "expert_size": cfg.cost.param_bytes,
                "client_budget": [
                    math.inf if lim.memory_budget is None else lim.memory_budget for lim in limits
                ],
            }
        policy = POLICIES[strat]
        scores = None
        if policy.scored:
            scores = self.scores(ids, strat) + self.rng.uniform(0.0, _TIE_BREAK, size=(n, e))
            if cfg.stickiness:
                scores = scores + self.stickiness_bonus(ids)
        decision: Decision = policy.decide(
            RoundInput(
                config=cfg,
                capacity=k,
                knapsack=knap,
                scores=scores,
                rng=self.rng,
                cumulative=self.usage.cumulative("clients"),
                prices=self.prices,
                recent=self._recent(),
            )
        )
        result = decision.result
        if strat == "flex":
            prices = result.stats.get("expert_prices")
            self.prices = None if prices is None else np.asarray(prices, dtype=np.float64)
        experts = [() for _ in ids] if result.x is None else expert_lists(result.x)
        assignments = dict(zip(ids, experts, strict=True))
        plan = Plan(
            round=self.round,
            strategy=strat,
            client_ids=tuple(ids),
            assignments=MappingProxyType(assignments),
            result=result,
            problem=decision.problem,
            capacities=tuple(int(v) for v in k),
            fallback=decision.fallback,
            message=result.message,
        )
        self._open_round(assignments)
        return plan

    def impose_round(self, assignments: Mapping[Hashable, Sequence[int]]) -> Plan:
        """Open a round with an assignment decided elsewhere (e.g. "full": every expert).

        Reports and usage monitoring then work as for a planned round; fitness is
        updated from the feedback as usual.
        """
        e = self.num_experts
        ids, x = imposed_matrix(assignments, e)
        self.end_round()  # only after every check: a bad call changes nothing
        problem: AssignmentProblem | None = None
        result = empty_result(e)
        if ids:
            k = x.sum(axis=1)
            problem = AssignmentProblem(self.scores(ids, "flex"), capacity=k, min_experts=k)
            result = evaluate_assignment(
                problem, x, method="external", message="assignment imposed by the caller"
            )
        experts = result.experts or []
        opened = dict(zip(ids, experts, strict=True))
        plan = Plan(
            round=self.round,
            strategy="external",
            client_ids=tuple(ids),
            assignments=MappingProxyType(opened),
            result=result,
            problem=problem,
            capacities=tuple(len(v) for v in experts),
            message=result.message,
        )
        self._open_round(opened)
        return plan

    def _open_round(self, assignments: dict[Hashable, tuple[int, ...]]) -> None:
        self._open = OpenRound(assignments, self.num_experts)
        self.round += 1

    # ================================================================= feedback
    def report(self, client_id: Hashable, feedback: Feedback) -> None:
        """Record a client's feedback for the open round.

        Updates the client's fitness (EMA on the reported experts), the round's
        expert loads, and, if ``feedback.round_time`` is given and the client has a
        profile, its throughput estimate.

        Raises
        ------
        InvalidFeedbackError
            The client has no assignment in the open round or already reported;
            an expert id is unknown or was not assigned to it; the signal's field is
            missing. The state is left unchanged.
        ProblemTypeError
            ``feedback`` is not a :class:`Feedback`, or ``client_id`` is not a ``str``
            or an integer.
        """
        if not isinstance(feedback, Feedback):
            raise ProblemTypeError(f"`feedback` must be a Feedback; got {type(feedback).__name__}")
        _check_id(client_id)
        open_ = self._open
        assigned = None if open_ is None else open_.assignments.get(client_id)
        if open_ is None or assigned is None:
            where = "no round is open" if open_ is None else f"round {self.round - 1}"
            raise InvalidFeedbackError(
                f"`client_id` {client_id!r} has no assignment to report on ({where}); "
                "feedback is accepted only from clients planned in the open round"
            )
        if client_id in open_.reported:
            raise InvalidFeedbackError(
                f"`client_id` {client_id!r} already reported for round {self.round - 1}"
            )
        for j in feedback.experts:
            if j not in assigned:
                if j >= self.num_experts:
                    raise InvalidFeedbackError(
                        f"`experts` holds unknown expert id {j} (valid: 0..{self.num_experts - 1})"
                    )
                raise InvalidFeedbackError(
                    f"`experts` holds expert {j}, which client {client_id!r} was not "
                    f"assigned (assigned: {list(assigned)})"
                )
        signals = self.fitness.signal_values(feedback)  # raises if the signal's field is missing
        check_round_load(open_.sample_loads, feedback, client_id)  # state files store 2**53
        prof = self.clients.profiles.get(client_id)
        new_prof = None
        if prof is not None and feedback.round_time is not None and feedback.experts:
            new_prof = prof.refine(
                round_time=feedback.round_time,
                n_experts=list(feedback.experts),
                cost=self.config.cost,
                samples=feedback.samples,
                rate=self.config.throughput_rate,
            )
        # ---- no exception past this line: mutate
        self.fitness.update(client_id, feedback, signals)
        open_.record(client_id, feedback.experts, feedback.counts)
        self.stability.record(client_id, feedback.experts, round_=self.round - 1)
        if new_prof is not None:
            self.clients.profiles[client_id] = new_prof

    def report_probe(self, client_id: Hashable, probe: ProbeFeedback) -> None:
        """Record a client's probe row (:class:`~.feedback.ProbeFeedback`).

        Each probed expert's signal (from the probe's loss, or its accuracy under the
        accuracy signal) updates the client's fitness by the same EMA as training
        feedback, one observation per expert, for assigned and unassigned experts
        alike. A probe is accepted from any client at any time, also one never planned
        (a newcomer probing before its first round gets its own row); it changes
        neither loads nor reports. It is evidence about the client's own row only,
        plus, through that row, the shared prior (``fitness.prior``).

        Raises
        ------
        InvalidFeedbackError
            An expert id is not below ``num_experts``; the state is left unchanged.
        ProblemTypeError
            ``probe`` is not a :class:`~.feedback.ProbeFeedback`, or ``client_id`` is
            not hashable.
        """
        if not isinstance(probe, ProbeFeedback):
            raise ProblemTypeError(f"`probe` must be a ProbeFeedback; got {type(probe).__name__}")
        _check_id(client_id)
        self.fitness.update_probe(client_id, probe)

    def probe_candidates(self, client_id: Hashable, k: int | None = None) -> tuple[int, ...]:
        """The experts the planner asks a client to probe this round (sorted ids).

        ``k=None``: every expert. Otherwise a candidate set of
        :math:`\\min(E, \\max(k, 2 k_c))` experts: the client's experts in the open round
        (it downloads them anyway), then, of the rest, half by its optimistic score
        :math:`\\hat Q + b` (the best alternatives) and half uniformly at random
        (exploration). The random half is drawn from a generator seeded by the
        planner's seed, the round and the client id, so it is reproducible and leaves
        the planning generator untouched.

        Parameters
        ----------
        client_id : hashable
        k : int, optional
            Candidate set size (>= 1); never fewer than :math:`2 k_c` are returned.

        Raises
        ------
        InvalidProblemError, ProblemTypeError
            ``k`` not an integer >= 1; ``client_id`` not hashable.
        """
        e = self.num_experts
        _check_id(client_id)
        if k is None:
            return tuple(range(e))
        size = check_int("k", k, lo=1)
        assigned = () if self._open is None else self._open.assignments.get(client_id, ())
        k_c = len(assigned) or self.clients.limits(client_id, self.config).max_experts
        size = min(e, max(size, 2 * k_c))
        chosen = list(dict.fromkeys(int(j) for j in assigned))[:size]
        rest = [j for j in range(e) if j not in set(chosen)]
        free = size - len(chosen)
        if free > 0 and rest:
            score = self.fitness.optimistic([client_id])[0]
            by_score = sorted(rest, key=lambda j: (-score[j], j))
            top = by_score[: (free + 1) // 2]
            chosen += top
            others = [j for j in rest if j not in set(top)]
            rng = np.random.default_rng(
                [self.config.seed, self.round, zlib.crc32(repr(client_id).encode())]
            )
            pick = rng.choice(len(others), size=min(free - len(top), len(others)), replace=False)
            chosen += [others[int(i)] for i in pick]
        return tuple(sorted(chosen))

    def fitness_rank_corr(
        self, probes: Mapping[Hashable, ProbeFeedback], *, by: str = "loss"
    ) -> float:
        """How well the planner's fitness ranks experts: the mean over clients of the
        Spearman correlation between its fitness row :math:`\\hat Q_c` (no exploration
        bonus) and the probe's fit on the probed experts.

        The fit is the negated probe loss (``by="loss"``) or its accuracy
        (``by="accuracy"``). Pass probes the planner has not yet been given (measure
        first, then :meth:`report_probe`), or the correlation only echoes them.
        Clients whose correlation is undefined (fewer than two probed experts, a
        constant row) are skipped; NaN when none is left. Unknown clients are scored
        by the prior.

        Raises
        ------
        InvalidProblemError
            ``by`` is not ``"loss"`` or ``"accuracy"``, a probe lacks the accuracy
            asked for, or names an expert not below ``num_experts``.
        ProblemTypeError
            ``probes`` is not a mapping of client id to :class:`~.feedback.ProbeFeedback`.
        """
        if by not in ("loss", "accuracy"):
            raise InvalidProblemError(f"`by` must be 'loss' or 'accuracy'; got {by!r}")
        if not isinstance(probes, Mapping):
            raise ProblemTypeError(
                f"`probes` must be a mapping of client id to ProbeFeedback; "
                f"got {type(probes).__name__}"
            )
        ids = list(probes)
        for c in ids:
            p = probes[c]
            if not isinstance(p, ProbeFeedback):
                raise ProblemTypeError(
                    f"`probes[{c!r}]` must be a ProbeFeedback; got {type(p).__name__}"
                )
            if max(p.experts) >= self.num_experts:
                raise InvalidProblemError(
                    f"`probes[{c!r}]` names expert {max(p.experts)} "
                    f"(valid: 0..{self.num_experts - 1})"
                )
            if by == "accuracy" and p.accuracy is None:
                raise InvalidProblemError(f"`probes[{c!r}]` has no accuracy (by='accuracy')")
        if not ids:
            return math.nan
        q = self.fitness.fitness(ids)
        values = []
        for i, c in enumerate(ids):
            p = probes[c]
            fit = [-v for v in p.loss] if by == "loss" else list(p.accuracy or ())
            rho = spearman(q[i, list(p.experts)], fit)
            if not math.isnan(rho):
                values.append(rho)
        return float(np.mean(values)) if values else math.nan

    def churn(self, round: int | None = None) -> float:
        """Mean share of a client's experts that changed between its consecutive
        participations (:mod:`.stability`): over all of them, or over those reported
        in planner round ``round``. NaN when there is none."""
        if round is not None:
            check_int("round", round, lo=0)
        return self.stability.churn(round)

    def churn_by_round(self) -> dict[int, float]:
        """``{round: churn}`` for every planner round with a repeat participation."""
        return self.stability.churn_by_round()

    def end_round(self) -> None:
        """Close the open round (``plan_round`` does it too); silent clients are dropouts."""
        if self._open is None:
            return
        self.clients.count_dropouts(self._open.pending())
        self.usage.record_round(self._open.client_loads, self._open.sample_loads)
        self._open = None

    @property
    def open_assignments(self) -> Mapping[Hashable, tuple[int, ...]]:
        """The open round's assignments (empty when none is open)."""
        return MappingProxyType(dict(self._open.assignments if self._open else {}))

    @property
    def pending(self) -> tuple[Hashable, ...]:
        """Clients of the open round that have not reported yet."""
        return () if self._open is None else self._open.pending()

    # ================================================================= monitoring
    def _open_loads(self, kind: str) -> FloatArray | None:
        if self._open is None:
            return None
        return self._open.client_loads if kind == "clients" else self._open.sample_loads

    def loads(self, kind: str = "clients", *, include_open: bool = True) -> FloatArray:
        """Cumulative per-expert load (client-trainings or routed samples)."""
        total = self.usage.cumulative(kind)
        row = self._open_loads(kind) if include_open else None
        return total if row is None else total + row

    def utilization(
        self, window: int | None = None, kind: str = "clients", *, include_open: bool = True
    ) -> UtilizationStats:
        """Utilization statistics over the last ``window`` rounds (``None``: all).

        The open round's reports so far count as its most recent round.
        """
        h = self.usage.history(kind)
        row = self._open_loads(kind) if include_open else None
        if row is not None:
            h = np.vstack([h, row[None, :]])
        return windowed_stats(h, window)

    def utilization_cv(
        self, window: int | None = None, kind: str = "clients", *, include_open: bool = True
    ) -> float:
        """Coefficient of variation of the per-expert training load (NaN before any)."""
        return self.utilization(window, kind, include_open=include_open).cv

    # ================================================================= persistence
    def to_state(self) -> dict[str, Any]:
        """The whole state as a JSON-serializable dict (see :mod:`.state`)."""
        body = {
            "config": self.config.to_dict(),
            "round": self.round,
            "rng": state_file.rng_to_json(self.rng),
            "clients": self.fitness.to_list(id_to_json),
            **self.clients.to_dict(),
            "usage": self.usage.to_dict(),
            "open_round": None if self._open is None else self._open.to_dict(),
            "prices": None if self.prices is None else self.prices.tolist(),
            "stability": self.stability.to_dict(id_to_json),
        }
        return state_file.wrap(body)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Planner:
        """Rebuild a planner from :meth:`to_state`'s dict, checking every field.

        Raises
        ------
        InvalidProblemError
            Wrong format or a newer version, a missing or unknown field, or a value
            that breaks an invariant; the message names the field (``state.<field>``).
        """
        body = state_file.unwrap(state)
        try:
            return cls._from_body(body)
        except FlexAssignError as exc:
            raise InvalidProblemError(f"`state` is malformed: {exc}") from None
        except KeyError as exc:
            raise InvalidProblemError(f"`state` is malformed: missing field {exc}") from None

    @classmethod
    def _from_body(cls, body: Mapping[str, Any]) -> Planner:
        config = state_file.section("config", PlannerConfig.from_dict, body["config"])
        self = cls.from_config(config)
        e = config.num_experts
        self.round = state_file.check_count("state.round", body["round"])
        state_file.rng_from_json(self.rng, body["rng"])
        self.fitness.load_list(body["clients"], lambda v: id_from_json("state.clients", v))
        self.clients = ClientRegistry.from_dict(body, rounds=self.round)
        self.usage = UsageMonitor.from_dict(e, body["usage"])
        if self.usage.decay != config.usage_decay:
            raise InvalidProblemError(
                f"`state.usage.decay` ({self.usage.decay}) differs from "
                f"`state.config.usage_decay` ({config.usage_decay})"
            )
        op = body["open_round"]
        self._open = None if op is None else OpenRound.from_dict(op, e)
        if self.usage.rounds != self.round - (self._open is not None):
            raise InvalidProblemError(
                f"`state.round` is {self.round} but `state.usage` holds {self.usage.rounds} "
                f"closed rounds (expected round - 1 if a round is open, else round)"
            )
        self.prices = state_file.check_prices("state.prices", body.get("prices"), e)
        if body.get("stability") is not None:
            self.stability = StabilityTracker.from_dict(
                body["stability"],
                id_in=lambda v: id_from_json("state.stability", v),
                num_experts=e,
                rounds=self.round,
            )
        return self

    def save(self, path: Any) -> None:
        """Write the state to a versioned JSON file, atomically (no pickle)."""
        state_file.save_state(self.to_state(), path)

    @classmethod
    def load(cls, path: Any) -> Planner:
        """Restore a planner saved with :meth:`save` (fully checked, see :meth:`from_state`)."""
        return cls.from_state(state_file.load_state(path))

    def __repr__(self) -> str:
        return (
            f"Planner(num_experts={self.num_experts}, strategy={self.config.strategy!r}, "
            f"round={self.round}, clients={len(self.fitness.clients())})"
        )


Planner.__init__.__signature__ = planner_signature()  # type: ignore[attr-defined]
