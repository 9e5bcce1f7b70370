"""Checkers for the exercises of lesson 10 (exact gradients).

Each checker takes the reader's function, calls it on cases worked out by hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. softmax_policy_gradient(logits, reward)  exact grad of J = 1/P sum_p sum_o pi(o|p) R(p, o), pi = softmax(logits)
    2. expected_grpo_advantage(q, G)        E[A | right], A = (r - mean) / sample std, the other G-1 right w.p. q
    3. expected_grpo_gradient(logits, reward, G)  E[g] of GRPO's std-normalised estimator, one-step softmax policy
    4. relative_rmse(draws, truth)          sqrt(E |g - truth|^2) / |truth| over the draws (D, n)
"""
from __future__ import annotations

import itertools
import math

import torch

from minigrpo.advantage import group_advantages
from minigrpo.course.exercises import as_float64 as _f64
from minigrpo.course.exercises import not_done as _not_done


def _tables(seed: int, P: int = 3, S: int = 5):
    """Random (P, S) logits and 0/1 rewards, each prompt with at least one right and one wrong completion."""
    gen = torch.Generator().manual_seed(seed)
    logits = 1.5 * torch.randn(P, S, generator=gen, dtype=torch.float64)           # (P, S)
    reward = (torch.rand(P, S, generator=gen) < 0.5).to(torch.float64)             # (P, S)
    reward[:, 0], reward[:, 1] = 1.0, 0.0
    return logits, reward


def check_softmax_policy_gradient(softmax_policy_gradient) -> None:
    """Exercise 1: grad_z J = 1/P pi (R - J_p) for pi = softmax(z) over each prompt's listed completions."""
    name = "softmax_policy_gradient"
    # by hand: logits 0, 0 -> pi = (1/2, 1/2); rewards (1, 0) -> J_p = 1/2; grad = pi (R - J_p) / P, P = 1
    got = softmax_policy_gradient(torch.zeros(1, 2, dtype=torch.float64),
                                  torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    if _not_done(name, got):
        return
    got = _f64(got)
    assert tuple(got.shape) == (1, 2) and torch.allclose(got, torch.tensor([[0.25, -0.25]], dtype=torch.float64),
                                                         atol=1e-12), (
        f"{name}: pi = (1/2, 1/2), R = (1, 0) gave {got.tolist()}, expected [[0.25, -0.25]] "
        f"(pi(o) (R(o) - J_p) = 1/2 * (1 - 1/2) and 1/2 * (0 - 1/2))")
    for seed in range(5):
        logits, reward = _tables(seed)
        z = logits.clone().requires_grad_()
        (torch.softmax(z, -1) * reward).sum(-1).mean().backward()                  # J, then autograd
        got = _f64(softmax_policy_gradient(logits, reward))
        assert tuple(got.shape) == tuple(logits.shape) and torch.allclose(got, z.grad, atol=1e-12), (
            f"{name}: random (3, 5) table (seed {seed}): got {got.tolist()}, autograd of J gives {z.grad.tolist()} "
            f"(each prompt's own J_p as the baseline; J is a mean over the P prompts)")
    print(f"{name}: correct (pi (R - J_p) / P, the same as autograd on 5 random tables)")


def _right_advantage_by_enumeration(q: float, G: int) -> float:
    """E[A_1 | r_1 = 1] over every pattern of the other G-1 rewards, with the engine's advantages."""
    total = 0.0
    for others in itertools.product((0.0, 1.0), repeat=G - 1):
        k = sum(others)
        weight = q ** k * (1 - q) ** (G - 1 - k)
        rewards = torch.tensor((1.0, *others), dtype=torch.float64)               # (G,) the right one first
        total += weight * group_advantages(rewards, G, std="sample")[0].item()
    return total


def check_expected_grpo_advantage(expected_grpo_advantage) -> None:
    """Exercise 2: E[(1 - mean) / sample std] for a right completion whose G-1 group-mates are right w.p. q."""
    name = "expected_grpo_advantage"
    got = expected_grpo_advantage(0.3, 2)
    if _not_done(name, got):
        return
    want = 0.7 / math.sqrt(2)          # G = 2: the other wrong (0.7) -> rewards (1, 0), A = 0.5 / sqrt(0.5); else 0
    assert math.isclose(float(got), want, rel_tol=1e-9), (
        f"{name}(0.3, 2) = {float(got):.6g}, expected {want:.6g}: with probability 0.7 the other is wrong, the "
        f"rewards (1, 0) have mean 1/2 and sample std 1/sqrt(2), so A = 1/sqrt(2); with 0.3 both are right, A = 0")
    for G in (3, 4, 6, 8):
        for q in (0.05, 0.3, 0.5, 0.9):
            want = _right_advantage_by_enumeration(q, G)
            got = float(expected_grpo_advantage(q, G))
            assert math.isclose(got, want, rel_tol=1e-9), (
                f"{name}(q={q}, G={G}) = {got:.6g}, expected {want:.6g} (enumerating the 2^{G - 1} patterns of the "
                f"other G-1 rewards; the group includes the right completion itself; sample std; all right -> A = 0)")
    low, high = _right_advantage_by_enumeration(0.1, 8), _right_advantage_by_enumeration(0.9, 8)
    print(f"{name}: correct (a binomial sum over the other G-1; G = 8: {low:.3f} at q = 0.1, {high:.3f} at q = 0.9, "
          f"where the group mean alone gives (G-1)/G (1 - q) = 0.79 and 0.09)")


def _grpo_gradient_by_enumeration(logits: torch.Tensor, reward: torch.Tensor, G: int) -> torch.Tensor:
    """E[1/(PG) sum_i A_i grad log pi(o_i)] over every group of G of every prompt, with the engine's advantages."""
    P, S = logits.shape
    pi = torch.softmax(logits, -1)                                                 # (P, S)
    out = torch.zeros(P, S, dtype=torch.float64)
    for p in range(P):
        for group in itertools.product(range(S), repeat=G):
            weight = math.prod(pi[p, o].item() for o in group)
            adv = group_advantages(reward[p, list(group)], G, std="sample")        # (G,)
            for a, o in zip(adv.tolist(), group):
                score = torch.eye(S, dtype=torch.float64)[o] - pi[p]                    # (S,) grad log pi(o)
                out[p] += weight * a * score / (P * G)
    return out


def check_expected_grpo_gradient(expected_grpo_gradient) -> None:
    """Exercise 3: E[g] = 1/P pi(o) E[A | R(o)] for a one-step softmax policy, exactly."""
    name = "expected_grpo_gradient"
    cases = [(_tables(10, P=2, S=3), 3), (_tables(11, P=2, S=4), 2), (_tables(12, P=2, S=3), 4)]
    (logits, reward), G = cases[0]
    if _not_done(name, expected_grpo_gradient(logits, reward, G)):
        return
    for (logits, reward), G in cases:
        want = _grpo_gradient_by_enumeration(logits, reward, G)
        got = _f64(expected_grpo_gradient(logits, reward, G))
        assert tuple(got.shape) == tuple(logits.shape) and torch.allclose(got, want, atol=1e-12), (
            f"{name}: a random ({logits.shape[0]}, {logits.shape[1]}) table, G = {G}: got {got.tolist()}, "
            f"enumerating all {logits.shape[1]}^{G} groups of each prompt gives {want.tolist()} (a right answer's "
            f"E[A] is exercise 2's at q = J_p; a wrong one's is minus it at 1 - J_p; mean over prompts)")
    print(f"{name}: correct (against every one of the S^G groups of each prompt, on 3 random tables)")


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
