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

from ..errors import InvalidFeedbackError, InvalidProblemError, ProblemTypeError
from .feedback import Feedback

__all__ = [
    "FitnessConfig",
    "FitnessTracker",
    "accuracy_signal",
    "ema_update",
    "exploration_bonus",
    "loss_signal",
]

FloatArray = NDArray[np.float64]

SIGNALS = ("accuracy", "loss")
PRIORS = ("population", "constant")


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


def _real(
    name: str, value: Any, *, lo: float, hi: float | None = None, lo_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ProblemTypeError(f"`{name}` must be a number; got {type(value).__name__}")
    v = float(value)
    bad = not math.isfinite(v) or v < lo or (lo_open and v == lo) or (hi is not None and v > hi)
    if bad:
        rng = f"{'>' if lo_open else '>='} {lo:g}" + ("" if hi is None else f" and <= {hi:g}")
        raise InvalidProblemError(f"`{name}` must be finite and {rng}; got {value!r}")
    return v


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
    prior : {"population", "constant"}
        Prior of unobserved pairs (see the module docstring).
    prior_value : float
        :math:`q_0 \\in [0, 1]` (default 0.5, the middle of the signal range).
    prior_strength : float
        :math:`\\kappa > 0` pseudo-observations of :math:`q_0` in the population prior.
    exploration : float
        Bonus scale :math:`c_x \\ge 0` (default 0.3; 0 disables exploration).
    zero_count_signal : float or None
        Signal recorded for an assigned expert the client's router sent no samples to
        (default 0.0: "this client's data does not use it"); ``None`` skips the update.
    """

    beta: float = 0.3
    signal: str = "accuracy"
    alpha_loss: float = 1.0
    prior: str = "population"
    prior_value: float = 0.5
    prior_strength: float = 1.0
    exploration: float = 0.3
    zero_count_signal: float | None = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", _real("beta", self.beta, lo=0.0, hi=1.0, lo_open=True))
        if self.signal not in SIGNALS:
            raise InvalidProblemError(f"`signal` must be one of {SIGNALS}; got {self.signal!r}")
        object.__setattr__(
            self, "alpha_loss", _real("alpha_loss", self.alpha_loss, lo=0.0, lo_open=True)
        )
        if self.prior not in PRIORS:
            raise InvalidProblemError(f"`prior` must be one of {PRIORS}; got {self.prior!r}")
        object.__setattr__(
            self, "prior_value", _real("prior_value", self.prior_value, lo=0.0, hi=1.0)
        )
        object.__setattr__(
            self,
            "prior_strength",
            _real("prior_strength", self.prior_strength, lo=0.0, lo_open=True),
        )
        object.__setattr__(self, "exploration", _real("exploration", self.exploration, lo=0.0))
        if self.zero_count_signal is not None:
            object.__setattr__(
                self,
                "zero_count_signal",
                _real("zero_count_signal", self.zero_count_signal, lo=0.0, hi=1.0),
            )


class FitnessTracker:
    r"""Fitness :math:`Q` of every client ever seen over ``num_experts`` experts.

    Rows are keyed by client id (any hashable) and created on first use. Unobserved
    entries are not stored: :meth:`fitness` fills them with the prior.

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
        self._q: dict[Hashable, FloatArray] = {}
        self._n: dict[Hashable, NDArray[np.int64]] = {}
        self._reports: dict[Hashable, int] = {}

    # ----------------------------------------------------------------- queries
    def clients(self) -> list[Hashable]:
        """Client ids with any recorded report, in first-report order."""
        return list(self._q)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._q

    def prior(self) -> FloatArray:
        r"""The prior :math:`\pi_e` of an unobserved pair, shape (E,)."""
        cfg = self.config
        if cfg.prior == "constant" or not self._q:
            return np.full(self.num_experts, cfg.prior_value)
        q = np.array(list(self._q.values()))
        seen = np.array(list(self._n.values())) > 0
        total = cfg.prior_strength * cfg.prior_value + np.where(seen, q, 0.0).sum(axis=0)
        return total / (cfg.prior_strength + seen.sum(axis=0))

    def observations(self, client_ids: Iterable[Hashable]) -> NDArray[np.int64]:
        """:math:`n_{ce}`, the number of observations per pair, shape (len(ids), E)."""
        zero = np.zeros(self.num_experts, dtype=np.int64)
        return np.array([self._n.get(c, zero) for c in client_ids], dtype=np.int64).reshape(
            -1, self.num_experts
        )

    def reports(self, client_id: Hashable) -> int:
        """:math:`T_c`, the number of rounds the client reported."""
        return self._reports.get(client_id, 0)

    def fitness(self, client_ids: Iterable[Hashable]) -> FloatArray:
        r""":math:`\hat Q`, observed values with the prior where unobserved, shape (len, E)."""
        ids = list(client_ids)
        prior = self.prior()
        out = np.tile(prior, (len(ids), 1))
        for i, c in enumerate(ids):
            if c in self._q:
                seen = self._n[c] > 0
                out[i, seen] = self._q[c][seen]
        return out

    def bonus(self, client_ids: Iterable[Hashable]) -> FloatArray:
        r"""Exploration bonus :math:`b_{ce}`, shape (len(ids), E)."""
        ids = list(client_ids)
        n = self.observations(ids).astype(np.float64)
        t = np.array([self.reports(c) for c in ids], dtype=np.float64)
        scale = self.config.exploration
        return scale * np.sqrt(np.log1p(t)[:, None] / (1.0 + n))

    def optimistic(self, client_ids: Iterable[Hashable]) -> FloatArray:
        r""":math:`\hat Q + b`, the score planning uses."""
        ids = list(client_ids)
        return self.fitness(ids) + self.bonus(ids)

    # ----------------------------------------------------------------- updates
    def signal(self, feedback: Feedback) -> FloatArray:
        """Per reported expert, the signal :math:`s_{ce}` (NaN where no update is made).

        Raises
        ------
        InvalidFeedbackError
            When the configured signal's field (``accuracy`` or ``loss``) is missing.
        """
        cfg = self.config
        field = cfg.signal
        values = feedback.accuracy if field == "accuracy" else feedback.loss
        if not feedback.experts:
            return np.zeros(0)
        if values is None:
            raise InvalidFeedbackError(
                f"`{field}` is required: the planner's fitness signal is {field!r}"
            )
        v = np.asarray(values, dtype=np.float64)
        s = v if field == "accuracy" else np.exp(-cfg.alpha_loss * v)
        zero = np.asarray(feedback.counts) == 0
        fill = np.nan if cfg.zero_count_signal is None else cfg.zero_count_signal
        return np.where(zero, fill, s)

    def update(self, client_id: Hashable, feedback: Feedback) -> None:
        """Apply the EMA rule to the reported experts (validate ids before calling)."""
        s = self.signal(feedback)
        bad = [e for e in feedback.experts if e >= self.num_experts]
        if bad:
            raise InvalidFeedbackError(
                f"`experts` holds unknown expert id {bad[0]} (valid: 0..{self.num_experts - 1})"
            )
        prior = self.prior()
        q = self._q.get(client_id)
        n = self._n.get(client_id)
        q = np.zeros(self.num_experts) if q is None else q.copy()
        n = np.zeros(self.num_experts, dtype=np.int64) if n is None else n.copy()
        beta = self.config.beta
        for e, se in zip(feedback.experts, s, strict=True):
            if math.isnan(se):
                continue
            prev = q[e] if n[e] > 0 else prior[e]
            q[e] = (1.0 - beta) * prev + beta * se
            n[e] += 1
        self._q[client_id] = q
        self._n[client_id] = n
        self._reports[client_id] = self._reports.get(client_id, 0) + 1

    def forget(self, client_id: Hashable) -> None:
        """Drop everything known about a client (unknown ids are ignored)."""
        self._q.pop(client_id, None)
        self._n.pop(client_id, None)
        self._reports.pop(client_id, None)

    # ----------------------------------------------------------------- state
    def rows(self) -> list[tuple[Hashable, FloatArray, NDArray[np.int64], int]]:
        """``(client id, Q row, n row, T)`` for every client, for persistence."""
        return [(c, self._q[c], self._n[c], self._reports[c]) for c in self._q]

    def set_row(self, client_id: Hashable, q: Any, n: Any, reports: int) -> None:
        """Restore one client's row (used by :mod:`~flexassign.alignment.state`)."""
        qa = np.asarray(q, dtype=np.float64)
        na = np.asarray(n, dtype=np.int64)
        if qa.shape != (self.num_experts,) or na.shape != (self.num_experts,):
            raise InvalidProblemError(
                f"`fitness` row of client {client_id!r} must have {self.num_experts} entries"
            )
        self._q[client_id] = qa.copy()
        self._n[client_id] = na.copy()
        self._reports[client_id] = int(reports)
