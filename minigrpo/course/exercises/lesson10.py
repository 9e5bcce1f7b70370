"""Checkers for the exercises of lesson 10 (exact gradients).

Each checker takes the reader's function, calls it on cases worked out by hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. softmax_policy_gradient(logits, reward)  exact grad of J = 1/P sum_p sum_o pi(o|p) R(p, o), pi = softmax(logits)
    2. expected_grpo_advantage(q, G)        E[A | right], A = (r - mean) / sample std, the other G-1 right w.p. q
    3. expected_grpo_gradient(logits, reward, G)  E[g] of GRPO's std-normalised estimator, one-step softmax policy
    4. baseline_rmse(logits, reward, baseline, G)  exact relative RMSE of REINFORCE with a constant baseline b_p
"""
from __future__ import annotations

import itertools
import math

import torch

from minigrpo.advantage import group_advantages
from minigrpo.course import exact
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


def _baseline_rmse_by_enumeration(logits: torch.Tensor, reward: torch.Tensor, baseline: torch.Tensor,
                                  G: int) -> float:
    """sqrt(E |g - grad J|^2) / |grad J| for g = 1/(PG) sum_p sum_i (R(p, o_i) - b_p) grad log pi(o_i | p), over
    every group of G of every prompt. The prompts' parts of g sit on different logits, so their squared errors add."""
    P, S = logits.shape
    pi = torch.softmax(logits, -1)                                                 # (P, S)
    truth = pi * (reward - (pi * reward).sum(-1, keepdim=True)) / P                # (P, S) exercise 1's grad J
    eye = torch.eye(S, dtype=torch.float64)
    mse = 0.0
    for p in range(P):
        for group in itertools.product(range(S), repeat=G):
            weight = math.prod(pi[p, o].item() for o in group)
            g_p = sum((reward[p, o] - baseline[p]) * (eye[o] - pi[p]) for o in group) / (P * G)   # (S,)
            mse += weight * (g_p - truth[p]).pow(2).sum().item()
    return math.sqrt(mse) / truth.norm().item()


def _sampled_rmse(logits: torch.Tensor, reward: torch.Tensor, baseline: torch.Tensor, G: int, draws: int,
                  seed: int) -> tuple[float, float]:
    """The RMSE of `draws` sampled batches, measured as section 3 measures it (exact.bias_and_error), and its
    Monte Carlo standard error."""
    P, S = logits.shape
    pi = torch.softmax(logits, -1)                                                 # (P, S)
    truth = pi * (reward - (pi * reward).sum(-1, keepdim=True)) / P                # (P, S)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(pi, draws * G, replacement=True, generator=gen).reshape(P, draws, G)   # (P, D, G)
    coef = reward.gather(1, idx.reshape(P, -1)).reshape(P, draws, G) - baseline[:, None, None]      # (P, D, G) R - b
    g = torch.zeros(P, draws, S, dtype=torch.float64)                             # (P, D, S)
    g.scatter_add_(2, idx, coef)                                                   # sum_i (R - b) e_{o_i}
    g = (g - coef.sum(-1, keepdim=True) * pi[:, None, :]) / (P * G)               # minus sum_i (R - b) pi
    g = g.permute(1, 0, 2).reshape(draws, P * S)                                   # (D, P*S) one estimate per draw
    rmse = exact.bias_and_error(g, truth.reshape(-1))["rmse"]
    err = (g - truth.reshape(-1)).pow(2).sum(1) / truth.pow(2).sum()               # (D,) relative squared errors
    return rmse, (err.std() / math.sqrt(draws) / (2 * rmse)).item()


