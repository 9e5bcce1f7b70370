"""Checkers for the exercises of lesson 02 (group-relative advantage, course section 3 item 1 and section 4).

Each checker takes the reader's function, calls it on cases worked out by
hand (in the comments below), and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct (...)" when every case passes.

    1. sample_std(rewards)                   sigma_r of one group, dividing by G-1 (the note's formula)
    2. rloo_advantages(rewards, group_size)  r_i minus the mean of the OTHER G-1 rewards (leave-one-out)
    3. zero_variance_prob(p, G)              chance that G pass/fail rewards are all equal (no signal)
"""
from __future__ import annotations

import math

import torch

from minigrpo.course.exercises import as_float64 as _as_float64, not_done as _not_done


# ------------------------------------------------------------- 1. sample_std

# (rewards, sample sigma = sqrt(sum (r - mu)^2 / (G-1)), population sigma = ... / G), by hand:
#   6, 8, 9:       mu = 23/3, squares 42/9     -> sqrt(7/3) = 1.527525   (population sqrt(14)/3 = 1.247219)
#   3.8, 5.2, 6.1: mu = 151/30, squares 2418/900 -> sqrt(1209)/30 = 1.159023 (population sqrt(806)/30)
#   0, 0, 0, 1:    mu = 1/4, squares 3/16 + 9/16 = 3/4 -> sqrt(1/4) = 0.5  (population sqrt(3)/4)
#   0, 1:          mu = 1/2, squares 1/2         -> sqrt(1/2) = 0.707107   (population 1/2)
#   2, 2, 2, 2:    all equal                     -> 0
SAMPLE_STD_CASES = [
    ([6.0, 8.0, 9.0], math.sqrt(7 / 3), math.sqrt(14) / 3),
    ([3.8, 5.2, 6.1], math.sqrt(1209) / 30, math.sqrt(806) / 30),
    ([0.0, 0.0, 0.0, 1.0], 0.5, math.sqrt(3) / 4),
    ([0.0, 1.0], math.sqrt(0.5), 0.5),
    ([2.0, 2.0, 2.0, 2.0], 0.0, 0.0),
]


def check_sample_std(sample_std) -> None:
    """Exercise 1: sample_std(rewards (G,)) -> scalar, sqrt(sum (r_i - mu)^2 / (G - 1))."""
    name = "sample_std"
    if _not_done(name, sample_std(torch.tensor(SAMPLE_STD_CASES[0][0], dtype=torch.float64))):
        return
    for rewards, expected, population in SAMPLE_STD_CASES:
        got = _as_float64(sample_std(torch.tensor(rewards, dtype=torch.float64)))
        assert got.numel() == 1, f"{name}({rewards}) returned shape {tuple(got.shape)}, expected one number"
        got = float(got.reshape(()))
        hint = ""
        if expected > 0 and abs(got - population) < 1e-9:
            hint = " -- that is the population sigma (divide by G); the note's formula divides by G - 1"
        assert abs(got - expected) < 1e-9, f"{name}({rewards}) returned {got:.6f}, expected {expected:.6f}{hint}"
    print(f"{name}: correct ({len(SAMPLE_STD_CASES)} cases; 6/8/9 gives {math.sqrt(7 / 3):.4f}, "
          f"the note prints 1.25, the population value)")


# -------------------------------------------------------- 2. rloo_advantages

# (rewards, G, r_i - mean of the other G-1 rewards of its group), by hand:
#   6, 8, 9:        6 - 17/2 = -2.5, 8 - 15/2 = 0.5, 9 - 14/2 = 2.0
#   3.8, 5.2, 6.1:  3.8 - 5.65 = -1.85, 5.2 - 4.95 = 0.25, 6.1 - 4.5 = 1.6
#   1,0,0,0 | 1,1,1,1 (G = 4): 1 - 0 = 1, 0 - 1/3 = -1/3 (three times) | 1 - 1 = 0 (four times)
RLOO_CASES = [
    ([6.0, 8.0, 9.0], 3, [-2.5, 0.5, 2.0]),
    ([3.8, 5.2, 6.1], 3, [-1.85, 0.25, 1.6]),
    ([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], 4, [1.0, -1 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0, 0.0]),
]


