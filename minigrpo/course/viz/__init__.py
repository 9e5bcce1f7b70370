"""What the lessons' figures and widgets show: pure, tested computations first, drawing after.

Following STYLE.md 6, every number a widget shows comes from a pure function
built on the engine's own `minigrpo.loss`; the widgets' callbacks only draw
what those return, so the numbers are tested without a browser (tests/test_viz.py).

    clip.py     lesson 03: the clipped objective, its zero-gradient region, how far
                one update moves a token's probability; `clip_explorer()`
    kl.py       lesson 04: k1/k2/k3 against the exact KL, the loss aggregations'
                token weights; `kl_explorer()`
    scrub.py    lesson 09: every token of a mu > 1 run coloured by its ratio, clip, entropy
                or advantage; `clip_scrubber()`
    widgets.py  what the explorers share: drawing into an Output widget from a
                callback, safely across the kernel's threads

matplotlib and ipywidgets are imported inside functions only, so the engine
runs without them.
"""
from .clip import (CLIP_COLORS, TABLE_PROBS, ClipExplorer, bounds_text, clip_curve, clip_explorer, clip_state,
                   draw_clip_axes, plot_clip_cases, probability_bounds, zero_gradient_region)
from .kl import (KL_COLORS, KLExplorer, draw_kl_axes, kl_estimator_stats, kl_explorer, kl_moments, kl_pair,
                 kl_samples, kl_table_text, token_weights)
from .scrub import (COLOR_BY, ClipScrubber, clip_counts, clip_scrubber, group_html, read_traces, token_color,
                    token_states)

__all__ = [
    "CLIP_COLORS", "TABLE_PROBS", "ClipExplorer", "bounds_text", "clip_curve", "clip_explorer", "clip_state",
    "draw_clip_axes", "plot_clip_cases", "probability_bounds", "zero_gradient_region",
    "KL_COLORS", "KLExplorer", "draw_kl_axes", "kl_estimator_stats", "kl_explorer", "kl_moments", "kl_pair",
    "kl_samples", "kl_table_text", "token_weights",
    "COLOR_BY", "ClipScrubber", "clip_counts", "clip_scrubber", "group_html", "read_traces", "token_color",
    "token_states",
]
