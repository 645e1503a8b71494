"""Saving and restoring a :class:`~flexassign.alignment.Planner`: versioned JSON, no pickle.

The file is one JSON object, readable and diffable::

    {"format": "flexassign.alignment.planner", "version": 1,
     "config": {...},                 # every PlannerConfig field
     "round": 12,                     # index of the next plan
     "rng": {...},                    # numpy PCG64 bit-generator state
     "clients": [{"id": "client-7", "fitness": [...], "observations": [...],
                  "reports": 3}, ...],
     "capacities": [["client-7", 2], ...],
     "profiles": [["client-7", {...ClientProfile fields...}], ...],
     "dropouts": [["client-9", 1], ...],
     "usage": {"decay": 0.3, "client_loads": [[...], ...], "sample_loads": [...],
               "usage_score": [...]},
     "open_round": null | {"assignments": [["client-7", [0, 3]], ...],
                           "reported": [...], "client_loads": [...], "sample_loads": [...]}}

Floats are written with Python's shortest round-trip ``repr``, so a restored planner
holds bit-identical state and makes exactly the same next plan. Client ids must be
``str`` or ``int`` to be saved (JSON keeps the two apart). The write is atomic: a
temporary file in the same folder, flushed and fsynced, then ``os.replace``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidProblemError, ProblemTypeError
from .capacity import ClientProfile, ModelCost
from .fitness import FitnessConfig
from .planner import Planner, PlannerConfig
from .usage import UsageMonitor

__all__ = [
    "FORMAT",
    "VERSION",
    "load_state",
    "planner_from_state",
    "planner_to_state",
    "save_state",
]

FORMAT = "flexassign.alignment.planner"
VERSION = 1


def _id_out(client_id: Hashable) -> str | int:
    if isinstance(client_id, np.integer):
        return int(client_id)
    if isinstance(client_id, str) or (
        isinstance(client_id, int) and not isinstance(client_id, bool)
    ):
        return client_id
    raise InvalidProblemError(
        f"`client_id` {client_id!r} of type {type(client_id).__name__} cannot be saved; "
        "only str and int client ids are supported by the JSON state file"
    )


def _id_in(value: Any) -> Hashable:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise InvalidProblemError(f"`state` holds a client id of type {type(value).__name__}")


def planner_to_state(planner: Planner) -> dict[str, Any]:
    """The planner's whole state as a JSON-serializable dict."""
    cfg = planner.config
    fit = cfg.fitness
    config = {
        "num_experts": cfg.num_experts,
        "strategy": cfg.strategy,
        "tolerance": cfg.tolerance,
        "seed": cfg.seed,
        "fitness": {
            "beta": fit.beta,
            "signal": fit.signal,
            "alpha_loss": fit.alpha_loss,
            "prior": fit.prior,
            "prior_value": fit.prior_value,
            "prior_strength": fit.prior_strength,
            "exploration": fit.exploration,
            "zero_count_signal": fit.zero_count_signal,
        },
        "usage_penalty": cfg.usage_penalty,
        "usage_decay": cfg.usage_decay,
        "deficit_shift": cfg.deficit_shift,
        "soft_penalty": cfg.soft_penalty,
        "default_capacity": cfg.default_capacity,
        "model_cost": None if cfg.model_cost is None else cfg.model_cost.to_dict(),
        "deadline": cfg.deadline,
        "throughput_rate": cfg.throughput_rate,
        "method": cfg.method,
    }
    open_round = None
    if planner._open is not None:
        open_round = {
            "assignments": [[_id_out(c), list(v)] for c, v in planner._open.items()],
            "reported": [_id_out(c) for c in planner._open if c in planner._reported],
            "client_loads": planner._open_clients.tolist(),
            "sample_loads": planner._open_samples.tolist(),
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "round": planner.round,
        "rng": _jsonable(planner.rng.bit_generator.state),
        "clients": [
            {
                "id": _id_out(c),
                "fitness": q.tolist(),
                "observations": n.tolist(),
                "reports": int(t),
            }
            for c, q, n, t in planner.fitness.rows()
        ],
        "capacities": [[_id_out(c), k] for c, k in planner._capacity.items()],
        "profiles": [[_id_out(c), p.to_dict()] for c, p in planner._profiles.items()],
        "dropouts": [[_id_out(c), n] for c, n in planner._dropouts.items()],
        "usage": planner.usage.to_dict(),
        "open_round": open_round,
    }


def planner_from_state(state: Mapping[str, Any]) -> Planner:
    """Rebuild a planner from :func:`planner_to_state`'s dict.

    Raises
    ------
    InvalidProblemError
        Wrong format or a newer version, or malformed content.
    """
    if not isinstance(state, Mapping):
        raise ProblemTypeError(f"`state` must be a mapping; got {type(state).__name__}")
    if state.get("format") != FORMAT:
        raise InvalidProblemError(
            f"`state` is not a planner state (format {state.get('format')!r}, expected {FORMAT!r})"
        )
    version = state.get("version")
    if not isinstance(version, int) or version < 1 or version > VERSION:
        raise InvalidProblemError(
            f"`state` has version {version!r}; this flexassign reads versions 1..{VERSION}"
        )
    try:
        return _build(state)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InvalidProblemError | ProblemTypeError):
            raise
        raise InvalidProblemError(f"`state` is malformed: {type(exc).__name__}: {exc}") from exc


def _build(state: Mapping[str, Any]) -> Planner:
    c = dict(state["config"])
    fitness = FitnessConfig(**c.pop("fitness"))
    cost = c.pop("model_cost")
    config = PlannerConfig(
        fitness=fitness, model_cost=None if cost is None else ModelCost.from_dict(cost), **c
    )
    planner = Planner.from_config(config)
    e = config.num_experts
    planner.round = int(state["round"])
    planner.rng.bit_generator.state = state["rng"]
    for row in state["clients"]:
        planner.fitness.set_row(
            _id_in(row["id"]), row["fitness"], row["observations"], row["reports"]
        )
    planner._capacity = {_id_in(cid): int(k) for cid, k in state["capacities"]}
    planner._profiles = {_id_in(cid): ClientProfile(**p) for cid, p in state["profiles"]}
    planner._dropouts = {_id_in(cid): int(n) for cid, n in state["dropouts"]}
    planner.usage = UsageMonitor.from_dict(e, state["usage"])
    op = state["open_round"]
    if op is not None:
        planner._open = {_id_in(cid): tuple(int(j) for j in v) for cid, v in op["assignments"]}
        planner._reported = {_id_in(cid) for cid in op["reported"]}
        planner._open_clients = np.asarray(op["client_loads"], dtype=np.float64).reshape(e)
        planner._open_samples = np.asarray(op["sample_loads"], dtype=np.float64).reshape(e)
    return planner


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_state(state: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``state`` as indented JSON to ``path`` atomically."""
    if not isinstance(path, str | os.PathLike):
        raise ProblemTypeError(f"`path` must be a str or os.PathLike; got {type(path).__name__}")
    target = Path(path)
    text = json.dumps(state, indent=1, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state file written by :func:`save_state`."""
    if not isinstance(path, str | os.PathLike):
        raise ProblemTypeError(f"`path` must be a str or os.PathLike; got {type(path).__name__}")
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise InvalidProblemError(f"`path` {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidProblemError(f"`path` {str(path)!r} does not hold a JSON object")
    return data
