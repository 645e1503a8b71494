"""Packaging metadata and install hints: a LICENSE file and an SPDX license that
setuptools reads without a deprecation warning, project URLs, classifiers, and every
``pip install`` hint in the package, README and docs runnable from a clone."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
EXTRAS = set(PROJECT["optional-dependencies"])


def test_license_file_and_spdx_expression() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    # PEP 639: a license expression and a "License ::" classifier may not be combined
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]


def test_setuptools_reads_the_metadata_without_warnings() -> None:
    """The old ``license = {text = ...}`` made setuptools print a deprecation banner
    three times per install; here any warning fails."""
    pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dist = apply_configuration(Distribution(), str(ROOT / "pyproject.toml"))
    assert dist.metadata.license_expression == "Apache-2.0"
    assert "Typing :: Typed" in dist.get_classifiers()
    assert set(dist.extras_require) == EXTRAS


def test_classifiers_and_urls() -> None:
    classifiers = set(PROJECT["classifiers"])
    assert "Typing :: Typed" in classifiers
    low = int(re.fullmatch(r">=3\.(\d+)", PROJECT["requires-python"]).group(1))  # type: ignore[union-attr]
    versions = {int(c.rsplit(".", 1)[1]) for c in classifiers if re.fullmatch(r".*Python :: 3\.\d+", c)}
    assert min(versions) == low, "the oldest Python classifier is requires-python's"
    assert PROJECT["urls"] and all(u.startswith("https://") for u in PROJECT["urls"].values())
    assert (ROOT / "flexassign" / "py.typed").exists()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["flexassign"]


def test_build_backend_supports_the_license_expression() -> None:
    (requirement,) = [r for r in PYPROJECT["build-system"]["requires"] if "setuptools" in r]
    assert int(re.search(r">=(\d+)", requirement).group(1)) >= 77  # type: ignore[union-attr]


def _hint_sources() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    for pkg in ("flexassign", "fl_harness", "benchmarks", "examples"):
        files += sorted((ROOT / pkg).rglob("*.py")) + sorted((ROOT / pkg).rglob("*.md"))
    return files


def test_every_install_hint_works_from_a_clone() -> None:
    """flexassign is not on PyPI: ``pip install "flexassign[x]"`` cannot work; hints
    install the clone (``-e ".[x]"``) with the constraints, and name real extras."""
    bad = []
    for path in _hint_sources():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        for match in re.finditer(r"""pip install[^\n`]*?['"]?flexassign\[""", text):
            bad.append(f"{rel}: {match.group(0)}")
        for extras in re.findall(r"""pip install[^\n`]*?-e ['"]?\.\[([\w,-]+)\]""", text):
            unknown = set(extras.split(",")) - EXTRAS
            if unknown:
                bad.append(f"{rel}: unknown extra(s) {sorted(unknown)}")
    assert not bad, "\n".join(bad)


def test_torch_hints_carry_the_cpu_constraint() -> None:
    """An unconstrained ``[torch]`` install pulls several GB of CUDA wheels."""
    constraints = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert re.search(r"^torch==[\d.]+$", constraints, re.M)
    for path in _hint_sources():
        for line in path.read_text(encoding="utf-8").splitlines():
            if re.search(r"pip install[^\n]*\.\[[\w,-]*(torch|all)", line):
                assert "-c constraints.txt" in line, f"{path.relative_to(ROOT)}: {line.strip()}"


def test_flower_pin_is_in_the_tested_range_and_checked_in_ci() -> None:
    specifiers = pytest.importorskip("packaging.specifiers")
    constraints = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    pinned = re.search(r"^flwr==([\d.]+)$", constraints, re.M)
    assert pinned, "constraints.txt pins the Flower version CI tests"
    (flower,) = PROJECT["optional-dependencies"]["flower"]
    allowed = specifiers.SpecifierSet(flower.split("]", 1)[1])
    assert pinned.group(1) in allowed, (pinned.group(1), str(allowed))
    assert "1.42.0" in allowed  # issue 23: 1.42 resolves and passes the Flower tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "constraints.txt" in ci and 'm.version("flwr")' in ci
