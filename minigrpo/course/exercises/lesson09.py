"""Checkers for the exercises of lesson 09 (the GRPO family's tricks, measured).

Each checker takes the reader's function, calls it on cases worked out by hand (or against the engine,
whose own tests derive its numbers by hand and from TRL's code), and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. sequence_ratio(logp, old_logp, mask)        GSPO's ratio of each completion, (N, T) -> (N,)
    2. cispo_loss(logp, old_logp, adv, mask, cap)  CISPO's loss, token mean; its gradient is checked too
    3. group_weight(k, G, scale)                   sum of |A_i| of a group with k of G rewards 1, the rest 0
    4. dynamic_batch(policy, tok, prompts, reward_fn, cfg, generator)   DAPO's dynamic sampling as a loop around
                                                   the sampler, checked against sampler.dynamic_rollout
"""
from __future__ import annotations

import functools
import math

import torch

from minigrpo.advantage import group_advantages
from minigrpo.config import make_config
from minigrpo.course.exercises import as_float64, not_done as _not_done
from minigrpo.loss import grpo_loss
from minigrpo.model import build_model
from minigrpo.sampler import dynamic_rollout, informative_groups, rollout
from minigrpo.tokenizer import build_tokenizer

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
# Exercise 4: DAPO's dynamic sampling, as a loop around the sampler
# ---------------------------------------------------------------------------

DYNAMIC_SEED = 0   # the sampling generator's seed, the same for the engine and for you
# Round k's B = 4 prompts: "C" gets reward 1 whatever the completion (a group of equal rewards), "V" a reward that
# varies with the completion. Rounds 0-2 hold 1, 1 and 3 informative groups: with a cap of 4 rounds the loop stops
# after round 2 with 5 found and keeps the first 4; with a cap of 2 it stops at the cap with 2.
DYNAMIC_LAYOUT = ("VCCC", "CCVC", "VVCV", "VVVV", "VVVV")


class _RoundsPastTheCap(BaseException):
    """Raised from inside the reader's loop (not an Exception, so no `except Exception` swallows it)."""


def dynamic_config(**overrides):
    """The tiny preset as the checker runs it: B = 4 prompts, G = 4 completions of at most 4 tokens, a cap of 4."""
    fields = dict(prompts_per_step=4, group_size=4, max_new_tokens=4, dynamic_sampling=True, max_sampling_rounds=4)
    return make_config("tiny", **(fields | overrides))


@functools.lru_cache(maxsize=None)
def dynamic_world():
    """(tok, policy): the tiny preset's random policy, built once without touching the global RNG."""
    tok = build_tokenizer()
    with torch.random.fork_rng():
        policy = build_model(dynamic_config(), tok)
    return tok, policy.eval()


def dynamic_records(k: int) -> list[dict]:
    """Round k's B prompt records, new ones each round; each says whether its reward is constant."""
    return [{"task": "arithmetic", "prompt": f"{10 + 4 * k + i}+{k}=", "answer": str(10 + 4 * k + i + k),
             "constant": kind == "C"} for i, kind in enumerate(DYNAMIC_LAYOUT[k])]


def layout_reward(prompt: str, completion: str, constant: bool = False, **_fields) -> float:
    """1 on a "C" prompt; else a number that varies with the completion's characters (0.0 to 0.6)."""
    return 1.0 if constant else (sum(map(ord, completion)) % 7) / 10


def always_one(prompt: str, completion: str, **_fields) -> float:
    """Every completion right: no group is informative."""
    return 1.0


def always_different():
    """A fresh reward that returns 0, 1, 2, ... call after call: within any group the G rewards differ."""
    calls = iter(range(10**9))
    return lambda prompt, completion, **_fields: float(next(calls))


