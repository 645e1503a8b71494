r"""Write an :class:`~flexassign.AssignmentProblem` as an MPS or LP file, through HiGHS.

The file holds the model every MIP backend solves (:mod:`flexassign.backends.linear`),
in the problem's own units (no objective scaling), stated as a **maximization**:

* one binary column ``x_c<c>_e<e>`` per allowed pair (fixed pairs: lower bound 1;
  pairs that are not allowed have no column);
* with soft load bounds (``load_penalty``) two continuous slacks per expert,
  ``under_e<e>`` and ``over_e<e>``, each with objective coefficient :math:`-\rho`;
* rows ``cap_c<c>`` (:math:`k^{\min}_c \le \sum_e x_{ce} \le k_c`), ``mem_c<c>``
  (the memory knapsack, only rows that can bind) and ``load_e<e>``
  (:math:`L_e \le \sum_c w_c x_{ce} + s^-_e - s^+_e \le U_e`).

Any MIP solver that reads MPS or CPLEX LP files (HiGHS's command line, Gurobi, CPLEX,
SCIP, CBC) then finds the optimum :func:`~flexassign.solve_assignment` reports.
HiGHS writes the file (``highspy``, a core dependency).

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> from flexassign import AssignmentProblem
>>> p = AssignmentProblem(np.array([[3.0, 1.0], [2.0, 0.0]]), capacity=1, expert_max_load=1)
>>> path = pathlib.Path(tempfile.mkdtemp()) / "model.lp"
>>> p.to_lp(path) == path
True
>>> "x_c0_e0" in path.read_text()
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidProblemError
from .problem import AssignmentProblem

__all__ = ["FORMATS", "write_model"]

#: File formats and the suffix each one is written with.
FORMATS = {"mps": ".mps", "lp": ".lp"}


def _names(problem: AssignmentProblem, model: Any) -> tuple[list[str], list[str]]:
    """Column and row names (valid identifiers in MPS and LP files)."""
    e = problem.n_experts
    pairs = zip(model.pair_client.tolist(), model.pair_expert.tolist(), strict=True)
    cols = [f"x_c{c}_e{j}" for c, j in pairs]
    if problem.load_penalty is not None:
        cols += [f"under_e{j}" for j in range(e)] + [f"over_e{j}" for j in range(e)]
    rows = [f"cap_c{c}" for c in range(problem.n_clients)]
    if model.memory_rows is not None:
        rows += [f"mem_c{c}" for c in range(problem.n_clients)]
    rows += [f"load_e{j}" for j in range(e)]
    return cols, rows


def _highs_with(problem: AssignmentProblem) -> Any:
    """A quiet ``Highs`` object holding the problem's model (maximize, named)."""
    import highspy

    from .backends.linear import build_linear_model

    model = build_linear_model(problem)
    inf = highspy.kHighsInf

    def bounded(a: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(a, dtype=np.float64), -inf, inf)

    lp = highspy.HighsLp()
    lp.num_col_ = int(model.A.shape[1])
    lp.num_row_ = int(model.A.shape[0])
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.col_cost_ = np.ascontiguousarray(model.c, dtype=np.float64)
    lp.col_lower_ = bounded(model.col_lo)
    lp.col_upper_ = bounded(model.col_hi)
    lp.row_lower_ = bounded(model.row_lo)
    lp.row_upper_ = bounded(model.row_hi)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = model.A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = model.A.indices.astype(np.int32)
    lp.a_matrix_.value_ = model.A.data.astype(np.float64)
    kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
    lp.integrality_ = [kinds[i] for i in model.integrality.tolist()]
    lp.col_names_, lp.row_names_ = _names(problem, model)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    status = h.passModel(lp)
    if status == highspy.HighsStatus.kError:  # pragma: no cover - the model is checked
        raise RuntimeError("HiGHS rejected the model")
    return h


def write_model(
    problem: AssignmentProblem, path: str | os.PathLike[str], *, format: str | None = None
) -> Path:
    """Write ``problem`` to ``path`` as an MPS or CPLEX LP file.

    Parameters
    ----------
    problem : AssignmentProblem
    path : str or path-like
        The file to write (replaced if it exists).
    format : {"mps", "lp"}, optional
        Default: from ``path``'s suffix, which must then be ``.mps`` or ``.lp``.
        HiGHS picks the format from the suffix, so an explicit ``format`` must match it.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InvalidProblemError
        ``format`` is unknown or does not match the suffix of ``path``.
    OSError
        The file cannot be written.
    """
    import highspy

    if not isinstance(problem, AssignmentProblem):
        raise InvalidProblemError(
            f"`problem` must be an AssignmentProblem; got {type(problem).__name__}"
        )
    target = Path(path)
    suffix = target.suffix.lower()
    if format is None:
        format = next((f for f, s in FORMATS.items() if s == suffix), None)
        if format is None:
            raise InvalidProblemError(
                f"`path` must end in .mps or .lp (the format HiGHS writes); got {str(path)!r}"
            )
    elif format not in FORMATS:
        raise InvalidProblemError(f"`format` must be 'mps' or 'lp'; got {format!r}")
    elif FORMATS[format] != suffix:
        raise InvalidProblemError(
            f"`format` {format!r} needs a path ending in {FORMATS[format]}; got {str(path)!r}"
        )
    if not target.parent.is_dir():
        raise FileNotFoundError(f"no such directory: {str(target.parent)!r}")
    h = _highs_with(problem)
    status = h.writeModel(str(target))
    if status == highspy.HighsStatus.kError or not target.exists():
        raise OSError(f"HiGHS could not write {str(target)!r}")
    return target
