"""Interleaved A/B of a solver's module constants on the count families (cold cells).

Tuning aid for constants such as ``flow-warm``'s candidate widths: every configuration
solves the same cold problem of each family and seed, interleaved with greedy in one
process, best of ``--repeats`` CPU times (CPU, not wall: the machine is shared), and
the ratio to greedy is printed per cell with the geometric mean and the worst ratio per
configuration. Every configuration's objective must agree (a differing one is flagged).

Example (the measurement behind ``warm_solve._SSP_FULL_PAIRS``)::

    python -m benchmarks.tune_constants --size 10000x256 --seeds 11 12 13 \\
        --config old flexassign.backends.flow.warm_solve._SSP_FULL_PAIRS=0 \\
                     flexassign.backends.flow.warm_solve._SSP_WIDE_PAIRS=0 \\
        --config new

Use tuning seeds here; check the chosen values on other seeds with ``python -m
benchmarks --speed``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import math
import sys
import time
from typing import Any

from flexassign import solve_assignment

from .families import FAMILIES, family_rounds
from .instances import size_arg

__all__ = ["main"]


def _parse_config(tokens: list[str]) -> tuple[str, dict[str, Any]]:
    """``NAME [module.attr=value ...]`` -> (name, {dotted attr: value})."""
    name, settings = tokens[0], {}
    for tok in tokens[1:]:
        key, sep, raw = tok.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"expected module.attr=value, got {tok!r}")
        settings[key] = ast.literal_eval(raw)
    return name, settings


def _apply(settings: dict[str, Any]) -> None:
    for key, value in settings.items():
        mod, attr = key.rsplit(".", 1)
        setattr(importlib.import_module(mod), attr, value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tune_constants")
    parser.add_argument("--size", default=(10000, 256), type=size_arg, help="NxE (10000x256)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[11, 12, 13])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", default="auto")
    parser.add_argument(
        "--load-kernels",
        action="store_true",
        help="load the compiled kernels first (flexassign warmup), as earlier cells of "
        "python -m benchmarks --speed have; without, a process loads them only once they "
        "pay off (kernel_state.pays_off), part-way through the repeats on some problems",
    )
    parser.add_argument(
        "--config", nargs="+", action="append", required=True, metavar="NAME [ATTR=VALUE]"
    )
    args = parser.parse_args(argv)
    n, e = args.size
    if args.repeats < 1:
        parser.error("argument --repeats: must be >= 1")
    try:
        configs = dict(_parse_config(c) for c in args.config)
        originals = {
            key: getattr(importlib.import_module(key.rsplit(".", 1)[0]), key.rsplit(".", 1)[1])
            for cfg in configs.values()
            for key in cfg
        }
    except (ValueError, ImportError, AttributeError, SyntaxError) as exc:
        parser.error(f"argument --config: {exc}")
    ratios: dict[str, list[float]] = {c: [] for c in configs}
    if args.load_kernels:
        from flexassign.backends.flow.kernel_state import warmup

        warmup()

    def run(cfg: dict[str, Any], problem: Any) -> tuple[float, float]:
        _apply(originals)
        _apply(cfg)
        t = time.process_time()
        res = solve_assignment(problem, method=args.method)
        return time.process_time() - t, round(res.objective, 6)

    for fam in args.families:
        for seed in args.seeds:
            problem = family_rounds(fam, n, e, seed=seed)[0]
            for cfg in configs.values():
                run(cfg, problem)  # compile / warm caches outside the timings
            best = dict.fromkeys(configs, math.inf)
            greedy = math.inf
            objectives = set()
            for _ in range(args.repeats):
                t = time.process_time()
                solve_assignment(problem, method="greedy")
                greedy = min(greedy, time.process_time() - t)
                for name, cfg in configs.items():
                    took, obj = run(cfg, problem)
                    best[name] = min(best[name], took)
                    objectives.add(obj)
            _apply(originals)
            cells = " ".join(f"{c}={best[c] / greedy:5.2f}x" for c in configs)
            flag = "" if len(objectives) == 1 else f"  OBJECTIVES DIFFER {sorted(objectives)}"
            print(f"{fam:10s} seed {seed:3d} greedy {greedy * 1e3:5.0f} ms  {cells}{flag}")
            for c in configs:
                ratios[c].append(best[c] / greedy)
    for c, vals in ratios.items():
        geo = math.exp(sum(math.log(v) for v in vals) / len(vals))
        print(f"{c}: geometric mean {geo:.2f}x, worst {max(vals):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
