r"""The exact step of the price method: the uncertain clients solved by HiGHS.

Clients whose choice the prices settle are *frozen*; the *core* (the others) is a
small problem on their candidate pairs against the load the frozen clients leave:

.. math::

    \max \sum_{(c,e)} S_{ce} x_{ce} - P \sum_e (s^-_e + s^+_e) \quad\text{s.t.}\quad
    k^{\min}_c \le \sum_e x_{ce} \le k_c,\;
    \sum_e m_e x_{ce} \le M_c,\;
    L_e - F_e \le \sum_c w_c x_{ce} + s^-_e - s^+_e \le U_e - F_e,

with :math:`F_e` the frozen load. The elastic slacks :math:`s^\pm` (penalty
:math:`P` above any client's value of a unit of load) keep it feasible; a slack in
use says which experts need more clients opened. Its LP relaxation's row duals are
the next prices (load rows) and memory prices; its MIP (stopped at an absolute gap
that the caller derives from the whole problem's gap target) gives the core's
assignment. Costs are shifted by the midpoint of its pairs' fitness for a client whose
count is forced (``min_experts`` equal to its capacity: the shift is then a constant)
and scaled by a power of two (neither changes the load duals, which are mapped back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .. import _highs
from ..base import SolveOptions
from .view import View

__all__ = ["MIP_NODES", "CoreModel", "CoreSolution", "build_core", "solve_core"]

#: Branch-and-bound nodes a rounding MIP may use: the gap it cannot close within them
#: is mostly the LP's own integrality gap, which no rounding closes.
MIP_NODES = 50

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass
class CoreModel:
    """The core as a HiGHS model (columns: pairs, then ``s^-``, then ``s^+``)."""

    clients: IntArray  # view-local rows of the core clients, sorted
    pair_client: IntArray  # position in ``clients`` of each pair
    pair_expert: IntArray
    cost: FloatArray  # minimisation costs, scaled
    A: sp.csc_matrix
    row_lo: FloatArray
    row_hi: FloatArray
    n_mem: int  # memory rows (after the client rows)
    deficit: IntArray  # positions (in ``clients``) of the clients with a deficit column
    scale_exp: int
    offset: float  # sum over the core of alpha_c * (pairs taken): see ``value``
    alpha: FloatArray  # per core client shift


@dataclass
class CoreSolution:
    """What one HiGHS solve of the core gave."""

    status: str
    x: FloatArray | None  # pair values
    prices: FloatArray | None  # per unit of load (LP only)
    mem_prices: FloatArray | None  # per core client with a memory row (LP only)
    slack: FloatArray | None  # s^- + s^+ per expert
    deficit: FloatArray | None = None  # per deficit column: experts a client lacks
    iterations: int = 0


def build_core(
    view: View,
    clients: IntArray,
    pair_client: IntArray,
    pair_expert: IntArray,
    frozen_load: FloatArray,
) -> CoreModel:
    """The core model for ``clients`` (view-local, sorted) and their pairs."""
    e = view.e
    k = clients.size
    q = pair_client.size
    rows = clients[pair_client]
    score = view.scores(rows, pair_expert)
    hi = np.full(k, -np.inf)
    lo = np.full(k, np.inf)
    np.maximum.at(hi, pair_client, score)
    np.minimum.at(lo, pair_client, score)
    # a client whose count is forced takes the same number of pairs whatever it
    # picks: shifting its scores by a constant changes nothing but the scale
    forced = view.kmin[clients] >= view.cap[clients]
    alpha = np.where(np.isfinite(hi) & forced, 0.5 * hi + 0.5 * lo, 0.0)
    shifted = score - alpha[pair_client]
    peak = float(np.abs(shifted).max(initial=0.0))
    scale_exp = 0 if peak == 0.0 else -math.frexp(peak)[1] + 1  # peak * 2**s in [1, 2)
    cost = -np.ldexp(shifted, scale_exp)
    w = view.w[rows]
    # a unit of load is worth at most a client's spread over its weight
    spread = np.where(np.isfinite(hi), np.maximum(hi - alpha, alpha - lo), 0.0)
    per_unit = float(np.max(np.ldexp(spread, scale_exp) / view.w[clients], initial=0.0))
    penalty = 4.0 * per_unit + 4.0
    cap = view.cap[clients].astype(np.float64)
    kmin = view.kmin[clients].astype(np.float64)
    n_mem = 0
    blocks_r = [pair_client]
    blocks_v = [np.ones(q)]
    if view.size is not None and view.budget is not None:
        budget = view.budget[clients]
        has = np.isfinite(budget)
        mem_row = np.full(k, -1)
        mem_row[has] = k + np.arange(int(has.sum()))
        n_mem = int(has.sum())
        take = has[pair_client]
        blocks_r.append(mem_row[pair_client[take]])
        blocks_v.append(view.size[pair_expert[take]])
        mem_cols = np.flatnonzero(take)
    else:
        budget = np.zeros(0)
        has = np.zeros(k, dtype=bool)
        mem_cols = np.zeros(0, dtype=np.int64)
    first_expert_row = k + n_mem
    r_idx = np.concatenate([blocks_r[0], *blocks_r[1:], first_expert_row + pair_expert])
    c_idx = np.concatenate([np.arange(q), mem_cols, np.arange(q)])
    vals = np.concatenate([blocks_v[0], *blocks_v[1:], w])
    # slacks: s^- adds load, s^+ removes it
    ex = np.arange(e)
    r_idx = np.concatenate([r_idx, first_expert_row + ex, first_expert_row + ex])
    c_idx = np.concatenate([c_idx, q + ex, q + e + ex])
    vals = np.concatenate([vals, np.ones(e), -np.ones(e)])
    # a client that must take experts may lack pairs that fit its memory: a deficit
    # column (as costly as the slacks) keeps its row feasible
    deficit = np.flatnonzero(kmin > 0) if n_mem else np.zeros(0, dtype=np.int64)
    d = deficit.size
    r_idx = np.concatenate([r_idx, deficit])
    c_idx = np.concatenate([c_idx, q + 2 * e + np.arange(d)])
    vals = np.concatenate([vals, np.ones(d)])
    n_rows = first_expert_row + e
    A = sp.csc_matrix((vals, (r_idx, c_idx)), shape=(n_rows, q + 2 * e + d))
    row_lo = np.concatenate([kmin, np.full(n_mem, -np.inf), view.lo - frozen_load])
    row_hi = np.concatenate([cap, budget[has] if n_mem else np.zeros(0), view.hi - frozen_load])
    cost_all = np.concatenate([cost, np.full(2 * e + d, penalty)])
    return CoreModel(
        clients=clients,
        pair_client=pair_client,
        pair_expert=pair_expert,
        cost=cost_all,
        A=A,
        row_lo=row_lo,
        row_hi=row_hi,
        n_mem=n_mem,
        deficit=deficit,
        scale_exp=scale_exp,
        offset=0.0,
        alpha=alpha,
    )


def solve_core(
    model: CoreModel,
    e: int,
    options: SolveOptions,
    *,
    integer: bool,
    abs_gap: float = 0.0,
    time_limit: float | None = None,
    start: FloatArray | None = None,
    elastic: bool = True,
) -> CoreSolution:
    """Solve the core's LP relaxation (``integer=False``: values and prices) or its MIP
    (``abs_gap`` in the problem's objective units)."""
    q = model.pair_client.size
    d = model.deficit.size
    n_cols = q + 2 * e + d
    h = _highs.new_highs(options, time_limit=time_limit)
    integrality = np.zeros(n_cols, dtype=np.int32)
    if integer:
        integrality[:q] = 1
        h.setOptionValue("mip_rel_gap", 0.0)
        h.setOptionValue("mip_abs_gap", max(math.ldexp(abs_gap, model.scale_exp), 1e-9))
        h.setOptionValue("mip_max_nodes", MIP_NODES)
        # presolve: 0.1 s instead of 0.7 s on a 56-client rounding core (100,000 x 64)
        h.setOptionValue("presolve", "on")
    else:
        h.setOptionValue("presolve", "off")
    _highs.pass_model(
        h,
        model.cost,
        model.A,
        np.zeros(n_cols),
        np.concatenate([np.ones(q), np.full(2 * e + d, np.inf if elastic else 0.0)]),
        model.row_lo,
        model.row_hi,
        integrality,
    )
    if integer and start is not None:
        import highspy

        sol = highspy.HighsSolution()
        sol.col_value = list(np.concatenate([start, np.zeros(2 * e + d)]))
        sol.value_valid = True
        h.setSolution(sol)
    _highs.run(h, _highs.threads_of(options))
    status = _highs.outcome(h)
    info: Any = h.getInfo()
    iters = int(getattr(info, "simplex_iteration_count", 0) or 0)
    solution = h.getSolution()
    if not solution.value_valid:
        return CoreSolution(status, None, None, None, None, None, iters)
    v = np.asarray(solution.col_value, dtype=np.float64)
    x = v[:q]
    slack = v[q : q + e] + v[q + e : q + 2 * e]
    deficit = v[q + 2 * e :]
    prices = mem = None
    if not integer and solution.dual_valid:
        y = -np.asarray(solution.row_dual, dtype=np.float64)
        k = model.clients.size
        prices = np.ldexp(y[k + model.n_mem :], -model.scale_exp)
        mem = np.maximum(np.ldexp(y[k : k + model.n_mem], -model.scale_exp), 0.0)
    return CoreSolution(status, x, prices, mem, slack, deficit, iters)
