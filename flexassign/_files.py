"""Atomic file writes and JSON-safe conversion, once for the whole package.

Every file flexassign writes (problem files, planner state, checkpoints, run
records) goes through :func:`atomic_write`: the bytes go to a temporary file in
the target's folder, are flushed and fsynced, and the file is renamed into
place, so a reader never sees half a file. The file gets the permissions a
plain ``open(path, "w")`` would (``0o666`` minus the umask), not the ``0o600``
of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import InvalidProblemError, ProblemTypeError

__all__ = [
    "atomic_write",
    "jsonable",
    "write_json_atomic",
    "write_npz_atomic",
    "write_text_atomic",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], object], *, name: str = "path"
) -> Path:
    """Call ``write(fh)`` on a temporary binary file, then rename it to ``path``.

    Raises
    ------
    InvalidProblemError
        If the folder of ``path`` does not exist (named as argument ``name``).
    """
    if not isinstance(path, str | os.PathLike):
        raise ProblemTypeError(f"`{name}` must be a str or os.PathLike; got {type(path).__name__}")
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise InvalidProblemError(f"`{name}`: folder {str(folder)!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str, *, name: str = "path") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data), name=name)


def write_json_atomic(
    path: str | os.PathLike[str], data: Any, *, indent: int | None = 1, name: str = "path"
) -> Path:
    """Write ``jsonable(data)`` as strict JSON (no NaN) plus a newline, atomically."""
    text = json.dumps(jsonable(data), indent=indent, allow_nan=False) + "\n"
    return write_text_atomic(path, text, name=name)


def write_npz_atomic(
    path: str | os.PathLike[str],
    arrays: Mapping[str, Any],
    *,
    name: str = "path",
    compressed: bool = False,
) -> Path:
    """Write ``arrays`` to ``path`` as ``.npz`` atomically; names kept verbatim (dots too).

    >>> import tempfile
    >>> p = write_npz_atomic(Path(tempfile.mkdtemp()) / "a.npz", {"x.w": [1, 2]})
    >>> np.load(p)["x.w"].tolist()
    [1, 2]
    """
    state = {k: np.asarray(v) for k, v in arrays.items()}
    save = np.savez_compressed if compressed else np.savez

    def write(fh: IO[bytes]) -> None:
        save(fh, **state)  # type: ignore[arg-type]

    return atomic_write(path, write, name=name)


def jsonable(value: Any, *, nan: Any = None) -> Any:
    """``value`` with numpy scalars/arrays, tuples and non-string keys made JSON-safe.

    Non-finite floats become ``nan`` (``None`` by default, so the output is strict JSON).

    >>> jsonable({1: np.float64(0.5), "a": (np.int64(2), float("nan"))})
    {'1': 0.5, 'a': [2, None]}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, nan=nan) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, nan=nan) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), nan=nan)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return nan
    return value
