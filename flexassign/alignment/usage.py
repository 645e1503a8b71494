r"""Expert usage monitoring: per-round loads, usage score, deficit, utilization stats.

Two loads are recorded per expert and round, both from *reports* (a client that
drops out trained nothing): the number of clients that trained the expert
(client-trainings, :math:`\ell_e(t)`) and the samples routed to it (:math:`\nu_e(t)`).

* **Cumulative load** :math:`C_e(t) = \sum_{\tau \le t} \ell_e(\tau)`.
* **Usage score** (the companion paper's "expert usage score"), an exponentially
  weighted share of the training load, scaled so that 1 is the fair share:
  :math:`u_e \leftarrow (1-\gamma) u_e + \gamma\, E\, \ell_e(t) / \sum_j \ell_j(t)`
  (rounds with no load leave it unchanged; :math:`u_e = 1` initially).
* **Deficit** against the fair share, in client-trainings:
  :math:`d_e = \bar C - C_e` with :math:`\bar C = \frac1E \sum_j C_j`; positive means
  the expert is behind. It sums to zero.
* **Utilization statistics** of a load vector :math:`y` over any window of rounds:
  variance, coefficient of variation :math:`\sigma(y)/\bar y` (population standard
  deviation), min/max ratio, and the number of experts with zero load.

:func:`deficit_targets` turns the deficit into per-round target loads for the
planner's balance bounds (water-filling).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._files import jsonable
from .._validation import check_real, has_keys, is_int, is_real
from ..errors import InvalidProblemError
from ..metrics import coefficient_of_variation

__all__ = [
    "UsageMonitor",
    "UtilizationStats",
    "deficit_targets",
    "utilization_stats",
    "windowed_stats",
]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class UtilizationStats:
    """Utilization statistics of one per-expert load vector.

    Attributes
    ----------
    loads : tuple of float
        The load per expert over the window.
    mean, variance, cv : float
        Mean, population variance and coefficient of variation (std / mean; NaN when
        the mean is 0).
    min_max_ratio : float
        ``min / max`` (1 is perfect balance; NaN when every load is 0).
    never_trained : int
        Experts with zero load in the window.
    rounds : int
        Rounds in the window.
    """

    loads: tuple[float, ...]
    mean: float
    variance: float
    cv: float
    min_max_ratio: float
    never_trained: int
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable view (NaN written as ``None``)."""
        out: dict[str, Any] = jsonable(dataclasses.asdict(self))
        return out


def utilization_stats(loads: ArrayLike, rounds: int = 1) -> UtilizationStats:
    """Statistics of a per-expert load vector.

    Examples
    --------
    >>> s = utilization_stats([3, 1, 2, 2])
    >>> round(s.cv, 4), s.min_max_ratio, s.never_trained
    (0.3536, 0.3333333333333333, 0)
    """
    y = np.asarray(loads, dtype=np.float64)
    mean = float(y.mean()) if y.size else 0.0
    var = float(y.var()) if y.size else 0.0
    cv = coefficient_of_variation(y)
    hi = float(y.max()) if y.size else 0.0
    ratio = float(y.min()) / hi if hi > 0 else math.nan
    return UtilizationStats(
        loads=tuple(float(v) for v in y),
        mean=mean,
        variance=var,
        cv=cv,
        min_max_ratio=ratio,
        never_trained=int((y == 0).sum()),
        rounds=int(rounds),
    )


