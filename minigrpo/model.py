"""The policy: a tiny Llama-style causal LM built from a transformers config (no download), and its log-probs.

`completion_logprobs` is the training forward pass: log pi(token | prefix) of every completion token at
the sampling temperature, the numbers the sampler computes (tests/test_sampler.py). Prompts are
left-padded, so a token's position is the number of real tokens before it. It works for any
transformers causal LM: the LM head runs only at the completion's positions (`logits_to_keep`), and a
selective log-softmax takes each token's log-prob without a (N, T, V) log-softmax tensor (TRL's
`selective_log_softmax` does the same; logprobs.py), so with micro-batches of k rows the logits held at once are
(k, T, V), not (N, P+T, V). Everything that trains or scores calls `completion_logprobs`; the ways it runs (each
prompt once: _shared_prompt_logprobs; each distinct row once: plain_logprobs; the head only where needed:
_head_logprobs; as a module for DDP and torch.compile: LogprobHead) are its parts, chosen by its arguments.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import time

import torch
import torch.nn.functional as F
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .config import Config
from .logprobs import BLOCK, LinearLogprob, entropy_of, selective_log_softmax  # noqa: F401 (model.X still)


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


@functools.lru_cache(maxsize=None)
def _keeps_logits(forward_owner: type) -> bool:
    """Whether this model class's forward takes `logits_to_keep` (transformers' causal LMs do)."""
    return "logits_to_keep" in inspect.signature(forward_owner.forward).parameters


def base_model(model):
    """The model itself, out of a torch.compile wrapper and a DDP wrapper (either, both or none)."""
    model = getattr(model, "_orig_mod", model)
    model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return getattr(model, "_orig_mod", model)


# causal LMs whose logits are exactly lm_head(last hidden state): no soft-capping, no logit scale
PLAIN_HEAD = ("llama", "qwen2", "qwen3", "mistral", "phi3", "olmo2")


def plain_head(model) -> bool:
    """Whether `model` (a transformers causal LM) computes its logits as lm_head(hidden) and nothing more."""
    config = getattr(model, "config", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return (getattr(config, "model_type", None) in PLAIN_HEAD and isinstance(head, torch.nn.Linear)
            and not getattr(config, "final_logit_softcapping", None) and hasattr(model, "base_model"))


def _head_logprobs(lm, input_ids, attention_mask, position_ids, completion_ids, temperature: float) -> torch.Tensor:
    """log pi(c_t | prefix) (N, T) of a plain-head causal LM `lm`: its decoder, then LinearLogprob at the
    completion's positions."""
    T = completion_ids.shape[1]
    out = lm.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=False)
    hidden = out.last_hidden_state[:, -(T + 1):-1, :]                             # (N, T, d) predicts c_t
    return _head(lm, hidden, completion_ids, temperature)


