"""The standard panel of a run's curves, drawn from its metrics rows (logger.py writes them), one panel per key.

The engine runs without matplotlib: it is imported only when a figure is drawn.
"""
from __future__ import annotations

import math

from .logger import read_metrics

# y-axis labels (with units) of plot_metrics' panels
AXIS_LABELS = {
    "reward_mean": "mean reward of the samples", "accuracy": "share of samples right",
    "eval_accuracy": "held-out accuracy (greedy)", "eval_complete_share": "share 'complete' of correct",
    "eval_worked_share": "share of answers worked", "kl_ref": "KL of the samples to the reference (nats/token)",
    "len_correct": "tokens per right answer", "len_wrong": "tokens per wrong answer",
    "kl": "KL to the reference (nats/token)", "entropy": "entropy (nats/token)",
    "clip_low": "share of tokens at 1 - eps_low", "clip_high": "share of tokens at 1 + eps_high",
    "completion_len": "tokens per completion", "zero_var_frac": "share of groups with A = 0",
    "sample_s": "sampling time (s/step)", "learn_s": "update time (s/step)", "grad_norm": "gradient norm",
}


def plot_metrics(rows, keys=("reward_mean", "eval_accuracy", "kl", "entropy",
                             "clip_high", "completion_len", "zero_var_frac", "sample_s"),
                 title: str | None = None, axes=None, start: dict | None = None):
    """Plot each key against step, one panel per key; returns the matplotlib figure.

    `start` gives values at step 0 (e.g. {"eval_accuracy": the SFT start's accuracy}), drawn as the curve's first
    point. A key that is 0 at every step (the KL with beta = 0, the clip fractions with mu = 1) gets no panel of
    its own: the figure says so in one line instead.
    """
    import matplotlib.pyplot as plt  # imported lazily: the engine runs without matplotlib

    if isinstance(rows, str):
        rows = read_metrics(rows)
    start = start or {}
    keys = [k for k in keys if any(k in r for r in rows)]
    inert = [k for k in keys if all(r.get(k) in (0, 0.0, None) for r in rows) and not start.get(k)]
    keys = [k for k in keys if k not in inert]
    if axes is None:
        cols = min(4, max(len(keys), 1))
        fig, axes = plt.subplots(math.ceil(len(keys) / cols), cols,
                                 figsize=(3.2 * cols, 2.4 * math.ceil(len(keys) / cols)),
                                 squeeze=False)
    else:
        fig = axes.flat[0].figure
    for ax, key in zip(axes.flat, keys):
        pts = ([(0, start[key])] if key in start else []) + [(r["step"], r[key]) for r in rows
                                                             if key in r and r[key] is not None]
        ys = [p[1] for p in pts]
        ax.plot([p[0] for p in pts], ys, marker="o" if len(pts) < 20 else None)
        if ys and min(ys) >= 0 and max(ys) - min(ys) < 0.1 * max(ys):
            ax.set_ylim(0, 1.1 * max(ys))   # a nearly flat curve: do not magnify its step-to-step noise
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("GRPO step", fontsize=8)
        ax.set_ylabel(AXIS_LABELS.get(key, key), fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    if inert:
        fig.text(0.01, 0.005, f"not drawn, 0 at every step: {', '.join(inert)}", fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03 if inert else 0, 1, 1))
    return fig