def deficit_targets(
    cumulative: ArrayLike,
    total: float,
    upper: ArrayLike,
    shift: float = 1.0,
    lower: ArrayLike | None = None,
) -> FloatArray:
    r"""Target loads for the next round, shifted toward experts in deficit.

    The fully corrective target fills experts up to a common level (water-filling):
    :math:`t^*_e = \mathrm{clip}(\lambda - C_e, m_e, h_e)` with :math:`\lambda` chosen so
    that :math:`\sum_e t^*_e = K`, the round's total load. The returned target blends
    it with the uniform split :math:`\bar t_e = \mathrm{clip}(\lambda', m_e, h_e)`
    (water-filled the same way without history):
    :math:`t_e = (1-\eta)\bar t_e + \eta\, t^*_e`, so :math:`\sum_e t_e = K` whenever
    :math:`\sum_e m_e \le K \le \sum_e h_e`.

    Parameters
    ----------
    cumulative : array_like, shape (E,)
        :math:`C_e`, cumulative load so far.
    total : float
        :math:`K \ge 0`, the load to distribute this round.
    upper : array_like, shape (E,)
        :math:`h_e \ge 0`, the most load an expert can take this round.
    shift : float
        :math:`\eta \in [0, 1]`; 0 ignores history, 1 corrects it as fast as possible.
    lower : array_like, shape (E,), optional
        :math:`m_e \le h_e`, load the expert gets in any case (e.g. clients that must
        take every expert); default 0.

    Examples
    --------
    >>> deficit_targets([4, 0, 0, 0], 6, [10, 10, 10, 10]).round(9).tolist()
    [0.0, 2.0, 2.0, 2.0]
    >>> deficit_targets([4, 0, 0, 0], 6, [10, 10, 10, 10], shift=0.5).round(9).tolist()
    [0.75, 1.75, 1.75, 1.75]
    >>> deficit_targets([4, 0, 0, 0], 6, [10, 10, 10, 10], lower=[1, 1, 1, 1]).round(9).tolist()
    [1.0, 1.666666667, 1.666666667, 1.666666667]
    """
    c = np.asarray(cumulative, dtype=np.float64)
    h = np.asarray(upper, dtype=np.float64)
    m = np.zeros_like(h) if lower is None else np.minimum(np.asarray(lower, np.float64), h)
    k = min(max(float(total), float(m.sum())), float(h.sum()))

    def fill(base: FloatArray) -> FloatArray:
        if k <= m.sum():
            return m.copy()
        # f(level) = sum(clip(level + base, m, h)) is piecewise linear and nondecreasing
        # with breakpoints where an expert reaches m or h: find the piece where it
        # crosses k and interpolate (exact, no iteration)
        bps = np.unique(np.concatenate([m - base, h - base]))
        vals = np.clip(bps[:, None] + base[None, :], m, h).sum(axis=1)
        i = int(np.searchsorted(vals, k))
        if i >= bps.size:
            level = float(bps[-1])
        else:
            f0, f1 = float(vals[i - 1]), float(vals[i])
            level = float(bps[i - 1]) + (k - f0) * float(bps[i] - bps[i - 1]) / (f1 - f0)
        return np.clip(level + base, m, h)

    uniform = fill(np.zeros_like(c))
    if shift == 0:
        return uniform
    return (1.0 - shift) * uniform + shift * fill(-c)


