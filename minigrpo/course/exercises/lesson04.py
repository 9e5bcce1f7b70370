"""Checkers for the exercises of lesson 04 (KL estimators, loss aggregation, the full objective).

Each checker takes the reader's function, calls it on cases worked out by
hand (or on random inputs compared with the engine), and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. kl_push(logp, ref_logp, mask, beta, estimator, loss_type)   d(beta * KL term of the loss) / d logp, no autograd
    2. sequence_kl(p_first, p_next, q_first, q_next)              exact KL of two distributions over 2-token completions
    3. offpolicy_k3(logp, old_logp, ref_logp)                     a k3 estimate for tokens sampled from pi_old
"""
from __future__ import annotations

import math

import torch

from minigrpo.course.exercises import not_done as _not_done
from minigrpo.loss import aggregate, kl_estimate


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _f64(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(torch.float64)


# ----------------------------------------------------------------- exercise 1

# One completion of 2 tokens, beta = 0.5, log rho = ref - logp = (0, 1), "grpo" weight 1/(N |o|) = 1/2:
#   k3: d k3 / d logp = 1 - rho = (0, 1 - e)      -> 0.5 * 0.5 * (0, 1 - e) = (0, -0.4295705)
#   k2: d k2 / d logp = -log rho = (0, -1)        -> (0, -0.25)
#   k1: d k1 / d logp = 1                         -> (0.25, 0.25)
KL_PUSH_HAND = [("k3", [[0.0, 0.25 * (1 - math.e)]]), ("k2", [[0.0, -0.25]]), ("k1", [[0.25, 0.25]])]


def _kl_push_cases():
    """Random padded batches; the expected gradient is autograd through minigrpo's kl_estimate and aggregate."""
    g = torch.Generator().manual_seed(41)
    for n, t_max, beta in ((4, 6, 0.04), (3, 5, 0.5)):
        logp = -3 * torch.rand(n, t_max, generator=g, dtype=torch.float64)  # (N, T)
        ref = logp + 0.7 * torch.randn(n, t_max, generator=g, dtype=torch.float64)  # (N, T)
        lengths = torch.randint(1, t_max + 1, (n,), generator=g)  # (N,)
        lengths[0] = t_max  # (N,) one full row, so dr_grpo's L = T is not a row's length by chance only
        mask = (torch.arange(t_max)[None, :] < lengths[:, None]).double()  # (N, T)
        for estimator in ("k1", "k2", "k3"):
            for loss_type in ("grpo", "bnpo", "dr_grpo", "seq_sum"):
                x = logp.clone().requires_grad_(True)  # (N, T)
                (beta * aggregate(kl_estimate(x, ref, estimator), mask, loss_type)).backward()
                yield logp, ref, mask, beta, estimator, loss_type, x.grad  # x.grad (N, T)


def check_kl_push(kl_push) -> None:
    """Exercise 1: kl_push(logp (N, T), ref_logp (N, T), mask (N, T), beta, estimator, loss_type) -> (N, T)."""
    name = "kl_push"
    logp, ref, mask = _t([[-1.0, -2.0]]), _t([[-1.0, -1.0]]), _t([[1.0, 1.0]])
    if _not_done(name, kl_push(logp.clone(), ref.clone(), mask.clone(), 0.5, "k3", "grpo")):
        return
    for estimator, expected in KL_PUSH_HAND:
        got = _f64(kl_push(logp.clone(), ref.clone(), mask.clone(), 0.5, estimator, "grpo"))
        sign = " (the sign is flipped)" if got.shape == (1, 2) and torch.allclose(-got, _t(expected), atol=1e-9) \
            and estimator != "k1" else ""
        assert got.shape == (1, 2) and torch.allclose(got, _t(expected), rtol=0, atol=1e-9), (
            f"{name} on the hand case (logp = [-1, -2], ref_logp = [-1, -1], beta = 0.5, {estimator!r}, 'grpo') "
            f"returned {got.tolist()}, expected {expected}{sign}")
    for logp, ref, mask, beta, estimator, loss_type, expected in _kl_push_cases():
        got = _f64(kl_push(logp.clone(), ref.clone(), mask.clone(), beta, estimator, loss_type))
        sign = " (the sign is flipped)" if torch.allclose(got, -expected, atol=1e-9) else ""
        pad = " (padding tokens must get 0)" if got.shape == expected.shape and \
            (got * (1 - mask)).abs().max() > 1e-12 else ""
        assert got.shape == expected.shape and torch.allclose(got, expected, rtol=0, atol=1e-9), (
            f"{name} with beta={beta}, {estimator!r}, {loss_type!r} on a random padded batch differs from autograd "
            f"through minigrpo.loss (max diff {(got - expected).abs().max().item() if got.shape == expected.shape else 'shape'})"
            f"{sign}{pad}")
    print(f"{name}: correct (3 hand cases; k1, k2, k3 x 4 aggregations agree with autograd on random batches)")


# ----------------------------------------------------------------- exercise 2

# Two tokens a, b with P(a, b) = p_first[a] p_next[a, b]. By the chain rule,
# KL = KL(p_first || q_first) + sum_a p_first[a] KL(p_next[a] || q_next[a]):
#   first tokens equal, row 0 [.5, .5] vs [.9, .1] (KL 0.5 ln(25/9) = 0.5108256), row 1 equal:
#     p_first = [.5, .5]: 0.5 * 0.5108256 = 0.2554128;  p_first = q_first = [.8, .2]: 0.8 * 0.5108256 = 0.4086605
#   p = q: 0
_ROW_KL = 0.5 * math.log(25 / 9)
SEQUENCE_KL_HAND = [
    ([0.5, 0.5], [[0.5, 0.5], [0.9, 0.1]], [0.5, 0.5], [[0.9, 0.1], [0.9, 0.1]], 0.5 * _ROW_KL),
    ([0.8, 0.2], [[0.5, 0.5], [0.9, 0.1]], [0.8, 0.2], [[0.9, 0.1], [0.9, 0.1]], 0.8 * _ROW_KL),
    ([0.3, 0.7], [[0.2, 0.8], [0.6, 0.4]], [0.3, 0.7], [[0.2, 0.8], [0.6, 0.4]], 0.0),
]


def _joint_kl(p_first, p_next, q_first, q_next) -> float:
    """KL of the two joint distributions over the V^2 completions, by torch.distributions."""
    p = torch.distributions.Categorical(probs=(p_first[:, None] * p_next).reshape(-1))  # V^2 outcomes
    q = torch.distributions.Categorical(probs=(q_first[:, None] * q_next).reshape(-1))
    return float(torch.distributions.kl_divergence(p, q))


def check_sequence_kl(sequence_kl) -> None:
    """Exercise 2: sequence_kl(p_first (V,), p_next (V, V), q_first (V,), q_next (V, V)) -> float."""
    name = "sequence_kl"
    case = SEQUENCE_KL_HAND[0]
    if _not_done(name, sequence_kl(*(_t(x) for x in case[:4]))):
        return
    for *args, expected in SEQUENCE_KL_HAND:
        got = float(sequence_kl(*(_t(x) for x in args)))
        hint = " (that is KL(q || p): the expectation is over p, the sampling policy)" \
            if expected > 0 and abs(got - _joint_kl(*(_t(x) for x in args[2:] + args[:2]))) < 1e-9 else ""
        assert abs(got - expected) < 1e-9, f"{name}{tuple(args)} returned {got:.7g}, expected {expected:.7g}{hint}"
    g = torch.Generator().manual_seed(42)
    for v in (3, 4, 5):
        tables = [torch.softmax(2 * torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)
                  for shape in ((v,), (v, v), (v,), (v, v))]  # p_first (V,), p_next (V, V), q_first, q_next
        expected = _joint_kl(*tables)
        got = float(sequence_kl(*(x.clone() for x in tables)))
        hint = " (that is KL(q || p): the expectation is over p, the sampling policy)" \
            if abs(got - _joint_kl(*tables[2:], *tables[:2])) < 1e-9 else ""
        assert abs(got - expected) < 1e-9, (
            f"{name} on a random pair with V = {v} returned {got:.7g}, expected {expected:.7g} "
            f"(the KL of the two distributions over the V^2 completions){hint}")
    print(f"{name}: correct (3 hand cases and 3 random pairs, against torch.distributions on the V^2 completions)")


# ----------------------------------------------------------------- exercise 3


def _offpolicy_cases():
    """(pi_theta, pi_old, pi_ref) over a small vocabulary: theta != old != ref."""
    g = torch.Generator().manual_seed(43)
    for v, scale in ((4, 1.0), (6, 2.0), (8, 3.0)):
        yield tuple(torch.softmax(scale * torch.randn(v, generator=g, dtype=torch.float64), dim=0) for _ in range(3))


def check_offpolicy_k3(offpolicy_k3) -> None:
    """Exercise 3: offpolicy_k3(logp, old_logp, ref_logp), each (N, T) -> (N, T); unbiased under pi_old, >= 0."""
    name = "offpolicy_k3"
    p, old, ref = next(_offpolicy_cases())
    if _not_done(name, offpolicy_k3(p.log()[None], old.log()[None], ref.log()[None])):
        return
    # Hand case: pi_old = pi_theta, so the weight is 1 and the estimate is k3 itself:
    #   log rho = 0.5, -1.0: k3 = e^0.5 - 1.5 = 0.1487213, e^-1 = 0.3678794
    got = _f64(offpolicy_k3(_t([[-1.0, -0.5]]), _t([[-1.0, -0.5]]), _t([[-0.5, -1.5]])))
    expected = _t([[math.exp(0.5) - 1.5, math.exp(-1.0)]])
    assert got.shape == (1, 2) and torch.allclose(got, expected, atol=1e-9), (
        f"{name} with old_logp = logp (on-policy) returned {got.tolist()}, expected k3 = {expected.tolist()}"
        + (" (a negative estimate: k3 is never negative)" if got.numel() and got.min() < 0 else ""))
    for p, old, ref in _offpolicy_cases():
        kl = float((p * (p.log() - ref.log())).sum())  # () exact KL(pi_theta || pi_ref)
        values = _f64(offpolicy_k3(p.log()[None], old.log()[None], ref.log()[None]))[0]  # (V,) one per token
        mean = float((old * values).sum())  # () E over tokens sampled from pi_old
        plain = float((old * kl_estimate(p.log(), ref.log(), "k3")).sum())
        hint = " (that is plain k3: tokens drawn from pi_old need a weight)" if abs(mean - plain) < 1e-9 else ""
        assert abs(mean - kl) < 1e-9, (
            f"{name}: its mean over tokens sampled from pi_old is {mean:.7g}, not KL(pi_theta || pi_ref) = "
            f"{kl:.7g}, on a vocabulary of {len(p)}{hint}")
        assert values.min() >= -1e-12, f"{name} gave a negative estimate {values.min().item():.4g}: k3's is never"
        engine = kl_estimate(p.log(), ref.log(), "k3") * torch.exp(p.log() - old.log())  # (V,) use_bias_correction_kl
        assert torch.allclose(values, engine, atol=1e-9), f"{name} differs from the engine's weighted k3"
    print(f"{name}: correct (unbiased under pi_old on 3 vocabularies, never negative, "
          "as grpo_loss(use_bias_correction_kl=True))")
