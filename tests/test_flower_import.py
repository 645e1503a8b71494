"""`flexassign.integrations.flower` must import without torch or the harness."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("flwr")

CODE = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import flexassign.integrations.flower as f
    import flexassign.integrations.flower.messages, flexassign.integrations.flower.strategy
    import flexassign.integrations.flower.app, flexassign.integrations.aggregation
    bad = sorted(m for m, mod in sys.modules.items()
                 if mod is not None and m.split(".")[0] in ("torch", "fl_harness"))
    assert not bad, bad
    print("ok", f.FlexMoEStrategy.__name__)
    """
)


def test_flower_integration_imports_with_torch_blocked() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ,
                                           "FLWR_TELEMETRY_ENABLED": "0"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok FlexMoEStrategy"


def test_torch_block_is_effective() -> None:
    """The check above would fail if the package imported torch."""
    code = "import sys; sys.modules['torch'] = None; import torch"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "import of torch halted" in out.stderr
