"""The first ``solve_assignment`` in a fresh process, as a script or the CLI meets it:
the numbers behind issue 23's targets and docs/install.md.

Each cell runs in new Python processes of the interpreter ``--python`` (a core-only
venv, or one with the ``compiled`` extra), one after another:

* ``first``: with an empty kernel cache (``NUMBA_CACHE_DIR`` a fresh folder): the first
  process after installing;
* ``second``: a new process with the same cache;
* ``after warmup``: ``flexassign warmup`` run first, then a new process.

Each process reports ``import flexassign``'s time, the first ``solve_assignment``
(``method="auto"``) on ``AssignmentProblem.balanced(rng.random((n, e)), capacity=2,
tolerance=0.1)`` (seed 0), the method ``auto`` chose, and every log line flexassign
wrote to stderr (a compile is announced there before it starts).

Run::

    python -m benchmarks.first_call --python /tmp/coreenv/bin/python --out core.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_CELL = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from flexassign import AssignmentProblem, solve_assignment
t_import = time.perf_counter() - t0
n, e = int(sys.argv[1]), int(sys.argv[2])
p = AssignmentProblem.balanced(np.random.default_rng(0).random((n, e)), capacity=2,
                               tolerance=0.1)
t0 = time.perf_counter()
res = solve_assignment(p)
t_solve = time.perf_counter() - t0
print(json.dumps({"import_s": t_import, "solve_s": t_solve, "method": res.method,
                  "status": res.status.value}))
"""


def _run(python: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [python, "-c", _CELL, *args], env=env, capture_output=True, text=True, check=True
    )
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    row["stderr"] = out.stderr.strip().splitlines()
    return row


def measure(python: str, cells: list[tuple[int, int]], root: Path) -> list[dict[str, Any]]:
    """One ``first`` / ``second`` / ``after warmup`` row per cell (see the module docstring)."""
    rows = []
    for n, e in cells:
        with tempfile.TemporaryDirectory(prefix="flexassign-first-call-") as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(root)}
            if python != sys.executable:  # the other venv's own installed flexassign
                env.pop("PYTHONPATH")
            for stage in ("first", "second"):
                rows.append({"n": n, "e": e, "stage": stage, **_run(python, [str(n), str(e)], env)})
            warm = subprocess.run(
                [python, "-m", "flexassign", "warmup", "--json"],
                env=env,
                capture_output=True,
                text=True,
            )
            if warm.returncode == 0:
                report = json.loads(warm.stdout)
                row = _run(python, [str(n), str(e)], env)
                rows.append({"n": n, "e": e, "stage": "after warmup", "warmup": report, **row})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.first_call", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure")
    parser.add_argument("--cells", default="500x8,20000x64", help="NxE list (%(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    cells = [tuple(int(v) for v in c.split("x")) for c in args.cells.split(",")]
    rows = measure(args.python, cells, Path(__file__).resolve().parents[1])  # type: ignore[arg-type]
    result = {
        "python": args.python,
        "machine_load": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "rows": rows,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
