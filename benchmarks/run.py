"""Command line of the benchmarks: ``python -m benchmarks [--quick] [--speed] ...``.

Without ``--speed`` it runs the suite of :mod:`benchmarks.suite` (every backend, one
forked process per cell, see :mod:`benchmarks.runner`); with ``--speed`` the
interleaved exact-vs-greedy comparison of :mod:`benchmarks.speed`. Both write JSON
and markdown under ``benchmarks/results/`` and, for full runs, regenerate their
section of ``docs/benchmarks.md`` (:mod:`benchmarks.report`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

from flexassign._files import write_json_atomic, write_text_atomic

from .families import FAMILIES
from .instances import VARIANTS, parse_size
from .report import ROOT, publish, targets, versions, write_docs
from .runner import run_suite
from .speed import SPEED_QUICK, SPEED_SIZES, run_speed, speed_markdown, speed_targets
from .speed_cells import FAMILY_QUICK, FAMILY_SIZES, WEIGHTED_QUICK, WEIGHTED_SIZES
from .suite import FULL_SIZES, METHODS, QUICK_SIZES

SPEED_BEGIN, SPEED_END = "<!-- BEGIN SPEED RESULTS -->", "<!-- END SPEED RESULTS -->"

__all__ = ["main"]


def _parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for part in text.split(","):
        try:
            out.append(parse_size(part))
        except ValueError as exc:
            raise SystemExit(f"`--sizes`: each size {exc}") from None
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (CI smoke)")
    ap.add_argument(
        "--speed",
        action="store_true",
        help="interleaved exact-vs-greedy comparison (cold and warm) instead of the suite",
    )
    ap.add_argument(
        "--peers",
        action="store_true",
        help="with --speed: add OR-Tools on the full graph and POT (pip install "
        "-e '.[bench]' -c constraints.txt) as peers",
    )
    ap.add_argument("--sizes", help="comma-separated NxE list (default: the suite's)")
    ap.add_argument(
        "--families",
        help="with --speed: comma-separated count families (benchmarks/families.py), "
        "'all' (default) or 'none'",
    )
    ap.add_argument(
        "--weighted-variants",
        help="with --speed: which of weighted,knapsack the weighted cells run (default both)",
    )
    ap.add_argument(
        "--weighted-sizes",
        help="with --speed: NxE list for the weighted and knapsack cells ('none' skips them)",
    )
    ap.add_argument("--variants", help=f"comma-separated subset of {','.join(VARIANTS)}")
    ap.add_argument("--methods", help="comma-separated method names")
    ap.add_argument(
        "--capacity", choices=["max", "exact", "both"], help="default: both (quick: max)"
    )
    ap.add_argument("--time-limit", type=float, help="seconds per solve (default 30; quick 2)")
    ap.add_argument("--repeats", type=int, help="repeats per cell (default 3; quick 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/*.json)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument(
        "--from-json", type=Path, help="only redo the markdown, plot and docs from a saved run"
    )
    args = ap.parse_args(argv)
    if args.speed:
        return _speed(args, argv)
    if args.from_json is not None:
        report = json.loads(args.from_json.read_text())
        report["targets"] = targets(report["cells"])
        publish(report, args.from_json, docs=not args.no_docs)
        return 0

    sizes = _parse_sizes(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else FULL_SIZES)
    variants = tuple(args.variants.split(",")) if args.variants else VARIANTS
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"`--variants`: unknown {bad}; valid: {list(VARIANTS)}")
    methods = METHODS
    if args.methods:
        wanted = args.methods.split(",")
        known = {m.name for m in METHODS}
        unknown = [m for m in wanted if m not in known]
        if unknown:
            raise SystemExit(f"`--methods`: unknown {unknown}; valid: {sorted(known)}")
        methods = tuple(m for m in METHODS if m.name in wanted)
    capacity = args.capacity or ("max" if args.quick else "both")
    modes = {"max": (False,), "exact": (True,), "both": (False, True)}[capacity]
    time_limit = args.time_limit or (2.0 if args.quick else 30.0)
    repeats = args.repeats or (1 if args.quick else 3)
    out = args.out or ROOT / "benchmarks" / "results" / (
        "quick.json" if args.quick else "full.json"
    )
    command = "python -m benchmarks" + (" " + " ".join(argv if argv is not None else sys.argv[1:]))
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result = run_suite(
        sizes=sizes,
        variants=variants,
        exact_modes=modes,
        methods=methods,
        time_limit=time_limit,
        repeats=repeats,
        seed=args.seed,
    )
    report = {
        "command": command.strip(),
        "quick": bool(args.quick),
        "started": started,
        "finished": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_time": result["wall_time"],
        "time_limit": time_limit,
        "repeats": repeats,
        "seed": args.seed,
        "machine": _machine(),
        "targets": targets(result["cells"]),
        "cells": result["cells"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    publish(report, out, docs=not args.quick and not args.no_docs)
    return 0


def _machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "versions": versions()}


def _families(text: str | None) -> tuple[str, ...]:
    """``--families``: 'all' (default), 'none' or a comma list of known names."""
    if text is None or text == "all":
        return FAMILIES
    if text == "none":
        return ()
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in FAMILIES]
    if bad:
        raise SystemExit(f"--families: unknown {bad[0]!r}; valid: {', '.join(FAMILIES)}")
    return names


def _speed(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``--speed``: run (or reload) the interleaved comparison and publish it."""
    out = args.out or ROOT / "benchmarks" / "results" / (
        "speed_quick.json" if args.quick else "speed.json"
    )
    if args.from_json is not None:
        report = json.loads(args.from_json.read_text())
        out = args.from_json
    else:
        sizes = (
            _parse_sizes(args.sizes) if args.sizes else (SPEED_QUICK if args.quick else SPEED_SIZES)
        )
        repeats = args.repeats or (2 if args.quick else 3)
        command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
        started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        families = _families(args.families)
        wsizes = (
            ()
            if args.weighted_sizes == "none"
            else _parse_sizes(args.weighted_sizes)
            if args.weighted_sizes
            else (WEIGHTED_QUICK if args.quick else WEIGHTED_SIZES)
        )
        result = run_speed(
            sizes=sizes,
            repeats=repeats,
            seed=args.seed,
            peers=args.peers,
            families=families,
            family_sizes=FAMILY_QUICK if args.quick else FAMILY_SIZES,
            weighted_sizes=wsizes,
            weighted_variants=tuple(
                (args.weighted_variants or "weighted,knapsack").replace(" ", "").split(",")
            ),
        )
        report = {
            "command": command.strip(),
            "quick": bool(args.quick),
            "started": started,
            "wall_time": result["wall_time"],
            "repeats": repeats,
            "seed": args.seed,
            "machine": _machine(),
            "cells": result["cells"],
        }
    report["targets"] = speed_targets(report["cells"])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    md = speed_markdown(report)
    write_text_atomic(out.with_suffix(".md"), md)
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    if not args.quick and not args.no_docs:
        write_docs(md, SPEED_BEGIN, SPEED_END)
        print("updated docs/benchmarks.md (speed section)", file=sys.stderr)
    return 0