def _head(lm, hidden: torch.Tensor, completion_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """LinearLogprob of the hidden states (N, T, d) that predict `completion_ids` (N, T): log-probs (N, T) at
    `temperature`. The temperature scales h and b rather than the logits inside the Function: torch.compile with
    dynamic=True makes it a symbolic float, which Dynamo failed to trace inside an autograd.Function."""
    head = lm.get_output_embeddings()
    device = hidden.device
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else torch.float32
    weight, bias = head.weight, head.bias
    if temperature != 1.0:   # logits / tau = (h / tau) W^T + b / tau, outside the Function (docstring)
        hidden, bias = hidden / temperature, None if bias is None else bias / temperature
    with torch.autocast(device_type=device.type, enabled=False):
        logp = LinearLogprob.apply(hidden.reshape(-1, hidden.shape[-1]), weight, bias,
                                   completion_ids.reshape(-1), dtype)                 # (N*T,)
    return logp.view(completion_ids.shape)


BUCKET_COST = 64   # a decoder pass's fixed cost in row-positions of work (about that, forward + backward, CPU preset)
# Under autocast the completions go through in one pass: on the CPU preset a second pass under bfloat16 autocast cost
# more than the padding it saved (learning 0.199 -> 0.216 s a step), while in float32 it paid (0.254 -> 0.232 s).


def length_buckets(lengths: list[int], cost: float | None = None) -> list[int]:
    """Split rows of these completion lengths into buckets by length, each bucket padded to its longest: the
    upper bounds, shortest first, that minimise sum over buckets of rows * (bound - 1) + cost (a pass runs
    bound - 1 completion positions per row, and each pass costs `cost` more). Exact, by dynamic programming
    over the distinct lengths. `cost` defaults to BUCKET_COST."""
    cost = BUCKET_COST if cost is None else cost
    distinct = sorted(set(max(1, n) for n in lengths))
    if cost == float("inf"):
        return distinct[-1:]
    count = [sum(1 for n in lengths if max(1, n) == v) for v in distinct]
    best, cut = [0.0] + [float("inf")] * len(distinct), [0] * (len(distinct) + 1)
    for j in range(1, len(distinct) + 1):       # best[j]: the first j distinct lengths in buckets
        rows = 0
        for i in range(j, 0, -1):                # the last bucket holds distinct lengths i..j
            rows += count[i - 1]
            total = best[i - 1] + rows * (distinct[j - 1] - 1) + cost
            if total < best[j]:
                best[j], cut[j] = total, i - 1
    bounds, j = [], len(distinct)
    while j:
        bounds.append(distinct[j - 1])
        j = cut[j]
    return bounds[::-1]


def _shared_prompt_logprobs(lm, prompt_ids, prompt_mask, completion_ids, completion_mask,
                           temperature: float) -> torch.Tensor:
    """_head_logprobs with each distinct prompt run once: the G rows of a group share their prompt's keys and values.

    The G completions of a prompt see the same P prompt tokens, so the decoder's work on them is the same G
    times over. Here the U distinct prompts among the N rows go through the decoder once, with a KV cache
    (autograd records it); each row takes its prompt's cache and last hidden state by index, and only the
    completion tokens go through the decoder again, in buckets of similar length (length_buckets; one
    bucket under autocast), each padded to its own longest rather than the batch's. The backward sums
    each prompt's gradient over its rows (the index's backward), so the result and its gradient are those
    of the full forward, up to rounding.
    Work: U*P + sum over rows of (its bucket's length - 1) token forwards instead of N*(P+T).

    Symbol          | Shape  | Description
    prompt_ids      | (N, P) | left-padded prompt tokens, equal within a group
    prompt_mask     | (N, P) | 1 for real prompt tokens
    completion_ids  | (N, T) | right-padded completion tokens
    completion_mask | (N, T) | 1 for real completion tokens
    Returns log pi(c_t | prompt, c_<t) (N, T) at `temperature` (not masked; 0 past a row's bucket).
    """
    P, T = prompt_ids.shape[1], completion_ids.shape[1]
    prompts, row_prompt = torch.unique(torch.cat([prompt_ids, prompt_mask], dim=1), dim=0,
                                       return_inverse=True)                       # (U, 2P), (N,)
    ids, mask = prompts[:, :P], prompts[:, P:]                                    # (U, P) each
    cache = DynamicCache()
    out = lm.base_model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True,
                        **cache_kwarg(cache))
    last = out.last_hidden_state[:, -1:, :]                                       # (U, 1, d) predicts c_1
    if torch.is_autocast_enabled(prompt_ids.device.type):   # one pass of every row (BUCKET_COST), no host sync
        buckets = [(None, T)]
    else:
        lengths = completion_mask.sum(1)                                          # (N,)
        bounds = length_buckets(lengths.tolist())
        lows = [0] + bounds[:-1]
        buckets = [(None, bounds[0])] if len(bounds) == 1 else \
            [(((lengths > lo) & (lengths <= hi)).nonzero().squeeze(-1), hi) for lo, hi in zip(lows, bounds)]
    parts = []
    for rows, Tb in buckets:   # rows (n,) of this bucket (None: all N), padded to Tb <= T
        pick = (lambda x: x) if rows is None else (lambda x: x.index_select(0, rows))
        prompt = pick(row_prompt)                                                 # (n,) each row's prompt
        hidden = last.index_select(0, prompt)                                     # (n, 1, d)
        if Tb > 1:   # the rows' own cache: their prompts' keys and values by index (the backward adds them up)
            own = DynamicCache()
            for i, layer in enumerate(cache.layers):
                own.update(layer.keys.index_select(0, prompt), layer.values.index_select(0, prompt), i)
            attn = torch.cat([pick(prompt_mask), pick(completion_mask)[:, :Tb - 1]], dim=1)   # (n, P+Tb-1)
            rest = lm.base_model(input_ids=pick(completion_ids)[:, :Tb - 1], attention_mask=attn,
                                 position_ids=positions(attn)[:, P:], use_cache=True,
                                 **cache_kwarg(own)).last_hidden_state           # (n, Tb-1, d) predict c_2..c_Tb
            hidden = torch.cat([hidden, rest], dim=1)                             # (n, Tb, d)
        logp = _head(lm, hidden, pick(completion_ids)[:, :Tb].contiguous(), temperature)   # (n, Tb)
        parts.append(F.pad(logp, (0, T - Tb)))                                    # (n, T)
    if len(parts) == 1:
        return parts[0]                                                           # (N, T)
    order = torch.cat([rows for rows, _ in buckets])                              # (N,) rows, bucket by bucket
    return torch.cat(parts).index_select(0, torch.argsort(order))                 # (N, T) in the rows' order


