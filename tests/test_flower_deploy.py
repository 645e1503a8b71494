"""Deployment, as an operator runs it (opt-in: ``make flower-deploy-test``).

A SuperLink and two SuperNodes on 127.0.0.1 (free ports, a throwaway ``FLWR_HOME``),
started and stopped by PID; ``flwr run`` submits two rounds of ``examples/flower``;
SuperNode 1 is killed while it trains in round 2 (8 local epochs). The run must finish, with the
failure counted in round 2's ``num-failures`` and the node and client named in the
ServerApp log. The phases' timings are printed (run pytest with ``-s`` to see them).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

pytestmark = [pytest.mark.slow, pytest.mark.flower]

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "flower"
BIN = Path(sys.executable).parent
KILLED = 1  # partition-id of the SuperNode killed in round 2

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), deepest first."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    stack = list(kids.get(pid, []))
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return out[::-1]

def _stop(proc: subprocess.Popen[Any]) -> None:
    """Stop ``proc`` and the processes it started (SuperExec, app processes), by PID."""
    pids = [*_children(proc.pid), proc.pid]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=15)

class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "flwr-home"
        self.home.mkdir()
        self.env = {**os.environ, "FLWR_HOME": str(self.home), "FLWR_TELEMETRY_ENABLED": "0",
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT),
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
        self.port = _free_port()
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self.logs: dict[str, IO[str]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[Any]:
        log = open(self.tmp / f"{name}.log", "w")  # closed in close()
        self.logs[name] = log
        proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=log,
                                stderr=subprocess.STDOUT, env=self.env, cwd=self.tmp)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                _stop(proc)
        for log in self.logs.values():
            log.close()

@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()

def _wait_for(pred: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - t0

def test_two_supernodes_one_killed_mid_run(cluster: Cluster, tmp_path: Path) -> None:
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    cluster.start("superlink", "flower-superlink", "--insecure", "--host", "127.0.0.1",
                  "--port", str(cluster.port), "--disable-runtime-dependency-installation")
    timings["superlink up"] = _wait_for(
        lambda: "Uvicorn running" in cluster.log("superlink"), 60, "the SuperLink")
    for pid in (0, 1):
        cluster.start(f"supernode{pid}", "flower-supernode", "--insecure",
                      "--superlink", f"127.0.0.1:{cluster.port}", "--port", str(_free_port()),
                      "--node-config", f"partition-id={pid} num-partitions=2")
    (cluster.home / "config.toml").write_text(
        "[superlink]\ndefault = \"deploy\"\n\n"
        f"[superlink.deploy]\naddress = \"127.0.0.1:{cluster.port}\"\ninsecure = true\n"
    )
    results = tmp_path / "rounds.jsonl"
    model = tmp_path / "model.npz"
    run_config = (f"num-server-rounds=2 min-available-nodes=2 wait-timeout=120.0 "
                  f"round-timeout=240.0 local-epochs=8 results-path='{results}' "
                  f"final-model-path='{model}'")
    t_run = time.monotonic()
    run = cluster.start("flwr-run", "flwr", "run", str(APP), "deploy", "--stream",
                        "--run-config", run_config)
    timings["round 2 started"] = _wait_for(
        lambda: "configure_train: round 2" in cluster.log("flwr-run") or run.poll() is not None,
        300, "round 2")
    assert run.poll() is None, cluster.log("flwr-run")
    time.sleep(0.5)  # the node is now training (8 local epochs)
    _stop(cluster.procs[f"supernode{KILLED}"])
    t_kill = time.monotonic()
    _wait_for(lambda: run.poll() is not None, 420, "flwr run to finish")
    timings["kill -> run finished"] = time.monotonic() - t_kill
    timings["flwr run total"] = time.monotonic() - t_run
    timings["test total"] = time.monotonic() - t_start
    out = cluster.log("flwr-run")
    print("\n--- flwr run --stream (ServerApp log), last 40 lines ---")
    print("\n".join(out.splitlines()[-40:]))
    print("--- timings (s) ---")
    for k, v in timings.items():
        print(f"{k:>24}: {v:6.1f}")
    print(f"{'flwr run exit status':>24}: {run.returncode}")

    assert run.returncode == 0, out
    assert "Strategy execution finished" in out
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert [r["server_round"] for r in rows] == [1, 2]
    assert rows[0]["failed"] == [] and rows[0]["metrics"]["num-failures"] == 0
    assert rows[1]["failed"] == [f"client-{KILLED}"]
    assert rows[1]["metrics"]["num-failures"] == 1 and rows[1]["metrics"]["num-replies"] == 1
    node = dict(rows[1]["node_of"])[f"client-{KILLED}"]
    named = re.search(rf"Round 2: dropping reply of node {node} \(client client-{KILLED}\): .+",
                      out)
    assert named, out
    print(f"{'failure logged as':>24}: {named.group(0)}")
    assert model.exists()

def test_failed_server_app_says_why(cluster: Cluster, tmp_path: Path) -> None:
    """Too few nodes: progress is logged while waiting, then one clear error line."""
    cluster.start("superlink", "flower-superlink", "--insecure", "--host", "127.0.0.1",
                  "--port", str(cluster.port), "--disable-runtime-dependency-installation")
    _wait_for(lambda: "Uvicorn running" in cluster.log("superlink"), 60, "the SuperLink")
    cluster.start("supernode0", "flower-supernode", "--insecure", "--superlink",
                  f"127.0.0.1:{cluster.port}", "--port", str(_free_port()),
                  "--node-config", "partition-id=0 num-partitions=2")
    (cluster.home / "config.toml").write_text(
        "[superlink]\ndefault = \"deploy\"\n\n"
        f"[superlink.deploy]\naddress = \"127.0.0.1:{cluster.port}\"\ninsecure = true\n"
    )
    t0 = time.monotonic()
    run = cluster.start("flwr-run", "flwr", "run", str(APP), "deploy", "--stream",
                        "--run-config", "min-available-nodes=2 wait-timeout=8.0")
    _wait_for(lambda: run.poll() is not None, 240, "flwr run to finish")
    out = cluster.log("flwr-run")
    print(f"\nflwr run exit status {run.returncode} after {time.monotonic() - t0:.1f}s")
    print("\n".join(line for line in out.splitlines() if "Waiting" in line or "failed" in line))
    assert "Waiting for nodes to connect: 1 connected (minimum required: 2" in out
    assert "FLEX-MoE ServerApp failed: TimeoutError: only 1 of the required 2 nodes" in out
    # flwr 1.41's `flwr run --stream` exits 0 whatever the run's outcome; the run's
    # status, which `flwr ls` reports, is where the failure shows.
    run_id = re.search(r"Successfully started run (\d+)", out)
    assert run_id, out
    ls = subprocess.run([str(BIN / "flwr"), "ls", "deploy", "--run-id", run_id.group(1),
                         "--format", "json"], capture_output=True, text=True, env=cluster.env,
                        cwd=cluster.tmp, timeout=60)
    status = json.loads(ls.stdout)["runs"][0]["status"]
    print(f"flwr ls status: {status}")
    assert "failed" in status

if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-s", "-m", "slow"]))