def _guarded(reward_fn, cfg):
    """(prompts, reward, log): prompts(k) logs k; the reward counts its calls and stops a loop that samples past
    cfg.max_sampling_rounds rounds of N = B*G completions (or asks for absurdly many rounds)."""
    log = {"rounds_asked": [], "rewards": 0}
    N = cfg.prompts_per_step * cfg.group_size

    def prompts(k):
        log["rounds_asked"].append(k)
        if not 0 <= k < len(DYNAMIC_LAYOUT):
            raise _RoundsPastTheCap(f"prompts({k}) asked for")
        return [dict(r) for r in dynamic_records(k)]

    def reward(prompt, completion, **fields):
        log["rewards"] += 1
        if log["rewards"] > cfg.max_sampling_rounds * N:
            raise _RoundsPastTheCap(f"round {cfg.max_sampling_rounds + 1} sampled")
        return reward_fn(prompt, completion, **fields)
    return prompts, reward, log


def _engine_dynamic(reward_fn, cfg) -> tuple[list[tuple[str, list[str], list[float]]], int, int]:
    """(kept groups as (prompt, completions, rewards), completions sampled, rounds): sampler.dynamic_rollout, with
    round k sampling dynamic_records(k), as trainer.grpo_step does with cfg.dynamic_sampling."""
    tok, policy = dynamic_world()
    generator = torch.Generator().manual_seed(DYNAMIC_SEED)
    sample = lambda k: rollout(policy, tok, dynamic_records(k), reward_fn, cfg, generator)
    everything, _, spent = dynamic_rollout(sample, cfg.prompts_per_step, cfg, tok.pad_token_id)
    records = [r for k in range(spent["sampling_rounds"]) for r in dynamic_records(k)]
    G = cfg.group_size
    groups = informative_groups(everything.rewards, G)[:cfg.prompts_per_step]
    kept = [(records[g]["prompt"], everything.completions[g * G:(g + 1) * G],
             everything.rewards[g * G:(g + 1) * G].tolist()) for g in groups]
    assert len(kept) == spent["kept_groups"]
    return kept, spent["samples"], spent["sampling_rounds"]


def _run_dynamic(name, dynamic_batch, case, reward_fn, cfg):
    """Run the reader's function under the guard; (result, rounds sampled, rounds asked for)."""
    tok, policy = dynamic_world()
    prompts, reward, log = _guarded(reward_fn, cfg)
    try:
        got = dynamic_batch(policy, tok, prompts, reward, cfg, torch.Generator().manual_seed(DYNAMIC_SEED))
    except _RoundsPastTheCap as stop:
        raise AssertionError(
            f"{name} ({case}): {stop} with max_sampling_rounds = {cfg.max_sampling_rounds}, and stopped there (without "
            f"the cap the loop never ends when no group is informative). Stop after max_sampling_rounds rounds even "
            f"when fewer than B groups are kept") from None
    return got, log["rewards"] / (cfg.prompts_per_step * cfg.group_size), sorted(set(log["rounds_asked"]))


def _dynamic_cases():
    """(what the case is, a fresh reward, config, rounds and kept groups worked out by hand from the layout)."""
    return [
        ("rounds of 1, 1, 3 informative groups, cap 4", lambda: layout_reward, dynamic_config(), 3, 4),
        ("rounds of 1, 1 informative groups, cap 2", lambda: layout_reward, dynamic_config(max_sampling_rounds=2),
         2, 2),
        ("a reward always 1, cap 3", lambda: always_one, dynamic_config(max_sampling_rounds=3), 3, 0),
        ("a reward that always differs within a group", always_different, dynamic_config(), 1, 4),
    ]


def _as_groups(name, case, kept) -> list[tuple[str, list[str], list[float]]]:
    """The reader's kept groups as (prompt, completions, rewards)."""
    try:
        return [(r["prompt"] if isinstance(r, dict) else r, list(c), as_float64(w).reshape(-1).tolist())
                for r, c, w in kept]
    except (TypeError, ValueError, KeyError):
        raise AssertionError(f"{name} ({case}): kept should be a list of (record, completions, rewards), one per "
                             f"group; got {str(kept)[:200]}") from None


