"""Checkers for the exercises of lesson 01 (the limits of PPO, course section 1).

Each checker takes the reader's function, calls it on cases worked out by
hand (in the comments below), and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct (...)" when every case passes.

    1. min_updates(p_old, p_target, eps)            how many clipped updates a rare token needs to rise
    2. gae_advantages(values, reward, gamma, lam)   GAE along one answer whose reward comes only at the end
    3. tabular_values(tokens, rewards)              the Monte-Carlo value table of a critic that memorises states
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


# --------------------------------------------------------- 2. gae_advantages

# GAE (Schulman et al., 2016, eq. 16) along one answer of T tokens. The reward R is paid with the last token
# (r_{T-1} = R, every other r_t = 0) and the state after it is terminal, V(s_T) = 0, so
#   delta_t = gamma V(s_{t+1}) - V(s_t) for t < T-1,   delta_{T-1} = R - V(s_{T-1}),
#   A_t = sum_l (gamma lam)^l delta_{t+l} = delta_t + gamma lam A_{t+1},   A_T = 0.
# (values V(s_0..s_{T-1}), R, gamma, lam, expected A_0..A_{T-1}), by hand:
#   [0.5, 0.6, 0.4], R = 1, gamma 1, lam 0: delta = [0.6-0.5, 0.4-0.6, 1-0.4]     = [0.1, -0.2, 0.6]  (section 1's TD)
#   the same, lam 1: A_t = R - V(s_t) = [1-0.5, 1-0.6, 1-0.4]                      = [0.5, 0.4, 0.6]
#   the same, lam 0.5: A_2 = 0.6, A_1 = -0.2 + 0.5*0.6 = 0.1, A_0 = 0.1 + 0.5*0.1  = [0.15, 0.1, 0.6]
#   the same, gamma 0.9, lam 0.5: delta = [0.9*0.6-0.5, 0.9*0.4-0.6, 1-0.4] = [0.04, -0.24, 0.6], gamma lam = 0.45,
#       A_2 = 0.6, A_1 = -0.24 + 0.45*0.6 = 0.03, A_0 = 0.04 + 0.45*0.03 = 0.0535  = [0.0535, 0.03, 0.6]
#   the same, gamma 0.9, lam 1: A_t = 0.9^(2-t) R - V(s_t) = [0.81-0.5, 0.9-0.6, 1-0.4] = [0.31, 0.3, 0.6]
#   [0.4, 0.45, 0.3, 0.2], R = 0, gamma 1, lam 0.5: delta = [0.05, -0.15, -0.1, -0.2],
#       A_3 = -0.2, A_2 = -0.1 + 0.5*(-0.2) = -0.2, A_1 = -0.15 + 0.5*(-0.2) = -0.25,
#       A_0 = 0.05 + 0.5*(-0.25) = -0.075                                          = [-0.075, -0.25, -0.2, -0.2]
#   [0.7], R = 1, gamma 0.9, lam 0.95: one token, A_0 = delta_0 = R - V(s_0)        = [0.3]
GAE_TOL = 1e-6
GAE_CASES = [
    ([0.5, 0.6, 0.4], 1.0, 1.0, 0.0, [0.1, -0.2, 0.6]),
    ([0.5, 0.6, 0.4], 1.0, 1.0, 1.0, [0.5, 0.4, 0.6]),
    ([0.5, 0.6, 0.4], 1.0, 1.0, 0.5, [0.15, 0.1, 0.6]),
    ([0.5, 0.6, 0.4], 1.0, 0.9, 0.5, [0.0535, 0.03, 0.6]),
    ([0.5, 0.6, 0.4], 1.0, 0.9, 1.0, [0.31, 0.3, 0.6]),
    ([0.4, 0.45, 0.3, 0.2], 0.0, 1.0, 0.5, [-0.075, -0.25, -0.2, -0.2]),
    ([0.7], 1.0, 0.9, 0.95, [0.3]),
]


def _one_step_errors(v: torch.Tensor, reward: float, gamma: float) -> torch.Tensor:
    """delta_t = r_t + gamma V(s_{t+1}) - V(s_t) with r = (0, ..., 0, R) and V(s_T) = 0; (T,) -> (T,)."""
    next_values = torch.cat([gamma * v[1:], v.new_zeros(1)])  # (T,) gamma V(s_1), ..., gamma V(s_{T-1}), 0
    rewards = torch.cat([v.new_zeros(len(v) - 1), v.new_tensor([reward])])  # (T,) 0, ..., 0, R
    return rewards + next_values - v  # (T,)


def _gae_call(gae_advantages, values, reward, gamma, lam) -> torch.Tensor:
    """The reader's advantages for these values, as a float64 (T,) tensor of the right shape."""
    v = torch.as_tensor(values, dtype=torch.float64)  # (T,)
    got = _as_float64(gae_advantages(v.clone(), reward, gamma, lam)).reshape(-1)
    assert got.shape == v.shape, (
        f"gae_advantages: for T = {len(v)} values the result has {got.numel()} entries, expected {len(v)}")
    return got


