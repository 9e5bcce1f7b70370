"""Lesson 9's token-level clip scrubber: every token of a committed mu > 1 run, coloured, step by step.

The run's tokens.jsonl (trainer: trace_every) holds, for a few groups of some steps, each completion's
tokens, its advantage A, the sampling entropy of each token and its ratio r = pi_theta / pi_old at each of
the mu updates. `token_states` derives, as grpo_loss does, whether a token sat in the clipped region
(A > 0 and r > 1 + eps_high: "high"; A < 0 and r < 1 - eps_low: "low"), and `token_color` its colour; the
widget only lays out what they return, as HTML (one coloured span per token, its numbers in the tooltip).
"""
from __future__ import annotations

import html

from ...files import read_jsonl

COLOR_BY = ("clip", "ratio", "entropy", "advantage")
CLIP_COLORS = {"low": "#d62728", "high": "#1f77b4", None: "#f2f2f2"}   # clipped at 1 - eps_low / 1 + eps_high / not


def read_traces(path: str) -> list[dict]:
    """The records of a tokens.jsonl file, one per traced step (a bad line is named with its file and line)."""
    return read_jsonl(path, required=("step", "eps_low", "eps_high", "groups", "completions"))


def token_states(completion: dict, eps_low: float, eps_high: float, update: int) -> list[dict]:
    """Each token of a traced completion at update `update` (0-based): its text, ratio, clip, entropy, advantage."""
    adv = completion["advantage"]
    out = []
    for t, token in enumerate(completion["tokens"]):
        a = adv[t] if isinstance(adv, list) else adv
        r = completion["ratios"][update][t]
        clip = "high" if a > 0 and r > 1 + eps_high else "low" if a < 0 and r < 1 - eps_low else None
        out.append({"token": token, "ratio": r, "clip": clip, "entropy": completion["entropy"][t], "advantage": a})
    return out


def clip_counts(record: dict, update: int) -> dict:
    """How many tokens of a traced step sat at each bound at update `update`, and how many there were."""
    counts = {"low": 0, "high": 0, "tokens": 0}
    for c in record["completions"]:
        for s in token_states(c, record["eps_low"], record["eps_high"], update):
            counts["tokens"] += 1
            if s["clip"]:
                counts[s["clip"]] += 1
    return counts


def _mix(a: str, b: str, x: float) -> str:
    """The colour a fraction x in [0, 1] of the way from hex colour a to b."""
    x = min(max(x, 0.0), 1.0)
    ca, cb = (tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in (a, b))
    return "#" + "".join(f"{round(p + (q - p) * x):02x}" for p, q in zip(ca, cb))


def token_color(state: dict, by: str, eps_low: float, eps_high: float, max_entropy: float = 2.0) -> str:
    """The background colour of a token: by clip (red low, blue high, grey none), by ratio (red below 1 and
    blue above, full at the clip bounds), by entropy (white to orange at max_entropy), by advantage (red < 0, green > 0)."""
    if by == "clip":
        return CLIP_COLORS[state["clip"]]
    if by == "ratio":
        r = state["ratio"]
        return _mix("#ffffff", "#1f77b4", (r - 1) / eps_high) if r >= 1 else _mix("#ffffff", "#d62728", (1 - r) / eps_low)
    if by == "entropy":
        return _mix("#ffffff", "#ff7f0e", state["entropy"] / max_entropy)
    if by == "advantage":
        a = state["advantage"]
        return _mix("#ffffff", "#2ca02c", a / 2) if a >= 0 else _mix("#ffffff", "#d62728", -a / 2)
    raise ValueError(f"by={by!r} is not one of: {', '.join(COLOR_BY)}")


def group_html(record: dict, group: int, update: int, by: str) -> str:
    """The G completions of traced group `group` of `record` as HTML lines of coloured token spans."""
    G = record["groups"]
    lines = []
    for c in record["completions"][group * G:(group + 1) * G]:
        spans = []
        for s in token_states(c, record["eps_low"], record["eps_high"], update):
            tip = (f"r = {s['ratio']:.4f}, entropy {s['entropy']:.3f}, A = {s['advantage']:+.3f}"
                   f"{', clipped ' + s['clip'] if s['clip'] else ''}")
            color = token_color(s, by, record["eps_low"], record["eps_high"])
            spans.append(f'<span class="tok" title="{html.escape(tip)}" style="background:{color}">'
                         f"{html.escape(s['token'])}</span>")
        a = c["advantage"][0] if isinstance(c["advantage"], list) else c["advantage"]
        mark = "right" if c["correct"] else "wrong"
        lines.append(f'<div class="completion"><code>A = {a:+.2f} {mark}</code> {"".join(spans)}</div>')
    return "".join(lines)


def scrub_text(record: dict, group: int, update: int) -> str:
    """The scrubber's caption: where it is, and the step's clip counts at this update."""
    n = clip_counts(record, update)
    return (f"step {record['step']}, group {group + 1}, update {update + 1} of {len(record['completions'][0]['ratios'])}:"
            f" {n['low']} of {n['tokens']} traced tokens at 1 - eps_low, {n['high']} at 1 + eps_high")


class ClipScrubber:
    """Sliders through the traced steps, their groups and the mu updates; a toggle for what colours the tokens.

    Controls: `.step` (index into the traces), `.group`, `.update` (sliders), `.by` (toggle). Every change
    writes the caption into `.caption` and the coloured tokens into `.tokens` (HTML widgets).
    """

    def __init__(self, traces: list[dict], step: int = 0, group: int = 0, update: int | None = None, by: str = "clip"):
        import ipywidgets as w

        self.traces = traces
        mu = len(traces[0]["completions"][0]["ratios"])
        groups = len(traces[0]["completions"]) // traces[0]["groups"]
        style = {"description_width": "60px"}
        self.step = w.IntSlider(value=step, min=0, max=len(traces) - 1, description="trace", style=style)
        self.group = w.IntSlider(value=group, min=0, max=groups - 1, description="group", style=style)
        self.update = w.IntSlider(value=mu - 1 if update is None else update, min=0, max=mu - 1, description="update",
                                  style=style)
        self.by = w.ToggleButtons(options=list(COLOR_BY), value=by, description="colour", style=style)
        self.caption, self.tokens = w.HTML(), w.HTML()
        for control in (self.step, self.group, self.update, self.by):
            control.observe(lambda change: self.redraw(), names="value")
        self.widget = w.VBox([w.HBox([self.step, self.group, self.update]), self.by, self.caption, self.tokens])
        self.redraw()

    def redraw(self) -> None:
        record = self.traces[self.step.value]
        self.caption.value = f"<b>{html.escape(scrub_text(record, self.group.value, self.update.value))}</b>"
        self.tokens.value = group_html(record, self.group.value, self.update.value, self.by.value)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def clip_scrubber(path_or_traces, **kwargs) -> ClipScrubber:
    """The clip scrubber of lesson 09 over a tokens.jsonl file (or its records)."""
    traces = read_traces(path_or_traces) if isinstance(path_or_traces, str) else path_or_traces
    return ClipScrubber(traces, **kwargs)
