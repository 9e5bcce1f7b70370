"""Checkers for the exercises of lesson 09 (the GRPO family's tricks, measured).

Each checker takes the reader's function, calls it on cases worked out by hand (or against the engine,
whose own tests derive its numbers by hand and from TRL's code), and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. gspo_token_ratio(logp, old_logp, mask)      GSPO-token's ratio (GSPO §4.3), value and gradient, (N, T)
    2. sapo_loss(logp, old_logp, adv, mask, tau_pos, tau_neg)   SAPO's soft-gated loss, value and gradient
    3. gradient_weight(method, r, positive, ...)   how much gradient a token of ratio r keeps: GRPO, CISPO, SAPO
    4. dynamic_batch(policy, tok, prompts, reward_fn, cfg, generator)   DAPO's dynamic sampling as a loop around
                                                   the sampler, checked against sampler.dynamic_rollout
"""
from __future__ import annotations

import functools
import math

import torch

from minigrpo.config import make_config
from minigrpo.course.exercises import as_float64, not_done as _not_done
from minigrpo.loss import grpo_loss
from minigrpo.model import build_model
from minigrpo.sampler import dynamic_rollout, informative_groups, rollout
from minigrpo.tokenizer import build_tokenizer

# ---------------------------------------------------------------------------
# Exercise 1: GSPO-token's ratio (GSPO, Zheng et al. 2025, §4.3)
# ---------------------------------------------------------------------------

def _sequence_ratio_by_hand(logp, old, mask) -> torch.Tensor:
    """s_n = exp(mean over the real tokens of log pi_theta - log pi_old), (N,): the formula, written out."""
    out = []
    for lp, o, m in zip(logp.tolist(), old.tolist(), mask.tolist()):
        real = [a - b for a, b, k in zip(lp, o, m) if k]
        out.append(math.exp(sum(real) / len(real)))
    return torch.tensor(out, dtype=torch.float64)


def _gspo_token_batch(seed: int, spread: float):
    """log pi_theta, log pi_old, mask (N = 5, T = 6), float64; garbage log-probs on the padding."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(5, 6, generator=g, dtype=torch.float64) * 3
    logp = old + spread * torch.randn(5, 6, generator=g, dtype=torch.float64)
    mask = torch.ones(5, 6, dtype=torch.float64)
    mask[1, 4:], mask[3, 1:], mask[4, 3:] = 0, 0, 0
    logp, old = torch.where(mask.bool(), logp, 7.0), torch.where(mask.bool(), old, -5.0)
    return logp, old, mask


def _clipped_sequence_loss(ratio, adv, mask, eps_low, eps_high) -> torch.Tensor:
    """GRPO's clipped loss from a given (N, T) ratio: -min(r A, clip(r) A), mean per sequence, then over N."""
    a = adv if adv.dim() == 2 else adv[:, None]
    surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * a)   # (N, T)
    return -((surrogate * mask).sum(-1) / mask.sum(-1)).mean()


