"""Random problem generators and the independent reference MIP, for the tests.

They live in :mod:`flexassign.testing` (users test their own code with them); this
module re-exports them under the names the tests have always used.
"""

from __future__ import annotations

from flexassign.testing import Reference, random_problem
from flexassign.testing import reference_solution as reference_solve

__all__ = ["Reference", "random_problem", "reference_solve"]
