r"""The federated Mixture-of-Experts model.

    x ─▶ features ─▶ h ─┬─▶ router (per client, never aggregated) ─▶ top-k gates g
                        └─▶ experts e ∈ held ─▶ E_e(h)
    logits = head(ReLU(Σ_e g_e E_e(h)))

State-dict keys are ``features.*``, ``experts.{e}.*`` (``e`` the *global* expert id),
``head.*`` and ``router.*``. ``experts`` is an :class:`torch.nn.ModuleDict` keyed by
``str(e)``, so a client model that holds only a subset of experts (local expert subset
deployment, :func:`build_client_model`) names its parameters exactly like the full
model, and its state dict holds nothing of the experts it was not assigned.

The router always has one output per global expert; outputs of experts the model does
not hold are masked to :math:`-\infty` before the top-k, so a client's router is
restricted to its assigned experts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "MoEModel",
    "build_client_model",
    "count_parameters",
    "expert_state",
    "make_extractor",
    "shared_state",
    "split_state",
]

StateDict = dict[str, Tensor]


def make_extractor(kind: str, in_features: int, hidden: int) -> nn.Module:
    """The shared feature extractor: ``"mlp"`` (one hidden layer) or ``"conv1d"``
    (two strided 1-D convolutions, for signals such as MNIST-1D)."""
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden),
            nn.ReLU(),
        )
    if kind == "conv1d":
        length = math.ceil(math.ceil(in_features / 2) / 2)
        return nn.Sequential(
            nn.Unflatten(1, (1, in_features)),
            nn.Conv1d(1, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv1d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * length, hidden), nn.ReLU(),
        )
    raise ValueError(f"`extractor` must be 'mlp' or 'conv1d'; got {kind!r}")


def _make_expert(hidden: int, expert_hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(hidden, expert_hidden), nn.ReLU(),
                         nn.Linear(expert_hidden, hidden))


def reset_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialize every Linear/Conv layer from ``generator``, independent of the
    global RNG: He-uniform weights (bound :math:`\\sqrt{6/\\text{fan\\_in}}`, suited to
    ReLU), zero biases."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear | nn.Conv1d):
                fan_in = m.weight[0].numel()
                bound = math.sqrt(6.0 / fan_in)
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()


class MoEModel(nn.Module):
    """Shared extractor, an MoE layer of experts, a shared head and a router.

    Parameters
    ----------
    in_features, num_classes : int
        Input dimension and number of classes.
    num_experts : int
        Number of *global* experts ``E`` (the router's width).
    experts : sequence of int, optional
        The global expert ids this model holds; all ``range(num_experts)`` by default.
    hidden, expert_hidden : int
        Width of the representation ``h`` and of each expert's hidden layer.
    top_k : int
        Experts mixed per sample (capped by the number held).
    extractor : {"mlp", "conv1d"}
        Feature extractor kind.
    generator : torch.Generator, optional
        Seeds the initialization; a fixed seed-0 generator if omitted.
    """

    def __init__(
        self,
        *,
        in_features: int,
        num_classes: int,
        num_experts: int = 8,
        experts: Sequence[int] | None = None,
        hidden: int = 64,
        expert_hidden: int = 64,
        top_k: int = 2,
        extractor: str = "mlp",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        held = tuple(range(num_experts)) if experts is None else tuple(sorted(set(experts)))
        if not held:
            raise ValueError("`experts` must hold at least one expert id")
        if held[0] < 0 or held[-1] >= num_experts:
            raise ValueError(f"`experts` ids must be in [0, {num_experts}); got {held}")
        if top_k < 1:
            raise ValueError(f"`top_k` must be >= 1; got {top_k}")
        self.hparams: dict[str, Any] = {
            "in_features": in_features, "num_classes": num_classes,
            "num_experts": num_experts, "hidden": hidden, "expert_hidden": expert_hidden,
            "top_k": top_k, "extractor": extractor,
        }
        self.num_experts = num_experts
        self.top_k = top_k
        self.features = make_extractor(extractor, in_features, hidden)
        self.experts = nn.ModuleDict({str(e): _make_expert(hidden, expert_hidden) for e in held})
        self.head = nn.Linear(hidden, num_classes)
        self.router = nn.Linear(hidden, num_experts)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        reset_parameters(self, generator)
        self._held: Tensor
        self.register_buffer("_held", torch.tensor(held, dtype=torch.long), persistent=False)

    @property
    def held_experts(self) -> tuple[int, ...]:
        """Global ids of the experts this model holds, ascending."""
        return tuple(int(e) for e in self._held.tolist())

    def gates(self, h: Tensor) -> Tensor:
        """Top-k softmax gates over the held experts, shape ``(n, len(held))``."""
        logits = self.router(h)[:, self._held]
        k = min(self.top_k, logits.shape[1])
        top, idx = logits.topk(k, dim=1)
        return torch.zeros_like(logits).scatter(1, idx, torch.softmax(top, dim=1))

    def expert_outputs(self, h: Tensor) -> Tensor:
        """Every held expert applied to ``h``, shape ``(n, len(held), hidden)``."""
        return torch.stack([self.experts[str(e)](h) for e in self.held_experts], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits, shape ``(n, num_classes)``."""
        h = self.features(x)
        g = self.gates(h)
        mixed = torch.einsum("ne,neh->nh", g, self.expert_outputs(h))
        return self.head(torch.relu(mixed))

    def forward_detailed(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, gates ``(n, held)`` and each held expert's own logits
        ``(n, held, classes)`` (the head applied to that expert alone)."""
        h = self.features(x)
        g = self.gates(h)
        out = self.expert_outputs(h)
        logits = self.head(torch.relu(torch.einsum("ne,neh->nh", g, out)))
        return logits, g, self.head(torch.relu(out))


def build_client_model(
    global_model: MoEModel,
    experts: Iterable[int],
    *,
    router_state: Mapping[str, Tensor] | None = None,
) -> MoEModel:
    """A client-side copy of ``global_model`` holding only ``experts``.

    Shared parts and the chosen experts are copied (not shared) from the global model;
    the router comes from ``router_state`` (the client's own) or, if ``None``, from the
    global model's initial router.

    Parameters
    ----------
    global_model : MoEModel
        The server's model.
    experts : iterable of int
        Assigned global expert ids (each held by `global_model`).
    router_state : mapping, optional
        The client's router (keys ``weight``/``bias`` or ``router.weight``/``router.bias``).

    Returns
    -------
    MoEModel
    """
    ids = tuple(sorted({int(e) for e in experts}))
    missing = set(ids) - set(global_model.held_experts)
    if missing:
        raise ValueError(f"`experts` {sorted(missing)} are not held by `global_model`")
    client = MoEModel(**global_model.hparams, experts=ids)
    src = global_model.state_dict()
    sd = {k: v.clone() for k, v in src.items()
          if not k.startswith("experts.") or int(k.split(".")[1]) in ids}
    if router_state is not None:
        for k, v in router_state.items():
            sd["router." + k.removeprefix("router.")] = v.detach().clone()
    client.load_state_dict(sd)
    return client


def split_state(
    state: Mapping[str, Tensor],
) -> tuple[StateDict, dict[int, StateDict], StateDict]:
    """Split a state dict into shared (``features.*``, ``head.*``), per-expert
    (``{e: {suffix: tensor}}``) and router (``{suffix: tensor}``) parts."""
    shared: StateDict = {}
    experts: dict[int, StateDict] = {}
    router: StateDict = {}
    for k, v in state.items():
        if k.startswith("experts."):
            _, e, rest = k.split(".", 2)
            experts.setdefault(int(e), {})[rest] = v
        elif k.startswith("router."):
            router[k.removeprefix("router.")] = v
        else:
            shared[k] = v
    return shared, experts, router


def shared_state(model: MoEModel) -> StateDict:
    """Detached copies of the shared parameters (``features.*`` and ``head.*``)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if not k.startswith(("experts.", "router."))}


def expert_state(model: MoEModel) -> dict[int, StateDict]:
    """Detached copies of each held expert's parameters, keyed by global id."""
    return {e: {k: v.detach().clone() for k, v in model.experts[str(e)].state_dict().items()}
            for e in model.held_experts}


def count_parameters(model: nn.Module, prefix: str = "") -> int:
    """Number of parameter scalars whose name starts with ``prefix``."""
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))
