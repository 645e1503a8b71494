"""Root pytest configuration: which modules' ``>>>`` examples can be collected here.

pytest collects every module's docstring examples (``--doctest-modules`` over
``flexassign`` and ``fl_harness``, see pyproject.toml). Modules that import an optional
extra are skipped when that extra is not installed, so a core-only environment still
runs every example it can.
"""

from __future__ import annotations

import importlib.util


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


collect_ignore_glob: list[str] = []
if _missing("torch") or _missing("pandas"):  # the harness extra
    collect_ignore_glob.append("fl_harness/*")
if _missing("torch"):  # torch-only client helpers of the integrations
    collect_ignore_glob.append("flexassign/integrations/torch_client.py")
if _missing("flwr"):
    collect_ignore_glob.append("flexassign/integrations/flower/*")
if _missing("pyomo"):
    collect_ignore_glob.append("flexassign/backends/pyomo_model.py")
if _missing("pandas"):
    collect_ignore_glob.append("flexassign/labels.py")
if _missing("hypothesis"):
    collect_ignore_glob.append("flexassign/testing/*")
