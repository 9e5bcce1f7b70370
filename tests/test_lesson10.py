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


def solution_fn(name, **extra):
    return function_defined(SOLUTIONS, name, {"torch": torch, "math": math, **extra})


def grpo_gradient_solution():
    return solution_fn("expected_grpo_gradient", expected_grpo_advantage=solution_fn("expected_grpo_advantage"))


def test_checkers_accept_the_solutions(capsys):
    lesson10.check_softmax_policy_gradient(solution_fn("softmax_policy_gradient"))
    lesson10.check_expected_grpo_advantage(solution_fn("expected_grpo_advantage"))
    lesson10.check_expected_grpo_gradient(grpo_gradient_solution())
    lesson10.check_baseline_rmse(solution_fn("baseline_rmse"))
    out = capsys.readouterr().out
    assert out.count(": correct") == 4 and "not done" not in out


def test_checkers_say_not_done_for_stubs(capsys):
    lesson10.check_softmax_policy_gradient(lambda logits, reward: None)
    lesson10.check_expected_grpo_advantage(lambda q, G: None)
    lesson10.check_expected_grpo_gradient(lambda logits, reward, G: None)
    lesson10.check_baseline_rmse(lambda logits, reward, baseline, G: None)
    assert capsys.readouterr().out.count("not done yet") == 4


def _pi_and_pass_rate(z, r):
    pi = torch.softmax(z, -1)
    return pi, (pi * r).sum(-1, keepdim=True)


def _grad_without_mean(z, r):                                          # J summed over prompts, not averaged
    pi, J_p = _pi_and_pass_rate(z, r)
    return pi * (r - J_p)


def _grad_batch_baseline(z, r):                                        # one J for all prompts as the baseline
    pi, J_p = _pi_and_pass_rate(z, r)
    return pi * (r - J_p.mean()) / z.shape[0]


def _grad_no_baseline(z, r):                                           # pi R: the -pi sum of grad log pi dropped
    pi, _ = _pi_and_pass_rate(z, r)
    return pi * r / z.shape[0]


def _grad_without_pi(z, r):                                            # (R - J_p) / P: the score's weight pi left out
    _, J_p = _pi_and_pass_rate(z, r)
    return (r - J_p) / z.shape[0]


def _adv_sum(q, G, std="sample", mates=None):
    """E[A | right] with a deliberate slip: population std, or G (not G-1) Bernoulli group-mates."""
    mates = G - 1 if mates is None else mates
    total = 0.0
    for k in range(mates + 1):
        j = min(k + 1, G)
        if j == G:
            continue
        var = j * (G - j) / G / (G - 1 if std == "sample" else G)
        total += math.comb(mates, k) * q ** k * (1 - q) ** (mates - k) * (1 - j / G) / math.sqrt(var)
    return total


def _grpo_grad(adv_right, adv_wrong):
    def fn(z, r, G):
        pi, J_p = _pi_and_pass_rate(z, r)
        right = torch.tensor([adv_right(q, G) for q in J_p[:, 0].tolist()], dtype=pi.dtype)[:, None]
        wrong = torch.tensor([adv_wrong(q, G) for q in J_p[:, 0].tolist()], dtype=pi.dtype)[:, None]
        return pi * torch.where(r == 1, right, wrong) / z.shape[0]
    return fn


def _rmse(centred=True, prompts=2, per_group=True, score_sq=None, score_e=False, use_baseline=True):
    """Exercise 4's exact RMSE with one deliberate slip (`prompts` is the power of P in the denominator: 2 is right)."""
    def fn(z, r, b, G):
        P = z.shape[0]
        pi, J_p = _pi_and_pass_rate(z, r)
        grad_J = pi * (r - J_p) / P
        sq = 1 - 2 * pi + pi.pow(2).sum(-1, keepdim=True) if score_sq is None else score_sq(pi)   # |score|^2
        coef = r - (b[:, None] if use_baseline else 0.0)
        second = (pi * coef.pow(2) * sq).sum(-1)
        mean_sq = (pi * coef).pow(2).sum(-1) if score_e else (P * grad_J).pow(2).sum(-1)            # |E v|^2
        mse = (second - (mean_sq if centred else 0.0)).clamp(min=0).sum() / (P ** prompts * (G if per_group else 1))
        return (mse.sqrt() / grad_J.norm()).item()
    return fn


