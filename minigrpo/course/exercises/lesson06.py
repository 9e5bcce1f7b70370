"""Checkers for the exercises of lesson 06 (SFT warm start, then GRPO on arithmetic).

Each checker takes the reader's function, calls it on cases worked out by
hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. mixed_group_share(right, G)       measured: the share of groups of G samples whose rewards differ
    2. pass_at_k(n, c, k)                the unbiased pass@k from c right of n samples (Chen et al. 2021)
    3. first_step_reaching(rows, level)  the first GRPO step whose held-out accuracy is >= level
    4. my_grpo_step(policy, opt, tok, records, reward_fn, cfg, generator)   one GRPO step (mu = 1) from the
                                         engine's pieces, checked against trainer.grpo_step on the same seed
    5. my_mu_updates(policy, opt, batch, cfg)   the mu updates on one sampled batch against its cached old
                                         log-probs, checked against optim.update_policy
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
import random

import torch

from minigrpo.advantage import group_advantages
from minigrpo.config import make_config
from minigrpo.course.exercises import not_done as _not_done
from minigrpo.model import build_model
from minigrpo.optim import update_policy
from minigrpo.sampler import rollout
from minigrpo.sft import train_sft
from minigrpo.tokenizer import build_tokenizer
from minigrpo.trainer import grpo_step


# ---------------------------------------------------------------------------
# Exercise 1: how many groups carry a signal, measured on samples
# ---------------------------------------------------------------------------

# (right: prompts x samples, G, expected share of mixed groups), by hand; groups are consecutive samples of a prompt.
MIXED_CASES = [
    ([[1, 1, 0, 0]], 2, 0.0),                 # (1, 1) and (0, 0): both all equal
    ([[1, 1, 0, 0]], 4, 1.0),                 # one group (1, 1, 0, 0): mixed
    ([[1, 0, 1, 0], [1, 1, 1, 1]], 2, 0.5),   # (1, 0), (1, 0) mixed; (1, 1), (1, 1) not: 2 of 4
    ([[0, 0, 0, 0, 0, 0]], 3, 0.0),           # never right
    ([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]], 3, 0.5),
]


def check_mixed_group_share(mixed_group_share, right=None) -> None:
    """Exercise 1: mixed_group_share(right (P, n) of 0/1, G) -> the share of the P * n / G groups (G consecutive
    samples of one prompt each) whose rewards are not all equal. With `right` (the lesson's probe), also checks it
    there at G = 4, 8, 16 against a count made here."""
    import numpy as np
    name = "mixed_group_share"
    if _not_done(name, mixed_group_share(np.array(MIXED_CASES[0][0]), MIXED_CASES[0][1])):
        return
    for rows, G, expected in MIXED_CASES:
        got = float(mixed_group_share(np.array(rows), G))
        assert math.isclose(got, expected, abs_tol=1e-12), (
            f"{name}({rows}, G={G}) returned {got}, expected {expected} (split each prompt's samples into groups of "
            f"G in a row; a group counts when its rewards are not all equal)")
    if right is None:
        print(f"{name}: correct ({len(MIXED_CASES)} cases)")
        return
    right = np.asarray(right)
    shares = {}
    for G in (4, 8, 16):
        groups = right.reshape(right.shape[0], -1, G)
        shares[G] = float(np.mean(groups.min(-1) != groups.max(-1)))
        got = float(mixed_group_share(right, G))
        assert math.isclose(got, shares[G], abs_tol=1e-12), f"{name}(probe, G={G}) = {got}, expected {shares[G]}"
    print(f"{name}: correct; on the probe the mixed share is {shares[4]:.0%} at G = 4, {shares[8]:.0%} at G = 8, "
          f"{shares[16]:.0%} at G = 16")


# ---------------------------------------------------------------------------
# Exercise 2: pass@k, the chance that a group holds a right answer (section 5)
# ---------------------------------------------------------------------------

# (n, c, k, expected), by hand from pass@k = 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, §2.1)
PASS_AT_K_CASES = [
    (2, 1, 1, 0.5),                        # one of two right: a single draw is right half the time
    (4, 1, 2, 0.5),                        # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (10, 3, 5, 1 - 21 / 252),              # 1 - C(7,5)/C(10,5)
    (16, 0, 8, 0.0),                       # never right: no group of 8 holds a right answer
    (16, 16, 8, 1.0),
    (16, 9, 8, 1.0),                       # only 7 wrong: every 8 of the 16 hold a right one
    (16, 1, 8, 0.5),                       # the one right answer is among 8 of 16 half the time
    (200, 2, 100, 1 - 100 * 99 / (200 * 199)),   # C(198,100)/C(200,100) = (100 * 99) / (200 * 199)
    (16, 4, 1, 0.25),                      # pass@1 is the share right, c / n
]


def _by_enumeration(n: int, c: int, k: int) -> float:
    """The share of the C(n, k) draws of k of the n answers that hold at least one of the c right ones."""
    answers = [1] * c + [0] * (n - c)
    draws = list(itertools.combinations(range(n), k))
    return sum(any(answers[i] for i in d) for d in draws) / len(draws)


def check_pass_at_k(pass_at_k) -> None:
    """Exercise 2: pass_at_k(n, c, k) -> the unbiased estimate of pass@k from c right answers among n samples."""
    name = "pass_at_k"
    if _not_done(name, pass_at_k(*PASS_AT_K_CASES[0][:3])):
        return
    for n, c, k, expected in PASS_AT_K_CASES:
        got = pass_at_k(n, c, k)
        assert got is not None and math.isclose(float(got), expected, rel_tol=1e-9, abs_tol=1e-12), (
            f"{name}(n={n}, c={c}, k={k}) = {got!r}, expected {expected:.6g} (the chance that k of the n answers, "
            f"drawn without replacement, hold at least one of the c right ones)")
    for n in range(1, 9):                  # every small case, against the draws themselves
        for c in range(n + 1):
            for k in range(1, n + 1):
                want = _by_enumeration(n, c, k)
                assert math.isclose(float(pass_at_k(n, c, k)), want, rel_tol=1e-9, abs_tol=1e-12), (
                    f"{name}(n={n}, c={c}, k={k}) = {pass_at_k(n, c, k)!r}, but {want:.6g} of the draws of {k} "
                    f"hold a right answer")
    got = float(pass_at_k(5000, 3, 2500))   # large n: no overflow, no loss to rounding
    assert math.isclose(got, 1 - (2500 * 2499 * 2498) / (5000 * 4999 * 4998), rel_tol=1e-9), (
        f"{name}(5000, 3, 2500) = {got!r}: compute the ratio of binomials as a product (or with exact integers), "
        f"not from factorials in floating point")
    print(f"{name}: correct ({len(PASS_AT_K_CASES)} cases by hand, every n <= 8 by enumeration, n = 5,000)")


# ---------------------------------------------------------------------------
# Exercise 3: reading the metrics file
# ---------------------------------------------------------------------------

# (rows, level, expected), by hand. Rows without "eval_accuracy" were not evaluated.
FIRST_STEP_CASES = [
    ([{"step": 1}, {"step": 2, "eval_accuracy": 0.5}, {"step": 3}, {"step": 4, "eval_accuracy": 0.9}],
     0.9, 4),
    ([{"step": 1}, {"step": 2, "eval_accuracy": 0.5}, {"step": 3}, {"step": 4, "eval_accuracy": 0.9}],
     0.5, 2),                                                          # ">=": equal counts
    ([{"step": 10, "eval_accuracy": 0.7}, {"step": 20, "eval_accuracy": 0.95},
      {"step": 30, "eval_accuracy": 0.85}, {"step": 40, "eval_accuracy": 0.97}], 0.9, 20),  # the first, not the last
    ([{"step": 5, "eval_accuracy": 0.3}, {"step": 10, "eval_accuracy": 0.4}], 0.9, 0),       # never: 0
    ([{"step": 1, "accuracy": 0.95}, {"step": 2, "eval_accuracy": 0.6}], 0.9, 0),           # "accuracy" is sampled, not held-out
]
# The committed run (results/cpu_arithmetic/metrics.jsonl), read by hand: 0.76 at step 50,
# 0.816, 0.858, 0.88, 0.872, then 0.9 at step 300.
COMMITTED_FIRST_90 = 300


def check_first_step_reaching(first_step_reaching, committed_rows=None) -> None:
    """Exercise 3: first_step_reaching(rows, level) -> the first step with eval_accuracy >= level (0 if none)."""
    name = "first_step_reaching"
    if _not_done(name, first_step_reaching(FIRST_STEP_CASES[0][0], FIRST_STEP_CASES[0][1])):
        return
    for rows, level, expected in FIRST_STEP_CASES:
        got = first_step_reaching([dict(r) for r in rows], level)
        assert got == expected, (f"{name}({rows}, {level}) returned {got!r}, expected {expected} "
                                 f"(the first row whose 'eval_accuracy' is >= the level; 0 if none)")
    if committed_rows is not None:
        got = first_step_reaching(committed_rows, 0.9)
        assert got == COMMITTED_FIRST_90, (f"{name}(committed rows, 0.9) returned {got!r}, "
                                           f"expected {COMMITTED_FIRST_90}")
    print(f"{name}: correct ({len(FIRST_STEP_CASES)} cases"
          + (f"; the committed run first reached 90% at step {COMMITTED_FIRST_90})" if committed_rows else ")"))


# ---------------------------------------------------------------------------
# Exercises 4 and 5: the GRPO step, from the engine's pieces
# ---------------------------------------------------------------------------

def _demos(n: int = 32, seed: int = 6) -> list[dict]:
    """The checkers' small world: n two-digit problems; the tiny preset's policy, after a few SFT steps on them,
    stops after 1-4 tokens (lengths differ: a mean over tokens and a mean per sequence differ)."""
    rng = random.Random(seed)
    pairs = [(rng.randint(0, 60), rng.randint(0, 60), rng.choice("+-")) for _ in range(n)]
    return [{"task": "arithmetic", "prompt": f"{a}{op}{b}=", "answer": str(a + b if op == "+" else a - b)}
            for a, b, op in pairs]


DEMOS = _demos()
STEP_RECORDS = DEMOS[:4]   # B = 4 prompts
SEED = 0                   # the sampling generator's seed, the same for the engine and for you
STEP_LR = 0.1              # plain SGD: every change of the gradient shows in the weights (Adam's first step is
MU_LR = 0.3                # nearly lr * sign(g), which would hide a wrong scale of the advantages); at MU_LR the
                           # ratios leave the clip range from the second update on
WEIGHT_ATOL = 1e-6         # float32 round-off of weights of size ~1 (a few ulps); wrong answers move them by > 1e-4


def step_reward(prompt: str, completion: str, answer: str, **_fields) -> float:
    """The checkers' reward: 1.0 on the first prompt whatever the answer (a group of equal rewards, whose
    advantages must be 0, not 0/0), else 1 for the right answer plus 0.25 per character (several levels)."""
    if prompt == STEP_RECORDS[0]["prompt"]:
        return 1.0
    return float(completion == answer) + 0.25 * len(completion)


def step_config(**overrides):
    """The tiny preset as the checkers run it: G = 4, completions of at most 4 tokens, and the engine's forward
    the plain one you call (no shared prompts, no merged rows, no skipped rows, one micro-batch)."""
    fields = dict(group_size=4, max_new_tokens=4, prompts_per_step=len(STEP_RECORDS), share_prompts=False,
                  merge_prefixes=False, skip_zero_adv=False, micro_batch_size=0, beta=0.0, grad_clip=1e4,
                  sft_steps=60, sft_lr=1e-2, sft_batch_size=16)
    return make_config("tiny", **(fields | overrides))


@functools.lru_cache(maxsize=None)
def step_world():
    """(tok, the policy) both checkers start from: built once, seeded, without touching the global RNG."""
    cfg = step_config()
    tok = build_tokenizer()
    with torch.random.fork_rng():
        policy = build_model(cfg, tok)
        train_sft(policy, tok, DEMOS, cfg, progress=False)
    return tok, policy.eval()


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same_weights(name: str, case: str, mine: dict, ref: dict, start: dict, hint: str) -> float:
    """The largest |difference| of the two models' weights; AssertionError naming the case (with how the reader's
    update compares with the engine's: its size along the engine's update, and the cosine) when over WEIGHT_ATOL."""
    gaps = {n: torch.nan_to_num((mine[n] - ref[n]).abs().max(), nan=math.inf).item() for n in ref}
    worst = max(gaps, key=gaps.get)
    if gaps[worst] <= WEIGHT_ATOL:
        return gaps[worst]
    d_mine = torch.cat([(mine[n] - start[n]).flatten() for n in start]).double()     # (P,)
    d_ref = torch.cat([(ref[n] - start[n]).flatten() for n in start]).double()       # (P,)
    along = (d_mine @ d_ref / (d_ref @ d_ref)).item()
    cos = (d_mine @ d_ref / (d_mine.norm() * d_ref.norm()).clamp(min=1e-30)).item()
    raise AssertionError(
        f"{name} ({case}): the updated weights differ from the engine's by up to {gaps[worst]:.2e} (in {worst}; "
        f"round-off is below {WEIGHT_ATOL:.0e}). Your update is {along:+.3f} x the engine's along it, cosine "
        f"{cos:+.3f}. {hint}")


STEP_HINT = ("Read the factor: -1 is the sign (the loss is the objective negated, and the step descends it); "
             "1.155 = sqrt(G / (G-1)) the population std in place of the sample std; a cosine below 1 the "
             "normalisation within each group, or the mean (over each completion's tokens, then over the N "
             "completions); nan an unguarded 0/0 in a group of equal rewards.")


def _engine_step(start, tok, cfg):
    policy = copy.deepcopy(start)
    opt = torch.optim.SGD(policy.parameters(), lr=STEP_LR)
    row = grpo_step(policy, None, tok, opt, STEP_RECORDS, step_reward, cfg, torch.Generator().manual_seed(SEED))
    return row, _weights(policy)


def check_my_grpo_step(my_grpo_step) -> None:
    """Exercise 4: my_grpo_step(policy, opt, tok, records, reward_fn, cfg, generator) -> the step's loss.

    Runs it and trainer.grpo_step (ref_model None, beta = 0, mu = 1) on two copies of one tiny policy, each with
    plain SGD and a generator seeded alike, and compares the updated weights (to WEIGHT_ATOL) and the loss:
    first with the gradient clip far above the gradient's norm, then at half of it, so that the clip acts."""
    name = "my_grpo_step"
    tok, start = step_world()
    cfg = step_config()
    policy = copy.deepcopy(start)
    loss = my_grpo_step(policy, torch.optim.SGD(policy.parameters(), lr=STEP_LR), tok, STEP_RECORDS, step_reward,
                        cfg, torch.Generator().manual_seed(SEED))
    if _not_done(name, loss):
        return
    before = _weights(start)
    row, ref = _engine_step(start, tok, cfg)
    clip = row["grad_norm"] / 2
    cases = [(f"grad_clip {cfg.grad_clip:g}, above the gradient norm {row['grad_norm']:.3f}", cfg, loss, policy,
              row, ref)]
    cfg_clip = dataclasses.replace(cfg, grad_clip=clip)
    policy = copy.deepcopy(start)
    loss = my_grpo_step(policy, torch.optim.SGD(policy.parameters(), lr=STEP_LR), tok, STEP_RECORDS, step_reward,
                        cfg_clip, torch.Generator().manual_seed(SEED))
    cases.append((f"grad_clip {clip:.3f}, half the gradient norm", cfg_clip, loss, policy,
                  *_engine_step(start, tok, cfg_clip)))
    worst = 0.0
    for case, c, loss, policy, row, ref in cases:
        hint = STEP_HINT if c is cfg else "Clip the gradient's norm to cfg.grad_clip before the step, as " \
                                          "minigrpo.optim.optimizer_step(policy, opt, loss, cfg.grad_clip) does."
        worst = max(worst, _same_weights(name, case, _weights(policy), ref, before, hint))
        assert math.isclose(float(loss), row["loss"], abs_tol=1e-6), (
            f"{name} ({case}) returned loss {float(loss):+.8f}, the engine's is {row['loss']:+.8f} (the negated "
            f"clipped surrogate: the mean over each completion's tokens, then over the N completions)")
    print(f"{name}: correct (the weights grpo_step gives after one step on B = 4 prompts x G = 4 completions, with "
          f"the gradient clip off and on, to {worst:.1e}; loss {row['loss']:+.1e}, 0 up to round-off: at mu = 1 "
          f"each completion's term is its advantage, and a group's advantages add up to 0)")


