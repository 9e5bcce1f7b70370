"""Checkers for the exercises of lesson 04 (KL estimators, loss aggregation, the full objective).

Each checker takes the reader's function, calls it on cases worked out by
hand (or on random inputs compared with the engine), and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. exact_kl(p, q)                                 KL(p || q) of two distributions
    2. token_weights(lengths, loss_type, max_len)     weight of one token of each completion
    3. full_grpo_loss(logp, old_logp, ref_logp, adv, mask, eps_low, eps_high, beta)
"""
from __future__ import annotations

import math

import torch

from minigrpo.course.exercises import not_done as _not_done
from minigrpo.loss import grpo_loss, kl_estimate


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# (p, q, KL(p || q)) by hand:
#   [0.5, 0.5] vs [0.9, 0.1]: 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5 ln(25/9) = 0.5108256
#   [0.25] * 4 vs [0.1, 0.2, 0.3, 0.4]: 0.25 ln(0.25^4 / 0.0024) = 0.25 ln(1.6276) = 0.1217771
#   any p against itself: 0
EXACT_KL_CASES = [([0.5, 0.5], [0.9, 0.1], 0.5 * math.log(25 / 9)),
                  ([0.25] * 4, [0.1, 0.2, 0.3, 0.4], 0.25 * math.log(0.25**4 / 0.0024)),
                  ([0.2, 0.3, 0.5], [0.2, 0.3, 0.5], 0.0)]


def check_exact_kl(exact_kl) -> None:
    """Exercise 1: exact_kl(p (V,), q (V,)) -> float, sum_v p_v log(p_v / q_v)."""
    name = "exact_kl"
    p, q, _ = EXACT_KL_CASES[0]
    if _not_done(name, exact_kl(_t(p), _t(q))):
        return
    for p, q, expected in EXACT_KL_CASES:
        got = float(exact_kl(_t(p), _t(q)))
        reverse = sum(b * math.log(b / a) for a, b in zip(p, q))
        hint = " (that is KL(q || p): the expectation is over p, the sampling distribution)" \
            if abs(got - reverse) < 1e-9 and abs(reverse - expected) > 1e-9 else ""
        assert abs(got - expected) < 1e-9, f"{name}({p}, {q}) returned {got:.7g}, expected {expected:.7g}{hint}"
    # Random pairs: KL equals the exact expectation of k3 under p (the estimator is unbiased).
    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        p = torch.softmax(torch.randn(7, generator=g, dtype=torch.float64) * 2, dim=0)  # (7,)
        q = torch.softmax(torch.randn(7, generator=g, dtype=torch.float64) * 2, dim=0)  # (7,)
        expected = float((p * kl_estimate(p.log(), q.log(), "k3")).sum())
        got = float(exact_kl(p.clone(), q.clone()))
        assert abs(got - expected) < 1e-9, f"{name} on a random pair returned {got:.7g}, expected {expected:.7g}"
    print(f"{name}: correct ({len(EXACT_KL_CASES)} hand cases and 5 random pairs; KL([.5,.5] || [.9,.1]) = 0.5108)")


# (lengths, max_len, {loss_type: weight of one token of each completion}) by hand:
#   N = 2, lengths 2 and 8, L = 8:
#     grpo 1/(N |o_n|) = 1/4, 1/16; bnpo/dapo 1/(2+8) = 1/10; dr_grpo 1/(N L) = 1/16; seq_sum 1/N = 1/2
#   N = 3, lengths 3, 5, 8, L = 10:
#     grpo 1/9, 1/15, 1/24; bnpo/dapo 1/16; dr_grpo 1/30; seq_sum 1/3
TOKEN_WEIGHT_CASES = [
    ([2, 8], 8, {"grpo": [1 / 4, 1 / 16], "bnpo": [1 / 10] * 2, "dapo": [1 / 10] * 2,
                 "dr_grpo": [1 / 16] * 2, "seq_sum": [1 / 2] * 2}),
    ([3, 5, 8], 10, {"grpo": [1 / 9, 1 / 15, 1 / 24], "bnpo": [1 / 16] * 3, "dapo": [1 / 16] * 3,
                     "dr_grpo": [1 / 30] * 3, "seq_sum": [1 / 3] * 3}),
]


