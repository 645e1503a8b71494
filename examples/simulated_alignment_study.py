"""Simulated alignment study: cumulative expert-utilization CV of flex vs greedy.

No training: each synthetic client has a hidden true fitness for every expert, with
a global skew toward low-index experts (see :mod:`flexassign.alignment.simulate`).
Each round a random subset of clients is planned, "trains", reports noisy accuracy
feedback (some drop out), and the planner updates its state. We report the
cumulative coefficient of variation of per-expert client-trainings and the mean
true fitness of the assigned pairs, averaged over seeds.

Run::

    .venv/bin/python examples/simulated_alignment_study.py            # the default study
    .venv/bin/python examples/simulated_alignment_study.py --json out.json
    .venv/bin/python examples/simulated_alignment_study.py --device-mix   # k_c from presets
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np

from flexassign.alignment import DEVICE_PRESETS, POLICIES, Planner, SyntheticPopulation, simulate

#: name -> (strategy, extra Planner arguments): every policy, and flex without the shift
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "flex": ("flex", {}),
    "flex (no deficit shift)": ("flex", {"deficit_shift": 0.0}),
    **{name: (name, {}) for name in POLICIES if name != "flex"},
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"config": vars(args).copy(), "variants": {}}
    out["config"].pop("json", None)
    checkpoints = sorted({r for r in (10, 50, args.rounds) if r <= args.rounds})
    for name, (strategy, extra) in VARIANTS.items():
        runs = []
        t0 = time.perf_counter()
        for seed in range(args.seed, args.seed + args.seeds):
            pop = SyntheticPopulation(
                args.clients, args.experts, skew=args.skew, dropout=args.dropout, seed=seed
            )
            planner = Planner(
                args.experts,
                strategy=strategy,
                tolerance=args.tolerance,
                seed=seed,
                default_capacity=args.capacity,
                **extra,
            )
            if args.device_mix:  # capacities from device-class presets, cyclically
                classes = list(DEVICE_PRESETS)
                for i, c in enumerate(pop.client_ids):
                    planner.register(c, device_class=classes[i % len(classes)])
            runs.append(
                simulate(planner, pop, rounds=args.rounds, clients_per_round=args.per_round)
            )
        elapsed = time.perf_counter() - t0
        cv = np.array([r["cv"] for r in runs])
        quality = np.array([np.nanmean(r["quality"]) for r in runs])
        out["variants"][name] = {
            "strategy": strategy,
            "options": extra,
            "final_cv_mean": float(cv[:, -1].mean()),
            "final_cv_std": float(cv[:, -1].std()),
            "cv_at": {str(r): float(cv[:, r - 1].mean()) for r in checkpoints},
            "true_fitness_mean": float(quality.mean()),
            "explored_mean": float(np.mean([r["explored"] for r in runs])),
            "fallback_rounds": int(sum(r["fallbacks"] for r in runs)),
            "ms_per_round": 1000 * elapsed / (args.rounds * args.seeds),
            "final_cv_per_seed": cv[:, -1].tolist(),
        }
    return out


def table(result: dict[str, Any]) -> str:
    variants = result["variants"]
    cps = list(next(iter(variants.values()))["cv_at"])
    head = (
        f"{'strategy':<25}"
        + "".join(f"{'CV@' + c:>9}" for c in cps)
        + f"{'final CV (±sd)':>20}{'true fit':>10}{'explored':>10}{'fallback':>10}{'ms/rnd':>8}"
    )
    lines = [head, "-" * len(head)]
    for name, v in variants.items():
        lines.append(
            f"{name:<25}"
            + "".join(f"{v['cv_at'][c]:>9.4f}" for c in cps)
            + f"{v['final_cv_mean']:>12.4f} ±{v['final_cv_std']:.4f}"
            + f"{v['true_fitness_mean']:>10.3f}{v['explored_mean']:>10.2f}"
            + f"{v['fallback_rounds']:>10d}{v['ms_per_round']:>8.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--clients", type=int, default=50, help="population size")
    p.add_argument("--per-round", type=int, default=10, help="clients per round")
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--capacity", type=int, default=2, help="experts per client")
    p.add_argument("--tolerance", type=float, default=0.1)
    p.add_argument("--skew", type=float, default=1.0, help="global expert skew")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seeds", type=int, default=5, help="number of seeds averaged")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument(
        "--device-mix",
        action="store_true",
        help="derive capacities from the device-class presets (cycled over clients) "
        "instead of --capacity",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    for name in ("rounds", "clients", "per_round", "experts", "seeds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 <= args.dropout < 1 or args.capacity < 0 or args.tolerance < 0:
        p.error("--dropout must be in [0, 1), --capacity and --tolerance >= 0")
    result = run(args)
    cfg = result["config"]
    print(
        f"{cfg['rounds']} rounds, {cfg['per_round']} of {cfg['clients']} clients per round, "
        f"{cfg['experts']} experts, capacity "
        f"{'from device presets' if cfg['device_mix'] else cfg['capacity']}, "
        f"tolerance {cfg['tolerance']}, "
        f"skew {cfg['skew']}, dropout {cfg['dropout']}, seeds {cfg['seed']}.."
        f"{cfg['seed'] + cfg['seeds'] - 1}"
    )
    print("CV = cumulative coefficient of variation of per-expert client-trainings")
    print(table(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1, allow_nan=False, default=_nan_free)
        print(f"wrote {args.json}")
    return 0


def _nan_free(v: Any) -> Any:  # pragma: no cover - only for unexpected types
    return None if isinstance(v, float) and math.isnan(v) else str(v)


if __name__ == "__main__":
    sys.exit(main())
