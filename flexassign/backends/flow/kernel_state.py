"""``flow-warm``'s compiled kernels in this process: where numba caches them, what it
costs to make them usable, whether that pays for a solve, and compiling them ahead.

The kernels of :mod:`.ssp_kernel` are compiled by numba on first use and cached on
disk. Three costs follow, measured with ``python -m benchmarks.kernel_cost`` (numbers
in docs/install.md): the first use after installing compiles them (:data:`COMPILE_S`),
the first use in every later process loads them from the cache (:data:`LOAD_S`, mostly
``import numba``), and after that they cost nothing. This module

* picks the cache directory (:func:`cache_dir`): ``$NUMBA_CACHE_DIR`` when set, else the
  package's ``__pycache__`` when it is writable (numba's own choice), else a
  per-user directory (``$XDG_CACHE_HOME/flexassign`` or ``~/.cache/flexassign``), else
  one under the temporary directory, so a read-only install compiles once per user,
  not once per process;
* logs one WARNING line before numba starts compiling them (``compiling ... once,
  about N s``) and the time it took afterwards (INFO, logger
  ``flexassign.backends.flow.kernel_state``);
* tells :func:`~flexassign.backends.registry.min_cost_flow_order` what the kernels
  would cost now (:func:`compiled_cost_s`) and whether that pays (:func:`pays_off`);
* compiles or loads them ahead (:func:`warmup`, ``flexassign warmup``).

Nothing here imports numba until the kernels are used: the checks read file names and
modification times only.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

__all__ = [
    "COMPILE_S",
    "LOAD_S",
    "SAVING_PER_PAIR_S",
    "WarmupReport",
    "cache_dir",
    "compiled_cost_s",
    "is_cached",
    "is_loaded",
    "njit",
    "pays_off",
    "warmup",
]

_LOG = logging.getLogger(__name__)

#: Seconds to compile every kernel with an empty cache (first use after installing).
#: Measured with ``python -m benchmarks.kernel_cost`` (2026-12-07, 2 shared cores; 25 s
#: before the compiled takers, re-check and single-arc updates joined, 39.8 s after).
COMPILE_S = 40.0
#: Seconds to load them from the cache in a new process (``import numba`` included;
#: 0.8 s before, 0.97 s after).
LOAD_S = 1.0
#: Seconds that the compiled ``flow-warm`` saves against ``flow`` per client-expert
#: pair, once its kernels are loaded (count-based problems, cold, ``capacity=2``).
#: Measured in the same run as ``LOAD_S`` (the ratio is what decides, and a busy
#: machine slows both alike). The 39.8 s run measured 1.5e-7 (flow-warm got faster
#: per pair, and so did ``flow``'s share it replaces less); kept at 4.0e-7 until its
#: effect on ``auto``'s first calls is measured.
SAVING_PER_PAIR_S = 4.0e-7

_F = TypeVar("_F", bound=Callable[..., Any])

_MODULE = "flexassign.backends.flow.ssp_kernel"
_SOURCE = Path(__file__).with_name("ssp_kernel.py")
#: The kernels callers use (every other kernel is compiled inside one of these).
ENTRY_POINTS = (
    "top_candidates",
    "refine_steps",
    "ssp",
    "cheapest_takers",
    "off_candidate_best",
)

_lock = threading.Lock()
#: Expected savings forgone in this process because the kernels were not worth their
#: cost yet (see :func:`pays_off`).
_forgone_s = 0.0
_listener_installed = False
_compile_logged = False
#: Kernels numba compiled (not loaded from the cache) in this process.
_compiles = 0


def _writable(path: Path) -> bool:
    """Whether ``path`` exists or can be made, and a file can be written in it (the
    test numba makes before it caches there)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _subpath(source: Path) -> str:
    """The folder numba keeps one source directory's cache in, under a cache root
    (numba's ``_CacheLocator.get_suitable_cache_subpath``)."""
    import hashlib

    parent = os.path.dirname(os.path.abspath(source))
    digest = hashlib.sha1(parent.encode()).hexdigest()
    return f"{os.path.basename(parent)}_{digest}"


def _user_roots() -> list[Path]:
    """Per-user cache roots, most preferred first."""
    roots = []
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        roots.append(Path(xdg) / "flexassign")
    home = Path(os.path.expanduser("~"))
    if str(home) != "~":
        roots.append(home / ".cache" / "flexassign")
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    roots.append(Path(tempfile.gettempdir()) / f"flexassign-cache-{uid}")
    return roots


