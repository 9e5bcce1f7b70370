"""Checkers for the exercises of lesson 01 (the limits of PPO, course section 1).

Each checker takes the reader's function, calls it on cases worked out by
hand (in the comments below), and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct (...)" when every case passes.

    1. min_updates(p_old, p_target, eps)    how many clipped updates a rare token needs to rise
    2. td_advantages(values, reward)        per-token TD errors when the reward comes only at the end
    3. tabular_values(tokens, rewards)      the Monte-Carlo value table of a critic that memorises states
"""
from __future__ import annotations

import torch

from minigrpo.course.exercises import as_float64 as _as_float64, not_done as _not_done


# ------------------------------------------------------------ 1. min_updates

# (p_old, p_target, eps, fewest updates n with p_old * (1+eps)^n >= p_target), by hand:
#   1.2^21 = 46.01 < 50 <= 1.2^22 = 55.21            -> 0.01 to 0.5 with eps 0.2 takes 22
#   1.28^15 = 40.58 < 50 <= 1.28^16 = 51.92          -> with DAPO's eps_high 0.28, 16
#   1.2^37 = 850.1 < 900 <= 1.2^38 = 1020.1          -> 0.001 to 0.9 takes 38
#   1.2^6 = 2.986 < 3 <= 1.2^7 = 3.583               -> 0.3 to 0.9 takes 7
#   0.9 * 1.2 = 1.08 >= 0.99                          -> one update (the cap at 1 is not the issue)
#   p_target <= p_old                                 -> no update needed
MIN_UPDATES_CASES = [
    (0.01, 0.5, 0.2, 22),
    (0.01, 0.5, 0.28, 16),
    (0.001, 0.9, 0.2, 38),
    (0.3, 0.9, 0.2, 7),
    (0.9, 0.99, 0.2, 1),
    (0.5, 0.5, 0.2, 0),
    (0.4, 0.1, 0.2, 0),
]


def check_min_updates(min_updates) -> None:
    """Exercise 1: min_updates(p_old, p_target, eps) -> int, the fewest clipped updates to reach p_target."""
    name = "min_updates"
    if _not_done(name, min_updates(0.01, 0.5, 0.2)):
        return
    for p_old, p_target, eps, expected in MIN_UPDATES_CASES:
        got = min_updates(p_old, p_target, eps)
        assert got is not None and float(got) == int(float(got)), \
            f"{name}({p_old}, {p_target}, eps={eps}) returned {got!r}: a whole number of updates was expected"
        got = int(float(got))
        hint = ""
        if got == expected - 1:
            hint = f": after {got} updates the token is at {p_old * (1 + eps) ** got:.4g}, still below {p_target}"
        elif got == expected + 1:
            hint = f": {expected} updates already reach {min(1.0, p_old * (1 + eps) ** expected):.4g}"
        assert got == expected, f"{name}({p_old}, {p_target}, eps={eps}) returned {got}, expected {expected}{hint}"
    print(f"{name}: correct ({len(MIN_UPDATES_CASES)} cases; a token at 0.01 needs 22 updates to reach 0.5 "
          f"with eps = 0.2, one at 0.3 needs 7 to reach 0.9)")


# ---------------------------------------------------------- 2. td_advantages

# (values V(s_0..s_{T-1}), final reward R, TD errors delta_t = V(s_{t+1}) - V(s_t) with V(s_T) = R), by hand:
#   [0.5, 0.6, 0.4], R = 1    -> [0.6-0.5, 0.4-0.6, 1-0.4]          = [0.1, -0.2, 0.6]
#   [0.4, 0.45, 0.3, 0.2], 0  -> [0.05, -0.15, -0.1, -0.2]
#   [0.7], R = 1              -> [0.3]
TD_CASES = [
    ([0.5, 0.6, 0.4], 1.0, [0.1, -0.2, 0.6]),
    ([0.4, 0.45, 0.3, 0.2], 0.0, [0.05, -0.15, -0.1, -0.2]),
    ([0.7], 1.0, [0.3]),
]


