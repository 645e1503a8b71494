"""The ``flexassign`` subcommands besides ``solve``: ``backends``, ``warmup``, ``export``.

Kept apart from :mod:`flexassign.cli` (which builds the parser and runs ``solve``) so
that each file holds one concept; :mod:`flexassign.cli` wires them in.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from ._cli import UsageError
from .backends.registry import list_backends
from .problem import AssignmentProblem

__all__ = ["WIDTH", "add_tool_parsers", "backends_table"]

#: Columns the ``backends`` table wraps at.
WIDTH = 100
_INDENT = 16

#: ``flexassign export``'s examples (its ``--help`` epilog; tests/test_cli_tools.py runs them).
EXPORT_EXAMPLES = (
    "flexassign export examples/problems/small.json -o model.mps",
    "flexassign export examples/problems/small.json -o model.lp",
    "flexassign export fitness.csv --capacity 2 --tolerance 0.2 -o model.mps",
)


def _yn(value: object) -> str:
    return "yes" if value else "no"


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        text,
        width=WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=False,
        break_long_words=True,
    )


def backends_table() -> list[str]:
    """The ``flexassign backends`` listing as lines of at most :data:`WIDTH` columns.

    Examples
    --------
    >>> lines = backends_table()
    >>> lines[0].split()[:3], max(len(line) for line in lines) <= WIDTH
    (['name', 'installed', 'kind'], True)
    """
    from .backends.options import describe_options

    lines = [
        f"{'name':<16}{'installed':<10}{'kind':<10}{'weighted':<9}{'knapsack':<9}{'soft':<6}"
        "t-limit"
    ]
    pad = " " * _INDENT
    for b in list_backends():
        lines.append(
            f"{b.name:<16}{_yn(b.installed()):<10}{b.kind:<10}{_yn(b.weighted):<9}"
            f"{_yn(b.knapsack):<9}{_yn(b.soft):<6}{_yn(b.time_limit)}".rstrip()
        )
        lines += _wrap(b.description, pad, pad)
        if not b.installed() and b.extra:
            lines += _wrap(
                f'install: pip install -e ".[{b.extra}]" -c constraints.txt (from a clone)',
                pad,
                pad,
            )
        options = describe_options(b.options) if b.options != () else ["(no options)"]
        for i, line in enumerate(options):
            lead = pad + ("options: " if i == 0 else " " * 9)
            lines += _wrap(line, lead, pad + " " * 11)
    return lines


def _jsonable_default(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else repr(value)


def _cmd_backends(args: argparse.Namespace) -> int:
    if not args.json:
        print("\n".join(backends_table()))
        return 0
    rows = [
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
            "options": None
            if b.options is None
            else [
                {
                    "name": o.name,
                    "kind": o.kind,
                    "default": _jsonable_default(o.default),
                    "help": o.help,
                }
                for o in b.options
            ],
        }
        for b in list_backends()
    ]
    print(json.dumps(rows, indent=1))
    return 0


def _cmd_warmup(args: argparse.Namespace) -> int:
    from .backends.flow import kernel_state

    report = kernel_state.warmup()
    if args.json:
        print(
            json.dumps(
                {
                    "action": report.action,
                    "seconds": report.seconds,
                    "cache_dir": None if report.cache_dir is None else str(report.cache_dir),
                }
            )
        )
    else:
        print(report)
    return 0


def _cmd_export(args: argparse.Namespace, load: Callable[[str, Any], AssignmentProblem]) -> int:
    from .export import FORMATS, write_model

    fmt = args.format
    suffix = args.output.rsplit(".", 1)[-1].lower() if "." in args.output else ""
    if fmt is None and suffix not in FORMATS:
        raise UsageError(f"`-o` must end in .mps or .lp (or give `--format`); got {args.output!r}")
    if fmt is not None and suffix != fmt:
        raise UsageError(f"`--format {fmt}` needs `-o` ending in .{fmt}; got {args.output!r}")
    problem = load(args.problem, args)
    path = write_model(problem, args.output)
    n, e = problem.shape
    print(f"wrote {path} ({n} clients x {e} experts, {int(problem.allowed_mask.sum())} pairs)")
    return 0


def add_tool_parsers(
    sub: Any,
    parents: Sequence[argparse.ArgumentParser],
    add_input_args: Callable[[argparse.ArgumentParser], None],
    load: Callable[[str, Any], AssignmentProblem],
) -> None:
    """Add ``backends``, ``warmup`` and ``export`` to the subparsers ``sub``.

    ``add_input_args`` adds the problem-input flags ``solve`` has (``--tolerance`` and
    the CSV group); ``load(path, args)`` reads a problem the way ``solve`` does.
    """
    b = sub.add_parser(
        "backends",
        parents=parents,
        help="list backends, their features and whether installed",
        description="List every backend: features, whether installed, options.",
    )
    b.add_argument("--json", action="store_true", help="print the list as JSON")
    b.set_defaults(func=_cmd_backends)

    w = sub.add_parser(
        "warmup",
        parents=parents,
        help="compile flow-warm's kernels now (once after installing)",
        description="Compile flow-warm's numba kernels, or load them from the cache, and "
        "report where they are cached. The first solve that needs them otherwise pays the "
        "compile (once per install, tens of seconds on a small machine).",
        epilog="example:\n  flexassign warmup",
    )
    w.add_argument("--json", action="store_true", help="print the report as JSON")
    w.set_defaults(func=_cmd_warmup)

    x = sub.add_parser(
        "export",
        parents=parents,
        help="write a problem's MIP model as an MPS or LP file (through HiGHS)",
        description="Write the problem's MIP model (maximization; balance, capacity, "
        "knapsack and soft penalties) for another solver: MPS or CPLEX LP, chosen by the "
        "suffix of -o. Column x_c<c>_e<e> is client c taking expert e.",
        epilog="examples:\n" + "\n".join(f"  {line}" for line in EXPORT_EXAMPLES),
    )
    x.add_argument("problem", metavar="FILE", help="problem file (.json, .npz or .csv)")
    x.add_argument("-o", "--output", required=True, metavar="PATH", help="file to write")
    x.add_argument(
        "--format", choices=("mps", "lp"), default=None, help="default: from the -o suffix"
    )
    add_input_args(x)
    x.set_defaults(func=lambda args: _cmd_export(args, load))
