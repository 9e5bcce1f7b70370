"""Checkers for the exercises of lesson 08 (GRPO vs PPO with a critic vs REINFORCE).

Each checker takes the reader's function, calls it on cases worked out by
hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. group_baseline_error(p, v, G)      E|m - v| for m the mean of G rewards, each 1 with probability p
    2. explained_variance(values, targets, mask)   1 - Var[targets - values] / Var[targets] over real entries
    3. backward_share(rows)               the share of sampled completions a GRPO run back-propagates
    4. clipped_value_loss(values, old_values, returns, mask, clip)   PPO2's clipped value loss, token mean
"""
from __future__ import annotations

import math

import numpy as np
import torch

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
# Exercise 2: the explained variance of a critic
# ---------------------------------------------------------------------------

# (values, targets, mask, expected), by hand: 1 - Var[targets - values] / Var[targets] over the real entries,
# both variances over the same entries (the divisor cancels in the ratio).
EV_CASES = [
    ([[0.2, 0.5, 0.8]], [[0.2, 0.5, 0.8]], [[1, 1, 1]], 1.0),            # perfect
    ([[0.5, 0.5, 0.5]], [[0.2, 0.5, 0.8]], [[1, 1, 1]], 0.0),            # the targets' mean: explains nothing
    ([[0.7, 1.0, 1.3]], [[0.2, 0.5, 0.8]], [[1, 1, 1]], 1.0),            # off by a constant: the variance ignores it
    # residuals (0.2-0.8, 0.5-0.5, 0.8-0.2) = (-0.6, 0, 0.6): Var 0.24, Var[targets] 0.06 -> 1 - 4 = -3
    ([[0.8, 0.5, 0.2]], [[0.2, 0.5, 0.8]], [[1, 1, 1]], -3.0),
    # the padded entries (mask 0) hold garbage and do not count: the real ones are case 1's
    ([[0.2, 0.5, 9.0], [0.8, -7.0, 0.0]], [[0.2, 0.5, 3.0], [0.8, 4.0, 1.0]], [[1, 1, 0], [1, 0, 0]], 1.0),
    # residuals (0, 0.1, -0.1, 0) around targets (0, 1, 1, 0): Var 0.005, Var[targets] 0.25 -> 1 - 0.02
    ([[0.0, 0.9, 1.1, 0.0]], [[0.0, 1.0, 1.0, 0.0]], [[1, 1, 1, 1]], 0.98),
]


def check_explained_variance(explained_variance) -> None:
    """Exercise 2: explained_variance(values (N, T), targets (N, T), mask (N, T)) -> a float (nan if Var = 0)."""
    name = "explained_variance"
    v, y, m = (_f64(x) for x in EV_CASES[0][:3])
    if _not_done(name, explained_variance(v, y, m)):
        return
    for values, targets, mask, expected in EV_CASES:
        got = float(explained_variance(_f64(values), _f64(targets), _f64(mask)))
        assert math.isclose(got, expected, abs_tol=1e-9), (
            f"{name}(values={values}, targets={targets}, mask={mask}) = {got:.6g}, expected {expected:.6g} "
            f"(1 - Var[targets - values] / Var[targets] over the entries where mask is 1)")
    g = torch.Generator().manual_seed(8)                # random batches against numpy, entry by entry
    for _ in range(3):
        y = torch.rand(6, 5, generator=g, dtype=torch.float64)
        v = y + 0.3 * torch.randn(6, 5, generator=g, dtype=torch.float64) + 0.2
        m = (torch.rand(6, 5, generator=g) < 0.7).to(torch.float64)
        keep = m.bool().numpy()
        want = 1 - np.var((y - v).numpy()[keep]) / np.var(y.numpy()[keep])
        got = float(explained_variance(v, y, m))
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (
            f"{name} on a random masked batch: {got:.6g}, expected {want:.6g}")
    flat = float(explained_variance(_f64([[0.1, 0.3]]), _f64([[0.5, 0.5]]), _f64([[1, 1]])))
    assert math.isnan(flat), (f"{name} with targets that do not vary returned {flat!r}: the ratio is undefined "
                              f"there; return nan (float('nan')), as Stable-Baselines3 does")
    print(f"{name}: correct ({len(EV_CASES)} cases by hand, 3 random masked batches, nan where the targets are flat)")


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


# ---------------------------------------------------------------------------
# Exercise 4: PPO2's clipped value loss
# ---------------------------------------------------------------------------