def check_gspo_token_ratio(gspo_token_ratio) -> None:
    """Exercise 1: gspo_token_ratio(logp (N, T), old_logp (N, T), mask (N, T)) -> (N, T) GSPO-token ratios."""
    name = "gspo_token_ratio"
    logp, old, mask = _gspo_token_batch(0, 0.3)
    if _not_done(name, gspo_token_ratio(logp.clone().requires_grad_(), old, mask)):
        return
    for seed, spread in ((0, 0.3), (1, 0.05), (2, 1.0)):
        logp, old, mask = _gspo_token_batch(seed, spread)
        s = _sequence_ratio_by_hand(logp, old, mask)                                 # (N,)
        mine = logp.clone().requires_grad_()
        got = gspo_token_ratio(mine, old, mask)
        assert isinstance(got, torch.Tensor) and got.shape == logp.shape, (
            f"{name} returned {type(got).__name__} of shape {tuple(getattr(got, 'shape', ()))}, expected an "
            f"(N, T) = {tuple(logp.shape)} tensor")
        real = mask.bool()
        value = got.detach().to(torch.float64)
        assert torch.allclose(value[real], s[:, None].expand_as(value)[real], rtol=1e-9, atol=0), (
            f"{name} (seed {seed}): the values at the real tokens are not each completion's sequence ratio s_n "
            f"(exp of the mean log-ratio over its real tokens; token ratios or padding counted?)")
        assert got.requires_grad, f"{name}: the result has no gradient (only s_n is detached, not the whole ratio)"
        w = torch.randn(logp.shape, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
        (grad,) = torch.autograd.grad((got * w * mask).sum(), mine)
        want = w * s[:, None] * mask       # d s_nt / d log pi_nu = s_n [u == t], by hand
        assert torch.allclose(grad * mask, want, rtol=1e-8, atol=1e-12), (
            f"{name} (seed {seed}): d ratio_nt / d log pi_nu should be s_n when u = t and 0 otherwise; your "
            f"gradient differs (is s_n stop-gradiented, and is pi_theta / sg(pi_theta) applied per token?)")
    # with one advantage per completion, GSPO-token's clipped loss is GSPO's, value and gradient (GSPO §4.3)
    logp, old, mask = _gspo_token_batch(3, 0.15)
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0, 0.7], dtype=torch.float64)
    for eps in (0.2, 0.05):
        mine, ref = logp.clone().requires_grad_(), logp.clone().requires_grad_()
        got = _clipped_sequence_loss(gspo_token_ratio(mine, old, mask), adv, mask, eps, eps)
        want, _ = grpo_loss(ref, old, adv, mask, eps_low=eps, eps_high=eps, importance_sampling_level="sequence")
        (g_got,), (g_want,) = torch.autograd.grad(got, mine), torch.autograd.grad(want, ref)
        got, want = float(got.detach()), float(want.detach())
        assert math.isclose(got, want, rel_tol=1e-9), (
            f"{name}: with one advantage per completion the clipped loss is {got:.6g}, GSPO's is {want:.6g} "
            f"(eps {eps})")
        assert torch.allclose(g_got * mask, g_want * mask, rtol=1e-7, atol=1e-12), (
            f"{name}: with one advantage per completion, the gradient differs from GSPO's (eps {eps})")
    print(f"{name}: correct (values and gradients on 3 random batches; with one advantage per completion its "
          f"clipped loss equals GSPO's in value and gradient)")


# ---------------------------------------------------------------------------
# Exercise 2: SAPO's soft gate (Gao et al. 2025, arXiv 2511.20347; TRL's loss_type="sapo")
# ---------------------------------------------------------------------------

def _sapo_by_hand(logp, old, adv, mask, tau_pos, tau_neg) -> torch.Tensor:
    """-mean_n mean_t sigmoid(tau (r - 1)) 4 / tau * A_n, tau = tau_pos where A_n > 0, else tau_neg."""
    r = torch.exp(torch.where(mask.bool(), logp - old, torch.zeros_like(logp)))      # (N, T)
    tau = torch.full_like(adv, tau_neg).masked_fill(adv > 0, tau_pos)[:, None]       # (N, 1)
    gate = torch.sigmoid(tau * (r - 1)) * 4 / tau                                     # (N, T)
    return -((gate * adv[:, None] * mask).sum(-1) / mask.sum(-1)).mean()


def check_sapo_loss(sapo_loss) -> None:
    """Exercise 2: sapo_loss(logp, old_logp, adv (N,), mask, tau_pos, tau_neg) -> () loss, and its gradient."""
    name = "sapo_loss"
    logp, old, mask = _gspo_token_batch(4, 0.5)
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0, 0.0], dtype=torch.float64)
    if _not_done(name, sapo_loss(logp.clone().requires_grad_(), old, adv, mask, 1.0, 1.05)):
        return
    # on-policy (r = 1) every gate is 2 / tau and its slope 1: the gradient is GRPO's, -A_n / |o_n| / N, by hand
    mine = old.clone().requires_grad_()
    got = sapo_loss(mine, old, adv, mask, 0.5, 4.0)
    (grad,) = torch.autograd.grad(got, mine)
    lengths = mask.sum(-1)
    want_value = -sum((2 / (0.5 if a > 0 else 4.0)) * a for a in adv.tolist()) / len(adv)
    assert math.isclose(float(got.detach()), want_value, rel_tol=1e-9, abs_tol=1e-12), (
        f"{name} at r = 1 (tau_pos 0.5, tau_neg 4): loss {float(got.detach()):.6g}, expected {want_value:.6g} (each gate "
        f"is sigmoid(0) 4 / tau = 2 / tau; is tau chosen by the sign of A, and the 4 / tau there?)")
    assert torch.allclose(grad * mask, (-adv[:, None] / lengths[:, None] / len(adv)) * mask, rtol=1e-8, atol=1e-12), (
        f"{name} at r = 1: the gradient should be GRPO's, -A_n / (|o_n| N) per token (a mean over each "
        f"completion's tokens, then over completions)")
    # off-policy, against the formula: TRL's defaults and a far colder tau for negative advantages
    for tau_pos, tau_neg in ((1.0, 1.05), (0.5, 4.0)):
        mine, ref = logp.clone().requires_grad_(), logp.clone().requires_grad_()
        got, want = sapo_loss(mine, old, adv, mask, tau_pos, tau_neg), _sapo_by_hand(ref, old, adv, mask, tau_pos,
                                                                                    tau_neg)
        (g_got,), (g_want,) = torch.autograd.grad(got, mine), torch.autograd.grad(want, ref)
        got, want = float(got.detach()), float(want.detach())
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (
            f"{name} (tau_pos {tau_pos}, tau_neg {tau_neg}): loss {got:.6g}, expected {want:.6g}")
        assert torch.allclose(g_got * mask, g_want * mask, rtol=1e-7, atol=1e-12), (
            f"{name} (tau_pos {tau_pos}, tau_neg {tau_neg}): the gradient differs from the gate's (is r computed "
            f"from logp with its gradient, and nothing detached?)")
    print(f"{name}: correct (on-policy by hand: GRPO's gradient; off-policy against the formula, two pairs of tau)")


