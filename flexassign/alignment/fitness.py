r"""Client-expert fitness tracking with an exploration bonus.

FLEX-MoE's update (arXiv 2512.23070): after client :math:`c` trains expert :math:`e`
in round :math:`t` and reports a signal :math:`s_{ce}`,

.. math::

    Q_t(c, e) = (1 - \beta)\, Q_{t-1}(c, e) + \beta\, s_{ce},

and entries of experts the client did not train keep their value. The signal is
accuracy-driven, :math:`s = a_{ce}`, or loss-driven, :math:`s = \exp(-\alpha_L l_{ce})`;
both lie in :math:`[0, 1]`.

Our choices where the paper is silent (see ``docs/alignment.md``):

* **Prior.** A pair never observed has :math:`Q_0(c, e) = \pi_e`. With
  ``prior="population"`` (default) :math:`\pi_e` is the expert's mean fitness over
  the clients that tried it, shrunk toward ``prior_value`` :math:`q_0` with
  ``prior_strength`` :math:`\kappa` pseudo-observations,
  :math:`\pi_e = (\kappa q_0 + \sum_{c: n_{ce}>0} Q_{ce}) / (\kappa + |\{c: n_{ce}>0\}|)`;
  with ``prior="constant"`` it is :math:`q_0`. The prior is evaluated lazily, so it
  keeps learning until the pair's first observation, which is then the EMA above
  with :math:`Q_{t-1} = \pi_e`.
* **Shared low-rank prior** (``prior="lowrank"``). The per-expert mean ignores that
  clients with similar data like similar experts. With ``"lowrank"`` the prior of an
  unobserved pair is :math:`\pi_{ce} = \mathrm{clip}(\pi_e + u_c^\top v_e, 0, 1)`,
  where :math:`U V^\top` (rank :math:`r` = ``prior_rank``) fits the residuals
  :math:`Q_{ce} - \pi_e` on the observed pairs by a few steps of ridge-regularised
  alternating least squares (penalty :math:`\kappa` = ``prior_strength`` on
  :math:`\|u_c\|^2` and :math:`\|v_e\|^2`, started from the residual's truncated SVD).
  A client with one or two observations gets a row shaped like those of the clients
  whose observed entries resemble its own; a client never seen gets :math:`\pi_e`.
  The fit is refreshed lazily (once after any change, when fitness is next read);
  a pair's first observation still starts its EMA from :math:`\pi_e`.
* **Probe rows.** :meth:`FitnessTracker.update_probe` applies the same EMA to the
  experts of a :class:`~.feedback.ProbeFeedback` (signal from its loss or accuracy),
  so the dense, held-out probe and the training feedback share one :math:`Q`; with
  ``train_signal=False`` only probes update :math:`Q`.
* **Unknown is not zero.** An assigned expert that received no routed samples has no
  measurement; by default (``zero_count_signal=None``) it leaves :math:`Q` unchanged.
* **Exploration.** Planning uses the optimistic score
  :math:`\hat Q_{ce} + b_{ce}` with the UCB1-style bonus
  :math:`b_{ce} = c_x \sqrt{\ln(1 + T_c) / (1 + n_{ce})}`, where :math:`T_c` counts
  the client's reports and :math:`n_{ce}` its observations of :math:`e`. The bonus
  of a tried pair shrinks as :math:`n_{ce}` grows, while that of an untried pair
  grows without bound in :math:`T_c`, so even greedy top-k eventually tries every
  pair a client participates with.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validation import (
    check_field,
    check_int,
    check_optional_real,
    check_real,
    has_keys,
    is_int,
    is_real,
)
from ..errors import InvalidFeedbackError, InvalidProblemError, ProblemTypeError
from .feedback import Feedback, ProbeFeedback

__all__ = [
    "FitnessConfig",
    "FitnessTracker",
    "accuracy_signal",
    "ema_update",
    "exploration_bonus",
    "loss_signal",
    "lowrank_prior",
]

FloatArray = NDArray[np.float64]

SIGNALS = ("accuracy", "loss")
PRIORS = ("population", "constant", "lowrank")

#: ALS sweeps of the low-rank prior (each solves every client row, then every expert).
LOWRANK_SWEEPS = 4


def accuracy_signal(accuracy: float | FloatArray) -> float | FloatArray:
    """FLEX-MoE's accuracy-driven signal :math:`s = a`."""
    return accuracy


