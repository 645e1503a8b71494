"""The backend registry: names, features, and lazy loading.

Each backend is declared once with the features it supports and the packages it
needs. Availability is probed with :func:`importlib.util.find_spec`, so importing
flexassign never imports a solver package; the backend module is imported the first
time it runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Any, cast

from ..errors import BackendNotInstalledError, UnknownMethodError, UnsupportedProblemError
from ..problem import AssignmentProblem
from . import options as _opts
from .base import SolveFunction
from .options import OptionSpec

__all__ = [
    "Backend",
    "auto_order",
    "available_backends",
    "compiled_engine_installed",
    "compiled_kernel",
    "get_backend",
    "list_backends",
    "min_cost_flow_order",
    "register_backend",
]

#: From this many client-expert pairs ``auto`` tries ``flow-warm`` before ``flow``
#: (below it ``flow`` on candidate arcs, with cold prices from its own estimate, is
#: faster; see docs/benchmarks.md). Measured 2026-12-01 (CPU, round-2 drift of
#: ``benchmarks.speed``, best of 3-5, one process): cold, ``flow`` wins at 1,000 x 64
#: (7.4 vs 23 ms), 3,000 x 64 (21 vs 71), 5,000 x 32 (29 vs 32), 1,000 x 256 (31 vs 43)
#: and 10,000 x 64 (86 vs 96).
WARM_MIN_PAIRS = 1_000_000
#: With expert prices handed over (the Planner's rounds) ``flow-warm`` goes first from
#: ``WARM_PRICED_ANY_PAIRS`` pairs, and from ``WARM_PRICED_MIN_PAIRS`` when there are at
#: least ``WARM_PRICED_CLIENTS_PER_EXPERT`` clients per expert (it freezes most clients
#: at their price-induced choice, which pays when each expert has many). Measured
#: 2026-12-01 18:10 against main's flow-warm of that hour (mean of 3 seeds, best of 3, ms,
#: flow / flow-warm): flow-warm wins at 1,000 x 32 4.5 / 3.8, 1,600 x 64 8.6 / 6.5,
#: 2,000 x 64 10.4 / 6.9, 3,000 x 64 15.4 / 9.0, 1,500 x 128 14.6 / 13.0, 1,000 x 256
#: 21.7 / 20.3, 2,000 x 256 30.2 / 25.9; flow at 800 x 32 3.7 / 4.2, 700 x 64 3.9 / 5.8,
#: 1,000 x 64 5.7 / 6.4, 1,000 x 96 7.1 / 8.8, 600 x 128 5.7 / 10.0. flow-warm is being
#: reworked: re-measure when it changes.
WARM_PRICED_ANY_PAIRS = 100_000
WARM_PRICED_MIN_PAIRS = 30_000
WARM_PRICED_CLIENTS_PER_EXPERT = 25
#: With its compiled repair (numba installed) ``flow-warm`` goes first, cold or priced,
#: from ``WARM_COMPILED_MIN_PAIRS`` pairs with at least ``WARM_COMPILED_MIN_EXPERTS``
#: experts and ``WARM_COMPILED_CLIENTS_PER_EXPERT`` clients per expert (the rules above
#: apply without numba). Measured with ``python -m benchmarks.crossover`` (2026-12-01
#: 21:40 UTC, seeds 40-42, mean of best of 3, ``flow-warm`` / ``flow`` time, cold /
#: priced / k = 1): 300 x 16 0.84 / 0.60 / 0.89, 1,000 x 64 0.61 / 0.43 / 0.56,
#: 10,000 x 64 0.39 / 0.31 / 0.34, 2,000 x 8 0.68 / 0.42 / 0.60, 256 x 256 0.48 / 0.57 /
#: 0.50, 500 x 256 0.55 / 0.53 / 0.49, 130 x 32 0.96 / 0.60 / 0.95, 500 x 8 1.05 / 0.62;
#: ``flow`` ahead cold at 200 x 8 (1.37), with 4 experts (1,000 x 4: 1.45) and with
#: fewer clients than experts (64 x 128: 1.13; 100 x 256: 5.9, a handover to OR-Tools).
WARM_COMPILED_MIN_PAIRS = 4_000
WARM_COMPILED_MIN_EXPERTS = 8
WARM_COMPILED_CLIENTS_PER_EXPERT = 1


@dataclass(frozen=True)
class Backend:
    """A registered solver backend.

    Attributes
    ----------
    name : str
        What users pass as ``method``.
    module : str
        Import path of the module that defines ``solve(problem, options)``.
    requires : tuple of str
        Import names of the packages it needs.
    extra : str or None
        The pip extra that installs them (``pip install -e ".[<extra>]"`` from a clone).
    kind : str
        ``"exact"`` (proves optimality), ``"heuristic"`` (feasible, no proof) or
        ``"baseline"`` (may break constraints on purpose, like greedy top-k).
    weighted, knapsack, soft : bool
        Whether it handles client-weighted loads, the memory knapsack, soft load bounds.
    time_limit : bool
        Whether it honours ``time_limit``.
    description : str
    options : tuple of OptionSpec, or None
        The ``options=`` keys it accepts (:mod:`flexassign.backends.options`);
        ``None`` (third-party backends that declare nothing) passes them unchecked.
    """

    name: str
    module: str
    requires: tuple[str, ...]
    extra: str | None
    kind: str
    weighted: bool
    knapsack: bool
    soft: bool
    time_limit: bool
    description: str
    options: tuple[OptionSpec, ...] | None = None

    @property
    def exact(self) -> bool:
        return self.kind == "exact"

    def installed(self) -> bool:
        """Whether every package it needs can be imported (probed, not imported)."""
        return all(_has_module(mod) for mod in self.requires)

    def unsupported_reason(self, problem: AssignmentProblem) -> str | None:
        """Why this backend cannot solve ``problem`` exactly as posed, or ``None``."""
        if not self.weighted and problem.uniform_weight is None:
            return f"method {self.name!r} needs equal client weights (count-based loads)"
        if not self.knapsack and problem.knapsack_binding:
            return f"method {self.name!r} does not handle a binding memory knapsack"
        if not self.soft and problem.is_soft:
            return f"method {self.name!r} does not handle soft load bounds (`load_penalty`)"
        return None

    def load(self) -> SolveFunction:
        """Import the backend module and return its ``solve`` function."""
        if not self.installed():
            missing = [m for m in self.requires if not _has_module(m)]
            hint = (
                f'pip install -e ".[{self.extra}]" -c constraints.txt (from a clone)'
                if self.extra
                else "pip install " + (" ".join(missing))
            )
            raise BackendNotInstalledError(
                f"method {self.name!r} needs {', '.join(missing)}, which is not installed; "
                f"install it with: {hint}"
            )
        module = sys.modules.get(self.module) or importlib.import_module(self.module)
        return cast(SolveFunction, module.solve)


def _has_module(name: str) -> bool:
    if sys.modules.get(name) is not None:  # imported already: no search on the path
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend, *, replace: bool = False) -> None:
    """Add a backend to the registry (third parties may register their own)."""
    if backend.name in _REGISTRY and not replace:
        raise ValueError(f"a backend named {backend.name!r} is already registered")
    if backend.kind not in ("exact", "heuristic", "baseline"):
        raise ValueError(f"`kind` must be 'exact', 'heuristic' or 'baseline'; got {backend.kind!r}")
    _REGISTRY[backend.name] = backend


def list_backends() -> list[Backend]:
    """Every registered backend, installed or not, in registration order."""
    return list(_REGISTRY.values())


def available_backends() -> list[str]:
    """Names of the registered backends whose packages are installed."""
    return [b.name for b in _REGISTRY.values() if b.installed()]


def get_backend(name: str) -> Backend:
    """Look a backend up by name, with an error that lists the valid names."""
    if not isinstance(name, str):
        raise UnknownMethodError(f"`method` must be a string; got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(repr(n) for n in ["auto", *_REGISTRY])
        raise UnknownMethodError(f"unknown `method` {name!r}; valid methods: {valid}") from None


def min_cost_flow_order(problem: AssignmentProblem, *, priced: bool = False) -> list[str]:
    """The min-cost flow backends ``auto`` tries for a totally unimodular problem, in order
    (``priced``: expert prices from an earlier round come with the call)."""
    n, e = problem.shape
    pairs = n * e
    # from WARM_MIN_PAIRS flow-warm is taken anyway: its engine choice then asks
    # pays_off once (asking here too would count the forgone saving twice)
    compiled = (
        pairs < WARM_MIN_PAIRS
        and pairs >= WARM_COMPILED_MIN_PAIRS
        and e >= WARM_COMPILED_MIN_EXPERTS
        and n >= WARM_COMPILED_CLIENTS_PER_EXPERT * e
        and compiled_engine_installed()
        and _kernel_state().pays_off(n, e)  # their load or compile cost this process
    )
    warm = (
        pairs >= WARM_MIN_PAIRS
        or compiled
        or (
            priced
            and (
                pairs >= WARM_PRICED_ANY_PAIRS
                or (pairs >= WARM_PRICED_MIN_PAIRS and n >= WARM_PRICED_CLIENTS_PER_EXPERT * e)
            )
        )
    )
    return ["flow-warm", "flow"] if warm else ["flow", "flow-warm"]


#: MIP backends ``auto`` tries, in order, when no faster method applies.
AUTO_MIP = ("highs", "scipy", "cpsat")


#: Up to this many client-expert pairs ``auto`` proves weighted and knapsack problems
#: with a MIP backend (milliseconds at this size; the offset-aware normalisation and the
#: post-solve guard keep its OPTIMAL true) instead of stopping at the price method's gap.
AUTO_MIP_PAIRS = 4096


def auto_order(
    problem: AssignmentProblem, *, priced: bool = False, proof: bool = False
) -> list[str]:
    """The backends ``auto`` tries for ``problem``, in order (the first installed one
    that supports it runs).

    Totally unimodular problems: the min-cost flow family
    (:func:`min_cost_flow_order`), exact. Weighted loads or a binding memory knapsack
    with hard load bounds: the ``price`` method (a feasible assignment with a true
    bound, stopped at ``mip_gap``, default 1e-4), unless ``proof`` (``mip_gap=0``)
    asks for a proven optimum, which takes the MIP backends. Soft bounds, and problems
    of at most :data:`AUTO_MIP_PAIRS` client-expert pairs (where a proof costs
    milliseconds): MIP.
    """
    if problem.is_unimodular:
        return [*min_cost_flow_order(problem, priced=priced), *AUTO_MIP]
    if proof or problem.is_soft or problem.fitness.size <= AUTO_MIP_PAIRS:
        return list(AUTO_MIP)
    return ["price", *AUTO_MIP]


def compiled_kernel(name: str) -> Any:
    """The compiled function ``name`` of :mod:`flexassign.backends.flow.ssp_kernel`, or
    ``None`` when numba is missing or broken (callers then run their NumPy code, which
    computes the same)."""
    try:
        kernels = importlib.import_module("flexassign.backends.flow.ssp_kernel")
    except ImportError:
        return None
    return getattr(kernels, name)


def _kernel_state() -> Any:
    """:mod:`flexassign.backends.flow.kernel_state` (imported on first use)."""
    return importlib.import_module("flexassign.backends.flow.kernel_state")


def compiled_engine_installed() -> bool:
    """Whether ``flow-warm``'s compiled repair can run (numba is installed; looked up
    without importing it, which takes a quarter of a second)."""
    return importlib.util.find_spec("numba") is not None


def check_supported(backend: Backend, problem: AssignmentProblem) -> None:
    reason = backend.unsupported_reason(problem)
    if reason is not None:
        raise UnsupportedProblemError(
            f"{reason}; use method='auto' or one of: "
            + ", ".join(
                repr(b.name) for b in _REGISTRY.values() if b.unsupported_reason(problem) is None
            )
        )


#: Where a built-in backend's module is when it is not ``flexassign.backends.<name>``.
_MODULES = {
    "flow": "flexassign.backends.flow.cold",
    "flow-warm": "flexassign.backends.flow.warm",
    "price": "flexassign.backends.price.method",
    "pyomo": "flexassign.backends.pyomo_model",
    "scipy": "flexassign.backends.scipy_milp",
}
#: The pip extra of a built-in backend whose packages are not core dependencies.
_EXTRAS = {"pyomo": "pyomo"}
_FEATURES = ("weighted", "knapsack", "soft", "time_limit")

#: The built-in backends, in registration order: name, packages it needs, kind, the
#: features it supports (of ``_FEATURES``, space separated), options, description.
_BUILTINS: tuple[tuple[str, tuple[str, ...], str, str, tuple[OptionSpec, ...], str], ...] = (
    (
        "flow",
        ("ortools",),
        "exact",
        "soft",
        _opts.FLOW,
        "exact min-cost flow (OR-Tools SimpleMinCostFlow); count-based loads; large "
        "problems solve on candidate arcs with a reduced-cost optimality certificate",
    ),
    (
        "flow-warm",
        ("ortools",),
        "exact",
        "",
        _opts.FLOW_WARM,
        "exact min-cost flow warm-started from expert prices (options['prices'] or a "
        "sampled estimate): each client's choice at the prices is repaired by compiled "
        "shortest paths (numba) or an OR-Tools solve of the uncertain clients, and a "
        "complementary-slackness certificate proves the optimum",
    ),
    (
        "highs",
        ("highspy",),
        "exact",
        "weighted knapsack soft time_limit",
        _opts.HIGHS,
        "MIP through HiGHS (highspy), built in bulk from sparse arrays",
    ),
    (
        "greedy",
        (),
        "baseline",
        "weighted knapsack soft",
        _opts.GREEDY,
        "paper baseline: each client takes its top-k by fitness, ignoring balance",
    ),
    (
        "greedy-balanced",
        (),
        "heuristic",
        "weighted knapsack soft",
        _opts.GREEDY,
        "capacity- and load-aware greedy heuristic (no optimality proof)",
    ),
    (
        "cpsat",
        ("ortools",),
        "exact",
        "weighted knapsack soft time_limit",
        _opts.CPSAT,
        "MIP through OR-Tools CP-SAT with exact (or reported) integer scaling",
    ),
    (
        "pyomo",
        ("pyomo", "highspy"),
        "exact",
        "weighted knapsack soft time_limit",
        _opts.PYOMO,
        "Pyomo model (build_pyomo_model) solved by appsi_highs or options['solver']",
    ),
    (
        "scipy",
        (),
        "exact",
        "weighted knapsack soft time_limit",
        _opts.SCIPY,
        "MIP through scipy.optimize.milp (no extra dependency)",
    ),
    (
        "price",
        ("highspy",),
        "heuristic",
        "weighted knapsack",
        _opts.PRICE,
        "expert prices (Lagrangian dual, warm-started from options['prices']), each "
        "client's choice at them, the uncertain core solved by HiGHS; a true price "
        "bound and gap (default 1e-4, mip_gap); auto's choice for weighted and knapsack "
        "problems",
    ),
    (
        "lp-round",
        ("highspy",),
        "heuristic",
        "weighted knapsack soft time_limit",
        _opts.LP_ROUND,
        "LP relaxation (HiGHS) + rounding and repair; LP bound and gap reported",
    ),
)


def _register_builtins() -> None:
    for name, requires, kind, features, options, description in _BUILTINS:
        flags = features.split()
        unknown = set(flags) - set(_FEATURES)
        if unknown:  # pragma: no cover - a typo in the table above
            raise ValueError(f"backend {name!r}: unknown features {sorted(unknown)}")
        register_backend(
            Backend(
                name=name,
                module=_MODULES.get(name, f"flexassign.backends.{name.replace('-', '_')}"),
                requires=requires,
                extra=_EXTRAS.get(name),
                kind=kind,
                description=description,
                options=options,
                **{feature: feature in flags for feature in _FEATURES},
            )
        )


_register_builtins()