# ---------------------------------------------------------------------------
# Exercise 3: how much gradient a token keeps, by its ratio, in GRPO, CISPO and SAPO
# ---------------------------------------------------------------------------

WEIGHT_SETTINGS = dict(eps_low=0.2, eps_high=0.28, cap=5.0, tau_pos=1.0, tau_neg=1.05)
# ratios away from every method's kinks (0.8, 1.28, 5), where the one-sided derivatives differ
WEIGHT_RATIOS = (0.2, 0.5, 0.79, 0.81, 0.95, 1.0, 1.1, 1.27, 1.29, 1.6, 2.5, 4.9, 5.1, 8.0)


def _one_token_weight(method: str, r: float, sign: float, s: dict) -> float:
    """-(d loss / d log pi) / A for a single token of ratio r and advantage sign, by autograd."""
    lp = torch.tensor([[math.log(r)]], dtype=torch.float64, requires_grad=True)
    old, mask, adv = torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64), torch.tensor(
        [sign], dtype=torch.float64)
    if method == "sapo":
        loss = _sapo_by_hand(lp, old, adv, mask, s["tau_pos"], s["tau_neg"])
    else:
        loss, _ = grpo_loss(lp, old, adv, mask, eps_low=s["eps_low"], eps_high=s["eps_high"], loss_type=method,
                            cispo_max=s["cap"])
    (grad,) = torch.autograd.grad(loss, lp)
    return -float(grad) / sign


def check_gradient_weight(gradient_weight) -> None:
    """Exercise 3: gradient_weight(method, r (K,), positive, eps_low, eps_high, cap, tau_pos, tau_neg) -> (K,)."""
    name = "gradient_weight"
    r = torch.tensor(WEIGHT_RATIOS, dtype=torch.float64)
    if _not_done(name, gradient_weight("grpo", r, True, **WEIGHT_SETTINGS)):
        return
    for method in ("grpo", "cispo", "sapo"):
        for positive in (True, False):
            got = as_float64(gradient_weight(method, r.clone(), positive, **WEIGHT_SETTINGS)).reshape(-1)
            want = torch.tensor([_one_token_weight(method, x, 1.0 if positive else -1.0, WEIGHT_SETTINGS)
                                 for x in WEIGHT_RATIOS], dtype=torch.float64)
            assert got.shape == want.shape, f"{name}({method!r}) returned {tuple(got.shape)} values for {len(r)} ratios"
            bad = (got - want).abs() > 1e-9 + 1e-7 * want.abs()
            if bad.any():
                i = int(bad.nonzero()[0])
                raise AssertionError(
                    f"{name}({method!r}, A {'> 0' if positive else '< 0'}) at r = {WEIGHT_RATIOS[i]}: "
                    f"{float(got[i]):.6g}, expected {float(want[i]):.6g} (the gradient of r A is r A grad log pi, "
                    f"so an unclipped token's weight is r, not 1)")
    print(f"{name}: correct (GRPO, CISPO and SAPO, both signs of A, {len(WEIGHT_RATIOS)} ratios each, against "
          f"autograd through the engine's losses and SAPO's formula)")


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
