r"""Per-round planning: from alignment state to an :class:`AssignmentProblem` and a plan.

Each round the planner scores the participating clients' candidate experts,

.. math::

    S_{ce} = \hat Q_{ce} + b_{ce} - \lambda\, u_e + \xi_{ce},

(fitness with the prior where unobserved, exploration bonus, usage penalty, and a
seeded tie-break :math:`\xi_{ce} \sim U(0, 10^{-6})`), takes each client's capacity
:math:`k_c` from its profile, and assigns experts with one of four strategies:

``"flex"``
    FLEX-MoE: maximize :math:`\sum S_{ce} x_{ce}` with every client taking exactly
    :math:`k_c` experts and expert loads within :math:`[L_e, U_e]`,
    :math:`L_e = \lfloor (1-\varepsilon) t_e \rfloor`,
    :math:`U_e = \lceil (1+\varepsilon) t_e \rceil`, around targets :math:`t_e`
    shifted toward experts behind their fair share (:func:`~.usage.deficit_targets`).
    If that is infeasible the bounds are made soft (``load_penalty``), and the
    plan records it in :attr:`Plan.fallback`.
``"greedy"``
    The paper's baseline: each client takes its top-:math:`k_c` by score.
``"desirability"``
    The companion paper's alignment: per client, top-:math:`k_c` by the composite
    desirability :math:`\hat Q + b - \lambda u` (:math:`\lambda` = ``usage_penalty``,
    default 0.3 for this strategy, 0 for the others).
``"random"``
    Each client takes :math:`k_c` experts uniformly at random.

Greedy, desirability and random are verified against the plain tolerance bounds
(no deficit shift) so that ``plan.result`` reports the balance they break.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import (
    InvalidFeedbackError,
    InvalidProblemError,
    ProblemTypeError,
    UnsupportedProblemError,
)
from ..problem import AssignmentProblem
from ..result import AssignmentResult, Status
from ..solve import evaluate_assignment, solve_assignment
from .capacity import (
    DEFAULT_DEADLINE,
    DEFAULT_MODEL_COST,
    CapacityLimits,
    ClientProfile,
    ModelCost,
    capacity_limits,
)
from .feedback import Feedback
from .fitness import FitnessConfig, FitnessTracker
from .usage import UsageMonitor, UtilizationStats, deficit_targets

__all__ = ["STRATEGIES", "Plan", "Planner", "PlannerConfig", "default_model_cost"]

STRATEGIES = ("flex", "greedy", "desirability", "random")

#: Default usage penalty :math:`\lambda` per strategy (``usage_penalty=None``).
DEFAULT_USAGE_PENALTY = {"flex": 0.0, "greedy": 0.0, "desirability": 0.3, "random": 0.0}

_TIE_BREAK = 1e-6
_EPS = 1e-9

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float64]


def default_model_cost(num_experts: int) -> ModelCost:
    """:data:`~.capacity.DEFAULT_MODEL_COST`'s per-expert costs for ``num_experts`` experts."""
    d = DEFAULT_MODEL_COST
    if num_experts == d.num_experts:
        return d
    return ModelCost(
        float(d.param_bytes[0]),
        float(d.flops_per_sample[0]),
        num_experts=num_experts,
        shared_param_bytes=d.shared_param_bytes,
        shared_flops_per_sample=d.shared_flops_per_sample,
        routed_fraction=d.routed_fraction,
        memory_factor=d.memory_factor,
        reserve_bytes=d.reserve_bytes,
    )


def _int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ProblemTypeError(f"`{name}` must be an integer; got {type(value).__name__}")
    if value < lo:
        raise InvalidProblemError(f"`{name}` must be >= {lo}; got {value}")
    return int(value)


