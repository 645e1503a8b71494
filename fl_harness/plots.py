"""PNG plots of a comparison (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .results import EVAL_METRICS

if TYPE_CHECKING:
    from .comparison import CompareResult

__all__ = ["plot_compare"]


def _curves(result: CompareResult, field: str) -> dict[str, np.ndarray]:
    out = {}
    for s in result.strategies:
        rows = [[getattr(rec, field) for rec in r.rounds]
                for (k, _), r in result.runs.items() if k == s]
        out[s] = np.array(rows, dtype=float)
    return out


def _band(ax: object, curves: dict[str, np.ndarray], ylabel: str, title: str) -> None:
    for s, a in curves.items():
        x = np.arange(1, a.shape[1] + 1)
        ok = ~np.isnan(a).all(axis=0)
        if not ok.any():
            continue
        m = np.nanmean(a[:, ok], axis=0)
        sd = np.nanstd(a[:, ok], axis=0)
        (line,) = ax.plot(x[ok], m, label=s)  # type: ignore[attr-defined]
        ax.fill_between(x[ok], m - sd, m + sd, alpha=0.2,  # type: ignore[attr-defined]
                        color=line.get_color())
    ax.set_xlabel("round")  # type: ignore[attr-defined]
    ax.set_ylabel(ylabel)  # type: ignore[attr-defined]
    ax.set_title(title)  # type: ignore[attr-defined]
    ax.grid(alpha=0.3)  # type: ignore[attr-defined]
    ax.legend()  # type: ignore[attr-defined]


def plot_compare(result: CompareResult, out_dir: str | Path) -> list[Path]:
    """Write ``accuracy.png`` (global accuracy vs round, mean +- std over seeds),
    ``metrics.png`` (every evaluation metric vs round, one panel each),
    ``utilization_cv.png`` (cumulative utilization CV vs round) and
    ``expert_utilization.png`` (final client-trainings per expert, mean over seeds).

    Returns
    -------
    list of Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = result.base
    tag = f"{cfg.dataset}, {cfg.partition}" + (
        f" (alpha={cfg.alpha})" if cfg.partition == "dirichlet" else
        f" ({cfg.classes_per_client} classes/client)" if cfg.partition == "shards" else "")
    files = []

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _band(ax, _curves(result, "global_accuracy"), "global test accuracy",
          f"Accuracy vs round — {tag}")
    if cfg.resolved_target is not None:
        ax.axhline(cfg.resolved_target, color="grey", ls=":", lw=1)
    fig.tight_layout()
    files.append(out / "accuracy.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for ax, metric in zip(axes.ravel(), EVAL_METRICS, strict=True):
        _band(ax, _curves(result, metric), metric.replace("_", " "), tag)
    fig.tight_layout()
    files.append(out / "metrics.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _band(ax, _curves(result, "utilization_cv"), "utilization CV (cumulative)",
          f"Expert-utilization CV — {tag}")
    ax.set_yscale("symlog", linthresh=0.01)
    fig.tight_layout()
    files.append(out / "utilization_cv.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    strategies = result.strategies
    width = 0.8 / max(len(strategies), 1)
    for i, s in enumerate(strategies):
        u = np.array([r.utilization for (k, _), r in result.runs.items() if k == s], float)
        share = u / u.sum(axis=1, keepdims=True).clip(min=1)
        e = np.arange(u.shape[1])
        ax.bar(e + (i - (len(strategies) - 1) / 2) * width, share.mean(axis=0), width,
               yerr=share.std(axis=0), label=s, capsize=2)
    ax.axhline(1.0 / cfg.num_experts, color="grey", ls=":", lw=1)
    ax.set_xlabel("expert")
    ax.set_ylabel("share of client-trainings")
    ax.set_title(f"Per-expert utilization — {tag}")
    ax.legend()
    fig.tight_layout()
    files.append(out / "expert_utilization.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)
    return files
