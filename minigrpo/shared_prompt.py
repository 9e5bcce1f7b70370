"""Decoding G samples against one copy of their prompt's keys and values (shared-prefix, or cascade, attention).

A group's G completions continue the same prompt, so the prompt's keys and values are the same for all G.
Copying them G times over (DynamicCache.batch_repeat_interleave) makes every decoding step read, append to
and, as rows finish, re-index N = B*G copies of them. Here the prompt cache stays at B rows and only the
completion's keys and values are cached per row. Attention at a decoding step splits over the two parts
and joins them in one softmax:

    scores  = [ q K_prompt^T + prompt_bias ,  q K_completion^T ] * scale      (n, heads, 1, P + t)
    output  = softmax(scores)[:, :P] V_prompt + softmax(scores)[:, P:] V_completion

and the prompt part is one batched matmul per prompt: its G queries (G, d_head) against its P keys. This is
the same arithmetic as attention over the concatenated cache (tests/test_sampler.py checks the tokens and
log-probs against it), in another order. Juravsky et al. 2024 ("Hydragen") and FlashInfer's cascade
attention do this on GPUs; the sampler uses it for any transformers model whose attention layers go through
its attention interface (Llama, Qwen2, Mistral, ...; `supported`).

Symbol        | Shape             | Description
prompt keys   | (B, kv_heads, P, d_head) | the prefill's cache, per layer, one row per prompt
prompt_bias   | (B, 1, 1, P)      | 0 for real prompt tokens, the dtype's minimum for left padding
rows          | (n,)              | which of the N = B*G rows the decoding batch holds (row // G: its prompt)
"""
from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.models.llama.modeling_llama import repeat_kv   # GQA: each kv head serves its query heads

NAME = "minigrpo_shared_prompt"


class SharedPrompt:
    """The B prompts' keys and values (from the prefill's cache) and which rows the decoding batch holds."""

    def __init__(self, cache, prompt_mask: torch.Tensor, group_size: int):
        self.keys = [layer.keys for layer in cache.layers]            # (B, h_kv, P, d) per layer
        self.values = [layer.values for layer in cache.layers]
        self.B, self.G = prompt_mask.shape[0], group_size
        self.N = self.B * self.G
        dtype = self.keys[0].dtype
        self.bias = ((1 - prompt_mask.to(dtype)) * torch.finfo(dtype).min)[:, None, None, :]   # (B, 1, 1, P)
        self.select(torch.arange(self.N, device=prompt_mask.device))

    def select(self, rows: torch.Tensor) -> None:
        """The decoding batch now holds these rows (n,) of the N."""
        self.rows = rows
        self.row_bias = self.bias.index_select(0, rows // self.G)      # (n, 1, 1, P)

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """(n, h, 1, w) of the batch's rows -> (B, h, G, w) of all N rows (w: d or P) (0 for rows not in the batch)."""
        n, h, _, w = x.shape
        if n != self.N:
            x = x.new_zeros(self.N, h, 1, w).index_copy(0, self.rows, x)   # (N, h, 1, w)
        return x.view(self.B, self.G, h, w).transpose(1, 2)                   # (B, h, G, w)

    def ungrouped(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, G, w) -> (n, h, 1, w) of the batch's rows."""
        B, h, G, w = x.shape
        x = x.transpose(1, 2).reshape(self.N, h, 1, w)                        # (N, h, 1, w)
        return x if len(self.rows) == self.N else x.index_select(0, self.rows)


def shared_prompt_attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                            shared_prompt: SharedPrompt | None = None, **kwargs):
    """One decoding step's attention (the transformers attention-interface signature): query (n, heads, 1, d_head)
    over the shared prompt cache and the rows' own completion keys/values (n, kv_heads, t, d_head)."""
    sp = shared_prompt
    if sp is None or query.shape[2] != 1:
        raise ValueError(f"{NAME} attention decodes one token per row against a SharedPrompt "
                         f"(got {query.shape[2]} positions, shared_prompt={sp is not None})")
    groups = getattr(module, "num_key_value_groups", 1)
    layer = module.layer_idx
    k_prompt = repeat_kv(sp.keys[layer], groups)                                   # (B, h, P, d)
    v_prompt = repeat_kv(sp.values[layer], groups)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)                 # (n, h, t, d)
    P = k_prompt.shape[2]
    prompt_scores = sp.ungrouped(sp.grouped(query) @ k_prompt.transpose(2, 3))      # (n, h, 1, P)
    own_scores = query @ key.transpose(2, 3)                                          # (n, h, 1, t)
    if attention_mask is not None:   # a mask over the completion part (none is needed for one token per row)
        own_scores = (own_scores.masked_fill(~attention_mask, torch.finfo(own_scores.dtype).min)
                      if attention_mask.dtype == torch.bool else own_scores + attention_mask)
    scores = torch.cat([prompt_scores * scaling + sp.row_bias, own_scores * scaling], dim=-1)   # (n, h, 1, P+t)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = sp.ungrouped(sp.grouped(probs[..., :P]) @ v_prompt) + probs[..., P:] @ value   # (n, h, 1, d)
    return out.transpose(1, 2).contiguous(), None                                     # (n, 1, h, d)


AttentionInterface.register(NAME, shared_prompt_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)   # one token per row: no mask (None) for the completion part


def supported(model) -> bool:
    """Whether `model`'s attention layers go through transformers' attention interface (so that this one can be set)."""
    layers = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "scaling")]
    return bool(getattr(model, "_supports_attention_backend", False)) and bool(layers) and \
        hasattr(model, "set_attn_implementation")


@contextlib.contextmanager
def attention_as(model, name: str):
    """Run `model` with the attention implementation `name` inside the block, and with its own after it."""
    own = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(own)