def _real(
    name: str, value: Any, lo: float, hi: float | None = None, open_lo: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ProblemTypeError(f"`{name}` must be a number; got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < lo or (open_lo and v == lo) or (hi is not None and v > hi):
        rng = f"{'>' if open_lo else '>='} {lo:g}" + ("" if hi is None else f" and <= {hi:g}")
        raise InvalidProblemError(f"`{name}` must be finite and {rng}; got {value!r}")
    return v


@dataclass(frozen=True)
class PlannerConfig:
    """Every hyper-parameter of a :class:`Planner` (see :class:`Planner` for meanings)."""

    num_experts: int
    strategy: str = "flex"
    tolerance: float = 0.1
    seed: int = 0
    fitness: FitnessConfig = field(default_factory=FitnessConfig)
    usage_penalty: float | None = None
    usage_decay: float = 0.3
    deficit_shift: float = 1.0
    soft_penalty: float = 10.0
    default_capacity: int = 2
    model_cost: ModelCost | None = None
    deadline: float | None = DEFAULT_DEADLINE
    throughput_rate: float = 0.3
    method: str = "auto"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "num_experts", _int("num_experts", self.num_experts, 1))
        _check_strategy(self.strategy)
        set_(self, "tolerance", _real("tolerance", self.tolerance, 0.0))
        set_(self, "seed", _int("seed", self.seed, 0))
        if not isinstance(self.fitness, FitnessConfig):
            raise ProblemTypeError(
                f"`fitness` must be a FitnessConfig; got {type(self.fitness).__name__}"
            )
        if self.usage_penalty is not None:
            set_(self, "usage_penalty", _real("usage_penalty", self.usage_penalty, 0.0))
        set_(self, "usage_decay", _real("usage_decay", self.usage_decay, 0.0, 1.0, open_lo=True))
        set_(self, "deficit_shift", _real("deficit_shift", self.deficit_shift, 0.0, 1.0))
        set_(self, "soft_penalty", _real("soft_penalty", self.soft_penalty, 0.0, open_lo=True))
        set_(self, "default_capacity", _int("default_capacity", self.default_capacity, 0))
        if self.model_cost is not None:
            if not isinstance(self.model_cost, ModelCost):
                raise ProblemTypeError(
                    f"`model_cost` must be a ModelCost; got {type(self.model_cost).__name__}"
                )
            if self.model_cost.num_experts != self.num_experts:
                raise InvalidProblemError(
                    f"`model_cost` describes {self.model_cost.num_experts} experts but "
                    f"`num_experts` is {self.num_experts}"
                )
        if self.deadline is not None:
            set_(self, "deadline", _real("deadline", self.deadline, 0.0, open_lo=True))
        set_(
            self,
            "throughput_rate",
            _real("throughput_rate", self.throughput_rate, 0.0, 1.0, open_lo=True),
        )
        if not isinstance(self.method, str):
            raise ProblemTypeError(f"`method` must be a string; got {type(self.method).__name__}")

    @property
    def cost(self) -> ModelCost:
        """The model cost in use (the default one when none was given)."""
        return self.model_cost or default_model_cost(self.num_experts)

    def penalty(self, strategy: str) -> float:
        r"""The usage penalty :math:`\lambda` a strategy uses."""
        if self.usage_penalty is not None:
            return self.usage_penalty
        return DEFAULT_USAGE_PENALTY[strategy]


def _check_strategy(strategy: Any) -> str:
    if strategy not in STRATEGIES:
        raise InvalidProblemError(
            f"unknown `strategy` {strategy!r}; valid: {', '.join(repr(s) for s in STRATEGIES)}"
        )
    return str(strategy)


@dataclass(frozen=True, eq=False)
class Plan(Mapping[Hashable, tuple[int, ...]]):
    """One round's assignment: a read-only mapping ``client id -> expert ids``.

    Attributes
    ----------
    round : int
        Round index (0 for the first plan).
    strategy : str
        ``"flex"``, ``"greedy"``, ``"desirability"``, ``"random"``, or ``"external"``
        for :meth:`Planner.impose_round`.
    client_ids : tuple
        Participating clients, in the order given (rows of ``result.x``).
    result : AssignmentResult
        The verified solver result. For greedy/desirability/random it is checked
        against the plain balance bounds, so ``result.success`` is False when the
        plan breaks them (the plan is still the one to use).
    problem : AssignmentProblem or None
        The problem solved (or checked against); ``None`` when no client took part.
    capacities : tuple of int
        :math:`k_c` per client.
    fallback : str or None
        What flex had to relax, e.g. ``"soft-bounds"``; ``None`` when nothing.
    message : str
        What happened, in words.

    Equality compares the assignments only, like any mapping.
    """

    round: int
    strategy: str
    client_ids: tuple[Hashable, ...]
    assignments: Mapping[Hashable, tuple[int, ...]]
    result: AssignmentResult
    problem: AssignmentProblem | None
    capacities: tuple[int, ...]
    fallback: str | None = None
    message: str = ""

    def __getitem__(self, client_id: Hashable) -> tuple[int, ...]:
        return self.assignments[client_id]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.assignments)

    def __len__(self) -> int:
        return len(self.assignments)

    @property
    def balanced(self) -> bool:
        """Whether the plan satisfies the round's balance bounds (``result.success``)."""
        return self.result.success

    @property
    def loads(self) -> FloatArray:
        """Clients assigned to each expert this round."""
        e = self.result.x.shape[1] if self.result.x is not None else 0
        out = np.zeros(e)
        for experts in self.assignments.values():
            out[list(experts)] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary (client ids as given)."""
        return {
            "round": self.round,
            "strategy": self.strategy,
            "assignments": [[c, list(v)] for c, v in self.assignments.items()],
            "capacities": list(self.capacities),
            "fallback": self.fallback,
            "message": self.message,
            "result": self.result.to_dict(include_assignment=False),
        }

    def __repr__(self) -> str:
        return (
            f"Plan(round={self.round}, strategy={self.strategy!r}, clients={len(self)}, "
            f"status={self.result.status.value}, fallback={self.fallback!r})"
        )


class Planner:
    """Dynamic client-expert alignment: fitness, usage and capacity state, and planning.

    Parameters
    ----------
    num_experts : int
        :math:`E`.
    strategy : {"flex", "greedy", "desirability", "random"}
        Default strategy of :meth:`plan_round`.
    tolerance : float
        :math:`\\varepsilon`, relative width of the per-round balance bounds.
    seed : int
        Seeds the tie-break and the random strategy (and the solver).
    fitness : FitnessConfig, optional
        EMA step, signal, prior and exploration (see :mod:`.fitness`).
    usage_penalty : float, optional
        :math:`\\lambda \\ge 0`; default 0.3 for ``"desirability"``, 0 otherwise.
    usage_decay : float
        :math:`\\gamma`, EMA step of the usage score.
    deficit_shift : float
        :math:`\\eta \\in [0, 1]`, how strongly flex's bound targets correct the
        cumulative deficit (0: plain per-round bounds).
    soft_penalty : float
        ``load_penalty`` used when flex's hard bounds are infeasible.
    default_capacity : int
        :math:`k_c` of a client with neither a capacity nor a profile.
    model_cost : ModelCost, optional
        Costs used to turn profiles into capacities (default:
        :func:`default_model_cost`).
    deadline : float or None
        Round deadline in seconds for profile-derived capacities.
    throughput_rate : float
        :math:`\\omega`, EMA step of measured throughput (``Feedback.round_time``).
    method : str
        Solver method for flex (:func:`~flexassign.solve_assignment`'s ``method``).

    Examples
    --------
    >>> planner = Planner(num_experts=4, strategy="flex", tolerance=0.1, seed=0)
    >>> plan = planner.plan_round(["a", "b"])
    >>> sorted(len(v) for v in plan.values())
    [2, 2]
    >>> planner.report("a", Feedback(experts=plan["a"], counts=[10, 5], accuracy=[0.8, 0.6]))
    """

    def __init__(
        self,
        num_experts: int,
        strategy: str = "flex",
        tolerance: float = 0.1,
        seed: int = 0,
        *,
        fitness: FitnessConfig | None = None,
        usage_penalty: float | None = None,
        usage_decay: float = 0.3,
        deficit_shift: float = 1.0,
        soft_penalty: float = 10.0,
        default_capacity: int = 2,
        model_cost: ModelCost | None = None,
        deadline: float | None = DEFAULT_DEADLINE,
        throughput_rate: float = 0.3,
        method: str = "auto",
    ) -> None:
        config = PlannerConfig(
            num_experts=num_experts,
            strategy=strategy,
            tolerance=tolerance,
            seed=seed,
            fitness=fitness or FitnessConfig(),
            usage_penalty=usage_penalty,
            usage_decay=usage_decay,
            deficit_shift=deficit_shift,
            soft_penalty=soft_penalty,
            default_capacity=default_capacity,
            model_cost=model_cost,
            deadline=deadline,
            throughput_rate=throughput_rate,
            method=method,
        )
        self._init_state(config)

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
        self.rng = np.random.Generator(np.random.PCG64(config.seed))
        self.round = 0  # index of the next plan
        self._capacity: dict[Hashable, int] = {}
        self._profiles: dict[Hashable, ClientProfile] = {}
        self._dropouts: dict[Hashable, int] = {}
        # the open round: assignments, who reported, loads so far
        self._open: dict[Hashable, tuple[int, ...]] | None = None
        self._reported: set[Hashable] = set()
        self._open_clients = np.zeros(config.num_experts)
        self._open_samples = np.zeros(config.num_experts)

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
        _check_id(client_id)
        if profile is not None and device_class is not None:
            raise InvalidProblemError("give `profile` or `device_class`, not both")
        if device_class is not None:
            profile = ClientProfile.preset(device_class)
        if profile is not None and not isinstance(profile, ClientProfile):
            raise ProblemTypeError(
                f"`profile` must be a ClientProfile; got {type(profile).__name__}"
            )
        k = None if capacity is None else _int("capacity", capacity, 0)
        if profile is not None:
            self._profiles[client_id] = profile
        if k is not None:
            self._capacity[client_id] = k

    def set_capacity(self, client_id: Hashable, capacity: int | None) -> None:
        """Fix a client's :math:`k_c` (overrides its profile); ``None`` clears it."""
        _check_id(client_id)
        if capacity is None:
            self._capacity.pop(client_id, None)
        else:
            self._capacity[client_id] = _int("capacity", capacity, 0)

    def profile(self, client_id: Hashable) -> ClientProfile | None:
        """The client's profile, or ``None``."""
        return self._profiles.get(client_id)

    def capacity_limits(self, client_id: Hashable) -> CapacityLimits:
        """:math:`k_c` and memory budget the next plan will use for this client."""
        e = self.num_experts
        prof = self._profiles.get(client_id)
        lim = None
        if prof is not None:
            lim = capacity_limits(prof, self.config.cost, self.config.deadline)
        if client_id in self._capacity:
            k = min(self._capacity[client_id], e)
            return CapacityLimits(
                k, None if lim is None else lim.memory_budget, math.nan, "declared"
            )
        if lim is not None:
            return lim
        return CapacityLimits(min(self.config.default_capacity, e), None, math.nan, "default")

    def forget(self, client_id: Hashable) -> None:
        """Remove everything known about a client (it left the federation)."""
        self.fitness.forget(client_id)
        self._capacity.pop(client_id, None)
        self._profiles.pop(client_id, None)
        self._dropouts.pop(client_id, None)
        if self._open is not None and client_id in self._open:
            del self._open[client_id]
            self._reported.discard(client_id)

    def dropouts(self, client_id: Hashable) -> int:
        """Rounds in which the client was assigned experts and never reported."""
        return self._dropouts.get(client_id, 0)

    # ================================================================= planning
    def scores(self, client_ids: Sequence[Hashable], strategy: str | None = None) -> FloatArray:
        r""":math:`\hat Q + b - \lambda u` for the given clients (without tie-break)."""
        ids = list(client_ids)
        lam = self.config.penalty(_check_strategy(strategy or self.config.strategy))
        s = self.fitness.optimistic(ids)
        if lam:
            s = s - lam * self.usage.usage_score()[None, :]
        return s

    def plan_round(
        self, client_ids: Iterable[Hashable], *, strategy: str | None = None
    ) -> Plan:
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
        strat = _check_strategy(strategy or self.config.strategy)
        ids = _check_ids(client_ids)
        self.end_round()
        n, e = len(ids), self.num_experts
        limits = [self.capacity_limits(c) for c in ids]
        k = np.array([lim.max_experts for lim in limits], dtype=np.int64)
        budgets = [lim.memory_budget for lim in limits]
        knap: dict[str, Any] = {}
        if any(b is not None for b in budgets):
            knap = {
                "expert_size": self.config.cost.param_bytes,
                "client_budget": [math.inf if b is None else b for b in budgets],
            }
        fallback: str | None = None
        problem: AssignmentProblem | None = None
        if n == 0:
            result = _empty_result(e)
            message = "no participating clients"
        elif strat == "random":
            problem = self._plain_problem(np.zeros((n, e)), k, knap)
            x = self._random_assignment(k, knap)
            result = evaluate_assignment(
                problem, x, method="random", message="uniformly random experts"
            )
            message = result.message
        else:
            s = self.scores(ids, strat) + self.rng.uniform(0.0, _TIE_BREAK, size=(n, e))
            if strat == "flex":
                problem, result, fallback = self._solve_flex(s, k, knap)
            else:
                problem = self._plain_problem(s, k, knap)
                result = solve_assignment(problem, method="greedy", seed=self.config.seed)
            message = result.message
        experts = result.experts or [() for _ in ids]
        assignments = dict(zip(ids, experts, strict=True))
        plan = Plan(
            round=self.round,
            strategy=strat,
            client_ids=tuple(ids),
            assignments=MappingProxyType(assignments),
            result=result,
            problem=problem,
            capacities=tuple(int(v) for v in k),
            fallback=fallback,
            message=message,
        )
        self._open_round(assignments)
        return plan

    def impose_round(self, assignments: Mapping[Hashable, Sequence[int]]) -> Plan:
        """Open a round with an assignment decided elsewhere (e.g. "full": every expert).

        Reports and usage monitoring then work as for a planned round; fitness is
        updated from the feedback as usual.
        """
        if not isinstance(assignments, Mapping):
            raise ProblemTypeError(
                f"`assignments` must be a mapping of client id to expert ids; "
                f"got {type(assignments).__name__}"
            )
        ids = _check_ids(list(assignments))
        e = self.num_experts
        x = np.zeros((len(ids), e), dtype=bool)
        for i, c in enumerate(ids):
            raw = assignments[c]
            if isinstance(raw, str | bytes) or not isinstance(raw, Iterable):
                raise ProblemTypeError(f"`assignments[{c!r}]` must be a sequence of expert ids")
            for j in raw:
                if isinstance(j, bool) or not isinstance(j, int | np.integer) or not 0 <= j < e:
                    raise InvalidProblemError(
                        f"`assignments[{c!r}]` holds {j!r}, not an expert id in 0..{e - 1}"
                    )
                x[i, int(j)] = True
        self.end_round()  # only after every check: a bad call changes nothing
        problem: AssignmentProblem | None = None
        result = _empty_result(e)
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
        self._open = dict(assignments)
        self._reported = set()
        self._open_clients = np.zeros(self.num_experts)
        self._open_samples = np.zeros(self.num_experts)
        self.round += 1

    def _plain_problem(
        self, s: FloatArray, k: NDArray[np.int64], knap: dict[str, Any]
    ) -> AssignmentProblem:
        return AssignmentProblem.balanced(
            s, capacity=k, tolerance=self.config.tolerance, exact_capacity=True, **knap
        )

    def flex_bounds(
        self, capacities: ArrayLike, upper: ArrayLike | None = None
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        r"""Flex's load bounds for a round: ``(L, U, targets)``.

        :math:`t = ` :func:`~.usage.deficit_targets` of the cumulative client-trainings
        with :math:`K = \sum_c k_c`, caps :math:`h_e` (``upper``; default: clients with
        :math:`k_c > 0`) and floors :math:`m_e` = clients with :math:`k_c = E` (they take
        every expert); :math:`L_e = \max(\lfloor (1-\varepsilon) t_e \rfloor, m_e)`,
        :math:`U_e = \lceil (1+\varepsilon) t_e \rceil`.
        """
        k = np.asarray(capacities, dtype=np.float64)
        e = self.num_experts
        h = np.full(e, float((k > 0).sum())) if upper is None else np.asarray(upper, float)
        m = np.minimum(np.full(e, float((k >= e).sum())), h)
        t = deficit_targets(
            self.usage.cumulative("clients"),
            float(k.sum()),
            h,
            self.config.deficit_shift,
            lower=m,
        )
        tol = self.config.tolerance
        lo = np.maximum(np.floor((1 - tol) * t + _EPS * np.maximum(1.0, t)), m)
        hi = np.ceil((1 + tol) * t - _EPS * np.maximum(1.0, t))
        return np.maximum(lo, 0.0), np.minimum(np.maximum(hi, lo), h), t

    def _solve_flex(
        self, s: FloatArray, k: NDArray[np.int64], knap: dict[str, Any]
    ) -> tuple[AssignmentProblem, AssignmentResult, str | None]:
        e = s.shape[1]
        upper = np.full(e, float((k > 0).sum()))
        if knap:
            budget = np.asarray(knap["client_budget"], dtype=np.float64)
            fits = self.config.cost.param_bytes[None, :] <= budget[:, None] * (1 + 1e-12)
            upper = ((k[:, None] > 0) & fits).sum(axis=0).astype(np.float64)
        lo, hi, _ = self.flex_bounds(k, upper)
        problem = AssignmentProblem(
            s, capacity=k, min_experts=k, expert_min_load=lo, expert_max_load=hi, **knap
        )
        result = self._solve(problem)
        if result.success:
            return problem, result, None
        soft = problem.replace(load_penalty=self.config.soft_penalty)
        soft_result = self._solve(soft)
        if soft_result.success:
            broken = _bound_excess(problem, soft_result)
            note = (
                f"hard balance bounds infeasible ({result.message}); solved with soft bounds "
                f"(load_penalty={self.config.soft_penalty:g}), total excess load {broken:g}"
            )
            return soft, _with_message(soft_result, note), "soft-bounds"
        greedy = solve_assignment(problem, method="greedy", seed=self.config.seed)
        note = (
            f"flex failed ({result.message}; soft: {soft_result.message}); "
            "fell back to greedy top-k"
        )
        return problem, _with_message(greedy, note), "greedy"

    def _solve(self, problem: AssignmentProblem) -> AssignmentResult:
        method = self.config.method
        try:
            return solve_assignment(problem, method=method, seed=self.config.seed)
        except UnsupportedProblemError:
            if method == "auto":
                raise
            return solve_assignment(problem, method="auto", seed=self.config.seed)

    def _random_assignment(self, k: NDArray[np.int64], knap: dict[str, Any]) -> BoolArray:
        n, e = k.shape[0], self.num_experts
        x = np.zeros((n, e), dtype=bool)
        size = self.config.cost.param_bytes if knap else None
        for c in range(n):
            order = self.rng.permutation(e)
            if size is None:
                x[c, order[: k[c]]] = True
                continue
            budget = float(knap["client_budget"][c])
            used, taken = 0.0, 0
            for j in order:
                if taken >= k[c]:
                    break
                if used + size[j] <= budget * (1 + 1e-12):
                    x[c, j] = True
                    used += float(size[j])
                    taken += 1
        return x

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
            ``feedback`` is not a :class:`Feedback`.
        """
        if not isinstance(feedback, Feedback):
            raise ProblemTypeError(
                f"`feedback` must be a Feedback; got {type(feedback).__name__}"
            )
        if self._open is None or client_id not in self._open:
            where = "no round is open" if self._open is None else f"round {self.round - 1}"
            raise InvalidFeedbackError(
                f"`client_id` {client_id!r} has no assignment to report on ({where}); "
                "feedback is accepted only from clients planned in the open round"
            )
        if client_id in self._reported:
            raise InvalidFeedbackError(
                f"`client_id` {client_id!r} already reported for round {self.round - 1}"
            )
        assigned = self._open[client_id]
        for j in feedback.experts:
            if j >= self.num_experts:
                raise InvalidFeedbackError(
                    f"`experts` holds unknown expert id {j} (valid: 0..{self.num_experts - 1})"
                )
            if j not in assigned:
                raise InvalidFeedbackError(
                    f"`experts` holds expert {j}, which client {client_id!r} was not "
                    f"assigned (assigned: {list(assigned)})"
                )
        self.fitness.signal(feedback)  # raises before any change if a field is missing
        prof = self._profiles.get(client_id)
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
        self.fitness.update(client_id, feedback)
        idx = list(feedback.experts)
        self._open_clients[idx] += 1.0
        self._open_samples[idx] += np.asarray(feedback.counts, dtype=np.float64)
        if new_prof is not None:
            self._profiles[client_id] = new_prof
        self._reported.add(client_id)

    def end_round(self) -> None:
        """Close the open round (``plan_round`` does it too); silent clients are dropouts."""
        if self._open is None:
            return
        for c in self._open:
            if c not in self._reported:
                self._dropouts[c] = self._dropouts.get(c, 0) + 1
        self.usage.record_round(self._open_clients, self._open_samples)
        self._open = None
        self._reported = set()
        self._open_clients = np.zeros(self.num_experts)
        self._open_samples = np.zeros(self.num_experts)

    @property
    def open_assignments(self) -> Mapping[Hashable, tuple[int, ...]]:
        """The open round's assignments (empty when none is open)."""
        return MappingProxyType(dict(self._open or {}))

    @property
    def pending(self) -> tuple[Hashable, ...]:
        """Clients of the open round that have not reported yet."""
        return tuple(c for c in (self._open or {}) if c not in self._reported)

    # ================================================================= monitoring
    def loads(self, kind: str = "clients", *, include_open: bool = True) -> FloatArray:
        """Cumulative per-expert load (client-trainings or routed samples)."""
        total = self.usage.cumulative(kind)
        if include_open and self._open is not None:
            total = total + (self._open_clients if kind == "clients" else self._open_samples)
        return total

    def utilization(
        self, window: int | None = None, kind: str = "clients", *, include_open: bool = True
    ) -> UtilizationStats:
        """Utilization statistics over the last ``window`` rounds (``None``: all).

        The open round's reports so far count as its most recent round.
        """
        from .usage import windowed_stats

        h = self.usage.history(kind)
        if include_open and self._open is not None:
            row = self._open_clients if kind == "clients" else self._open_samples
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
        from .state import planner_to_state

        return planner_to_state(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Planner:
        """Rebuild a planner from :meth:`to_state`'s dict."""
        from .state import planner_from_state

        return planner_from_state(state)

    def save(self, path: str | Any) -> None:
        """Write the state to a versioned JSON file, atomically (no pickle)."""
        from .state import save_state

        save_state(self.to_state(), path)

    @classmethod
    def load(cls, path: str | Any) -> Planner:
        """Restore a planner saved with :meth:`save`."""
        from .state import load_state

        return cls.from_state(load_state(path))

    def __repr__(self) -> str:
        return (
            f"Planner(num_experts={self.num_experts}, strategy={self.config.strategy!r}, "
            f"round={self.round}, clients={len(self.fitness.clients())})"
        )


# ===================================================================== helpers
def _check_id(client_id: Any) -> None:
    try:
        hash(client_id)
    except TypeError:
        raise ProblemTypeError(
            f"`client_id` must be hashable; got {type(client_id).__name__}"
        ) from None


def _check_ids(client_ids: Iterable[Hashable]) -> list[Hashable]:
    if isinstance(client_ids, str | bytes) or not isinstance(client_ids, Iterable):
        raise ProblemTypeError(
            f"`client_ids` must be an iterable of client ids; got {type(client_ids).__name__}"
        )
    ids = list(client_ids)
    seen: set[Hashable] = set()
    for c in ids:
        try:
            hash(c)
        except TypeError:
            raise ProblemTypeError(
                f"`client_ids` must hold hashable ids; got {type(c).__name__}"
            ) from None
        if c in seen:
            raise InvalidProblemError(f"`client_ids` lists {c!r} more than once")
        seen.add(c)
    return ids


def _empty_result(num_experts: int) -> AssignmentResult:
    return AssignmentResult(
        status=Status.OPTIMAL,
        x=np.zeros((0, num_experts), dtype=bool),
        objective=0.0,
        bound=0.0,
        gap=0.0,
        loads=np.zeros(num_experts),
        runtime=0.0,
        method="none",
        message="no participating clients",
    )


def _with_message(result: AssignmentResult, message: str) -> AssignmentResult:
    from dataclasses import replace

    return replace(result, message=message)


def _bound_excess(problem: AssignmentProblem, result: AssignmentResult) -> float:
    if result.loads is None:
        return math.nan
    lo, hi, y = problem.expert_min_load, problem.expert_max_load, result.loads
    return float((np.maximum(lo - y, 0) + np.maximum(y - hi, 0)).sum())