@pytest.mark.parametrize("checker, wrong", [
    (lesson10.check_softmax_policy_gradient, _grad_without_mean),
    (lesson10.check_softmax_policy_gradient, _grad_batch_baseline),
    (lesson10.check_softmax_policy_gradient, _grad_no_baseline),
    (lesson10.check_softmax_policy_gradient, _grad_without_pi),
    (lesson10.check_expected_grpo_advantage, lambda q, G: (G - 1) / G * (1 - q)),      # no std: the group mean's
    (lesson10.check_expected_grpo_advantage, lambda q, G: _adv_sum(q, G, std="population")),
    (lesson10.check_expected_grpo_advantage, lambda q, G: _adv_sum(q, G, mates=G)),     # G mates, not G - 1
    (lesson10.check_expected_grpo_advantage,                                             # the mean of r, not of A
     lambda q, G: (1 - (1 + (G - 1) * q) / G) / math.sqrt(max(q * (1 - q), 1e-12))),
    (lesson10.check_expected_grpo_gradient,                                              # exercise 1's grad J
     lambda z, r, G: _grad_without_mean(z, r) / z.shape[0]),
    (lesson10.check_expected_grpo_gradient, _grpo_grad(_adv_sum, lambda q, G: 0.0)),     # wrong answers left out
    (lesson10.check_expected_grpo_gradient,                                              # wrong: minus at q, not 1 - q
     _grpo_grad(_adv_sum, lambda q, G: -_adv_sum(q, G))),
    (lesson10.check_expected_grpo_gradient,                                              # population std
     _grpo_grad(lambda q, G: _adv_sum(q, G, std="population"),
                lambda q, G: -_adv_sum(1 - q, G, std="population"))),
    (lesson10.check_baseline_rmse, _rmse(centred=False)),                                 # E|v|^2, |E v|^2 not taken off
    (lesson10.check_baseline_rmse, _rmse(prompts=1)),                                     # over P G, not P^2 G
    (lesson10.check_baseline_rmse, _rmse(per_group=False)),                               # one draw's noise, not G's mean
    (lesson10.check_baseline_rmse, _rmse(score_sq=torch.ones_like, score_e=True)),       # grad log pi = e_o, no -pi
    (lesson10.check_baseline_rmse, _rmse(score_sq=lambda pi: 1 - pi)),                    # |e_o - pi|^2 as 1 - pi(o)
    (lesson10.check_baseline_rmse, _rmse(use_baseline=False)),                            # the baseline left out
    (lesson10.check_baseline_rmse,                                                        # sampled, not exact
     lambda z, r, b, G: lesson10._sampled_rmse(z, r, b, G, 4000, seed=1)[0]),
])
def test_checkers_reject_wrong_answers(checker, wrong):
    with pytest.raises(AssertionError):
        checker(wrong)


def test_the_right_advantage_by_hand():
    """G = 3, q = 1/2: one right mate (prob 1/2): mean 2/3, sample std 1/sqrt(3); none (prob 1/4): mean 1/3,
    the same std; two (prob 1/4): A = 0."""
    want = 0.5 * (1 / 3) * math.sqrt(3) + 0.25 * (2 / 3) * math.sqrt(3)
    assert math.isclose(solution_fn("expected_grpo_advantage")(0.5, 3), want, rel_tol=1e-12)
    assert math.isclose(lesson10._right_advantage_by_enumeration(0.5, 3), want, rel_tol=1e-12)


def test_the_baseline_rmse_by_hand():
    """pi = (1/2, 1/2), R = (1, 0), G = 1: grad J = (1/4, -1/4). With b = 0 the right answer gives (1/2, -1/2) and the
    wrong one 0, so E|g - grad J|^2 = 1/2 (1/16 + 1/16) + 1/2 (1/16 + 1/16) = 1/8 = |grad J|^2; with b = 1/2 both give
    grad J. The checker's enumeration and the solution agree on it."""
    logits, reward = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    for b, want in ((0.0, 1.0), (0.5, 0.0), (1.0, 1.0)):
        baseline = torch.tensor([b], dtype=torch.float64)
        assert math.isclose(lesson10._baseline_rmse_by_enumeration(logits, reward, baseline, 1), want, abs_tol=1e-12)
        assert math.isclose(solution_fn("baseline_rmse")(logits, reward, baseline, 1), want, abs_tol=1e-12)


def test_the_sampled_rmse_agrees_with_the_enumeration():
    """The checker's two references agree: sampled batches (exact.bias_and_error) and the sum over every group."""
    logits, reward = lesson10._tables(21, P=2, S=3)
    baseline = torch.tensor([0.3, 0.7], dtype=torch.float64)
    want = lesson10._baseline_rmse_by_enumeration(logits, reward, baseline, 2)
    sampled, se = lesson10._sampled_rmse(logits, reward, baseline, 2, 20000, seed=5)
    assert abs(sampled - want) <= 4 * se and se < 0.02 * want
