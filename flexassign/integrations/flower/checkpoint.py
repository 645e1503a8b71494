"""Crash-consistent checkpoints of the server side: planner state, global arrays, history.

A checkpoint directory holds::

    state.json               {"format": 1, "server_round": r, "planner": ..., "arrays": ...,
                              "history": [...]}
    planner-<r>.json         written by ``Planner.save``
    arrays-<r>.npz           the global arrays (shared + every expert; no router)

``state.json`` is replaced atomically *after* the files it names are complete, so a
crash mid-write leaves the previous checkpoint intact; files of older rounds are then
removed. Only numpy and the planner's own ``save``/``load`` are used (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._files import jsonable, write_npz_atomic, write_text_atomic

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint"]

_FORMAT = 1
_STATE = "state.json"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes
    ----------
    server_round : int
        Last completed round.
    planner : Planner
    arrays : dict of str to ndarray
    history : list of dict
        :meth:`FlowerRoundRecord.to_json` of every completed round.
    """

    server_round: int
    planner: Any
    arrays: dict[str, np.ndarray]
    history: list[dict[str, Any]]


def save_checkpoint(
    directory: str | Path,
    *,
    planner: Any,
    arrays: Mapping[str, np.ndarray],
    server_round: int,
    history: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write a checkpoint for ``server_round`` into ``directory`` (created if needed).

    Parameters
    ----------
    directory : str or Path
    planner : Planner
        Saved with ``planner.save(path)``.
    arrays : mapping of str to ndarray
        Global model arrays.
    server_round : int
        The round just completed.
    history : sequence of dict
        JSON-serializable per-round records.

    Returns
    -------
    Path
        The ``state.json`` written.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    r = int(server_round)
    planner_file = f"planner-{r}.json"
    arrays_file = f"arrays-{r}.npz"
    planner.save(d / planner_file)
    write_npz_atomic(d / arrays_file, arrays, name="directory")
    state = {
        "format": _FORMAT,
        "server_round": r,
        "planner": planner_file,
        "arrays": arrays_file,
        "keys": list(arrays),
        "history": list(history),
    }
    path = d / _STATE
    write_text_atomic(path, json.dumps(jsonable(state), indent=1, allow_nan=False),
                      name="directory")
    for old in list(d.glob("planner-*.json")) + list(d.glob("arrays-*.npz")):
        if old.name not in (planner_file, arrays_file):
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(
    directory: str | Path,
    *,
    planner_factory: Callable[[Path], Any] | None = None,
    planner_type: type | None = None,
) -> Checkpoint | None:
    """Read the checkpoint in ``directory``; ``None`` when it holds none.

    Parameters
    ----------
    directory : str or Path
    planner_factory : callable, optional
        ``path -> Planner``; defaults to ``planner_type.load`` or
        :meth:`flexassign.alignment.Planner.load`.
    planner_type : type, optional
        Class whose ``load`` restores the planner when no factory is given.

    Raises
    ------
    ValueError
        If ``state.json`` exists but is not a checkpoint this version can read.
    """
    d = Path(directory)
    path = d / _STATE
    if not path.exists():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("format") != _FORMAT:
        raise ValueError(f"{path} has checkpoint format {state.get('format')!r}; expected 1")
    if planner_factory is None:
        if planner_type is None or not hasattr(planner_type, "load"):
            from flexassign.alignment import Planner

            planner_type = Planner
        planner_factory = planner_type.load  # type: ignore[attr-defined]
    planner = planner_factory(d / state["planner"])
    with np.load(d / state["arrays"], allow_pickle=False) as f:
        arrays = {k: np.array(f[k]) for k in state["keys"]}
    return Checkpoint(
        server_round=int(state["server_round"]),
        planner=planner,
        arrays=arrays,
        history=list(state.get("history", [])),
    )
