"""Lesson 8's measurement of the critic: the true values V(s_t) of a policy by Monte Carlo, beside the critic's.

The note says a critic misjudges the value of intermediate tokens (section 4). Along one sampled
completion per prompt, the value of every prefix s_t = prompt + c_<t is estimated by sampling
continuations from it (with 0/1 rewards, the standard error is at most 0.5 / sqrt(rollouts)) and
compared with the trained critic's V(s_t) and with the prompt-level baseline V(s_0) that a group mean
estimates.
"""
from __future__ import annotations

import math

import torch

from ..reward import score
from ..sampler import pad_prompts, sample_group
from ..tokenizer import decode_batch, encode


@torch.no_grad()
def monte_carlo_values(policy, tok, records: list[dict], reward_fn, *, max_new_tokens: int,
                       rollouts: int = 32, temperature: float = 1.0, seed: int = 0) -> list[dict]:
    """True values V^pi(s_t) along one sampled completion per prompt, by Monte Carlo.

    For each record: sample one completion c; for every prefix s_t = prompt + c_<t,
    sample `rollouts` continuations and average their rewards. Returns one dict per
    record: {"prompt", "completion_ids" (list), "values": [V(s_0), ..., V(s_{L-1})]}.
    The standard error of each value is at most 0.5 / sqrt(rollouts) for 0/1 rewards.
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
        values = []
        for t in range(L):
            pids, pmask = pad_prompts([prompt + tokens[:t]], tok.pad_token_id, device)  # (1, P+t)
            cont = sample_group(policy, pids, pmask, group_size=rollouts, max_new_tokens=max_new_tokens - t,
                                eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, temperature=temperature,
                                generator=gen)
            prefix = decode_batch(tok, [tokens[:t]])[0]
            texts = [prefix + x for x in decode_batch(tok, cont.completion_ids)]
            values.append(sum(score(reward_fn, [r["prompt"]] * rollouts, texts, [r] * rollouts)) / rollouts)
        out.append({"prompt": r["prompt"], "completion_ids": tokens, "values": values})
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

    Position 0 is the prompt (where a group mean is an unbiased baseline); t >= 1
    are the intermediate states the note says a critic misjudges.
    """
    by_t: dict[int, dict] = {}
    for tr in traces:
        for t, (v, c) in enumerate(zip(tr["values"], tr["critic"])):
            e = by_t.setdefault(t, {"n": 0, "critic": 0.0, "prompt_baseline": 0.0, "group_mean": 0.0})
            e["n"] += 1
            e["critic"] += abs(c - v)
            e["prompt_baseline"] += abs(tr["values"][0] - v)
            e["group_mean"] += group_mean_error(tr["values"][0], v, group_size)
    return {t: {"n": e["n"], **{k: e[k] / e["n"] for k in ("critic", "prompt_baseline", "group_mean")}}
            for t, e in sorted(by_t.items())}