def check_td_advantages(td_advantages) -> None:
    """Exercise 2: td_advantages(values (T,), reward float) -> (T,) tensor of TD errors."""
    name = "td_advantages"
    values, reward, _ = TD_CASES[0]
    if _not_done(name, td_advantages(torch.tensor(values, dtype=torch.float64), reward)):
        return
    g = torch.Generator().manual_seed(1)
    cases = list(TD_CASES)
    for T in (5, 12):  # random critics: delta_t = next - this, the last "next" being the reward
        v = torch.rand(T, generator=g, dtype=torch.float64)  # (T,)
        r = float(torch.randint(0, 2, (1,), generator=g))
        cases.append((v.tolist(), r, (torch.cat([v[1:], torch.tensor([r], dtype=torch.float64)]) - v).tolist()))
    for values, reward, expected in cases:
        v = torch.tensor(values, dtype=torch.float64)  # (T,)
        got = _as_float64(td_advantages(v.clone(), reward))
        exp = torch.tensor(expected, dtype=torch.float64)  # (T,)
        assert got.shape == exp.shape, \
            f"{name}: for T = {len(values)} values the result has shape {tuple(got.shape)}, expected ({len(values)},)"
        assert torch.allclose(got, exp, rtol=0.0, atol=1e-9), (
            f"{name}({[round(x, 4) for x in values]}, reward={reward}) returned {[round(x, 4) for x in got.tolist()]}, "
            f"expected {[round(x, 4) for x in expected]} (the last token's 'next value' is the reward itself)")
    print(f"{name}: correct ({len(cases)} cases; the TD errors of an episode always add up to R - V(s_0))")


# --------------------------------------------------------- 3. tabular_values

def _tabular_by_loops(tokens: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Reference: V[t, s] = mean reward of the episodes with s ones among their first t tokens, NaN if none."""
    n, T = tokens.shape
    total = torch.zeros(T + 1, T + 1, dtype=torch.float64)  # (T+1, T+1)
    count = torch.zeros(T + 1, T + 1, dtype=torch.float64)  # (T+1, T+1)
    for i in range(n):
        s = 0
        for t in range(T + 1):
            total[t, s] += float(rewards[i])
            count[t, s] += 1
            if t < T:
                s += int(tokens[i, t])
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


# Hand case, T = 2, R = 1 iff both tokens are 1: episodes [1,0] -> 0, [1,1] -> 1, [0,0] -> 0.
#   t = 0: all three pass through s = 0                -> V[0,0] = 1/3
#   t = 1: [0,0] has s = 0; [1,0] and [1,1] have s = 1  -> V[1,0] = 0, V[1,1] = 1/2
#   t = 2: s = 0 ([0,0]), 1 ([1,0]), 2 ([1,1])          -> V[2,0] = 0, V[2,1] = 0, V[2,2] = 1
#   never visited: (0,1), (0,2), (1,2)                  -> NaN
NAN = float("nan")
TABULAR_HAND = (
    [[1, 0], [1, 1], [0, 0]],
    [0.0, 1.0, 0.0],
    [[1 / 3, NAN, NAN], [0.0, 0.5, NAN], [0.0, 0.0, 1.0]],
)


def _same_table(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return (got.shape == expected.shape and torch.equal(torch.isnan(got), torch.isnan(expected))
            and torch.allclose(torch.nan_to_num(got), torch.nan_to_num(expected), rtol=0.0, atol=1e-9))


def check_tabular_values(tabular_values) -> None:
    """Exercise 3: tabular_values(tokens (N, T) 0/1, rewards (N,)) -> (T+1, T+1) table, NaN where unvisited."""
    name = "tabular_values"
    tokens, rewards, expected = TABULAR_HAND
    first = tabular_values(torch.tensor(tokens), torch.tensor(rewards))
    if _not_done(name, first):
        return
    got, exp = _as_float64(first), torch.tensor(expected, dtype=torch.float64)
    assert _same_table(got, exp), (
        f"{name} on the hand case (episodes [1,0] -> 0, [1,1] -> 1, [0,0] -> 0) returned "
        f"{[[round(x, 4) for x in row] for row in got.tolist()]}, expected "
        f"{[[round(x, 4) for x in row] for row in exp.tolist()]} (row t, column s; NaN where no episode passes)")
    g = torch.Generator().manual_seed(2)
    for n, T in ((7, 4), (40, 9)):
        x = torch.randint(0, 2, (n, T), generator=g)  # (n, T)
        r = (x.sum(dim=1) > T / 2).to(torch.float64)  # (n,) majority reward
        got = _as_float64(tabular_values(x.clone(), r.clone()))
        exp = _tabular_by_loops(x, r)
        assert _same_table(got, exp), f"{name} disagrees with a plain loop on {n} random episodes of length {T}"
    print(f"{name}: correct (3 cases; each episode adds its reward to T + 1 cells, one per prefix)")