# ---------------------------------------------------------------------------
# Exercise 5: the mu updates against the old log-probs cached at sampling
# ---------------------------------------------------------------------------

MU = 3                              # updates per sampled batch
MU_STATS = ("loss", "ratio_mean", "clip_low", "clip_high")
MU_HINTS = {
    "ratio_mean": "r = exp(logp - old_logp) against batch['old_logp'], the log-probs cached at sampling, never "
                  "recomputed: 1 at the first update, then it moves; its mean over the unmasked tokens only",
    "clip_low": "the fraction of the unmasked tokens with A < 0 and r < 1 - eps_low",
    "clip_high": "the fraction of the unmasked tokens with A > 0 and r > 1 + eps_high",
    "loss": "-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), averaged over each completion's tokens, then over "
            "the N completions",
}


def mu_config():
    """step_config with mu = 3 and old log-probs from the sampler (the engine's default)."""
    return step_config(num_iterations=MU, old_logps="sampler", grad_clip=1.0)


@functools.lru_cache(maxsize=None)
def mu_batch():
    """(samples, advantages (N,)) of one rollout of the start policy: the batch both sides update on."""
    tok, start = step_world()
    cfg = mu_config()
    ro = rollout(copy.deepcopy(start), tok, STEP_RECORDS, step_reward, cfg, torch.Generator().manual_seed(SEED))
    adv = group_advantages(ro.rewards, cfg.group_size, scale=cfg.scale, std=cfg.std, eps=cfg.std_eps)   # (N,)
    return ro.samples, adv