def check_baseline_rmse(baseline_rmse) -> None:
    """Exercise 4: the exact relative RMSE of REINFORCE with a constant baseline b_p, exercise 1's softmax policy."""
    name = "baseline_rmse"
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)
    half, right_wrong = t([[0.0, 0.0]]), t([[1.0, 0.0]])                           # pi = (1/2, 1/2), R = (1, 0)
    # (logits, rewards, baselines, G, expected, why), by hand. One prompt, pi = (1/2, 1/2), R = (1, 0):
    # grad J = (1/4, -1/4); with b = 0 the right answer gives v = (1/2, -1/2) and the wrong one 0, so
    # E|v - grad J|^2 = 1/8 = |grad J|^2; with b = 1/2 both give (1/4, -1/4) = grad J; b = 1 mirrors b = 0.
    cases = [
        (half, right_wrong, t([0.0]), 1, 1.0, "no baseline, one completion: the error is as large as grad J"),
        (half, right_wrong, t([0.5]), 1, 0.0, "b = J_p = 1/2: both completions give exactly grad J"),
        (half, right_wrong, t([1.0]), 1, 1.0, "b = 1 = 2 b*: as noisy as no baseline"),
        (half, right_wrong, t([0.0]), 4, 0.5, "G = 4: the mean of 4 independent terms, 1/sqrt(4) of G = 1's"),
        (t([[0.0, 0.0], [0.0, 0.0]]), t([[1.0, 0.0], [0.0, 0.0]]), t([0.0, 1.0]), 1, math.sqrt(5),
         "a second prompt with no right answer and b = 1 adds noise 1/2 on top of 1/8: sqrt(5)"),
    ]
    got = baseline_rmse(*cases[0][:4])
    if _not_done(name, got):
        return

    def call(logits, reward, baseline, G) -> float:
        value = baseline_rmse(logits.clone(), reward.clone(), baseline.clone(), G)
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        assert math.isfinite(value), f"{name} returned {value} (is E|g|^2 - |E g|^2 rounding below 0? clamp it)"
        return value

    for logits, reward, baseline, G, want, why in cases:
        value = call(logits, reward, baseline, G)
        assert math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-9), (
            f"{name}(logits {logits.tolist()}, reward {reward.tolist()}, baseline {baseline.tolist()}, G = {G}) = "
            f"{value:.6g}, expected {want:.6g}: {why}")
    # Every group of G of each prompt, on random tables and baselines.
    gen = torch.Generator().manual_seed(3)
    for seed, S, G in ((20, 3, 1), (21, 3, 2), (22, 4, 2), (23, 3, 3)):
        logits, reward = _tables(seed, P=2, S=S)
        baseline = 2 * torch.rand(2, generator=gen, dtype=torch.float64) - 0.5        # (P,) in [-0.5, 1.5]
        want, value = _baseline_rmse_by_enumeration(logits, reward, baseline, G), call(logits, reward, baseline, G)
        assert math.isclose(value, want, rel_tol=1e-9), (
            f"{name}: a random (2, {S}) table, baselines {[round(b, 4) for b in baseline.tolist()]}, G = {G}: got "
            f"{value:.6g}, the mean over every one of the {S}^{G} groups of each prompt gives {want:.6g} (the P G "
            f"terms are independent; g divides their sum by P G; prompts sit on different logits)")
    # Against sampling, measured as section 3 measures it.
    logits, reward = _tables(30, P=3, S=5)
    baseline, G, draws = t([0.2, 0.5, 0.9]), 4, 20000
    sampled, se = _sampled_rmse(logits, reward, baseline, G, draws, seed=0)
    value = call(logits, reward, baseline, G)
    assert abs(value - sampled) <= 4 * se, (
        f"{name}: a random (3, 5) table, G = {G}: got {value:.4f}, {draws:,} sampled batches give {sampled:.4f} "
        f"± {se:.4f} (exact.bias_and_error's rmse)")
    # Section 3's b*: a baseline lowers the noise only for 0 < b < 2 b*, and 2 b* is as noisy as 0.
    pi = torch.softmax(logits[:1], -1)                                             # one prompt, (1, S)
    score_sq = 1 - 2 * pi + pi.pow(2).sum(-1, keepdim=True)                        # |grad log pi(o)|^2
    b_star = ((pi * reward[:1] * score_sq).sum() / (pi * score_sq).sum()).item()
    at = {b: call(logits[:1], reward[:1], t([b]), G) for b in (0.0, b_star, 2 * b_star)}
    assert math.isclose(at[0.0], at[2 * b_star], rel_tol=1e-9) and at[b_star] < at[0.0], (
        f"{name}: with b* = E[R|grad log pi|^2] / E|grad log pi|^2 = {b_star:.4f}, got {at[0.0]:.6g} at b = 0, "
        f"{at[b_star]:.6g} at b*, {at[2 * b_star]:.6g} at 2 b* (expected the least at b*, the same at 0 and 2 b*)")
    # A prompt like section 3's prompt 2: nearly always right, its right answer's score vector small.
    logits2, reward2 = t([[math.log(0.9), math.log(0.05), math.log(0.05)]]), t([[1.0, 0.0, 0.0]])
    pi2 = torch.softmax(logits2, -1)
    sq2 = 1 - 2 * pi2 + pi2.pow(2).sum(-1, keepdim=True)
    b2 = ((pi2 * reward2 * sq2).sum() / (pi2 * sq2).sum()).item()
    show = {b: _baseline_rmse_by_enumeration(logits2, reward2, t([b]), 1) / math.sqrt(8)   # G = 8: the mean of 8
            for b in (0.0, 0.9, b2)}                                                      # independent terms
    print(f"{name}: correct ({len(cases)} hand cases, every group on 4 random tables, {draws:,} sampled batches; "
          f"for pi = (0.9, 0.05, 0.05), R = (1, 0, 0), G = 8: {show[0.0]:.2f} with no baseline, {show[0.9]:.2f} "
          f"with the pass rate 0.9, {show[b2]:.2f} at b* = {b2:.3f})")
