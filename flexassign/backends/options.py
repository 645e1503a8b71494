"""The backend options contract: each backend declares the ``options=`` it accepts.

An :class:`OptionSpec` names one option, its default, what it means and how to check
a value. :func:`validate_options` runs before any solver: unknown keys raise an error
that lists the valid ones, bad values raise an error naming the option (e.g.
``"`options['prune_margin']` must be an integer >= 1; got 0"``). The declarations
below are the single list of every built-in backend's options; the registry attaches
them to the backends and ``flexassign backends`` prints them.

One name per concept across backends: ``warm_start`` (a 0/1 start assignment),
``prune`` and ``prune_margin`` (solve on each client's best candidates first),
``prices`` (expert prices from an earlier round).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_int, check_real
from ..errors import InvalidProblemError, ProblemTypeError
from ..problem import AssignmentProblem

__all__ = ["AUTO", "OptionSpec", "describe_options", "options_for", "validate_options"]

Checker = Callable[[str, Any, AssignmentProblem], Any]


@dataclass(frozen=True)
class OptionSpec:
    """One backend option.

    Attributes
    ----------
    name : str
        The key in ``options=``.
    kind : str
        The accepted values, in words (shown by ``flexassign backends``).
    default : Any
        The value used when the key is absent (``None``: not set).
    help : str
        What it does.
    check : callable
        ``check(label, value, problem)`` returns the converted value or raises an
        error naming ``label`` (``"options['name']"``).
    """

    name: str
    kind: str
    default: Any
    help: str
    check: Checker

    def describe(self) -> str:
        default = "" if self.default is None else f", default {self.default!r}"
        return f"{self.name} ({self.kind}{default}): {self.help}"


def validate_options(
    backend: str,
    specs: tuple[OptionSpec, ...] | None,
    options: Mapping[str, Any] | None,
    problem: AssignmentProblem,
) -> dict[str, Any]:
    """Check ``options`` against a backend's declared specs and fill in the defaults.

    ``specs=None`` (a third-party backend that declares nothing) passes the options
    through unchecked.

    Raises
    ------
    InvalidProblemError
        An unknown key (the message lists the valid ones) or a bad value.
    ProblemTypeError
        ``options`` is not a mapping, a key is not a string, or a value has the wrong type.

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign import AssignmentProblem
    >>> from flexassign.backends.registry import get_backend
    >>> p = AssignmentProblem(np.ones((2, 2)))
    >>> validate_options("flow", get_backend("flow").options, {"prune_margin": 2}, p)
    {'prune': 'auto', 'prune_margin': 2, 'max_rounds': 8, 'prices': None}
    >>> validate_options("flow", get_backend("flow").options, {"margin": 2}, p)
    Traceback (most recent call last):
    ...
    flexassign.errors.InvalidProblemError: unknown option `options['margin']` for method ...
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ProblemTypeError(f"`options` must be a mapping or None; got {type(options).__name__}")
    for key in options:
        if not isinstance(key, str):
            raise ProblemTypeError(f"`options` keys must be strings; got {key!r}")
    if specs is None:
        return dict(options)
    by_name = {s.name: s for s in specs}
    unknown = [k for k in options if k not in by_name]
    if unknown:
        valid = ", ".join(repr(s.name) for s in specs) or "none"
        raise InvalidProblemError(
            f"unknown option `options[{unknown[0]!r}]` for method {backend!r}; "
            f"valid options: {valid}"
        )
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.name in options and options[spec.name] is not None:
            out[spec.name] = spec.check(f"options[{spec.name!r}]", options[spec.name], problem)
        else:
            out[spec.name] = spec.default
    return out


def describe_options(specs: tuple[OptionSpec, ...] | None) -> list[str]:
    """One line per option, for ``flexassign backends``."""
    if specs is None:
        return ["(options not declared: passed to the backend unchecked)"]
    return [s.describe() for s in specs]


# ----------------------------------------------------------------------------- checkers
def _int_at_least(lo: int) -> Checker:
    def check(label: str, value: Any, problem: AssignmentProblem) -> int:
        return check_int(label, value, lo=lo)

    return check


def _positive_seconds(label: str, value: Any, problem: AssignmentProblem) -> float:
    return check_real(label, value, lo=0.0, lo_open=True)


def _flag(label: str, value: Any, problem: AssignmentProblem) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ProblemTypeError(f"`{label}` must be True or False; got {value!r}")
    return bool(value)


def _prune(label: str, value: Any, problem: AssignmentProblem) -> str | bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if value == "auto":
        return "auto"
    raise InvalidProblemError(f"`{label}` must be 'auto', True or False; got {value!r}")


#: ``flow-warm``'s ``options["engine"]``: its compiled repair (``"ssp"``, needs numba),
#: its OR-Tools open-set solve (``"ortools"``), or ``"auto"`` (the backend decides).
WARM_ENGINES = ("auto", "ssp", "ortools")