class UsageMonitor:
    """Per-expert training load, round by round.

    Parameters
    ----------
    num_experts : int
    decay : float
        :math:`\\gamma \\in (0, 1]`, the EMA step of the usage score (default 0.3).

    Examples
    --------
    >>> m = UsageMonitor(2, decay=0.5)
    >>> m.record_round([2, 0], [100, 0])
    >>> m.cumulative().tolist(), m.usage_score().tolist(), m.deficit().tolist()
    ([2.0, 0.0], [1.5, 0.5], [-1.0, 1.0])
    """

    def __init__(self, num_experts: int, decay: float = 0.3) -> None:
        self.num_experts = int(num_experts)
        self.decay = check_real("decay", decay, lo=0.0, hi=1.0, lo_open=True)
        self._clients: list[FloatArray] = []
        self._samples: list[FloatArray] = []
        self._score = np.ones(self.num_experts)
        # running totals (loads are integer counts, so these sums are exact)
        self._total = {"clients": np.zeros(self.num_experts), "samples": np.zeros(self.num_experts)}

    @property
    def rounds(self) -> int:
        """Rounds recorded so far."""
        return len(self._clients)

    def record_round(self, client_loads: ArrayLike, sample_loads: ArrayLike) -> None:
        """Close a round: append its loads and update the usage score."""
        cl = np.asarray(client_loads, dtype=np.float64).reshape(self.num_experts)
        sl = np.asarray(sample_loads, dtype=np.float64).reshape(self.num_experts)
        self._clients.append(cl.copy())
        self._samples.append(sl.copy())
        self._total["clients"] = self._total["clients"] + cl
        self._total["samples"] = self._total["samples"] + sl
        tot = cl.sum()
        if tot > 0:
            share = self.num_experts * cl / tot
            self._score = (1.0 - self.decay) * self._score + self.decay * share

    def history(self, kind: str = "clients") -> FloatArray:
        """Per-round loads, shape (rounds, E); ``kind`` is ``"clients"`` or ``"samples"``."""
        rows = self._rows(kind)
        return np.array(rows).reshape(len(rows), self.num_experts)

    def cumulative(self, kind: str = "clients") -> FloatArray:
        """:math:`C_e`, total load over all rounds."""
        self._rows(kind)  # checks `kind`
        return self._total[kind].copy()

    def usage_score(self) -> FloatArray:
        """:math:`u_e`, the exponentially weighted load share (1 = fair share)."""
        return self._score.copy()

    def deficit(self, kind: str = "clients") -> FloatArray:
        r""":math:`d_e = \bar C - C_e` (positive: behind its fair share)."""
        c = self.cumulative(kind)
        return c.mean() - c

    def stats(self, window: int | None = None, kind: str = "clients") -> UtilizationStats:
        """Utilization statistics of the load summed over the last ``window`` rounds.

        ``window=None`` uses every round (cumulative).
        """
        return windowed_stats(self.history(kind), window)

    def _rows(self, kind: str) -> list[FloatArray]:
        if kind == "clients":
            return self._clients
        if kind == "samples":
            return self._samples
        raise InvalidProblemError(f"`kind` must be 'clients' or 'samples'; got {kind!r}")

    # ----------------------------------------------------------------- state
    def to_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "client_loads": [r.tolist() for r in self._clients],
            "sample_loads": [r.tolist() for r in self._samples],
            "usage_score": self._score.tolist(),
        }

    @classmethod
    def from_dict(cls, num_experts: int, data: Any) -> UsageMonitor:
        """Rebuild from :meth:`to_dict`, checking every entry (errors name the field).

        Loads must be non-negative integers, one per expert and round, as many
        client rows as sample rows; the usage score non-negative with mean 1.
        """
        where = "usage"
        if not has_keys(data, ("decay", "client_loads", "sample_loads", "usage_score")):
            raise InvalidProblemError(
                "`usage` state must be an object with keys decay, client_loads, sample_loads, "
                "usage_score"
            )
        e = num_experts
        m = cls(
            e,
            decay=check_real(
                f"{where}.decay",
                data["decay"],
                lo=0.0,
                hi=1.0,
                lo_open=True,
                type_error=InvalidProblemError,
            ),
        )
        rows = {}
        for key in ("client_loads", "sample_loads"):
            raw = data[key]
            if not isinstance(raw, list) or not all(_load_row(r, e) for r in raw):
                raise InvalidProblemError(
                    f"`usage` state: `{where}.{key}` must be a list of rows of {e} "
                    "non-negative integers"
                )
            rows[key] = [np.asarray(r, dtype=np.float64) for r in raw]
        if len(rows["client_loads"]) != len(rows["sample_loads"]):
            raise InvalidProblemError(
                f"`usage` state has {len(rows['client_loads'])} rounds of client loads but "
                f"{len(rows['sample_loads'])} of sample loads"
            )
        score = data["usage_score"]
        if not _load_row(score, e, integer=False) or not math.isclose(sum(score), e, rel_tol=1e-9):
            raise InvalidProblemError(
                f"`usage` state: `{where}.usage_score` must hold {e} non-negative numbers "
                "with mean 1"
            )
        m._clients, m._samples = rows["client_loads"], rows["sample_loads"]
        m._score = np.asarray(score, dtype=np.float64)
        m._total = {
            "clients": m.history("clients").sum(axis=0),
            "samples": m.history("samples").sum(axis=0),
        }
        return m


#: Largest load a state file may hold (integers stay exact in float64 up to here).
_MAX_COUNT = 2.0**53


def _load_row(row: Any, size: int, *, integer: bool = True) -> bool:
    return (
        isinstance(row, list)
        and len(row) == size
        and all(is_real(v) and 0 <= v <= _MAX_COUNT and (not integer or v == round(v)) for v in row)
    )


def windowed_stats(history: FloatArray, window: int | None) -> UtilizationStats:
    """Utilization statistics of the last ``window`` rounds of a load history.

    ``history`` is (rounds, E); the rows of the window are summed per expert.
    ``window=None`` uses every round (cumulative).
    """
    if window is not None:
        if not is_int(window) or window < 1:
            raise InvalidProblemError(
                f"`window` must be a positive integer or None; got {window!r}"
            )
        history = history[-int(window) :]
    return utilization_stats(history.sum(axis=0), rounds=history.shape[0])
