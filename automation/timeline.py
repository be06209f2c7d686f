"""A rotation's timeline as a PNG: old and new nodes over time, Jobs running and pending, the deadline.

Input is the simulator's timeline samples (dicts with ``t``, ``old_nodes``,
``new_nodes``, ``jobs_running``, ``jobs_pending``, ``deadline_at``, seconds
from the start of the rollout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


def _get(sample: Any, key: str) -> float:
    return float(sample[key] if isinstance(sample, Mapping) else getattr(sample, key))


def render_timeline(samples: Sequence[Any], path: Path | str, *, title: str = "kiln rotation") -> Path:
    if not samples:
        raise ValueError("no timeline samples to draw")
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    minutes = [_get(s, "t") / 60 for s in samples]
    old = [_get(s, "old_nodes") for s in samples]
    new = [_get(s, "new_nodes") for s in samples]
    running = [_get(s, "jobs_running") for s in samples]
    pending = [_get(s, "jobs_pending") for s in samples]
    deadline = _get(samples[0], "deadline_at") / 60

    fig, (nodes_ax, jobs_ax) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5), height_ratios=(3, 2))
    nodes_ax.stackplot(minutes, old, new, labels=("old nodes (previous AMI)", "new nodes (new AMI)"),
                       colors=("#9aa5b1", "#2f80ed"), step="post", alpha=0.9)
    nodes_ax.set_ylabel("nodes")
    nodes_ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    jobs_ax.step(minutes, running, where="post", color="#27ae60", linewidth=2, label="Jobs running")
    jobs_ax.step(minutes, pending, where="post", color="#eb5757", linewidth=2, label="Jobs pending")
    jobs_ax.set_ylabel("Jobs")
    jobs_ax.set_xlabel("minutes since the rollout started")
    for ax in (nodes_ax, jobs_ax):
        if deadline <= minutes[-1] * 1.15 or ax is nodes_ax:
            ax.axvline(deadline, color="#f2994a", linestyle="--", linewidth=1.5,
                       label="deadline: Jobs on old nodes evicted after this" if ax is nodes_ax else None)
        ax.grid(True, alpha=0.3)
        top = max(max(old[i] + new[i] for i in range(len(old))), 1) if ax is nodes_ax else max(max(running), max(pending), 1)
        ax.set_ylim(0, top * 1.45)  # headroom so the legend never covers the data
        ax.legend(loc="upper right", fontsize=9, framealpha=0.9)
    nodes_ax.set_xlim(0, max(minutes[-1], deadline) * 1.03)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
