"""Command line: ``flexassign solve PROBLEM`` and ``flexassign backends``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from .backends.registry import list_backends
from .errors import FlexAssignError
from .io import load_problem
from .solve import solve_assignment

__all__ = ["main"]


def _cmd_solve(args: argparse.Namespace) -> int:
    problem = load_problem(args.problem)
    if args.tolerance is not None:
        problem = problem.rebalanced(args.tolerance)
    res = solve_assignment(
        problem,
        method=args.method,
        time_limit=args.time_limit,
        mip_gap=args.mip_gap,
        seed=args.seed,
        threads=args.threads,
    )
    if args.json:
        print(json.dumps(res.to_dict(), indent=1))
    else:
        print(f"problem : {problem.summary()}")
        print(f"method  : {res.method}")
        print(f"status  : {res.status.value} (success={res.success})")
        print(f"message : {res.message}")
        if res.x is not None:
            print(
                f"objective: {res.objective:.10g}"
                + (f"   bound: {res.bound:.10g}" if res.bound is not None else "")
            )
            if res.gap is not None:
                print(f"gap     : {res.gap:.3g}")
            loads = res.loads if res.loads is not None else np.zeros(1)
            cv = float(np.std(loads) / max(float(np.mean(loads)), 1e-12))
            print(f"loads   : min {loads.min():.4g}  max {loads.max():.4g}  cv {cv:.4g}")
            experts = res.experts or []
            shown = experts[: args.show]
            for c, exp in enumerate(shown):
                print(f"  client {c}: experts {list(exp)}")
            if len(experts) > len(shown):
                print(f"  ... {len(experts) - len(shown)} more clients (use --json for all)")
        print(f"runtime : {res.runtime * 1e3:.1f} ms")
    return 0 if res.success else 1


def _cmd_backends(args: argparse.Namespace) -> int:
    rows = []
    for b in list_backends():
        rows.append(
            {
                "name": b.name,
                "installed": b.installed(),
                "kind": b.kind,
                "weighted": b.weighted,
                "knapsack": b.knapsack,
                "soft": b.soft,
                "time_limit": b.time_limit,
                "extra": b.extra,
                "description": b.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"{'name':<16}{'installed':<10}{'kind':<10}{'weighted':<9}{'knapsack':<9}{'soft':<6}{'t-limit':<8}description"
    )
    for r in rows:

        def yn(v: object) -> str:
            return "yes" if v else "no"

        print(
            f"{r['name']:<16}{yn(r['installed']):<10}{r['kind']:<10}{yn(r['weighted']):<9}"
            f"{yn(r['knapsack']):<9}{yn(r['soft']):<6}{yn(r['time_limit']):<8}{r['description']}"
        )
        if not r["installed"] and r["extra"]:
            print(f"{'':<16}install: pip install 'flexassign[{r['extra']}]'")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flexassign", description="Load-balanced client-expert assignment (FLEX-MoE)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("solve", help="solve a problem file (.json or .npz)")
    s.add_argument("problem", help="problem file; format in docs/file-format.md")
    s.add_argument(
        "--method", default="auto", help="backend name or 'auto' (see `flexassign backends`)"
    )
    s.add_argument("--tolerance", type=float, default=None, help="derive balanced load bounds")
    s.add_argument("--time-limit", type=float, default=None, help="solver time limit, seconds")
    s.add_argument("--mip-gap", type=float, default=None, help="relative MIP gap to stop at")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--json", action="store_true", help="print the full result as JSON")
    s.add_argument("--show", type=int, default=20, help="clients to list in the summary")
    s.set_defaults(func=_cmd_solve)
    b = sub.add_parser("backends", help="list backends, their features and whether installed")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_cmd_backends)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (FlexAssignError, OSError) as exc:
        print(f"flexassign: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
