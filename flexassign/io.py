"""Reading and writing problems and results (JSON and NumPy ``.npz``).

File format (both kinds hold the same keys; see ``docs/file-format.md``):

``fitness``
    Required. (N, E) matrix.
``capacity``, ``min_experts``
    Integer or list of N integers.
``expert_min_load``, ``expert_max_load``
    Number or list of E numbers; JSON ``null`` (or absent) for no bound; in
    ``expert_max_load``, the string ``"inf"`` means no bound for that expert.
``client_weight``, ``expert_size``, ``client_budget``
    Lists (N, E and N long); absent for none.
``allowed``, ``fixed``
    (N, E) matrices of booleans or 0/1.
``load_penalty``
    Positive number for soft load bounds.
``tolerance``
    Optional: derive the load bounds with :meth:`AssignmentProblem.balanced`
    (then ``expert_min_load``/``expert_max_load`` must be absent).
``exact_capacity``
    Optional boolean, with ``tolerance``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidProblemError, ProblemTypeError
from .problem import AssignmentProblem

__all__ = [
    "load_problem",
    "problem_from_dict",
    "problem_to_dict",
    "save_problem",
    "write_json_atomic",
]

_ARRAY_KEYS = (
    "fitness",
    "capacity",
    "min_experts",
    "expert_min_load",
    "expert_max_load",
    "client_weight",
    "expert_size",
    "client_budget",
    "allowed",
    "fixed",
)
_KNOWN = {*_ARRAY_KEYS, "load_penalty", "tolerance", "exact_capacity", "format", "version"}


def _inf_aware(value: Any) -> Any:
    if isinstance(value, str):
        if value.lower() in ("inf", "infinity"):
            return np.inf
        raise InvalidProblemError(f"unexpected string {value!r}; only 'inf' is allowed")
    if isinstance(value, list):
        return [_inf_aware(v) for v in value]
    return value


def problem_from_dict(data: dict[str, Any]) -> AssignmentProblem:
    """Build a problem from a mapping in the file format (see the module docstring)."""
    if not isinstance(data, dict):
        raise ProblemTypeError(f"a problem file must hold a mapping; got {type(data).__name__}")
    unknown = set(data) - _KNOWN
    if unknown:
        raise InvalidProblemError(
            f"unknown key(s) {sorted(unknown)} in problem file; valid keys: {sorted(_KNOWN)}"
        )
    if "fitness" not in data:
        raise InvalidProblemError("problem file lacks the required key `fitness`")
    kwargs = {k: data[k] for k in _ARRAY_KEYS if k in data and data[k] is not None}
    for key in ("expert_max_load", "client_budget"):
        if key in kwargs:
            kwargs[key] = _inf_aware(kwargs[key])
    if data.get("load_penalty") is not None:
        kwargs["load_penalty"] = data["load_penalty"]
    if data.get("tolerance") is not None:
        fitness = kwargs.pop("fitness")
        return AssignmentProblem.balanced(
            fitness,
            tolerance=data["tolerance"],
            exact_capacity=bool(data.get("exact_capacity", False)),
            **kwargs,
        )
    if data.get("exact_capacity"):
        raise InvalidProblemError("`exact_capacity` is only meaningful with `tolerance`")
    return AssignmentProblem(**kwargs)


def problem_to_dict(problem: AssignmentProblem) -> dict[str, Any]:
    """A JSON-serializable mapping in the file format (bounds written explicitly)."""
    out: dict[str, Any] = {"format": "flexassign-problem", "version": 1}
    for key in _ARRAY_KEYS:
        value = getattr(problem, key)
        if value is None:
            continue
        arr = np.asarray(value)
        if arr.dtype == np.float64 and np.isinf(arr).any():
            out[key] = ["inf" if np.isinf(v) else float(v) for v in arr]
        else:
            out[key] = arr.tolist()
    if problem.load_penalty is not None:
        out["load_penalty"] = problem.load_penalty
    return out


def load_problem(path: str | os.PathLike[str]) -> AssignmentProblem:
    """Read a problem from ``.json`` or ``.npz``.

    Raises
    ------
    InvalidProblemError
        If the extension is unknown or the content invalid (message names the key).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        with p.open(encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise InvalidProblemError(f"{p}: not valid JSON ({exc})") from exc
        return problem_from_dict(data)
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as npz:
            data = {k: (npz[k].item() if npz[k].ndim == 0 else npz[k]) for k in npz.files}
        for key in ("format", "version"):
            data.pop(key, None)
        return problem_from_dict(data)
    raise InvalidProblemError(f"`path` must end in .json or .npz; got {p.name!r}")


def save_problem(problem: AssignmentProblem, path: str | os.PathLike[str]) -> None:
    """Write a problem as ``.json`` or ``.npz`` (atomically)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        write_json_atomic(p, problem_to_dict(problem))
    elif suffix == ".npz":
        arrays = {
            k: np.asarray(getattr(problem, k))
            for k in _ARRAY_KEYS
            if getattr(problem, k) is not None
        }
        if problem.load_penalty is not None:
            arrays["load_penalty"] = np.asarray(problem.load_penalty)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".npz.tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        raise InvalidProblemError(f"`path` must end in .json or .npz; got {p.name!r}")


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, indent: int | None = 1) -> None:
    """Write JSON to a temporary file in the same folder, then rename it into place."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=indent, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