# (V, V_old, R, expected loss, expected d loss / d V), one token each, clip = 0.2, by hand:
# V_clip = clip(V, V_old - 0.2, V_old + 0.2); loss = 0.5 max((V - R)^2, (V_clip - R)^2).
VALUE_LOSS_CASES = [
    (0.6, 0.5, 1.0, 0.08, -0.4),       # inside the clip range: both terms 0.4^2; gradient V - R
    (0.9, 0.5, 1.0, 0.045, 0.0),       # above, moved past the clip towards R: the max picks the clipped 0.3^2; no gradient
    (0.9, 0.5, 0.0, 0.405, 0.9),       # above, moved away from R: the max keeps 0.9^2 (clipped 0.7^2); gradient V - R
    (0.1, 0.5, 0.0, 0.045, 0.0),       # below, towards R: the clipped 0.3^2; no gradient
    (0.1, 0.5, 1.0, 0.405, -0.9),      # below, away from R: 0.9^2 (clipped 0.7^2)
]
# Two completions of 3 and 1 tokens (clip 0.2); the padding holds values that must not count.
# Per token: 0.5 * max: [0.5 * 0.4^2, 0.5 * 0.3^2 (clipped: 0.9 -> 0.7 vs R = 1), 0.5 * 0.9^2] and [0.5 * 0.1^2].
# Token mean over the 4 real tokens: (0.08 + 0.045 + 0.405 + 0.005) / 4 = 0.13375.
MASKED_CASE = ([[0.6, 0.9, 0.9], [0.4, 5.0, -3.0]],      # values (padding 5.0, -3.0)
               [[0.5, 0.5, 0.5], [0.5, 0.0, 0.0]],       # old values
               [[1.0, 1.0, 0.0], [0.5, 0.0, 0.0]],       # returns
               [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]],       # mask
               0.13375)


def _value(x) -> float:
    """A loss as a float, without a warning for a tensor that requires grad."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def check_clipped_value_loss(clipped_value_loss) -> None:
    """Exercise 4: clipped_value_loss(values, old_values, returns, mask, clip) -> a scalar tensor, against
    minigrpo.ppo.value_loss (the loss PPO's critic trains on) in value and gradient."""
    from minigrpo.ppo import value_loss

    name = "clipped_value_loss"

    def call(values, old_values, returns, mask, clip):
        v = _f64(values).clone().requires_grad_(True)
        loss = clipped_value_loss(v, _f64(old_values), _f64(returns), _f64(mask), clip)
        return v, loss

    v, loss = call([[0.6]], [[0.5]], [[1.0]], [[1.0]], 0.2)
    if _not_done(name, loss):
        return
    for V, V_old, R, expected, grad in VALUE_LOSS_CASES:
        v, loss = call([[V]], [[V_old]], [[R]], [[1.0]], 0.2)
        assert isinstance(loss, torch.Tensor) and loss.numel() == 1, (
            f"{name} returned {loss!r}; expected a one-element tensor (the critic back-propagates it)")
        assert math.isclose(_value(loss), expected, abs_tol=1e-9), (
            f"{name}(V={V}, V_old={V_old}, R={R}, clip=0.2) returned {_value(loss):.6g}, expected {expected} "
            f"(0.5 * max((V - R)^2, (clip(V, V_old - 0.2, V_old + 0.2) - R)^2))")
        assert loss.requires_grad, f"{name}(V={V}, ...) is not differentiable in the values (no .item(), no numpy)"
        loss.backward()
        assert math.isclose(float(v.grad), grad, abs_tol=1e-9), (
            f"{name}(V={V}, V_old={V_old}, R={R}, clip=0.2): d loss / d V = {float(v.grad):.6g}, expected {grad} "
            f"(the gradient is V - R, or 0 where the max picks the clipped term)")
    *args, expected = MASKED_CASE
    v, loss = call(*args, 0.2)
    assert math.isclose(_value(loss), expected, abs_tol=1e-9), (
        f"{name} on two completions of 3 and 1 tokens returned {_value(loss):.6g}, expected {expected} (the mean over "
        f"the 4 real tokens of the whole batch, not per completion; padding counts neither in the sum nor in "
        f"the count)")

    g = torch.Generator().manual_seed(8)
    for N, T, clip in ((4, 7, 0.2), (6, 5, 0.1), (3, 11, 0.5)):
        old = torch.rand(N, T, generator=g, dtype=torch.float64)                       # (N, T)
        values = old + 0.6 * (torch.rand(N, T, generator=g, dtype=torch.float64) - 0.5)  # (N, T) in and out of the clip
        returns = torch.randint(0, 2, (N, T), generator=g).to(torch.float64)          # (N, T)
        lengths = torch.randint(1, T + 1, (N,), generator=g)                           # (N,)
        mask = (torch.arange(T)[None, :] < lengths[:, None]).to(torch.float64)         # (N, T)
        v, loss = call(values, old, returns, mask, clip)
        loss.backward()
        ref_v = values.clone().requires_grad_(True)
        ref = value_loss(ref_v, old, returns, mask, clip)
        ref.backward()
        assert math.isclose(_value(loss), _value(ref), rel_tol=1e-6, abs_tol=1e-9), (
            f"{name} on a random batch ({N} x {T}, clip {clip}) returned {_value(loss):.7g}, "
            f"minigrpo.ppo.value_loss gives {_value(ref):.7g}")
        assert torch.allclose(v.grad, ref_v.grad, atol=1e-9), (
            f"{name} on a random batch ({N} x {T}, clip {clip}): its gradient in the values differs from "
            f"minigrpo.ppo.value_loss's by up to {float((v.grad - ref_v.grad).abs().max()):.3g}")
    print(f"{name}: correct ({len(VALUE_LOSS_CASES) + 1} hand cases, 3 random batches against minigrpo.ppo.value_loss "
          f"in value and gradient; where V moved past the clip towards R, the critic gets no gradient)")
