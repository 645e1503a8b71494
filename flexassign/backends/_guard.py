r"""The post-solve guard: is a MIP or LP solver's claim resolved, else the price bound.

A MIP or LP solver proves optimality and bounds *up to its own tolerances*. When the
differences that decide the optimum lie below those tolerances relative to the largest
coefficient it sees, its ``OPTIMAL`` and its bound can both be wrong.
:func:`solver_resolution` measures that ratio; :func:`certify` keeps the solver's claim
when it is at least :data:`MIN_RESOLUTION` and otherwise replaces the bound by the price
bound at the LP relaxation's duals (:func:`~flexassign.backends._certify.price_bound`,
evaluated in float64 with its rounding error), keeping ``OPTIMAL`` only when that bound
proves it. ``stats["bound_check"]`` says which held.
"""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from ..problem import AssignmentProblem
from ..result import Status
from ._certify import price_bound, proves_optimal
from .base import BackendOutput, SolveOptions
from .linear import LinearModel

__all__ = [
    "DECISIVE_QUANTILE",
    "MIN_RESOLUTION",
    "SCIPY_MIN_RESOLUTION",
    "TIGHTEN_BELOW",
    "TIGHT_MIP_FEASIBILITY",
    "certify",
    "duals_to_prices",
    "lp_prices",
    "solver_resolution",
]

#: Smallest ratio of the decisive coefficient differences to the largest coefficient a
#: MIP/LP solver is trusted to resolve (its tolerances are ~1e-7 on coefficients ~1).
MIN_RESOLUTION = 2.0**-17

#: Below this resolution the HiGHS backends also tighten HiGHS's
#: ``mip_feasibility_tolerance`` (default 1e-6, which HiGHS also uses to prune nodes on
#: the objective) to :data:`TIGHT_MIP_FEASIBILITY` before solving.
TIGHTEN_BELOW = 2.0**-8

#: ``mip_feasibility_tolerance`` for poorly resolved objectives (see :data:`TIGHTEN_BELOW`).
TIGHT_MIP_FEASIBILITY = 1e-9

#: The resolution ``scipy.optimize.milp`` must reach for its proof to stand: it exposes no
#: feasibility tolerance to tighten, so it is trusted on better-resolved objectives only.
SCIPY_MIN_RESOLUTION = 2.0**-12

#: The quantile of the clients' fitness spreads that :func:`solver_resolution` takes as
#: the differences the optimum turns on.
DECISIVE_QUANTILE = 0.1


def solver_resolution(
    problem: AssignmentProblem, model: LinearModel, solver_c: NDArray[np.float64]
) -> float:
    r"""How finely the objective handed to a solver separates what decides the optimum.

    ``solver_c`` are the model's objective coefficients as the solver sees them
    (normalised). The decisive differences are, in the same units, the spread of each
    client's free choosable coefficients (their :data:`DECISIVE_QUANTILE` quantile over
    the clients), or, when every client has a single choosable value, the spread of
    the clients' values (which client gets a slot); with soft bounds, also the penalty
    of one client's weight of load excess (whichever is smaller); the result is that over the
    largest coefficient the solver sees (slack columns included: a large offset on some
    clients, or a penalty far above the fitness, makes it small). 1 when nothing
    varies.
    A solver with tolerances :math:`\tau` relative to its largest coefficient cannot be
    trusted to resolve differences below :math:`\tau`: a result below
    :data:`MIN_RESOLUTION` needs an independent proof.
    """
    m = model.n_pairs
    c = np.asarray(solver_c, dtype=np.float64)
    if c.size == 0:
        return 1.0
    peak = float(np.max(np.abs(c)))
    if peak == 0.0:
        return 1.0
    pc = model.pair_client
    free = (model.col_lo[:m] < 1) & (model.col_hi[:m] > 0)  # choosable pairs only
    n = problem.n_clients
    cp = c[:m]
    hi = np.full(n, -np.inf)
    lo = np.full(n, np.inf)
    np.maximum.at(hi, pc[free], cp[free])
    np.minimum.at(lo, pc[free], cp[free])
    has = np.isfinite(hi)
    if not has.any():
        return 1.0
    spread = (0.5 * hi[has] - 0.5 * lo[has]) * 2.0
    spread = spread[spread > 0]
    if spread.size:
        # what a typical client's choice turns on (a low quantile: a few clients with
        # wide spreads must not hide many whose choices lie below the tolerances)
        decisive = float(np.quantile(spread, DECISIVE_QUANTILE))
    else:  # each client has one choosable value: which clients take a slot
        mid = 0.5 * hi[has] + 0.5 * lo[has]
        decisive = (float(mid.max()) * 0.5 - float(mid.min()) * 0.5) * 2.0
    if c.size > m and problem.load_penalty is not None:
        # a unit of load excess (a client's weight) changes the objective by the
        # penalty: differences the solver must resolve as well
        pen = float(np.min(np.abs(c[m:])))
        unit = pen * float(np.min(problem.weights))
        if unit > 0.0:
            decisive = unit if decisive == 0.0 else min(decisive, unit)
    if decisive == 0.0:
        return 1.0
    return decisive / peak


