"""The round loop of :meth:`FlexMoEStrategy.start <.strategy.FlexMoEStrategy.start>`.

Train, evaluate, record, checkpoint; resume from a checkpoint; write the final model.
The per-round work is the strategy's ``configure_*``/``aggregate_*`` hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from logging import INFO
from typing import TYPE_CHECKING

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from .messages import numpy_to_arrayrecord
from .records import append_record, format_metrics

if TYPE_CHECKING:
    from .strategy import FlexMoEStrategy

__all__ = ["run_strategy"]


def run_strategy(
    strategy: FlexMoEStrategy,
    grid: Grid,
    initial_arrays: ArrayRecord,
    *,
    num_rounds: int,
    timeout: float,
    train_config: ConfigRecord | None = None,
    evaluate_config: ConfigRecord | None = None,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
) -> Result:
    """Run ``strategy`` for rounds ``1..num_rounds`` (after a checkpoint's last round).

    See :meth:`FlexMoEStrategy.start <.strategy.FlexMoEStrategy.start>`.
    """
    log(INFO, "Starting %s strategy:", type(strategy).__name__)
    strategy.summary()
    train_config = ConfigRecord() if train_config is None else train_config
    evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
    result = Result()
    arrays = numpy_to_arrayrecord(strategy.set_global_arrays(initial_arrays))
    first = 1
    if strategy.checkpoint_dir is not None:
        restored = strategy.restore(strategy.checkpoint_dir)
        if restored is not None:
            done, arrays = restored
            first = done + 1
            log(INFO, "Resuming from %s after round %d", strategy.checkpoint_dir, done)
    result.arrays = arrays
    if evaluate_fn is not None and first == 1:
        res = evaluate_fn(0, arrays)
        if res is not None:
            result.evaluate_metrics_serverapp[0] = res
    t0 = time.time()
    for rnd in range(first, num_rounds + 1):
        log(INFO, "")
        log(INFO, "[ROUND %s/%s]", rnd, num_rounds)
        messages = list(strategy.configure_train(rnd, arrays, train_config, grid))
        replies = grid.send_and_receive(messages, timeout=timeout) if messages else []
        new_arrays, train_metrics = strategy.aggregate_train(rnd, replies)
        if new_arrays is not None:
            arrays = new_arrays
            result.arrays = arrays
        if train_metrics is not None:
            log(INFO, "\t└──> Train MetricRecord: %s", format_metrics(train_metrics))
            result.train_metrics_clientapp[rnd] = train_metrics
        eval_msgs = list(strategy.configure_evaluate(rnd, arrays, evaluate_config, grid))
        if eval_msgs:
            ev = strategy.aggregate_evaluate(rnd, grid.send_and_receive(eval_msgs, timeout=timeout))
            if ev is not None:
                log(INFO, "\t└──> Evaluate MetricRecord: %s", format_metrics(ev))
                result.evaluate_metrics_clientapp[rnd] = ev
        if evaluate_fn is not None:
            res = evaluate_fn(rnd, arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[rnd] = res
        if strategy.results_path is not None and rnd in strategy.history:
            append_record(strategy.results_path, strategy.history[rnd])
        if strategy.checkpoint_dir is not None:
            strategy.save(strategy.checkpoint_dir, server_round=rnd, arrays=arrays)
    if strategy.final_model_path is not None:
        path = strategy.save_model(strategy.final_model_path, arrays)
        log(INFO, "Final model (%d arrays) saved to %s", len(arrays), path)
    log(INFO, "Strategy execution finished in %.2fs", time.time() - t0)
    for rnd, m in sorted(result.train_metrics_clientapp.items()):
        log(INFO, "\tround %d train: %s", rnd, format_metrics(m))
    for rnd, m in sorted(result.evaluate_metrics_clientapp.items()):
        log(INFO, "\tround %d evaluate: %s", rnd, format_metrics(m))
    return result

