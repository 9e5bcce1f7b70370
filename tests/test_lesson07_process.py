"""Lesson 07, exercise 4 (process supervision, DeepSeekMath §4.1.3): the checker accepts the solution, says "not
done yet" for the stub, and rejects the plausible wrong answers.

The solution is exec'd from the solutions notebook; the wrong answers and the check of the hand cases are written
here independently (numpy's sample std, a forward loop per step).
"""
import math
import os

import numpy as np
import pytest
import torch

from minigrpo.advantage import group_advantages
from minigrpo.course.exercises import lesson07

from nbcells import function_defined

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "07_equations_rubric_solutions.ipynb")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _advantages(steps, lengths, *, scale="group", ddof=1, covers=lambda end, t: end >= t):
    """Per-token advantages with a choice of normalisation and of which steps a token collects (numpy)."""
    flat = np.array([r for _, rewards in steps for r in rewards], dtype=np.float64)
    out = np.zeros((len(steps), max(lengths)))
    for i, (ends, rewards) in enumerate(steps):
        r = np.array(rewards, dtype=np.float64)
        pool = {"group": flat, "completion": r}.get(scale)
        if pool is None:                                     # "none": the raw step rewards
            norm = r
        else:
            std = pool.std(ddof=ddof) if len(pool) > ddof else 0.0
            norm = (r - pool.mean()) / std if std > 0 else np.zeros_like(r)
        for t in range(lengths[i]):
            out[i, t] = sum(n for e, n in zip(ends, norm) if covers(e, t))
    return torch.tensor(out)


def test_checker_accepts_the_solution(capsys):
    lesson07.check_process_advantages(function_defined(SOLUTIONS, "process_advantages", {"torch": torch, "math": math}))
    out = capsys.readouterr().out
    assert "process_advantages: correct" in out and "not done" not in out


def test_checker_accepts_an_independent_answer(capsys):
    lesson07.check_process_advantages(_advantages)
    assert "process_advantages: correct" in capsys.readouterr().out


def test_checker_says_not_done_for_the_stub(capsys):
    lesson07.check_process_advantages(lambda steps, lengths: None)
    assert capsys.readouterr().out.count("not done yet") == 1


def _centred_only(steps, lengths):
    flat = [r for _, rewards in steps for r in rewards]
    mean = sum(flat) / len(flat)
    return _advantages([(e, [r - mean for r in rs]) for e, rs in steps], lengths, scale="none")


@pytest.mark.parametrize("wrong", [
    lambda s, L: _advantages(s, L, covers=lambda end, t: end <= t),       # the steps before t, not after
    lambda s, L: _advantages(s, L, covers=lambda end, t: end > t),        # a step's end token misses its own step
    lambda s, L: _advantages(s, L, covers=lambda end, t: end >= t - 1),   # a step's reward leaks onto the next token
    lambda s, L: _advantages(s, L, scale="completion"),                   # normalised per completion, not per group
    lambda s, L: _advantages(s, L, scale="none"),                         # not normalised
    _centred_only,                                                        # centred, not divided by the std
    lambda s, L: _advantages(s, L, ddof=0),                               # population std
], ids=["before-t", "end-token-excluded", "leaks-one-token", "per-completion", "raw", "centred-only", "population-std"])
def test_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="process_advantages"):
        lesson07.check_process_advantages(wrong)


def test_hand_cases_agree_with_numpy():
    """The hand-worked expectations equal the definition computed with numpy's sample std (ddof=1)."""
    for steps, lengths, expected in lesson07.PROCESS_CASES:
        torch.testing.assert_close(_advantages(steps, lengths), torch.tensor(expected, dtype=torch.float64))


def test_outcome_case_is_the_engines_group_advantage():
    steps, lengths, expected = lesson07.PROCESS_CASES[1]
    outcome = group_advantages(torch.tensor([rs[0] for _, rs in steps], dtype=torch.float64), len(steps))
    for i, L in enumerate(lengths):
        assert all(math.isclose(a, float(outcome[i]), rel_tol=1e-12) for a in expected[i][:L])
        assert all(a == 0.0 for a in expected[i][L:])
