"""The harness's own Flower app: the harness MoE model as a ServerApp and ClientApp.

Built on the model-agnostic :mod:`flexassign.integrations.flower` (strategy, wire
format, layout); this package adds what is specific to :mod:`fl_harness`: the run
config read as an :class:`~fl_harness.experiment.ExperimentConfig`, node
``partition-id = i`` as the harness's client ``i``, the harness's client selection and
training seeds, so a Flower run reproduces a harness run.

* :func:`make_server_app`, :func:`run_server`, :func:`build_strategy`
* :func:`make_client_app` and its ``query``/``train``/``evaluate`` handlers
"""

from __future__ import annotations

from .client import handle_evaluate, handle_query, handle_train, make_client_app
from .harness import HarnessFederation, experiment_config, federation
from .server import (
    build_strategy,
    harness_sampler,
    harness_train_seeds,
    make_planner,
    make_server_app,
    run_server,
)

__all__ = [
    "HarnessFederation",
    "build_strategy",
    "experiment_config",
    "federation",
    "handle_evaluate",
    "handle_query",
    "handle_train",
    "harness_sampler",
    "harness_train_seeds",
    "make_client_app",
    "make_planner",
    "make_server_app",
    "run_server",
]
