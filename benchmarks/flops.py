"""The yardstick for the speed benchmark: a step's useful arithmetic, and this machine's own matmul rate.

A decoder's forward costs, per token, 2 FLOPs per weight of each linear layer it passes through (the
multiply and the add; Kaplan et al. 2020, §2.1), plus attention's two products with the keys it sees:

    linear    2 * layers * (d*(d + 2*kv) + d*d + 3*d*ffn)    q, k, v, o and the SwiGLU MLP (kv = kv_heads*head_dim)
    head      2 * d * V                                      only where a log-prob or a draw is needed
    attention 2 * layers * 2 * d * ctx                       q k^T and a v over ctx keys

and a backward pass costs twice its forward. A GRPO step's *useful* work is the work no correct
engine can skip:

    prefill   the B prompts' real tokens once (padding is not useful), the head at the last one
    decode    each distinct prefix of a group's completions: one forward of its last token. Rows of a
              group whose tokens so far are equal have the same next-token distribution, so one forward
              serves them all (a prefix tree; `distinct_work` counts its nodes)
    learn     forward + backward of the groups whose advantage is not 0 (the others add 0 to the
              gradient): each group's prompt once (its G rows share it), and of each distinct completion
              (equal rows have equal log-probs) the tokens but the last, the head at its positions

Lengths are the step's mean prompt and completion lengths; attention's context is taken at its mean
(it is ~3 % of the arithmetic here). `machine_rate` times torch.mm at the model's own shapes, so that a
step's FLOP rate reads as a fraction of what this machine's matrix units deliver.

Symbol | Shape | Description
d      | int   | hidden size;  ffn: the MLP's width;  V: vocabulary size;  kv: key/value width
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shape:
    """The sizes of a Llama-style decoder that its FLOPs depend on."""
    layers: int
    d: int
    ffn: int
    vocab: int
    kv: int        # width of k and v (= d without grouped-query attention)

    @classmethod
    def of(cls, config) -> "Shape":
        """From a transformers config (LlamaConfig, Qwen2Config, ...)."""
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.vocab_size,
                   kv_heads * head_dim)

    def linear(self) -> int:
        """Forward FLOPs per token of the decoder's linear layers."""
        d = self.d
        return 2 * self.layers * (d * (d + 2 * self.kv) + d * d + 3 * d * self.ffn)

    def head(self) -> int:
        """Forward FLOPs of the LM head at one position."""
        return 2 * self.d * self.vocab

    def attention(self, ctx: float) -> float:
        """Forward FLOPs per token of attention over `ctx` keys."""
        return 2 * self.layers * 2 * self.d * ctx


def step_flops(shape: Shape, prompts: int, group: int, prompt_len: float, completion_len: float,
               kept_groups: float, decode_positions: float | None = None, learn_rows: float | None = None,
               learn_tokens: float | None = None) -> dict[str, float]:
    """Useful FLOPs of one GRPO step (module docstring), by part.

    prompts B, group G, mean real prompt and completion lengths (tokens, EOS included), and the groups that
    carry a non-zero advantage (their G rows are trained). `decode_positions` (the distinct prefixes decoded
    after the first token), `learn_rows` and `learn_tokens` (the distinct trained completions and their
    tokens) come from `distinct_work`; without them every row counts on its own: B*G*(L-1) decoding
    forwards, kept_groups*G rows of L tokens. Returns {"prefill", "decode", "learn", "total"}.
    """
    P, L = prompt_len, completion_len
    prefill = prompts * P * (shape.linear() + shape.attention((P + 1) / 2)) + prompts * shape.head()
    positions = prompts * group * max(L - 1, 0) if decode_positions is None else decode_positions
    decode = positions * (shape.linear() + shape.head() + shape.attention(P + L / 2))
    rows = kept_groups * group if learn_rows is None else learn_rows
    tokens = rows * L if learn_tokens is None else learn_tokens
    learn = 3 * (kept_groups * P * (shape.linear() + shape.attention((P + 1) / 2))          # the prompt, once
                 + (tokens - rows) * (shape.linear() + shape.attention(P + L / 2))        # c_1 .. c_{L-1}
                 + tokens * shape.head())                                                   # L log-probs
    return {"prefill": prefill, "decode": decode, "learn": learn, "total": prefill + decode + learn}


def distinct_work(completion_ids, completion_mask, group: int, kept) -> dict[str, int]:
    """What of a step's sampled batch is distinct, from its tokens: the rows of a group (G consecutive rows)
    with the same first t tokens share the forward that predicts token t + 1.

    Symbol          | Shape  | Description
    completion_ids  | (N, T) | the sampled tokens, right-padded
    completion_mask | (N, T) | 1 for real tokens
    kept            | (N,)   | True for the rows that are trained (their group's advantage is not 0)

    Returns decode_positions (the distinct (group, first t tokens) over the rows with a token at t >= 1, summed
    over t), learn_rows (the distinct (group, completion) among the kept rows) and learn_tokens (their tokens).
    """
    ids, mask, kept = completion_ids.tolist(), completion_mask.tolist(), [bool(k) for k in kept]
    lengths = [sum(m) for m in mask]
    decode = 0
    for t in range(1, len(ids[0]) if ids else 0):
        decode += len({(i // group, tuple(ids[i][:t])) for i in range(len(ids)) if lengths[i] > t})
    trained = {(i // group, tuple(ids[i][:lengths[i]])) for i in range(len(ids)) if kept[i]}
    return {"decode_positions": decode, "learn_rows": len(trained), "learn_tokens": sum(len(c) for _, c in trained)}


def machine_rate(shape: Shape, dtype: torch.dtype, tokens: int = 4096, seconds: float = 1.0,
                 device: str = "cpu") -> float:
    """This machine's torch.mm rate (FLOP/s) on one token-block through the model's linear layers and head:
    (tokens, d) @ (d, d), (d, kv) x 2, (d, d), (d, ffn) x 2, (ffn, d) and (d, V), run in turn for ~`seconds`
    on `device` (a CUDA device is synchronised before each reading of the clock)."""
    g = torch.Generator().manual_seed(0)
    d, f, v, kv = shape.d, shape.ffn, shape.vocab, shape.kv
    dims = [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d), (d, v)]
    xs = {k: torch.randn(tokens, k, generator=g).to(device, dtype) for k in {d, f}}
    ws = [torch.randn(k, n, generator=g).to(device, dtype) for k, n in dims]
    flops = sum(2 * tokens * k * n for k, n in dims)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(2):   # warm up (oneDNN / cuBLAS pick and cache their kernels)
        for (k, _n), w in zip(dims, ws):
            xs[k] @ w
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 3:
        for (k, _n), w in zip(dims, ws):
            xs[k] @ w
        reps += 1
        sync()
    return reps * flops / (time.perf_counter() - t0)
