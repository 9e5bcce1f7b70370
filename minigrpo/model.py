"""The policy: a tiny Llama-style causal LM built from a transformers config (no download), and its log-probs.

`completion_logprobs` is the training forward pass: log pi(token | prefix) of every completion token at
the sampling temperature, the numbers the sampler computes (tests/test_sampler.py). Prompts are
left-padded, so a token's position is the number of real tokens before it.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .config import Config


def build_model(cfg: Config, tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A randomly initialised Llama-style causal LM sized by `cfg`, with `tok`'s vocabulary."""
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_seq_len,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    # the generation defaults follow the tokenizer, so pipelines stop at our EOS
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model


def num_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: count of real tokens before each one. (N, L) -> (N, L)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


# transformers 5.24 renamed the forward's KV-cache argument (and output field) `past_key_values` to `cache`; the old
# name still works but warns, and is to go in 5.40. Older versions, such as the GPU image's 5.17, know only the old one.
CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def cache_kwarg(cache) -> dict:
    """`{name: cache}` for passing a KV cache to a transformers forward, under the name this version takes.

    Pass a `DynamicCache` you created: the forward fills it in place, so it never has to be read back from
    the output (whose field was renamed too).
    """
    return {CACHE_ARG: cache}


def completion_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                        completion_mask: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False):
    """Log-probs of the completion tokens under `model` (the training forward pass).

    Symbol          | Shape  | Description
    prompt_ids      | (N, P) | left-padded prompt tokens
    prompt_mask     | (N, P) | 1 for real prompt tokens, 0 for padding
    completion_ids  | (N, T) | right-padded completion tokens (EOS included)
    completion_mask | (N, T) | 1 for real completion tokens (EOS included), else 0

    Returns logp (N, T), log pi(c_t | prompt, c_<t) at `temperature` (0 where masked), and with
    `with_entropy` the entropy (N, T) of each of those next-token distributions.
    """
    P, T = prompt_ids.shape[1], completion_ids.shape[1]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)        # (N, P+T)
    attn = torch.cat([prompt_mask, completion_mask], dim=1)            # (N, P+T)
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=positions(attn), use_cache=False)
    logits = out.logits[:, P - 1:P + T - 1, :].float() / temperature  # (N, T, V) predicts c_t
    logp_all = F.log_softmax(logits, dim=-1)                           # (N, T, V)
    logp = logp_all.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)  # (N, T)
    logp = logp * completion_mask
    if not with_entropy:
        return logp
    entropy = -(logp_all.exp() * logp_all).sum(-1) * completion_mask  # (N, T)
    return logp, entropy


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present (for "auto"), else CPU; any explicit torch device string is honoured."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for, but CUDA is not available here; use --device cpu")
    return torch.device(name)
