"""Checkers for the exercises of lesson 03 (decoupled clipping, course section 3 item 2).

Each checker takes the reader's function, calls it on cases worked out by
hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. max_new_prob(p_old, eps_high)                     how high A > 0 can push a token
    2. surrogate_grad(ratio, adv, eps_low, eps_high)     d objective / d ratio, by hand
    3. clip_fraction(ratio, adv, eps_low, eps_high)      the share of clipped tokens the trainer logs
"""
from __future__ import annotations

import torch

from minigrpo.course.exercises import not_done as _not_done
from minigrpo.loss import clipped_surrogate


def _close(got, expected, atol: float = 1e-9) -> bool:
    got = torch.as_tensor(got, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    return got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=0.0, atol=atol))


# (p_old, eps_high, highest probability reachable in one update when A > 0), by hand:
#   0.01 x 1.2 = 0.012 (the note's PPO example), 0.01 x 1.28 = 0.0128 (DAPO),
#   0.5 x 1.28 = 0.64, 0.7 x 1.28 = 0.896; 0.9 x 1.2 = 1.08, 0.9 x 1.3 = 1.17 and
#   0.8 x 1.5 = 1.2 are above 1, so probability 1 is reached first.
MAX_NEW_PROB_CASES = [(0.01, 0.2, 0.012), (0.01, 0.28, 0.0128), (0.5, 0.28, 0.64), (0.7, 0.28, 0.896),
                      (0.9, 0.2, 1.0), (0.9, 0.3, 1.0), (0.8, 0.5, 1.0), (1.0, 0.0, 1.0)]


def check_max_new_prob(max_new_prob) -> None:
    """Exercise 1: max_new_prob(p_old, eps_high) -> float, min(1, p_old (1 + eps_high))."""
    name = "max_new_prob"
    if _not_done(name, max_new_prob(0.01, 0.28)):
        return
    for p_old, eps_high, expected in MAX_NEW_PROB_CASES:
        got = float(max_new_prob(p_old, eps_high))
        hint = " (a probability cannot exceed 1)" if got > 1.0 else ""
        assert abs(got - expected) < 1e-9, \
            f"{name}({p_old}, eps_high={eps_high}) returned {got:.6g}, expected {expected:.6g}{hint}"
    print(f"{name}: correct ({len(MAX_NEW_PROB_CASES)} cases, 0.01 -> 0.0128 and 0.9 -> 1 with eps_high = 0.28)")


def _autograd_grad(ratio: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float) -> torch.Tensor:
    """Reference d objective / d ratio by autograd through the engine's clipped_surrogate."""
    r = ratio.detach().clone().requires_grad_(True)  # (N, T)
    (grad,) = torch.autograd.grad(clipped_surrogate(r, adv[:, None], eps_low, eps_high).sum(), r)  # (N, T)
    return grad


def _grad_cases():
    """Hand case, then random ratios kept away from the kinks 1-eps_low and 1+eps_high."""
    # A = +1 row: r = 0.5, 1.1 unclipped (grad 1); r = 1.5 > 1.2 clipped (grad 0).
    # A = -2 row: r = 0.5 < 0.8 clipped (grad 0); r = 1.1, 1.5 unclipped (grad -2).
    ratio = torch.tensor([[0.5, 1.1, 1.5], [0.5, 1.1, 1.5]], dtype=torch.float64)
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    yield ratio, adv, 0.2, 0.2, torch.tensor([[1.0, 1.0, 0.0], [0.0, -2.0, -2.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    for eps_low, eps_high in ((0.2, 0.28), (0.1, 0.5), (0.3, 0.2)):
        ratio = torch.rand(6, 9, generator=g, dtype=torch.float64) * 2.0  # (6, 9) in [0, 2)
        kink = ((ratio - (1 - eps_low)).abs() < 1e-6) | ((ratio - (1 + eps_high)).abs() < 1e-6)
        ratio = torch.where(kink, ratio + 1e-3, ratio)
        adv = torch.tensor([1.5, -0.5, 0.7, -1.2, 0.3, -2.0], dtype=torch.float64)  # (6,)
        yield ratio, adv, eps_low, eps_high, _autograd_grad(ratio, adv, eps_low, eps_high)


def check_surrogate_grad(surrogate_grad) -> None:
    """Exercise 2: surrogate_grad(ratio (N,T), adv (N,), eps_low, eps_high) -> (N,T) d objective / d ratio."""
    name = "surrogate_grad"
    cases = list(_grad_cases())
    ratio, adv, eps_low, eps_high, expected = cases[0]
    if _not_done(name, surrogate_grad(ratio, adv, eps_low, eps_high)):
        return
    for ratio, adv, eps_low, eps_high, expected in cases:
        got = surrogate_grad(ratio.clone(), adv.clone(), eps_low, eps_high)
        assert _close(got, expected), (
            f"{name} with eps_low={eps_low}, eps_high={eps_high}: got {torch.as_tensor(got).tolist()}, "
            f"expected {expected.tolist()} (A where the min takes r*A, 0 where it takes the clipped term)")
    print(f"{name}: correct (A where unclipped, 0 where clipped; agrees with autograd on {len(cases)} cases)")


def check_clip_fraction(clip_fraction) -> None:
    """Exercise 3: clip_fraction(ratio (N,T), adv (N,), eps_low, eps_high) -> float in [0, 1]."""
    name = "clip_fraction"
    cases = list(_grad_cases())
    # The hand case: clipped tokens are (0, 2) (A > 0, r = 1.5 > 1.2) and (1, 0) (A < 0, r = 0.5 < 0.8): 2 of 6.
    ratio, adv, eps_low, eps_high, _ = cases[0]
    first = clip_fraction(ratio, adv, eps_low, eps_high)
    if _not_done(name, first):
        return
    assert abs(float(first) - 2 / 6) < 1e-9, (
        f"{name} on the hand case returned {float(first):.6g}, expected 2/6 = 0.3333: only r > 1+eps_high "
        f"with A > 0 and r < 1-eps_low with A < 0 are clipped")
    for ratio, adv, eps_low, eps_high, grad in cases[1:]:
        expected = (grad == 0).double().mean().item()  # A != 0 here, so gradient 0 <=> clipped
        got = float(clip_fraction(ratio.clone(), adv.clone(), eps_low, eps_high))
        assert abs(got - expected) < 1e-9, \
            f"{name} with eps_low={eps_low}, eps_high={eps_high} returned {got:.6g}, expected {expected:.6g}"
    print(f"{name}: correct ({len(cases)} cases; the trainer logs this number as 'clip')")
