"""Stages 1-2 of a GRPO step: sample a group of G completions per prompt with a KV cache, then score them.

DeepSeekMath §4.1: for each prompt q, sample G outputs from the old policy. As inference engines do,
the B prompts are prefilled once and each prompt's cache is shared by its G samples (B -> N = B*G
rows, one copy of the cache: shared_prompt.py); decoding feeds only the newest token. The log-prob of
each sampled token is that of the full tempered distribution (top-k / top-p only restrict what is
drawn), the number the training forward computes, so it serves as the old policy's.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from .advantage import informative_groups  # noqa: F401  (also sampler.informative_groups, as lesson 9 reads it)
from .model import _keeps_logits, cache_kwarg, first_rows, positions, sync_clock
from .shared_prompt import NAME, SharedPrompt, attention_as, supported
from .reward import score, soft_overlong_punishment
from .tasks import is_correct
from .tokenizer import decode_batch, encode, stop_ids


@dataclass
class Samples:
    """A batch of B prompts x G completions: N = B*G rows, the G rows of one prompt contiguous."""
    prompt_ids: torch.Tensor       # (N, P) left-padded prompt tokens
    prompt_mask: torch.Tensor      # (N, P) 1 for real prompt tokens
    completion_ids: torch.Tensor   # (N, T) right-padded with PAD after EOS
    completion_mask: torch.Tensor  # (N, T) 1 up to and including EOS
    logps: torch.Tensor            # (N, T) log pi_old(token | prefix), 0 where masked
    entropy: torch.Tensor          # (N, T) entropy of pi_old(. | prefix) at each step, 0 where masked
    truncated: torch.Tensor        # (N,) True where no EOS within max_new_tokens


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / nucleus top-p set to -inf. (N, V) -> (N, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]        # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)  # (N, V)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (always keep the first)
        drop = (probs.cumsum(-1) - probs) >= top_p                      # (N, V)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


def draw_tokens(probs: torch.Tensor, draw: str, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of `probs` (N, V): torch.multinomial, or by inverting the cumulative distribution. (N,)"""
    if draw == "multinomial":
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    u = torch.rand(len(probs), 1, generator=generator, device=probs.device, dtype=probs.dtype)   # (N, 1)
    return _inverse_cdf(probs, u)


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The first token whose cumulative probability exceeds u: (N, V), (N, 1) -> (N,)."""
    cdf = probs.cumsum(-1)                                                        # (N, V)
    tok = (cdf <= u * cdf[:, -1:]).sum(-1)                                        # (N,) tokens whose mass is below u
    return tok.clamp(max=probs.shape[-1] - 1)


def draw_rows(probs: torch.Tensor, rows: torch.Tensor, N: int, draw: str,
              generator: torch.Generator | None) -> torch.Tensor:
    """draw_tokens for the n `rows` (n,) of a batch of N whose distributions are `probs` (n, V), with the random
    numbers that drawing all N rows would use: a row's token does not depend on which other rows are drawn. (n,)

    inverse_cdf takes one uniform number per row, so the N are drawn and the n rows' kept; torch.multinomial
    draws N rows of V (the other rows' distributions do not change the numbers theirs get), so it is given all N.
    """
    if len(rows) == N:
        return draw_tokens(probs, draw, generator)
    if draw == "multinomial":
        full = probs.new_full((N, probs.shape[-1]), 1.0 / probs.shape[-1])                 # (N, V)
        return draw_tokens(full.index_copy(0, rows, probs), draw, generator)[rows]
    u = torch.rand(N, 1, generator=generator, device=probs.device, dtype=probs.dtype)[rows]   # (n, 1)
    return _inverse_cdf(probs, u)


@torch.no_grad()
def sample_group(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, group_size: int,
                 max_new_tokens: int, eos_id: int | list[int], pad_id: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, greedy: bool = False, generator: torch.Generator | None = None,
                 compact: bool = True, draw: str = "multinomial", share_prompt: bool = True,
                 merge: bool = True) -> Samples:
    """Sample G = `group_size` completions for each of B left-padded prompts.

    Symbol      | Shape  | Description
    prompt_ids  | (B, P) | prompt tokens, left-padded with pad_id
    prompt_mask | (B, P) | 1 for real tokens, 0 for padding

    `greedy=True` takes the most likely token (evaluation); the log-probs are still those of the
    tempered distribution. `eos_id` is one stop id or several (tokenizer.stop_ids: EOS, a chat template's
    end of turn); a row ends at the first it samples. With `compact`, a finished row leaves the decoding
    batch: the forward runs on the n <= N unfinished rows and the KV cache keeps only theirs, so a batch
    whose completions end early does not pay for padding. With `merge` (and `compact`) the rows of a prompt
    whose tokens so far are the same are one row of the decoding batch, a node of the group's prefix tree:
    their next-token distribution is the same, so it is computed once and each row draws its own token from
    it. A group of G samples from a peaked policy shares most of its prefixes (on the CPU preset about 1 in
    6 decoding rows is distinct). Either way the draw is still made for all N rows, so the random stream,
    and the sampled tokens, are those of the loop that decodes every row to the end. `draw="inverse_cdf"`
    draws each token with one uniform number per row (the first token whose cumulative probability exceeds
    it) instead of torch.multinomial's V; the same distribution, another random stream. With `share_prompt`
    (and a model whose attention goes through transformers' attention interface), the decoding rows of a
    prompt decode against one copy of its keys and values (shared_prompt.py) instead of one copy each.
    Returns a `Samples` of N = B*G rows; completion length T <= max_new_tokens.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    was_training = model.training
    model.eval()
    B, P = prompt_ids.shape
    G = group_size
    N = B * G
    device = prompt_ids.device
    d = _prefill(model, prompt_ids, prompt_mask, G, share_prompt)             # 1-2. the prompts' cache, first logits
    d.merge = merge and compact
    stops = torch.as_tensor(eos_id, device=device).reshape(-1)              # (S,) stop ids
    d.done = torch.zeros(N, dtype=torch.bool, device=device)                  # (N,)
    d.alive = torch.arange(N, device=device)                                  # (n,) rows drawn for at this step
    d.node = d.alive // G                                                     # (n,) each row's batch row (None: same)
    # 3. decode one token per step; `logits` (m, V) are those of the batch's m rows, row i of `alive` reads node[i]
    with attention_as(model, NAME) if d.shared else contextlib.nullcontext():
        for t in range(max_new_tokens):
            tok = _draw_step(d, N, pad_id, temperature, top_k, top_p, greedy, draw, generator)   # (N,)
            d.done = d.done | torch.isin(tok, stops)
            if bool(d.done.all()) or t == max_new_tokens - 1:
                break
            _next_step(model, d, tok, compact)
    model.train(was_training)
    return Samples(
        prompt_ids=prompt_ids.repeat_interleave(G, dim=0),
        prompt_mask=prompt_mask.repeat_interleave(G, dim=0),
        completion_ids=torch.stack(d.tokens, dim=1),                          # (N, T)
        completion_mask=torch.stack(d.masks, dim=1).long(),                   # (N, T)
        logps=torch.stack(d.logps, dim=1),
        entropy=torch.stack(d.entropies, dim=1),
        truncated=~d.done,
    )


@dataclass
class _Decoding:
    """sample_group's state between decoding steps: the m batch rows the model runs and the n <= N rows drawn for."""
    cache: object                    # the completions' KV cache (with `shared`, the prompts' sits in `extra`)
    kv: dict                         # the forward's keyword for that cache (model.cache_kwarg)
    extra: dict                      # {"shared_prompt": SharedPrompt} with `shared`, else {}
    shared: bool                     # the rows of a prompt decode against one copy of its keys and values
    logits: torch.Tensor             # (m, V) the batch rows' next-token logits
    attn: torch.Tensor               # (m, P + t) the batch rows' attention mask (unused with `shared`)
    next_pos: torch.Tensor           # (m, 1) the position of each batch row's next token
    merge: bool = True               # one batch row per distinct prefix of a prompt's rows
    done: torch.Tensor | None = None     # (N,) rows that have emitted a stop id
    alive: torch.Tensor | None = None    # (n,) the rows drawn for at this step
    node: torch.Tensor | None = None     # (n,) each alive row's batch row; None: row i is batch row i
    tokens: list = field(default_factory=list)      # per step (N,): the drawn tokens, PAD where finished
    logps: list = field(default_factory=list)       # per step (N,): log pi of the drawn token, 0 where finished
    masks: list = field(default_factory=list)       # per step (N,): rows not finished before the step
    entropies: list = field(default_factory=list)   # per step (N,): the entropy of each row's distribution


def _prefill(model, prompt_ids, prompt_mask, G: int, share_prompt: bool) -> _Decoding:
    """One forward over the B prompts fills the cache; the batch's rows are then the B prompts. With share_prompt
    the prompts' cache stays at B rows and a new cache takes the completions' keys (shared_prompt.py); else each
    batch row has its own copy of its prompt's cache."""
    cache = DynamicCache()                                                    # filled in place by each forward
    kv = cache_kwarg(cache)
    pos = positions(prompt_mask)                                              # (B, P)
    keep = {"logits_to_keep": 1} if _keeps_logits(type(model)) else {}      # the LM head at the last position only
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos, **kv, use_cache=True, **keep)
    logits = out.logits[:, -1, :].float()                                     # (m, V), m = B batch rows
    shared = share_prompt and G > 1 and supported(model)
    extra = {}
    if shared:
        extra = {"shared_prompt": SharedPrompt(cache, prompt_mask, G)}
        cache = DynamicCache()
        kv = cache_kwarg(cache)
    return _Decoding(cache=cache, kv=kv, extra=extra, shared=shared, logits=logits, attn=prompt_mask,
                     next_pos=pos[:, -1:] + 1)


def _draw_step(d: _Decoding, N: int, pad_id: int, temperature: float, top_k: int, top_p: float, greedy: bool,
               draw: str, generator) -> torch.Tensor:
    """Draw this step's token for the alive rows from their batch rows' distributions and record it, its log-prob,
    the entropy and the mask for all N rows. Returns the tokens (N,), PAD for rows finished before."""
    device = d.done.device
    logp_all = F.log_softmax(d.logits / temperature, dim=-1)                  # (m, V)
    probs = logp_all.softmax(-1)                                              # (m, V) = exp(logp_all)
    node = d.node
    row_of = (lambda x: x) if node is None else (lambda x: x.index_select(0, node))   # (m, ...) -> (n, ...)
    if greedy:
        drawn = row_of(logp_all.argmax(-1))                                   # (n,)
    else:
        filtered = top_k or top_p < 1.0
        probs_drawn = filter_logits(logp_all, top_k, top_p).softmax(-1) if filtered else probs  # (m, V)
        drawn = draw_rows(row_of(probs_drawn), d.alive, N, draw, generator)   # (n,)
    live = ~d.done[d.alive]                                                   # (n,) rows not finished before t
    tok = torch.full((N,), pad_id, dtype=drawn.dtype, device=device)          # (N,) PAD for finished rows
    tok[d.alive] = drawn.masked_fill(~live, pad_id)
    step_logp = torch.zeros(N, device=device)                                 # (N,)
    step_logp[d.alive] = row_of(logp_all).gather(-1, drawn.unsqueeze(-1)).squeeze(-1) * live
    step_entropy = torch.zeros(N, device=device)                              # (N,)
    step_entropy[d.alive] = row_of(-(probs * logp_all).sum(-1)) * live
    d.masks.append(~d.done)
    d.logps.append(step_logp)
    d.entropies.append(step_entropy)
    d.tokens.append(tok)
    return tok


def _next_step(model, d: _Decoding, tok: torch.Tensor, compact: bool) -> None:
    """The next step's batch rows, each with the batch row (`parent`) whose cache it continues, and their forward on
    the token just drawn: d.logits becomes (m', V)."""
    device = tok.device
    stay = (~d.done[d.alive]).nonzero().squeeze(-1) if compact else torch.arange(len(d.alive), device=device)
    rows = d.alive[stay]                                                      # (n',) of the n rows
    parent = stay if d.node is None else d.node[stay]                         # (n',) each row's batch row
    if d.merge:   # one batch row per distinct (batch row, token): the nodes of the groups' prefix trees
        V = d.logits.shape[-1]
        nodes, d.node = torch.unique(parent * V + tok[rows], return_inverse=True)   # (m',), (n',)
        parent = nodes // V                                                   # (m',)
        first = first_rows(d.node, rows, len(nodes))                          # (m',) a row of each
        step_tok, batch_rows = tok[first], first
    else:
        d.node, step_tok, batch_rows = None, tok[rows], rows
    d.alive = rows
    if len(parent) != len(d.logits) or not torch.equal(parent, torch.arange(len(parent), device=device)):
        d.cache.batch_select_indices(parent)                                  # (m', ...) per layer
        d.attn, d.next_pos = d.attn[parent], d.next_pos[parent]
    if d.shared:
        d.extra["shared_prompt"].select(batch_rows)
    else:
        d.attn = torch.cat([d.attn, torch.ones_like(d.attn[:, :1])], dim=1)   # (m', P+t+1)
    out = model(input_ids=step_tok.unsqueeze(-1), attention_mask=None if d.shared else d.attn,
                position_ids=d.next_pos, **d.kv, use_cache=True, **d.extra)
    d.logits = out.logits[:, -1, :].float()                                   # (m', V)
    d.next_pos = d.next_pos + 1


class CacheGeneration:
    """The default generation.Generation: sample_group (one prefill per prompt, a KV cache, shared prompts, merged
    prefixes) with the Config's decoding settings, on the policy itself."""

    def __init__(self, policy, tok, cfg):
        self.policy, self.tok, self.cfg = policy, tok, cfg

    def sample(self, prompt_ids, prompt_mask, *, group_size, generator) -> Samples:
        cfg, tok = self.cfg, self.tok
        return sample_group(self.policy, prompt_ids, prompt_mask, group_size=group_size,
                            max_new_tokens=cfg.max_new_tokens, eos_id=stop_ids(tok, self.policy),
                            pad_id=tok.pad_token_id, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                            generator=generator, compact=cfg.compact_decoding, draw=cfg.draw,
                            share_prompt=cfg.share_prompts, merge=cfg.merge_prefixes)

    def load_weights(self, policy) -> None:
        self.policy = policy   # it samples the live model: nothing to copy


def pad_prompts(prompts: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists into (ids (B, P), mask (B, P)) so that all prompts end together."""
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)             # (B, P)
    mask = torch.zeros((len(prompts), P), dtype=torch.long)                   # (B, P)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, P - len(p):] = 1
    return ids.to(device), mask.to(device)


@dataclass
class Rollout:
    """Stages 1-2 of a step: the sampled batch, its text, and what the reward made of it."""
    samples: Samples
    completions: list[str]   # (N,) decoded completions
    rewards: torch.Tensor    # (N,) float rewards
    correct: list[bool]      # (N,) whether each final answer is right (tasks.is_correct)
    sample_s: float          # seconds spent sampling and decoding


def rollout(policy, tok, records: list[dict], reward_fn, cfg, generator: torch.Generator,
            generation=None) -> Rollout:
    """Sample G completions for each of the B prompt `records` and score them. `generation` (generation.py)
    samples them; by default sample_group with the Config's settings on `policy`."""
    if generation is None:
        generation = CacheGeneration(policy, tok, cfg)
    device = next(policy.parameters()).device
    t0 = sync_clock(device)
    G = cfg.group_size
    prompt_ids, prompt_mask = pad_prompts([encode(tok, r["prompt"], chat=cfg.chat_template) for r in records],
                                          tok.pad_token_id, device)                      # (B, P)
    s = generation.sample(prompt_ids, prompt_mask, group_size=G, generator=generator)     # N rows
    completions = decode_batch(tok, s.completion_ids, stop_ids(tok, policy))
    sample_s = sync_clock(device) - t0
    group_records = [r for r in records for _ in range(G)]                                  # (N,)
    rewards = score(reward_fn, [r["prompt"] for r in group_records], completions, group_records, generator)
    if cfg.overlong_cache:   # DAPO's soft overlong punishment, on top of the reward
        lengths = s.completion_mask.sum(1).tolist()
        rewards = [r + p for r, p in zip(rewards, soft_overlong_punishment(lengths, cfg.max_new_tokens,
                                                                           cfg.overlong_cache))]
    correct = [is_correct(r, c) for r, c in zip(group_records, completions)]
    return Rollout(s, completions, torch.tensor(rewards, dtype=torch.float32, device=device), correct, sample_s)


def select_groups(ro: Rollout, groups: list[int], group_size: int) -> Rollout:
    """The rollout of the given groups only, in the given order."""
    rows = torch.tensor([g * group_size + i for g in groups for i in range(group_size)], dtype=torch.long,
                        device=ro.rewards.device)                                           # (N',)
    s = Samples(*(getattr(ro.samples, f.name)[rows] for f in fields(Samples)))
    return Rollout(s, [ro.completions[i] for i in rows.tolist()], ro.rewards[rows],
                   [ro.correct[i] for i in rows.tolist()], ro.sample_s)


def concat(rollouts: list[Rollout], pad_id: int) -> Rollout:
    """One rollout of all the rows of several: prompts left-padded to the longest, completions right-padded."""
    P = max(r.samples.prompt_ids.shape[1] for r in rollouts)
    T = max(r.samples.completion_ids.shape[1] for r in rollouts)
    left = lambda x, v: F.pad(x, (P - x.shape[1], 0), value=v)                               # (n, P)
    right = lambda x, v: F.pad(x, (0, T - x.shape[1]), value=v)                              # (n, T)
    parts = [Samples(left(r.samples.prompt_ids, pad_id), left(r.samples.prompt_mask, 0),
                     right(r.samples.completion_ids, pad_id), right(r.samples.completion_mask, 0),
                     right(r.samples.logps, 0.0), right(r.samples.entropy, 0.0), r.samples.truncated)
             for r in rollouts]
    s = Samples(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Samples)))
    return Rollout(s, [c for r in rollouts for c in r.completions], torch.cat([r.rewards for r in rollouts]),
                   [c for r in rollouts for c in r.correct], sum(r.sample_s for r in rollouts))


def dynamic_rollout(sample, batch_size: int, cfg, pad_id: int) -> tuple[Rollout, Rollout, dict]:
    """DAPO's dynamic sampling (§3.2): sample round after round of B prompts (`sample(round)`) until B
    informative groups are in hand or cfg.max_sampling_rounds are spent. Returns every completion
    sampled, the first B informative groups (all of the samples if none is), and what it took."""
    rounds = [sample(0)]
    found = len(informative_groups(rounds[0].rewards, cfg.group_size))
    while found < batch_size and len(rounds) < cfg.max_sampling_rounds:
        rounds.append(sample(len(rounds)))
        found += len(informative_groups(rounds[-1].rewards, cfg.group_size))
    everything = concat(rounds, pad_id) if len(rounds) > 1 else rounds[0]
    groups = informative_groups(everything.rewards, cfg.group_size)[:batch_size]
    spent = {"sampling_rounds": len(rounds), "samples": len(everything.correct), "kept_groups": len(groups)}
    return everything, (select_groups(everything, groups, cfg.group_size) if groups else everything), spent
