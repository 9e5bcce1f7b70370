"""Group sampling: G completions per prompt from a causal LM with a KV cache.

GRPO's first stage (DeepSeekMath, section 4.1): for each prompt q, sample a
group of G outputs {o_1, ..., o_G} from the old policy. Generation is most of
the cost of GRPO, so it is done the way inference engines do it:

1. **prefill once per prompt**: run the B (left-padded) prompts through the
   model once, filling the key/value cache;
2. **share it with the group**: repeat each prompt's cache G times
   (B -> B*G rows), instead of running the same prompt G times;
3. **decode one token per step**: feed only the newest token, reusing the
   cache, until every row has produced EOS or `max_new_tokens` is reached.

For every sampled token we keep log pi(token | prefix) at the sampling
temperature. Top-k / top-p only restrict which tokens can be drawn; the
log-prob is always that of the full tempered distribution, i.e. the same
number the training forward pass (`model.completion_logprobs`) computes for
the same token, so it can serve as the old policy's log-prob.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from .model import cache_kwarg, positions


@dataclass
class Samples:
    """A batch of B prompts x G completions (rows of one prompt are contiguous)."""
    prompt_ids: torch.Tensor       # (B*G, P) left-padded prompt tokens
    prompt_mask: torch.Tensor      # (B*G, P) 1 for real prompt tokens
    completion_ids: torch.Tensor   # (B*G, T) right-padded with PAD after EOS
    completion_mask: torch.Tensor  # (B*G, T) 1 up to and including EOS
    logps: torch.Tensor            # (B*G, T) log pi_old(token | prefix), 0 where masked
    entropy: torch.Tensor          # (B*G, T) entropy of pi_old(. | prefix) at each step, 0 where masked
    truncated: torch.Tensor        # (B*G,) True where no EOS within max_new_tokens


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


@torch.no_grad()
def sample_group(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    group_size: int,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Samples:
    """Sample `group_size` completions for each of B left-padded prompts.

    | arg         | shape  | meaning                                 |
    |-------------|--------|-----------------------------------------|
    | prompt_ids  | (B, P) | prompt tokens, left-padded with pad_id  |
    | prompt_mask | (B, P) | 1 for real tokens, 0 for padding        |

    `greedy=True` takes the most likely token (evaluation); the returned
    log-probs are still those of the tempered distribution.
    Returns a `Samples` with B*G rows; completion length T <= max_new_tokens.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    was_training = model.training
    model.eval()
    B, P = prompt_ids.shape
    G = group_size
    # 1. prefill: one forward over the B prompts fills the cache
    cache = DynamicCache()                                                    # filled in place by each forward
    kv = cache_kwarg(cache)
    pos = positions(prompt_mask)                                              # (B, P)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos, **kv, use_cache=True)
    logits = out.logits[:, -1, :].float()                                     # (B, V)
    # 2. share each prompt's cache with its G samples
    cache.batch_repeat_interleave(G)                                          # (B*G, ...) per layer
    logits = logits.repeat_interleave(G, dim=0)                               # (B*G, V)
    attn = prompt_mask.repeat_interleave(G, dim=0)                            # (B*G, P)
    next_pos = pos[:, -1:].repeat_interleave(G, dim=0) + 1                    # (B*G, 1)
    N = B * G
    done = torch.zeros(N, dtype=torch.bool, device=prompt_ids.device)         # (B*G,)
    tokens, logps, masks, entropies = [], [], [], []
    # 3. decode one token per step
    for t in range(max_new_tokens):
        logp_all = F.log_softmax(logits / temperature, dim=-1)                # (B*G, V)
        probs = logp_all.softmax(-1)                                          # (B*G, V) = exp(logp_all)
        if greedy:
            tok = logp_all.argmax(-1)                                         # (B*G,)
        else:
            filtered = top_k or top_p < 1.0
            probs_drawn = filter_logits(logp_all, top_k, top_p).softmax(-1) if filtered else probs  # (B*G, V)
            tok = torch.multinomial(probs_drawn, 1, generator=generator).squeeze(-1)  # (B*G,)
        tok = tok.masked_fill(done, pad_id)                                   # (B*G,)
        masks.append(~done)
        logps.append(logp_all.gather(-1, tok.unsqueeze(-1)).squeeze(-1) * (~done))  # (B*G,)
        entropies.append(-(probs * logp_all).sum(-1) * (~done))              # (B*G,)
        tokens.append(tok)
        done = done | (tok == eos_id)
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)        # (B*G, P+t+1)
        out = model(input_ids=tok.unsqueeze(-1), attention_mask=attn, position_ids=next_pos, **kv, use_cache=True)
        logits = out.logits[:, -1, :].float()                                 # (B*G, V)
        next_pos = next_pos + 1
    model.train(was_training)
    completion_ids = torch.stack(tokens, dim=1)                               # (B*G, T)
    completion_mask = torch.stack(masks, dim=1).long()                        # (B*G, T)
    return Samples(
        prompt_ids=prompt_ids.repeat_interleave(G, dim=0),
        prompt_mask=prompt_mask.repeat_interleave(G, dim=0),
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        logps=torch.stack(logps, dim=1),
        entropy=torch.stack(entropies, dim=1),
        truncated=~done,
    )


def pad_prompts(prompts: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists into (ids (B, P), mask (B, P)) so that all prompts end together."""
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)             # (B, P)
    mask = torch.zeros((len(prompts), P), dtype=torch.long)                   # (B, P)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, P - len(p):] = 1
    return ids.to(device), mask.to(device)
