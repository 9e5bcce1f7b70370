"""Checkers for the exercises of lesson 10 (exact gradients).

Each checker takes the reader's function, calls it on cases worked out by hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. expected_reward(probs, reward)       J = 1/P sum_p sum_o pi(o|p) R(p, o), (P, S) x (P, S) -> ()
    2. optimal_baseline(probs, reward, score_sq)  b* = E[R |score|^2] / E|score|^2 per prompt, (P, S) -> (P,)
    3. k3_coefficient(logp, ref_logp)       d k3 / d log pi of one token: what multiplies grad log pi
    4. relative_rmse(draws, truth)          sqrt(E |g - truth|^2) / |truth| over the draws (D, n)
"""
from __future__ import annotations

import math

import torch

from minigrpo.course.exercises import not_done as _not_done


def check_expected_reward(expected_reward) -> None:
    """Exercise 1: expected_reward(probs, reward) -> the mean over prompts of sum_o pi(o|p) R(p, o)."""
    name = "expected_reward"
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.0, 0.9]], dtype=torch.float64)
    reward = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    got = expected_reward(probs, reward)
    if _not_done(name, got):
        return
    want = (0.5 + 0.25 + 0.9) / 2                                              # prompt 0: 0.75, prompt 1: 0.9
    assert math.isclose(float(got), want, rel_tol=1e-12), (
        f"{name} = {float(got):.6g}, expected {want} (prompt 0: 0.5 + 0.25 = 0.75, prompt 1: 0.9; their mean)")
    print(f"{name}: correct (0.75 and 0.9, mean {want})")


def check_optimal_baseline(optimal_baseline) -> None:
    """Exercise 2: the constant baseline that minimises E|(R - b) grad log pi|^2, for each prompt."""
    name = "optimal_baseline"
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.0, 0.9]], dtype=torch.float64)
    reward = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    score_sq = torch.tensor([[1.0, 4.0, 2.0], [3.0, 5.0, 0.5]], dtype=torch.float64)
    got = optimal_baseline(probs, reward, score_sq)
    if _not_done(name, got):
        return
    # prompt 0: (0.5*1*1 + 0.25*1*2) / (0.5*1 + 0.25*4 + 0.25*2) = 1.0 / 2.0; prompt 1: (0.9*0.5) / (0.3 + 0.45)
    want = torch.tensor([0.5, 0.6], dtype=torch.float64)
    got = torch.as_tensor(got, dtype=torch.float64)
    assert tuple(got.shape) == (2,), f"{name}: shape {tuple(got.shape)}, expected (2,): one baseline per prompt"
    assert torch.allclose(got, want, atol=1e-12), (
        f"{name}: got {got.tolist()}, expected {want.tolist()} (E[R |s|^2] / E[|s|^2] under each prompt's pi; "
        f"the pass rates would be 0.75 and 0.9)")
    print(f"{name}: correct (0.5 and 0.6, where the pass rates are 0.75 and 0.9)")


def check_k3_coefficient(k3_coefficient) -> None:
    """Exercise 3: k3 = ref/pi - log(ref/pi) - 1; d k3 / d log pi = 1 - ref/pi."""
    name = "k3_coefficient"
    logp = torch.tensor([math.log(0.5), math.log(0.2), math.log(0.9)], dtype=torch.float64)
    ref_logp = torch.tensor([math.log(0.25), math.log(0.4), math.log(0.9)], dtype=torch.float64)
    got = k3_coefficient(logp, ref_logp)
    if _not_done(name, got):
        return
    want = torch.tensor([1 - 0.5, 1 - 2.0, 0.0], dtype=torch.float64)
    assert torch.allclose(torch.as_tensor(got, dtype=torch.float64), want, atol=1e-12), (
        f"{name}: got {torch.as_tensor(got).tolist()}, expected {want.tolist()} (1 - ref/pi: the token twice as "
        f"likely under pi as under ref gets 1/2; the one half as likely gets -1; equal probabilities 0)")
    print(f"{name}: correct (1 - ref/pi: its expectation under pi is 1 - sum ref = 0 per position, its gradient "
          f"-sum_o ref(o) grad log pi(o))")


def check_relative_rmse(relative_rmse) -> None:
    """Exercise 4: relative_rmse(draws, truth)."""
    name = "relative_rmse"
    truth = torch.tensor([3.0, 4.0], dtype=torch.float64)
    draws = torch.tensor([[3.0, 4.0], [3.0, 6.0], [1.0, 4.0], [3.0, 4.0]], dtype=torch.float64)
    got = relative_rmse(draws, truth)
    if _not_done(name, got):
        return
    want = math.sqrt((0 + 4 + 4 + 0) / 4) / 5                                  # squared errors 0, 4, 4, 0; |truth| 5
    assert math.isclose(float(got), want, rel_tol=1e-9), (
        f"{name} = {float(got):.6g}, expected {want:.6g} (the mean over draws of |g - truth|^2, its square root, "
        f"over |truth|; not the error of the mean draw)")
    print(f"{name}: correct ({want:.4f})")
