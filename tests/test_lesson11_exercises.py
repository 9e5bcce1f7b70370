"""Lesson 11 (long answers): its exercise checkers accept the solutions, say "not done yet" for the stubs, and
reject plausible wrong answers.

The solutions are exec'd from the solutions notebook; the wrong answers are the slips a reader is likely to make
(a flipped sign, an off-by-one, a missing factor, the wrong quantity).
"""
import math
import os

import pytest
import torch

from minigrpo.course.exercises import lesson11

from nbcells import function_defined

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "11_long_answers_solutions.ipynb")


def solution_fn(name):
    return function_defined(SOLUTIONS, name, {"torch": torch, "math": math})


def test_checkers_accept_the_solutions(capsys):
    lesson11.check_soft_overlong(solution_fn("soft_overlong"))
    lesson11.check_token_weights(solution_fn("token_weights"))
    lesson11.check_group_baseline_error(solution_fn("group_baseline_error"))
    out = capsys.readouterr().out
    assert out.count(": correct") == 3 and "not done" not in out


def test_checkers_say_not_done_for_stubs(capsys):
    lesson11.check_soft_overlong(lambda lengths, max_len, cache: None)
    lesson11.check_token_weights(lambda lengths, loss_type, max_len: None)
    lesson11.check_group_baseline_error(lambda p, v, G: None)
    assert capsys.readouterr().out.count("not done yet") == 3


def test_the_checkers_hand_numbers_agree_with_the_engine():
    """The checkers' hand-derived tables and the engine they also compare with must not contradict each other."""
    from minigrpo.course.values import group_mean_error
    from minigrpo.reward import soft_overlong_punishment
    for lengths, max_len, cache, expected in lesson11.OVERLONG_CASES:
        assert soft_overlong_punishment(lengths, max_len, cache) == pytest.approx(expected, abs=1e-12)
    for lengths, max_len, expected in lesson11.WEIGHT_CASES:
        for loss_type in lesson11.LOSS_TYPES:
            assert lesson11.engine_weights(lengths, loss_type, max_len) == pytest.approx(expected[loss_type])
    for p, v, G, expected in lesson11.BASELINE_CASES:
        assert group_mean_error(p, v, G) == pytest.approx(expected, abs=1e-12)
    assert lesson11.de_moivre(0.5, 8) == pytest.approx(35 / 256)


def _clamp(x):
    return max(-1.0, min(0.0, x))


@pytest.mark.parametrize("wrong", [
    lambda ls, L, c: [max(0.0, min(1.0, (n - (L - c)) / c)) for n in ls],        # sign flipped: a bonus
    lambda ls, L, c: [_clamp((L - c - n) / L) for n in ls],                       # divided by max_len
    lambda ls, L, c: [_clamp((L - c - (n - 1)) / c) for n in ls],                 # EOS not counted
    lambda ls, L, c: [min(0.0, (L - c - n) / c) for n in ls],                     # no floor at -1 past max_len
    lambda ls, L, c: [_clamp((L - c + 1 - n) / c) for n in ls],                   # the ramp starts a token late
    lambda ls, L, c: [_clamp((L - n) / c) for n in ls],                           # the ramp after max_len
])
def test_soft_overlong_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="soft_overlong"):
        lesson11.check_soft_overlong(wrong)


def _weights(grpo, dapo, dr_grpo):
    return lambda ls, t, L: {"grpo": grpo, "dapo": dapo, "dr_grpo": dr_grpo}[t](ls, L)


RIGHT_GRPO = lambda ls, L: [1 / (len(ls) * n) for n in ls]
RIGHT_DAPO = lambda ls, L: [1 / sum(ls)] * len(ls)
RIGHT_DR = lambda ls, L: [1 / (len(ls) * L)] * len(ls)


def test_the_right_pieces_of_the_wrong_answers_below_pass():
    right = _weights(RIGHT_GRPO, RIGHT_DAPO, RIGHT_DR)
    lesson11.check_token_weights(right)                   # the control: the pieces put together right pass


@pytest.mark.parametrize("wrong", [
    _weights(lambda ls, L: [1 / n for n in ls], RIGHT_DAPO, RIGHT_DR),                    # grpo without 1/N
    _weights(lambda ls, L: [1 / len(ls)] * len(ls), RIGHT_DAPO, RIGHT_DR),                # a completion's total
    _weights(RIGHT_GRPO, lambda ls, L: [1 / (len(ls) * n) for n in ls], RIGHT_DR),        # dapo as grpo
    _weights(RIGHT_GRPO, RIGHT_DAPO, lambda ls, L: [1 / (len(ls) * max(ls))] * len(ls)),  # L = longest sampled
    _weights(RIGHT_GRPO, RIGHT_DAPO, lambda ls, L: [1 / L] * len(ls)),                    # dr_grpo without 1/N
])
def test_token_weights_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="token_weights"):
        lesson11.check_token_weights(wrong)


def _binomial(p, G, f):
    return sum(math.comb(G, k) * p**k * (1 - p) ** (G - k) * f(k) for k in range(G + 1))


@pytest.mark.parametrize("wrong", [
    lambda p, v, G: abs(p - v),                                                   # the oracle V(s_0): no noise
    lambda p, v, G: abs(p - v) + math.sqrt(p * (1 - p) / G),                      # a standard deviation added
    lambda p, v, G: _binomial(p, G, lambda k: k / G - v),                         # no absolute value: p - v
    lambda p, v, G: p * abs(1 - v) + (1 - p) * abs(v),                            # one sample, whatever G
    lambda p, v, G: _binomial(p, G, lambda k: abs(k / max(G - 1, 1) - v)),        # divided by G - 1
    lambda p, v, G: sum(p**k * (1 - p) ** (G - k) * abs(k / G - v) for k in range(G + 1)),   # no C(G, k)
])
def test_group_baseline_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="group_baseline_error"):
        lesson11.check_group_baseline_error(wrong)
