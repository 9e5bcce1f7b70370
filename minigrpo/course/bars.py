"""Finish the tqdm progress bars saved in the lessons' notebooks, so GitHub and nbviewer show where they ended.

In JupyterLab a training bar is an ipywidgets HBox (an HTML label, a FloatProgress, an HTML text). An executed,
saved notebook keeps each widget's final state in metadata.widgets, but the output's text/plain, which GitHub
and nbviewer show, is tqdm's text at the bar's creation: "GRPO:   0%|          | 0/50 [00:00<?, ?it/s]".
This file rewrites that text from the stored state, as tqdm's own text bar reads at the end (issue 31).

    python -m minigrpo.course.bars notebooks/*.ipynb notebooks/solutions/*.ipynb          # rewrite in place
    python -m minigrpo.course.bars --check notebooks/*.ipynb notebooks/solutions/*.ipynb  # list them, exit 1

Only the standard library at the top: the tests load this file without minigrpo's package (which imports torch).
"""
from __future__ import annotations

import argparse
import html
import json
import sys

VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"
TQDM_CHILDREN = ("HTMLModel", "FloatProgressModel", "HTMLModel")  # tqdm.notebook's label, bar and text
BLOCKS = " " + "".join(map(chr, range(0x258F, 0x2587, -1)))       # tqdm.std.Bar.UTF: blank, then 1/8 ... 8/8
WIDTH = 10                                                         # tqdm's text bar width when ncols is unset
FIX = "python -m minigrpo.course.bars"


def text_bar(frac: float, width: int = WIDTH) -> str:
    """tqdm's text bar (tqdm.std.Bar.__format__): `frac` of `width` cells in eighths, rounded down, blank-padded."""
    full, eighths = divmod(int(frac * width * 8), 8)
    if full >= width:
        return BLOCKS[-1] * width
    return BLOCKS[-1] * full + BLOCKS[eighths] + BLOCKS[0] * (width - full - 1)


def plain(value: str) -> str:
    """An HTML label back to tqdm's text: tqdm.notebook escaped it and turned spaces into figure spaces (U+2007)."""
    return html.unescape(value).replace("\u2007", " ")


def finished_text(left: dict, progress: dict, right: dict) -> str:
    """The bar's text at its final state, "{left}|{bar}|{right}", from the states of its three widgets.

    tqdm.notebook's `display` split tqdm's text at the bar (dropping the '|' on each side); this joins it back,
    drawing the bar the widget shows (full for an unknown total). A text with no bar (a bar_format without
    {bar}) tqdm put all on the right, leaving the label empty.
    """
    left_text, right_text = plain(left.get("value", "")), plain(right.get("value", ""))
    if not left_text:
        return right_text
    top = progress.get("max", 100.0)
    frac = min(max(progress.get("value", 0.0) / top, 0.0), 1.0) if top else 0.0
    return f"{left_text}|{text_bar(frac)}|{right_text}"


def widget_state(nb: dict) -> dict:
    """The widget models saved with the notebook, by id ({} when it was saved without them)."""
    return nb.get("metadata", {}).get("widgets", {}).get(STATE, {}).get("state", {})


def tqdm_parts(state: dict, model_id) -> tuple[dict, dict, dict] | None:
    """The (label, progress, text) states of the tqdm bar `model_id` in `state`, or None if it is not one."""
    box = state.get(model_id) if isinstance(model_id, str) else None
    if not box or box.get("model_name") != "HBoxModel":
        return None
    ids = [c.removeprefix("IPY_MODEL_") for c in box.get("state", {}).get("children", []) if isinstance(c, str)]
    children = [state.get(i) for i in ids]
    if None in children or tuple(c.get("model_name") for c in children) != TQDM_CHILDREN:
        return None
    return tuple(c.get("state", {}) for c in children)


def shown_text(output: dict) -> str:
    """The text/plain of an output, as one string (nbformat may store it as a list of lines)."""
    text = output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def bar_outputs(nb: dict):
    """Yield (cell index, output, finished text) for every output of `nb` that shows a saved tqdm bar."""
    state = widget_state(nb)
    for i, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(VIEW)
            parts = tqdm_parts(state, view.get("model_id")) if isinstance(view, dict) else None
            if parts:
                yield i, output, finished_text(*parts)


def stale_bars(nb: dict) -> list[tuple[int, str, str]]:
    """(cell index, text shown, finished text) of each bar whose text/plain is not its final state."""
    return [(i, shown_text(out), text) for i, out, text in bar_outputs(nb) if shown_text(out) != text]


def finish_bars(nb: dict) -> int:
    """Set each stale bar's text/plain in `nb` (in place) to its final state; return how many were stale."""
    n = 0
    for _, output, text in bar_outputs(nb):
        if shown_text(output) != text:
            old = output["data"].get("text/plain")
            output["data"]["text/plain"] = text if isinstance(old, str) else [text]
            n += 1
    return n


def dumps(nb: dict) -> str:
    """The notebook as nbformat writes it (indent 1, non-ASCII as is, a final newline), keys in the order read.

    nbformat sorts keys; keeping the order read instead leaves a notebook edited by hand byte-identical.
    """
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def read(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def finish_file(path, write) -> int:
    """Finish the stale bars of the notebook at `path`; if any, save it with `write(path, fn)`; return how many.

    `write` is minigrpo.files.atomic_write: the notebook is replaced whole or not at all.
    """
    nb = read(path)
    n = finish_bars(nb)
    if n:
        write(path, lambda f: f.write(dumps(nb)))
    return n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=FIX, description="Rewrite the text/plain of saved tqdm bars to their "
                                     "final state, as GitHub and nbviewer show it.")
    parser.add_argument("notebooks", nargs="+", help=".ipynb files, rewritten in place")
    parser.add_argument("--check", action="store_true", help="only list the stale bars; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        stale = [(path, *bar) for path in args.notebooks for bar in stale_bars(read(path))]
        for path, i, shown, text in stale:
            print(f"{path}: cell {i} shows {shown!r}; it ended {text!r}")
        paths = " ".join(dict.fromkeys(path for path, *_ in stale))
        print(f"{len(stale)} stale bar(s)" + (f"; run: {FIX} {paths}" if stale else ""))
        return 1 if stale else 0
    from ..files import atomic_write  # here, not at the top: minigrpo's package imports torch
    for path in args.notebooks:
        n = finish_file(path, atomic_write)
        print(f"{path}: {n} bar{'' if n == 1 else 's'} finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
