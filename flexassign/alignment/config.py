"""The planner's parameters: :class:`PlannerConfig`, the single list of them.

:class:`~flexassign.alignment.Planner` takes them as keyword arguments
(``Planner(num_experts, **options)``), validates them here once, and saves them with
:meth:`PlannerConfig.to_dict` (``dataclasses.asdict``); :meth:`PlannerConfig.from_dict`
reads them back with the same checks.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._files import jsonable
from .._validation import check_field, check_int, check_optional_real, check_real, check_seed
from ..backends.registry import get_backend
from ..errors import BackendNotInstalledError, InvalidProblemError, ProblemTypeError
from .capacity import ModelCost
from .fitness import FitnessConfig
from .policies import POLICIES, check_strategy
from .presets import DEFAULT_DEADLINE, DEFAULT_MODEL_COST

__all__ = ["PlannerConfig", "default_model_cost", "planner_options", "planner_signature"]

#: Largest ``balance_window`` (rounds); longer windows only slow the load sums down.
MAX_BALANCE_WINDOW = 10_000


def default_model_cost(num_experts: int) -> ModelCost:
    """:data:`~.presets.DEFAULT_MODEL_COST`'s per-expert costs for ``num_experts`` experts."""
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


@dataclass(frozen=True)
class PlannerConfig:
    r"""Every parameter of a :class:`~flexassign.alignment.Planner`, validated once.

    Parameters
    ----------
    num_experts : int
        :math:`E \ge 1`.
    strategy : str
        Default policy of ``plan_round``: a :data:`~.policies.POLICIES` name
        (``"flex"``, ``"greedy"``, ``"desirability"``, ``"random"``).
    tolerance : float
        :math:`\varepsilon \ge 0`, relative width of the per-round balance bounds.
    seed : int
        Seeds the tie-break, the random policy and the solver (``0 .. 2**31 - 1``).
    fitness : FitnessConfig or mapping, optional
        EMA step, signal, prior and exploration (see :mod:`.fitness`); a mapping is
        passed to :class:`FitnessConfig`. Default: ``FitnessConfig()``.
    usage_penalty : float, optional
        :math:`\lambda \ge 0`; ``None`` uses the policy's default (0.3 for
        ``"desirability"``, 0 otherwise).
    usage_decay : float
        :math:`\gamma \in (0, 1]`, EMA step of the usage score.
    deficit_shift : float
        :math:`\eta \in [0, 1]`, how strongly flex's bound targets correct the
        cumulative deficit (0: plain per-round bounds).
    soft_penalty : float
        ``load_penalty > 0`` used when flex's hard bounds are infeasible.
    default_capacity : int
        :math:`k_c \ge 0` of a client with neither a capacity nor a profile.
    model_cost : ModelCost or mapping, optional
        Costs that turn profiles into capacities (default :func:`default_model_cost`).
    deadline : float or None
        Round deadline in seconds (> 0) for profile-derived capacities.
    throughput_rate : float
        :math:`\omega \in (0, 1]`, EMA step of measured throughput.
    method : str
        Solver method for flex (:func:`~flexassign.solve_assignment`'s ``method``).
    time_limit : float, optional
        Seconds (> 0) each flex solve may take (``solve_assignment``'s ``time_limit``),
        so a federated round can bound its planning time.
    mip_gap : float, optional
        Relative gap (>= 0) at which a MIP backend may stop.
    stickiness : float
        :math:`\sigma \ge 0`, a bonus added to the score of each expert a client trained
        at its last participation (a switching cost in the objective of every scored
        policy; default 0: off). Fitness lies in [0, 1], so 0.05-0.3 is the useful range.
    balance_window : int
        :math:`W \ge 1`: flex enforces balance on the load of the last :math:`W`
        rounds, the deficit carried, so a single round may be looser
        (:func:`~.policies.flex_bounds`; default 1: per-round bounds).

    Examples
    --------
    >>> cfg = PlannerConfig(num_experts=4, strategy="greedy", time_limit=0.5)
    >>> PlannerConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

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
    time_limit: float | None = None
    mip_gap: float | None = None
    stickiness: float = 0.0
    balance_window: int = 1

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        check_field(self, "num_experts", check_int, lo=1)
        set_(self, "strategy", check_strategy(self.strategy))
        check_field(self, "tolerance", check_real, lo=0.0)
        check_field(self, "seed", check_seed)
        fit: Any = self.fitness
        if fit is None:
            fit = FitnessConfig()
        elif isinstance(fit, Mapping):
            fit = FitnessConfig(**_known("fitness", fit, FitnessConfig))
        elif not isinstance(fit, FitnessConfig):
            raise ProblemTypeError(f"`fitness` must be a FitnessConfig; got {type(fit).__name__}")
        set_(self, "fitness", fit)
        check_field(self, "usage_penalty", check_optional_real, lo=0.0)
        check_field(self, "usage_decay", check_real, lo=0.0, hi=1.0, lo_open=True)
        check_field(self, "deficit_shift", check_real, lo=0.0, hi=1.0)
        check_field(self, "soft_penalty", check_real, lo=0.0, lo_open=True)
        check_field(self, "default_capacity", check_int, lo=0)
        set_(self, "model_cost", self._check_cost(self.model_cost))
        check_field(self, "deadline", check_optional_real, lo=0.0, lo_open=True)
        check_field(self, "throughput_rate", check_real, lo=0.0, hi=1.0, lo_open=True)
        if not isinstance(self.method, str):
            raise ProblemTypeError(f"`method` must be a string; got {type(self.method).__name__}")
        if self.method != "auto":
            backend = get_backend(self.method)  # an unknown name lists the valid ones
            if not backend.installed():
                extra = (
                    f'-e ".[{backend.extra}]" -c constraints.txt (from a clone)'
                    if backend.extra
                    else " ".join(backend.requires)
                )
                raise BackendNotInstalledError(
                    f"`method` {self.method!r} is not installed; `pip install {extra}`"
                )
        check_field(self, "time_limit", check_optional_real, lo=0.0, lo_open=True)
        check_field(self, "mip_gap", check_optional_real, lo=0.0)
        check_field(self, "stickiness", check_real, lo=0.0)
        check_field(self, "balance_window", check_int, lo=1, hi=MAX_BALANCE_WINDOW)

    def _check_cost(self, cost: Any) -> ModelCost | None:
        if cost is None:
            return None
        if isinstance(cost, Mapping):
            cost = ModelCost.from_dict(dict(cost))
        if not isinstance(cost, ModelCost):
            raise ProblemTypeError(f"`model_cost` must be a ModelCost; got {type(cost).__name__}")
        if cost.num_experts != self.num_experts:
            raise InvalidProblemError(
                f"`model_cost` describes {cost.num_experts} experts but "
                f"`num_experts` is {self.num_experts}"
            )
        return cost

    @property
    def cost(self) -> ModelCost:
        """The model cost in use (the default one when none was given)."""
        return self.model_cost or default_model_cost(self.num_experts)

    def penalty(self, strategy: str) -> float:
        r"""The usage penalty :math:`\lambda` a policy uses."""
        if self.usage_penalty is not None:
            return self.usage_penalty
        return POLICIES[strategy].usage_penalty

    def solver_settings(self) -> dict[str, Any]:
        """``solve_assignment`` keyword arguments: method, time limit, gap and seed."""
        return {
            "method": self.method,
            "time_limit": self.time_limit,
            "mip_gap": self.mip_gap,
            "seed": self.seed,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON values (``dataclasses.asdict``)."""
        out: dict[str, Any] = jsonable(dataclasses.asdict(self))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlannerConfig:
        """A config from :meth:`to_dict`'s output; unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise ProblemTypeError(f"`config` must be a mapping; got {type(data).__name__}")
        return cls(**_known("config", data, cls))


def _known(
    name: str, data: Mapping[str, Any], cls: type, error: type[Exception] = InvalidProblemError
) -> dict[str, Any]:
    """``data`` as keyword arguments of dataclass ``cls``, rejecting unknown keys."""
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in data if k not in valid)
    if unknown:
        raise error(
            f"`{name}` has unknown key(s) {unknown}; valid: {', '.join(valid)}"
        )
    return dict(data)


#: Options ``Planner`` also takes by position, after ``num_experts`` (as it always has).
POSITIONAL = ("strategy", "tolerance", "seed")


def planner_options(
    num_experts: int, args: tuple[Any, ...], options: Mapping[str, Any]
) -> PlannerConfig:
    """``PlannerConfig(num_experts, *args, **options)`` (``args`` fill :data:`POSITIONAL`),
    naming unknown or repeated options."""
    if len(args) > len(POSITIONAL):
        raise ProblemTypeError(
            f"Planner takes at most {1 + len(POSITIONAL)} positional arguments "
            f"(num_experts, {', '.join(POSITIONAL)}); got {1 + len(args)}"
        )
    kwargs = dict(_known("options", options, PlannerConfig, ProblemTypeError))
    for name, value in zip(POSITIONAL, args, strict=False):
        if name in kwargs:
            raise ProblemTypeError(f"`{name}` given by position and by name")
        kwargs[name] = value
    return PlannerConfig(num_experts=num_experts, **kwargs)


def planner_signature() -> inspect.Signature:
    """``Planner.__init__``'s signature spelled out from :class:`PlannerConfig`'s fields,
    so ``help(Planner)`` and ``inspect.signature(Planner)`` list every option."""
    params = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("num_experts", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int),
    ]
    for f in dataclasses.fields(PlannerConfig):
        if f.name == "num_experts":
            continue
        default: Any = f.default
        if default is dataclasses.MISSING:
            default = f.default_factory()  # type: ignore[operator]
        kind = (
            inspect.Parameter.POSITIONAL_OR_KEYWORD
            if f.name in POSITIONAL
            else inspect.Parameter.KEYWORD_ONLY
        )
        params.append(inspect.Parameter(f.name, kind, default=default, annotation=f.type))
    return inspect.Signature(params, return_annotation=None)

