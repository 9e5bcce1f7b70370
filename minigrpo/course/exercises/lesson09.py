"""Checkers for the exercises of lesson 09 (the GRPO family's tricks, measured).

Each checker takes the reader's function, calls it on cases worked out by hand (or against the engine,
whose own tests derive its numbers by hand and from TRL's code), and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. sequence_ratio(logp, old_logp, mask)        GSPO's ratio of each completion, (N, T) -> (N,)
    2. cispo_loss(logp, old_logp, adv, mask, cap)  CISPO's loss, token mean; its gradient is checked too
    3. group_weight(k, G, scale)                   sum of |A_i| of a group with k of G rewards 1, the rest 0
    4. samples_per_informative_group(rows)         what dynamic sampling paid for each group it trained on
"""
from __future__ import annotations

import math

import torch

from minigrpo.advantage import group_advantages
from minigrpo.course.exercises import not_done as _not_done
from minigrpo.loss import grpo_loss

# ---------------------------------------------------------------------------
# Exercise 1: GSPO's sequence ratio
# ---------------------------------------------------------------------------

# (log-ratios of the real tokens, padding after them, expected ratio), by hand: exp of the mean log-ratio.
SEQUENCE_CASES = [
    ([0.3, -0.1], 1, math.exp(0.1)),            # (0.3 - 0.1) / 2; the padded token does not count
    ([0.2], 2, math.exp(0.2)),                   # one real token: its own ratio
    ([0.5, 0.5, 0.5, -1.5], 0, 1.0),              # mean 0: the sequence is as likely as before
    ([math.log(2.0)] * 3, 0, 2.0),                # each token twice as likely: the geometric mean is 2
]


def _sequence_batch():
    """The cases as one padded batch (log pi_old = -1 everywhere, padding log-probs set to garbage)."""
    T = max(len(lr) + pad for lr, pad, _ in SEQUENCE_CASES)
    logp, mask = torch.full((len(SEQUENCE_CASES), T), 9.0, dtype=torch.float64), torch.zeros(len(SEQUENCE_CASES), T)
    for i, (log_ratios, _, _) in enumerate(SEQUENCE_CASES):
        logp[i, :len(log_ratios)] = torch.tensor(log_ratios, dtype=torch.float64) - 1.0
        mask[i, :len(log_ratios)] = 1
    return logp, torch.full_like(logp, -1.0), mask.to(torch.float64)


def check_sequence_ratio(sequence_ratio) -> None:
    """Exercise 1: sequence_ratio(logp (N, T), old_logp (N, T), mask (N, T)) -> (N,) ratios."""
    name = "sequence_ratio"
    logp, old, mask = _sequence_batch()
    got = sequence_ratio(logp, old, mask)
    if _not_done(name, got):
        return
    got = torch.as_tensor(got, dtype=torch.float64).reshape(-1)
    assert got.shape == (len(SEQUENCE_CASES),), f"{name} returned shape {tuple(got.shape)}, expected (N,) = (4,)"
    for g, (log_ratios, pad, expected) in zip(got.tolist(), SEQUENCE_CASES):
        assert math.isclose(g, expected, rel_tol=1e-9), (
            f"{name}: log-ratios {log_ratios} with {pad} padded token(s) gave {g:.6g}, expected {expected:.6g} "
            f"(exp of the MEAN log-ratio over the real tokens only)")
    print(f"{name}: correct ({len(SEQUENCE_CASES)} sequences; log-ratios 0.3 and -0.1 give exp(0.1) = 1.105)")


# ---------------------------------------------------------------------------
# Exercise 2: CISPO's loss
# ---------------------------------------------------------------------------

def _cispo_cases():
    g = torch.Generator().manual_seed(9)
    logp = -torch.rand(4, 6, generator=g, dtype=torch.float64) * 3
    old = logp - torch.randn(4, 6, generator=g, dtype=torch.float64)           # ratios from 0.1 to about 10
    mask = torch.ones(4, 6, dtype=torch.float64)
    mask[1, 4:], mask[3, 2:] = 0, 0
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0], dtype=torch.float64)
    return [(logp, old, adv, mask, cap) for cap in (5.0, 1.5)]


def check_cispo_loss(cispo_loss) -> None:
    """Exercise 2: cispo_loss(logp, old_logp, adv (N,), mask, cap) -> () loss, with CISPO's gradient."""
    name = "cispo_loss"
    logp, old, adv, mask, cap = _cispo_cases()[0]
    if _not_done(name, cispo_loss(logp.clone().requires_grad_(), old, adv, mask, cap)):
        return
    for logp, old, adv, mask, cap in _cispo_cases():
        mine = logp.clone().requires_grad_()
        got = cispo_loss(mine, old, adv, mask, cap)
        (g_got,) = torch.autograd.grad(got, mine)
        ref = logp.clone().requires_grad_()
        want, _ = grpo_loss(ref, old, adv, mask, loss_type="cispo", cispo_max=cap)
        (g_want,) = torch.autograd.grad(want, ref)
        got, want = float(got.detach()), float(want.detach())
        assert math.isclose(got, want, rel_tol=1e-7, abs_tol=1e-9), (
            f"{name} with cap {cap}: loss {got:.6g}, expected {want:.6g} "
            f"(minus the token mean of min(r, cap) * A * log pi over real tokens)")
        assert torch.allclose(g_got * mask, g_want * mask, rtol=1e-6, atol=1e-9), (
            f"{name} with cap {cap}: the gradient differs (is the weight min(r, cap) detached? With it attached, "
            f"the gradient also flows through r)")
    print(f"{name}: correct (loss and gradient, caps 5 and 1.5)")


# ---------------------------------------------------------------------------
# Exercise 3: which groups get the weight
# ---------------------------------------------------------------------------

def check_group_weight(group_weight) -> None:
    """Exercise 3: group_weight(k, G, scale) -> sum over the group of |A_i|, scale "group" or "none"."""
    name = "group_weight"
    if _not_done(name, group_weight(1, 8, "group")):
        return
    for G in (4, 8):
        for k in range(G + 1):
            rewards = torch.tensor([1.0] * k + [0.0] * (G - k), dtype=torch.float64)
            for scale in ("group", "none"):
                expected = group_advantages(rewards, G, scale=scale).abs().sum().item()
                got = float(group_weight(k, G, scale))
                assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12), (
                    f"{name}({k}, {G}, {scale!r}) = {got:.6g}, expected {expected:.6g} (k rewards 1, the others 0; "
                    f"{'divide by the sample std, G-1' if scale == 'group' else 'no std'})")
    print(f"{name}: correct (G = 4 and 8, every k, both scales)")


# ---------------------------------------------------------------------------
# Exercise 4: what dynamic sampling paid
# ---------------------------------------------------------------------------

def check_samples_per_informative_group(samples_per_informative_group, rows: list[dict]) -> None:
    """Exercise 4: samples_per_informative_group(rows) -> samples sampled in all steps / groups trained on."""
    name = "samples_per_informative_group"
    got = samples_per_informative_group(rows)
    if _not_done(name, got):
        return
    expected = sum(r["samples"] for r in rows) / sum(r["kept_groups"] for r in rows)
    assert math.isclose(float(got), expected, rel_tol=1e-9), (
        f"{name} = {float(got):.6g}, expected {expected:.6g} (every completion sampled, in every round, divided by "
        f"the groups the steps trained on; not a mean of per-step ratios)")
    print(f"{name}: correct ({expected:.2f} samples per informative group; without dynamic sampling the same "
          f"run trains on every group, informative or not)")
