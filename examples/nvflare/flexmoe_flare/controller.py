"""An NVIDIA FLARE ModelController that plans each round with flexassign's Planner.

Per round: the planner picks each site's experts (capacities, load balance, fitness
from the loss signal); each site is sent the shared parameters plus the blocks of
its experts only (``LAYOUT.select``); each reply is checked against the global model
and the site's plan (``LAYOUT.check_update``; a bad reply is dropped and logged with
site and reason); the survivors are aggregated with
:func:`flexassign.integrations.updates.aggregate_updates` (the Flower strategy's
arithmetic); each site's feedback goes to ``Planner.report``. Every round is appended
as one JSON line to ``results_path`` and the final global arrays are written to
``model_path`` (``.npz``). The server needs numpy, flexassign and nvflare, no torch.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.model_controller import ModelController

from flexassign.alignment import Feedback, FitnessConfig, Planner
from flexassign.integrations.aggregation import AggregationError
from flexassign.integrations.layout import LayoutError
from flexassign.integrations.updates import aggregate_updates

from .model import LAYOUT, initial_arrays


class FlexMoEController(ModelController):
    """FLEX-MoE rounds over FLARE sites (constructor arguments are JSON-serializable).

    Parameters
    ----------
    num_rounds : int
    num_experts, dim, seed : int
        The model (:func:`.model.initial_arrays`) and the planner's seed.
    capacities : dict of str to int
        Each site's experts per round (``{"site-1": 1, ...}``).
    tolerance : float
        Load-balance tolerance of the planner.
    results_path, model_path : str
        JSON-lines round log and final ``.npz`` model.
    """

    def __init__(self, *, num_rounds: int, num_experts: int, dim: int, seed: int,
                 capacities: dict[str, int], tolerance: float, results_path: str,
                 model_path: str) -> None:
        super().__init__()
        self.num_rounds = int(num_rounds)
        self.num_experts = int(num_experts)
        self.dim = int(dim)
        self.seed = int(seed)
        self.capacities = {str(k): int(v) for k, v in capacities.items()}
        self.tolerance = float(tolerance)
        # kept as given: FedJob writes the job config from these attributes
        self.results_path = str(results_path)
        self.model_path = str(model_path)
        self._replies: dict[str, FLModel] = {}
        self._lock = threading.Lock()

    def _collect(self, result: FLModel) -> None:
        with self._lock:
            self._replies[str(result.meta["client_name"])] = result

    def run(self) -> None:
        planner = Planner(self.num_experts, strategy="flex", tolerance=self.tolerance,
                          seed=self.seed, fitness=FitnessConfig(signal="loss"))
        for site, k in self.capacities.items():
            planner.set_capacity(site, k)
        arrays = LAYOUT.public(initial_arrays(self.num_experts, self.dim, self.seed))
        LAYOUT.check_model(arrays, num_experts=self.num_experts)
        results, model_path = Path(self.results_path), Path(self.model_path)
        results.unlink(missing_ok=True)
        for rnd in range(1, self.num_rounds + 1):
            sites = sorted(self.sample_clients())
            plan = planner.plan_round(sites)
            self.info(f"Round {rnd}: plan {dict(plan)}")
            self._replies = {}
            sent = [s for s in sites if plan[s]]
            for s in sent:  # one task per site: its own experts only
                self.send_model(
                    task_name="train", targets=[s], callback=self._collect,
                    data=FLModel(params=LAYOUT.select(arrays, plan[s]), current_round=rnd,
                                 meta={"expert_ids": [int(e) for e in plan[s]]}))
            while len(self._replies) < len(sent) and not self.abort_signal.triggered:
                threading.Event().wait(0.05)
            arrays, record = self._aggregate(rnd, arrays, plan, sent, planner)
            with open(results, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        model_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(model_path, **arrays)
        self.info(f"Final model saved to {model_path}")

    def _aggregate(self, rnd: int, arrays: dict[str, np.ndarray], plan: Any, sent: list[str],
                   planner: Planner) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        updates, dropped, feedback = [], {}, {}
        for s in sent:
            reply = self._replies.get(s)
            try:
                if reply is None:
                    raise LayoutError("no reply")
                params = {k: np.asarray(v) for k, v in (reply.params or {}).items()}
                LAYOUT.check_update(params, arrays, plan[s])
                meta = reply.meta["feedback"]
                fb = Feedback(experts=meta["experts"], counts=meta["counts"],
                              loss=[math.nan if v is None else v for v in meta["loss"]])
            except (LayoutError, AggregationError, KeyError, ValueError, TypeError) as exc:
                dropped[s] = str(exc)
                self.warning(f"Round {rnd}: dropping reply of site {s}: {exc}")
                continue
            updates.append((params, float(reply.meta["num_examples"]),
                            dict(zip(fb.experts, map(float, fb.counts), strict=True))))
            feedback[s] = (fb, reply.meta.get("received", []))
        new = aggregate_updates(arrays, updates, layout=LAYOUT)
        rejected = {}
        for s, (fb, _) in feedback.items():
            try:
                planner.report(s, fb)
            except (ValueError, TypeError) as exc:
                rejected[s] = str(exc)
                self.warning(f"Round {rnd}: planner rejected the feedback of site {s}: {exc}")
        record = {"round": rnd, "plan": {s: list(plan[s]) for s in plan},
                  "dropped": dropped, "feedback_rejected": rejected,
                  "received": {s: r for s, (_, r) in feedback.items()},
                  "loss": {s: fb.to_dict()["loss"] for s, (fb, _) in feedback.items()},
                  "utilization_cv": planner.utilization_cv()}
        return new, record
