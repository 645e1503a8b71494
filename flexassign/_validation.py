"""The one set of scalar argument checks every module uses.

Each check converts and returns the value, or raises an error that names the
argument in backticks: :class:`~flexassign.errors.ProblemTypeError` (also a
``TypeError``) for a wrong type, :class:`~flexassign.errors.InvalidProblemError`
(also a ``ValueError``) for a bad value. Booleans are never numbers here.
Callers that need another exception class (feedback, files) pass ``error=``.

>>> check_int("rounds", 3, lo=1)
3
>>> check_real("beta", 0.5, lo=0.0, hi=1.0, lo_open=True)
0.5
>>> check_int("rounds", True, lo=1)
Traceback (most recent call last):
...
flexassign.errors.ProblemTypeError: `rounds` must be an integer; got bool
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from .errors import InvalidProblemError, ProblemTypeError

__all__ = [
    "SEED_MAX",
    "check_field",
    "check_int",
    "check_optional_real",
    "check_real",
    "check_seed",
    "has_keys",
    "is_int",
    "is_real",
    "parses_as_float",
]

#: Largest seed accepted anywhere (CP-SAT and HiGHS take 32-bit signed seeds).
SEED_MAX = 2**31 - 1


def is_int(value: Any) -> bool:
    """True for Python/numpy integers, False for ``bool`` and everything else."""
    return not isinstance(value, bool | np.bool_) and isinstance(value, int | np.integer)


def is_real(value: Any) -> bool:
    """True for Python/numpy integers and floats, False for ``bool`` and everything else."""
    return not isinstance(value, bool | np.bool_) and isinstance(
        value, int | float | np.integer | np.floating
    )


def parses_as_float(text: str) -> bool:
    """Whether ``float(text)`` succeeds (for cells of text files and flags).

    >>> parses_as_float("1e-3"), parses_as_float("inf"), parses_as_float("x")
    (True, True, False)
    """
    try:
        float(text)
    except ValueError:
        return False
    return True


def _num_text(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {_num_text(lo)}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {_num_text(hi)}")
    return " and ".join(parts)


def check_int(
    name: str,
    value: Any,
    *,
    lo: int | None = None,
    hi: int | None = None,
    error: type[Exception] = InvalidProblemError,
    type_error: type[Exception] = ProblemTypeError,
) -> int:
    """``value`` as an ``int`` within ``[lo, hi]``, or an error naming ``name``."""
    if not is_int(value):
        raise type_error(f"`{name}` must be an integer; got {type(value).__name__}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise error(f"`{name}` must be {_range_text(lo, hi, False, False)}; got {v}")
    return v


def check_real(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    error: type[Exception] = InvalidProblemError,
    type_error: type[Exception] = ProblemTypeError,
) -> float:
    """``value`` as a finite ``float`` within the given range, or an error naming ``name``."""
    if not is_real(value):
        raise type_error(f"`{name}` must be a number; got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an int too large for a float
        v = math.inf if value > 0 else -math.inf
    bad = (
        not math.isfinite(v)
        or (lo is not None and (v < lo or (lo_open and v == lo)))
        or (hi is not None and (v > hi or (hi_open and v == hi)))
    )
    if bad:
        rng = _range_text(lo, hi, lo_open, hi_open)
        shown = value.item() if isinstance(value, np.generic) else value  # 0.5, not np.float64(0.5)
        raise error(f"`{name}` must be finite{' and ' + rng if rng else ''}; got {shown!r}")
    return v


def has_keys(data: Any, keys: Iterable[str]) -> bool:
    """Whether ``data`` is a mapping with exactly the keys ``keys`` (state files).

    >>> has_keys({"a": 1, "b": 2}, ("a", "b")), has_keys({"a": 1}, ("a", "b"))
    (True, False)
    >>> has_keys([("a", 1)], ("a",))
    False
    """
    return isinstance(data, Mapping) and set(data) == set(keys)


def check_field(obj: Any, name: str, check: Callable[..., Any], **kwargs: Any) -> None:
    """Check field ``name`` of a frozen dataclass in place, from ``__post_init__``.

    Sets ``obj.name = check(name, obj.name, **kwargs)`` (through
    ``object.__setattr__``), so the stored value is the checked, converted one.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class C:
    ...     k: int
    ...     def __post_init__(self):
    ...         check_field(self, "k", check_int, lo=1)
    >>> C(np.int64(3)).k, type(C(np.int64(3)).k).__name__
    (3, 'int')
    >>> C(0)
    Traceback (most recent call last):
    ...
    flexassign.errors.InvalidProblemError: `k` must be >= 1; got 0
    """
    object.__setattr__(obj, name, check(name, getattr(obj, name), **kwargs))


def check_optional_real(name: str, value: Any, **kwargs: Any) -> float | None:
    """:func:`check_real`, with ``None`` passed through."""
    return None if value is None else check_real(name, value, **kwargs)


def check_seed(name: str, value: Any) -> int:
    """A seed in ``[0, 2**31 - 1]`` (what every backend accepts)."""
    return check_int(name, value, lo=0, hi=SEED_MAX)
