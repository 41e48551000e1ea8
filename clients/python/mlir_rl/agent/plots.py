"""Figures of training and evaluation (matplotlib with the Agg backend; Debian: ``python3-matplotlib``)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["have_matplotlib", "learning_curve", "family_speedups"]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rolling(xs: Sequence[float], window: int) -> List[float]:
    out, acc, q = [], 0.0, []
    for x in xs:
        q.append(x)
        acc += x
        if len(q) > window:
            acc -= q.pop(0)
        out.append(acc / len(q))
    return out


def learning_curve(rows: Sequence[Dict[str, Any]], path: str, title: str = "",
                   random_baseline: Optional[float] = None, window: int = 10) -> None:
    """Two panels over the episodes trained: the mean episode return of each update (and its rolling mean over
    ``window`` updates, and the masked random policy's mean return when known), and the geometric-mean speedup of
    each update's correct episodes with the best speedup so far. ``rows`` are the rows of ``updates.csv``."""
    plt = _pyplot()
    rows = [r for r in rows if r.get("episodes_in_update", 0)]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    if rows:
        x = [float(r["episodes"]) for r in rows]
        ret = [float(r["mean_return"]) for r in rows]
        ax1.plot(x, ret, color="tab:blue", alpha=0.3, lw=1, label="mean return per update")
        ax1.plot(x, _rolling(ret, window), color="tab:blue", lw=2, label=f"rolling mean ({window} updates)")
        geo = [float(r["geomean_speedup"]) for r in rows]
        ax2.plot(x, geo, color="tab:green", alpha=0.4, lw=1, label="geomean speedup per update")
        ax2.plot(x, [math.exp(v) for v in _rolling([math.log(max(g, 1e-9)) if g == g else 0.0 for g in geo],
                                                     window)],
                 color="tab:green", lw=2, label=f"rolling geomean ({window} updates)")
        ax2.plot(x, [float(r["best_speedup"]) for r in rows], color="tab:red", lw=1.5, ls="--",
                 label="best speedup so far")
    if random_baseline is not None:
        ax1.axhline(random_baseline, color="gray", ls=":", lw=1.5, label="masked random policy")
    ax1.axhline(0.0, color="black", lw=0.5)
    ax1.set_ylabel("episode return (log10 speedup; penalties)")
    ax1.legend(loc="lower right", fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.set_yscale("log")
    ax2.axhline(1.0, color="black", lw=0.5)
    ax2.set_ylabel("speedup over untransformed")
    ax2.set_xlabel("episodes")
    ax2.legend(loc="upper left", fontsize=8)
    ax2.grid(alpha=0.3, which="both")
    if title:
        ax1.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def family_speedups(families: Sequence[str], columns: Dict[str, Sequence[float]], path: str, title: str = "") -> None:
    """Grouped bars: geometric-mean speedup per op family (x) for each column (policy, random, search baselines),
    log scale, the untransformed reference at 1."""
    plt = _pyplot()
    names = list(columns)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(families) + 2), 4.5))
    width = 0.8 / max(1, len(names))
    colors = ["tab:blue", "tab:gray", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
    for k, name in enumerate(names):
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(families))]
        vals = [v if v == v and v > 0 else float("nan") for v in columns[name]]
        bars = ax.bar(xs, vals, width=width, label=name, color=colors[k % len(colors)])
        for bar, v in zip(bars, vals):
            if v == v:
                ax.annotate(f"{v:.2g}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                            fontsize=7)
    ax.axhline(1.0, color="black", lw=1, label="untransformed reference")
    ax.set_yscale("log")
    ax.set_xticks(range(len(families)))
    ax.set_xticklabels(families)
    ax.set_ylabel("geomean speedup over untransformed")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