def _plan() -> tuple[str | None, Path | None]:
    """``(root, directory)``: the cache root to hand numba (``None``: numba's own
    choice is the one wanted) and the directory the kernels are cached in (``None``:
    nowhere is writable; each process compiles them)."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return None, Path(env) / _subpath(_SOURCE)
    in_tree = _SOURCE.parent / "__pycache__"
    if _writable(in_tree):
        return None, in_tree
    for root in _user_roots():
        if _writable(root / _subpath(_SOURCE)):
            return str(root), root / _subpath(_SOURCE)
    return None, None


def cache_dir() -> Path | None:
    """The directory numba caches the kernels in (made if missing), or ``None`` when
    no candidate is writable (then every process compiles them again).

    Examples
    --------
    >>> from flexassign.backends.flow import kernel_state
    >>> d = kernel_state.cache_dir()
    >>> d is None or d.is_dir()
    True
    """
    return _plan()[1]


def _kernels_in_source() -> list[tuple[str, int]]:
    """``(name, line)`` of each ``@njit`` function in :mod:`.ssp_kernel`: numba names
    a kernel's cache index ``ssp_kernel.<name>-<line>.py<XY>.nbi`` (``line``: the
    decorator's)."""
    lines = _SOURCE.read_text(encoding="utf-8").splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("@njit"):
            for follow in lines[i + 1 : i + 4]:
                match = re.match(r"def (\w+)\(", follow)
                if match:
                    found.append((match.group(1), i + 1))
                    break
    return found


def _entry_indexes() -> list[Path] | None:
    """The cache index files of the entry points (``None`` without a cache directory):
    loading an entry point reads only its own index (its callees are compiled into it)."""
    directory = cache_dir()
    if directory is None:
        return None
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    return [
        directory / f"ssp_kernel.{name}-{line}.{tag}.nbi"
        for name, line in _kernels_in_source()
        if name in ENTRY_POINTS
    ]


def is_cached() -> bool:
    """Whether the cache holds an index for every entry point, newer than the kernels'
    source (an estimate: numba checks the source and the CPU when it loads)."""
    indexes = _entry_indexes()
    if not indexes:
        return False
    try:
        source_time = _SOURCE.stat().st_mtime
        return all(index.stat().st_mtime >= source_time for index in indexes)
    except OSError:
        return False


def _mark_cached() -> None:
    """After a warmup that loaded or compiled every entry point: date their indexes
    now. numba loads an index whose source only changed its modification time (a
    checkout, a copy) without rewriting it, which left :func:`is_cached` answering no
    (and ``auto`` pricing a 25 s compile) for kernels that load in about a second."""
    for index in _entry_indexes() or []:
        try:
            os.utime(index)
        except OSError:  # a read-only cache: the estimate stays conservative
            return


def is_loaded() -> bool:
    """Whether every entry point has been compiled or loaded in this process."""
    module = sys.modules.get(_MODULE)
    if module is None:
        return False
    return all(getattr(getattr(module, name, None), "signatures", None) for name in ENTRY_POINTS)


def _numba_installed() -> bool:
    from ..registry import compiled_engine_installed

    return compiled_engine_installed()


def compiled_cost_s() -> float:
    """Expected seconds to make the kernels usable in this process: 0 when they are
    loaded, :data:`LOAD_S` when the cache holds them, :data:`COMPILE_S` when not
    (``inf`` without numba).

    Examples
    --------
    >>> from flexassign.backends.flow import kernel_state
    >>> kernel_state.compiled_cost_s() in (0.0, kernel_state.LOAD_S, kernel_state.COMPILE_S,
    ...                                    float("inf"))
    True
    """
    if not _numba_installed():
        return math.inf
    if is_loaded():
        return 0.0
    return LOAD_S if is_cached() else COMPILE_S


