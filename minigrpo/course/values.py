"""Lesson 8's measurement of the critic: the true values V(s_t) of a policy by Monte Carlo, beside the critic's.

The note says a critic misjudges the value of intermediate tokens (section 4). Along one sampled
completion per prompt, the value of every prefix s_t = prompt + c_<t is estimated by sampling
continuations from it (with 0/1 rewards, the standard error is at most 0.5 / sqrt(rollouts)) and
compared with the trained critic's V(s_t) and with the prompt-level baseline V(s_0) that a group mean
estimates. `warm_up_critic` trains a critic on a frozen policy's rollouts until its error stops falling, so
that the comparison is with a critic that has learned what it can (lessons 8 and 11).
"""
from __future__ import annotations

import math

import torch

from ..reward import score
from ..sampler import pad_prompts, sample_group
from ..tokenizer import decode_batch, encode


@torch.no_grad()
def monte_carlo_values(policy, tok, records: list[dict], reward_fn, *, max_new_tokens: int,
                       rollouts: int = 32, temperature: float = 1.0, seed: int = 0, stride: int = 1) -> list[dict]:
    """True values V^pi(s_t) along one sampled completion per prompt, by Monte Carlo.

    For each record: sample one completion c; for every `stride`-th prefix s_t = prompt + c_<t (t = 0,
    stride, 2 stride, ...), sample `rollouts` continuations and average their rewards. Returns one dict per
    record: {"prompt", "completion_ids" (list), "values": [V(s_0), V(s_stride), ...]} and, with stride > 1,
    "positions": the t of each value. The standard error of each value is at most 0.5 / sqrt(rollouts) for
    0/1 rewards.
    """
    device = next(policy.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for r in records:
        prompt = encode(tok, r["prompt"])
        ids, mask = pad_prompts([prompt], tok.pad_token_id, device)         # (1, P)
        c = sample_group(policy, ids, mask, group_size=1, max_new_tokens=max_new_tokens,
                         eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, temperature=temperature,
                         generator=gen)
        L = int(c.completion_mask.sum())
        tokens = c.completion_ids[0, :L].tolist()
        values, positions = [], list(range(0, L, stride))
        for t in positions:
            pids, pmask = pad_prompts([prompt + tokens[:t]], tok.pad_token_id, device)  # (1, P+t)
            cont = sample_group(policy, pids, pmask, group_size=rollouts, max_new_tokens=max_new_tokens - t,
                                eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, temperature=temperature,
                                generator=gen)
            prefix = decode_batch(tok, [tokens[:t]])[0]
            texts = [prefix + x for x in decode_batch(tok, cont.completion_ids)]
            values.append(sum(score(reward_fn, [r["prompt"]] * rollouts, texts, [r] * rollouts)) / rollouts)
        out.append({"prompt": r["prompt"], "completion_ids": tokens, "values": values,
                    **({"positions": positions} if stride > 1 else {})})
    return out


@torch.no_grad()
def critic_values(critic, tok, traces: list[dict]) -> list[list[float]]:
    """The critic's V(s_t) along each trace of monte_carlo_values (same states)."""
    device = next(critic.parameters()).device
    out = []
    for tr in traces:
        ids, mask = pad_prompts([encode(tok, tr["prompt"])], tok.pad_token_id, device)   # (1, P)
        c = torch.tensor([tr["completion_ids"]], device=device)                         # (1, L)
        out.append(critic(ids, mask, c, torch.ones_like(c))[0].tolist())
    return out


def group_mean_error(p: float, v: float, group_size: int) -> float:
    """E|m - v| for the mean m of G sampled 0/1 rewards, each 1 with probability p = V(s_0): how far the
    baseline GRPO actually uses (a G-sample group mean) lies from the value v, exactly (a binomial sum)."""
    G = group_size
    return sum(math.comb(G, k) * p**k * (1 - p) ** (G - k) * abs(k / G - v) for k in range(G + 1))


def value_errors(traces: list[dict], group_size: int = 8) -> dict:
    """Mean |error| by token position t of the critic, of the prompt-level baseline V(s_0) (an oracle:
    exact at t = 0 by construction), and of what a group baseline actually is, the mean of G samples.
    A trace's "critic" holds V(s_t) at every position; its "values" those at its "positions" (default: all).

    Position 0 is the prompt (where a group mean is an unbiased baseline); t >= 1
    are the intermediate states the note says a critic misjudges.
    """
    by_t: dict[int, dict] = {}
    for tr in traces:
        positions = tr.get("positions", range(len(tr["values"])))   # monte_carlo_values' stride
        for t, v in zip(positions, tr["values"]):
            c = tr["critic"][t]
            e = by_t.setdefault(t, {"n": 0, "critic": 0.0, "prompt_baseline": 0.0, "group_mean": 0.0})
            e["n"] += 1
            e["critic"] += abs(c - v)
            e["prompt_baseline"] += abs(tr["values"][0] - v)
            e["group_mean"] += group_mean_error(tr["values"][0], v, group_size)
    return {t: {"n": e["n"], **{k: e[k] / e["n"] for k in ("critic", "prompt_baseline", "group_mean")}}
            for t, e in sorted(by_t.items())}


def warm_up_critic(policy, critic, tok, records: list[dict], held_out: list[dict], reward_fn, cfg, *,
                   max_steps: int = 300, check_every: int = 10, patience: int = 3, min_gain: float = 0.01,
                   progress: bool = False) -> list[dict]:
    """Train `critic` on the frozen `policy`'s own rollouts until its value error stops falling.

    Policy evaluation, as PPO's critic would get it if the policy stood still: each step samples cfg's
    B x G completions of prompts from `records`, and every token's target is its completion's reward (the
    return with gamma = 1 and the reward at the end, so its mean given s_t is V(s_t)); one AdamW step of the
    critic's optimizer on the squared error. Every `check_every` steps the error is measured on the
    rollouts of the `held_out` prompts (sampled once, never trained on); training stops when the best check error has not
    fallen by `min_gain` (relative) in `patience` checks, or after `max_steps`. Returns one row per check,
    the first before any training (step 0): {"step", "train_mse", "check_mse"}.
    """
    from tqdm.auto import tqdm
    from ..data import prompt_batch
    from ..optim import optimizer_step
    from ..sampler import rollout

    device = next(policy.parameters()).device
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    policy.eval()

    def batch_mse(ro) -> torch.Tensor:
        s = ro.samples
        mask = s.completion_mask.float()                                             # (N, T)
        values = critic(s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)   # (N, T)
        returns = ro.rewards.to(values.dtype)[:, None].expand_as(values)             # (N, T) R at every token
        return (((values - returns) ** 2) * mask).sum() / mask.sum().clamp(min=1)

    with torch.no_grad():
        held = rollout(policy, tok, held_out, reward_fn, cfg, gen)                   # fixed: never trained on
        first = batch_mse(held).item()
    history, best, since, train = [{"step": 0, "train_mse": None, "check_mse": first}], first, 0, []
    bar = tqdm(range(max_steps), desc="critic warm-up", disable=not progress)
    for step in bar:
        with torch.no_grad():
            ro = rollout(policy, tok, prompt_batch(records, step, cfg.prompts_per_step, cfg.seed), reward_fn, cfg,
                         gen)
        critic.train()
        loss = batch_mse(ro)
        optimizer_step(critic, critic.opt, loss, cfg.grad_clip)
        critic.eval()
        train.append(loss.item())
        if (step + 1) % check_every == 0:
            with torch.no_grad():
                err = batch_mse(held).item()
            history.append({"step": step + 1, "train_mse": sum(train) / len(train), "check_mse": err})
            train = []
            bar.set_postfix(check_mse=f"{err:.4f}")
            if err < best * (1 - min_gain):
                best, since = err, 0
            else:
                since += 1
                if since >= patience:
                    break
    return history
