"""Run the solver benchmark suite: every method x size x variant, one forked process per cell.

Each cell runs in a child process forked from the runner (so nothing is imported
twice and a cell that overruns can be killed): the child solves the instance
``repeats`` times through :func:`flexassign.solve_assignment` and reports the
median and best time, the solver's build/solve split, objective, bound, violations
and load spread; the parent reads the child's peak resident memory from
``os.wait4`` (it includes the interpreter, the libraries and the instance, about
the floor any caller pays). Gaps to the best known objective are computed per
instance once all methods ran. The interleaved speed comparison against greedy
lives in :mod:`benchmarks.speed`; tables and figures in :mod:`benchmarks.report`;
the command line in :mod:`benchmarks.run`.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import statistics
import sys
import time
from typing import Any

import numpy as np

from flexassign import solve_assignment

from .instances import make_instance
from .suite import Method, applicable

__all__ = ["run_suite"]


# ----------------------------------------------------------------------------- child
def _rss_now_mib() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _measure(problem: Any, method: Method, time_limit: float, repeats: int) -> dict[str, Any]:
    base_rss = _rss_now_mib()
    times, builds, solves = [], [], []
    res = None
    for i in range(repeats):
        t0 = time.perf_counter()
        options = dict(method.options)
        if method.warm_from is not None:
            warm = solve_assignment(problem, method=method.warm_from, time_limit=time_limit)
            if warm.x is not None and warm.success:
                options["warm_start"] = warm.x
        res = solve_assignment(
            problem,
            method=method.backend,
            time_limit=time_limit,
            options=options,
            **method.solve_kwargs,
        )
        times.append(time.perf_counter() - t0)
        builds.append(float(res.stats.get("build_time", float("nan"))))
        solves.append(float(res.stats.get("solve_time", float("nan"))))
        if i == 0 and times[0] > 2.0:  # slow cells run once
            break
    assert res is not None
    loads = res.loads
    cv = spread = None
    if loads is not None and loads.mean() > 0:
        cv = float(loads.std() / loads.mean())
        spread = float((loads.max() - loads.min()) / loads.mean())
    keep = {
        k: v
        for k, v in res.stats.items()
        if isinstance(v, int | float | str | bool) and not isinstance(v, np.ndarray)
    }
    return {
        "backend": res.method,
        "status": res.status.value,
        "success": res.success,
        "time": statistics.median(times),
        "best_time": min(times),
        "times": times,
        "build_time": statistics.median(builds),
        "solve_time": statistics.median(solves),
        "objective": None if math.isnan(res.objective) else res.objective,
        "bound": res.bound,
        "gap_reported": res.gap,
        "violations": len(res.violations),
        "load_cv": cv,
        "load_spread": spread,
        "message": res.message[:300],
        "repeats": len(times),
        "baseline_rss_mib": base_rss,
        "stats": keep,
    }


def _run_cell(
    problem: Any, method: Method, time_limit: float, repeats: int, hard_limit: float
) -> dict[str, Any]:
    """Fork, measure in the child, collect its answer and peak RSS."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            out = _measure(problem, method, time_limit, repeats)
        except BaseException as exc:  # report, never hang the parent
            out = {"status": "crashed", "success": False, "message": f"{type(exc).__name__}: {exc}"}
        data = json.dumps(out, default=float).encode()
        with os.fdopen(w, "wb") as fh:
            fh.write(data)
        os._exit(0)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + hard_limit
    killed = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            killed = True
            break
        ready, _, _ = select.select([r], [], [], left)
        if ready:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(r)
    _, _, usage = os.wait4(pid, 0)
    peak = usage.ru_maxrss / 1024.0  # KiB on Linux
    if killed:
        out = {
            "status": "killed",
            "success": False,
            "time": hard_limit,
            "message": f"killed after {hard_limit:.0f} s (hard limit of the cell)",
        }
    else:
        try:
            out = json.loads(b"".join(chunks).decode())
        except ValueError:
            out = {"status": "crashed", "success": False, "message": "no answer from the cell"}
    out["peak_rss_mib"] = peak
    return out


# ----------------------------------------------------------------------------- suite
def _preload() -> None:
    """Import the solver packages once in the parent, so forked cells do not pay it."""
    import importlib

    for mod in (
        "scipy.optimize",
        "highspy",
        "ortools.graph.python.min_cost_flow",
        "ortools.sat.python.cp_model",
        "pyomo.environ",
        "pyomo.contrib.appsi.solvers",
        "flexassign.backends.flow.cold",
        "flexassign.backends.highs",
        "flexassign.backends.cpsat",
        "flexassign.backends.lp_round",
        "flexassign.backends.scipy_milp",
        "flexassign.backends.pyomo_model",
    ):
        try:
            importlib.import_module(mod)
        except ImportError:  # an optional solver is missing: its cells report it
            pass
    _load_compiled_kernels()


def _load_compiled_kernels() -> None:
    """Load ``flow-warm``'s compiled kernels once in the parent (their first use in a
    process costs about 0.5 s, the first after installing a compile of about 9 s):
    cells measure solves, as they do with the solver packages imported. The first-use
    cost is reported apart, in docs/benchmarks.md."""
    from flexassign import AssignmentProblem
    from flexassign.backends.registry import compiled_engine_installed

    if not compiled_engine_installed():
        return
    rng = np.random.default_rng(0)
    p = AssignmentProblem.balanced(rng.random((400, 16)), capacity=2, tolerance=0.1)
    cold = solve_assignment(p, method="flow-warm", options={"engine": "ssp"})
    prices = cold.stats["expert_prices"]
    solve_assignment(p, method="flow-warm", options={"engine": "ssp", "prices": prices})


def run_suite(
    *,
    sizes: tuple[tuple[int, int], ...],
    variants: tuple[str, ...],
    exact_modes: tuple[bool, ...],
    methods: tuple[Method, ...],
    time_limit: float,
    repeats: int,
    seed: int,
    log: Any = sys.stderr,
) -> dict[str, Any]:
    _preload()
    cells: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for n, e in sizes:
        for variant in variants:
            for exact in exact_modes:
                inst = make_instance(n, e, variant, exact=exact, seed=seed)
                group = []
                for method in methods:
                    if not applicable(method, n, e, variant):
                        continue
                    hard = 2 * time_limit + 60 + (time_limit if method.warm_from else 0)
                    out = _run_cell(inst.problem, method, time_limit, repeats, hard)
                    out.update(
                        instance=inst.name,
                        n=n,
                        e=e,
                        pairs=n * e,
                        variant=variant,
                        capacity="exact" if exact else "max",
                        method=method.name,
                        exact_method=method.exact,
                    )
                    group.append(out)
                    print(
                        f"[{time.perf_counter() - t_start:7.1f}s] {inst.name:28s} "
                        f"{method.name:16s} {out.get('status', '?'):20s} "
                        f"t={out.get('time', float('nan')):.4g}s "
                        f"obj={out.get('objective')} rss={out['peak_rss_mib']:.0f}MiB",
                        file=log,
                        flush=True,
                    )
                _gaps(group)
                cells.extend(group)
    return {"cells": cells, "wall_time": time.perf_counter() - t_start}


def _gaps(group: list[dict[str, Any]]) -> None:
    """Gap of each successful method to the best objective any method found."""
    ok = [c["objective"] for c in group if c.get("success") and c.get("objective") is not None]
    best = max(ok) if ok else None
    for c in group:
        c["best_known"] = best
        if best is not None and c.get("success") and c.get("objective") is not None:
            c["gap_to_best"] = (best - c["objective"]) / max(abs(best), 1.0)
        else:
            c["gap_to_best"] = None
