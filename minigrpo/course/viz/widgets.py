"""Drawing into a live widget: what the lessons' explorers share.

JupyterLab 4.6 with ipykernel 7 handles widget messages on more than one
thread, so an explorer's callback must not touch pyplot's global figures, must
not draw while another explorer draws, and must show its own errors (a widget
callback's exception otherwise goes only to the kernel's log).
"""
from __future__ import annotations

import io
import threading
import traceback

# Widget messages arrive on the main shell thread and on a kernel subshell thread, so two callbacks, or a callback
# and a running cell, can draw at once: every explorer updates and draws under this one lock.
DRAW_LOCK = threading.RLock()


def update_shown(out, update) -> None:
    """Run an explorer's `update()` under DRAW_LOCK; if it raises, print the traceback in Output `out`, then re-raise.

    ipywidgets sends an exception raised in a widget callback only to the kernel's log, so the learner would see the
    figure freeze and nothing else; raised in a cell, it still fails the cell.
    """
    with DRAW_LOCK:
        try:
            update()
        except Exception:
            out.append_stderr(traceback.format_exc())
            raise


def show_figure(out, draw, figsize: tuple[float, float], **subplots) -> None:
    """Replace what Output widget `out` shows by a PNG of a new 1x2 figure that `draw(ax_left, ax_right)` fills.

    The figure is a bare `matplotlib.figure.Figure`, never registered with pyplot: after every widget message
    the kernel runs its post-execute hooks, and the inline backend's hook draws and closes *every* open pyplot
    figure. Run on another thread, it would draw ours half-built, at the same time as we do (matplotlib's
    math-text parser is shared and not thread-safe: "ParseException ... at char 0"), and close it under us.
    The PNG is made here, so the widget shows a picture even where pyplot's inline backend was never loaded.
    """
    from IPython.display import Image, display
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(1, 2, **subplots)
    draw(*axes)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", bbox_inches="tight")
    with out:
        out.clear_output(wait=True)
        display(Image(png.getvalue()))
