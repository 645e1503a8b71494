r"""One objective normalisation for every MIP and LP backend (highs, scipy, pyomo, lp-round, cpsat).

MIP and LP solvers judge optimality by tolerances relative to the objective they see
(a relative gap of about 1e-9, feasibility and optimality tolerances of about 1e-7 on
coefficients near 1). A large offset in the fitness (``1e8 + U(0, 1)``) swamps the
differences that decide the optimum, and a tiny scale (``1e-9``) falls below absolute
tolerances. Every MIP and LP backend therefore hands its solver an equivalent objective
built from *what can vary*:

* **never-choosable pairs** (a client with no free capacity left, a client heavier
  than an expert's hard maximum load, an expert larger than a client's memory budget)
  are fixed to 0 in the model (:func:`fix_unchoosable`) and cost 0: they can never
  set the scale;
* **fixed pairs** contribute a constant (their cost becomes 0);
* a client whose number of free experts is **forced** (``min_experts`` equal to its
  effective capacity) contributes :math:`\alpha_c t_c` whatever it picks
  (:math:`\alpha_c` the midpoint of its choosable fitness, :math:`t_c` its free count):
  its costs drop by :math:`\alpha_c`, and the constant goes to ``offset``;
* the **other clients** share one offset :math:`A` (the midpoint of their
  midpoints). When :math:`|A|` exceeds everything the rest of the objective can vary
  by (:func:`rest_range`, penalties included), the optimum maximises
  :math:`\operatorname{sign}(A) N` first (:math:`N` the number of free pairs these
  clients take) and the rest second: the backends that can (``highs``, ``scipy``,
  ``pyomo``) solve that count problem first (:func:`fix_count`, an integer objective
  a solver resolves exactly), fix :math:`N = N^*` by an extra row and solve the rest
  with costs :math:`S_{ce} - A`. Otherwise the costs keep :math:`A` (the solver then
  resolves the differences well enough, or the post-solve check says it cannot);
* the result is multiplied by a power of two (exact) so that the largest *choosable
  pair* coefficient lies in :math:`[1, 2)`: soft-penalty slacks do not set the scale
  (their costs are capped at :data:`SLACK_COST_CAP` times it).

``original(v)`` maps a value of the normalised objective back;
``stats["objective_offset"]``, ``stats["objective_scale_exponent"]`` (and
``stats["count_fixed"]`` when the count phase ran) report the transformation. Whether
the solver could resolve what it was handed is checked after the solve
(:mod:`flexassign.backends._certify`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..problem import AssignmentProblem
from .base import SolveOptions
from .linear import LinearModel

__all__ = [
    "SLACK_COST_CAP",
    "NormalisedObjective",
    "choosable_pairs",
    "fix_count",
    "fix_unchoosable",
    "normalise_objective",
    "rest_range",
    "scale_exponent",
]

#: Largest ratio of a slack column's normalised cost to the largest choosable pair cost.
SLACK_COST_CAP = 2.0**40

#: Relative margin by which the shared offset must exceed the rest's range before the
#: objective is treated as lexicographic (count first).
_LEX_MARGIN = 1.01


@dataclass(frozen=True)
class NormalisedObjective:
    """An objective equivalent to the model's (maximize), offset and scaled.

    For every feasible column vector ``v``:
    ``model.c @ v == offset + count_price * N(v) + 2**-exponent * (c @ v)`` (up to float
    rounding), where ``N(v)`` sums ``v`` over ``count_cols``.

    Attributes
    ----------
    c : ndarray
        Normalised coefficients, same columns as the model.
    offset : float
        Constant part of the objective.
    exponent : int
        ``c`` is the varying part times ``2**exponent``.
    count_price : float
        :math:`A` when the costs of ``count_cols`` had the shared offset removed and
        the count still has to be fixed (:func:`fix_count`); else 0.
    count_cols : ndarray of int
        The pair columns that count towards :math:`N`.
    count_fixed : int or None
        :math:`N^*` once :func:`fix_count` fixed it (``A N^*`` is then in ``offset``).
    """

    c: NDArray[np.float64]
    offset: float
    exponent: int
    count_price: float = 0.0
    count_cols: NDArray[np.int64] = dataclasses.field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )
    count_fixed: int | None = None
    offset_error: float = 0.0

    def original(self, value: float) -> float:
        """A value of the normalised objective, in the problem's units."""
        return self.offset + math.ldexp(float(value), -self.exponent)

    def upper(self, value: float) -> float:
        """:meth:`original` of a bound, raised by its float64 rounding error (that of
        ``offset`` and of the final addition): still a bound in the problem's units."""
        t = math.ldexp(float(value), -self.exponent)
        v = self.offset + t
        if not math.isfinite(v):
            return v
        # the addition's exact rounding error (TwoSum, Knuth)
        back = v - self.offset
        err = abs((self.offset - (v - back)) + (t - back))
        err += self.offset_error
        if err == 0.0:
            return v
        return math.nextafter(v + 2.0 * err, math.inf)

    def stats(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "objective_offset": self.offset,
            "objective_scale_exponent": self.exponent,
        }
        if self.count_fixed is not None:
            out["count_fixed"] = self.count_fixed
        return out


