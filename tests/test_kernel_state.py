"""flow-warm's compiled kernels never surprise: where they are cached (a read-only
install falls back to a user cache), what ``auto`` weighs (the ski-rental rule over
forgone savings), and the WARNING line before a compile. Nothing here compiles."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flexassign.backends.flow import kernel_state as ks


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    ks._reset_forgone()
    yield
    ks._reset_forgone()


def test_numba_cache_dir_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    root, directory = ks._plan()
    assert root is None  # numba reads the variable itself
    assert directory is not None and directory.parent == tmp_path


def test_read_only_package_caches_per_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    in_tree = ks._SOURCE.parent / "__pycache__"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(ks, "_writable", lambda path: path != in_tree)  # read-only install
    root, directory = ks._plan()
    assert root == str(tmp_path / "flexassign")
    assert directory == tmp_path / "flexassign" / ks._subpath(ks._SOURCE)
    # nothing writable: no cache (each process compiles), said by cache_dir() = None
    monkeypatch.setattr(ks, "_writable", lambda path: False)
    assert ks._plan() == (None, None)
    assert ks.cache_dir() is None and not ks.is_cached()


def test_writable_probe(tmp_path: Path) -> None:
    assert ks._writable(tmp_path / "new" / "dir")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert not ks._writable(blocker / "sub")  # a file where the folder should be


def test_cost_without_numba_is_infinite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ks, "_numba_installed", lambda: False)
    assert ks.compiled_cost_s() == math.inf
    assert not ks.pays_off(1_000_000, 64)


def test_ski_rental_takes_the_kernels_once_forgone_savings_pay_for_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flexassign")
    monkeypatch.setattr(ks, "compiled_cost_s", lambda: 1.0)
    pairs = 1_000_000  # saves 0.4 s a solve at 4e-7 s per pair
    assert ks.SAVING_PER_PAIR_S == pytest.approx(4e-7)
    answers = [ks.pays_off(pairs, 1) for _ in range(3)]
    assert answers == [False, False, True]  # 0.4, 0.8 forgone; then 1.2 >= 1.0
    assert "would cost 1.0 s here" in caplog.text
    monkeypatch.setattr(ks, "compiled_cost_s", lambda: 0.0)  # loaded: always
    assert ks.pays_off(1, 1)


def test_the_or_tools_engine_takes_the_compiled_passes_by_the_same_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the OR-Tools engine (above warm._SSP_MAX_PER_EXPERT clients per expert): at
    # 100,000 x 64 its candidate pass and refinement would save ~0.26 s a solve, so the
    # kernels are loaded once that forgone saving reaches their 0.8 s load cost, on the
    # fourth solve
    import importlib

    warm = importlib.import_module("flexassign.backends.flow.warm")
    monkeypatch.setattr(ks, "compiled_cost_s", lambda: 0.8)  # cached, not loaded
    data = SimpleNamespace(n=100_000, e=64)
    assert [warm._passes_pay(data) for _ in range(4)] == [False, False, False, True]
    ks._reset_forgone()
    small = SimpleNamespace(n=1_000, e=64)  # 2.6 ms a solve: hundreds of solves first
    assert not any(warm._passes_pay(small) for _ in range(100))
    monkeypatch.setattr(ks, "compiled_cost_s", lambda: math.inf)  # no numba: never
    assert not warm._passes_pay(data)
    monkeypatch.setattr(ks, "compiled_cost_s", lambda: 0.0)  # loaded: always
    assert warm._passes_pay(small)


def test_cost_follows_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ks, "_numba_installed", lambda: True)
    monkeypatch.setattr(ks, "is_loaded", lambda: False)
    monkeypatch.setattr(ks, "is_cached", lambda: True)
    assert ks.compiled_cost_s() == ks.LOAD_S
    monkeypatch.setattr(ks, "is_cached", lambda: False)
    assert ks.compiled_cost_s() == ks.COMPILE_S


def test_a_touched_source_counts_as_cached_again_after_a_warmup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os
    import sys

    source = tmp_path / "ssp_kernel.py"
    source.write_text(ks._SOURCE.read_text(encoding="utf-8"), encoding="utf-8")
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(ks, "_SOURCE", source)
    monkeypatch.setattr(ks, "cache_dir", lambda: cache)
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    for name, line in ks._kernels_in_source():
        if name in ks.ENTRY_POINTS:
            (cache / f"ssp_kernel.{name}-{line}.{tag}.nbi").write_bytes(b"")
    assert ks.is_cached()
    now = source.stat().st_mtime
    for index in cache.iterdir():  # cached two minutes ago ...
        os.utime(index, (now - 120, now - 120))
    os.utime(source, (now - 60, now - 60))  # ... then a checkout rewrote the same text
    assert not ks.is_cached()  # numba still loads these indexes and never rewrites them
    ks._mark_cached()  # what warmup does once every entry point has loaded
    assert ks.is_cached()
    missing = next(cache.iterdir())
    missing.unlink()
    assert not ks.is_cached()


def test_every_kernel_is_found_in_the_source() -> None:
    names = [name for name, _ in ks._kernels_in_source()]
    assert set(ks.ENTRY_POINTS) <= set(names)
    assert len(names) == len(set(names))


def _event(name: str, module: str = ks._MODULE) -> Any:
    func = SimpleNamespace(__name__=name, __module__=module)
    return SimpleNamespace(data={"dispatcher": SimpleNamespace(py_func=func)})


def test_one_warning_before_the_first_compile(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flexassign")
    monkeypatch.setattr(ks, "_compile_logged", False)
    monkeypatch.setattr(ks, "_compiles", 0)
    log = ks._CompileLog()
    log.on_start(_event("ssp"))
    log.on_start(_event("_dijkstra"))  # nested: compiled inside ssp, no new line
    log.on_end(_event("_dijkstra"))
    log.on_end(_event("ssp"))
    log.on_start(_event("other", module="somebody.else"))  # not ours: ignored
    log.on_start(_event("refine_steps"))
    log.on_end(_event("refine_steps"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].name == "flexassign.backends.flow.kernel_state"
    said = f"compiling flow-warm's kernels (numba) once, about {ks.COMPILE_S:.0f} s"
    assert said in warnings[0].getMessage()
    assert "flexassign warmup" in warnings[0].getMessage()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos[0].startswith("compiled ssp in ")
    assert infos[1:] == ["compiling flow-warm's kernel refine_steps", infos[2]]
    assert ks._compiles == 3
