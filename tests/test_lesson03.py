"""Lesson 03 (clipping) and the package agree; its exercise checkers accept the solutions and reject wrong answers.

The inline functions are exec'd from the notebook's cells (found by their
`# inline: NAME` marker) and compared with minigrpo on random inputs and on
numbers derived by hand; the solutions are exec'd from the solutions notebook,
the wrong answers are written here.
"""
import json
import math
import os

import pytest
import torch

from minigrpo.course import viz
from minigrpo.course.exercises import lesson03
from minigrpo.loss import clipped_surrogate

from nbcells import cell_containing, code_cells, exec_cells as load, function_defined, outputs_text, source

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
    for number, name in enumerate(CHECKERS, start=1):
        statement = [m for m in md if f"**Exercise {number}.** `{name}(" in m]
        assert len(statement) == 1 and "*Hint:*" in statement[0], f"exercise {number} ({name}): statement and hint"
        stub = cell_containing(LESSON, f"def {name}(")
        assert "# YOUR CODE HERE" in stub and "return None" in stub
        assert f"lesson03.check_{name}({name})" in cell_containing(LESSON, f"check_{name}(")
        assert f"lesson03.check_{name}({name})" in cell_containing(SOLUTIONS, f"check_{name}(")


# ------------------------------------------------------------- the checkers

CHECKERS = {"logit_grad": lesson03.check_logit_grad, "steps_to_clip": lesson03.check_steps_to_clip,
            "dual_clip_surrogate": lesson03.check_dual_clip_surrogate}


@pytest.mark.parametrize("name", list(CHECKERS))
def test_checker_says_not_done_for_the_stub(name, capsys):
    CHECKERS[name](function_defined(LESSON, name, {"torch": torch, "math": math}))
    assert capsys.readouterr().out == f"{name}: not done yet (the function returns None)\n"


@pytest.mark.parametrize("name", list(CHECKERS))
def test_checker_accepts_the_solution(name, capsys):
    assert "# YOUR CODE HERE" not in cell_containing(SOLUTIONS, f"def {name}(")
    CHECKERS[name](function_defined(SOLUTIONS, name, {"torch": torch}))
    out = capsys.readouterr().out
    assert out.startswith(f"{name}: correct") and "not done" not in out


def test_hand_cases_agree_with_the_engine_and_a_simulation():
    """The checkers' hand-worked numbers, recomputed by the engine (autograd) or by running the steps."""
    *args, expected = lesson03._hand_logit_case()
    assert torch.allclose(lesson03.logit_grad_reference(*args), expected, rtol=0.0, atol=1e-12)
    for r, a, c, value, slope in lesson03.DUAL_CLIP_CASES:
        ratio = torch.tensor([[r]], dtype=torch.float64, requires_grad=True)
        out = clipped_surrogate(ratio, torch.tensor([[a]], dtype=torch.float64), 0.2, 0.28, delta=c)
        out.sum().backward()
        assert out.item() == pytest.approx(value, abs=1e-12) and ratio.grad.item() == pytest.approx(slope, abs=1e-12)
    for p_old, eps_high, eta, k in lesson03.STEPS_CASES:
        assert lesson03._simulated_steps(p_old, eps_high, eta, limit=2000) == k


def _logit_grad(logits, actions, old_logp, adv, eps_low, eps_high, *, ratio_factor=True, minus_pi=True,
                clip="one side"):
    """The gradient on the logits with one piece changed at a time."""
    probs = torch.softmax(logits, -1)  # (N, T, V)
    onehot = torch.nn.functional.one_hot(actions, logits.shape[-1]).to(logits.dtype)  # (N, T, V)
    ratio = (probs * onehot).sum(-1) / old_logp.exp()  # (N, T)
    a = adv[:, None].expand_as(ratio)  # (N, T)
    if clip == "one side":
        clipped = ((a > 0) & (ratio > 1 + eps_high)) | ((a < 0) & (ratio < 1 - eps_low))
    elif clip == "both sides":
        clipped = (ratio > 1 + eps_high) | (ratio < 1 - eps_low)
    else:
        clipped = torch.zeros_like(ratio, dtype=torch.bool)
    d_logp = torch.where(clipped, 0.0, (ratio if ratio_factor else 1.0) * a)  # (N, T)
    return d_logp[..., None] * ((onehot - probs) if minus_pi else onehot)


def _steps(p, eps, eta, *, saturate=True, never=True, rounding="up"):
    if never and p * (1 + eps) >= 1:
        return math.inf
    x = math.log((1 + eps) * (1 - p) / (1 - p * (1 + eps))) if saturate else math.log(1 + eps)
    return {"up": math.floor(x / eta) + 1, "down": math.floor(x / eta), "none": x / eta}[rounding]


def _dual(r, a, lo, hi, c, *, where=lambda a: a < 0, pick=torch.maximum, floor=None):
    clipped = torch.minimum(r * a, torch.clamp(r, 1 - lo, 1 + hi) * a)
    return torch.where(where(a), pick(clipped, c * a if floor is None else floor(c, a)), clipped)


WRONG = {
    "logit_grad": {
        "no-ratio": lambda *x: _logit_grad(*x, ratio_factor=False),    # lesson 1's A (onehot - pi), masked
        "sampled-logit-only": lambda *x: _logit_grad(*x, minus_pi=False),  # r A onehot: forgets the softmax
        "loss-sign": lambda *x: -_logit_grad(*x),                      # the loss's gradient, not the objective's
        "never-clipped": lambda *x: _logit_grad(*x, clip="none"),      # r A (onehot - pi) everywhere
        "both-sides": lambda *x: _logit_grad(*x, clip="both sides"),   # ignores the sign of A
    },
    "steps_to_clip": {
        "constant-ratio": lambda p, e, eta: _steps(p, e, eta, saturate=False),  # r_k = e^(k eta): no softmax
        "one-short": lambda p, e, eta: _steps(p, e, eta, rounding="down"),     # the last step before the clip
        "not-rounded": lambda p, e, eta: _steps(p, e, eta, rounding="none"),   # k eta = x, a float
        "no-never": lambda p, e, eta: _steps(p, e, eta, never=False),          # log of a negative number
        "never-is-zero": lambda p, e, eta: 0 if p * (1 + e) >= 1 else _steps(p, e, eta),  # 0 pushes, not endless
    },
    "dual_clip_surrogate": {
        "no-floor": lambda r, a, lo, hi, c: clipped_surrogate(r, a, lo, hi),                # plain PPO
        "floor-everywhere": lambda r, a, lo, hi, c: _dual(r, a, lo, hi, c, where=lambda a: a == a),  # A >= 0 too
        "floor-for-A>0": lambda r, a, lo, hi, c: _dual(r, a, lo, hi, c, where=lambda a: a > 0),  # sign swapped
        "min": lambda r, a, lo, hi, c: _dual(r, a, lo, hi, c, pick=torch.minimum),            # min, not max
        "floor-at-minus-c": lambda r, a, lo, hi, c: _dual(r, a, lo, hi, c, floor=lambda c, a: -c + 0 * a),  # not c A
        "detached": lambda r, a, lo, hi, c: _dual(r.detach(), a, lo, hi, c),                  # no gradient
    },
}


@pytest.mark.parametrize("name, wrong", [(n, w) for n, ws in WRONG.items() for w in ws])
def test_checker_rejects_wrong_answers(name, wrong):
    with pytest.raises(AssertionError, match=name):
        CHECKERS[name](WRONG[name][wrong])
