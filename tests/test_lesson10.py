"""Lesson 10 (exact gradients): its exercise checkers accept the solutions and reject wrong answers.

The solutions are exec'd from the solutions notebook; the checkers' expected numbers are worked out by hand in
minigrpo/course/exercises/lesson10.py, and the wrong answers below are the mistakes a reader is likely to make.
"""
import math
import os

import pytest
import torch

from minigrpo.course.exercises import lesson10

from nbcells import function_defined

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "10_exact_gradients_solutions.ipynb")


def solution_fn(name):
    return function_defined(SOLUTIONS, name, {"torch": torch, "math": math})


def test_checkers_accept_the_solutions(capsys):
    lesson10.check_expected_reward(solution_fn("expected_reward"))
    lesson10.check_optimal_baseline(solution_fn("optimal_baseline"))
    lesson10.check_k3_coefficient(solution_fn("k3_coefficient"))
    lesson10.check_relative_rmse(solution_fn("relative_rmse"))
    out = capsys.readouterr().out
    assert out.count(": correct") == 4 and "not done" not in out


def test_checkers_say_not_done_for_stubs(capsys):
    lesson10.check_expected_reward(lambda probs, reward: None)
    lesson10.check_optimal_baseline(lambda probs, reward, score_sq: None)
    lesson10.check_k3_coefficient(lambda logp, ref_logp: None)
    lesson10.check_relative_rmse(lambda draws, truth: None)
    assert capsys.readouterr().out.count("not done yet") == 4


@pytest.mark.parametrize("checker, wrong", [
    (lesson10.check_expected_reward, lambda probs, reward: (probs * reward).sum()),            # summed over prompts
    (lesson10.check_expected_reward, lambda probs, reward: (probs * reward).mean()),           # mean over completions
    (lesson10.check_optimal_baseline, lambda p, r, s: (p * r).sum(-1)),                       # the pass rate
    (lesson10.check_optimal_baseline, lambda p, r, s: (r * s).sum(-1) / s.sum(-1)),            # pi left out
    (lesson10.check_k3_coefficient, lambda lp, ref: torch.exp(ref - lp) - 1),                  # the sign flipped
    (lesson10.check_k3_coefficient, lambda lp, ref: lp - ref),                                 # k2's coefficient
    (lesson10.check_relative_rmse, lambda d, t: (d.mean(0) - t).norm() / t.norm()),            # error of the mean
    (lesson10.check_relative_rmse, lambda d, t: (d - t).norm(dim=1).mean() / t.norm()),        # mean of the norms
])
def test_checkers_reject_wrong_answers(checker, wrong):
    with pytest.raises(AssertionError):
        checker(wrong)
