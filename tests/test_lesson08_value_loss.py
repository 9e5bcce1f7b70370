"""Lesson 08, exercise 4 (PPO2's clipped value loss): the checker accepts the solution, says "not done yet" for the
stub, rejects the plausible wrong answers, and its hand cases agree with the engine's minigrpo.ppo.value_loss.

The solution is exec'd from the solutions notebook; the wrong answers are written here.
"""
import math
import os

import pytest
import torch

from minigrpo.course.exercises import lesson08
from minigrpo.ppo import value_loss

from nbcells import function_defined

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "08_grpo_vs_ppo_solutions.ipynb")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_checker_accepts_the_solution(capsys):
    lesson08.check_clipped_value_loss(function_defined(SOLUTIONS, "clipped_value_loss", {"torch": torch, "math": math}))
    out = capsys.readouterr().out
    assert "clipped_value_loss: correct" in out and "not done" not in out


def test_checker_says_not_done_for_the_stub(capsys):
    lesson08.check_clipped_value_loss(lambda values, old_values, returns, mask, clip: None)
    assert capsys.readouterr().out.count("not done yet") == 1


def _loss(V, V_old, R, m, clip, *, pick=torch.maximum, centre=None, half=0.5, mean="tokens"):
    """The clipped value loss with one piece changed at a time."""
    centre = V_old if centre is None else centre
    clipped = torch.clamp(V, centre - clip, centre + clip)
    per_token = half * pick((V - R) ** 2, (clipped - R) ** 2)
    if mean == "tokens":
        return (per_token * m).sum() / m.sum()
    if mean == "all":                                                  # the mask multiplied, the count forgotten
        return (per_token * m).sum() / m.numel()
    if mean == "none":                                                 # no mask at all
        return per_token.mean()
    return ((per_token * m).sum(1) / m.sum(1)).mean()                  # "sequences": per-completion mean first


@pytest.mark.parametrize("wrong", [
    lambda V, Vo, R, m, c: _loss(V, Vo, R, m, c, pick=torch.minimum),                  # min instead of max
    lambda V, Vo, R, m, c: _loss(V, Vo, R, m, c, centre=R),                            # clipped around the returns
    lambda V, Vo, R, m, c: _loss(V, Vo, R, m, c, mean="none"),                         # the mask forgotten
    lambda V, Vo, R, m, c: _loss(V, Vo, R, m, c, mean="all"),                          # divided by every entry
    lambda V, Vo, R, m, c: _loss(V, Vo, R, m, c, mean="sequences"),                    # mean per completion first
    lambda V, Vo, R, m, c: _loss(V, Vo, R, m, c, half=1.0),                            # no 0.5
    lambda V, Vo, R, m, c: 0.5 * (((V - R) ** 2) * m).sum() / m.sum(),                 # no clipping at all
    lambda V, Vo, R, m, c: _loss(V, Vo, R, m, c).item(),                               # a float: no gradient
    lambda V, Vo, R, m, c: _loss(V.detach(), Vo, R, m, c),                             # detached from the values
], ids=["min", "around-returns", "no-mask", "all-entries", "per-sequence", "no-half", "unclipped", "float", "detached"])
def test_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="clipped_value_loss"):
        lesson08.check_clipped_value_loss(wrong)


def test_hand_cases_agree_with_the_engine():
    """minigrpo.ppo.value_loss gives the hand-worked loss and gradient of every case."""
    for V, V_old, R, expected, grad in lesson08.VALUE_LOSS_CASES:
        v = torch.tensor([[V]], dtype=torch.float64, requires_grad=True)
        loss = value_loss(v, torch.tensor([[V_old]], dtype=torch.float64), torch.tensor([[R]], dtype=torch.float64),
                          torch.ones(1, 1, dtype=torch.float64), 0.2)
        loss.backward()
        assert math.isclose(loss.item(), expected, abs_tol=1e-12) and math.isclose(v.grad.item(), grad, abs_tol=1e-12)
    *tensors, expected = lesson08.MASKED_CASE
    v, old, ret, mask = (torch.tensor(x, dtype=torch.float64) for x in tensors)
    assert math.isclose(value_loss(v, old, ret, mask, 0.2).item(), expected, abs_tol=1e-12)
