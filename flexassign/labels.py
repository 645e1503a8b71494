"""Labels in, labels out: pandas input aligned by label, results exported by label.

When :func:`~flexassign.solve_assignment` receives a labelled pandas
``DataFrame`` of fitness (clients as the index, experts as the columns), or a
per-client / per-expert argument as a ``Series`` (``capacity``, ``min_experts``,
``client_weight``, ``client_budget``; ``expert_min_load``, ``expert_max_load``,
``expert_size``), or ``allowed`` / ``fixed`` as ``DataFrame`` objects, every labelled
input is aligned to the same client and expert order and the result keeps the
labels:

- :attr:`AssignmentResult.assignment <flexassign.AssignmentResult.assignment>`:
  ``{client label: (expert labels, ...)}``;
- :attr:`AssignmentResult.load_by_expert <flexassign.AssignmentResult.load_by_expert>`:
  ``{expert label: load}``;
- :meth:`AssignmentResult.to_frame() <flexassign.AssignmentResult.to_frame>`: a tidy
  table with one row per assigned pair (``client``, ``expert``, ``fitness``,
  ``load_share``).

Arrays in work exactly as before; the labels are then the positions ``0..N-1``
and ``0..E-1``. pandas is imported only by
:meth:`~flexassign.AssignmentResult.to_frame` and friends, and only inspected when
the caller has already imported it, so ``import flexassign`` never loads it (install
it with the ``labels`` extra: ``pip install -e ".[labels]" -c constraints.txt`` from a clone).

Examples
--------
>>> import pandas as pd
>>> from flexassign import solve_assignment
>>> fitness = pd.DataFrame([[0.9, 0.1], [0.8, 0.3], [0.2, 0.7]],
...                        index=["phone", "laptop", "server"], columns=["vision", "text"])
>>> res = solve_assignment(fitness, capacity=pd.Series({"server": 1, "phone": 1, "laptop": 1}),
...                        expert_max_load=2)
>>> res.assignment
{'phone': ('vision',), 'laptop': ('vision',), 'server': ('text',)}
>>> res.load_by_expert
{'vision': 2.0, 'text': 1.0}
>>> res.to_frame()
   client  expert  fitness  load_share
0   phone  vision      0.9         0.5
1  laptop  vision      0.8         0.5
2  server    text      0.7         1.0
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidProblemError, ProblemTypeError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

    from .alignment import Plan, Planner
    from .result import AssignmentResult

__all__ = ["Labels", "history_frame", "plan_frame", "result_frame"]

#: Problem arguments indexed by client, by expert, and by (client, expert).
CLIENT_ARGS = ("capacity", "min_experts", "client_weight", "client_budget")
EXPERT_ARGS = ("expert_min_load", "expert_max_load", "expert_size")
PAIR_ARGS = ("allowed", "fixed")

_PANDAS_HINT = 'this needs pandas: pip install -e ".[labels]" -c constraints.txt'


@dataclass(frozen=True)
class Labels:
    """Client and expert labels of a problem, in row and column order.

    Parameters
    ----------
    clients : iterable of hashable
        One unique label per client (row of the fitness matrix).
    experts : iterable of hashable
        One unique label per expert (column).

    Examples
    --------
    >>> Labels(clients=["a", "b"], experts=[10, 20]).experts
    (10, 20)
    >>> Labels(clients=["a", "a"], experts=[0])
    Traceback (most recent call last):
    ...
    flexassign.errors.InvalidProblemError: `clients` labels must be unique; 'a' appears twice
    """

    clients: tuple[Hashable, ...]
    experts: tuple[Hashable, ...]

    def __init__(self, clients: Iterable[Hashable], experts: Iterable[Hashable]) -> None:
        object.__setattr__(self, "clients", _unique("clients", clients))
        object.__setattr__(self, "experts", _unique("experts", experts))

    @classmethod
    def positions(cls, shape: tuple[int, int]) -> Labels:
        """Integer labels ``0..N-1`` and ``0..E-1`` for an unlabelled problem."""
        return cls(range(shape[0]), range(shape[1]))

    def check_shape(self, shape: tuple[int, int]) -> None:
        """Raise unless there is one client label per row and one expert label per column."""
        n, e = shape
        if len(self.clients) != n:
            raise InvalidProblemError(
                f"`clients` has {len(self.clients)} labels but the problem has {n} clients"
            )
        if len(self.experts) != e:
            raise InvalidProblemError(
                f"`experts` has {len(self.experts)} labels but the problem has {e} experts"
            )


def _unique(name: str, values: Iterable[Hashable]) -> tuple[Hashable, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ProblemTypeError(
            f"`{name}` must be an iterable of labels; got {type(values).__name__}"
        )
    out = tuple(_plain(v) for v in values)
    seen: set[Hashable] = set()
    for v in out:
        try:
            hash(v)
        except TypeError:
            raise ProblemTypeError(
                f"`{name}` labels must be hashable; got {type(v).__name__}"
            ) from None
        if _key(v) in seen:
            raise InvalidProblemError(f"`{name}` labels must be unique; {v!r} appears twice")
        seen.add(_key(v))
    return out


class _Missing:
    """The one key of every missing label (NaN, NaT, ``pd.NA``): they never compare
    equal to themselves, so uniqueness and alignment compare this instead."""

    def __repr__(self) -> str:
        return "<missing label>"


_MISSING = _Missing()


def _key(value: Any) -> Any:
    """``value`` as a key for uniqueness and alignment (every missing label is one key)."""
    try:
        if value != value:
            return _MISSING
    except (TypeError, ValueError):  # pd.NA: its comparison has no truth value
        return _MISSING
    return value


def _numeric(value: Any) -> np.ndarray:
    """A Series' or DataFrame's values as a plain numpy array.

    pandas' nullable dtypes (``Float64``, ``Int64``, ``boolean``) become float64, int64
    and bool when nothing is missing (``to_numpy()`` alone gives an object array);
    with missing values the object array is kept (the problem's check rejects it).
    """
    pd = _pandas()
    dtypes = list(value.dtypes) if hasattr(value, "columns") else [value.dtype]
    if pd is None or not any(isinstance(d, pd.api.extensions.ExtensionDtype) for d in dtypes):
        return np.asarray(value.to_numpy())
    if bool(np.asarray(value.isna()).any()):
        return np.asarray(value.to_numpy())
    types = pd.api.types
    if all(types.is_bool_dtype(d) for d in dtypes):
        return np.asarray(value.to_numpy(dtype=bool))
    if all(types.is_integer_dtype(d) for d in dtypes):
        return np.asarray(value.to_numpy(dtype=np.int64))
    if all(types.is_numeric_dtype(d) or types.is_bool_dtype(d) for d in dtypes):
        return np.asarray(value.to_numpy(dtype=np.float64))
    return np.asarray(value.to_numpy())


def _plain(value: Any) -> Any:
    """numpy scalars as Python scalars, so labels print and serialize plainly."""
    return value.item() if isinstance(value, np.generic) else value


# ----------------------------------------------------------------------- labels in
def _pandas() -> Any:
    """The pandas module if the caller has imported it, else ``None`` (never imports it)."""
    return sys.modules.get("pandas")


def split_labels(fitness: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any], Labels | None]:
    """Strip pandas labels from problem input, aligning every labelled argument.

    Client labels come from ``fitness.index`` (a ``DataFrame``), else from the first
    per-client ``Series``; expert labels from ``fitness.columns``, else from the first
    per-expert ``Series``. Every other labelled argument is reordered to those labels;
    a label missing from it, or one it has that the problem lacks, is an error naming
    the argument. Returns plain arrays, the remaining arguments, and the labels
    (``None`` when nothing was labelled, so array input is untouched).
    """
    pd = _pandas()
    if pd is None:
        return fitness, kwargs, None
    frame, series = pd.DataFrame, pd.Series
    if isinstance(fitness, series):
        raise ProblemTypeError("`fitness` must be 2-D (a DataFrame or an array); got a Series")
    labelled = isinstance(fitness, frame) or any(
        isinstance(v, series | frame) for v in kwargs.values()
    )
    if not labelled:
        return fitness, kwargs, None

    clients: list[Hashable] | None = None
    experts: list[Hashable] | None = None
    if isinstance(fitness, frame):
        clients, experts = list(fitness.index), list(fitness.columns)
    for name in CLIENT_ARGS:
        if clients is None and isinstance(kwargs.get(name), series):
            clients = list(kwargs[name].index)
    for name in EXPERT_ARGS:
        if experts is None and isinstance(kwargs.get(name), series):
            experts = list(kwargs[name].index)
    for name in PAIR_ARGS:
        value = kwargs.get(name)
        if isinstance(value, frame):
            clients = list(value.index) if clients is None else clients
            experts = list(value.columns) if experts is None else experts

    arr = np.asarray(fitness)
    shape = arr.shape if arr.ndim == 2 else (-1, -1)
    if clients is None:
        clients = list(range(shape[0]))
    if experts is None:
        experts = list(range(shape[1]))
    labels = Labels(clients, experts)
    if isinstance(fitness, frame):
        fitness = _numeric(fitness)

    out = dict(kwargs)
    for name in CLIENT_ARGS + EXPERT_ARGS:
        value = out.get(name)
        if isinstance(value, frame):
            raise ProblemTypeError(f"`{name}` must be a scalar, a Series or 1-D; got a DataFrame")
        if isinstance(value, series):
            axis = labels.clients if name in CLIENT_ARGS else labels.experts
            what = "client" if name in CLIENT_ARGS else "expert"
            out[name] = _numeric(value)[_order(name, value.index, axis, what)]
    for name in PAIR_ARGS:
        value = out.get(name)
        if isinstance(value, series):
            raise ProblemTypeError(f"`{name}` must be 2-D (a DataFrame or an array); got a Series")
        if isinstance(value, frame):
            rows = _order(name, value.index, labels.clients, "client")
            cols = _order(name, value.columns, labels.experts, "expert")
            out[name] = _numeric(value)[np.ix_(rows, cols)]
    return fitness, out, labels


def _order(name: str, index: Any, axis: tuple[Hashable, ...], what: str) -> list[int]:
    """Positions in ``index`` of each label of ``axis``, or an error naming ``name``."""
    labels = [_plain(v) for v in index]
    keys = [_key(v) for v in labels]
    if len(set(keys)) != len(keys):
        raise InvalidProblemError(f"`{name}` has repeated {what} labels")
    known = {_key(a) for a in axis}
    have = set(keys)
    missing = [a for a in axis if _key(a) not in have]
    if missing:
        raise InvalidProblemError(
            f"`{name}` has no value for {what} {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = [v for v in labels if _key(v) not in known]
    if extra:
        raise InvalidProblemError(
            f"`{name}` labels {what} {extra[0]!r}, which is not in the problem"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    where = {k: i for i, k in enumerate(keys)}
    return [where[_key(a)] for a in axis]


def attach(result: AssignmentResult, labels: Labels | None) -> AssignmentResult:
    """``result`` carrying ``labels`` (unchanged when ``labels`` is None)."""
    if labels is None:
        return result
    if result.x is not None:
        labels.check_shape(result.x.shape)
    return replace(result, labels=labels)


# ---------------------------------------------------------------------- labels out
def result_labels(result: AssignmentResult) -> Labels:
    """The result's labels, or positions when it has none."""
    if result.labels is not None:
        return result.labels
    if result.x is not None:
        return Labels.positions(result.x.shape)
    if result.loads is not None:
        return Labels((), range(len(result.loads)))
    return Labels((), ())


def assignment(result: AssignmentResult) -> dict[Hashable, tuple[Hashable, ...]] | None:
    """``{client label: (expert labels, ...)}`` in row order; None without an assignment."""
    if result.x is None:
        return None
    lab = result_labels(result)
    return {
        c: tuple(lab.experts[int(j)] for j in np.flatnonzero(row))
        for c, row in zip(lab.clients, result.x, strict=True)
    }


def load_by_expert(result: AssignmentResult) -> dict[Hashable, float] | None:
    """``{expert label: load}``; None without loads."""
    if result.loads is None:
        return None
    lab = result_labels(result)
    return {e: float(v) for e, v in zip(lab.experts, result.loads, strict=True)}


def _require_pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is in the test environment
        raise ImportError(_PANDAS_HINT) from None
    return pd


def result_frame(result: AssignmentResult) -> pd.DataFrame:
    """One row per assigned pair: ``client``, ``expert``, ``fitness``, ``load_share``.

    ``load_share`` is the pair's fraction of the expert's load,
    :math:`w_c / \\sum_{c'} w_{c'} x_{c'e}`; it sums to 1 over each used expert.
    Rows are in client order, then expert order. Empty (with those columns) when the
    result has no assignment.
    """
    pd = _require_pandas()
    columns = ["client", "expert", "fitness", "load_share"]
    if result.x is None:
        return pd.DataFrame(columns=columns)
    if result.problem is None:
        raise InvalidProblemError(
            "`result` carries no problem (it was not made by solve_assignment or "
            "evaluate_assignment), so its fitness is unknown"
        )
    lab = result_labels(result)
    rows, cols = np.nonzero(result.x)
    weights = result.problem.weights
    loads = (weights[:, None] * result.x).sum(axis=0)
    return pd.DataFrame(
        {
            "client": [lab.clients[i] for i in rows],
            "expert": [lab.experts[j] for j in cols],
            "fitness": result.problem.fitness[rows, cols],
            "load_share": weights[rows] / loads[cols],
        },
        columns=columns,
    )


def plan_frame(plan: Plan) -> pd.DataFrame:
    """A planner round as a tidy table: ``round``, then :func:`result_frame`'s columns.

    Clients are labelled by their ids; experts by their index. ``fitness`` is the
    score the round's problem used (the planner's estimate, not a measurement).
    """
    pd = _require_pandas()
    res = plan.result
    if res.x is None or res.problem is None or res.x.shape[0] == 0:
        frame = pd.DataFrame(columns=["client", "expert", "fitness", "load_share"])
    else:
        labelled = replace(res, labels=Labels(plan.client_ids, range(res.x.shape[1])))
        frame = result_frame(labelled)
    frame.insert(0, "round", plan.round)
    return frame


def history_frame(planner: Planner, kind: str = "clients") -> pd.DataFrame:
    """The planner's per-round expert loads as a tidy table: ``round``, ``expert``, ``load``.

    ``kind`` is ``"clients"`` (client-trainings per expert) or ``"samples"`` (routed
    samples), as in :meth:`Planner.loads <flexassign.alignment.Planner.loads>`. Closed
    rounds only.
    """
    pd = _require_pandas()
    history = planner.usage.history(kind)
    rounds, experts = np.indices(history.shape)
    return pd.DataFrame(
        {
            "round": rounds.reshape(-1),
            "expert": experts.reshape(-1),
            "load": history.reshape(-1).astype(float),
        }
    )
