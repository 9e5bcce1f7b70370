"""Saved progress bars (issue 31): GitHub and nbviewer show a notebook's tqdm bars where they ended, not at 0%.

Plain JSON: minigrpo/course/bars.py and minigrpo/files.py are loaded from their files, without minigrpo's
package (which imports torch). The expected texts are written out by hand from tqdm's format.
"""
import ast
import copy
import glob
import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb"))
                   + glob.glob(os.path.join(ROOT, "notebooks", "solutions", "*.ipynb")))
FIX = "python -m minigrpo.course.bars"


def load(name, relpath):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bars = load("bars_under_test", "minigrpo/course/bars.py")
files = load("files_under_test", "minigrpo/files.py")

# What tqdm.notebook stores: spaces as figure spaces (U+2007), HTML escaped, no '|' next to the bar.
DONE_LEFT, DONE_RIGHT = "GRPO:\u2007100%", "\u200750/50\u2007[00:36&lt;00:00,\u2007\u20071.35it/s,\u2007R=0.736]"
STOP_LEFT, STOP_RIGHT = "GRPO:\u2007\u2007\u20076%", "\u20073/50\u2007[00:02&lt;00:36,\u2007\u20071.30it/s]"
AT_START = "GRPO:   0%|          | 0/50 [00:00<?, ?it/s]"     # what text/plain keeps from the bar's creation
DONE_TEXT = "GRPO: 100%|██████████| 50/50 [00:36<00:00,  1.35it/s, R=0.736]"
STOP_TEXT = "GRPO:   6%|▌         | 3/50 [00:02<00:36,  1.30it/s]"  # 3/50 of 10 cells = 4.8 eighths: one 4/8 block


def model(name, **state):
    return {"model_module": "@jupyter-widgets/controls", "model_module_version": "2.0.0",
            "model_name": name, "state": state}


def tqdm_bar(key, left, value, top, right, style):
    """The four models tqdm.notebook saves for one bar: an HBox of label, progress and text."""
    return {key: model("HBoxModel", children=[f"IPY_MODEL_{key}-{i}" for i in range(3)]),
            f"{key}-0": model("HTMLModel", value=left),
            f"{key}-1": model("FloatProgressModel", value=value, max=top, min=0.0, bar_style=style),
            f"{key}-2": model("HTMLModel", value=right)}


def view(model_id, text, kind="display_data"):
    data = {bars.VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0}, "text/plain": text}
    return {"data": data, "metadata": {}, "output_type": kind}


def notebook(with_state=True):
    """A finished bar, a stopped one (text/plain as a string), a slider box, a bar whose state was not saved."""
    state = {**tqdm_bar("done", DONE_LEFT, 50.0, 50.0, DONE_RIGHT, "success"),
             **tqdm_bar("stop", STOP_LEFT, 3.0, 50.0, STOP_RIGHT, "danger"),
             "box": model("HBoxModel", children=["IPY_MODEL_slider", "IPY_MODEL_label"]),
             "slider": model("FloatSliderModel", value=0.2), "label": model("HTMLModel", value="eps")}
    outputs = [[view("done", [AT_START]), {"name": "stdout", "output_type": "stream", "text": ["ok\n"]}],
               [view("stop", "GRPO:   0%|          | 0/50 [00:00<?, ?it/s]")],
               [view("box", ["HBox(children=(FloatSlider(value=0.2),))"], "execute_result")],
               [view("gone", [AT_START])]]
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# title"]}]
    cells += [{"cell_type": "code", "metadata": {}, "outputs": o, "source": ["run()"]} for o in outputs]
    meta = {"widgets": {bars.STATE: {"state": state, "version_major": 2, "version_minor": 0}}} if with_state else {}
    return {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}


def test_the_text_bar_fills_ten_cells_in_eighths_as_tqdm_draws_it():
    assert bars.text_bar(1.0) == "█" * 10
    assert bars.text_bar(0.0) == " " * 10                  # the blank bar of the stale texts
    assert bars.text_bar(0.06) == "▌" + " " * 9            # 4.8 eighths: 4/8 of the first cell
    assert bars.text_bar(0.5) == "█" * 5 + " " * 5
    assert bars.text_bar(0.99) == "█" * 9 + "▉"           # 79.2 eighths: 9 cells and 7/8


def test_a_finished_and_a_stopped_bar_read_as_tqdm_would_print_them():
    nb = notebook()
    assert [(i, text) for i, _, text in bars.stale_bars(nb)] == [(1, DONE_TEXT), (2, STOP_TEXT)]
    assert bars.finish_bars(nb) == 2
    assert nb["cells"][1]["outputs"][0]["data"]["text/plain"] == [DONE_TEXT]   # a list stays a list
    assert nb["cells"][2]["outputs"][0]["data"]["text/plain"] == STOP_TEXT     # and a string a string