def scale_exponent(peak: float) -> int:
    """``k`` with ``peak * 2**k`` in ``[1, 2)`` (0 for ``peak == 0``)."""
    if peak <= 0 or not math.isfinite(peak):
        return 0
    _, ex = math.frexp(peak)  # peak = m * 2**ex, m in [0.5, 1)
    return 1 - ex


def choosable_pairs(problem: AssignmentProblem) -> NDArray[np.bool_]:
    """Free allowed pairs that some feasible assignment could take (N x E mask).

    A free pair is never choosable when its client has no capacity left after its
    fixed pairs, when the client's weight alone exceeds the expert's hard maximum
    load (less what fixed pairs already put there), or when the expert's size exceeds
    what the client's memory budget leaves after its fixed pairs. The margins are
    those of a solver's feasibility tolerance (1e-6 relative), so a pair the solver
    might still accept is kept.
    """
    fixed = problem.fixed_mask
    ok = problem.allowed_mask & ~fixed
    w = problem.weights
    room = problem.capacity - fixed.sum(axis=1)
    ok &= (room > 0)[:, None]
    if not problem.is_soft:
        upper = problem.expert_max_load
        left = upper - w @ fixed
        tol = 1e-6 * np.maximum(1.0, np.where(np.isfinite(upper), np.abs(upper), 1.0))
        ok &= ~(w[:, None] > left[None, :] + tol[None, :])
    if problem.knapsack_binding and problem.expert_size is not None:
        assert problem.client_budget is not None
        size = problem.expert_size
        budget = problem.client_budget
        left_mem = budget - fixed @ size
        tol_m = 1e-6 * np.maximum(1.0, np.where(np.isfinite(budget), np.abs(budget), 1.0))
        ok &= ~(size[None, :] > (left_mem + tol_m)[:, None])
    return np.asarray(ok, dtype=bool)


def fix_unchoosable(problem: AssignmentProblem, model: LinearModel) -> LinearModel:
    """``model`` with every never-choosable pair column bounded to 0 (:func:`choosable_pairs`)."""
    m = model.n_pairs
    ok = choosable_pairs(problem)[model.pair_client, model.pair_expert]
    free = model.col_lo[:m] < 1
    dead = free & ~ok
    if not dead.any():
        return model
    col_hi = model.col_hi.copy()
    col_hi[:m][dead] = 0.0
    return dataclasses.replace(model, col_hi=col_hi)


