"""examples/nvflare: the Planner driving an NVIDIA FLARE job in its simulator (slow, ~30 s).

Runs ``examples/nvflare/job.py`` (4 sites, 2 rounds) in a subprocess and checks its
round log and final model: every site received exactly the shared parameter plus the
blocks of its planned experts, within its capacity; no reply was dropped and no
feedback rejected (loss signal); the final model has the global names and shapes, with
every trained expert changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nvflare")

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "nvflare"
sys.path.insert(0, str(APP))

from flexmoe_flare.model import LAYOUT, initial_arrays  # noqa: E402

from flexassign.integrations.layout import block_name  # noqa: E402

pytestmark = pytest.mark.slow


def test_flare_simulator_runs_the_planned_rounds(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, str(APP / "job.py"), "--workspace", str(tmp_path),
                          "--sites", "4", "--rounds", "2"], capture_output=True, text=True,
                         timeout=600, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rounds = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    capacity = {"site-1": 1, "site-2": 2, "site-3": 1, "site-4": 2}
    trained: set[int] = set()
    for r in rounds:
        assert r["dropped"] == {} and r["feedback_rejected"] == {}
        assert {s: len(e) for s, e in r["plan"].items()} == capacity
        for site, held in r["plan"].items():
            want = {"head.bias"} | {block_name("moe.experts.weight", e) for e in held}
            assert set(r["received"][site]) == want
            trained.update(held)
    final = np.load(tmp_path / "final_model.npz")
    start = LAYOUT.public(initial_arrays(4, 4, 0))
    assert sorted(final.files) == sorted(start)
    for e in range(4):
        changed = not np.array_equal(final["moe.experts.weight"][e], start["moe.experts.weight"][e])
        assert changed == (e in trained)
