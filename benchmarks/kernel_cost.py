"""What ``flow-warm``'s compiled kernels cost a process, and what they save: the numbers
behind :mod:`flexassign.backends.flow.kernel_state` (``COMPILE_S``, ``LOAD_S``,
``SAVING_PER_PAIR_S``) and behind ``auto`` counting them.

Each measurement runs in a fresh Python process (``sys.executable``), as a user's
script or the CLI would:

* ``compile``: ``kernel_state.warmup()`` with an empty cache (a fresh
  ``NUMBA_CACHE_DIR``): the one-time compile after installing;
* ``load``: the same in a second process (the kernels come from the cache), less the
  same solves once loaded: what every new process pays;
* ``saving``: ``flow`` and ``flow-warm`` (kernels loaded), interleaved, best of
  ``--repeats``, on the ``--sizes`` cells (``AssignmentProblem.balanced``, capacity 2,
  tolerance 0.1, seed 0): seconds saved per client-expert pair;
* ``first``: the first ``solve_assignment`` (``method="auto"``, then ``"flow"``) in a
  fresh process on the ``--first`` cells, with the cache filled, timed inside the
  process (imports of flexassign excluded, the solver packages' included).

A busy machine slows all of them alike: ``auto`` compares ``LOAD_S`` with
``SAVING_PER_PAIR_S`` times the pairs, so their ratio is what matters. The JSON goes to
``--out``.

Run::

    .venv/bin/python -m benchmarks.kernel_cost --out benchmarks/results/kernel_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .instances import parse_size

_WARMUP = """
import json, time
from flexassign.backends.flow import kernel_state
t0 = time.perf_counter()
report = kernel_state.warmup()
first = time.perf_counter() - t0
t0 = time.perf_counter()
from flexassign import solve_assignment
for problem, options in kernel_state._warmup_problems():
    solve_assignment(problem, method="flow-warm", options=options)
kernel_state._refine_once()
again = time.perf_counter() - t0
print(json.dumps({"action": report.action, "seconds": first, "again": again}))
"""

_FIRST = """
import json, sys, time
import numpy as np
from flexassign import AssignmentProblem, solve_assignment
n, e, method = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
p = AssignmentProblem.balanced(np.random.default_rng(0).random((n, e)), capacity=2,
                               tolerance=0.1)
t0 = time.perf_counter()
res = solve_assignment(p, method=method)
print(json.dumps({"seconds": time.perf_counter() - t0, "method": res.method,
                  "engine": res.stats.get("engine")}))
"""

_SAVING = """
import json, sys, time
import numpy as np
from flexassign import AssignmentProblem, solve_assignment
from flexassign.backends.flow import kernel_state
kernel_state.warmup()
rows = []
for cell in sys.argv[2].split(","):
    n, e = (int(v) for v in cell.split("x"))
    p = AssignmentProblem.balanced(np.random.default_rng(0).random((n, e)), capacity=2,
                                   tolerance=0.1)
    best = {"flow": float("inf"), "flow-warm": float("inf")}
    for _ in range(int(sys.argv[1])):
        for method in best:
            t0 = time.perf_counter()
            solve_assignment(p, method=method)
            best[method] = min(best[method], time.perf_counter() - t0)
    rows.append({"n": n, "e": e, "flow": best["flow"], "flow_warm": best["flow-warm"],
                 "saving_per_pair": (best["flow"] - best["flow-warm"]) / (n * e)})
print(json.dumps(rows))
"""


def _run(code: str, args: list[str], cache: str) -> Any:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(
    *, sizes: list[tuple[int, int]], first: list[tuple[int, int]], repeats: int
) -> dict[str, Any]:
    """Compile, load, per-pair saving and first-solve times (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="flexassign-kernel-cost-") as cache:
        t0 = time.perf_counter()
        compiled = _run(_WARMUP, [], cache)
        compile_wall = time.perf_counter() - t0
        loads = [_run(_WARMUP, [], cache) for _ in range(3)]
        cells = ",".join(f"{n}x{e}" for n, e in sizes)
        saving = _run(_SAVING, [str(repeats), cells], cache)
        firsts = [
            {"n": n, "e": e, "method": method, **_run(_FIRST, [str(n), str(e), method], cache)}
            for n, e in first
            for method in ("auto", "flow", "flow-warm")
        ]
    load_s = statistics.median(r["seconds"] - r["again"] for r in loads)
    per_pair = statistics.median(r["saving_per_pair"] for r in saving)
    return {
        "compile_s": compiled["seconds"],
        "compile_process_wall_s": compile_wall,
        "load_s": load_s,
        "loads": loads,
        "saving_per_pair_s": per_pair,
        "break_even_pairs": load_s / per_pair if per_pair > 0 else None,
        "saving": saving,
        "first": firsts,
        "machine_load": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.kernel_cost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--sizes", default="2000x16,5000x32,10000x64,20000x64",
                        help="cells for the per-pair saving (default: %(default)s)")
    parser.add_argument("--first", default="500x8,20000x64",
                        help="cells for the first solve in a fresh process (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="best of (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",")]
        first = [parse_size(s) for s in args.first.split(",")]
    except ValueError as exc:
        parser.error(str(exc))
    if args.repeats < 1:
        parser.error("`--repeats` must be at least 1")
    result = measure(sizes=sizes, first=first, repeats=args.repeats)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
