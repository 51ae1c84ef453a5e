"""Matplotlib figures rendered to PNG bytes, for embedding in self-contained HTML reports."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        from loadgen.errors import LoadgenError

        raise LoadgenError("reports need matplotlib: pip install 'dissect[report]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    # every text in these figures is data (run names, metric names): `$` in a run name is not TeX math
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _stamp(ax, simulated: bool) -> None:
    if simulated:
        ax.text(0.99, 0.01, "SIMULATED", transform=ax.transAxes, ha="right", va="bottom", fontsize=9,
                color="#b00020", alpha=0.8, fontweight="bold")


def cdf(series: dict[str, Sequence[float]], xlabel: str, title: str, simulated: bool = False) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in series.items():
        v = np.sort(np.asarray(values, dtype=float))
        if v.size:
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=f"{name} (n={v.size})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of requests ≤ x")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1 or any(len(v) for v in series.values()):
        ax.legend(fontsize=8, loc="lower right")
    _stamp(ax, simulated)
    return _png(fig)


def timeline(x: np.ndarray, lines: dict[str, np.ndarray], ylabel: str, title: str, simulated: bool = False,
             scatter: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, y in lines.items():
        ax.plot(x[: len(y)], y, label=name, linewidth=1.4)
    for name, (sx, sy) in (scatter or {}).items():
        ax.scatter(sx, sy, s=6, alpha=0.6, label=name)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if lines or scatter:
        ax.legend(fontsize=8)
    _stamp(ax, simulated)
    return _png(fig)


def sweep_curves(x: Sequence[float], curves: dict[str, Sequence[float | None]], xlabel: str, ylabel: str, title: str,
                 simulated: bool = False, mark_x: float | None = None, mark_label: str = "",
                 failing: Sequence[bool] | None = None) -> bytes:
    """Curves against load; points flagged in `failing` are crossed out on every curve."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    crossed = False
    for name, y in curves.items():
        pts = [(a, b) for a, b in zip(x, y) if b is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        bad = [(a, b) for a, b, f in zip(x, y, failing or []) if f and b is not None]
        if bad:
            ax.scatter([p[0] for p in bad], [p[1] for p in bad], marker="x", s=90, color="#b00020", zorder=5,
                       label=None if crossed else "fails")
            crossed = True
    if mark_x is not None:
        ax.axvline(mark_x, color="#b00020", linestyle="--", linewidth=1)
        ax.text(mark_x, ax.get_ylim()[1], f" {mark_label}", color="#b00020", va="top", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _stamp(ax, simulated)
    return _png(fig)
