"""Split a training set over clients: IID, Dirichlet over labels, k classes per client,
or whole domains (one or a few per client).

Every function returns a list of ``num_clients`` sorted index arrays that cover every
sample exactly once, and is deterministic given its ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from flexassign._validation import check_int

__all__ = [
    "PARTITIONS",
    "partition",
    "partition_dirichlet",
    "partition_domains",
    "partition_iid",
    "partition_shards",
    "split_local",
]

PARTITIONS = ("iid", "dirichlet", "shards", "domains")

IndexList = list[NDArray[np.int64]]


def _check(num_clients: int, n: int) -> None:
    if num_clients < 1:
        raise ValueError(f"`num_clients` must be >= 1; got {num_clients}")
    if n < num_clients:
        raise ValueError(f"cannot split {n} samples over `num_clients`={num_clients}")


def partition_iid(num_samples: int, num_clients: int, *, rng: np.random.Generator) -> IndexList:
    """Shuffle and deal the samples into ``num_clients`` near-equal parts."""
    _check(num_clients, num_samples)
    perm = rng.permutation(num_samples)
    return [np.sort(p).astype(np.int64) for p in np.array_split(perm, num_clients)]


def partition_dirichlet(
    labels: NDArray[np.integer],
    num_clients: int,
    *,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 5,
    max_tries: int = 1000,
) -> IndexList:
    r"""Label-skewed split: class :math:`y`'s samples go to clients in proportions
    :math:`p_y \sim \mathrm{Dir}(\alpha \mathbf{1})`.

    Redraws (up to ``max_tries`` times) until every client holds at least ``min_size``
    samples, as is customary (Hsu et al., 2019).
    """
    labels = np.asarray(labels)
    _check(num_clients, len(labels))
    if not alpha > 0:
        raise ValueError(f"`alpha` must be > 0; got {alpha}")
    min_size = max(1, min(min_size, len(labels) // (2 * num_clients)))
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
        out = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(o) for o in out) >= min_size:
            return out
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split gave every client >= {min_size} samples in "
        f"{max_tries} tries; raise `alpha` or lower `num_clients`"
    )


def partition_shards(
    labels: NDArray[np.integer],
    num_clients: int,
    *,
    classes_per_client: int,
    rng: np.random.Generator,
) -> IndexList:
    """Pathological split: each client holds exactly ``classes_per_client`` classes.

    Classes are dealt round-robin over a random class order (so every class has an
    owner when ``num_clients * classes_per_client >= num_classes``); each class's
    samples are then shared equally among the clients that hold it.
    """
    labels = np.asarray(labels)
    _check(num_clients, len(labels))
    classes = np.unique(labels)
    k = int(classes_per_client)
    if not 1 <= k <= len(classes):
        raise ValueError(f"`classes_per_client` must be in [1, {len(classes)}]; got {k}")
    if num_clients * k < len(classes):
        raise ValueError(
            f"`num_clients` * `classes_per_client` = {num_clients * k} < {len(classes)} "
            "classes: some samples would have no owner"
        )
    order = rng.permutation(classes)
    owners: dict[int, list[int]] = {int(c): [] for c in classes}
    slot = 0
    for i in range(num_clients):
        held: set[int] = set()
        while len(held) < k:
            c = int(order[slot % len(order)])
            slot += 1
            if c not in held:
                held.add(c)
                owners[c].append(i)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c, who in owners.items():
        idx = rng.permutation(np.flatnonzero(labels == c))
        for j, chunk in enumerate(np.array_split(idx, len(who))):
            parts[who[j]].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def partition_domains(
    domains: NDArray[np.integer],
    num_clients: int,
    *,
    max_per_client: int = 2,
    rng: np.random.Generator,
) -> IndexList:
    """Domain split: each client holds every sample it has from 1 to ``max_per_client``
    whole domains (its *affinity*, fixed for the run).

    Each client draws its number of domains uniformly from ``1 .. max_per_client``
    (capped by the number of domains); if the draws cannot cover every domain, clients
    with fewer than the maximum (in a random order) take one more until they do.
    Domains are then dealt round-robin over a random domain order, as
    :func:`partition_shards` deals classes, so every domain has an owner and owner
    counts differ by at most one; each domain's samples are shared equally among its
    owners.

    Parameters
    ----------
    domains : array of int
        The domain of each sample.
    num_clients : int
        Number of clients.
    max_per_client : int
        Most domains a client holds.
    rng : numpy.random.Generator
        Seeds the draws.

    Returns
    -------
    list of ndarray
        ``num_clients`` sorted index arrays covering every sample once.

    Raises
    ------
    ValueError
        If ``num_clients * max_per_client`` is below the number of domains (some domain
        would have no owner) or a domain has fewer samples than owners.

    Examples
    --------
    >>> d = np.repeat(np.arange(4), 10)
    >>> parts = partition_domains(d, 6, rng=np.random.default_rng(0))
    >>> [len(np.unique(d[p])) for p in parts]
    [2, 2, 2, 1, 1, 1]
    """
    domains = np.asarray(domains)
    _check(num_clients, len(domains))
    names = np.unique(domains)
    top = check_int("max_per_client", max_per_client, lo=1)
    top = min(top, len(names))
    if num_clients * top < len(names):
        raise ValueError(
            f"`num_clients` * `max_per_client` = {num_clients * top} < {len(names)} "
            "domains: some domains would have no owner")
    counts = rng.integers(1, top + 1, size=num_clients)
    for i in rng.permutation(num_clients):
        if counts.sum() >= len(names):
            break
        counts[i] = top
    order = rng.permutation(names)
    owners: dict[int, list[int]] = {int(d): [] for d in names}
    slot = 0
    for i in range(num_clients):
        for _ in range(int(counts[i])):   # top <= len(order): the next ones are distinct
            owners[int(order[slot % len(order)])].append(i)
            slot += 1
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for d, who in owners.items():
        idx = rng.permutation(np.flatnonzero(domains == d))
        if len(idx) < len(who):
            raise ValueError(f"domain {d} has {len(idx)} samples for {len(who)} owners; "
                             "lower `num_clients` or the number of domains")
        for j, chunk in enumerate(np.array_split(idx, len(who))):
            parts[who[j]].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def partition(
    labels: NDArray[np.integer],
    num_clients: int,
    *,
    scheme: str,
    rng: np.random.Generator,
    alpha: float = 0.8,
    classes_per_client: int = 4,
    domains: NDArray[np.integer] | None = None,
    domains_per_client: int = 2,
) -> IndexList:
    """Dispatch to :func:`partition_iid`, :func:`partition_dirichlet`,
    :func:`partition_shards` or :func:`partition_domains` by ``scheme`` (``"iid"``,
    ``"dirichlet"``, ``"shards"``, ``"domains"``; the last needs ``domains``, the
    domain of each sample)."""
    if scheme == "domains":
        if domains is None:
            raise ValueError("`partition` 'domains' needs the samples' `domains` (a dataset "
                             "with domains: synthetic or mnist5k)")
        if len(domains) != len(labels):
            raise ValueError(f"`domains` has {len(domains)} entries for {len(labels)} labels")
        return partition_domains(domains, num_clients, max_per_client=domains_per_client,
                                 rng=rng)
    if scheme == "iid":
        return partition_iid(len(labels), num_clients, rng=rng)
    if scheme == "dirichlet":
        return partition_dirichlet(labels, num_clients, alpha=alpha, rng=rng)
    if scheme == "shards":
        return partition_shards(labels, num_clients, classes_per_client=classes_per_client,
                                rng=rng)
    raise ValueError(f"`partition` must be one of {list(PARTITIONS)}; got {scheme!r}")


def split_local(
    indices: NDArray[np.int64], *, test_fraction: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Split one client's indices into local train and local test (at least one train
    sample; the test part may be empty for a tiny client)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in [0, 1); got {test_fraction}")
    perm = rng.permutation(indices)
    n_test = min(round(test_fraction * len(perm)), max(len(perm) - 1, 0))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])
