"""The benchmark's quick mode runs, writes the documented JSON, and exact methods agree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

run = pytest.importorskip("benchmarks.run")
suite = pytest.importorskip("benchmarks.suite")

CELL_KEYS = {
    "instance",
    "n",
    "e",
    "variant",
    "capacity",
    "method",
    "backend",
    "status",
    "success",
    "time",
    "times",
    "build_time",
    "solve_time",
    "objective",
    "bound",
    "gap_reported",
    "gap_to_best",
    "best_known",
    "violations",
    "load_cv",
    "load_spread",
    "peak_rss_mib",
    "repeats",
    "exact_method",
    "message",
}


def test_quick_mode_schema_and_agreement(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    code = run.main(
        [
            "--quick",
            "--sizes",
            "10x8",
            "--capacity",
            "both",
            "--time-limit",
            "10",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert out.with_suffix(".md").exists()
    assert {"command", "machine", "cells", "targets", "time_limit", "wall_time"} <= set(report)
    cells = report["cells"]
    # every applicable method ran on all 3 variants x 2 capacity modes
    assert {(c["variant"], c["capacity"]) for c in cells} == {
        (v, cap) for v in ("count", "weighted", "knapsack") for cap in ("max", "exact")
    }
    names = {m.name for m in suite.METHODS}
    assert {c["method"] for c in cells} == names
    for c in cells:
        missing = CELL_KEYS - set(c)
        assert not missing, (c["method"], missing)
        assert c["peak_rss_mib"] > 0
        assert c["time"] > 0
    by_instance: dict[str, list[float]] = {}
    for c in cells:
        if c["exact_method"] and c["status"] == "optimal":
            by_instance.setdefault(c["instance"], []).append(c["objective"])
        if c["method"] == "greedy":
            assert c["status"] != "optimal"
    assert len(by_instance) == 6
    for name, objs in by_instance.items():
        assert len(objs) >= 5, name
        assert max(objs) - min(objs) <= 1e-9 * max(1.0, abs(max(objs))), (name, objs)
        best = max(c["best_known"] for c in cells if c["instance"] == name)
        assert max(objs) == pytest.approx(best)