class LogprobHead(torch.nn.Module):
    """A plain-head causal LM whose forward is the training forward pass (_head_logprobs, or _shared_prompt_logprobs
    with `share`), so that DDP, which all-reduces only what goes through its own forward, can wrap it."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature: float = 1.0,
                share: bool = False, merge: bool = False):
        return plain_logprobs(self.lm, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, share,
                              merge)


def distinct_rows(prompt_ids, prompt_mask, completion_ids, completion_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows that are equal (the same real prompt and completion tokens) as one: `first` (U,), a row of each
    distinct one, and `inverse` (N,), which of them each row is, so that x[first][inverse] is x row by row."""
    key = torch.cat([prompt_ids.masked_fill(prompt_mask == 0, -1),
                     completion_ids.masked_fill(completion_mask == 0, -1)], dim=1)       # (N, P+T)
    distinct, inverse = torch.unique(key, dim=0, return_inverse=True)                    # (U, P+T), (N,)
    return first_rows(inverse, torch.arange(len(key), device=key.device), len(distinct)), inverse


def first_rows(inverse: torch.Tensor, rows: torch.Tensor, count: int) -> torch.Tensor:
    """The first of `rows` (n,) in each of `count` classes, given each row's class `inverse` (n,). (count,)"""
    return rows.new_empty(count).scatter_reduce(0, inverse, rows, "amin", include_self=False)


def stochastic(lm) -> bool:
    """Whether `lm`'s training forward is random (dropout), so that equal rows do not give equal outputs."""
    return lm.training and (any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in lm.modules())
                            or float(getattr(getattr(lm, "config", None), "attention_dropout", 0.0) or 0.0) > 0)


def plain_logprobs(lm, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature: float,
                   share: bool, merge: bool = False) -> torch.Tensor:
    """The training forward of a plain-head LM `lm`: _shared_prompt_logprobs with `share`, else _head_logprobs
    of prompt and completion in one sequence. With `merge`, rows that are equal (a group's samples often are:
    on the CPU preset about 1 in 3.6 trained rows is distinct) go through it once and their log-probs are
    copied by index, whose backward adds their gradients up: the same log-probs and gradient as each row's own
    forward. (N, T), not masked."""
    if merge and len(prompt_ids) and not stochastic(lm):
        first, inverse = distinct_rows(prompt_ids, prompt_mask, completion_ids, completion_mask)
        if len(first) < len(inverse):
            pick = lambda x: x.index_select(0, first)                                   # noqa: E731
            return plain_logprobs(lm, pick(prompt_ids), pick(prompt_mask), pick(completion_ids),
                                  pick(completion_mask), temperature, share).index_select(0, inverse)   # (N, T)
    if share:
        return _shared_prompt_logprobs(lm, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature)
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)                    # (N, P+T)
    attn = torch.cat([prompt_mask, completion_mask], dim=1)                       # (N, P+T)
    return _head_logprobs(lm, input_ids, attn, positions(attn), completion_ids, temperature)


def completion_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                        completion_mask: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False,
                        share_prompts: bool = False, merge: bool = False):
    """Log-probs of the completion tokens under `model` (the training forward pass).

    Symbol          | Shape  | Description
    prompt_ids      | (N, P) | left-padded prompt tokens
    prompt_mask     | (N, P) | 1 for real prompt tokens, 0 for padding
    completion_ids  | (N, T) | right-padded completion tokens (EOS included)
    completion_mask | (N, T) | 1 for real completion tokens (EOS included), else 0

    Returns logp (N, T), log pi(c_t | prompt, c_<t) at `temperature` (0 where masked), and with
    `with_entropy` the entropy (N, T) of each of those next-token distributions (no gradient). With
    `share_prompts` (a plain-head LM, no entropy), each distinct prompt goes through the decoder once
    (_shared_prompt_logprobs); with `merge` (the same), each distinct row once (plain_logprobs).
    """
    T = completion_ids.shape[1]
    inner = base_model(model)
    args = (prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, share_prompts, merge)
    if not with_entropy and isinstance(inner, LogprobHead):             # through its DDP / compile wrapper
        return model(*args) * completion_mask
    if not with_entropy and model is inner and plain_head(inner):       # no (N, T, V) logits at all
        return plain_logprobs(inner, *args) * completion_mask
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)        # (N, P+T)
    attn = torch.cat([prompt_mask, completion_mask], dim=1)            # (N, P+T)
    lm = inner.lm if isinstance(inner, LogprobHead) else None            # with_entropy: the LM itself (lessons)
    keep = {"logits_to_keep": T + 1} if _keeps_logits(type(lm or inner)) else {}   # the LM head at the last T+1
    out = (lm or model)(input_ids=input_ids, attention_mask=attn, position_ids=positions(attn), use_cache=False,
                        **keep)
    logits = out.logits[:, -(T + 1):-1, :]                              # (N, T, V) position P-1+t predicts c_t
    logp = selective_log_softmax(logits, completion_ids, temperature) * completion_mask   # (N, T)
    if not with_entropy:
        return logp
    return logp, entropy_of(logits, temperature) * completion_mask   # (N, T)


def sync_clock(device: torch.device) -> float:
    """time.perf_counter(), after the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def precision(device: torch.device, dtype: str = "float32"):
    """A context for forwards in `dtype` (autocast: the weights stay float32, matmuls run in 16 bits), or none."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present (for "auto"), else CPU; any explicit torch device string is honoured."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for, but CUDA is not available here; use --device cpu")
    return torch.device(name)
