"""A numpy mixture of linear experts with stacked expert weights, and each site's data.

Parameters (the names a real model would have, stacked as Mixtral stacks them):

* ``moe.experts.weight`` ``[E, d]`` -- expert *e*'s linear map is row *e* (stacked);
* ``moe.gate.weight`` ``[E, d]`` -- the router, local to each site;
* ``head.bias`` ``[1]`` -- shared.

Prediction: the router picks the top-1 *held* expert for each input (logits of other
experts are -inf), :math:`\\hat y = x \\cdot w_e + b`. Site ``s`` draws inputs around
its own centre and targets from its own linear map (of ``num_experts`` maps, site
``s`` uses map ``s mod num_experts``), so sites prefer different experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexassign.integrations.layout import ExpertLayout

LAYOUT = ExpertLayout(expert=None, stacked=r"^moe\.experts\.weight$", local=r"^moe\.gate\.")


def initial_arrays(num_experts: int, dim: int, seed: int) -> dict[str, np.ndarray]:
    """The model's full state (gate included), seeded."""
    rng = np.random.default_rng(seed)
    return {
        "moe.experts.weight": (0.1 * rng.normal(size=(num_experts, dim))).astype(np.float32),
        "moe.gate.weight": (0.1 * rng.normal(size=(num_experts, dim))).astype(np.float32),
        "head.bias": np.zeros(1, dtype=np.float32),
    }


@dataclass(frozen=True)
class SiteData:
    x: np.ndarray
    y: np.ndarray


def site_data(site: int, *, num_experts: int, dim: int, n: int, seed: int) -> SiteData:
    """Site ``site``'s samples: inputs near its centre, targets from its map."""
    truth = np.random.default_rng([seed, 999]).normal(size=(num_experts, dim))
    centres = np.random.default_rng([seed, 998]).normal(scale=2.0, size=(num_experts, dim))
    rng = np.random.default_rng([seed, site])
    k = site % num_experts
    x = centres[k] + rng.normal(size=(n, dim))
    y = x @ truth[k] + 0.1 * rng.normal(size=n)
    return SiteData(x.astype(np.float32), y.astype(np.float32))


def route(gate: np.ndarray, x: np.ndarray, held: list[int]) -> np.ndarray:
    """Each input's top-1 expert among ``held`` (the others' logits are -inf)."""
    logits = x @ gate.T
    mask = np.full(gate.shape[0], -np.inf)
    mask[held] = 0.0
    return np.argmax(logits + mask, axis=1)


def train(state: dict[str, np.ndarray], data: SiteData, held: list[int], *, steps: int,
          lr: float) -> tuple[dict[str, np.ndarray], list[int], list[float]]:
    """Gradient steps on squared error for the held experts, the bias and the gate.

    Returns the new state and, per held expert, the number of samples routed to it
    and their mean squared error after training (NaN where none).
    """
    w = state["moe.experts.weight"].astype(np.float64).copy()
    gate = state["moe.gate.weight"].astype(np.float64).copy()
    b = float(state["head.bias"][0])
    x, y = data.x.astype(np.float64), data.y.astype(np.float64)
    for _ in range(steps):
        e = route(gate, x, held)
        err = np.einsum("nd,nd->n", x, w[e]) + b - y
        for h in held:
            sel = e == h
            if sel.any():
                w[h] -= lr * (err[sel, None] * x[sel]).mean(axis=0)
                # pull the gate row of h toward the inputs it fits (a simple router update)
                gate[h] += lr * (x[sel].mean(axis=0) * np.exp(-np.mean(err[sel] ** 2)))
        b -= lr * float(err.mean())
    e = route(gate, x, held)
    sq = (np.einsum("nd,nd->n", x, w[e]) + b - y) ** 2
    counts = [int((e == h).sum()) for h in held]
    loss = [float(sq[e == h].mean()) if c else float("nan") for h, c in zip(held, counts,
                                                                              strict=True)]
    new = {"moe.experts.weight": w.astype(np.float32), "moe.gate.weight": gate.astype(np.float32),
           "head.bias": np.array([b], dtype=np.float32)}
    return new, counts, loss