def pays_off(
    n_clients: int, n_experts: int, *, saving_per_pair: float = SAVING_PER_PAIR_S
) -> bool:
    """Whether the compiled ``flow-warm`` pays on an ``n_clients x n_experts`` problem
    in this process, counting what it costs to make the kernels usable.

    The saving expected of one solve, ``saving_per_pair`` seconds per pair (by default
    :data:`SAVING_PER_PAIR_S`, the compiled engine against ``flow``), is weighed
    against :func:`compiled_cost_s` plus nothing else once they are loaded. A "no" adds
    the saving to the savings forgone in this process, and the kernels are taken once
    the forgone savings reach their cost (the ski-rental rule: a process that solves
    many mid-size problems, like the planner's rounds, loads them after paying at most
    their cost again in slower solves; a one-shot small solve takes ``flow``).
    """
    global _forgone_s
    cost = compiled_cost_s()
    if cost == 0.0:
        return True
    if not math.isfinite(cost):
        return False
    saving = saving_per_pair * n_clients * n_experts
    with _lock:
        if _forgone_s + saving >= cost:
            return True
        _forgone_s += saving
    _LOG.debug(
        "flow-warm's compiled kernels would cost %.1f s here (saving %.3f s): taking flow",
        cost,
        saving,
    )
    return False


def _reset_forgone() -> None:
    """Forget the forgone savings (tests)."""
    global _forgone_s
    with _lock:
        _forgone_s = 0.0


class _CompileLog:
    """Logs numba's compiles of the kernels: a WARNING before the first, INFO after."""

    def __init__(self) -> None:
        self.depth = 0
        self.started = 0.0

    def on_start(self, event: Any) -> None:
        global _compile_logged, _compiles
        if not _ours(event):
            return
        _compiles += 1
        self.depth += 1
        if self.depth > 1:
            return
        self.started = time.perf_counter()
        name = event.data["dispatcher"].py_func.__name__
        if not _compile_logged:
            _compile_logged = True
            where = cache_dir()
            _LOG.warning(
                "flexassign: compiling flow-warm's kernels (numba) once, about %.0f s; "
                "%s (run `flexassign warmup` after installing to do this ahead)",
                COMPILE_S,
                f"cached in {where}" if where else "no writable cache directory: every "
                "process compiles them (set NUMBA_CACHE_DIR)",
            )
        else:
            _LOG.info("compiling flow-warm's kernel %s", name)

    def on_end(self, event: Any) -> None:
        if not _ours(event):
            return
        self.depth -= 1
        if self.depth == 0:
            name = event.data["dispatcher"].py_func.__name__
            _LOG.info("compiled %s in %.1f s", name, time.perf_counter() - self.started)


def _ours(event: Any) -> bool:
    dispatcher = event.data.get("dispatcher") if isinstance(event.data, dict) else None
    return getattr(getattr(dispatcher, "py_func", None), "__module__", None) == _MODULE


def _install_listener() -> None:
    global _listener_installed
    if _listener_installed:
        return
    from numba.core import event

    class Listener(event.Listener):
        def __init__(self) -> None:
            self.log = _CompileLog()

        def on_start(self, ev: Any) -> None:
            self.log.on_start(ev)

        def on_end(self, ev: Any) -> None:
            self.log.on_end(ev)

    event.register("numba:compile", Listener())
    _listener_installed = True


def njit(*, cache: bool = True) -> Callable[[_F], _F]:
    """``numba.njit(cache=cache)`` with the cache in :func:`cache_dir`, and compiles
    logged: the decorator of every kernel in :mod:`.ssp_kernel`.

    Without a writable cache directory the kernel is compiled in memory (each process
    compiles it once). numba's setting of the cache root is changed only while the
    kernel is decorated, so other numba code in the process keeps its own.
    """
    import numba

    config: Any = numba.config
    _install_listener()

    def decorate(func: _F) -> _F:
        root, directory = _plan()
        if not cache or directory is None:
            return cast(_F, numba.njit(cache=False)(func))
        if root is None:
            return cast(_F, numba.njit(cache=True)(func))
        previous = config.CACHE_DIR
        config.CACHE_DIR = root
        try:
            return cast(_F, numba.njit(cache=True)(func))
        finally:
            config.CACHE_DIR = previous

    return decorate