def batch_dict(samples, adv) -> dict[str, torch.Tensor]:
    """The batch as my_mu_updates receives it (copies: nothing the reader does to it reaches the engine's)."""
    return {"prompt_ids": samples.prompt_ids.clone(), "prompt_mask": samples.prompt_mask.clone(),
            "completion_ids": samples.completion_ids.clone(), "completion_mask": samples.completion_mask.clone(),
            "old_logp": samples.logps.clone(), "adv": adv.clone()}


@functools.lru_cache(maxsize=None)
def engine_mu_updates():
    """The engine's update_policy on mu_batch() with mu = 1, 2, ..., MU from the start policy: the k-th run's stats
    are those of update k (each measured before its step); the last run's weights are the ones to match."""
    tok, start = step_world()
    s, adv = mu_batch()
    stats, weights = [], None
    for k in range(1, MU + 1):
        policy = copy.deepcopy(start)
        opt = torch.optim.SGD(policy.parameters(), lr=MU_LR)
        upd = update_policy(policy, opt, s, adv, s.completion_mask.float(),
                            dataclasses.replace(mu_config(), num_iterations=k), skip_zero_adv=False)
        stats.append({"loss": upd.loss, **{key: upd.stats[key] for key in MU_STATS[1:]}})
        weights = _weights(policy)
    return stats, weights


