"""Glue shared by the backends that drive HiGHS through highspy (highs, lp-round, pyomo).

* :func:`new_highs`: a ``Highs`` object with flexassign's settings (quiet unless
  ``verbose``, seed, threads, time limit).
* :func:`run`: ``Highs.run()`` that survives thread-count changes. HiGHS keeps one
  task scheduler per process, sized by the ``threads`` option of the first solve; a
  later solve with another ``threads`` value fails with model status "Not Set".
  :func:`prepare_threads` resets the scheduler (``Highs.resetGlobalScheduler``) when
  the count changes, and :func:`run` resets and retries once if HiGHS still refuses
  (someone else in the process changed it). The reset shuts the scheduler's workers
  down: do not change ``threads`` while another thread of the same process is inside
  a HiGHS solve (solves with an unchanged count never reset).
* :func:`pass_model`: hand a column-wise sparse model to HiGHS in one call.
* :func:`check_highs_options`: validate raw ``highs_options`` names and values.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import InvalidProblemError
from .base import SolveOptions

__all__ = [
    "check_highs_options",
    "new_highs",
    "outcome",
    "pass_model",
    "prepare_threads",
    "run",
]

_lock = threading.Lock()
_scheduler_threads: int | None = None


def prepare_threads(threads: int) -> None:
    """Make the process-wide HiGHS scheduler fit ``threads`` (reset it when it changes)."""
    global _scheduler_threads
    import highspy

    with _lock:
        if _scheduler_threads is not None and _scheduler_threads != threads:
            highspy.Highs.resetGlobalScheduler(True)
        _scheduler_threads = threads


def run(h: Any, threads: int) -> None:
    """``h.run()`` with the scheduler sized for ``threads``; one reset-and-retry."""
    global _scheduler_threads
    import highspy

    prepare_threads(threads)
    h.run()
    if h.getModelStatus() == highspy.HighsModelStatus.kNotset:
        with _lock:
            highspy.Highs.resetGlobalScheduler(True)
            _scheduler_threads = threads
        h.run()


def threads_of(options: SolveOptions) -> int:
    """The thread count flexassign asks HiGHS for (one by default: deterministic)."""
    return int(options.threads or 1)


def new_highs(options: SolveOptions, *, time_limit: float | None = None) -> Any:
    """A ``Highs`` object with the shared settings (log, seed, threads, time limit)."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", bool(options.verbose))
    h.setOptionValue("random_seed", int(options.seed))
    h.setOptionValue("threads", threads_of(options))
    if time_limit is not None:
        h.setOptionValue("time_limit", max(float(time_limit), 1e-3))
    return h


def set_options(h: Any, raw: Mapping[str, Any], label: str) -> None:
    """Apply validated raw HiGHS options (an error names the option if HiGHS refuses)."""
    import highspy

    for key, value in raw.items():
        if h.setOptionValue(key, value) == highspy.HighsStatus.kError:
            raise InvalidProblemError(f"`{label}[{key!r}]`: HiGHS rejects the value {value!r}")


def check_highs_options(label: str, raw: Mapping[str, Any]) -> None:
    """Raise naming the first unknown HiGHS option or rejected value in ``raw``."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    for key, value in raw.items():
        try:
            got = h.getOptionValue(key)
            known = not (isinstance(got, tuple) and got[0] == highspy.HighsStatus.kError)
        except Exception:
            known = False
        if not known:
            raise InvalidProblemError(f"`{label}[{key!r}]` is not a HiGHS option")
        try:
            status = h.setOptionValue(key, value)
        except (TypeError, ValueError) as exc:
            raise InvalidProblemError(f"`{label}[{key!r}]` has a bad value: {exc}") from None
        if status == highspy.HighsStatus.kError:
            raise InvalidProblemError(f"`{label}[{key!r}]`: HiGHS rejects the value {value!r}")


def _inf(a: np.ndarray, inf: float) -> np.ndarray:
    return np.where(np.isposinf(a), inf, np.where(np.isneginf(a), -inf, a))


def pass_model(
    h: Any,
    cost: np.ndarray,
    A: sp.csc_matrix,
    col_lo: np.ndarray,
    col_hi: np.ndarray,
    row_lo: np.ndarray,
    row_hi: np.ndarray,
    integrality: np.ndarray,
) -> None:
    """Pass ``min cost @ v`` subject to the bounds to HiGHS (column-wise, one call)."""
    import highspy

    inf = highspy.kHighsInf
    A = sp.csc_matrix(A)
    h.passModel(
        int(A.shape[1]),
        int(A.shape[0]),
        int(A.nnz),
        1,  # MatrixFormat.kColwise
        1,  # ObjSense.kMinimize
        0.0,
        np.ascontiguousarray(cost, dtype=np.float64),
        np.ascontiguousarray(_inf(col_lo, inf), dtype=np.float64),
        np.ascontiguousarray(_inf(col_hi, inf), dtype=np.float64),
        np.ascontiguousarray(_inf(row_lo, inf), dtype=np.float64),
        np.ascontiguousarray(_inf(row_hi, inf), dtype=np.float64),
        A.indptr.astype(np.int32),
        A.indices.astype(np.int32),
        A.data.astype(np.float64),
        np.ascontiguousarray(integrality, dtype=np.int32),
    )


def outcome(h: Any) -> str:
    """HiGHS's model status as ``"optimal"``, ``"infeasible"``, ``"limit"`` or its name."""
    import highspy

    MS = highspy.HighsModelStatus
    ms = h.getModelStatus()
    if ms == MS.kOptimal:
        return "optimal"
    if ms in (MS.kInfeasible, MS.kUnboundedOrInfeasible, MS.kUnbounded):
        return "infeasible"  # bounded 0/1 columns: unbounded means no feasible point
    if ms in (MS.kTimeLimit, MS.kIterationLimit, MS.kSolutionLimit, MS.kInterrupt):
        return "limit"
    return f"model status {h.modelStatusToString(ms)}"