def loss_signal(loss: float | FloatArray, alpha: float) -> float | FloatArray:
    r"""FLEX-MoE's loss-driven signal :math:`s = \exp(-\alpha_L\, l)`, in :math:`(0, 1]`."""
    return np.exp(-alpha * np.asarray(loss, dtype=np.float64))


def ema_update(q: float | FloatArray, s: float | FloatArray, beta: float) -> float | FloatArray:
    r""":math:`Q \leftarrow (1-\beta) Q + \beta s`.

    Examples
    --------
    >>> ema_update(0.5, 1.0, 0.25)
    0.625
    """
    return (1.0 - beta) * q + beta * s


def exploration_bonus(
    n_obs: FloatArray | float, n_reports: float, scale: float
) -> FloatArray | float:
    r"""UCB1-style optimism :math:`c_x \sqrt{\ln(1 + T) / (1 + n)}`.

    Examples
    --------
    >>> round(float(exploration_bonus(0, math.e - 1, 0.5)), 6)
    0.5
    """
    return scale * np.sqrt(math.log1p(n_reports) / (1.0 + np.asarray(n_obs, dtype=np.float64)))


@dataclass(frozen=True)
class FitnessConfig:
    """Hyper-parameters of :class:`FitnessTracker` (validated on construction).

    Attributes
    ----------
    beta : float
        EMA step :math:`\\beta \\in (0, 1]` (default 0.3).
    signal : {"accuracy", "loss"}
        Which FLEX-MoE signal drives the update.
    alpha_loss : float
        :math:`\\alpha_L > 0` of the loss signal (default 1.0).
    prior : {"population", "constant", "lowrank"}
        Prior of unobserved pairs (see the module docstring).
    prior_value : float
        :math:`q_0 \\in [0, 1]` (default 0.5, the middle of the signal range).
    prior_strength : float
        :math:`\\kappa > 0` pseudo-observations of :math:`q_0` in the population prior
        (and the ridge penalty of the low-rank prior's factors).
    prior_rank : int
        Rank :math:`r \\ge 1` of the low-rank prior (default 3; used by ``"lowrank"``).
    exploration : float
        Bonus scale :math:`c_x \\ge 0` (default 0.3; 0 disables exploration).
    zero_count_signal : float or None
        Signal recorded for an assigned expert the client's router sent no samples to.
        Default ``None``: nothing was measured, the pair stays unknown (no update, no
        observation). A number (e.g. 0.0, the behaviour before version 3 of the state
        file) records it as an observation, which biases :math:`Q` toward "did my
        router use it".
    train_signal : bool
        Whether training feedback updates :math:`Q` (default ``True``). ``False``: only
        probe rows do (:meth:`FitnessTracker.update_probe`); reports still count.
    """

    beta: float = 0.3
    signal: str = "accuracy"
    alpha_loss: float = 1.0
    prior: str = "population"
    prior_value: float = 0.5
    prior_strength: float = 1.0
    exploration: float = 0.3
    zero_count_signal: float | None = None
    prior_rank: int = 3
    train_signal: bool = True

    def __post_init__(self) -> None:
        check_field(self, "beta", check_real, lo=0.0, hi=1.0, lo_open=True)
        if self.signal not in SIGNALS:
            raise InvalidProblemError(f"`signal` must be one of {SIGNALS}; got {self.signal!r}")
        check_field(self, "alpha_loss", check_real, lo=0.0, lo_open=True)
        if self.prior not in PRIORS:
            raise InvalidProblemError(f"`prior` must be one of {PRIORS}; got {self.prior!r}")
        check_field(self, "prior_value", check_real, lo=0.0, hi=1.0)
        check_field(self, "prior_strength", check_real, lo=0.0, lo_open=True)
        check_field(self, "exploration", check_real, lo=0.0)
        check_field(self, "zero_count_signal", check_optional_real, lo=0.0, hi=1.0)
        check_field(self, "prior_rank", check_int, lo=1, hi=64)
        if not isinstance(self.train_signal, bool | np.bool_):
            raise ProblemTypeError(
                f"`train_signal` must be a bool; got {type(self.train_signal).__name__}"
            )
        object.__setattr__(self, "train_signal", bool(self.train_signal))


