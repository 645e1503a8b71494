r"""The client-expert assignment problem.

For :math:`N` clients and :math:`E` experts with fitness :math:`S \in \mathbb{R}^{N\times E}`,
choose binary :math:`x_{ce}` (client :math:`c` trains expert :math:`e`) to

.. math::

    \max_x \; \sum_{c,e} S_{ce} x_{ce} - \rho \sum_e \big(s^-_e + s^+_e\big)

subject to

.. math::

    k^{\min}_c \le \textstyle\sum_e x_{ce} \le k_c
        \qquad &\text{(client capacity)}\\
    \textstyle\sum_e m_e x_{ce} \le M_c
        \qquad &\text{(memory knapsack, optional)}\\
    L_e - s^-_e \le \textstyle\sum_c w_c x_{ce} \le U_e + s^+_e
        \qquad &\text{(expert load balance)}\\
    x_{ce} = 0 \text{ where not allowed}, \quad x_{ce} = 1 \text{ where fixed}.

With hard balance (``load_penalty=None``) the slacks :math:`s^\pm` are zero. With
:math:`w_c` all equal and no binding knapsack the constraint matrix is the incidence
matrix of a bipartite graph, hence totally unimodular: the problem is a min-cost
flow and its LP relaxation is integral (:attr:`AssignmentProblem.is_unimodular`).

Input conversion and checks live in :mod:`flexassign._problem_input`, the balance-bound
formula in :mod:`flexassign.balance` (:func:`balance_bounds` and :func:`load_excess`
are importable from here too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._problem_input import check_tolerance, convert_arguments, frozen
from .balance import BOUND_RTOL, balance_bounds, load_excess
from .errors import InvalidProblemError, ProblemTypeError

__all__ = ["FIELDS", "AssignmentProblem", "balance_bounds", "load_excess"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, eq=False, init=False)
class AssignmentProblem:
    """A validated, immutable client-expert assignment problem.

    Parameters
    ----------
    fitness : array_like, shape (N, E)
        Finite client-expert scores :math:`S_{ce}` to maximize; any sign.
    capacity : int or array_like of int, shape (N,)
        Maximum number of experts per client, :math:`k_c \\ge 0`.
    min_experts : int or array_like of int, shape (N,)
        Minimum number of experts per client, :math:`0 \\le k^{\\min}_c \\le k_c`. Set it
        equal to ``capacity`` for "exactly k experts".
    expert_min_load, expert_max_load : None, float or array_like, shape (E,)
        Load bounds :math:`L_e \\le U_e`; ``None`` means 0 and :math:`+\\infty`.
    client_weight : None or array_like, shape (N,)
        Load contributed by each client, :math:`w_c > 0` (e.g. its sample count).
        ``None`` counts clients (:math:`w_c = 1`).
    expert_size, client_budget : None or array_like, shapes (E,) and (N,)
        Memory knapsack :math:`\\sum_e m_e x_{ce} \\le M_c`; give both or neither.
    allowed : None or array_like of bool, shape (N, E)
        ``False`` forbids a pair.
    fixed : None or array_like of bool, shape (N, E)
        ``True`` forces a pair. A fixed pair must be allowed.
    load_penalty : None or float
        ``None`` makes the load bounds hard. A positive value makes them soft: each unit
        of load outside :math:`[L_e, U_e]` costs ``load_penalty`` in the objective.

    Raises
    ------
    InvalidProblemError
        (a :class:`ValueError`) for wrong shapes, NaN/inf, negative or non-integer
        capacities, ``min_experts > capacity``, ``expert_min_load > expert_max_load``,
        a fixed pair that is not allowed, or a knapsack given by halves.
    ProblemTypeError
        (a :class:`TypeError`) for non-numeric input.

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign import AssignmentProblem
    >>> p = AssignmentProblem(np.eye(3), capacity=1, expert_max_load=1)
    >>> p.shape, p.is_unimodular
    ((3, 3), True)
    """

    fitness: FloatArray
    capacity: IntArray
    min_experts: IntArray
    expert_min_load: FloatArray
    expert_max_load: FloatArray
    client_weight: FloatArray | None
    expert_size: FloatArray | None
    client_budget: FloatArray | None
    allowed: BoolArray | None
    fixed: BoolArray | None
    load_penalty: float | None
    _cache: dict[str, Any] = field(repr=False, compare=False)

    def __init__(
        self,
        fitness: ArrayLike,
        capacity: ArrayLike = 1,
        min_experts: ArrayLike = 0,
        expert_min_load: ArrayLike | None = None,
        expert_max_load: ArrayLike | None = None,
        client_weight: ArrayLike | None = None,
        expert_size: ArrayLike | None = None,
        client_budget: ArrayLike | None = None,
        allowed: ArrayLike | None = None,
        fixed: ArrayLike | None = None,
        load_penalty: float | None = None,
    ) -> None:
        values = convert_arguments(
            fitness,
            capacity,
            min_experts,
            expert_min_load,
            expert_max_load,
            client_weight,
            expert_size,
            client_budget,
            allowed,
            fixed,
            load_penalty,
        )
        pen = values.pop("load_penalty")
        for key, val in values.items():
            object.__setattr__(self, key, None if val is None else frozen(val))
        object.__setattr__(self, "load_penalty", pen)
        object.__setattr__(self, "_cache", {})

    # ------------------------------------------------------------------ constructors
    @classmethod
    def balanced(
        cls,
        fitness: ArrayLike,
        capacity: ArrayLike = 1,
        tolerance: float = 0.1,
        client_weight: ArrayLike | None = None,
        *,
        exact_capacity: bool = False,
        **kwargs: Any,
    ) -> AssignmentProblem:
        """Build a problem whose expert load bounds come from the average load.

        With effective capacities :math:`\\bar k_c = \\min(k_c, |\\text{allowed}_c|)` the
        average load is :math:`\\bar\\ell = \\sum_c \\bar k_c w_c / E`, and the bounds are
        :math:`L_e = u \\lfloor (1-\\varepsilon)\\bar\\ell / u \\rfloor`,
        :math:`U_e = u \\lceil (1+\\varepsilon)\\bar\\ell / u \\rceil`
        (:func:`balance_bounds`), rounded to the granularity :math:`u` of achievable
        loads (:attr:`load_unit`: 1 when counting clients, the common weight, or the
        weights' greatest common divisor when they are integers). Weights without a
        common granularity (e.g. ``n / n.sum()``) give unrounded bounds
        :math:`(1 \\mp \\varepsilon)\\bar\\ell`, so balance is enforced at any weight scale.

        Parameters
        ----------
        fitness, capacity, client_weight
            As in :class:`AssignmentProblem`.
        tolerance : float
            :math:`\\varepsilon \\ge 0`, the allowed relative deviation from the average.
        exact_capacity : bool
            If True every client takes exactly its capacity (``min_experts = capacity``).
        **kwargs
            Any other :class:`AssignmentProblem` argument except the load bounds.

        Examples
        --------
        >>> import numpy as np
        >>> p = AssignmentProblem.balanced(np.ones((10, 4)), capacity=2, tolerance=0.2)
        >>> p.expert_min_load.tolist(), p.expert_max_load.tolist()
        ([4.0, 4.0, 4.0, 4.0], [6.0, 6.0, 6.0, 6.0])
        """
        for key in ("expert_min_load", "expert_max_load"):
            if key in kwargs:
                raise InvalidProblemError(
                    f"`{key}` cannot be combined with `tolerance`: balanced() derives it"
                )
        check_tolerance(tolerance)
        if exact_capacity:
            if "min_experts" in kwargs:
                raise InvalidProblemError(
                    "`min_experts` cannot be combined with `exact_capacity=True`"
                )
            kwargs["min_experts"] = capacity
        base = cls(fitness, capacity=capacity, client_weight=client_weight, **kwargs)
        return base.rebalanced(tolerance)

    def rebalanced(self, tolerance: float) -> AssignmentProblem:
        """This problem with its load bounds derived from the average load, as in
        :meth:`balanced` (every other argument kept).

        Examples
        --------
        >>> import numpy as np
        >>> p = AssignmentProblem(np.ones((10, 4)), capacity=2, expert_max_load=3)
        >>> p.rebalanced(0.2).expert_max_load.tolist()
        [6.0, 6.0, 6.0, 6.0]
        """
        tol = check_tolerance(tolerance)
        lo, hi = balance_bounds(self.average_load(), tol, self.load_unit)
        return self.replace(expert_min_load=float(lo), expert_max_load=float(hi))

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The constructor arguments, in order (the published field list).

        Examples
        --------
        >>> AssignmentProblem.fields()[:3]
        ('fitness', 'capacity', 'min_experts')
        """
        return FIELDS

    def to_kwargs(self) -> dict[str, Any]:
        """``{field: value}`` for every constructor argument (``AssignmentProblem(**kw)``)."""
        return {name: getattr(self, name) for name in FIELDS}

    def replace(self, **changes: Any) -> AssignmentProblem:
        """Return a new, re-validated problem with some arguments changed."""
        _check_fields("replace", changes)
        args = self.to_kwargs()
        args.update(changes)
        return AssignmentProblem(**args)

    def take(self, rows: ArrayLike, **changes: Any) -> AssignmentProblem:
        """The sub-problem of the clients ``rows`` (every per-client field sliced).

        Per-expert fields (load bounds, sizes) and ``load_penalty`` are kept; pass
        ``changes`` to adjust them (e.g. load bounds scaled to the sample).

        Examples
        --------
        >>> import numpy as np
        >>> p = AssignmentProblem(np.arange(6.0).reshape(3, 2), capacity=[1, 2, 1])
        >>> sub = p.take([0, 2])
        >>> sub.shape, sub.capacity.tolist()
        ((2, 2), [1, 1])
        """
        idx = np.asarray(rows)
        if idx.ndim != 1 or not (
            np.issubdtype(idx.dtype, np.integer) or np.issubdtype(idx.dtype, np.bool_)
        ):
            raise ProblemTypeError("`rows` must be a 1-D array of client indices or a mask")
        args = self.to_kwargs()
        for name in _PER_CLIENT:
            if args[name] is not None:
                args[name] = args[name][idx]
        _check_fields("take", changes)
        args.update(changes)
        return AssignmentProblem(**args)

    # ------------------------------------------------------------------ derived views
    @property
    def shape(self) -> tuple[int, int]:
        """``(n_clients, n_experts)``."""
        return (self.n_clients, self.n_experts)

    @property
    def n_clients(self) -> int:
        return int(self.fitness.shape[0])

    @property
    def n_experts(self) -> int:
        return int(self.fitness.shape[1])

    @property
    def weights(self) -> FloatArray:
        """Client load weights :math:`w_c` (ones when loads count clients)."""
        if self.client_weight is not None:
            return self.client_weight
        return self._cached("weights", lambda: frozen(np.ones(self.n_clients)))

    @property
    def allowed_mask(self) -> BoolArray:
        """``allowed`` with ``None`` expanded to all-True."""
        if self.allowed is not None:
            return self.allowed
        return self._cached("allowed", lambda: frozen(np.ones(self.shape, dtype=bool)))

    @property
    def fixed_mask(self) -> BoolArray:
        """``fixed`` with ``None`` expanded to all-False."""
        if self.fixed is not None:
            return self.fixed
        return self._cached("fixed", lambda: frozen(np.zeros(self.shape, dtype=bool)))

    @property
    def has_knapsack(self) -> bool:
        return self.expert_size is not None

    @property
    def is_soft(self) -> bool:
        """True when load bounds are soft (``load_penalty`` set)."""
        return self.load_penalty is not None

    @property
    def uniform_weight(self) -> float | None:
        """The common client weight when all are equal, else ``None``."""
        if self.client_weight is None:  # loads count clients (asked on every solve)
            return 1.0
        cache = self._cache
        if "uniform_weight" not in cache:
            w = self.client_weight
            cache["uniform_weight"] = float(w[0]) if bool((w == w[0]).all()) else None
        return cast("float | None", cache["uniform_weight"])

    @property
    def load_unit(self) -> float | None:
        """Granularity of achievable expert loads, the ``unit`` of :func:`balance_bounds`.

        The common weight when all client weights are equal (1 when loads count
        clients), their greatest common divisor when all are integers, else ``None``.
        """
        w = self.uniform_weight
        if w is not None:
            return w
        weights = self.weights
        if np.all(weights == np.round(weights)) and float(weights.max()) < 2.0**53:
            return float(np.gcd.reduce(weights.astype(np.int64)))
        return None

    @property
    def knapsack_binding(self) -> bool:
        """Whether the memory knapsack can cut any client's choice."""
        size, budget = self.expert_size, self.client_budget
        if size is None or budget is None:
            return False

        def compute() -> bool:
            sizes = np.where(self.allowed_mask, size, 0.0)
            top = -np.sort(-sizes, axis=1)
            csum = np.concatenate([np.zeros((self.n_clients, 1)), np.cumsum(top, axis=1)], axis=1)
            k = np.minimum(self.capacity, self.n_experts)
            worst = csum[np.arange(self.n_clients), k]
            return bool((worst > budget * (1 + BOUND_RTOL)).any())

        return bool(self._cached("knapsack_binding", compute))

    @property
    def is_unimodular(self) -> bool:
        """True when the constraint matrix is totally unimodular.

        That holds when client weights are all equal and the knapsack (if any) can never
        bind: the problem is then a min-cost flow and its LP relaxation is integral.
        """
        return self.uniform_weight is not None and not self.knapsack_binding

    def effective_capacity(self) -> IntArray:
        """:math:`\\min(k_c, |\\{e : \\text{allowed}_{ce}\\}|)` per client."""
        return np.minimum(self.capacity, self.allowed_mask.sum(axis=1)).astype(np.int64)

    def average_load(self) -> float:
        """:math:`\\sum_c \\bar k_c w_c / E`, the load per expert if all capacity is used."""
        return float(np.dot(self.effective_capacity(), self.weights)) / self.n_experts

    def count_bounds(self) -> tuple[IntArray, IntArray]:
        """Integer bounds on the number of clients per expert (uniform weights only).

        Returns
        -------
        lo, hi : ndarray of int, shape (E,)
            :math:`\\lceil L_e / w \\rceil` and :math:`\\lfloor U_e / w \\rfloor`, with
            :math:`U_e = \\infty` mapped to ``n_clients``.
        """
        w = self.uniform_weight
        if w is None:
            raise InvalidProblemError("count_bounds() needs equal `client_weight` for all clients")
        # cached (read-only): every solve asks for them several times
        cache = self._cache
        if "count_bounds" not in cache:
            cache["count_bounds"] = self._count_bounds(w)
        return cast("tuple[IntArray, IntArray]", cache["count_bounds"])

    def _count_bounds(self, w: float) -> tuple[IntArray, IntArray]:
        n = self.n_clients
        lo = self.expert_min_load if w == 1.0 else self.expert_min_load / w
        hi = self.expert_max_load if w == 1.0 else self.expert_max_load / w
        lo_i = np.ceil(lo - BOUND_RTOL * np.maximum(1.0, lo)).astype(np.int64)
        # no bound (inf) or one above N clients: N (the result is capped at N anyway)
        hi_c = np.minimum(hi, n)
        hi_i = np.minimum(np.floor(hi_c + BOUND_RTOL * np.maximum(1.0, hi_c)), n)
        hi_i = hi_i.astype(np.int64)
        lo_i.setflags(write=False)  # fresh arrays: read-only without a copy
        hi_i.setflags(write=False)
        return lo_i, hi_i

    def objective(self, x: ArrayLike) -> float:
        """Objective value of a 0/1 assignment, penalty for soft bounds included."""
        xb = np.asarray(x, dtype=bool)
        value = float(self.fitness[xb].sum())
        if self.load_penalty is not None:
            excess = load_excess(self.weights @ xb, self.expert_min_load, self.expert_max_load)
            value -= self.load_penalty * float(excess.sum())
        return value

    def summary(self) -> str:
        """One line describing the problem's size and structure."""
        parts = [f"{self.n_clients} clients x {self.n_experts} experts"]
        parts.append("count loads" if self.client_weight is None else "weighted loads")
        if self.has_knapsack:
            parts.append("knapsack" + ("" if self.knapsack_binding else " (non-binding)"))
        if self.allowed is not None:
            parts.append(f"{int((~self.allowed).sum())} forbidden pairs")
        if self.fixed is not None:
            parts.append(f"{int(self.fixed.sum())} fixed pairs")
        if self.is_soft:
            parts.append(f"soft bounds (penalty {self.load_penalty:g})")
        parts.append("totally unimodular" if self.is_unimodular else "general MIP")
        return ", ".join(parts)

    def to_mps(self, path: str | os.PathLike[str]) -> Path:
        """Write the MIP model to an MPS file through HiGHS (:mod:`flexassign.export`)."""
        from .export import write_model

        return write_model(self, path, format="mps")

    def to_lp(self, path: str | os.PathLike[str]) -> Path:
        """Write the MIP model to a CPLEX LP file through HiGHS (:mod:`flexassign.export`)."""
        from .export import write_model

        return write_model(self, path, format="lp")

    def __repr__(self) -> str:
        return f"AssignmentProblem({self.summary()})"

    def _cached(self, key: str, fn: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]


#: The constructor arguments of :class:`AssignmentProblem`, in order.
FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(AssignmentProblem) if not f.name.startswith("_")
)
#: The fields indexed by client (sliced by :meth:`AssignmentProblem.take`).
_PER_CLIENT = (
    "fitness",
    "capacity",
    "min_experts",
    "client_weight",
    "client_budget",
    "allowed",
    "fixed",
)


def _check_fields(method: str, changes: dict[str, Any]) -> None:
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise ProblemTypeError(
            f"{method}() got unknown argument(s) {sorted(unknown)}; valid: {list(FIELDS)}"
        )
