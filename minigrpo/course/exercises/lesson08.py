"""Checkers for the exercises of lesson 08 (GRPO vs PPO with a critic vs REINFORCE).

Each checker takes the reader's function, calls it on cases worked out by
hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. group_baseline_error(p, v, G)      E|m - v| for m the mean of G rewards, each 1 with probability p
    2. gae_advantages(values, R, lam)     GAE for one completion, reward R at its last token, gamma = 1
    3. backward_share(rows)               the share of sampled completions a GRPO run back-propagates
"""
from __future__ import annotations

import math

from minigrpo.course.exercises import as_float64 as _f64
from minigrpo.course.exercises import not_done as _not_done

# ---------------------------------------------------------------------------
# Exercise 1: how far GRPO's baseline (the mean of G rewards) is from a value
# ---------------------------------------------------------------------------

# (p, v, G, expected), by hand: E|k/G - v| with k ~ Binomial(G, p).
BASELINE_ERROR_CASES = [
    (0.5, 0.5, 2, 0.25),              # m = 0, 1/2, 1 w.p. 1/4, 1/2, 1/4: errors 1/2, 0, 1/2
    (0.5, 1.0, 2, 0.5),               # errors 1, 1/2, 0
    (0.2, 0.0, 2, 0.2),               # m = 1/2 w.p. 0.32, m = 1 w.p. 0.04: 0.16 + 0.04
    (1.0, 1.0, 8, 0.0),               # always right, and the value is 1: no error
    (0.0, 0.5, 4, 0.5),               # always wrong: m = 0, half a point from v
    (0.5, 0.5, 1, 0.5),               # G = 1: the sample itself, 0 or 1
]


def check_group_baseline_error(group_baseline_error) -> None:
    """Exercise 1: group_baseline_error(p, v, G) -> E|m - v|, m the mean of G Bernoulli(p) rewards."""
    name = "group_baseline_error"
    if _not_done(name, group_baseline_error(0.5, 0.5, 2)):
        return
    for p, v, G, expected in BASELINE_ERROR_CASES:
        got = float(group_baseline_error(p, v, G))
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12), (
            f"{name}({p}, {v}, {G}) returned {got:.6g}, expected {expected} (sum over k = 0..G of "
            f"C(G, k) p^k (1-p)^(G-k) |k/G - v|)")
    print(f"{name}: correct ({len(BASELINE_ERROR_CASES)} cases; section 5's 'group mean of 8' column is this, "
          f"averaged over the traced states)")


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
# Exercise 3: the share of the batch a GRPO step back-propagates
# ---------------------------------------------------------------------------

def check_backward_share(backward_share, rows: list[dict]) -> None:
    """Exercise 3: backward_share(rows) -> the mean over steps of the share of groups whose advantages are not 0.

    `rows` are a committed GRPO run's metrics rows; zero_var_frac is the share of groups whose rewards are equal."""
    name = "backward_share"
    hand = [{"step": 1, "zero_var_frac": 0.25}, {"step": 2, "zero_var_frac": 0.75}, {"step": 3, "zero_var_frac": 1.0}]
    got = backward_share(hand)
    if _not_done(name, got):
        return
    assert math.isclose(float(got), (0.75 + 0.25 + 0.0) / 3, rel_tol=1e-12), (
        f"{name} of steps with zero_var_frac 0.25, 0.75, 1.0 = {float(got):.6g}, expected {1 / 3:.6g} (1 - "
        f"zero_var_frac, averaged over the steps; a step whose groups are all equal back-propagates nothing)")
    expected = sum(1 - r["zero_var_frac"] for r in rows) / len(rows)
    got = float(backward_share(rows))
    assert math.isclose(got, expected, rel_tol=1e-9), f"{name} of the committed run = {got:.6g}, expected {expected:.6g}"
    print(f"{name}: correct (the committed GRPO run back-propagated {100 * expected:.0f}% of its completions; "
          f"REINFORCE's batch-mean advantages are never exactly 0, so it back-propagates all of them)")
