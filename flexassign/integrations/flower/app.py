"""Run-config glue for a FLEX-MoE ServerApp: planner, strategy options, clear failures.

A Flower app's ``[tool.flwr.app.config]`` uses hyphenated keys. The keys read here
(all optional) are:

=========================  ===================================================  =========
key                        meaning                                              default
=========================  ===================================================  =========
``num-experts``            experts of the model                                 required
``strategy``               planner policy (``flex``, ``greedy``, ...)           ``flex``
``tolerance``              load-balance tolerance                               0.1
``seed``                   planner and sampling seed                            0
``planner-options``        JSON object of further PlannerConfig fields, e.g.    ``""``
                           ``'{"fitness": {"beta": 0.5}, "usage_decay": 0.2}'``
``fraction-train``         share of profiled nodes sampled per round            1.0
``fraction-evaluate``      share of the round's trained nodes evaluated         1.0
``min-train-nodes``        minimum nodes trained per round                      1
``min-available-nodes``    nodes that must be connected before a round starts   1
``wait-timeout``           seconds to wait for them (progress logged)           300
``aggregation``            ``mean``, ``trimmed-mean`` or ``median``             ``mean``
``trim``                   weight share cut per end by ``trimmed-mean``         0.2
``max-weight-ratio``       cap on a claim, as a multiple of the round's         10
                           median claim (``0``: no cap)
``checkpoint-dir``         save planner/model/history per round; resume         ``""``
``results-path``           JSON-lines file, one record appended per round       ``""``
``final-model-path``       ``.npz`` of the final global arrays                  ``""``
=========================  ===================================================  =========

``""`` means "off" (TOML has no null). Defaults are :class:`~.strategy.FlexMoEStrategy`'s;
a key missing from the run config keeps them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from logging import ERROR
from typing import Any, TypeVar

from flwr.common import log

from ...alignment import Planner
from ...errors import InvalidProblemError

__all__ = ["APP_KEYS", "PLANNER_KEYS", "make_planner", "run_logged", "strategy_options"]

#: Run-config keys that :func:`strategy_options` reads.
APP_KEYS = (
    "fraction-train", "fraction-evaluate", "min-train-nodes", "min-available-nodes",
    "wait-timeout", "profile-timeout", "aggregation", "trim", "max-weight-ratio", "checkpoint-dir",
    "results-path", "final-model-path",
)
#: Run-config keys that :func:`make_planner` reads.
PLANNER_KEYS = ("num-experts", "strategy", "tolerance", "seed", "planner-options")

T = TypeVar("T")


def _planner_options(value: Any) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidProblemError(f"`planner-options` is not valid JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise InvalidProblemError(
            f"`planner-options` must be a JSON object; got {type(value).__name__}"
        )
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def make_planner(run_config: Mapping[str, Any], **overrides: Any) -> Planner:
    """A :class:`~flexassign.alignment.Planner` from a run config (see module table).

    Parameters
    ----------
    run_config : mapping
        Needs ``num-experts``; ``planner-options`` is a JSON object of further
        :class:`~flexassign.alignment.PlannerConfig` fields (a ``fitness`` object
        becomes a :class:`~flexassign.alignment.FitnessConfig`), checked by
        :class:`~flexassign.alignment.PlannerConfig` (unknown keys are errors).
    **overrides
        PlannerConfig fields that win over the run config.

    Raises
    ------
    InvalidProblemError
        If ``num-experts`` is missing or an option is invalid (named).

    Examples
    --------
    >>> p = make_planner({"num-experts": 4, "planner-options": '{"fitness": {"beta": 0.5}}'})
    >>> p.num_experts, p.config.fitness.beta
    (4, 0.5)
    """
    if "num-experts" not in run_config and "num_experts" not in overrides:
        raise InvalidProblemError("run config lacks `num-experts`")
    kwargs: dict[str, Any] = {}
    for key in ("num-experts", "strategy", "tolerance", "seed"):
        if key in run_config and run_config[key] != "":
            kwargs[key.replace("-", "_")] = run_config[key]
    kwargs.update(_planner_options(run_config.get("planner-options")))
    kwargs.update(overrides)
    num_experts = kwargs.pop("num_experts")
    try:
        return Planner(num_experts, **kwargs)  # PlannerConfig checks every option
    except (InvalidProblemError, TypeError) as exc:
        raise InvalidProblemError(f"`planner-options`: {exc}") from exc


def strategy_options(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`~.strategy.FlexMoEStrategy` keyword arguments from a run config.

    Only keys present (and not ``""``) are returned; the strategy validates them.

    Examples
    --------
    >>> strategy_options({"wait-timeout": 30, "aggregation": "median", "results-path": ""})
    {'wait_timeout': 30.0, 'aggregation': 'median'}
    """
    out: dict[str, Any] = {}
    casts: dict[str, Callable[[Any], Any]] = {
        "fraction-train": float, "fraction-evaluate": float, "min-train-nodes": int,
        "min-available-nodes": int, "wait-timeout": float, "profile-timeout": float,
        "aggregation": str, "trim": float,
        "max-weight-ratio": float, "checkpoint-dir": str, "results-path": str,
        "final-model-path": str,
    }
    for key, cast in casts.items():
        value = run_config.get(key, "")
        if value == "":
            continue
        try:
            v = cast(value)
        except (TypeError, ValueError) as exc:
            raise InvalidProblemError(f"run-config `{key}` is invalid: {value!r}") from exc
        if key == "max-weight-ratio" and v == 0:
            v = None
        out[key.replace("-", "_")] = v
    return out


def run_logged(main: Callable[[], T]) -> T:
    """Call ``main()``; on failure log one clear ERROR line, then re-raise.

    Flower 1.41 logs a ServerApp's exception as a traceback; the line logged here
    says first, in one sentence, why the run ended.
    """
    try:
        return main()
    except Exception as exc:
        log(ERROR, "FLEX-MoE ServerApp failed: %s: %s", type(exc).__name__, exc)
        raise
