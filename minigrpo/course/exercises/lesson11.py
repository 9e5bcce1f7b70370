"""Checkers for the exercises of lesson 11 (GRPO's mechanisms on long answers).

Each checker takes the reader's function, calls it on cases worked out by hand (from the papers' formulas) and on
random inputs against the engine, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. soft_overlong(lengths, max_len, cache)     DAPO's soft overlong punishment of each answer (§3.4, eq. 13)
    2. token_weights(lengths, loss_type, max_len)  d loss / d (per-token value) of each completion's tokens
    3. group_baseline_error(p, v, G)               E|mean of G rewards - v|: the group baseline's error at a state
"""
from __future__ import annotations

import math
import random

import torch

from minigrpo.course.exercises import as_float64 as _as_float64
from minigrpo.course.exercises import not_done as _not_done
from minigrpo.course.values import group_mean_error
from minigrpo.loss import aggregate
from minigrpo.reward import soft_overlong_punishment

# ---------------------------------------------------------------------------
# Exercise 1: DAPO's soft overlong punishment
# ---------------------------------------------------------------------------

# (lengths, max_len, cache, expected), by hand from DAPO's eq. 13. Lengths count every token, EOS included.
# Section 4's setting: max_len 128, cache 16, so the ramp runs from 112 (no punishment) to 128 (-1).
OVERLONG_CASES = [
    ([1, 111, 112], 128, 16, [0.0, 0.0, 0.0]),                   # up to max_len - cache: no punishment
    ([113, 116, 120, 127], 128, 16, [-1 / 16, -4 / 16, -0.5, -15 / 16]),   # the ramp, 1/cache per token
    ([128, 129, 200], 128, 16, [-1.0, -1.0, -1.0]),              # at max_len -1 (EOS as the 128th token too); beyond
    ([6, 7, 8, 9, 10, 11], 10, 4, [0.0, -0.25, -0.5, -0.75, -1.0, -1.0]),
    ([1, 2, 5], 5, 4, [0.0, -0.25, -1.0]),                       # a cache of all but one token
]


def check_soft_overlong(soft_overlong) -> None:
    """Exercise 1: soft_overlong(lengths (list of N ints), max_len, cache) -> N rewards (list or tensor)."""
    name = "soft_overlong"
    if _not_done(name, soft_overlong([100, 120], 128, 16)):
        return
    rng = random.Random(11)
    randoms = []
    for _ in range(30):
        max_len = rng.randint(2, 200)
        cache = rng.randint(1, max_len - 1)
        randoms.append(([rng.randint(1, max_len + 5) for _ in range(8)], max_len, cache, None))
    for lengths, max_len, cache, expected in OVERLONG_CASES + randoms:
        where = "by hand" if expected is not None else "against reward.soft_overlong_punishment"
        if expected is None:
            expected = soft_overlong_punishment(lengths, max_len, cache)
        got = _as_float64(soft_overlong(list(lengths), max_len, cache)).reshape(-1)
        assert got.shape == (len(lengths),), (
            f"{name}({lengths}, {max_len}, {cache}) returned shape {tuple(got.shape)}, expected ({len(lengths)},)")
        for n, g, e in zip(lengths, got.tolist(), expected):
            assert math.isclose(g, e, rel_tol=1e-9, abs_tol=1e-12), (
                f"{name}: an answer of {n} tokens with max_len {max_len}, cache {cache} got {g:.6g}, expected "
                f"{e:.6g} ({where}: 0 up to {max_len - cache} tokens, then (max_len - cache - length) / cache, "
                f"-1 from {max_len} on)")
    print(f"{name}: correct (every boundary by hand, 30 random settings against the engine; with section 4's "
          f"max_len 128 and cache 16 an answer of 120 tokens loses 0.5)")


# ---------------------------------------------------------------------------
# Exercise 2: the weight of each token under each aggregation
# ---------------------------------------------------------------------------

# (lengths, max_len, {loss_type: expected weight of each completion's tokens}), by hand from the formulas:
# grpo 1/N sum_n (1/|o_n|) sum_t, DeepSeekMath eq. 3; dapo sum_n sum_t / sum_n |o_n|, DAPO eq. 12;
# dr_grpo sum_n sum_t / (N L), Dr. GRPO §3.1 as TRL implements it (L = max_completion_length).
WEIGHT_CASES = [
    ([2, 4], 8, {"grpo": [1 / 4, 1 / 8], "dapo": [1 / 6, 1 / 6], "dr_grpo": [1 / 16, 1 / 16]}),
    ([16, 152], 160, {"grpo": [1 / 32, 1 / 304], "dapo": [1 / 168, 1 / 168], "dr_grpo": [1 / 320, 1 / 320]}),
    ([5], 5, {"grpo": [1 / 5], "dapo": [1 / 5], "dr_grpo": [1 / 5]}),   # one full-length completion: all agree
    ([1, 1, 3, 5], 10, {"grpo": [1 / 4, 1 / 4, 1 / 12, 1 / 20], "dapo": [0.1] * 4, "dr_grpo": [1 / 40] * 4}),
]
LOSS_TYPES = ("grpo", "dapo", "dr_grpo")


def engine_weights(lengths: list[int], loss_type: str, max_len: int) -> list[float]:
    """The gradient of minigrpo.loss.aggregate at each completion's first token, on a (N, max_len) batch."""
    mask = torch.zeros(len(lengths), max_len, dtype=torch.float64)              # (N, T)
    for n, length in enumerate(lengths):
        mask[n, :length] = 1
    x = torch.zeros(len(lengths), max_len, dtype=torch.float64, requires_grad=True)   # (N, T)
    aggregate(x, mask, loss_type, max_completion_length=max_len).backward()
    return x.grad[:, 0].tolist()                                                # (N,) every real token alike


