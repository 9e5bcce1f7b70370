"""Checkers for the exercises of lesson 11 (GRPO's mechanisms on long answers).

Each checker takes the reader's function, calls it on cases worked out by hand (from the papers' formulas) and on
random inputs against the engine, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. soft_overlong(lengths, max_len, cache)     DAPO's soft overlong punishment of each answer (§3.4, eq. 13)
    2. overlong_filter(completion_ids, completion_mask, eos_id)   DAPO's overlong filtering: the loss mask without
                                                   the answers cut off before their EOS (§3.3)
    3. warmup_stop(check_mse, check_every, patience, min_gain)   the step where section 6's critic warm-up stops
"""
from __future__ import annotations

import math
import random

import torch

from minigrpo.course.exercises import as_float64 as _as_float64
from minigrpo.course.exercises import not_done as _not_done
from minigrpo.loss import loss_mask
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
# Exercise 2: DAPO's overlong filtering
# ---------------------------------------------------------------------------

EOS, PAD = 2, 0
# (rows of completion ids, PAD after each answer's end, expected loss mask), by hand: a row whose real tokens hold
# no EOS was cut off at the limit, and DAPO §3.3 gives it no loss at all; the others keep their mask as it is.
FILTER_CASES = [
    ([[5, 6, EOS, PAD], [5, 6, 7, 8]], [[1, 1, 1, 0], [0, 0, 0, 0]]),          # the second ran to the limit
    ([[EOS, PAD, PAD], [7, EOS, PAD], [7, 7, EOS]], [[1, 0, 0], [1, 1, 0], [1, 1, 1]]),   # EOS last: not cut off
    ([[9, 9, 9], [9, 9, 9]], [[0, 0, 0], [0, 0, 0]]),                          # every answer cut off: no loss
]


def _filter_batch(rows):
    ids = torch.tensor(rows)                                                    # (N, T)
    ends = [(r.index(EOS) + 1) if EOS in r else len(r) for r in rows]
    mask = torch.tensor([[1] * n + [0] * (len(r) - n) for r, n in zip(rows, ends)])   # (N, T) the sampler's mask
    return ids, mask


def _random_filter_batch(rng: random.Random):
    """A batch as the sampler returns it: each row some tokens, then EOS and padding, or no EOS at all."""
    N, T = rng.randint(1, 8), rng.randint(1, 12)
    rows = []
    for _ in range(N):
        n = rng.randint(1, T)
        body = [rng.randint(3, 20) for _ in range(n)]
        if rng.random() < 0.5 or n < T:
            body[-1] = EOS                                                      # ended with EOS at position n
        rows.append(body + [PAD] * (T - n))
    return rows


def check_overlong_filter(overlong_filter) -> None:
    """Exercise 2: overlong_filter(completion_ids (N, T), completion_mask (N, T), eos_id) -> (N, T) loss mask."""
    name = "overlong_filter"
    ids, mask = _filter_batch(FILTER_CASES[0][0])
    if _not_done(name, overlong_filter(ids.clone(), mask.clone(), EOS)):
        return
    rng = random.Random(11)
    cases = [(rows, expected, "by hand") for rows, expected in FILTER_CASES]
    for _ in range(30):
        rows = _random_filter_batch(rng)
        ids, mask = _filter_batch(rows)
        truncated = ~(ids == EOS).any(-1)                                       # (N,) as the sampler marks it
        cases.append((rows, loss_mask(mask, truncated, True).tolist(), "against loss.loss_mask"))
    for rows, expected, where in cases:
        ids, mask = _filter_batch(rows)
        got = overlong_filter(ids.clone(), mask.clone(), EOS)
        got = _as_float64(got)
        assert tuple(got.shape) == tuple(ids.shape), (
            f"{name} returned shape {tuple(got.shape)} for completions of shape {tuple(ids.shape)}; expected the mask's")
        assert got.tolist() == [[float(x) for x in row] for row in expected], (
            f"{name}: completions {rows} (EOS = {EOS}, PAD = {PAD}) gave {got.tolist()}, expected {expected} ({where}: "
            f"a row with no EOS among its real tokens loses its whole mask, every other row keeps its own)")
    print(f"{name}: correct ({len(FILTER_CASES)} batches by hand, 30 random ones against the engine's loss mask)")


# ---------------------------------------------------------------------------
# Exercise 3: when the critic's warm-up stops
# ---------------------------------------------------------------------------

# (check errors from step 0 on, check_every, patience, min_gain, expected step), by hand: a check counts as better
# when it is below the best so far by more than min_gain (relative); `patience` checks in a row that are not stop
# the warm-up at the step of the last one; None if the list ends first.
STOP_CASES = [
    ([1.0, 0.5, 0.4, 0.398, 0.399, 0.397, 0.30], 10, 3, 0.01, 50),   # 0.398, 0.399, 0.397: none 1% below 0.4
    ([1.0, 0.5, 0.4, 0.398, 0.3, 0.31, 0.32, 0.33], 10, 3, 0.01, 70),  # 0.3 is better and starts the count again
    ([1.0, 0.9, 0.8, 0.7], 5, 2, 0.01, None),                          # always better: never stops
    ([0.5, 0.5, 0.5, 0.5], 2, 3, 0.01, 6),                             # never better than the first check
    ([0.5, 0.496, 0.4955, 0.4], 10, 2, 0.01, 20),                      # 0.496 is only 0.8% below 0.5: not better
]


def _reference_stop(checks, check_every, patience, min_gain):
    """values.warm_up_critic's rule, written out again for the random cases."""
    best, since = checks[0], 0
    for i, err in enumerate(checks[1:], start=1):
        if err < best * (1 - min_gain):
            best, since = err, 0
        else:
            since += 1
            if since >= patience:
                return i * check_every
    return None


def check_warmup_stop(warmup_stop, histories=()) -> None:
    """Exercise 3: warmup_stop(check_mse (list, step 0 first), check_every, patience, min_gain) -> step or None.
    `histories`: committed warm-ups ({"step", "check_mse"} rows), each of which stopped at its last row."""
    name = "warmup_stop"
    # None is a valid answer (the warm-up had not stopped yet), so the stub is the function that says None to
    # every hand case, several of which stop
    if all(warmup_stop(list(c), e, p, g) is None for c, e, p, g, _ in STOP_CASES):
        _not_done(name, None)
        return
    rng = random.Random(11)
    cases = [(c, e, p, g, want, "by hand") for c, e, p, g, want in STOP_CASES]
    for _ in range(30):
        checks = [rng.choice([1.0, 0.99, 0.9, 0.5]) * rng.random() for _ in range(rng.randint(1, 12))]
        e, p = rng.choice([1, 5, 10]), rng.randint(1, 4)
        cases.append((checks, e, p, 0.01, _reference_stop(checks, e, p, 0.01), "the warm-up's rule"))
    for h in histories:
        steps = [row["step"] for row in h]
        cases.append(([row["check_mse"] for row in h], steps[1] - steps[0], 3, 0.01, steps[-1],
                      "a committed warm-up of results/cpu_long_values"))
    for checks, every, patience, gain, want, where in cases:
        got = warmup_stop(list(checks), every, patience, gain)
        assert got == want, (
            f"{name}(check_mse={[round(c, 4) for c in checks]}, check_every={every}, patience={patience}, "
            f"min_gain={gain}) = {got}, expected {want} ({where}: better means below the best by more than min_gain, "
            f"relative; stop at the step of the patience-th check in a row that is not better)")
    print(f"{name}: correct ({len(STOP_CASES)} by hand, 30 random, {len(histories)} committed warm-ups stopped where "
          f"the rule says)")
