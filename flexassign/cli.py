"""Command line: ``flexassign solve FILE [FILE ...]``, ``flexassign backends``,
``flexassign warmup`` and ``flexassign export FILE -o model.mps``; ``-v`` logs.

Exit codes: 0 every problem solved with a valid assignment, 1 no valid assignment
(infeasible, a baseline broke a constraint, time limit without incumbent), 2 bad
input (one line on stderr naming the key, flag or file), 3 internal error, 141 the
output pipe was closed. With several files the exit code is the worst of them.

Examples
--------
::

    flexassign solve examples/problems/small.json
    flexassign solve examples/problems/*.json            # one summary row per file
    flexassign solve fitness.csv --capacity 2 --tolerance 0.2 --json
    flexassign backends                                  # solvers, features, options
    flexassign warmup                                    # compile flow-warm's kernels
    flexassign export examples/problems/small.json -o model.mps
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import __version__
from ._cli import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    TRACEBACK_ENV,
    ArgumentParser,
    UsageError,
    describe,
    json_object,
    one_line,
    read_text_file,
    run_cli,
)
from ._cli_tools import add_tool_parsers
from ._files import jsonable
from ._logging import configure as configure_logging
from ._validation import parses_as_float
from .errors import FlexAssignError
from .io import load_problem, read_fitness_csv
from .metrics import coefficient_of_variation
from .problem import AssignmentProblem
from .result import AssignmentResult
from .solve import solve_assignment

__all__ = ["build_parser", "main"]

_CSV_ONLY = ("capacity", "min_experts", "weights", "exact_capacity", "header", "index")


@dataclass(frozen=True)
class _Outcome:
    path: str
    code: int
    problem: AssignmentProblem | None = None
    result: AssignmentResult | None = None
    error: str | None = None
    clients: tuple[str, ...] | None = None
    experts: tuple[str, ...] | None = None


def _csv_problem(path: str, args: argparse.Namespace) -> tuple[AssignmentProblem, Any]:
    lf = read_fitness_csv(path, header=args.header, index=args.index)
    kwargs: dict[str, Any] = {"capacity": 1 if args.capacity is None else args.capacity}
    if args.weights is not None:
        kwargs["client_weight"] = _weights(args.weights, lf.fitness.shape[0])
    if args.min_experts is not None:
        kwargs["min_experts"] = args.min_experts
    if args.tolerance is not None:
        problem = AssignmentProblem.balanced(
            lf.fitness, tolerance=args.tolerance, exact_capacity=args.exact_capacity, **kwargs
        )
    else:
        problem = AssignmentProblem(lf.fitness, **kwargs)
    return problem, lf


def _weights(text: str, n: int) -> list[float]:
    """``--weights``: N numbers separated by commas, or ``@FILE`` holding them."""
    source = text
    if text.startswith("@"):
        source = read_text_file(text[1:], "--weights")
    cells = source.replace(",", " ").split()
    try:
        values = [float(c) for c in cells]
    except ValueError:
        bad = next(c for c in cells if not parses_as_float(c))
        raise UsageError(f"`--weights`: {bad!r} is not a number") from None
    if len(values) != n:
        raise UsageError(f"`--weights` must give one number per client ({n}); got {len(values)}")
    return values


# API argument -> the flag that set it, for error messages about values from flags.
_FLAG_OF = {
    "method": "--method",
    "time_limit": "--time-limit",
    "mip_gap": "--mip-gap",
    "seed": "--seed",
    "threads": "--threads",
    "options": "--options",
    "tolerance": "--tolerance",
    "capacity": "--capacity",
    "min_experts": "--min-experts",
    "client_weight": "--weights",
    "exact_capacity": "--exact-capacity",
}


@contextmanager
def _flags(*names: str) -> Iterator[None]:
    """Re-raise a :class:`FlexAssignError` naming the flags (not the API arguments)
    ``names`` were given by."""
    try:
        yield
    except FlexAssignError as exc:
        text = str(exc)
        for name in names:
            text = text.replace(f"`{name}`", f"`{_FLAG_OF[name]}`")
        if text == str(exc):
            raise
        raise type(exc)(text) from exc


def _read(
    path: str, args: argparse.Namespace
) -> tuple[AssignmentProblem, tuple[str, ...] | None, tuple[str, ...] | None]:
    """The problem in ``path`` as the input flags shape it, with its CSV labels."""
    if path.lower().endswith(".csv"):
        with _flags("capacity", "min_experts", "client_weight", "tolerance", "exact_capacity"):
            problem, lf = _csv_problem(path, args)
        return problem, lf.clients, lf.experts
    problem = load_problem(path)
    if args.tolerance is not None:
        with _flags("tolerance"):
            problem = problem.rebalanced(args.tolerance)
    return problem, None, None


def _solve_file(path: str, args: argparse.Namespace) -> _Outcome:
    problem, clients, experts = _read(path, args)
    with _flags("method", "time_limit", "mip_gap", "seed", "threads", "options"):
        res = solve_assignment(
            problem,
            method=args.method,
            time_limit=args.time_limit,
            mip_gap=args.mip_gap,
            seed=args.seed,
            threads=args.threads,
            options=args.options,
        )
    if clients is not None or experts is not None:
        n, e = problem.shape
        res = res.with_labels(clients or range(n), experts or range(e))
    return _Outcome(path, 0 if res.success else 1, problem, res, None, clients, experts)


def _result_json(out: _Outcome) -> dict[str, Any]:
    res = out.result
    assert res is not None
    data = res.to_dict()
    if out.clients is not None or out.experts is not None:
        data["labels"] = {
            "clients": None if out.clients is None else list(out.clients),
            "experts": None if out.experts is None else list(out.experts),
        }
        mapping = res.assignment
        if mapping is not None:
            data["assignment"] = {str(c): [str(e) for e in exp] for c, exp in mapping.items()}
    return data


def _print_one(out: _Outcome, show: int) -> None:
    res, problem = out.result, out.problem
    assert res is not None and problem is not None
    print(f"problem : {problem.summary()}")
    print(f"method  : {res.method}")
    print(f"status  : {res.status.value} (success={res.success})")
    print(f"message : {res.message}")
    if res.x is not None and res.loads is not None:
        print(
            f"objective: {res.objective:.10g}"
            + (f"   bound: {res.bound:.10g}" if res.bound is not None else "")
        )
        if res.gap is not None:
            print(f"gap     : {res.gap:.3g}")
        loads = res.loads
        cv = coefficient_of_variation(loads)
        print(f"loads   : min {loads.min():.4g}  max {loads.max():.4g}  cv {cv:.4g}")
        rows = list((res.assignment or {}).items())
        for client, experts in rows[:show]:
            print(f"  client {client}: experts {list(experts)}")
        if len(rows) > show:
            print(f"  ... {len(rows) - show} more clients (use --json for all)")
    print(f"runtime : {res.runtime * 1e3:.1f} ms")


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _print_table(outcomes: list[_Outcome]) -> None:
    width = max(4, *(len(o.path) for o in outcomes))
    head = (
        f"{'file':<{width}}  {'shape':>9}  {'method':<10} {'status':<22} "
        f"{'objective':>14} {'gap':>8} {'ms':>9}"
    )
    print(head)
    print("-" * len(head))
    for o in outcomes:
        if o.result is None or o.problem is None:
            what = "bad input" if o.code == EXIT_BAD_INPUT else "internal error"
            print(f"{o.path:<{width}}  {'-':>9}  {'-':<10} {what:<22} {'-':>14} {'-':>8} {'-':>9}")
            continue
        r = o.result
        shape = f"{o.problem.n_clients}x{o.problem.n_experts}"
        obj = r.objective if r.x is not None else None
        print(
            f"{o.path:<{width}}  {shape:>9}  {r.method:<10} {r.status.value:<22} "
            f"{_fmt(obj, '14.8g')} {_fmt(r.gap, '8.2g')} {r.runtime * 1e3:9.1f}"
        )
    counts = [sum(o.code == c for o in outcomes) for c in (0, 1, 2, 3)]
    print(
        f"{len(outcomes)} files: {counts[0]} solved, {counts[1]} without a valid "
        f"assignment, {counts[2]} bad input"
        + (f", {counts[3]} internal error" if counts[3] else "")
    )


def _check_solve_args(args: argparse.Namespace) -> None:
    if args.show < 0:
        raise UsageError(f"`--show` must be >= 0; got {args.show}")
    _check_input_args(args.problem, args)


def _check_input_args(paths: Sequence[str], args: argparse.Namespace) -> None:
    """The input flags fit the files: CSV-only flags with CSV files only, and so on."""
    non_csv = [p for p in paths if not p.lower().endswith(".csv")]
    if non_csv:
        for key in _CSV_ONLY:
            value = getattr(args, key)
            if value is not None and value is not False:
                flag = "--" + key.replace("_", "-")
                raise UsageError(
                    f"`{flag}` applies to CSV input only; {non_csv[0]!r} carries its own settings"
                )
    if args.exact_capacity and args.tolerance is None:
        raise UsageError("`--exact-capacity` needs `--tolerance`")
    for name in ("capacity", "min_experts"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"`--{name.replace('_', '-')}` must be >= 0; got {value}")


def _failed(path: str, code: int, text: str) -> _Outcome:
    text = one_line(text)
    print(f"flexassign: error: {path}: {text}", file=sys.stderr)
    return _Outcome(path, code, error=text)


def _cmd_solve(args: argparse.Namespace) -> int:
    _check_solve_args(args)
    if len(args.problem) == 1:
        path = args.problem[0]
        try:
            out = _solve_file(path, args)
        except FlexAssignError as exc:
            raise type(exc)(f"{path}: {exc}") from exc
        if args.json:
            print(json.dumps(jsonable(_result_json(out)), indent=1, allow_nan=False))
        else:
            _print_one(out, args.show)
        return out.code
    outcomes = []
    for path in args.problem:
        try:
            outcomes.append(_solve_file(path, args))
        except UsageError:
            raise
        except (FlexAssignError, OSError) as exc:
            outcomes.append(_failed(path, EXIT_BAD_INPUT, describe(exc)))
        except Exception as exc:  # one file's internal error must not stop the others
            if os.environ.get(TRACEBACK_ENV):
                raise
            text = f"internal error: {type(exc).__name__}: {exc}"
            outcomes.append(_failed(path, EXIT_INTERNAL, text))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "file": o.path,
                        "exit_code": o.code,
                        "error": o.error,
                        "result": None if o.result is None else jsonable(_result_json(o)),
                    }
                    for o in outcomes
                ],
                indent=1,
                allow_nan=False,
            )
        )
    else:
        _print_table(outcomes)
    return max(o.code for o in outcomes)


#: ``flexassign solve``'s examples (its ``--help`` epilog; tests/test_cli_tools.py runs them
#: in a folder holding ``fitness.csv``).
SOLVE_EXAMPLES = (
    "flexassign solve examples/problems/small.json",
    "flexassign solve examples/problems/*.json",
    "flexassign solve fitness.csv --capacity 2 --tolerance 0.2 --json",
    "flexassign solve examples/problems/small.json --method highs --mip-gap 0.01",
    "flexassign solve examples/problems/small.json --method highs "
    "--options '{\"highs_options\": {\"presolve\": \"off\"}}'",
    "flexassign -v solve examples/problems/small.json",
)


def _add_input_args(s: argparse.ArgumentParser) -> None:
    """``--tolerance`` and the CSV input flags (``solve`` and ``export``)."""
    s.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="derive balanced load bounds (JSON/NPZ: replaces the file's bounds)",
    )
    c = s.add_argument_group("CSV input (a clients x experts fitness matrix)")
    c.add_argument("--capacity", type=int, default=None, help="experts per client (default 1)")
    c.add_argument("--min-experts", type=int, default=None, help="minimum experts per client")
    c.add_argument(
        "--exact-capacity",
        action="store_true",
        help="with --tolerance: every client takes exactly --capacity experts",
    )
    c.add_argument(
        "--weights",
        default=None,
        metavar="W1,W2,...|@FILE",
        help="client weights (load each adds): N numbers, or @FILE holding them",
    )
    c.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="first row holds expert labels (default: detected)",
    )
    c.add_argument(
        "--index",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="first column holds client labels (default: detected)",
    )


def _export_input(path: str, args: argparse.Namespace) -> AssignmentProblem:
    _check_input_args([path], args)
    return _read(path, args)[0]


def _verbosity(default: Any) -> ArgumentParser:
    """``-v``: accepted before or after the subcommand (``default``: the top level's 0,
    a subcommand's ``SUPPRESS`` so that it keeps a top-level ``-v``)."""
    p = ArgumentParser(add_help=False)
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default,
        help="log what happens (flexassign's logger): -v INFO, -vv DEBUG",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``flexassign`` argument parser."""
    parser = ArgumentParser(
        prog="flexassign",
        description="Load-balanced client-expert assignment (FLEX-MoE).\n\nExit codes: 0 "
        "solved, 1 no valid assignment, 2 bad input, 3 internal error.",
        parents=[_verbosity(0)],
    )
    parser.add_argument("--version", action="version", version=f"flexassign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = [_verbosity(argparse.SUPPRESS)]
    s = sub.add_parser(
        "solve",
        parents=common,
        help="solve problem files (.json, .npz, or a .csv fitness matrix)",
        description="Solve one or more problem files. One file prints the result; several "
        "print a summary table (one row per file) and exit with the worst code.",
        epilog="examples:\n" + "\n".join(f"  {line}" for line in SOLVE_EXAMPLES),
    )
    s.add_argument(
        "problem", nargs="+", metavar="FILE", help="problem file(s); format in docs/file-format.md"
    )
    s.add_argument(
        "--method", default="auto", help="backend name or 'auto' (see `flexassign backends`)"
    )
    s.add_argument("--time-limit", type=float, default=None, help="solver time limit, seconds")
    s.add_argument("--mip-gap", type=float, default=None, help="relative MIP gap to stop at")
    s.add_argument("--seed", type=int, default=0, help="solver seed")
    s.add_argument("--threads", type=int, default=None, help="solver threads")
    s.add_argument(
        "--options",
        type=json_object,
        default=None,
        metavar="JSON",
        help="the backend's own options as a JSON object (`flexassign backends` lists "
        "them), e.g. '{\"highs_options\": {\"presolve\": \"off\"}}' with --method highs",
    )
    s.add_argument("--json", action="store_true", help="print the full result as JSON")
    s.add_argument("--show", type=int, default=20, help="clients to list in the summary")
    _add_input_args(s)
    s.set_defaults(func=_cmd_solve)
    add_tool_parsers(sub, common, _add_input_args, _export_input)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flexassign`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        configure_logging(args.verbose)
    return run_cli("flexassign", lambda: int(args.func(args)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
