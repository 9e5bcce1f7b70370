"""Checkers for the exercises of lesson 08 (GRPO vs PPO with a critic vs REINFORCE).

Each checker takes the reader's function, calls it on cases worked out by
hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. rloo_advantages(rewards, G)        r_i minus the mean of the other G-1 rewards of its group
    2. gae_advantages(values, R, lam)     GAE for one completion, reward R at its last token, gamma = 1
    3. rloo_over_grpo(rewards)            the factor c with A_rloo = c * A_grpo in one group
"""
from __future__ import annotations

import math

from minigrpo.course.exercises import as_float64 as _f64
from minigrpo.course.exercises import not_done as _not_done

# ---------------------------------------------------------------------------
# Exercise 1: RLOO's leave-one-out advantages
# ---------------------------------------------------------------------------

# (rewards, G, expected), by hand. The document's group 6/8/9: 6 - (8+9)/2 = -2.5, 8 - 7.5 = 0.5, 9 - 7 = 2.
RLOO_CASES = [
    ([6.0, 8.0, 9.0], 3, [-2.5, 0.5, 2.0]),
    ([1.0, 0.0, 0.0, 1.0], 4, [2 / 3, -2 / 3, -2 / 3, 2 / 3]),
    ([1.0, 1.0, 0.0, 1.0, 1.0, 1.0], 3, [0.5, 0.5, -1.0, 0.0, 0.0, 0.0]),   # two groups; the second is constant
    ([3.8, 5.2], 2, [-1.4, 1.4]),                                             # G = 2: r_i - r_other
]


def check_rloo_advantages(rloo_advantages) -> None:
    """Exercise 1: rloo_advantages(rewards (N,), G) -> (N,) advantages, groups of G consecutive samples."""
    name = "rloo_advantages"
    if _not_done(name, rloo_advantages(_f64(RLOO_CASES[0][0]), RLOO_CASES[0][1])):
        return
    for rewards, G, expected in RLOO_CASES:
        got = _f64(rloo_advantages(_f64(rewards), G)).reshape(-1)
        assert got.shape == (len(expected),) and all(
            math.isclose(float(g), e, abs_tol=1e-9) for g, e in zip(got, expected)), (
            f"{name}({rewards}, G={G}) returned {got.tolist()}, expected {expected} "
            f"(each reward minus the mean of the OTHER G-1 rewards of its own group)")
    print(f"{name}: correct ({len(RLOO_CASES)} cases; the document's group 6/8/9 gets -2.5, 0.5, 2.0)")


# ---------------------------------------------------------------------------
# Exercise 2: GAE along one completion
# ---------------------------------------------------------------------------

# (values V(s_0..s_{L-1}), R, lam, expected A_0..A_{L-1}), by hand with gamma = 1 and V(s_L) = 0:
# delta_t = V(s_{t+1}) - V(s_t) (+ R at t = L-1), A_t = delta_t + lam * A_{t+1}.
GAE_CASES = [
    ([0.5, 0.6, 0.8], 1.0, 0.5, [0.25, 0.3, 0.2]),
    ([0.5, 0.6, 0.8], 1.0, 1.0, [0.5, 0.4, 0.2]),          # lam = 1: A_t = R - V(s_t)
    ([0.5, 0.6, 0.8], 1.0, 0.0, [0.1, 0.2, 0.2]),          # lam = 0: each token's change of value
    # deltas (0.9-0.7, 0.2-0.9, 0.1-0.2, 0-0.1) = (0.2, -0.7, -0.1, -0.1); A_3 = -0.1, A_2 = -0.1 + 0.9 * -0.1,
    # A_1 = -0.7 + 0.9 * -0.19, A_0 = 0.2 + 0.9 * -0.871: the value fell at token 1, so token 1 gets the blame
    ([0.7, 0.9, 0.2, 0.1], 0.0, 0.9, [-0.5839, -0.871, -0.19, -0.1]),
    ([0.0], 1.0, 0.95, [1.0]),                             # one token: A = R - V
]


def check_gae_advantages(gae_advantages) -> None:
    """Exercise 2: gae_advantages(values (L,), R, lam) -> (L,) advantages, gamma = 1."""
    name = "gae_advantages"
    if _not_done(name, gae_advantages(_f64(GAE_CASES[0][0]), GAE_CASES[0][1], GAE_CASES[0][2])):
        return
    for values, R, lam, expected in GAE_CASES:
        got = _f64(gae_advantages(_f64(values), R, lam)).reshape(-1)
        assert got.shape == (len(expected),) and all(
            math.isclose(float(g), e, abs_tol=1e-9) for g, e in zip(got, expected)), (
            f"{name}(V={values}, R={R}, lam={lam}) returned {[round(float(g), 6) for g in got]}, expected "
            f"{[round(e, 6) for e in expected]} (delta_t = R*[t = L-1] + V(s_t+1) - V(s_t), V(s_L) = 0; "
            f"A_t = delta_t + lam * A_t+1)")
    print(f"{name}: correct ({len(GAE_CASES)} cases; lam = 1 gives R - V(s_t), lam = 0 each token's change of value)")


# ---------------------------------------------------------------------------
# Exercise 3: RLOO is GRPO with another scale per group
# ---------------------------------------------------------------------------

# (rewards of one group, expected c), by hand: A_rloo = G/(G-1) (r - mean), A_grpo = (r - mean) / std_sample,
# so c = G/(G-1) * std_sample.
FACTOR_CASES = [
    ([6.0, 8.0, 9.0], 1.5 * math.sqrt(7 / 3)),           # sample std of 6/8/9 = sqrt(7/3) = 1.5275
    ([1.0, 0.0, 0.0, 1.0], 4 / 3 * math.sqrt(1 / 3)),    # sample variance (4 * 0.25) / 3
    # the document's first group: mean 15.1/3 = 5.0333, deviations -1.2333, 0.1667, 1.0667: c = 1.5 * 1.1590
    ([3.8, 5.2, 6.1], 1.5 * math.sqrt(((3.8 - 15.1 / 3) ** 2 + (5.2 - 15.1 / 3) ** 2 + (6.1 - 15.1 / 3) ** 2) / 2)),
    ([0.0, 2.0], 2.0 * math.sqrt(2.0)),
]


def check_rloo_over_grpo(rloo_over_grpo) -> None:
    """Exercise 3: rloo_over_grpo(rewards of one group) -> c with A_rloo = c * A_grpo (sample std)."""
    name = "rloo_over_grpo"
    if _not_done(name, rloo_over_grpo(_f64(FACTOR_CASES[0][0]))):
        return
    for rewards, expected in FACTOR_CASES:
        got = float(rloo_over_grpo(_f64(rewards)))
        assert math.isclose(got, expected, rel_tol=1e-6), (
            f"{name}({rewards}) returned {got:.6f}, expected {expected:.6f} "
            f"(write both advantages in terms of r - mean; c = G/(G-1) * sample std)")
    print(f"{name}: correct ({len(FACTOR_CASES)} cases; a group's c grows with its spread: RLOO pushes harder "
          f"where rewards differ more, GRPO pushes every group alike)")
