"""Build the FLEX-MoE job and run it in the NVIDIA FLARE simulator.

    python examples/nvflare/job.py --workspace /tmp/flexmoe-flare --sites 4 --rounds 3

writes ``<workspace>/rounds.jsonl`` (one line per round: plan, drops, feedback) and
``<workspace>/final_model.npz``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-experts", type=int, default=4)
    ap.add_argument("--dim", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--capacities", default="1,2", help="site i gets choice i mod len")
    ap.add_argument("--tolerance", type=float, default=0.3)
    args = ap.parse_args(argv)

    # the sites and the server import the flexmoe_flare package from here
    sys.path.insert(0, str(HERE))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
    from flexmoe_flare.controller import FlexMoEController
    from nvflare.job_config.api import FedJob
    from nvflare.job_config.script_runner import FrameworkType, ScriptRunner

    workspace = Path(args.workspace).resolve()
    choices = [int(c) for c in args.capacities.split(",")]
    capacities = {f"site-{i + 1}": choices[i % len(choices)] for i in range(args.sites)}
    job = FedJob(name="flexmoe", min_clients=args.sites)
    job.to_server(FlexMoEController(
        num_rounds=args.rounds, num_experts=args.num_experts, dim=args.dim, seed=args.seed,
        capacities=capacities, tolerance=args.tolerance,
        results_path=str(workspace / "rounds.jsonl"),
        model_path=str(workspace / "final_model.npz")))
    job.to_clients(ScriptRunner(
        script=str(HERE / "client.py"), framework=FrameworkType.NUMPY,
        script_args=f"--num-experts {args.num_experts} --dim {args.dim} --seed {args.seed}"))
    job.simulator_run(str(workspace / "simulator"), n_clients=args.sites, threads=args.sites)


if __name__ == "__main__":
    main()
