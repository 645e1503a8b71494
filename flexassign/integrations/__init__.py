"""Adapters that run the flexassign planner inside existing FL frameworks.

Each integration lives in its own subpackage and is the only place that imports
its framework, so ``import flexassign`` never pulls in Flower, torch or Ray:

* :mod:`flexassign.integrations.flower` -- a Flower (``flwr>=1.41,<1.43``) server
  strategy and client app built on Flower's Message API (install the ``flower``
  extra: ``pip install -e ".[flower,torch]" -c constraints.txt`` from a clone).

Frameworks without an adapter call the framework-independent planner API
(:class:`flexassign.alignment.Planner`) directly; see ``docs/flower.md`` for a
hand-written loop.
"""

from __future__ import annotations

__all__: list[str] = []