def check_token_weights(token_weights) -> None:
    """Exercise 2: token_weights(lengths list[int], loss_type str, max_len int) -> (N,) weights."""
    name = "token_weights"
    if _not_done(name, token_weights([2, 8], "grpo", 8)):
        return
    for lengths, max_len, table in TOKEN_WEIGHT_CASES:
        for loss_type, expected in table.items():
            got = torch.as_tensor(token_weights(list(lengths), loss_type, max_len), dtype=torch.float64)
            assert got.shape == (len(lengths),) and torch.allclose(got, _t(expected), rtol=0, atol=1e-12), (
                f"{name}({lengths}, {loss_type!r}, max_len={max_len}) returned {got.tolist()}, "
                f"expected {[round(e, 6) for e in expected]}")
    print(f"{name}: correct (grpo gives a token of a 2-token completion 4x the weight of one in an 8-token one)")


def _loss_cases():
    """Random batches with padding, old != ref, and advantages of both signs."""
    g = torch.Generator().manual_seed(5)
    for n, t_max, eps_low, eps_high, beta in ((4, 6, 0.2, 0.28, 0.04), (3, 5, 0.1, 0.3, 0.5), (5, 4, 0.2, 0.2, 0.0)):
        logp = -torch.rand(n, t_max, generator=g, dtype=torch.float64) * 3  # (N, T)
        old_logp = logp + torch.randn(n, t_max, generator=g, dtype=torch.float64) * 0.3  # (N, T) ratios spread
        ref_logp = logp + torch.randn(n, t_max, generator=g, dtype=torch.float64) * 0.5  # (N, T) != old
        adv = torch.randn(n, generator=g, dtype=torch.float64)  # (N,)
        lengths = torch.randint(1, t_max + 1, (n,), generator=g)  # (N,)
        mask = (torch.arange(t_max)[None, :] < lengths[:, None]).double()  # (N, T)
        yield logp, old_logp, ref_logp, adv, mask, eps_low, eps_high, beta


def check_full_grpo_loss(full_grpo_loss) -> None:
    """Exercise 3: the "grpo" loss with k3 to the reference, compared with minigrpo.grpo_loss."""
    name = "full_grpo_loss"
    cases = list(_loss_cases())
    if _not_done(name, full_grpo_loss(*(x.clone() if torch.is_tensor(x) else x for x in cases[0]))):
        return
    for logp, old, ref, adv, mask, eps_low, eps_high, beta in cases:
        expected, _ = grpo_loss(logp, old, adv, mask, eps_low=eps_low, eps_high=eps_high, beta=beta,
                                ref_logp=ref, kl_estimator="k3", loss_type="grpo")
        got = float(full_grpo_loss(logp.clone(), old.clone(), ref.clone(), adv.clone(), mask.clone(),
                                   eps_low, eps_high, beta))
        hint = ""
        if beta > 0:
            wrong_kl, _ = grpo_loss(logp, old, adv, mask, eps_low=eps_low, eps_high=eps_high, beta=beta,
                                    ref_logp=old, kl_estimator="k3", loss_type="grpo")
            if abs(got - wrong_kl.item()) < 1e-9:
                hint = " (your KL compares with old_logp: it must compare with the reference policy, ref_logp)"
        assert abs(got - expected.item()) < 1e-9, (
            f"{name} with eps_low={eps_low}, eps_high={eps_high}, beta={beta} returned {got:.7g}, "
            f"expected {expected.item():.7g}{hint}")
    print(f"{name}: correct (agrees with minigrpo.grpo_loss on {len(cases)} random batches with padding)")