def check_gae_advantages(gae_advantages) -> None:
    """Exercise 2: gae_advantages(values (T,), reward float, gamma, lam) -> (T,) tensor of GAE advantages."""
    name = "gae_advantages"
    values, reward, gamma, lam, _ = GAE_CASES[0]
    if _not_done(name, gae_advantages(torch.tensor(values, dtype=torch.float64), reward, gamma, lam)):
        return
    # float32 arithmetic (torch.zeros(T) for the result, say) is right to about 1e-7; the wrong answers the tests
    # try are off by 0.01 or more.
    rule = ("delta_t = r_t + gamma V(s_t+1) - V(s_t) with r_T-1 = R, V(s_T) = 0; "
            "A_t = delta_t + gamma lam A_t+1, from the last token backwards")
    for values, reward, gamma, lam, expected in GAE_CASES:
        got = _gae_call(gae_advantages, values, reward, gamma, lam)
        assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), rtol=0.0, atol=GAE_TOL), (
            f"{name}({values}, reward={reward}, gamma={gamma}, lam={lam}) returned "
            f"{[round(x, 6) for x in got.tolist()]}, expected {expected} ({rule})")
    g = torch.Generator().manual_seed(1)
    n_random = 0
    for T in (5, 12):
        v = torch.rand(T, generator=g, dtype=torch.float64)  # (T,) a random critic
        reward = 1.0  # a right answer (the hand cases have a wrong one)
        gamma = 1.0 if T == 5 else 0.8 + 0.2 * float(torch.rand((), generator=g, dtype=torch.float64))
        # lam = 0: the one-step TD errors themselves.
        got = _gae_call(gae_advantages, v.tolist(), reward, gamma, 0.0)
        assert torch.allclose(got, _one_step_errors(v, reward, gamma), rtol=0.0, atol=GAE_TOL), (
            f"{name} with lam = 0 (T = {T}, gamma = {gamma:.4g}) is not the one-step TD error "
            f"delta_t = r_t + gamma V(s_t+1) - V(s_t) (the last token's is R - V(s_T-1))")
        # lam = 1: the sum telescopes to the discounted Monte-Carlo advantage gamma^(T-1-t) R - V(s_t).
        got = _gae_call(gae_advantages, v.tolist(), reward, gamma, 1.0)
        mc = gamma ** torch.arange(T - 1, -1, -1, dtype=torch.float64) * reward - v  # (T,)
        assert torch.allclose(got, mc, rtol=0.0, atol=GAE_TOL), (
            f"{name} with lam = 1 (T = {T}, gamma = {gamma:.4g}) is not the Monte-Carlo advantage "
            f"gamma^(T-1-t) R - V(s_t)")
        # Any lam: the recursion A_t = delta_t + gamma lam A_{t+1}, ending in A_{T-1} = delta_{T-1}.
        for lam in (0.5, 0.95):
            got = _gae_call(gae_advantages, v.tolist(), reward, gamma, lam)
            delta = _one_step_errors(v, reward, gamma)  # (T,)
            nxt = torch.cat([got[1:], got.new_zeros(1)])  # (T,) A_{t+1}, 0 after the last token
            assert torch.allclose(got, delta + gamma * lam * nxt, rtol=0.0, atol=GAE_TOL), (
                f"{name} with T = {T}, gamma = {gamma:.4g}, lam = {lam} breaks A_t = delta_t + gamma lam A_t+1 "
                f"at t = {int((got - delta - gamma * lam * nxt).abs().argmax())}")
        n_random += 4
    print(f"{name}: correct ({len(GAE_CASES) + n_random} cases; lam = 0 gives section 1's TD errors, lam = 1 the "
          f"Monte-Carlo advantages R - V(s_t), when gamma = 1)")


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

