"""Checkers for the exercises of lesson 03 (decoupled clipping, course section 3 item 2).

Each checker takes the reader's function, calls it on cases worked out by
hand and on random inputs, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. logit_grad(logits, actions, old_logp, adv, eps_low, eps_high)   d objective / d logits, without autograd
    2. steps_to_clip(p_old, eps_high, eta)                              how many steps push a token before the clip acts
    3. dual_clip_surrogate(ratio, adv, eps_low, eps_high, c)            dual-clip PPO (Ye et al., 2020, eq. 5)
"""
from __future__ import annotations

import math

import torch

from minigrpo.course.exercises import as_float64 as _f64
from minigrpo.course.exercises import not_done as _not_done
from minigrpo.logprobs import selective_log_softmax
from minigrpo.loss import clipped_surrogate


def _close(got, expected, atol: float = 1e-9) -> bool:
    try:
        got, expected = _f64(got), _f64(expected)
    except (TypeError, ValueError, RuntimeError):  # None, or not a number
        return False
    return got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=0.0, atol=atol))


def _diff(got, expected) -> str:
    """How far `got` is from `expected`, in words."""
    try:
        got = _f64(got)
    except (TypeError, ValueError, RuntimeError):
        return f"returned {got!r}, not a tensor"
    if got.shape != expected.shape:
        return f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    return f"max diff {(got - expected).abs().max().item():.3g}"


def _call(name: str, f, *args):
    """f(*args), with an exception turned into an AssertionError that names the exercise."""
    try:
        return f(*args)
    except Exception as e:  # noqa: BLE001 - any error of the reader's code is a wrong answer
        raise AssertionError(f"{name} raised {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------------------
# Exercise 1: the gradient on the logits
# ---------------------------------------------------------------------------

def _hand_logit_case():
    """Two completions (N = 2) of the same 5 tokens over a 2-token vocabulary, eps_low = 0.2, eps_high = 0.28.

    pi = softmax(logits); the objective's gradient on the logits of a position is r A (onehot(a) - pi),
    or 0 where the clip has switched the token off:
      t0: pi = (.5, .5),   a = 0, old .5  -> r = 1,   A = +1: 1 * ((1, 0) - (.5, .5))    = (.5, -.5)
      t1: pi = (.5, .5),   a = 0, old .25 -> r = 2 > 1.28, A = +1: clipped                = (0, 0)
      t2: pi = (.75, .25), a = 1, old .25 -> r = 1,   A = +1: (0, 1) - (.75, .25)         = (-.75, .75)
      t3: pi = (.75, .25), a = 1, old .5  -> r = .5 < .8, A = +1: not clipped (fell), .5 * (-.75, .75)
      t4: pi = (.75, .25), a = 0, old .5  -> r = 1.5, A = +1: clipped                     = (0, 0)
    and the same tokens with A = -1 (a second row): t0 (-.5, .5); t1 r = 2 is not clipped for A < 0:
    -2 * (.5, -.5) = (-1, 1); t2 (.75, -.75); t3 r = .5 < .8: clipped, (0, 0); t4 r = 1.5: -1.5 * (.25, -.25).
    """
    row = [[0.0, 0.0], [0.0, 0.0], [math.log(3.0), 0.0], [math.log(3.0), 0.0], [math.log(3.0), 0.0]]
    logits = torch.tensor([row, row], dtype=torch.float64)  # (2, 5, 2)
    actions = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 1, 0]])  # (2, 5)
    old = [math.log(0.5), math.log(0.25), math.log(0.25), math.log(0.5), math.log(0.5)]
    old_logp = torch.tensor([old, old], dtype=torch.float64)  # (2, 5)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)  # (2,)
    expected = torch.tensor([[[0.5, -0.5], [0.0, 0.0], [-0.75, 0.75], [-0.375, 0.375], [0.0, 0.0]],
                             [[-0.5, 0.5], [-1.0, 1.0], [0.75, -0.75], [0.0, 0.0], [-0.375, 0.375]]],
                            dtype=torch.float64)  # (2, 5, 2)
    return logits, actions, old_logp, adv, 0.2, 0.28, expected


