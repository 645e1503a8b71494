"""The planner's state file: a versioned JSON envelope, no pickle.

This module knows the envelope only; :meth:`Planner.to_state
<flexassign.alignment.Planner.to_state>` fills it from the planner's components
and :meth:`Planner.from_state <flexassign.alignment.Planner.from_state>` checks
every field on the way back. The file is one JSON object, readable and diffable::

    {"format": "flexassign.alignment.planner", "version": 2,
     "config": {...},                 # every PlannerConfig field (dataclasses.asdict)
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
                           "reported": [...], "client_loads": [...], "sample_loads": [...]},
     "prices": null | [...],          # last flex solve's expert prices (warm start)
     "stability": {"last": [["client-7", [0, 3]], ...],   # last participation's experts
                   "churn": [[round, sum, transitions], ...]}}

Version 1 files (no ``prices``, no ``time_limit``/``mip_gap`` in ``config``) and
version 2 files (no ``stability``; no ``stickiness``, ``balance_window``,
``fitness.prior_rank`` or ``fitness.train_signal`` in ``config``) are read with the
defaults; a version 2 file keeps the ``zero_count_signal`` it was written with.
Floats are written with Python's shortest round-trip ``repr``, so a restored
planner holds bit-identical state and makes exactly the same next plan. Client ids
must be ``str`` or ``int`` to be saved (JSON keeps the two apart). Writes are atomic
and honour the umask (:func:`flexassign._files.atomic_write`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from .._files import write_json_atomic
from .._validation import check_int, is_int, is_real
from ..errors import FlexAssignError, InvalidProblemError, ProblemTypeError

__all__ = ["FORMAT", "VERSION", "load_state", "save_state", "unwrap", "wrap"]

FORMAT = "flexassign.alignment.planner"
VERSION = 3

_FIELDS = frozenset(
    {
        "config",
        "round",
        "rng",
        "clients",
        "capacities",
        "profiles",
        "dropouts",
        "usage",
        "open_round",
    }
)
_OPTIONAL = {2: frozenset({"prices"}), 3: frozenset({"prices", "stability"})}

T = TypeVar("T")

#: Prices are in score units (fitness in [0, 1] plus bonus and penalty); far larger
#: values can only come from a damaged file and would overflow the solver's costs.
_MAX_PRICE = 1e12


def wrap(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` inside the envelope (format and version first)."""
    return {"format": FORMAT, "version": VERSION, **body}


def unwrap(state: Any) -> dict[str, Any]:
    """The body of an envelope, after checking its format, version and field names."""
    if not isinstance(state, Mapping):
        raise ProblemTypeError(f"`state` must be a mapping; got {type(state).__name__}")
    if state.get("format") != FORMAT:
        raise InvalidProblemError(
            f"`state` is not a planner state (format {state.get('format')!r}, expected {FORMAT!r})"
        )
    version: Any = state.get("version")
    if not is_int(version) or not 1 <= version <= VERSION:
        raise InvalidProblemError(
            f"`state` has version {version!r}; this flexassign reads versions 1..{VERSION}"
        )
    body = {k: v for k, v in state.items() if k not in ("format", "version")}
    missing = sorted(_FIELDS - set(body))
    optional = _OPTIONAL.get(int(version), frozenset())
    unknown = sorted(str(k) for k in set(body) - _FIELDS - optional)
    if missing or unknown:
        what = [f"missing field(s) {missing}"] if missing else []
        what += [f"unknown field(s) {unknown}"] if unknown else []
        raise InvalidProblemError(f"`state` is malformed: {'; '.join(what)}")
    return body


def section(name: str, build: Callable[[Any], T], value: Any) -> T:
    """``build(value)``, with any error re-raised naming ``state.<name>``."""
    try:
        return build(value)
    except FlexAssignError as exc:
        raise InvalidProblemError(f"`state.{name}`: {exc}") from None
    except TypeError as exc:
        raise InvalidProblemError(f"`state.{name}` is malformed: {exc}") from None


def check_count(name: str, value: Any) -> int:
    """A non-negative integer field (booleans and floats such as 2.7 are errors)."""
    return check_int(name, value, lo=0, type_error=InvalidProblemError)


def check_prices(name: str, value: Any, num_experts: int) -> NDArray[np.float64] | None:
    """``None`` or ``num_experts`` finite numbers."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != num_experts
        or not all(is_real(v) and abs(v) <= _MAX_PRICE for v in value)
    ):
        raise InvalidProblemError(
            f"`{name}` must be null or {num_experts} numbers of magnitude at most {_MAX_PRICE:g}"
        )
    return np.asarray(value, dtype=np.float64)


def rng_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's bit-generator state as JSON values."""
    st = rng.bit_generator.state
    return {
        "bit_generator": st["bit_generator"],
        "state": {"state": int(st["state"]["state"]), "inc": int(st["state"]["inc"])},
        "has_uint32": int(st["has_uint32"]),
        "uinteger": int(st["uinteger"]),
    }


def rng_from_json(rng: np.random.Generator, value: Any) -> None:
    """Set a PCG64 generator's state from :func:`rng_to_json`'s output, checking it."""
    ok = (
        isinstance(value, Mapping)
        and set(value) == {"bit_generator", "state", "has_uint32", "uinteger"}
        and value["bit_generator"] == "PCG64"
        and isinstance(value["state"], Mapping)
        and set(value["state"]) == {"state", "inc"}
        and all(is_int(v) and 0 <= v < 2**128 for v in value["state"].values())
        and value["state"]["inc"] % 2 == 1
        and value["has_uint32"] in (0, 1)
        and is_int(value["has_uint32"])
        and is_int(value["uinteger"])
        and 0 <= value["uinteger"] < 2**32
    )
    if not ok:
        raise InvalidProblemError(
            "`state.rng` must be a PCG64 state: {bit_generator: 'PCG64', state: {state, inc "
            "(odd)} below 2**128, has_uint32: 0 or 1, uinteger below 2**32}"
        )
    rng.bit_generator.state = dict(value)


def save_state(state: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``state`` as indented JSON to ``path`` atomically (honouring the umask).

    Raises
    ------
    InvalidProblemError
        If the folder of ``path`` does not exist (the error names ``path``).
    """
    write_json_atomic(path, state, indent=1, name="path")


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the JSON object in a state file written by :func:`save_state`."""
    if not isinstance(path, str | os.PathLike):
        raise ProblemTypeError(f"`path` must be a str or os.PathLike; got {type(path).__name__}")

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)  # NaN/Infinity parse; the field checks reject them
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidProblemError(f"`path` {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidProblemError(f"`path` {str(path)!r} does not hold a JSON object")
    return data