def _engine(label: str, value: Any, problem: AssignmentProblem) -> str:
    if not isinstance(value, str) or value not in WARM_ENGINES:
        raise InvalidProblemError(f"`{label}` must be one of {WARM_ENGINES}; got {value!r}")
    return value


def _assignment(label: str, value: Any, problem: AssignmentProblem) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise ProblemTypeError(f"`{label}` must be a 0/1 matrix: {exc}") from None
    if arr.shape != problem.shape:
        raise InvalidProblemError(
            f"`{label}` must be a 0/1 matrix of shape {problem.shape}; got shape {arr.shape}"
        )
    if arr.dtype != np.bool_:
        if arr.dtype == object or not np.isin(arr, (0, 1)).all():
            raise InvalidProblemError(f"`{label}` must hold only 0/1 (or booleans)")
        arr = arr.astype(bool)
    return arr


def _prices(label: str, value: Any, problem: AssignmentProblem) -> np.ndarray:
    e = problem.n_experts
    if isinstance(value, str | bytes | bool | np.bool_ | Mapping):
        raise ProblemTypeError(
            f"`{label}` must be {e} finite expert prices (numbers); got {type(value).__name__}"
        )
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        raw = np.full(0, np.nan)
    if raw.dtype.kind not in "iuf" and not (
        raw.dtype == object and all(_is_number(v) for v in raw.reshape(-1).tolist())
    ):
        raise ProblemTypeError(
            f"`{label}` must be {e} finite expert prices (numbers); got dtype {raw.dtype}"
        )
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        arr = np.full(0, np.nan)
    if arr.shape != (e,) or not np.isfinite(arr).all():
        raise InvalidProblemError(
            f"`{label}` must be {e} finite expert prices (e.g. "
            "result.stats['expert_prices'] of an earlier round)"
        )
    return arr


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