def logit_grad_reference(logits, actions, old_logp, adv, eps_low, eps_high) -> torch.Tensor:
    """d/d logits of sum_{n,t} clipped_surrogate(r_nt, A_n), by autograd through the engine's functions."""
    z = logits.detach().clone().requires_grad_(True)  # (N, T, V)
    ratio = torch.exp(selective_log_softmax(z, actions) - old_logp)  # (N, T)
    (grad,) = torch.autograd.grad(clipped_surrogate(ratio, adv[:, None], eps_low, eps_high).sum(), z)
    return grad  # (N, T, V)


def _random_logit_cases():
    """Random logits; old log-probs drawn so that ratios fall on both sides of the band (never on a kink)."""
    g = torch.Generator().manual_seed(3)
    for (N, T, V), (eps_low, eps_high) in (((4, 6, 5), (0.2, 0.28)), ((3, 7, 11), (0.1, 0.5)),
                                           ((5, 4, 3), (0.3, 0.2))):
        logits = 2.0 * torch.randn(N, T, V, generator=g, dtype=torch.float64)  # (N, T, V)
        actions = torch.randint(0, V, (N, T), generator=g)  # (N, T)
        logp = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1)  # (N, T)
        log_r = 1.2 * (torch.rand(N, T, generator=g, dtype=torch.float64) - 0.5)  # (N, T) r in [0.55, 1.82]
        for bound in (1 - eps_low, 1 + eps_high):
            log_r = torch.where((log_r.exp() - bound).abs() < 1e-6, log_r + 1e-3, log_r)
        adv = torch.randn(N, generator=g, dtype=torch.float64)  # (N,)
        yield logits, actions, logp - log_r, adv, eps_low, eps_high


