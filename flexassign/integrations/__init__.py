"""Adapters that run the flexassign planner inside existing FL frameworks.

Framework-neutral (numpy and flexassign only; no Flower, no torch):

* :mod:`flexassign.integrations.layout` -- :class:`~.layout.ExpertLayout`: which
  parameters of a model are experts (named, or stacked tensors cut per expert), which
  stay on the client; select / merge / check a client's arrays;
* :mod:`flexassign.integrations.updates` -- :func:`~.updates.aggregate_updates`, one
  round's aggregate, the Flower strategy's arithmetic for any framework;
* :mod:`flexassign.integrations.aggregation` -- weighted mean, trimmed mean, median,
  bounded weights.

Framework-specific, each the only place that imports its framework, so ``import
flexassign`` never pulls in Flower, torch or Ray:

* :mod:`flexassign.integrations.flower` -- a Flower (``flwr>=1.41,<1.43``) server
  strategy and client helpers built on Flower's Message API (install the ``flower``
  extra: ``pip install -e ".[flower,torch]" -c constraints.txt`` from a clone);
* :mod:`flexassign.integrations.torch_client` -- client-side PyTorch helpers (strict
  loading, routers restricted to held experts, per-expert feedback); torch is
  imported lazily, and the server never imports it.

NVIDIA FLARE and hand-written loops use the neutral modules with
:class:`flexassign.alignment.Planner` directly; see ``examples/nvflare`` and
``docs/flower.md``.
"""

from __future__ import annotations

__all__: list[str] = []