def _str_mapping(label: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ProblemTypeError(f"`{label}` must be a mapping; got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise ProblemTypeError(f"`{label}` keys must be strings; got {key!r}")
    return dict(value)


def _highs_options(label: str, value: Any, problem: AssignmentProblem) -> dict[str, Any]:
    raw = _str_mapping(label, value)
    if raw:
        from ._highs import check_highs_options

        check_highs_options(label, raw)
    return raw


def _cpsat_parameters(label: str, value: Any, problem: AssignmentProblem) -> dict[str, Any]:
    raw = _str_mapping(label, value)
    if raw:
        from ortools.sat import sat_parameters_pb2

        params = sat_parameters_pb2.SatParameters()
        for key, val in raw.items():
            try:
                setattr(params, key, val)
            except AttributeError:
                raise InvalidProblemError(
                    f"`{label}[{key!r}]` is not a CP-SAT parameter (see SatParameters)"
                ) from None
            except (TypeError, ValueError) as exc:
                raise InvalidProblemError(f"`{label}[{key!r}]` has a bad value: {exc}") from None
    return raw


def _solver_name(label: str, value: Any, problem: AssignmentProblem) -> str:
    if not isinstance(value, str) or not value:
        raise ProblemTypeError(f"`{label}` must be a Pyomo solver name; got {value!r}")
    return value


def _solver_options(label: str, value: Any, problem: AssignmentProblem) -> dict[str, Any]:
    return _str_mapping(label, value)


def _callable(label: str, value: Any, problem: AssignmentProblem) -> Any:
    if not callable(value):
        raise ProblemTypeError(f"`{label}` must be a callable taking the Pyomo model")
    return value


def _lp_presolve(label: str, value: Any, problem: AssignmentProblem) -> str:
    if value not in ("off", "on", "choose"):
        raise InvalidProblemError(f"`{label}` must be 'off', 'on' or 'choose'; got {value!r}")
    return str(value)


# ----------------------------------------------------------------------------- declarations
WARM_START = OptionSpec(
    "warm_start",
    "0/1 matrix (N, E)",
    None,
    "a start assignment (e.g. another method's result.x); kept as the first incumbent",
    _assignment,
)
PRUNE = OptionSpec(
    "prune",
    "'auto', True or False",
    "auto",
    "solve on each client's best candidate pairs first ('auto': on large problems)",
    _prune,
)
PRUNE_MARGIN = OptionSpec(
    "prune_margin",
    "int >= 1",
    4,
    "candidates per client beyond its capacity when pruning",
    _int_at_least(1),
)
PRICES = OptionSpec(
    "prices",
    "E finite floats",
    None,
    "expert prices from an earlier round (result.stats['expert_prices']) to pick candidates",
    _prices,
)

FLOW = (
    PRUNE,
    PRUNE_MARGIN,
    OptionSpec(
        "max_rounds", "int >= 1", 8, "certificate rounds before the full network", _int_at_least(1)
    ),
    PRICES,
)
FLOW_WARM = (
    PRUNE_MARGIN,
    OptionSpec(
        "max_rounds",
        "int >= 1",
        12,
        "certificate rounds before falling back to flow",
        _int_at_least(1),
    ),
    PRICES,
    OptionSpec(
        "engine",
        "'auto', 'ssp' or 'ortools'",
        "auto",
        "repair by compiled shortest paths (numba) or solve the open clients with "
        "OR-Tools ('auto': the compiled repair while experts have few clients each)",
        _engine,
    ),
)
HIGHS = (
    WARM_START,
    OptionSpec(
        "highs_options",
        "mapping of HiGHS option names",
        None,
        "raw HiGHS options, set after flexassign's own (names and values checked)",
        _highs_options,
    ),
)
SCIPY: tuple[OptionSpec, ...] = ()
CPSAT = (
    WARM_START,
    OptionSpec(
        "cpsat_parameters",
        "mapping of SatParameters fields",
        None,
        "raw CP-SAT parameters, set after flexassign's own (names and values checked)",
        _cpsat_parameters,
    ),
)
PYOMO = (
    OptionSpec(
        "solver", "Pyomo solver name", "appsi_highs", "the solver Pyomo drives", _solver_name
    ),
    OptionSpec(
        "solver_options", "mapping", None, "raw options handed to the solver", _solver_options
    ),
    OptionSpec(
        "customize",
        "callable(model)",
        None,
        "called on the Pyomo model before solving",
        _callable,
    ),
)
LP_ROUND = (
    PRUNE,
    PRUNE_MARGIN,
    OptionSpec(
        "repair_time_limit", "seconds > 0", 10.0, "cap on each repair MIP", _positive_seconds
    ),
    OptionSpec(
        "repair_extra",
        "int >= -1",
        3,
        "non-support pairs per fractional client in the first repair MIP (-1 skips it)",
        _int_at_least(-1),
    ),
    OptionSpec(
        "repair_highs_options",
        "mapping",
        None,
        "raw HiGHS options for the repair MIPs",
        _highs_options,
    ),
    OptionSpec(
        "cost_shift", "bool", True, "solve the LP with per-client shifted costs (faster)", _flag
    ),
    OptionSpec(
        "lp_presolve", "'off', 'on' or 'choose'", "off", "HiGHS presolve for the LP", _lp_presolve
    ),
)
GREEDY: tuple[OptionSpec, ...] = ()
PRICE = (
    OptionSpec(
        "prune_margin",
        "int >= 1",
        3,
        "candidate experts per client beyond its capacity",
        _int_at_least(1),
    ),
    OptionSpec(
        "max_rounds",
        "int >= 1",
        12,
        "trust-region moves per sample level before that level's LP is solved without a box",
        _int_at_least(1),
    ),
    OptionSpec(
        "prices",
        "E finite floats",
        None,
        "expert prices from an earlier round (result.stats['expert_prices']): a warm start",
        _prices,
    ),
)


def _auto_engine(label: str, value: Any, problem: AssignmentProblem) -> str:
    engine = _engine(label, value, problem)
    if engine == "ssp":
        import importlib.util

        if importlib.util.find_spec("numba") is None:
            raise InvalidProblemError(f"`{label}`='ssp' needs numba (pip install numba)")
    return engine


def _union(*groups: tuple[OptionSpec, ...]) -> tuple[OptionSpec, ...]:
    """The options of several backends, each name once (the first declaration's
    checker; every backend checks the same name the same way), defaults left unset:
    the backend ``auto`` picks fills in its own."""
    seen: dict[str, OptionSpec] = {}
    for group in groups:
        for spec in group:
            if spec.name not in seen:
                seen[spec.name] = OptionSpec(spec.name, spec.kind, None, spec.help, spec.check)
    return tuple(seen.values())


#: What ``method="auto"`` accepts, whatever backend it picks: every option of the
#: backends it may pick (the min-cost flow family, the price method, HiGHS), so that
#: a call never starts failing when the problem grows by one client. The chosen
#: backend gets the ones it declares (:func:`options_for`); the others are ignored.
AUTO = _union(
    FLOW,
    tuple(
        OptionSpec(
            s.name, s.kind, s.default, s.help, _auto_engine if s.name == "engine" else s.check
        )
        for s in FLOW_WARM
    ),
    PRICE,
    HIGHS,
)


def options_for(
    backend: str,
    specs: tuple[OptionSpec, ...] | None,
    checked: Mapping[str, Any],
    problem: AssignmentProblem,
) -> tuple[dict[str, Any], list[str]]:
    """Options checked against :data:`AUTO` handed to the backend ``auto`` picked: the
    ones it declares (its defaults for the rest) and the names it ignores.

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign import AssignmentProblem
    >>> from flexassign.backends.registry import get_backend
    >>> p = AssignmentProblem(np.ones((2, 2)))
    >>> got = validate_options("auto", AUTO, {"prune": False, "engine": "ortools"}, p)
    >>> options_for("flow", get_backend("flow").options, got, p)[1]
    ['engine']
    """
    given = {k: v for k, v in checked.items() if v is not None}
    if specs is None:
        return given, []
    names = {s.name for s in specs}
    ignored = sorted(k for k in given if k not in names)
    out = {s.name: given.get(s.name, s.default) for s in specs}
    return out, ignored