def check_logit_grad(logit_grad) -> None:
    """Exercise 1: logit_grad(logits (N,T,V), actions (N,T), old_logp (N,T), adv (N,), eps_low, eps_high) -> (N,T,V)."""
    name = "logit_grad"
    *args, expected = _hand_logit_case()
    got = _call(name, logit_grad, *(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
    if _not_done(name, got):
        return
    assert _close(got, expected), (
        f"{name} on the hand case (pi = (.5, .5) or (.75, .25), A = +1 in row 0 and -1 in row 1, eps 0.2 / 0.28) "
        f"{_diff(got, expected)}, expected {expected.tolist()} (r A (onehot(a) - pi) where the token is not "
        f"clipped, 0 where it is)")
    for logits, actions, old_logp, adv, eps_low, eps_high in _random_logit_cases():
        expected = logit_grad_reference(logits, actions, old_logp, adv, eps_low, eps_high)
        got = _call(name, logit_grad, logits.clone(), actions.clone(), old_logp.clone(), adv.clone(),
                    eps_low, eps_high)
        assert _close(got, expected), (
            f"{name} on random logits {tuple(logits.shape)}, eps_low={eps_low}, eps_high={eps_high}: "
            f"{_diff(got, expected)} from autograd through minigrpo's selective_log_softmax and clipped_surrogate")
    print(f"{name}: correct (the hand case and 3 random batches agree with autograd through the engine; "
          f"a clipped token's whole row is 0)")


# ---------------------------------------------------------------------------
# Exercise 2: how many steps push a token before the clip switches it off
# ---------------------------------------------------------------------------

# (p_old, eps_high, eta, k), by hand. After k steps p_k = p e^{k eta} / (1 - p + p e^{k eta}), so
# r_k = p_k / p > 1 + eps  <=>  k eta > log((1 + eps)(1 - p) / (1 - p (1 + eps))), possible only if p (1 + eps) < 1.
STEPS_CASES = [
    (0.01, 0.28, 0.05, 5),          # log(1.28 * .99 / .9872) / .05 = 4.99: about log(1.28) / eta for a rare token
    (0.01, 0.2, 0.05, 4),           # 3.69
    (0.5, 0.28, 0.1, 6),            # log(.64 / .36) / .1 = 5.75, not log(1.28) / .1 = 2.47: the softmax saturates
    (0.5, 0.2, 0.1, 5),             # log(.6 / .4) / .1 = 4.05
    (0.7, 0.28, 0.1, 14),           # log(.384 / .104) / .1 = 13.06
    (0.8, 0.2, 0.1, 18),            # log(.24 / .04) / .1 = 17.92
    (0.5, 0.2, 1.0, 1),             # one large step jumps over the band
    (0.8, 0.28, 0.1, math.inf),     # 0.8 x 1.28 > 1: the ratio tends to 1/0.8 = 1.25 < 1.28
    (0.9, 0.2, 0.1, math.inf),      # the note's token: r never exceeds 1/0.9 = 1.11 < 1.2
    (1.0, 0.2, 0.1, math.inf),      # probability 1 already: r stays 1
]


def _simulated_steps(p_old: float, eps_high: float, eta: float, vocab_size: int = 5, limit: int = 10_000) -> float:
    """Count steps by running them: a softmax over `vocab_size` tokens whose first logit rises by eta per step."""
    rest = (1.0 - p_old) / (vocab_size - 1)
    logit_rest = math.log(rest) if rest > 0 else -math.inf
    logits = torch.tensor([math.log(p_old)] + [logit_rest] * (vocab_size - 1), dtype=torch.float64)  # (V,)
    for k in range(1, limit + 1):
        logits[0] += eta
        if torch.softmax(logits, 0)[0].item() / p_old > 1 + eps_high:
            return k
    return math.inf


def _random_steps_cases():
    """Random (p_old, eps_high, eta, k) with k found by simulation, kept away from the boundary k eta = x."""
    g = torch.Generator().manual_seed(5)
    cases = []
    while len(cases) < 12:
        p_old = float(10 ** (-3 * torch.rand(1, generator=g, dtype=torch.float64)))  # 0.001 .. 1
        eps_high = (0.1, 0.2, 0.28, 0.5)[int(torch.randint(0, 4, (1,), generator=g))]
        eta = 0.02 + 0.4 * float(torch.rand(1, generator=g, dtype=torch.float64))
        if p_old * (1 + eps_high) > 0.97:
            continue  # many steps or never: the hand cases cover it
        x = math.log((1 + eps_high) * (1 - p_old) / (1 - p_old * (1 + eps_high))) / eta
        if abs(x - round(x)) < 1e-6:
            continue
        cases.append((p_old, eps_high, eta, _simulated_steps(p_old, eps_high, eta)))
    return cases


def check_steps_to_clip(steps_to_clip) -> None:
    """Exercise 2: steps_to_clip(p_old, eps_high, eta) -> int (or math.inf): the steps that push a token with A > 0."""
    name = "steps_to_clip"
    if _not_done(name, _call(name, steps_to_clip, 0.5, 0.28, 0.1)):
        return
    for p_old, eps_high, eta, expected in STEPS_CASES + _random_steps_cases():
        got = _call(name, steps_to_clip, p_old, eps_high, eta)
        ok = got is not None and (got == expected if math.isinf(expected) else
                                  not math.isinf(got) and float(got) == expected)
        if math.isinf(expected):
            why = f"{p_old:.6g} x (1 + {eps_high}) >= 1: can p_k / p_old ever exceed 1 + eps_high?"
        else:
            why = ("the first k with r_k = p_k / p_old > 1 + eps_high, p_k the token's softmax probability after k "
                   "steps: it saturates below 1")
        assert ok, (f"{name}({p_old:.6g}, eps_high={eps_high}, eta={eta:.6g}) returned {got!r}, expected {expected} "
                    f"({why})")
    print(f"{name}: correct ({len(STEPS_CASES)} hand cases, 12 simulated; with eps_high = 0.28 and eta = 0.1 a token "
          f"at 0.5 is pushed 6 times, one at 0.8 is never clipped)")


# ---------------------------------------------------------------------------
# Exercise 3: dual-clip PPO
# ---------------------------------------------------------------------------

# (r, A, c, objective, d objective / d r), by hand with eps_low = 0.2, eps_high = 0.28.
# For A < 0: max(min(r A, clip(r) A), c A); for A >= 0 the clipped objective unchanged.
DUAL_CLIP_CASES = [
    (5.0, -1.0, 3.0, -3.0, 0.0),     # min(-5, -1.28) = -5, raised to c A = -3: no gradient
    (2.0, -1.0, 3.0, -2.0, -1.0),    # below c: r A, gradient A
    (5.0, -2.0, 3.0, -6.0, 0.0),     # c A = -6 > -10
    (0.5, -1.0, 3.0, -0.8, 0.0),     # the lower clip, as before
    (1.0, -1.0, 3.0, -1.0, -1.0),    # inside the band
    (5.0, 1.0, 3.0, 1.28, 0.0),      # A > 0: the upper clip, as before; c plays no part
    (0.5, 1.0, 3.0, 0.5, 1.0),       # A > 0, fallen: not clipped, and not raised to c A = 3
    (1.6, -1.0, 1.5, -1.5, 0.0),     # c = 1.5: capped
    (1.4, -1.0, 1.5, -1.4, -1.0),    # c = 1.5: not yet
    (5.0, 0.0, 3.0, 0.0, 0.0),       # A = 0: nothing
]


def _random_dual_cases():
    """Random ratios in [0, 6) (kinks avoided) and advantages of both signs; c > 1 + eps_high."""
    g = torch.Generator().manual_seed(7)
    for eps_low, eps_high, c in ((0.2, 0.28, 3.0), (0.1, 0.5, 2.0), (0.3, 0.2, 1.5)):
        ratio = 6.0 * torch.rand(6, 10, generator=g, dtype=torch.float64)  # (6, 10)
        for kink in (1 - eps_low, 1 + eps_high, c):
            ratio = torch.where((ratio - kink).abs() < 1e-6, ratio + 1e-3, ratio)
        adv = torch.tensor([[1.5], [-0.5], [0.7], [-1.2], [0.0], [-2.0]], dtype=torch.float64)  # (6, 1)
        yield ratio, adv, eps_low, eps_high, c


def _value_and_grad(f, ratio, adv, eps_low, eps_high, c, name):
    r = _f64(ratio).clone().requires_grad_(True)  # (N, T)
    out = _call(name, f, r, _f64(adv).clone(), eps_low, eps_high, c)
    if out is None:
        return None, None
    assert isinstance(out, torch.Tensor) and out.requires_grad, (
        f"{name} returned {type(out).__name__} without a gradient: the objective must stay differentiable in "
        f"the ratio (torch operations only, no .item(), no numpy)")
    (grad,) = torch.autograd.grad(out.sum(), r)
    return out.detach(), grad


def check_dual_clip_surrogate(dual_clip_surrogate) -> None:
    """Exercise 3: dual_clip_surrogate(ratio (N,T), adv (N,1), eps_low, eps_high, c) -> (N,T), value and gradient."""
    name = "dual_clip_surrogate"
    r0, a0, c0 = DUAL_CLIP_CASES[0][:3]
    value, _ = _value_and_grad(dual_clip_surrogate, [[r0]], [[a0]], 0.2, 0.28, c0, name)
    if _not_done(name, value):
        return
    for r, a, c, expected, slope in DUAL_CLIP_CASES:
        value, grad = _value_and_grad(dual_clip_surrogate, [[r]], [[a]], 0.2, 0.28, c, name)
        assert _close(value, [[expected]]), (
            f"{name}(r={r}, A={a}, c={c}, eps 0.2 / 0.28) {_diff(value, torch.tensor([[expected]]))}, "
            f"expected [[{expected}]] "
            f"(for A < 0: max(min(r A, clip(r) A), c A); for A >= 0 the clipped objective)")
        assert _close(grad, [[slope]]), (
            f"{name}(r={r}, A={a}, c={c}): d objective / d r = {grad.tolist()}, expected [[{slope}]]")
    for ratio, adv, eps_low, eps_high, c in _random_dual_cases():
        value, grad = _value_and_grad(dual_clip_surrogate, ratio, adv, eps_low, eps_high, c, name)
        ref_value, ref_grad = _value_and_grad(lambda r, a, lo, hi, d: clipped_surrogate(r, a, lo, hi, delta=d),
                                              ratio, adv, eps_low, eps_high, c, "clipped_surrogate")
        assert _close(value, ref_value) and _close(grad, ref_grad), (
            f"{name} on random ratios with eps_low={eps_low}, eps_high={eps_high}, c={c} differs from "
            f"minigrpo.loss.clipped_surrogate(..., delta=c) in value or gradient")
    print(f"{name}: correct ({len(DUAL_CLIP_CASES)} hand cases, and on 3 random batches the same value and gradient "
          f"as the engine's two-sided clipping, clipped_surrogate(..., delta=c))")