@dataclass(frozen=True)
class WarmupReport:
    """What :func:`warmup` did.

    Attributes
    ----------
    seconds : float
        Wall time of the warmup.
    action : str
        ``"compiled"`` (numba compiled at least one kernel), ``"loaded"`` (from the
        cache) or ``"ready"`` (already loaded in this process).
    cache_dir : pathlib.Path or None
        Where the kernels are cached (``None``: nowhere writable).
    """

    seconds: float
    action: str
    cache_dir: Path | None

    def __str__(self) -> str:
        where = f"cached in {self.cache_dir}" if self.cache_dir else "not cached (no writable dir)"
        if self.action == "ready":
            return "flow-warm's compiled kernels: already loaded in this process"
        return f"flow-warm's compiled kernels: {self.action} in {self.seconds:.1f} s; {where}"


def _warmup_problems() -> list[tuple[Any, dict[str, Any]]]:
    """Small problems whose ``flow-warm`` solves (compiled engine) call every entry
    point with the argument types real solves use."""
    from ...problem import AssignmentProblem

    rng = np.random.default_rng(0)
    # above warm_solve._SSP_FULL_PAIRS, so that candidates are picked (top_candidates)
    cold = AssignmentProblem.balanced(rng.random((4000, 64)), capacity=2, tolerance=0.1)
    prices = rng.normal(size=64)
    return [
        (cold, {"engine": "ssp"}),
        (cold, {"engine": "ssp", "prices": prices}),
    ]


def _refine_once() -> None:
    """One compiled price refinement (``flow-warm`` takes it only on some problems;
    :func:`.prices.refine_prices` converts every argument, so the types are these)."""
    from .prices import refine_prices

    idx = np.array([[0, 1], [0, 1], [0, 1]])
    val = np.array([[10.0, 4.0], [9.0, 5.0], [8.0, 6.0]])
    one = np.ones(3, dtype=np.int64)
    bounds = np.array([1, 1]), np.array([2, 2])
    zero = np.zeros(2, dtype=np.int64)
    refine_prices(idx, val, one, one, *bounds, zero, steps=3, damping=0.8, compiled=True)


def _passes_once() -> None:
    """One call of each compiled pass that ``flow-warm`` takes only on some problems
    (takers for short experts, exact re-checks off the candidates), with the argument
    types of :mod:`.warm_ssp`."""
    kernels = sys.modules.get(_MODULE) or importlib.import_module(_MODULE)
    fitness = np.array([[0.5, 0.25, 0.125], [0.75, 0.5, 0.0]])
    rows = np.arange(2, dtype=np.int64)
    p = np.zeros(3)
    cand = np.array([[0], [1]], dtype=np.int64)
    gain = np.array([[1], [1]], dtype=np.int64)
    kernels.cheapest_takers(
        fitness,
        rows,
        4.0,
        p,
        np.array([2], dtype=np.int64),
        np.array([1], dtype=np.int64),
        np.zeros(2),
        cand,
        gain,
    )
    kernels.off_candidate_best(fitness, rows, 4.0, p, cand, gain)


def warmup() -> WarmupReport:
    """Compile ``flow-warm``'s kernels now, or load them from the cache, so that later
    solves in this process (and, once cached, in every process) pay nothing.

    Run it once after installing (``flexassign warmup``); in a long-running process
    call it at start-up to take the load off the first round.

    Returns
    -------
    WarmupReport

    Raises
    ------
    flexassign.BackendNotInstalledError
        numba is not installed (the ``compiled`` extra).
    """
    from ...errors import BackendNotInstalledError
    from ...solve import solve_assignment

    if not _numba_installed():
        raise BackendNotInstalledError(
            "flow-warm's compiled kernels need numba, which is not installed; install it "
            'from a clone with: pip install -e ".[compiled]" -c constraints.txt'
        )
    if is_loaded():
        return WarmupReport(0.0, "ready", cache_dir())
    before = _compiles
    t0 = time.perf_counter()
    for problem, options in _warmup_problems():
        solve_assignment(problem, method="flow-warm", options=options)
    _refine_once()
    _passes_once()
    missing = [name for name in ENTRY_POINTS if not _entry_signatures(name)]
    if missing:  # pragma: no cover - the problems above stopped reaching a kernel
        raise RuntimeError(f"warmup did not reach the kernels {missing}")
    _mark_cached()
    action = "compiled" if _compiles > before else "loaded"
    return WarmupReport(time.perf_counter() - t0, action, cache_dir())


def _entry_signatures(name: str) -> list[Any]:
    module = sys.modules.get(_MODULE)
    return list(getattr(getattr(module, name, None), "signatures", None) or [])
