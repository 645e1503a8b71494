"""ServerApp: FLEX-MoE planning, expert-subset dispatch and robust aggregation for the
two-block model of ``task.py``."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from flexassign.integrations.flower import FlexMoEStrategy
from flexassign.integrations.flower.app import make_planner, run_logged, strategy_options

from .task import LAYOUT, make_model

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config

    def run() -> None:
        model = make_model(int(cfg["num-experts"]), int(cfg["dim"]), int(cfg["top-k"]),
                           int(cfg["seed"]))
        strategy = FlexMoEStrategy(
            planner=make_planner(cfg),  # num-experts, strategy, tolerance, seed, planner-options
            layout=LAYOUT,
            **strategy_options(cfg),  # min-available-nodes, wait-timeout, aggregation, ...
        )
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),  # gates are kept out by LAYOUT
            num_rounds=int(cfg["num-server-rounds"]),
            timeout=float(cfg["round-timeout"]),
            train_config=ConfigRecord(),
        )

    run_logged(run)