class FitnessTracker:
    r"""Fitness :math:`Q` of every client ever seen over ``num_experts`` experts.

    Rows are keyed by client id (any hashable) and created on first report; they
    live in one matrix, in first-report order. Unobserved entries are stored as 0
    and read through the prior (:meth:`fitness`).

    Parameters
    ----------
    num_experts : int
    config : FitnessConfig, optional

    Examples
    --------
    >>> t = FitnessTracker(2, FitnessConfig(beta=0.5, prior="constant", prior_value=0.5))
    >>> t.update("a", Feedback(experts=[1], counts=[10], accuracy=[0.9]))
    >>> t.fitness(["a"]).round(3).tolist()
    [[0.5, 0.7]]
    """

    def __init__(self, num_experts: int, config: FitnessConfig | None = None) -> None:
        self.num_experts = int(num_experts)
        self.config = config or FitnessConfig()
        self._index: dict[Hashable, int] = {}
        # rows 0..m-1 hold the clients; row m (and beyond) stays zero: unknown clients
        self._q = np.zeros((8, self.num_experts))
        self._n = np.zeros((8, self.num_experts), dtype=np.int64)
        self._t = np.zeros(8, dtype=np.int64)
        self._version = 0  # bumped on every change; keys the low-rank prior's cache
        self._cache: tuple[int, FloatArray] | None = None

    # ----------------------------------------------------------------- queries
    def clients(self) -> list[Hashable]:
        """Client ids with any recorded report, in first-report order."""
        return list(self._index)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._index

    def _rows(self, client_ids: Iterable[Hashable]) -> NDArray[np.intp]:
        """Matrix rows of the clients (the zero row for unknown ones)."""
        get, unknown = self._index.get, len(self._index)
        ids = list(client_ids)
        return np.fromiter((get(c, unknown) for c in ids), dtype=np.intp, count=len(ids))

    def prior(self) -> FloatArray:
        r"""The prior :math:`\pi_e` of an unobserved pair, shape (E,)."""
        cfg = self.config
        m = len(self._index)
        if cfg.prior == "constant" or m == 0:
            return np.full(self.num_experts, cfg.prior_value)
        seen = self._n[:m] > 0
        total = cfg.prior_strength * cfg.prior_value + np.where(seen, self._q[:m], 0.0).sum(axis=0)
        return total / (cfg.prior_strength + seen.sum(axis=0))

    def _prior_matrix(self) -> FloatArray:
        """The prior of every stored row plus one unknown-client row, shape (m + 1, E)."""
        m = len(self._index)
        if self._cache is not None and self._cache[0] == self._version:
            return self._cache[1]
        pi = self.prior()
        if self.config.prior != "lowrank" or m == 0:
            out = np.broadcast_to(pi, (m + 1, self.num_experts))
        else:
            out = np.empty((m + 1, self.num_experts))
            out[:m] = lowrank_prior(
                self._q[:m], self._n[:m] > 0, pi,
                rank=self.config.prior_rank, reg=self.config.prior_strength,
            )
            out[m] = pi
        self._cache = (self._version, out)
        return out

    def prior_rows(self, client_ids: Iterable[Hashable]) -> FloatArray:
        r"""The prior :math:`\pi_{ce}` of each client's pairs, shape (len(ids), E).

        :meth:`prior` broadcast to every client, except with ``prior="lowrank"``,
        where known clients get their low-rank row (see the module docstring).
        """
        return np.array(self._prior_matrix()[self._rows(client_ids)])

    def observations(self, client_ids: Iterable[Hashable]) -> NDArray[np.int64]:
        """:math:`n_{ce}`, the number of observations per pair, shape (len(ids), E)."""
        return self._n[self._rows(client_ids)]

    def reports(self, client_id: Hashable) -> int:
        """:math:`T_c`, the number of rounds the client reported."""
        r = self._index.get(client_id)
        return 0 if r is None else int(self._t[r])

    def fitness(self, client_ids: Iterable[Hashable]) -> FloatArray:
        r""":math:`\hat Q`, observed values with the prior where unobserved, shape (len, E)."""
        rows = self._rows(client_ids)
        return np.where(self._n[rows] > 0, self._q[rows], self._prior_matrix()[rows])

    def bonus(self, client_ids: Iterable[Hashable]) -> FloatArray:
        r"""Exploration bonus :math:`b_{ce}`, shape (len(ids), E)."""
        rows = self._rows(client_ids)
        return self._bonus(rows)

    def _bonus(self, rows: NDArray[np.intp]) -> FloatArray:
        t = self._t[rows].astype(np.float64)
        n = self._n[rows].astype(np.float64)
        return self.config.exploration * np.sqrt(np.log1p(t)[:, None] / (1.0 + n))

    def optimistic(self, client_ids: Iterable[Hashable]) -> FloatArray:
        r""":math:`\hat Q + b`, the score planning uses."""
        rows = self._rows(client_ids)
        q = np.where(self._n[rows] > 0, self._q[rows], self._prior_matrix()[rows])
        return q + self._bonus(rows)

    # ----------------------------------------------------------------- updates
    def signal(self, feedback: Feedback) -> FloatArray:
        """Per reported expert, the signal :math:`s_{ce}` (NaN where no update is made).

        Raises
        ------
        InvalidFeedbackError
            When the configured signal's field (``accuracy`` or ``loss``) is missing.
        """
        return np.array(self.signal_values(feedback), dtype=np.float64)

    def signal_values(self, feedback: Feedback) -> list[float]:
        """:meth:`signal` as a list of floats (what :meth:`update` uses)."""
        cfg = self.config
        if not feedback.experts:
            return []
        if not cfg.train_signal:
            return [math.nan] * len(feedback.experts)
        values = feedback.accuracy if cfg.signal == "accuracy" else feedback.loss
        if values is None:
            raise InvalidFeedbackError(
                f"`{cfg.signal}` is required: the planner's fitness signal is {cfg.signal!r}"
            )
        fill = math.nan if cfg.zero_count_signal is None else cfg.zero_count_signal
        if cfg.signal == "accuracy":
            return [fill if n == 0 else v for v, n in zip(values, feedback.counts, strict=True)]
        a = cfg.alpha_loss
        return [
            fill if n == 0 else math.exp(-a * v)
            for v, n in zip(values, feedback.counts, strict=True)
        ]

    def update(
        self, client_id: Hashable, feedback: Feedback, signals: list[float] | None = None
    ) -> None:
        """Apply the EMA rule to the reported experts (validate ids before calling).

        ``signals`` are :meth:`signal_values` of ``feedback`` if already computed.
        """
        s = self.signal_values(feedback) if signals is None else signals
        e = self.num_experts
        bad = [j for j in feedback.experts if j >= e]
        if bad:
            raise InvalidFeedbackError(
                f"`experts` holds unknown expert id {bad[0]} (valid: 0..{e - 1})"
            )
        r = self._apply(client_id, feedback.experts, s)
        self._t[r] += 1

    def probe_signal_values(self, probe: ProbeFeedback) -> list[float]:
        """Per probed expert, the signal :math:`s_{ce}` of a probe row.

        The configured signal: :math:`\\exp(-\\alpha_L l^p_{ce})` (``"loss"``) or the
        probe's accuracy (``"accuracy"``; a probe row without accuracy then falls back
        to the loss signal, which ranks experts the same way).
        """
        cfg = self.config
        if cfg.signal == "accuracy" and probe.accuracy is not None:
            return list(probe.accuracy)
        a = cfg.alpha_loss
        return [math.exp(-a * v) for v in probe.loss]

    def update_probe(self, client_id: Hashable, probe: ProbeFeedback) -> None:
        """Apply the EMA rule to the probed experts (one observation each).

        A probe is not a report: :math:`T_c` is unchanged.

        Raises
        ------
        InvalidFeedbackError
            An expert id is not below ``num_experts`` (nothing is changed).
        """
        e = self.num_experts
        bad = [j for j in probe.experts if j >= e]
        if bad:
            raise InvalidFeedbackError(
                f"`experts` holds unknown expert id {bad[0]} (valid: 0..{e - 1})"
            )
        self._apply(client_id, probe.experts, self.probe_signal_values(probe))

    def _apply(self, client_id: Hashable, experts: tuple[int, ...], s: list[float]) -> int:
        """EMA step on ``experts`` with signals ``s`` (NaN: skipped); returns the row."""
        r = self._index.get(client_id)
        first = r is None or any(
            sj == sj and self._n[r, j] == 0 for j, sj in zip(experts, s, strict=True)
        )
        # the EMA of a first observation starts from the per-expert prior (also under
        # "lowrank": its fit is refreshed for planning, not once per report)
        prior = self.prior() if first else None
        if r is None:
            r = self._append(client_id)
        q_row, n_row = self._q[r], self._n[r]
        beta = self.config.beta
        for j, sj in zip(experts, s, strict=True):
            if sj != sj:  # NaN: no update
                continue
            prev = float(q_row[j]) if n_row[j] > 0 else float(prior[j])  # type: ignore[index]
            q_row[j] = (1.0 - beta) * prev + beta * sj
            n_row[j] += 1
        self._version += 1
        return r

    def _append(self, client_id: Hashable) -> int:
        m = len(self._index)
        if m + 1 >= self._q.shape[0]:  # keep a zero row after the last client
            grow = self._q.shape[0]
            self._q = np.vstack([self._q, np.zeros((grow, self.num_experts))])
            self._n = np.vstack([self._n, np.zeros((grow, self.num_experts), dtype=np.int64)])
            self._t = np.concatenate([self._t, np.zeros(grow, dtype=np.int64)])
        self._index[client_id] = m
        self._version += 1
        return m

    def forget(self, client_id: Hashable) -> None:
        """Drop everything known about a client (unknown ids are ignored)."""
        r = self._index.pop(client_id, None)
        if r is None:
            return
        m = len(self._index)  # rows r+1..m move up by one; row m becomes zero
        self._q[r:m] = self._q[r + 1 : m + 1]
        self._n[r:m] = self._n[r + 1 : m + 1]
        self._t[r:m] = self._t[r + 1 : m + 1]
        self._q[m], self._n[m], self._t[m] = 0.0, 0, 0
        for c, i in self._index.items():
            if i > r:
                self._index[c] = i - 1
        self._version += 1

    # ----------------------------------------------------------------- state
    def rows(self) -> list[tuple[Hashable, FloatArray, NDArray[np.int64], int]]:
        """``(client id, Q row, n row, T)`` for every client, in first-report order."""
        return [(c, self._q[r], self._n[r], int(self._t[r])) for c, r in self._index.items()]

    def set_row(self, client_id: Hashable, q: Any, n: Any, reports: int) -> None:
        """Restore one client's row, checking it (errors name ``state.clients[id]``).

        ``q`` must be finite, in [0, 1], and 0 where unobserved; ``n`` non-negative
        integers; ``reports`` a non-negative integer.
        """
        where = f"state.clients[{client_id!r}]"
        e = self.num_experts
        if not _numbers(q, e, integer=False):
            raise InvalidProblemError(f"`{where}.fitness` must hold {e} numbers; got {q!r}")
        if not _numbers(n, e, integer=True):
            raise InvalidProblemError(
                f"`{where}.observations` must hold {e} integers; got {n!r}"
            )
        qa = np.array(q, dtype=np.float64)
        if any(abs(v) > 2**53 for v in n):
            raise InvalidProblemError(f"`{where}.observations` must be in 0..2**53; got {n!r}")
        na = np.array(n, dtype=np.int64)
        if not (np.isfinite(qa).all() and (qa >= 0).all() and (qa <= 1).all()):
            raise InvalidProblemError(f"`{where}.fitness` must be finite and in [0, 1]; got {q!r}")
        if (na < 0).any() or (na > 2**53).any():
            raise InvalidProblemError(f"`{where}.observations` must be in 0..2**53; got {n!r}")
        if (qa[na == 0] != 0).any():
            raise InvalidProblemError(
                f"`{where}.fitness` must be 0 where `observations` is 0 (unobserved pairs)"
            )
        if not is_int(reports) or not 0 <= reports <= 2**53:
            raise InvalidProblemError(
                f"`{where}.reports` must be an integer in 0..2**53 (probe rows add "
                f"observations without reports); got {reports!r}"
            )
        r = self._index.get(client_id)
        if r is None:
            r = self._append(client_id)
        self._q[r], self._n[r], self._t[r] = qa, na, int(reports)
        self._version += 1

    def to_list(self, id_out: Any) -> list[dict[str, Any]]:
        """Rows as JSON objects (``id_out`` converts client ids)."""
        return [
            {"id": id_out(c), "fitness": q.tolist(), "observations": n.tolist(), "reports": t}
            for c, q, n, t in self.rows()
        ]

    def load_list(self, rows: Any, id_in: Any) -> None:
        """Restore rows written by :meth:`to_list` (``id_in`` converts and checks ids)."""
        if not isinstance(rows, list):
            raise InvalidProblemError("`state.clients` must be a list")
        for row in rows:
            if not has_keys(row, ("id", "fitness", "observations", "reports")):
                raise InvalidProblemError(
                    "`state.clients` entries must be objects with keys id, fitness, "
                    f"observations, reports; got {row!r}"
                )
            cid = id_in(row["id"])
            if cid in self._index:
                raise InvalidProblemError(f"`state.clients` lists client {cid!r} twice")
            self.set_row(cid, row["fitness"], row["observations"], row["reports"])