def check_my_mu_updates(my_mu_updates) -> None:
    """Exercise 5: my_mu_updates(policy, opt, batch, cfg) -> a list of cfg.num_iterations dicts, one per update,
    of "loss", "ratio_mean", "clip_low", "clip_high" (measured before that update's step).

    Runs it on a copy of the tiny policy with plain SGD and compares each update's statistics with those
    optim.update_policy logs, and the weights after the last update with the engine's (to WEIGHT_ATOL)."""
    name = "my_mu_updates"
    tok, start = step_world()
    cfg = mu_config()
    policy = copy.deepcopy(start)
    got = my_mu_updates(policy, torch.optim.SGD(policy.parameters(), lr=MU_LR), batch_dict(*mu_batch()), cfg)
    if _not_done(name, got):
        return
    ref, ref_weights = engine_mu_updates()
    assert isinstance(got, (list, tuple)) and len(got) == MU, (
        f"{name} returned {type(got).__name__} of length {len(got) if hasattr(got, '__len__') else '?'}, expected a "
        f"list of cfg.num_iterations = {MU} dicts, one per update")
    for k, (mine, theirs) in enumerate(zip(got, ref), start=1):
        missing = [key for key in MU_STATS if key not in mine]
        assert not missing, f"{name}: update {k}'s dict lacks {missing} (expected the keys {list(MU_STATS)})"
        for key in ("ratio_mean", "clip_low", "clip_high", "loss"):   # the ratio first: a wrong old shows there
            tol = 1e-5 if key == "ratio_mean" else 1e-6
            assert math.isclose(float(mine[key]), theirs[key], abs_tol=tol), (
                f"{name}: update {k}'s {key} is {float(mine[key]):.6f}, the engine's {theirs[key]:.6f} "
                f"({MU_HINTS[key]})")
    gap = _same_weights(name, f"after {MU} updates", _weights(policy), ref_weights, _weights(start),
                        "Each update clips: -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), then the mean per "
                        "sequence and over the N completions, then optimizer_step with cfg.grad_clip.")
    ratios = ", ".join(f"{s['ratio_mean']:.3f}" for s in ref)
    clipped = ", ".join(f"{s['clip_low'] + s['clip_high']:.0%}" for s in ref)
    print(f"{name}: correct ({MU} updates as update_policy makes them, weights to {gap:.1e}; mean ratio "
          f"{ratios}, tokens clipped {clipped})")