def check_dynamic_batch(dynamic_batch) -> None:
    """Exercise 4: dynamic_batch(policy, tok, prompts, reward_fn, cfg, generator) -> (kept, sampled).

    Round k samples G = cfg.group_size completions for each of the B = cfg.prompts_per_step records prompts(k).
    `kept`: the first B groups whose rewards are not all equal, in the order sampled, each (record, completions,
    rewards); `sampled`: the completions sampled in all rounds. Runs it and sampler.dynamic_rollout (the engine's
    dynamic sampling) on one tiny policy with generators seeded alike, in four cases: the kept groups, the count
    and the rounds must be the engine's, and (by hand) 3, 2, 3 and 1 rounds, 4, 2, 0 and 4 groups kept."""
    name = "dynamic_batch"
    for n, (case, make_reward, cfg, rounds_by_hand, kept_by_hand) in enumerate(_dynamic_cases()):
        B, N = cfg.prompts_per_step, cfg.prompts_per_step * cfg.group_size
        got, rounds, asked = _run_dynamic(name, dynamic_batch, case, make_reward(), cfg)
        if n == 0 and _not_done(name, got):
            return
        assert isinstance(got, (tuple, list)) and len(got) == 2, (
            f"{name} ({case}) returned {type(got).__name__}, expected a pair (kept groups, completions sampled)")
        kept, sampled = _as_groups(name, case, got[0]), got[1]
        if rounds > 1 and asked == [0]:
            raise AssertionError(f"{name} ({case}): {rounds:g} rounds sampled, all from prompts(0); round k samples "
                                 f"the new prompts prompts(k), as the trainer draws a new batch for each round")
        for i, (prompt, _, rewards) in enumerate(kept):
            assert len(set(rewards)) >= 2, (
                f"{name} ({case}): kept group {i} ({prompt!r}) has rewards {rewards}, all equal: its advantages are "
                f"all 0 and it teaches nothing; keep only the groups whose rewards are not all equal")
        assert len(kept) <= B, (
            f"{name} ({case}): kept {len(kept)} groups, more than B = {B}; keep the first B informative groups and "
            f"drop the rest of the last round's")
        want, want_sampled, want_rounds = _engine_dynamic(make_reward(), cfg)
        assert (want_rounds, len(want)) == (rounds_by_hand, kept_by_hand), (
            f"the checker's own world gave {want_rounds} rounds and {len(want)} kept groups in case {case!r}, not "
            f"the {rounds_by_hand} and {kept_by_hand} worked out by hand (has the sampler changed?)")
        assert rounds == want_rounds, (
            f"{name} ({case}): {rounds:g} rounds sampled, expected {want_rounds}; sample another round only while "
            f"fewer than B = {B} groups are kept and fewer than max_sampling_rounds = {cfg.max_sampling_rounds} "
            f"rounds are done")
        assert sampled == want_sampled, (
            f"{name} ({case}) returned {sampled} completions sampled, expected {want_sampled}: {want_rounds} rounds "
            f"of B x G = {N}; count every completion sampled, kept or not")
        assert len(kept) == len(want), f"{name} ({case}): kept {len(kept)} groups, expected {len(want)}"
        for i, (mine, theirs) in enumerate(zip(kept, want)):
            assert mine[0] == theirs[0], (
                f"{name} ({case}): kept group {i} is prompt {mine[0]!r}, expected {theirs[0]!r}; keep the groups in "
                f"the order sampled, round by round, and sample round k's prompts from prompts(k)")
            assert mine[1] == theirs[1] and mine[2] == theirs[2], (
                f"{name} ({case}): kept group {i} ({mine[0]!r}) has completions {mine[1]} with rewards {mine[2]}, "
                f"expected {theirs[1]} with {theirs[2]}; sample each round with rollout(policy, tok, records, "
                f"reward_fn, cfg, generator), with the generator given")
    print(f"{name}: correct (the engine's kept groups and rounds in 4 cases: with a cap of 4 rounds, 3 rounds "
          f"found 5 informative groups and kept 4, {3 * N} completions sampled for 4 groups; a cap of 2 stopped "
          f"with 2 kept; a reward always 1 kept none in 3 rounds; a reward always different took 1 round)")
