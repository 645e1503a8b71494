"""The interleaved speed comparison (``python -m benchmarks --speed``) on tiny sizes.

Checks the JSON it writes, that every exact method (and peer) reaches the full-flow
optimum, that ratios are relative to greedy's best, and that the targets are derived
from the cells. Times themselves are not asserted (they are measured, not tested).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

run = pytest.importorskip("benchmarks.run")
speed = pytest.importorskip("benchmarks.speed")
peers = pytest.importorskip("benchmarks.peers")


def test_speed_quick_schema_and_agreement(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    args = ["--speed", "--quick", "--sizes", "400x8,1200x16", "--repeats", "2", "--out", str(out)]
    args += ["--families", "none", "--weighted-sizes", "none"]
    if peers.has_pot():
        args.append("--peers")
    assert run.main(args) == 0
    report = json.loads(out.read_text())
    assert out.with_suffix(".md").exists()
    assert {"command", "machine", "cells", "targets", "repeats", "wall_time"} <= set(report)
    count_cells = [c for c in report["cells"] if c["case"] == "count, round 2"]
    assert [(c["n"], c["e"]) for c in count_cells] == [(400, 8), (1200, 16)]
    for cell in report["cells"]:
        methods = cell["methods"]
        assert methods["greedy"]["ratio_to_greedy"] == pytest.approx(1.0)
        assert not methods["greedy"]["matches_reference"]  # greedy ignores balance
        for name, m in methods.items():
            assert len(m["times"]) == 2
            assert m["best"] == min(m["times"]) and m["best"] <= m["median"]
            assert m["ratio_to_greedy"] == pytest.approx(m["best"] / methods["greedy"]["best"])
            assert m["best_cpu"] > 0 and m["cpu_ratio_to_greedy"] > 0
            if m["exact"] and m["status"] == "optimal":
                assert m["matches_reference"], (cell["size"], name, m["objective"])
        assert methods["auto (cold)"]["status"] == "optimal"
        if cell["case"] == "count, round 2":
            assert methods["auto (warm)"]["matches_reference"]
    if peers.has_pot():
        k1 = [c for c in report["cells"] if c["case"] == "k=1, fixed loads"]
        assert k1 and all(c["methods"]["pot-emd"]["matches_reference"] for c in k1)
        assert all(c["methods"]["pot-sinkhorn"]["status"] != "optimal" for c in k1)
        assert any("exact peer" in t["target"] for t in report["targets"])


def test_speed_targets_are_read_from_the_cells() -> None:
    def method(best: float, ok: bool = True, mem: float | None = None) -> dict:
        m = {"best": best, "ratio_to_greedy": best / 0.1, "matches_reference": ok}
        m.update(best_cpu=best, cpu_ratio_to_greedy=best / 0.1)
        m.update(status="optimal", exact=True, backend="flow-warm")
        if mem is not None:
            m["extra_mib"] = mem
        return m

    cells = [
        {
            "n": 10_000,
            "e": 256,
            "size": "10000x256",
            "case": "count, round 2",
            "methods": {
                "greedy": method(0.1, ok=False),
                "auto (cold)": method(0.25),
                "auto (warm)": method(0.3),
            },
        },
        {
            "n": 1_000_000,
            "e": 64,
            "size": "1000000x64",
            "case": "count, round 2",
            "methods": {"greedy": method(0.1, ok=False), "auto (cold)": method(0.35, mem=2000)},
        },
    ]
    got = {t["target"]: t["met"] for t in speed.speed_targets(cells)}
    assert got == {
        "10,000 x 256 auto (cold) <= 3x greedy, same optimum as full flow": True,
        "10,000 x 256 auto (warm) <= 2x greedy, same optimum as full flow": False,
        "1,000,000 x 64 auto (cold) <= 4x greedy, extra memory <= 1.5 GiB": False,
    }


def test_small_overhead_times_both_and_agrees(tmp_path: Path) -> None:
    from benchmarks import small_overhead

    res = small_overhead.measure(10, 8, number=3, repeats=2)
    assert res["method"] == "flow"  # auto's choice at this size
    for name in ("auto", "auto-uncached", "ortools-full"):
        assert 0 < res[name]["best_us"] <= res[name]["median_us"]
    assert res["ratio"] == res["auto"]["best_us"] / res["ortools-full"]["best_us"]
    out = tmp_path / "small.json"
    assert small_overhead.main(["--number", "2", "--repeats", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["size"] == "10x8"


def test_peer_seeds_checks_and_summarises(tmp_path: Path) -> None:
    from benchmarks import peer_seeds

    res = peer_seeds.measure(256, 16, seeds=2, repeats=1)
    assert set(res["cells"]) == {"count", "k1"}
    for cell, rows in res["cells"].items():
        assert [r["seed"] for r in rows] == [0, 1]
        assert all(r["auto"] > 0 and r["ortools-full"] > 0 for r in rows)
        summ = res["summary"][cell]
        assert summ["seeds"] == 2 and 0 <= summ["auto_fastest_seeds"] <= 2
        assert summ["auto"]["worst_ms"] >= summ["auto"]["median_ms"] > 0
    out = tmp_path / "seeds.json"
    argv = ["--size", "128x8", "--seeds", "1", "--repeats", "1", "--json", str(out)]
    assert peer_seeds.main(argv) == 0
    assert json.loads(out.read_text())["size"] == "128x8"


def test_greedy_seeds_checks_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmarks import greedy_seeds

    res = greedy_seeds.measure(400, 16, first_seed=100, seeds=2, repeats=1)
    assert [r["seed"] for r in res["rows"]] == [100, 101]
    for r in res["rows"]:
        for mode in ("cold", "warm"):
            assert r[mode] > 0
            assert r[f"{mode}_ratio"] == pytest.approx(r[mode] / r["greedy"])
    for mode in ("cold", "warm"):
        s = res["summary"][mode]
        assert s["worst"] >= s["median"] > 0 and 0 <= s["met"] <= 2
    assert "worst" in greedy_seeds.report(res)
    out = tmp_path / "seeds.json"
    argv = ["--size", "300x8", "--seeds", "1", "--repeats", "1", "--json", str(out)]
    assert greedy_seeds.main(argv) == 0
    assert json.loads(out.read_text())["size"] == "300x8"
    with pytest.raises(SystemExit) as exc:
        greedy_seeds.main(["--size", "big"])
    assert exc.value.code == 2
    assert "argument --size: must look like 10000x256" in capsys.readouterr().err


def test_crossover_times_both_and_names_autos_pick(tmp_path: Path) -> None:
    from benchmarks import crossover

    rows = crossover.measure([(120, 8), (300, 16)], first_seed=40, seeds=1, repeats=1)
    assert [(r["size"], r["case"]) for r in rows] == [
        (size, case) for size in ("120x8", "300x16") for case in ("cold", "priced", "k1")
    ]
    for r in rows:
        assert r["flow_ms"] > 0 and r["flow_warm_ms"] > 0
        assert r["ratio"] == pytest.approx(r["flow_warm_ms"] / r["flow_ms"])
    # 960 pairs: below every threshold; 300 x 16 passes the compiled engine's (numba)
    assert {r["auto"] for r in rows if r["size"] == "120x8"} == {"flow"}
    out = tmp_path / "grid.json"
    argv = ["--sizes", "120x8", "--seeds", "1", "--repeats", "1", "--json", str(out)]
    assert crossover.main(argv) == 0
    assert len(json.loads(out.read_text())) == 3


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        ("greedy_seeds", ["--seeds", "0"], "`--seeds` and `--repeats` must be >= 1"),
        ("greedy_seeds", ["--size", "100x1"], "argument --size: needs at least 1 client"),
        ("peer_seeds", ["--size", "x"], "argument --size: must look like"),
        ("small_overhead", ["--size", "10*8"], "argument --size: must look like"),
        ("memory", ["10x"], "argument size: must look like"),
        ("crossover", ["--sizes", "300x16,10y8"], "`--sizes`: must look like"),
        ("crossover", ["--repeats", "0"], "`--seeds` and `--repeats` must be >= 1"),
        ("tune_constants", ["--config", "a", "--size", "10*8"], "argument --size: must look like"),
        ("tune_constants", ["--config", "a", "nodot=1"], "argument --config: expected module"),
        ("tune_constants", ["--config", "a", "flexassign.nothere.X=1"], "argument --config:"),
        ("tune_constants", ["--config", "a", "--repeats", "0"], "argument --repeats: must be"),
    ],
)
def test_benchmark_scripts_reject_bad_arguments_in_one_line(
    module: str, argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    import importlib

    mod = importlib.import_module(f"benchmarks.{module}")
    with pytest.raises(SystemExit) as exc:
        mod.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_tune_constants_applies_each_config_and_restores(
    capsys: pytest.CaptureFixture,
) -> None:
    tune = pytest.importorskip("benchmarks.tune_constants")
    warm = pytest.importorskip("flexassign.backends.flow.warm_solve")
    before = warm._SSP_WIDE
    key = "flexassign.backends.flow.warm_solve._SSP_WIDE"
    argv = ["--size", "300x16", "--families", "uniform", "--seeds", "1", "--repeats", "1"]
    assert tune.main([*argv, "--config", "a", f"{key}=8", "--config", "b"]) == 0
    out = capsys.readouterr().out
    assert "uniform    seed   1" in out and "a=" in out and "b=" in out
    assert "OBJECTIVES DIFFER" not in out  # every config solves to the same optimum
    assert out.count("geometric mean") == 2
    assert warm._SSP_WIDE == before  # the module is left as it was


def test_family_and_weighted_cells(tmp_path: Path) -> None:
    cells_mod = pytest.importorskip("benchmarks.speed_cells")
    families = pytest.importorskip("benchmarks.families")
    assert set(families.FAMILIES) >= {"uniform", "lowrank", "clustered", "quantized", "harness"}
    for name in families.FAMILIES:
        p = families.family_problem(name, 60, 8, seed=1)
        assert p.shape == (60, 8) and p.is_unimodular
        p1, p2 = families.family_rounds(name, 60, 8, seed=1)
        _, p3 = families.family_rounds(name, 60, 8, seed=1, shift=True)
        # 20 % of the clients are new (ties aside); round 1 is the same either way
        changed = (p1.fitness != p2.fitness).any(axis=1)
        assert 9 <= changed.sum() <= 12 and (p1.capacity == p2.capacity).all()
        assert ((p1.fitness != p3.fitness).any(axis=1) == changed).all()
        assert p2.is_unimodular and p3.is_unimodular
    cells = cells_mod.family_cells(
        sizes=((300, 8),),
        families=("quantized", "harness"),
        repeats=1,
        seed=0,
        interleave=speed._interleave,
        make_cell=speed._cell,
    )
    assert [c["case"] for c in cells] == [
        f"count, {name}, {case}"
        for name in ("quantized", "harness")
        for case in cells_mod.FAMILY_CASES
    ]
    for c in cells:
        for name in ("auto", "flow", "flow-warm"):
            assert c["methods"][name]["matches_reference"], (c["case"], name)
    wcells = cells_mod.weighted_cells(
        sizes=((600, 8),),  # above registry.AUTO_MIP_PAIRS: auto is the price method
        variants=("weighted", "knapsack"),
        repeats=1,
        seed=0,
        interleave=speed._interleave,
        memory=speed._extra_memory,
    )
    assert [c["case"] for c in wcells] == ["weighted", "knapsack"]
    for c in wcells:
        for mode in ("cold", "warm"):
            m = c["methods"][f"auto ({mode})"]
            assert m["backend"] == "price" and m["gap"] is not None and m["gap"] >= 0
    targets = cells_mod.extra_targets(cells + wcells)
    assert len(targets) == 2 * len(cells_mod.FAMILY_CASES) + 4
    md = speed.speed_markdown(
        {
            "command": "x",
            "started": "now",
            "wall_time": 1.0,
            "repeats": 1,
            "machine": {"cpus": 2, "platform": "p", "versions": {}},
            "targets": targets,
            "cells": cells + wcells,
        }
    )
    assert "count, quantized, warm" in md and "| gap |" in md
