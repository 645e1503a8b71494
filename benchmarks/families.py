"""Instance families for the count-based speed cells (issue 22, item 4).

``auto``'s rule and ``flow-warm``'s tuning were measured on :mod:`benchmarks.instances`'
fitness; these families check that the speed holds on other shapes of score matrix:

``benchmark``  :func:`benchmarks.instances.make_fitness` (popularity, clusters, noise).
``uniform``    i.i.d. U(0, 1): no structure, no contention beyond chance.
``lowrank``    rank 4 plus noise: a few latent "skills" shared by every client.
``clustered``  three favourites per client over uniform noise, an eighth of the
               experts popular with all (heavy contention on the popular ones).
``quantized``  scores on 5 levels: many exact ties (degenerate prices and paths).
``harness``    score matrices saved from ``fl-harness``/planner runs
               (``benchmarks/data/harness_*.npz``), rows resampled with replacement to
               ``n`` clients plus 1e-3 noise (the saved runs are small).

Every family gives fitness in about [0, 1]; :func:`family_problem` turns it into the
speed cells' problem (capacities 1, 2, 4; ``balanced(tolerance=0.1)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flexassign import AssignmentProblem

from .instances import make_fitness

__all__ = [
    "DATA",
    "FAMILIES",
    "family_fitness",
    "family_problem",
    "family_rounds",
    "harness_matrices",
]

FAMILIES = ("benchmark", "uniform", "lowrank", "clustered", "quantized", "harness")
#: Saved planner score matrices.
DATA = Path(__file__).with_name("data")


def harness_matrices() -> list[np.ndarray]:
    """The saved score matrices (``scores`` of each ``harness_*.npz``), sorted by name."""
    out = []
    for path in sorted(DATA.glob("harness_*.npz")):
        with np.load(path) as z:
            out.append(np.asarray(z["scores"], dtype=np.float64))
    return out


def family_fitness(name: str, n: int, e: int, rng: np.random.Generator) -> np.ndarray:
    """An ``n x e`` fitness matrix of the family ``name`` (seeded by ``rng``)."""
    if name == "benchmark":
        return make_fitness(n, e, rng)
    if name == "uniform":
        return rng.random((n, e))
    if name == "lowrank":
        u = rng.random((n, 4))
        v = rng.random((4, e))
        fit = u @ v / 4.0 + 0.05 * rng.standard_normal((n, e))
        return np.asarray(fit)
    if name == "clustered":
        fit = 0.3 * rng.random((n, e))
        popular = rng.permutation(e)[: max(1, e // 8)]
        fit[:, popular] += 0.4
        favs = np.argsort(rng.random((n, e)), axis=1)[:, :3]
        np.put_along_axis(fit, favs, np.take_along_axis(fit, favs, axis=1) + 0.6, axis=1)
        return fit
    if name == "quantized":
        return np.floor(rng.random((n, e)) * 5.0) / 4.0
    if name == "harness":
        mats = [m for m in harness_matrices() if m.shape[1] == e] or harness_matrices()
        if not mats:
            raise FileNotFoundError(f"no saved score matrices in {DATA}")
        base = mats[int(rng.integers(len(mats)))]
        cols = np.arange(e) % base.shape[1]
        rows = rng.integers(0, base.shape[0], size=n)
        return np.asarray(base[rows][:, cols] + 1e-3 * rng.standard_normal((n, e)))
    raise ValueError(f"`family` must be one of {FAMILIES}; got {name!r}")


def family_problem(
    name: str, n: int, e: int, *, seed: int, tolerance: float = 0.1
) -> AssignmentProblem:
    """The count-based speed problem of a family: capacities 1, 2 or 4 (a third each)."""
    rng = np.random.default_rng([seed, n, e, FAMILIES.index(name), 22])
    fit = family_fitness(name, n, e, rng)
    cap = np.minimum(rng.choice([1, 2, 4], size=n), e)
    return AssignmentProblem.balanced(fit, capacity=cap, tolerance=tolerance)


def family_rounds(
    name: str,
    n: int,
    e: int,
    *,
    seed: int,
    changed: float = 0.2,
    tolerance: float = 0.1,
    shift: bool = False,
) -> tuple[AssignmentProblem, AssignmentProblem]:
    """Two rounds of a family's count-based problem: in the second, a random
    ``changed`` share of the clients is replaced by new ones.

    By default the new clients come from the *same population* as the first round's
    (their rows are drawn in the same call, so they share its popular experts, latent
    factors or clusters): the federated case, where the clients of a round change and
    the population does not. ``shift=True`` draws them from a fresh draw of the family
    instead (new popular experts, new latent factors): 20 % of the load then moves to
    experts the first round's prices did not expect. A new client keeps the capacity
    of the one it replaces; round 1 is the same problem either way.
    """
    if not 0.0 <= changed <= 1.0:
        raise ValueError(f"`changed` must be in [0, 1]; got {changed!r}")
    m = int(changed * n)
    rng = np.random.default_rng([seed, n, e, FAMILIES.index(name), 22, 2])
    fit = family_fitness(name, n + m, e, rng)  # round 1's clients and the newcomers
    cap = np.minimum(rng.choice([1, 2, 4], size=n), e)
    p1 = AssignmentProblem.balanced(fit[:n], capacity=cap, tolerance=tolerance)
    rows = rng.choice(n, size=m, replace=False)
    fit2 = fit[:n].copy()
    fit2[rows] = family_fitness(name, m, e, rng) if shift else fit[n:]
    return p1, p1.replace(fitness=fit2).rebalanced(tolerance)


def save_planner_scores(*, num_clients: int, num_experts: int, rounds: int, seed: int = 0) -> Path:
    """Run the planner on a synthetic population (:mod:`flexassign.alignment.simulate`)
    and save its score matrix for every client (float32) as
    ``benchmarks/data/harness_sim_e{E}.npz``; returns the path."""
    from flexassign.alignment import Planner
    from flexassign.alignment.simulate import SyntheticPopulation, simulate

    pop = SyntheticPopulation(num_clients, num_experts, skew=1.0, seed=seed)
    planner = Planner(num_experts=num_experts, strategy="flex", tolerance=0.1, seed=seed)
    rng = np.random.default_rng(seed)
    for cid in pop.client_ids:
        planner.set_capacity(cid, int(rng.choice([1, 2, 4])))
    simulate(planner, pop, rounds=rounds, clients_per_round=max(1, num_clients // 2))
    scores = planner.scores(pop.client_ids).astype(np.float32)
    DATA.mkdir(exist_ok=True)
    path = DATA / f"harness_sim_e{num_experts}.npz"
    np.savez_compressed(path, scores=scores, rounds=rounds, seed=seed)
    return path


if __name__ == "__main__":  # python -m benchmarks.families: (re)save the planner scores
    for n_, e_, r_ in ((400, 64, 30), (300, 256, 20)):
        print(save_planner_scores(num_clients=n_, num_experts=e_, rounds=r_))
