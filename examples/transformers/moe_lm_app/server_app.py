"""ServerApp: FLEX-MoE planning for the tiny Mixtral, with the loss signal.

A language model reports a loss, not an accuracy: the run config's
``planner-options`` sets ``{"fitness": {"signal": "loss"}}`` (:math:`s = e^{-\alpha_L l}`).
The strategy sees numpy arrays only; this ServerApp builds the initial model from the
seeded config to get its arrays (a deployment could load them from a file instead).
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context
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
                           int(cfg["seed"]), seq_len=int(cfg["seq-len"]))
        strategy = FlexMoEStrategy(planner=make_planner(cfg), layout=LAYOUT,
                                   **strategy_options(cfg))
        strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                       num_rounds=int(cfg["num-server-rounds"]),
                       timeout=float(cfg["round-timeout"]))

    run_logged(run)
