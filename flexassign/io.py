"""Reading and writing problems (JSON and NumPy ``.npz``) and fitness matrices (CSV).

File format (both kinds hold the same keys; see ``docs/file-format.md``):

``fitness``
    Required. (N, E) matrix of numbers.
``capacity``, ``min_experts``
    Integer or list of N integers.
``expert_min_load``, ``expert_max_load``
    Number or list of E numbers; in ``expert_max_load``, the string ``"inf"`` means
    no bound for that expert.
``client_weight``, ``expert_size``, ``client_budget``
    Lists (N, E and N long); ``"inf"`` allowed in ``client_budget``.
``allowed``, ``fixed``
    (N, E) matrices of booleans or 0/1.
``load_penalty``
    Positive number for soft load bounds.
``tolerance``
    Optional: derive the load bounds with :meth:`AssignmentProblem.balanced`
    (then ``expert_min_load``/``expert_max_load`` must be absent).
``exact_capacity``
    Optional boolean (a JSON ``true``/``false``), with ``tolerance``.
``format``, ``version``
    Optional; when present they must be ``"flexassign-problem"`` and ``1``.

A ``null`` value is the same as leaving the key out (except for ``fitness``).
Reading is strict: unknown keys, booleans where numbers belong, strings other than
``"inf"``, ragged rows and unreadable files all raise
:class:`~flexassign.errors.InvalidProblemError` or
:class:`~flexassign.errors.ProblemTypeError` naming the key.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._files import write_json_atomic, write_npz_atomic
from ._validation import is_int, parses_as_float
from .errors import InvalidProblemError, ProblemTypeError
from .problem import FIELDS, AssignmentProblem

__all__ = [
    "FORMAT",
    "VERSION",
    "LabelledFitness",
    "load_problem",
    "problem_from_dict",
    "problem_to_dict",
    "read_fitness_csv",
    "save_problem",
]

#: Value of the ``format`` key of problem files.
FORMAT = "flexassign-problem"
#: The problem-file version this module reads and writes.
VERSION = 1

# The AssignmentProblem fields a file may hold as arrays: every published field but
# the scalar penalty.
_ARRAY_KEYS = tuple(f for f in FIELDS if f != "load_penalty")
_MASK_KEYS = ("allowed", "fixed")
_INF_KEYS = ("expert_max_load", "client_budget")
_SCALAR_KEYS = ("load_penalty", "tolerance")
_KNOWN = (*_ARRAY_KEYS, *_SCALAR_KEYS, "exact_capacity", "format", "version")


def _path(path: Any) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise ProblemTypeError(f"`path` must be a str or os.PathLike; got {type(path).__name__}")
    return Path(path)


# ------------------------------------------------------------------------- checking
def _leaf(key: str, value: Any) -> Any:
    """One entry of an array-valued key, converted (``"inf"`` -> inf) or rejected."""
    if isinstance(value, bool | np.bool_):
        if key in _MASK_KEYS:
            return bool(value)
        raise ProblemTypeError(f"`{key}` must hold numbers; got a boolean ({value})")
    if isinstance(value, int | float | np.integer | np.floating):
        return value
    if isinstance(value, str):
        if key in _INF_KEYS and value.strip().lower() in ("inf", "infinity"):
            return math.inf
        allowed = ' (only "inf" is allowed as a string)' if key in _INF_KEYS else ""
        raise ProblemTypeError(f"`{key}` must hold numbers; got the string {value!r}{allowed}")
    if value is None:
        raise ProblemTypeError(f"`{key}` must hold numbers; got null inside it")
    raise ProblemTypeError(f"`{key}` must hold numbers; got {type(value).__name__}")


def _nested(key: str, value: Any, depth: int = 0) -> Any:
    if isinstance(value, list | tuple):
        if depth >= 2:
            raise InvalidProblemError(f"`{key}` is nested too deeply (at most a matrix)")
        return [_nested(key, v, depth + 1) for v in value]
    return _leaf(key, value)


def _array_value(key: str, value: Any) -> Any:
    """Check the types of an array-valued key (list, scalar or ndarray) strictly."""
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        if kind == "b" and key not in _MASK_KEYS:
            raise ProblemTypeError(f"`{key}` must hold numbers; got dtype bool")
        if kind not in "biuf":
            raise ProblemTypeError(f"`{key}` must hold numbers; got dtype {value.dtype}")
        return value
    checked = _nested(key, value)
    if not isinstance(checked, list):
        return checked
    try:
        arr = np.array(checked)
    except ValueError as exc:  # ragged nesting
        raise InvalidProblemError(
            f"`{key}` must be rectangular (every row the same length)"
        ) from exc
    if arr.dtype == object:
        raise InvalidProblemError(
            f"`{key}` must be rectangular numbers (every row the same length, "
            "integers within 64 bits)"
        )
    return arr


def _scalar(key: str, value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise ProblemTypeError(f"`{key}` must be a number; got {type(value).__name__}")
    return value


def _check_header(data: dict[str, Any]) -> None:
    fmt = data.get("format")
    if fmt is not None and not (isinstance(fmt, str) and fmt == FORMAT):
        shown = fmt if isinstance(fmt, str) else f"a {type(fmt).__name__}"
        if isinstance(fmt, np.ndarray):
            shown = f"an array of shape {fmt.shape}"
        raise InvalidProblemError(f"`format` must be {FORMAT!r}; got {shown!r}")
    version = data.get("version")
    if version is None:
        return
    if not is_int(version):
        raise ProblemTypeError(f"`version` must be an integer; got {type(version).__name__}")
    if version != VERSION:
        raise InvalidProblemError(
            f"unsupported `version` {version}: this flexassign reads version {VERSION}"
        )


def problem_from_dict(data: dict[str, Any]) -> AssignmentProblem:
    """Build a problem from a mapping in the file format (see the module docstring).

    Raises
    ------
    InvalidProblemError, ProblemTypeError
        For unknown keys, a missing ``fitness``, wrong types (a boolean where a number
        belongs, a string other than ``"inf"``, ``exact_capacity`` that is not a
        boolean), a wrong ``format``/``version``, or any invalid problem.

    Examples
    --------
    >>> p = problem_from_dict({"fitness": [[1, 0], [0, 1]], "capacity": 1, "tolerance": 0})
    >>> p.expert_max_load.tolist()
    [1.0, 1.0]
    >>> problem_from_dict({"fitness": [[1]], "exact_capacity": "false"})
    Traceback (most recent call last):
    ...
    flexassign.errors.ProblemTypeError: `exact_capacity` must be a boolean (true or false); got str
    """
    if not isinstance(data, dict):
        raise ProblemTypeError(f"a problem file must hold a mapping; got {type(data).__name__}")
    unknown = set(data) - set(_KNOWN)
    if unknown:
        raise InvalidProblemError(
            f"unknown key(s) {sorted(map(str, unknown))} in problem file; "
            f"valid keys: {sorted(_KNOWN)}"
        )
    _check_header(data)
    if data.get("fitness") is None:
        raise InvalidProblemError("problem file lacks the required key `fitness` (a matrix)")
    kwargs: dict[str, Any] = {
        k: _array_value(k, data[k]) for k in _ARRAY_KEYS if data.get(k) is not None
    }
    for key in _SCALAR_KEYS:
        if data.get(key) is not None:
            kwargs[key] = _scalar(key, data[key])
    exact = data.get("exact_capacity")
    if isinstance(exact, np.ndarray) and exact.ndim == 0:
        exact = exact.item()
    if exact is not None and not isinstance(exact, bool | np.bool_):
        raise ProblemTypeError(
            f"`exact_capacity` must be a boolean (true or false); got {type(exact).__name__}"
        )
    tolerance = kwargs.pop("tolerance", None)
    if tolerance is not None:
        fitness = kwargs.pop("fitness")
        return AssignmentProblem.balanced(
            fitness, tolerance=tolerance, exact_capacity=bool(exact), **kwargs
        )
    if exact:
        raise InvalidProblemError("`exact_capacity` is only meaningful with `tolerance`")
    return AssignmentProblem(**kwargs)


def problem_to_dict(problem: AssignmentProblem) -> dict[str, Any]:
    """A JSON-serializable mapping in the file format (bounds written explicitly)."""
    out: dict[str, Any] = {"format": FORMAT, "version": VERSION}
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


# --------------------------------------------------------------------------- reading
def _read_text(p: Path) -> str:
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidProblemError(
            f"`path` is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from exc


def _read_json(p: Path) -> Any:
    text = _read_text(p)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidProblemError(
            f"`path` is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise InvalidProblemError("`path` is nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise InvalidProblemError(f"`path` holds a value JSON cannot read: {exc}") from exc


def _read_npz(p: Path) -> dict[str, Any]:
    if not zipfile.is_zipfile(p):
        raise InvalidProblemError("`path` is not an .npz archive (empty or not a zip file)")
    data: dict[str, Any] = {}
    try:
        npz = np.load(p, allow_pickle=False)
    except Exception as exc:  # numpy raises many types for damaged archives
        raise InvalidProblemError(f"`path` is not a readable .npz: {exc}") from exc
    with npz:
        for key in npz.files:
            try:
                arr = npz[key]
            except ValueError as exc:
                if "Object arrays" in str(exc):
                    raise ProblemTypeError(
                        f"`{key}` is an object array; save plain numeric arrays"
                    ) from exc
                raise InvalidProblemError(f"`{key}` could not be read: {exc}") from exc
            except Exception as exc:  # a damaged member (bad zip data, bad header)
                raise InvalidProblemError(f"`{key}` could not be read: {exc}") from exc
            if not isinstance(arr, np.ndarray):  # a member that is not a .npy file
                raise InvalidProblemError(
                    f"`path` holds the member {key!r}, which is not a .npy array"
                )
            data[key] = arr.item() if arr.ndim == 0 else arr
    return data


def load_problem(path: str | os.PathLike[str]) -> AssignmentProblem:
    """Read a problem from ``.json`` or ``.npz``.

    Raises
    ------
    InvalidProblemError, ProblemTypeError
        If the extension is unknown, the file unreadable (not UTF-8, not JSON, not an
        ``.npz`` archive, object arrays) or the content invalid; messages name the key.
    OSError
        If the file cannot be opened.
    """
    p = _path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        return problem_from_dict(_read_json(p))
    if suffix == ".npz":
        return problem_from_dict(_read_npz(p))
    raise InvalidProblemError(f"`path` must end in .json or .npz; got {p.name!r}")


def save_problem(problem: AssignmentProblem, path: str | os.PathLike[str]) -> None:
    """Write a problem as ``.json`` or ``.npz``, atomically (file mode honours the umask)."""
    if not isinstance(problem, AssignmentProblem):
        raise ProblemTypeError(
            f"`problem` must be an AssignmentProblem; got {type(problem).__name__}"
        )
    p = _path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        write_json_atomic(p, problem_to_dict(problem))
    elif suffix == ".npz":
        arrays: dict[str, Any] = {
            k: np.asarray(getattr(problem, k))
            for k in _ARRAY_KEYS
            if getattr(problem, k) is not None
        }
        if problem.load_penalty is not None:
            arrays["load_penalty"] = np.asarray(problem.load_penalty)
        arrays["format"] = np.asarray(FORMAT)
        arrays["version"] = np.asarray(VERSION)
        write_npz_atomic(p, arrays, compressed=True)
    else:
        raise InvalidProblemError(f"`path` must end in .json or .npz; got {p.name!r}")


# ------------------------------------------------------------------------------ CSV
@dataclass(frozen=True)
class LabelledFitness:
    """A fitness matrix read from CSV, with its labels when the file had them."""

    fitness: np.ndarray
    clients: tuple[str, ...] | None
    experts: tuple[str, ...] | None


def read_fitness_csv(
    path: str | os.PathLike[str], *, header: bool | None = None, index: bool | None = None
) -> LabelledFitness:
    """Read a clients x experts fitness matrix from a comma-separated file.

    Parameters
    ----------
    path : str or os.PathLike
        The file (UTF-8). Blank lines are skipped.
    header : bool, optional
        Whether the first row holds expert labels. ``None`` detects it: the first row
        is a header when its first cell is empty, a later cell is not a number, or its
        first cell is not a number while no other row's is. (So numeric expert labels
        next to client labels need ``header=True``.)
    index : bool, optional
        Whether the first column holds client labels. ``None`` detects it: yes when
        the header's first cell is empty (as pandas writes it) or a data row's first
        cell is not a number.

    Returns
    -------
    LabelledFitness

    Raises
    ------
    InvalidProblemError
        Naming the line and column of a cell that is not a number, a row of another
        length, or a file with no data.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "fit.csv"
    >>> _ = f.write_text(",e0,e1\\nalice,0.5,0.1\\nbob,0.2,0.9\\n")
    >>> lf = read_fitness_csv(f)
    >>> lf.fitness.tolist(), lf.clients, lf.experts
    ([[0.5, 0.1], [0.2, 0.9]], ('alice', 'bob'), ('e0', 'e1'))
    """
    p = _path(path)
    text = _read_text(p)
    try:
        rows = [
            (n, [c.strip() for c in row])
            for n, row in enumerate(csv.reader(_io.StringIO(text)), start=1)
            if any(c.strip() for c in row)
        ]
    except csv.Error as exc:
        raise InvalidProblemError(f"`path` is not valid CSV: {exc}") from exc
    if not rows:
        raise InvalidProblemError("`path` holds no rows")
    if header is None:
        first = rows[0][1]
        header = (
            first[0] == ""
            or not all(parses_as_float(c) for c in first[1:])
            or (not parses_as_float(first[0]) and all(parses_as_float(r[0]) for _, r in rows[1:]))
        )
    head = rows[0][1] if header else None
    body = rows[1:] if header else rows
    if not body:
        raise InvalidProblemError("`path` has a header but no data rows")
    if index is None:
        index = (head is not None and head[0] == "") or any(
            not parses_as_float(r[0]) for _, r in body
        )
    width = len(head) if head is not None else len(body[0][1])
    values: list[list[float]] = []
    for line, row in body:
        if len(row) != width:
            raise InvalidProblemError(
                f"`path` line {line}: {len(row)} cells where the first row has {width}"
            )
        cells = row[1:] if index else row
        parsed = []
        for col, cell in enumerate(cells, start=2 if index else 1):
            try:
                parsed.append(float(cell))
            except ValueError:
                raise InvalidProblemError(
                    f"`fitness` at line {line}, column {col}: {cell!r} is not a number"
                ) from None
        values.append(parsed)
    fitness = np.array(values, dtype=np.float64)
    if fitness.shape[1] == 0:
        raise InvalidProblemError("`path` has no expert columns")
    clients = tuple(r[0] for _, r in body) if index else None
    experts = None
    if head is not None:
        experts = tuple(head[1:] if index else head)
    for what, labels in (("client", clients), ("expert", experts)):
        seen: set[str] = set()
        for label in labels or ():
            if label in seen:
                raise InvalidProblemError(
                    f"`path`: the {what} label {label!r} appears twice; labels must be unique"
                )
            seen.add(label)
    return LabelledFitness(fitness=fitness, clients=clients, experts=experts)