def check_token_weights(token_weights) -> None:
    """Exercise 2: token_weights(lengths (list of N ints), loss_type, max_len) -> (N,) weights."""
    name = "token_weights"
    if _not_done(name, token_weights([2, 4], "grpo", 8)):
        return
    rng = random.Random(11)
    randoms = []
    for _ in range(10):
        max_len = rng.randint(1, 160)
        lengths = [rng.randint(1, max_len) for _ in range(rng.randint(1, 8))]
        randoms.append((lengths, max_len, {t: engine_weights(lengths, t, max_len) for t in LOSS_TYPES}))
    for i, (lengths, max_len, expected) in enumerate(WEIGHT_CASES + randoms):
        where = "by hand" if i < len(WEIGHT_CASES) else "the gradient of loss.aggregate"
        for loss_type in LOSS_TYPES:
            got = _as_float64(token_weights(list(lengths), loss_type, max_len)).reshape(-1)
            assert got.shape == (len(lengths),), (
                f"{name}({lengths}, {loss_type!r}, {max_len}) returned shape {tuple(got.shape)}, "
                f"expected (N,) = ({len(lengths)},)")
            for length, g, e in zip(lengths, got.tolist(), expected[loss_type]):
                assert math.isclose(g, e, rel_tol=1e-9), (
                    f"{name}: {loss_type!r}, lengths {lengths}, max_len {max_len}: each token of the {length}-token "
                    f"completion got weight {g:.6g}, expected {e:.6g} ({where}; one token's weight, not the "
                    f"whole completion's)")
    print(f"{name}: correct (hand cases and 10 random batches against aggregate's gradient; under grpo each token "
          f"of a 152-token answer weighs 16/152 = 0.11 of one of a 16-token answer, under dapo and dr_grpo the same)")


# ---------------------------------------------------------------------------
# Exercise 3: how far the group baseline lies from a state's value
# ---------------------------------------------------------------------------

# (p, v, G, expected), by hand: m = K / G with K ~ Binomial(G, p); the error is E|m - v|.
BASELINE_CASES = [
    (0.3, 0.5, 1, 0.5),            # G = 1: p |1 - v| + (1 - p) |v| = 0.3 * 0.5 + 0.7 * 0.5
    (0.3, 0.2, 1, 0.38),           # 0.3 * 0.8 + 0.7 * 0.2
    (0.0, 0.25, 8, 0.25),          # p = 0: every reward is 0, m = 0
    (1.0, 0.9, 8, 0.1),            # p = 1: m = 1
    (0.7, 1.0, 8, 0.3),            # v = 1: m <= 1, so E|m - 1| = 1 - E m = 1 - p
    (0.7, 0.0, 5, 0.7),            # v = 0: E m = p
    (0.5, 0.5, 2, 0.25),           # m = 0, 1/2, 1 with prob. 1/4, 1/2, 1/4: (0.5 + 0 + 0.5) / 4
    (0.5, 0.25, 2, 0.375),         # (0.25 + 2 * 0.25 + 0.75) / 4
    (0.5, 0.5, 8, 35 / 256),       # 2 (1 * 4 + 8 * 3 + 28 * 2 + 56 * 1) / 8 / 256
]


def de_moivre(p: float, G: int) -> float:
    """E|K/G - p| for K ~ Binomial(G, p) in closed form (De Moivre): 2 m C(G, m) p^m (1-p)^(G-m+1) / G,
    m = floor(G p) + 1; an independent check of the binomial sum at v = p (the prompt, t = 0)."""
    m = math.floor(G * p) + 1
    return 0.0 if m > G else 2 * m * math.comb(G, m) * p**m * (1 - p) ** (G - m + 1) / G


def check_group_baseline_error(group_baseline_error) -> None:
    """Exercise 3: group_baseline_error(p, v, G) -> E|mean of G rewards, each 1 with probability p - v|."""
    name = "group_baseline_error"
    if _not_done(name, group_baseline_error(0.5, 0.5, 8)):
        return
    rng = random.Random(11)
    at_prompt = [(p, p, G, de_moivre(p, G)) for p, G in ((rng.random(), rng.randint(1, 64)) for _ in range(10))]
    anywhere = [(p, v, G, group_mean_error(p, v, G))
                for p, v, G in ((rng.random(), rng.random(), rng.randint(1, 32)) for _ in range(20))]
    for i, (p, v, G, expected) in enumerate(BASELINE_CASES + at_prompt + anywhere):
        where = ("by hand" if i < len(BASELINE_CASES) else "De Moivre's closed form" if i < len(BASELINE_CASES) + 10
                 else "values.group_mean_error")
        got = float(group_baseline_error(p, v, G))
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12), (
            f"{name}(p={p:.4g}, v={v:.4g}, G={G}) = {got:.6g}, expected {expected:.6g} ({where}; the mean of "
            f"G rewards is k/G with binomial probability C(G, k) p^k (1-p)^(G-k))")
    print(f"{name}: correct (hand cases, 10 against De Moivre's formula, 20 against the engine; at the prompt, "
          f"p = v = 0.5, a group of 8 misses V(s_0) by {35 / 256:.3f} on average, and a state whose answer is "
          f"settled (v = 0 or 1) by p or 1 - p)")
