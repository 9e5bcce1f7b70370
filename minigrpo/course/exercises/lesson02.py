"""Checkers for the exercises of lesson 02 (group-relative advantage, course section 3 item 1 and section 4).

Each checker takes the reader's function, calls it on cases worked out by
hand (in the comments below), and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct (...)" when every case passes.

    1. batch_scaled_advantages(rewards, G)   r_i minus its group's mean, over the std of the whole batch
    2. rloo_advantages(rewards, group_size)  r_i minus the mean of the OTHER G-1 rewards (leave-one-out)
    3. zero_variance_prob(p, G)              chance that G pass/fail rewards are all equal (no signal)
"""
from __future__ import annotations

import math

import torch

from minigrpo.advantage import group_advantages
from minigrpo.course.exercises import as_float64 as _as_float64, not_done as _not_done


# ------------------------------------------------ 1. batch_scaled_advantages

# (rewards, G, expected), by hand: centre each reward on its GROUP's mean, divide by the sample std of ALL the
# batch's rewards (around the batch mean, divide by N - 1), as TRL's scale_rewards="batch" (Lite PPO):
#   1,0,0,0 | 1,1,1,0 (G = 4): group means 1/4, 3/4; centred 3/4, -1/4 x3 | 1/4 x3, -3/4.
#       batch: four 1s and four 0s, mean 1/2, sum of squares 8/4 = 2 -> std sqrt(2/7) = 0.534522
#   6, 8, 9 (one group): the batch is the group, std sqrt(7/3): the note's formula, -1.0911, 0.2182, 0.8729
#   1,1 | 0,0 | 1,0 (G = 2): centred 0, 0 | 0, 0 | 1/2, -1/2; batch mean 1/2, squares 6/4 -> std sqrt(1.5/5)
#   2,2 | 2,2: every reward equal -> std 0: no signal, all advantages 0 (not 0/0)
BATCH_CASES = [
    ([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0], 4,
     [x / math.sqrt(2 / 7) for x in (0.75, -0.25, -0.25, -0.25, 0.25, 0.25, 0.25, -0.75)]),
    ([6.0, 8.0, 9.0], 3, [x / math.sqrt(7 / 3) for x in (-5 / 3, 1 / 3, 4 / 3)]),
    ([1.0, 1.0, 0.0, 0.0, 1.0, 0.0], 2, [0.0, 0.0, 0.0, 0.0, 0.5 / math.sqrt(0.3), -0.5 / math.sqrt(0.3)]),
    ([2.0, 2.0, 2.0, 2.0], 2, [0.0, 0.0, 0.0, 0.0]),
]


def check_batch_scaled_advantages(batch_scaled_advantages) -> None:
    """Exercise 1: batch_scaled_advantages(rewards (B*G,), group_size) -> (B*G,) (r_i - group mean) / batch std."""
    name = "batch_scaled_advantages"
    first = batch_scaled_advantages(torch.tensor(BATCH_CASES[0][0], dtype=torch.float64), BATCH_CASES[0][1])
    if _not_done(name, first):
        return
    for rewards, G, expected in BATCH_CASES:
        got = _as_float64(batch_scaled_advantages(torch.tensor(rewards, dtype=torch.float64), G)).reshape(-1)
        want = torch.tensor(expected, dtype=torch.float64)
        assert got.shape == want.shape, f"{name}({rewards}, {G}) returned {tuple(got.shape)} values, expected {len(rewards)}"
        assert not torch.isnan(got).any(), f"{name}({rewards}, {G}) returned NaN: equal rewards carry no signal, give 0"
        assert torch.allclose(got, want, atol=1e-9, rtol=0), (
            f"{name}({rewards}, G={G}) returned {[round(x, 4) for x in got.tolist()]}, expected "
            f"{[round(x, 4) for x in want.tolist()]} (each reward minus its group's mean, divided by the sample std "
            f"of all the batch's rewards)")
    g = torch.Generator().manual_seed(2)
    for B, G in ((5, 4), (3, 8)):
        r = (torch.rand(B * G, generator=g) < 0.5).to(torch.float64) + torch.rand(B * G, generator=g, dtype=torch.float64)
        want = group_advantages(r, G, scale="batch")
        got = _as_float64(batch_scaled_advantages(r.clone(), G)).reshape(-1)
        assert torch.allclose(got, want, atol=1e-9, rtol=0), (
            f"{name} on a random batch of B = {B} groups of G = {G} differs from the engine's "
            f"group_advantages(scale='batch') by {float((got - want).abs().max()):.3g}")
    print(f"{name}: correct ({len(BATCH_CASES)} cases by hand and 2 random batches against "
          f"group_advantages(scale='batch'))")


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
