"""Datasets and client partitions of the FL harness."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl_harness.data import load_dataset, load_npz, make_synthetic
from fl_harness.partition import (
    partition,
    partition_dirichlet,
    partition_domains,
    partition_iid,
    partition_shards,
    split_local,
)


def _labels(n: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=n)


def _covers_once(parts: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(parts)
    assert len(allidx) == n
    assert np.array_equal(np.sort(allidx), np.arange(n))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
@pytest.mark.parametrize("seed", [0, 1])
def test_partition_covers_every_sample_once_and_is_deterministic(scheme: str, seed: int) -> None:
    y = _labels(1000, 10, 3)
    a = partition(y, 20, scheme=scheme, rng=np.random.default_rng(seed), alpha=0.8,
                  classes_per_client=4)
    b = partition(y, 20, scheme=scheme, rng=np.random.default_rng(seed), alpha=0.8,
                  classes_per_client=4)
    _covers_once(a, len(y))
    assert len(a) == 20
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    c = partition(y, 20, scheme=scheme, rng=np.random.default_rng(seed + 100), alpha=0.8,
                  classes_per_client=4)
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


@given(n=st.integers(20, 400), clients=st.integers(1, 20), classes=st.integers(2, 10),
       k=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_shards_hold_exactly_k_classes(n: int, clients: int, classes: int, k: int,
                                       seed: int) -> None:
    y = np.arange(n) % classes            # every class present
    k = min(k, classes)
    if clients * k < classes or n < clients:
        with pytest.raises(ValueError):
            partition_shards(y, clients, classes_per_client=k, rng=np.random.default_rng(seed))
        return
    parts = partition_shards(y, clients, classes_per_client=k, rng=np.random.default_rng(seed))
    _covers_once(parts, n)
    for p in parts:
        assert len(np.unique(y[p])) <= k


@given(n=st.integers(50, 500), clients=st.integers(1, 10), seed=st.integers(0, 2**16),
       alpha=st.floats(0.1, 10))
def test_dirichlet_and_iid_cover(n: int, clients: int, seed: int, alpha: float) -> None:
    y = _labels(n, 5, seed)
    _covers_once(partition_iid(n, clients, rng=np.random.default_rng(seed)), n)
    parts = partition_dirichlet(y, clients, alpha=alpha, rng=np.random.default_rng(seed))
    _covers_once(parts, n)


def test_dirichlet_is_label_skewed() -> None:
    y = _labels(4000, 10, 0)
    parts = partition_dirichlet(y, 40, alpha=0.1, rng=np.random.default_rng(0))
    dominant = [np.bincount(y[p], minlength=10).max() / len(p) for p in parts]
    assert np.mean(dominant) > 0.5     # IID would give about 0.1-0.2


def test_partition_errors_name_the_argument() -> None:
    y = _labels(100, 10, 0)
    with pytest.raises(ValueError, match="`partition`"):
        partition(y, 4, scheme="bogus", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="`alpha`"):
        partition_dirichlet(y, 4, alpha=0.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="`classes_per_client`"):
        partition_shards(y, 4, classes_per_client=11, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="`num_clients`"):
        partition_iid(3, 4, rng=np.random.default_rng(0))


def test_split_local_is_a_disjoint_cover() -> None:
    idx = np.arange(10, 60)
    tr, te = split_local(idx, test_fraction=0.2, rng=np.random.default_rng(0))
    assert len(te) == 10 and len(tr) == 40
    assert np.array_equal(np.sort(np.concatenate([tr, te])), idx)
    tr1, te1 = split_local(np.array([7]), test_fraction=0.5, rng=np.random.default_rng(0))
    assert list(tr1) == [7] and len(te1) == 0


@pytest.mark.parametrize("name", ["mnist1d", "digits", "synthetic"])
def test_builtin_datasets_are_offline_and_standardized(name: str) -> None:
    d = load_dataset(name, num_samples=1000 if name != "digits" else None)
    assert d.num_classes == 10
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.x_train.shape[1] == d.x_test.shape[1] == d.num_features
    assert abs(float(d.x_train.mean())) < 1e-3
    assert set(np.unique(d.y_train)) == set(range(10))
    again = load_dataset(name, num_samples=1000 if name != "digits" else None)
    assert np.array_equal(d.x_train, again.x_train)


def test_mnist1d_leaves_global_rng_alone() -> None:
    np.random.seed(123)  # noqa: NPY002
    expected = np.random.rand()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    load_dataset("mnist1d", num_samples=600, seed=7)
    assert np.random.rand() == expected  # noqa: NPY002


def test_synthetic_domains_differ() -> None:
    d = make_synthetic(num_samples=2000, seed=0)
    means = np.stack([d.x_train[d.y_train == c].mean(0) for c in range(10)])
    # classes of different domains are far apart (domain offsets), so a router can tell
    assert np.linalg.norm(means[0] - means[2]) > np.linalg.norm(means[0] - means[1]) * 0.5


def test_npz_loader_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    f = tmp_path / "tiny.npz"
    np.savez(f, x_train=rng.normal(size=(60, 4, 4)), y_train=rng.integers(0, 3, 60),
             x_test=rng.normal(size=(20, 4, 4)), y_test=rng.integers(0, 3, 20))
    d = load_npz(f)
    assert d.name == "tiny" and d.x_train.shape == (60, 16) and d.num_classes == 3
    assert load_dataset("npz", path=str(f)).x_test.shape == (20, 16)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 2)), y_train=np.zeros(2))
    with pytest.raises(ValueError, match="lacks arrays"):
        load_npz(bad)
    with pytest.raises(ValueError, match="`dataset`"):
        load_dataset("cifar")


@given(n=st.integers(20, 400), clients=st.integers(1, 20), domains=st.integers(1, 10),
       top=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_domains_partition_deals_whole_domains(n: int, clients: int, domains: int, top: int,
                                               seed: int) -> None:
    d = np.arange(n) % domains            # every domain present
    if clients * min(top, domains) < domains or n < clients:
        with pytest.raises(ValueError, match="`num_clients`"):
            partition_domains(d, clients, max_per_client=top, rng=np.random.default_rng(seed))
        return
    try:
        parts = partition_domains(d, clients, max_per_client=top,
                                  rng=np.random.default_rng(seed))
    except ValueError as exc:   # tiny data: a domain with fewer samples than owners
        assert "samples for" in str(exc) and n < clients * top * 2
        return
    _covers_once(parts, n)
    owners = np.zeros(domains, dtype=int)
    for p in parts:
        held = np.unique(d[p])
        assert 1 <= len(held) <= top
        owners[held] += 1
    # a client's domains are all of its data: no sample of a domain it does not own
    assert owners.max() - owners.min() <= 1
    again = partition_domains(d, clients, max_per_client=top, rng=np.random.default_rng(seed))
    assert all(np.array_equal(p, q) for p, q in zip(parts, again, strict=True))


def test_domains_partition_through_partition() -> None:
    y = np.arange(200) % 10
    dom = y // 2
    parts = partition(y, 8, scheme="domains", rng=np.random.default_rng(0), domains=dom,
                      domains_per_client=1)
    assert all(len(np.unique(dom[p])) == 1 for p in parts)
    with pytest.raises(ValueError, match="needs the samples' `domains`"):
        partition(y, 8, scheme="domains", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="`domains` has 3 entries"):
        partition(y, 8, scheme="domains", rng=np.random.default_rng(0), domains=dom[:3])
    with pytest.raises(ValueError, match="`max_per_client` must be >= 1"):
        partition_domains(dom, 8, max_per_client=0, rng=np.random.default_rng(0))


def test_synthetic_with_domains() -> None:
    d = load_dataset("synthetic", num_samples=1000, domains=6)
    assert (d.num_classes, d.num_domains) == (12, 6)
    assert d.domains_of(np.arange(12)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    default = load_dataset("synthetic", num_samples=1000)
    assert (default.num_classes, default.num_domains) == (10, 5)
    with pytest.raises(ValueError, match="has no domains"):
        load_dataset("digits").domains_of(np.arange(3))