def check_rloo_advantages(rloo_advantages) -> None:
    """Exercise 2: rloo_advantages(rewards (B*G,), group_size) -> (B*G,), r_i - mean of the others in its group."""
    name = "rloo_advantages"
    rewards, G, _ = RLOO_CASES[0]
    if _not_done(name, rloo_advantages(torch.tensor(rewards, dtype=torch.float64), G)):
        return
    cases = list(RLOO_CASES)
    g = torch.Generator().manual_seed(4)
    for B, G in ((5, 2), (3, 6)):  # random batches: reference by an explicit loop over members
        r = torch.rand(B * G, generator=g, dtype=torch.float64)  # (B*G,)
        expected = []
        for i in range(B * G):
            start = i // G * G
            others = [float(r[j]) for j in range(start, start + G) if j != i]
            expected.append(float(r[i]) - sum(others) / len(others))
        cases.append((r.tolist(), G, expected))
    for rewards, G, expected in cases:
        r = torch.tensor(rewards, dtype=torch.float64)  # (B*G,)
        got = _as_float64(rloo_advantages(r.clone(), G))
        exp = torch.tensor(expected, dtype=torch.float64)  # (B*G,)
        assert got.shape == exp.shape, f"{name}: returned shape {tuple(got.shape)}, expected {tuple(exp.shape)} (flat)"
        hint = ""
        grouped = r.view(-1, G)  # (B, G)
        centred = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)  # (B*G,)
        if torch.allclose(got, centred, atol=1e-9):
            hint = " -- that is r_i minus the group mean, which still includes r_i itself"
        assert torch.allclose(got, exp, rtol=0.0, atol=1e-9), (
            f"{name}({[round(x, 4) for x in rewards]}, group_size={G}) returned {[round(x, 4) for x in got.tolist()]}, "
            f"expected {[round(x, 4) for x in expected]}{hint}")
    print(f"{name}: correct ({len(cases)} cases; leave-one-out is the group-mean advantage times G/(G-1), "
          f"so its gradient estimate is unbiased)")


# ----------------------------------------------------- 3. zero_variance_prob

# (p, G, P(all G right) + P(all G wrong) = p^G + (1-p)^G), by hand:
#   0.5, 4:  1/16 + 1/16 = 0.125
#   0.9, 8:  0.9^8 + 0.1^8 = 0.43046721 + 0.00000001 = 0.43046722
#   0.3, 16: 0.3^16 + 0.7^16 = 0.0000000430 + 0.0033232931 = 0.0033233361
#   0.5, 2:  0.25 + 0.25 = 0.5
#   0.0, 8:  every answer wrong -> 1
ZERO_VAR_CASES = [
    (0.5, 4, 0.125),
    (0.9, 8, 0.9 ** 8 + 0.1 ** 8),
    (0.3, 16, 0.3 ** 16 + 0.7 ** 16),
    (0.5, 2, 0.5),
    (0.0, 8, 1.0),
]


def check_zero_variance_prob(zero_variance_prob) -> None:
    """Exercise 3: zero_variance_prob(p, G) -> float, the chance that G pass/fail rewards are all equal."""
    name = "zero_variance_prob"
    if _not_done(name, zero_variance_prob(0.5, 4)):
        return
    for p, G, expected in ZERO_VAR_CASES:
        got = float(zero_variance_prob(p, G))
        hint = ""
        if abs(got - p ** G) < 1e-12 and abs(expected - p ** G) > 1e-12:
            hint = " -- a group where all G answers are wrong carries no signal either"
        assert abs(got - expected) < 1e-9, f"{name}(p={p}, G={G}) returned {got:.8f}, expected {expected:.8f}{hint}"
    print(f"{name}: correct ({len(ZERO_VAR_CASES)} cases; at p = 0.9 and G = 8, "
          f"{0.9 ** 8 + 0.1 ** 8:.0%} of the groups teach nothing)")