def _client_spans(
    fit: NDArray[np.float64], mask: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    any_ = np.asarray(mask.any(axis=1), dtype=bool)
    hi = np.where(any_, np.where(mask, fit, -np.inf).max(axis=1), 0.0).astype(np.float64)
    lo = np.where(any_, np.where(mask, fit, np.inf).min(axis=1), 0.0).astype(np.float64)
    return hi, lo, any_


def _slack_range(problem: AssignmentProblem) -> float:
    """The most the penalty term can vary between two assignments (0 for hard bounds)."""
    if problem.load_penalty is None:
        return 0.0
    total = float(problem.weights.sum())
    lo = np.maximum(problem.expert_min_load, 0.0)
    hi = problem.expert_max_load
    over = np.where(np.isfinite(hi), np.maximum(total - hi, 0.0), 0.0)
    return float(problem.load_penalty) * float(np.sum(lo + over))


def rest_range(
    problem: AssignmentProblem,
    choosable: NDArray[np.bool_],
    shift: NDArray[np.float64],
    take_hi: NDArray[np.int64],
) -> float:
    """An upper bound on how much ``sum (S_ce - shift_c) x_ce`` (choosable pairs) plus the
    penalty term can differ between two feasible assignments.

    Client ``c`` takes at most ``take_hi[c]`` choosable pairs, each contributing at most
    ``max |S_ce - shift_c|`` in either direction.
    """
    dev = np.where(choosable, np.abs(problem.fitness - shift[:, None]), 0.0).max(
        axis=1, initial=0.0
    )
    return 2.0 * float(np.sum(take_hi * dev)) + _slack_range(problem)


def normalise_objective(
    problem: AssignmentProblem, model: LinearModel, *, count_phase: bool = False
) -> NormalisedObjective:
    """Offset and scale the objective so solvers see only what can vary (module docstring).

    ``count_phase`` allows removing the shared offset of clients whose count may vary
    (the caller must then run :func:`fix_count`).
    """
    m = model.n_pairs
    fit = problem.fitness
    c = np.array(model.c, dtype=np.float64)
    pc, pe = model.pair_client, model.pair_expert
    fixed_col = model.col_lo[:m] >= 1
    dead_col = (model.col_hi[:m] <= 0) & ~fixed_col
    offset_terms = [c[:m][fixed_col]]
    c[:m][fixed_col | dead_col] = 0.0
    choose = np.zeros(problem.shape, dtype=bool)
    live = ~fixed_col & ~dead_col
    choose[pc[live], pe[live]] = True
    n_fixed = problem.fixed_mask.sum(axis=1)
    n_choose = choose.sum(axis=1)
    take_hi = np.minimum(problem.capacity - n_fixed, n_choose).astype(np.int64)
    take_lo = np.maximum(problem.min_experts - n_fixed, 0).astype(np.int64)
    hi, lo, has = _client_spans(fit, choose)
    alpha = 0.5 * hi + 0.5 * lo  # each client's midpoint, without overflow
    forced = has & (take_lo >= take_hi)
    shift = np.where(forced, alpha, 0.0)
    offset_terms.append(np.where(forced, alpha * take_hi, 0.0))
    count_price = 0.0
    count_cols = np.zeros(0, dtype=np.int64)
    varying = has & ~forced
    if count_phase and varying.any():
        a = float(0.5 * alpha[varying].max() + 0.5 * alpha[varying].min())
        trial = np.where(varying, a, shift)
        if a != 0.0 and abs(a) > _LEX_MARGIN * rest_range(problem, choose, trial, take_hi):
            shift = trial
            count_price = a
            count_cols = np.flatnonzero(live & varying[pc]).astype(np.int64)
    c[:m] = np.where(live, c[:m] - shift[pc], 0.0)
    terms = np.concatenate(offset_terms)
    offset = math.fsum(terms.tolist())  # correctly rounded
    residual = math.fsum([*terms.tolist(), -offset])
    offset_error = math.nextafter(abs(residual), math.inf) if residual else 0.0
    peak_pairs = float(np.max(np.abs(c[:m]), initial=0.0))
    peak_all = float(np.max(np.abs(c), initial=0.0))
    k = scale_exponent(peak_pairs if peak_pairs > 0 else peak_all)
    if peak_all > 0 and math.ldexp(peak_all, k) > SLACK_COST_CAP:
        k = scale_exponent(peak_all) + int(math.log2(SLACK_COST_CAP))
    return NormalisedObjective(
        c=np.ldexp(c, k),
        offset=offset,
        exponent=k,
        count_price=count_price,
        count_cols=count_cols,
        offset_error=offset_error,
    )


def _sum_error(a: float, b: float) -> float:
    """The exact rounding error of ``a + b`` in float64 (TwoSum)."""
    v = a + b
    back = v - a
    return abs((a - (v - back)) + (b - back))


def _product_error(a: float, k: int, product: float) -> float:
    """The rounding error of ``product = a * k`` (exact rational arithmetic), rounded up."""
    exact = Fraction(a) * k - Fraction(product)
    return math.nextafter(abs(float(exact)), math.inf) if exact else 0.0


def fix_count(
    problem: AssignmentProblem,
    model: LinearModel,
    norm: NormalisedObjective,
    options: SolveOptions,
    t0: float,
) -> tuple[LinearModel, NormalisedObjective]:
    r"""The count phase: maximise :math:`\operatorname{sign}(A) N`, then fix :math:`N`.

    Solved with :func:`scipy.optimize.milp` (the count objective is integral: a gap
    below 1/2 proves it). On a proof, the model gains the row
    :math:`N = N^*` (appended after the load rows) and ``A N^*`` moves into
    ``offset``. Without a proof (time, an error), the objective is normalised again
    without the count phase: the costs then keep the offset.
    """
    if norm.count_price == 0.0:
        return model, norm
    from scipy.optimize import Bounds, LinearConstraint, milp

    cols = norm.count_cols
    sign = 1.0 if norm.count_price > 0 else -1.0
    cost = np.zeros(model.c.shape[0])
    cost[cols] = -sign
    most = float(cols.size)
    opts: dict[str, object] = {"disp": False, "mip_rel_gap": 0.25 / (most + 1.0)}
    if options.time_limit is not None:
        left = float(options.time_limit) - (time.perf_counter() - t0)
        if left <= 0.0:
            return model, normalise_objective(problem, model)
        opts["time_limit"] = 0.5 * left
    try:
        res = milp(
            cost,
            integrality=model.integrality,
            bounds=Bounds(model.col_lo, model.col_hi),
            constraints=LinearConstraint(model.A, model.row_lo, model.row_hi),
            options=opts,
        )
    except Exception:  # pragma: no cover - a failed phase only loses the shortcut
        res = None
    dual = None if res is None else getattr(res, "mip_dual_bound", None)
    if res is None or int(res.status) != 0 or res.x is None or dual is None:
        return model, normalise_objective(problem, model)
    count = round(float(np.sum(res.x[cols])))
    # -sign * N* is the minimum; the dual bound must leave no room for another count
    if not (-sign * count - float(dual) < 0.5):
        return model, normalise_objective(problem, model)
    row = sp.csr_matrix(
        (np.ones(cols.size), (np.zeros(cols.size, dtype=np.int64), cols)),
        shape=(1, model.c.shape[0]),
    )
    fixed = dataclasses.replace(
        model,
        A=sp.vstack([model.A.tocsr(), row], format="csc"),
        row_lo=np.concatenate([model.row_lo, [float(count)]]),
        row_hi=np.concatenate([model.row_hi, [float(count)]]),
    )
    shift = norm.count_price * count
    new = dataclasses.replace(
        norm,
        offset=norm.offset + shift,
        offset_error=norm.offset_error
        + _sum_error(norm.offset, shift)
        + _product_error(norm.count_price, count, shift),
        count_price=0.0,
        count_fixed=count,
    )
    return fixed, new
