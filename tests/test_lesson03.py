"""Lesson 03 (clipping) and the package agree; its exercise checkers accept the solutions and reject wrong answers.

The inline functions are exec'd from the notebook's cells (found by their
`# inline: NAME` marker) and compared with minigrpo on random inputs and on
numbers derived by hand; the solutions are exec'd from the solutions notebook.
"""
import json
import os

import pytest
import torch

from minigrpo.course import viz
from minigrpo.course.exercises import lesson03
from minigrpo.loss import clipped_surrogate

from nbcells import cell_containing, code_cells, exec_cells as load, outputs_text, source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSON = os.path.join(ROOT, "notebooks", "03_clipping.ipynb")
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "03_clipping_solutions.ipynb")


# ------------------------------------------------------------- inline vs package


def test_inline_clipped_surrogate_by_hand():
    f = load(LESSON, "# inline: clipped_surrogate")["clipped_surrogate_inline"]
    ratio = torch.tensor([[1.5, 0.5], [0.5, 1.5]], dtype=torch.float64)
    adv = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    # min(1.5, 1.28) = 1.28; min(0.5, 0.8) = 0.5; min(-0.5, -0.8) = -0.8; min(-1.5, -1.28) = -1.5
    assert torch.allclose(f(ratio, adv, 0.2, 0.28), torch.tensor([[1.28, 0.5], [-0.8, -1.5]], dtype=torch.float64))


@pytest.mark.parametrize("eps_low, eps_high", [(0.2, 0.2), (0.2, 0.28), (0.1, 0.3), (0.0, 0.0), (0.5, 1.0)])
def test_inline_clipped_surrogate_matches_package(eps_low, eps_high):
    f = load(LESSON, "# inline: clipped_surrogate")["clipped_surrogate_inline"]
    g = torch.Generator().manual_seed(int(100 * eps_low + 10 * eps_high))
    ratio = torch.rand(6, 11, generator=g, dtype=torch.float64) * 2.5  # (6, 11)
    adv = torch.randn(6, 1, generator=g, dtype=torch.float64)  # (6, 1)
    assert torch.equal(f(ratio, adv, eps_low, eps_high), clipped_surrogate(ratio, adv, eps_low, eps_high))
    assert torch.equal(f(ratio, -1.0, eps_low, eps_high), clipped_surrogate(ratio, -1.0, eps_low, eps_high))


def test_inline_probability_bounds_by_hand_and_matches_viz():
    f = load(LESSON, "# inline: probability_bounds")["probability_bounds_inline"]
    up, down = f(0.01, 0.2, 0.2)
    assert up == pytest.approx(0.012) and down == pytest.approx(0.008)
    assert f(0.01, 0.2, 0.28)[0] == pytest.approx(0.0128)
    assert f(0.9, 0.2, 0.3) == (1.0, pytest.approx(0.72))  # not 1.17
    for p in (0.001, 0.01, 0.3, 0.7, 0.8, 0.9, 1.0):
        for eps_low, eps_high in ((0.2, 0.2), (0.2, 0.28), (0.1, 0.3)):
            b = viz.probability_bounds(p, eps_low, eps_high)
            assert f(p, eps_low, eps_high) == (pytest.approx(b["up"], abs=1e-15), pytest.approx(b["down"], abs=1e-15))


# --------------------------------------------------------------- the notebook


