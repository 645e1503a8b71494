r"""Probe-based expert deployment: which experts a client *uses*, chosen from its own data.

Balance constrains which experts a client *trains* each round; it says nothing about
which experts the client should run at inference. With ``deploy="probe"`` (the default,
:class:`~fl_harness.config.ExperimentConfig`) every client, trained or newcomer, picks
its deployed set like this:

1. **Probe** (forward only). For each global expert :math:`e`, one at a time (the
   client holds the shared parts and a single expert in memory), the client runs
   extractor, expert and head on its own training data and measures the mean
   cross-entropy :math:`l^p_{ce}` and the accuracy :math:`a^p_{ce}` of that expert
   alone (:func:`probe_experts`, a :class:`~flexassign.alignment.ProbeFeedback`).
2. **Choose** the :math:`k_c` experts of lowest probe loss
   (:meth:`ProbeFeedback.best <flexassign.alignment.ProbeFeedback.best>`; ties: lower id).
3. **Fine-tune** only its router on the chosen experts, everything else frozen
   (:func:`~fl_harness.evaluation.finetune_routers`, as the newcomer metric always did).
   A trained client whose chosen experts are the ones it last trained keeps its router
   as trained: there is nothing new to route to.

The same probe, on a validation slice the client never trains on and measured before
local training, is the dense fitness signal the planner receives during training
(:meth:`Planner.report_probe <flexassign.alignment.Planner.report_probe>`); what it
costs is counted by :class:`ProbeCost`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from flexassign.alignment import ProbeFeedback
from flexassign.alignment.feedback import MAX_PROBE_LOSS

from .model import MoEModel

__all__ = ["DEPLOY_MODES", "ProbeCost", "deploy_clients", "probe_experts"]

#: Deployment modes (``--deploy``): ``"plan"`` uses the experts of the client's last
#: training plan (a newcomer: a plan made from the planner's prior); ``"probe"`` chooses
#: them from the client's own data (this module).
DEPLOY_MODES = ("plan", "probe")


@torch.no_grad()
def probe_experts(model: MoEModel, experts: Iterable[int], x: Tensor, y: Tensor
                  ) -> ProbeFeedback:
    """Each expert's fit to ``(x, y)``, alone and one at a time (forward only).

    Expert :math:`e`'s prediction is ``head(relu(expert_e(features(x))))``: no router,
    no other expert. The loss is capped at
    :data:`~flexassign.alignment.MAX_PROBE_LOSS`.

    Parameters
    ----------
    model : MoEModel
        The global model (it must hold every probed expert).
    experts : iterable of int
        Global ids to probe (distinct).
    x, y : Tensor
        The client's data (at least one sample).

    Returns
    -------
    ProbeFeedback
        ``experts`` in the given order, their mean loss and accuracy, ``count=len(y)``.

    Examples
    --------
    >>> m = MoEModel(in_features=4, num_classes=3, num_experts=3, hidden=8, expert_hidden=8)
    >>> p = probe_experts(m, [0, 2], torch.zeros(5, 4), torch.zeros(5, dtype=torch.long))
    >>> p.experts, p.count
    ((0, 2), 5)
    """
    ids = [int(e) for e in experts]
    if len(y) == 0:
        raise ValueError("`x` is empty: a probe needs at least one sample")
    model.eval()
    h = model.features(x)
    losses, accs = [], []
    for e in ids:
        logits = model.head(torch.relu(model.experts[str(e)](h)))
        loss = float(F.cross_entropy(logits, y))
        losses.append(min(loss, MAX_PROBE_LOSS) if loss == loss else MAX_PROBE_LOSS)
        accs.append(float((logits.argmax(1) == y).float().mean()))
    return ProbeFeedback(experts=ids, loss=losses, accuracy=accs, count=len(y))


@dataclass(frozen=True)
class ProbeCost:
    """What one round's training-time probes cost the participating clients.

    Attributes
    ----------
    probes : int
        Clients that probed.
    experts_probed : int
        Probed (client, expert) pairs.
    extra_downloads : int
        Probed experts a client was not assigned (downloaded for the probe alone).
    extra_bytes : int
        Bytes of those downloads.
    forward_passes : int
        Expert forward passes, one per probed expert and validation sample.
    """

    probes: int = 0
    experts_probed: int = 0
    extra_downloads: int = 0
    extra_bytes: int = 0
    forward_passes: int = 0

    @classmethod
    def of(cls, probes: Mapping[str, ProbeFeedback], plan: Mapping[str, Sequence[int]],
           expert_bytes: Mapping[int, int]) -> ProbeCost:
        """The cost of ``probes`` given each client's ``plan`` (what it downloads anyway).

        >>> p = ProbeFeedback(experts=[0, 1, 2], loss=[1, 1, 1], count=4)
        >>> ProbeCost.of({"a": p}, {"a": (1,)}, {0: 10, 1: 10, 2: 10})
        ProbeCost(probes=1, experts_probed=3, extra_downloads=2, extra_bytes=20, forward_passes=12)
        """
        extra = [e for c, p in probes.items() for e in p.experts if e not in set(plan.get(c, ()))]
        return cls(probes=len(probes),
                   experts_probed=sum(len(p.experts) for p in probes.values()),
                   extra_downloads=len(extra),
                   extra_bytes=int(sum(expert_bytes[e] for e in extra)),
                   forward_passes=sum(len(p.experts) * p.count for p in probes.values()))


def deploy_clients(
    model: MoEModel,
    data: Sequence[tuple[Tensor, Tensor]],
    capacities: Sequence[int],
) -> tuple[list[tuple[int, ...]], list[ProbeFeedback]]:
    """Each client's deployed experts: the ``capacities[i]`` best of a probe of every
    expert on ``data[i]`` (steps 1-2 of the module docstring).

    Returns
    -------
    (list of tuple of int, list of ProbeFeedback)
        The deployed expert ids per client (sorted) and the probe rows they came from.
    """
    every = model.held_experts
    probes = [probe_experts(model, every, x, y) for x, y in data]
    chosen = [p.best(max(1, min(int(k), len(every)))) for p, k in zip(probes, capacities,
                                                                      strict=True)]
    return chosen, probes

