"""Array helpers shared by the layout: numpy arrays and torch tensors alike (no torch import).

Duck-typed: a value with ``element_size``/``clone``/``new_tensor`` is treated as a torch
tensor, anything else as a numpy array.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["copy_array", "dtype_name", "like", "nbytes", "shape"]


def nbytes(arrays: Mapping[str, Any]) -> int:
    """Total bytes of the arrays (numpy arrays or torch tensors) in ``arrays``."""
    total = 0
    for v in arrays.values():
        if hasattr(v, "element_size"):  # a torch tensor
            total += int(v.element_size()) * int(v.numel())
        else:
            total += int(np.asarray(v).nbytes)
    return total


def shape(value: Any) -> tuple[int, ...]:
    """The shape of an array or tensor, as ints."""
    return tuple(int(s) for s in value.shape)


def dtype_name(value: Any) -> str:
    """``float32``, ``int64``, ... for a numpy array or a torch tensor."""
    dt = value.dtype
    if isinstance(dt, np.dtype):
        return dt.name
    return str(dt).removeprefix("torch.")


def copy_array(value: Any) -> Any:
    """A writable copy of an array or tensor, of the same type."""
    if hasattr(value, "clone"):
        return value.detach().clone()
    return np.array(value, copy=True)


def like(base: Any, value: Any) -> Any:
    """``value`` as the same kind of array as ``base`` (a copy)."""
    if hasattr(base, "new_tensor"):
        return value.detach().clone() if hasattr(value, "clone") else base.new_tensor(
            np.asarray(value))
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.array(value, copy=True)