def lowrank_prior(
    q: FloatArray, seen: NDArray[np.bool_], base: FloatArray, *, rank: int, reg: float
) -> FloatArray:
    r"""Low-rank completion of a fitness matrix: :math:`\mathrm{clip}(\pi + U V^\top, 0, 1)`.

    Fits the residual :math:`R = Q - \pi` on the observed entries (``seen``) with
    :math:`\min_{U,V} \sum_{(c,e)\ \mathrm{seen}} (R_{ce} - u_c^\top v_e)^2
    + \kappa (\|U\|^2 + \|V\|^2)` by :data:`LOWRANK_SWEEPS` sweeps of alternating
    ridge regression, started from the truncated SVD of the zero-filled residual.
    Deterministic; a row or column with no observation gets a zero factor, i.e. the
    base value :math:`\pi_e`.

    Parameters
    ----------
    q : ndarray, shape (m, E)
        Observed values (anything where unobserved).
    seen : ndarray of bool, shape (m, E)
    base : ndarray, shape (E,)
        :math:`\pi_e`, the per-expert prior the residuals are taken against.
    rank : int
        :math:`r`; capped at ``min(m, E)``.
    reg : float
        :math:`\kappa > 0`.

    Examples
    --------
    >>> q = np.array([[0.9, 0.1], [0.9, 0.0], [0.8, 0.2]])
    >>> seen = np.array([[True, True], [True, True], [True, False]])
    >>> p = lowrank_prior(q, seen, np.array([0.5, 0.5]), rank=1, reg=0.1)
    >>> bool(p[2, 1] < 0.5)  # client 2 resembles clients 0 and 1, who dislike expert 1
    True
    """
    m, e = q.shape
    r = int(min(rank, m, e))
    mask = seen.astype(np.float64)
    res = np.where(seen, q - base[None, :], 0.0)
    _, sv, vt = np.linalg.svd(res, full_matrices=False)
    v = vt[:r].T * np.sqrt(sv[:r])[None, :]
    eye = reg * np.eye(r)
    u = np.zeros((m, r))
    for _ in range(LOWRANK_SWEEPS):
        a = np.einsum("ce,ei,ej->cij", mask, v, v) + eye
        u = np.linalg.solve(a, (res @ v)[:, :, None])[:, :, 0]
        a = np.einsum("ce,ci,cj->eij", mask, u, u) + eye
        v = np.linalg.solve(a, (res.T @ u)[:, :, None])[:, :, 0]
    out: FloatArray = np.clip(base[None, :] + u @ v.T, 0.0, 1.0)
    return out


def _numbers(value: Any, size: int, *, integer: bool) -> bool:
    ok = is_int if integer else is_real
    return isinstance(value, list | tuple | np.ndarray) and len(value) == size and all(
        ok(v) for v in value
    )