def test_only_the_bars_text_changes():
    nb, expected = notebook(), notebook()
    expected["cells"][1]["outputs"][0]["data"]["text/plain"] = [DONE_TEXT]
    expected["cells"][2]["outputs"][0]["data"]["text/plain"] = STOP_TEXT
    bars.finish_bars(nb)
    assert nb == expected


def test_other_widgets_and_bars_without_saved_state_are_left_alone():
    nb = notebook()
    bars.finish_bars(nb)
    assert nb["cells"][3]["outputs"][0] == notebook()["cells"][3]["outputs"][0]   # the slider box
    assert nb["cells"][4]["outputs"][0] == notebook()["cells"][4]["outputs"][0]   # no state for "gone"
    bare = notebook(with_state=False)
    assert bars.stale_bars(bare) == [] and bars.finish_bars(bare) == 0
    assert bare == notebook(with_state=False)


def test_finishing_twice_changes_nothing():
    nb = notebook()
    bars.finish_bars(nb)
    once = copy.deepcopy(nb)
    assert bars.finish_bars(nb) == 0 and bars.stale_bars(nb) == [] and nb == once


def test_entities_and_figure_spaces_come_back_as_text():
    left, right = {"value": "a&amp;b\u2007x:\u2007100%"}, {"value": "\u20071/1\u2007[&lt;&gt;]"}
    assert bars.finished_text(left, {"value": 1.0, "max": 1.0}, right) == "a&b x: 100%|██████████| 1/1 [<>]"
    # a bar_format without {bar}: tqdm put the whole text on the right
    assert bars.finished_text({"value": ""}, {"value": 1.0, "max": 2.0}, {"value": "1\u2007of\u20072"}) == "1 of 2"


def test_dumps_writes_every_committed_notebook_back_byte_for_byte():
    for path in NOTEBOOKS:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert bars.dumps(json.loads(text)) == text, os.path.relpath(path, ROOT)


def test_a_lesson_saved_at_zero_percent_is_finished_byte_for_byte(tmp_path):
    committed = os.path.join(ROOT, "notebooks", "06_train_arithmetic.ipynb")
    nb = bars.read(committed)
    [(_, out, _)] = bars.bar_outputs(nb)                                     # lesson 6 has one bar
    out["data"]["text/plain"] = ["GRPO:   0%|          | 0/50 [00:00<?, ?it/s]"]   # as nbconvert saves it
    path = tmp_path / "06.ipynb"
    path.write_text(bars.dumps(nb), encoding="utf-8")
    assert bars.finish_file(path, files.atomic_write) == 1
    assert path.read_bytes() == open(committed, "rb").read()
    assert bars.finish_file(path, files.atomic_write) == 0


def test_check_fails_on_a_stale_notebook_and_names_the_fix(tmp_path, capsys):
    path = tmp_path / "lesson.ipynb"
    path.write_text(bars.dumps(notebook()), encoding="utf-8")
    before = path.read_bytes()
    assert bars.main(["--check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{FIX} {path}" in out and repr(DONE_TEXT) in out and "2 stale bar(s)" in out
    assert path.read_bytes() == before                                    # --check writes nothing
    bars.finish_file(path, files.atomic_write)
    assert bars.main(["--check", str(path)]) == 0


def test_bars_imports_only_the_standard_library_at_the_top():
    tree = ast.parse(open(os.path.join(ROOT, "minigrpo", "course", "bars.py"), encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert isinstance(node, ast.Import) or node.level == 0, "a relative import at the top"
            for name in [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]:
                assert name == "__future__" or name.split(".")[0] in sys.stdlib_module_names, name


def test_the_lessons_that_train_have_bars_to_check():
    """So that the check below cannot pass by finding no bar at all."""
    with_bars = {os.path.basename(p) for p in NOTEBOOKS if any(True for _ in bars.bar_outputs(bars.read(p)))}
    lessons = {"06_train_arithmetic", "07_equations_rubric", "08_grpo_vs_ppo", "09_the_grpo_family",
               "10_exact_gradients", "11_long_answers"}
    assert {os.path.basename(name) + ".ipynb" for name in lessons} <= with_bars


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.relpath(p, ROOT))
def test_no_notebook_shows_a_bar_at_its_start(path):
    stale = bars.stale_bars(bars.read(path))
    if stale:
        rel = os.path.relpath(path, ROOT)
        pytest.fail(f"{rel}: {len(stale)} progress bar(s) saved as at their start (GitHub shows "
                    f"{stale[0][1]!r}); run: {FIX} {rel}", pytrace=False)