def test_lesson_is_executed_without_errors():
    cells = code_cells(LESSON)
    assert all(c.get("execution_count") for c in cells), "commit the notebook executed"
    assert not [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    first = source(cells[0])
    assert first.startswith("# NBVAL_IGNORE_OUTPUT") and "torch.__version__" in first
    assert "ipywidgets.__version__" in first and "minigrpo.__version__" in first


def test_lesson_pins_the_corrected_numbers():
    pinned = [c for c in code_cells(LESSON) if source(c).startswith("# NBVAL_CHECK_OUTPUT")]
    text = "".join(outputs_text(c) for c in pinned)
    assert "0.01 -> 0.012 " in text  # note 1.3, right
    assert "0.01 -> 0.0128" in text  # DAPO clip-higher
    assert "0.9 -> min(1, 1.08) = 1" in text and "0.9 -> min(1, 1.17) = 1" in text  # capped by 1
    assert "eps_low  = 0.1:  0.01 -> 0.009" in text  # the lower bound limits a fall
    assert "A = +1: gradient 0 on 72 of 200 ratios, from r = 1.285 to 1.995" in text


def test_lesson_has_summary_and_exercises():
    with open(LESSON, encoding="utf-8") as f:
        md = [source(c) for c in json.load(f)["cells"] if c["cell_type"] == "markdown"]
    assert "**Assumes.**" in md[0] and "You will be able to" in md[0]
    assert any(m.startswith("## Summary") for m in md) and any("## Exercises" in m for m in md)
    for name in ("max_new_prob", "surrogate_grad", "clip_fraction"):
        stub = cell_containing(LESSON, f"def {name}(")
        assert "# YOUR CODE HERE" in stub and "return None" in stub
        assert f"lesson03.check_{name}({name})" in cell_containing(LESSON, f"check_{name}(")


# ------------------------------------------------------------- the checkers

CHECKERS = {"max_new_prob": lesson03.check_max_new_prob, "surrogate_grad": lesson03.check_surrogate_grad,
            "clip_fraction": lesson03.check_clip_fraction}


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_checker_says_not_done_for_the_stub(name, capsys):
    stub = load(LESSON, f"def {name}(")[name]
    CHECKERS[name](stub)
    assert capsys.readouterr().out == f"{name}: not done yet (the function returns None)\n"


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_checker_accepts_the_solution(name, capsys):
    solution = load(SOLUTIONS, f"def {name}(")[name]
    assert "# YOUR CODE HERE" not in cell_containing(SOLUTIONS, f"def {name}(")
    CHECKERS[name](solution)
    assert capsys.readouterr().out.startswith(f"{name}: correct")


def _clipped(ratio, adv, eps_low, eps_high):
    a = adv[:, None]
    return ((a > 0) & (ratio > 1 + eps_high)) | ((a < 0) & (ratio < 1 - eps_low))


WRONG = {
    "max_new_prob": [
        lambda p, eps_high: p * (1 + eps_high),  # forgets that a probability is at most 1
        lambda p, eps_high: p * (1 - eps_high),  # the lower bound: a fall, not a rise
        lambda p, eps_high: min(1.0, p + eps_high),  # additive instead of relative
    ],
    "surrogate_grad": [
        lambda r, a, lo, hi: a[:, None].expand_as(r).clone(),  # never clipped
        lambda r, a, lo, hi: torch.where((r > 1 + hi) | (r < 1 - lo), 0.0, a[:, None].expand_as(r)),  # both sides
        lambda r, a, lo, hi: torch.where(_clipped(r, -a, lo, hi), 0.0, a[:, None].expand_as(r)),  # sides swapped
        lambda r, a, lo, hi: torch.where(_clipped(r, a, lo, hi), 0.0, r * a[:, None]),  # d/dlog p, not d/dr
    ],
    "clip_fraction": [
        lambda r, a, lo, hi: ((r > 1 + hi) | (r < 1 - lo)).double().mean().item(),  # ignores the sign of A
        lambda r, a, lo, hi: ((a[:, None] > 0) & (r > 1 + hi)).double().mean().item(),  # only the upper side
        lambda r, a, lo, hi: _clipped(r, a, lo, hi).double().sum().item(),  # a count, not a fraction
    ],
}


@pytest.mark.parametrize("name, index", [(n, i) for n, fs in sorted(WRONG.items()) for i in range(len(fs))])
def test_checker_rejects_wrong_answers(name, index):
    with pytest.raises(AssertionError, match=name):
        CHECKERS[name](WRONG[name][index])
