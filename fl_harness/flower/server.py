"""The harness's FLEX-MoE ServerApp: planner and strategy from the run config.

Run-config keys (``[tool.flwr.app.config]``): hyphenated ExperimentConfig fields,
plus ``num-server-rounds`` (default: the ``rounds`` field), ``round-timeout``
(seconds per round, default 600), and the strategy keys of
:mod:`flexassign.integrations.flower.app` (``min-available-nodes`` default 2,
``wait-timeout``, ``aggregation``, ``max-weight-ratio``, ``checkpoint-dir``,
``results-path`` (JSON lines, one per round, appended as rounds end),
``final-model-path``, ...).

The planner is built exactly as :func:`fl_harness.experiment.run_experiment` builds
it (``planner-options`` with a ``fitness`` object included), with each client's
capacity set from the profile it reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from fl_harness.experiment import SeedStreams
from flexassign.alignment import STRATEGIES
from flexassign.integrations.flower.app import run_logged, strategy_options
from flexassign.integrations.flower.messages import numpy_to_arrayrecord
from flexassign.integrations.flower.strategy import FlexMoEStrategy

from .harness import federation

__all__ = [
    "build_strategy",
    "harness_sampler",
    "harness_train_seeds",
    "make_planner",
    "make_server_app",
    "run_server",
]


def make_planner(config: Any) -> Any:
    """The planner for an :class:`~fl_harness.config.ExperimentConfig`: the harness's
    one :func:`fl_harness.federation.make_planner` (``planner_options`` with a
    ``fitness`` dict included)."""
    from fl_harness.federation import make_planner as harness_planner

    return harness_planner(config)


def harness_sampler(config: Any) -> Callable[[int, Sequence[Any]], list[Any]]:
    """Client selection identical to :func:`fl_harness.experiment.run_experiment`'s.

    Round :math:`t` takes the :math:`t`-th draw of ``max(1, round(client_fraction *
    n))`` of the ``n`` clients (sorted ids) from the harness's selection stream
    (``SeedStreams.from_seed(seed).selection``); the stream is replayed from round 1, so
    resumed runs select the same clients too. With every partition connected, the
    Flower app then plans for exactly the clients the harness would.
    """
    seed = int(config.seed)
    fraction = float(config.client_fraction)

    def sample(server_round: int, clients: Sequence[Any]) -> list[Any]:
        n = len(clients)
        m = min(n, max(1, round(fraction * n)))
        rng = np.random.default_rng(SeedStreams.from_seed(seed).selection)
        idx = np.arange(0)
        for _ in range(int(server_round)):
            idx = np.sort(rng.choice(n, m, replace=False))
        return [clients[int(i)] for i in idx]

    return sample


def harness_train_seeds(config: Any) -> Callable[[int, Sequence[Any]], dict[Any, dict[str, int]]]:
    """Per-node ``train-seed`` values identical to the harness's training stream.

    :func:`fl_harness.experiment.run_experiment` draws one seed per selected client
    per round, in selection order, from ``SeedStreams.from_seed(seed).training``. Assuming
    every round selects the same number of clients (as the harness does), round
    :math:`t`'s ``i``-th sampled client gets draw ``(t - 1) m + i``. With
    :func:`harness_sampler`, nodes then shuffle their batches exactly as the harness's
    clients do, and the Flower run reproduces the harness run.
    """
    seed = int(config.seed)

    def seeds(server_round: int, sampled: Sequence[Any]) -> dict[Any, dict[str, int]]:
        rng = np.random.default_rng(SeedStreams.from_seed(seed).training)
        skip = (int(server_round) - 1) * len(sampled)
        for _ in range(skip):
            rng.integers(2**62)
        return {c: {"train-seed": int(rng.integers(2**62))} for c in sampled}

    return seeds


def build_strategy(
    run_config: Mapping[str, Any],
    *,
    planner_factory: Callable[[Any], Any] | None = None,
) -> tuple[FlexMoEStrategy, Any]:
    """The strategy and the harness federation described by ``run_config``."""
    fed = federation(run_config, num_clients=1)
    cfg = fed.config
    if cfg.strategy == "full":
        raise ValueError(
            "`strategy` 'full' is the harness's no-planner reference (every client trains "
            f"every expert); the Flower app plans with one of {', '.join(map(repr, STRATEGIES))}"
        )
    planner = (planner_factory or make_planner)(cfg)
    options = {"min_available_nodes": 2, **strategy_options(run_config)}
    options.pop("fraction_train", None)  # the harness's client-fraction decides
    strategy = FlexMoEStrategy(
        planner=planner,
        fraction_train=float(cfg.client_fraction),
        seed=int(cfg.seed),
        sampler=harness_sampler(cfg),
        node_config_fn=harness_train_seeds(cfg),
        **options,
    )
    return strategy, fed


def run_server(
    grid: Grid,
    context: Context,
    *,
    run_config: Mapping[str, Any] | None = None,
    planner_factory: Callable[[Any], Any] | None = None,
    on_strategy: Callable[[FlexMoEStrategy], None] | None = None,
) -> Any:
    """Body of the ServerApp's ``main``; returns Flower's ``Result``.

    ``run_config`` entries override ``context.run_config``.
    """
    run_config = {**dict(context.run_config), **dict(run_config or {})}

    def main() -> Any:
        strategy, fed = build_strategy(run_config, planner_factory=planner_factory)
        if on_strategy is not None:
            on_strategy(strategy)
        rounds = int(run_config.get("num-server-rounds", fed.config.rounds))
        arrays: ArrayRecord = numpy_to_arrayrecord(fed.initial_arrays())
        return strategy.start(
            grid=grid,
            initial_arrays=arrays,
            num_rounds=rounds,
            timeout=float(run_config.get("round-timeout", 600.0)),
            train_config=ConfigRecord(),
            evaluate_config=ConfigRecord(),
        )

    return run_logged(main)


def make_server_app(
    *,
    run_config: Mapping[str, Any] | None = None,
    planner_factory: Callable[[Any], Any] | None = None,
    on_strategy: Callable[[FlexMoEStrategy], None] | None = None,
) -> ServerApp:
    """The FLEX-MoE :class:`~flwr.serverapp.ServerApp`.

    Parameters
    ----------
    run_config : mapping, optional
        Entries overriding the run config Flower passes in ``context.run_config``.
    planner_factory : callable, optional
        ``ExperimentConfig -> planner``; :func:`make_planner` by default.
    on_strategy : callable, optional
        Called with the strategy before the first round (tests use it to inspect
        :attr:`FlexMoEStrategy.history`).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, context, run_config=run_config, planner_factory=planner_factory,
                   on_strategy=on_strategy)

    return app