def lp_prices(
    problem: AssignmentProblem,
    model: LinearModel,
    c: NDArray[np.float64],
    scale_exponent: int,
    options: SolveOptions,
    time_limit: float | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None] | None:
    """Expert (and memory) prices from the LP relaxation of ``model`` with objective ``c``.

    ``c`` is the objective the LP is solved with (maximize), ``scale_exponent`` the
    power of two it was multiplied by (prices come back in the problem's units).
    Returns ``None`` when HiGHS does not solve the LP (the zero prices then still give
    a valid bound). The prices only need to be good, not exact: :func:`price_bound`
    is valid for any.
    """
    from . import _highs

    h = _highs.new_highs(options, time_limit=time_limit)
    _highs.pass_model(
        h,
        -np.asarray(c, dtype=np.float64),
        model.A,
        model.col_lo,
        model.col_hi,
        model.row_lo,
        model.row_hi,
        np.zeros(int(model.c.shape[0]), dtype=np.int32),
    )
    try:
        _highs.run(h, _highs.threads_of(options))
    except Exception:  # pragma: no cover - HiGHS failures surface as status below
        return None
    if _highs.outcome(h) != "optimal":
        return None
    y = np.asarray(h.getSolution().row_dual, dtype=np.float64)
    return duals_to_prices(model, y, scale_exponent)


def duals_to_prices(
    model: LinearModel, row_dual: NDArray[np.float64], scale_exponent: int
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """HiGHS row duals of ``min -c @ v`` on ``model``'s rows -> (expert, memory) prices.

    The maximization's price of a row is minus HiGHS's dual; ``2**-scale_exponent``
    brings it back to the problem's units.
    """
    y = -np.asarray(row_dual, dtype=np.float64)
    prices = np.ldexp(y[model.load_rows], -scale_exponent)
    mem = None
    if model.memory_rows is not None:
        mem = np.ldexp(y[model.memory_rows], -scale_exponent)
    return prices, mem


def certify(
    problem: AssignmentProblem,
    model: LinearModel,
    solver_c: NDArray[np.float64],
    scale_exponent: int,
    out: BackendOutput,
    options: SolveOptions,
    *,
    solver: str,
    t0: float | None = None,
    row_dual: NDArray[np.float64] | None = None,
    min_resolution: float = MIN_RESOLUTION,
) -> BackendOutput:
    """Check a MIP or LP backend's claim independently; downgrade what cannot be proven.

    When :func:`solver_resolution` of ``solver_c`` is at least ``min_resolution``
    (:data:`MIN_RESOLUTION`; :data:`SCIPY_MIN_RESOLUTION` for SciPy) the solver's proof
    stands (``stats["bound_check"] = "solver"``). Otherwise the
    bound is replaced by the price bound at the LP relaxation's duals
    (``"price bound"``; ``row_dual``, HiGHS's row duals of ``min -solver_c @ v`` on
    ``model``, when the backend has them, else the LP is solved here), and ``OPTIMAL``
    stays only when that bound proves it (:func:`proves_optimal`); else the result is
    ``FEASIBLE`` with the price bound and the message says why.
    ``stats["resolution"]`` reports the ratio, ``stats["price_bound_error"]`` the
    rounding error of the price bound.
    """
    res = solver_resolution(problem, model, solver_c)
    out.stats["resolution"] = res
    if res >= min_resolution or out.status not in (
        Status.OPTIMAL,
        Status.FEASIBLE,
        Status.TIME_LIMIT,
    ):
        out.stats.setdefault("bound_check", "solver")
        return out
    got: tuple[NDArray[np.float64], NDArray[np.float64] | None] | None
    if row_dual is not None:
        got = duals_to_prices(model, row_dual, scale_exponent)
    else:
        left = None
        if options.time_limit is not None and t0 is not None:
            left = max(float(options.time_limit) - (time.perf_counter() - t0), 1e-3)
        got = lp_prices(problem, model, solver_c, scale_exponent, options, time_limit=left)
    prices, mem = got if got is not None else (None, None)
    pb = price_bound(problem, prices, budget_prices=mem)
    out.stats["bound_check"] = "price bound" + ("" if got is not None else " (zero prices)")
    out.stats["price_bound_error"] = pb.error
    bound = pb.upper
    out.bound = bound
    if out.status is Status.OPTIMAL:
        if out.x is None or not proves_optimal(problem, out.x, pb):
            out.status = Status.FEASIBLE
            why = (
                f"{solver} reported optimal, but its objective varies by less than its "
                f"tolerances can resolve (resolution {res:.2g}); not proven optimal: the "
                f"price bound {bound:.17g} is the bound"
            )
            out.message = f"{out.message}; {why}".lstrip("; ")
    return out
