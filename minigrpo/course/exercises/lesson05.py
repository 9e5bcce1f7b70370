"""Checkers for the exercises of lesson 05 (the sampler and the rewards, course section 6).

Each checker takes the reader's function, calls it on cases worked out by
hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. top_k_filter(logits, k)                                 keep the k largest logits of each row
    2. rubric_score(completion, a, b, c)                       section 6's 9/8/6/0 rubric, by hand
    3. kv_cache_floats(num_layers, num_kv_heads, head_dim,     how many numbers a KV cache holds
                       rows, length)
"""
from __future__ import annotations

import math

import torch

from minigrpo.course.exercises import not_done as _not_done

NEG_INF = float("-inf")


# ---------------------------------------------------------------------------
# Exercise 1: top-k filtering
# ---------------------------------------------------------------------------

# (logits, k, expected), by hand: keep the k largest entries of each row, -inf elsewhere.
TOP_K_CASES = [
    ([[1.0, 3.0, 2.0, 0.5]], 2, [[NEG_INF, 3.0, 2.0, NEG_INF]]),
    ([[1.0, 3.0, 2.0, 0.5]], 1, [[NEG_INF, 3.0, NEG_INF, NEG_INF]]),
    ([[1.0, 3.0, 2.0, 0.5]], 4, [[1.0, 3.0, 2.0, 0.5]]),                       # k = V: nothing removed
    ([[1.0, 3.0, 2.0, 0.5], [4.0, -1.0, 0.0, 2.0]], 2,                          # each row on its own
     [[NEG_INF, 3.0, 2.0, NEG_INF], [4.0, NEG_INF, NEG_INF, 2.0]]),
    ([[-5.0, -2.0, -9.0, -3.0, -1.0]], 3, [[NEG_INF, -2.0, NEG_INF, -3.0, -1.0]]),  # negative logits
]


def _same_logits(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal shapes, -inf in the same places, equal finite values."""
    if got.shape != expected.shape:
        return False
    inf_g, inf_e = torch.isneginf(got), torch.isneginf(expected)
    return bool(torch.equal(inf_g, inf_e) and torch.allclose(got[~inf_g], expected[~inf_e], atol=1e-6, rtol=0.0))


def check_top_k_filter(top_k_filter) -> None:
    """Exercise 1: top_k_filter(logits (N, V), k) -> (N, V), -inf outside each row's k largest logits."""
    name = "top_k_filter"
    first = top_k_filter(torch.tensor(TOP_K_CASES[0][0]), TOP_K_CASES[0][1])
    if _not_done(name, first):
        return
    for logits, k, expected in TOP_K_CASES:
        x = torch.tensor(logits)
        before = x.clone()
        got = torch.as_tensor(top_k_filter(x, k), dtype=torch.float32)
        assert torch.equal(x, before), f"{name} changed its input logits in place; return a new tensor"
        assert _same_logits(got, torch.tensor(expected)), (
            f"{name}({logits}, k={k}) returned {got.tolist()}, expected {expected} "
            f"(keep the k largest of each row, set the others to -inf, not 0)")
    # random rows without ties: exactly k finite entries per row, and they are the k largest
    g = torch.Generator().manual_seed(5)
    for k in (1, 3, 10):
        x = torch.randn(6, 20, generator=g)  # (6, 20) distinct values with probability 1
        got = torch.as_tensor(top_k_filter(x.clone(), k), dtype=torch.float32)
        kept = ~torch.isneginf(got)  # (6, 20)
        assert (kept.sum(-1) == k).all(), f"{name}(k={k}) kept {kept.sum(-1).tolist()} entries per row, expected {k}"
        threshold = x.sort(-1, descending=True).values[:, k - 1:k]  # (6, 1) the k-th largest of each row
        assert torch.equal(kept, x >= threshold), f"{name}(k={k}) kept entries that are not the k largest of their row"
        assert torch.equal(got[kept], x[kept]), f"{name}(k={k}) changed the values of the kept logits"
    print(f"{name}: correct ({len(TOP_K_CASES)} hand cases and 3 random batches; "
          f"softmax of the result samples only among the top k)")


# ---------------------------------------------------------------------------
# Exercise 2: the rubric of section 6
# ---------------------------------------------------------------------------

# (completion, (a, b, c), expected score), by hand. 2x+3=7 has x=2; 3x-5=10 has x=5; 4x+1=-7 has x=-2.
RUBRIC_CASES = [
    ("2x+3=7，移项得2x=7-3，计算得2x=4，两边除以2，得x=2。", (2, 3, 7), 9.0),   # note, answer 3
    ("两边减3，得2x=4，再除以2，得x=2。", (2, 3, 7), 8.0),                     # note, answer 2
    ("直接猜：x=2，因为2×2+3=7，正确。所以x=2。", (2, 3, 7), 6.0),             # note, answer 1 (typo fixed)
    ("直接猜：x=2，因为治安，2×2+3=7，正确。所以x=2。", (2, 3, 7), 6.0),       # the note's own text: correct, other wording
    ("x=2", (2, 3, 7), 6.0),                                                   # a bare correct answer
    ("两边减3，得2x=4，再除以2，得x=3。", (2, 3, 7), 0.0),                     # wrong answer, right form
    ("2x+3=7，移项得2x=7+3，计算得2x=10，两边除以2，得x=5。", (2, 3, 7), 0.0),  # sign error in 移项
    ("2x+3=7，移项得2x=7+3，计算得2x=10，两边除以2，得x=2。", (2, 3, 7), 6.0),  # right answer, wrong working: not "complete"
    ("x=3或x=2。", (2, 3, 7), 0.0),                                            # two candidates: no credit
    ("x=2，验证：2×2+3=7。", (2, 3, 7), 0.0),                                  # does not end with its answer
    ("x=02", (2, 3, 7), 0.0),                                                  # not a canonical integer
    ("3x-5=10，移项得3x=10+5，计算得3x=15，两边除以3，得x=5。", (3, -5, 10), 9.0),  # the note's closing example
    ("两边加5，得3x=15，再除以3，得x=5。", (3, -5, 10), 8.0),                   # short style with b < 0
    ("两边减3，得2x=4，再除以2，得x=2。", (3, -5, 10), 0.0),                     # another equation's solution
    ("直接猜：x=-2，因为4×(-2)+1=-7，正确。所以x=-2。", (4, 1, -7), 6.0),       # guess with a negative root
    ("4x+1=-7，移项得4x=-7-1，计算得4x=-8，两边除以4，得x=-2。", (4, 1, -7), 9.0),
]


def check_rubric_score(rubric_score) -> None:
    """Exercise 2: rubric_score(completion, a, b, c) -> 9.0 / 8.0 / 6.0 / 0.0 for the equation ax+b=c."""
    name = "rubric_score"
    completion, (a, b, c), _ = RUBRIC_CASES[0]
    if _not_done(name, rubric_score(completion, a, b, c)):
        return
    for completion, (a, b, c), expected in RUBRIC_CASES:
        got = rubric_score(completion, a, b, c)
        assert got is not None and math.isclose(float(got), expected), (
            f"{name}({completion!r}, a={a}, b={b}, c={c}) returned {got!r}, expected {expected} "
            f"(wrong or unparseable 0; correct: 9 complete, 8 short, 6 otherwise)")
    print(f"{name}: correct ({len(RUBRIC_CASES)} cases, the note's 6.0 / 8.0 / 9.0 among them)")


# ---------------------------------------------------------------------------
# Exercise 3: the size of a KV cache
# ---------------------------------------------------------------------------

# (num_layers, num_kv_heads, head_dim, rows, length, floats), by hand: 2 (K and V) x layers x heads x
# head_dim x rows x length.
KV_CASES = [
    (1, 1, 2, 1, 1, 4),                 # one layer, one head of 2 dimensions, one token: K and V
    (4, 4, 32, 1, 1, 1_024),            # the lesson's model: 1,024 numbers per token of context
    (4, 4, 32, 64, 36, 2_359_296),      # 8 prompts x G = 8, 12 prompt + 24 new tokens
    (2, 2, 16, 3, 5, 1_920),
    (32, 8, 128, 1, 4096, 268_435_456),  # a Llama-3-8B-like model (grouped-query attention), one 4k sequence
]


def _measured_floats(num_layers: int, num_kv_heads: int, head_dim: int, rows: int, length: int) -> int:
    """Numbers in the DynamicCache a randomly initialised Llama fills by one prefill (counted, not computed)."""
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    from minigrpo.model import cache_kwarg

    config = LlamaConfig(vocab_size=16, hidden_size=num_kv_heads * head_dim, intermediate_size=8,
                         num_hidden_layers=num_layers, num_attention_heads=num_kv_heads,
                         num_key_value_heads=num_kv_heads, head_dim=head_dim, max_position_embeddings=64)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=torch.zeros(rows, length, dtype=torch.long), **cache_kwarg(cache), use_cache=True)
    return sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers)


def check_kv_cache_floats(kv_cache_floats) -> None:
    """Exercise 3: kv_cache_floats(num_layers, num_kv_heads, head_dim, rows, length) -> int."""
    name = "kv_cache_floats"
    if _not_done(name, kv_cache_floats(*KV_CASES[0][:5])):
        return
    for *args, expected in KV_CASES:
        got = kv_cache_floats(*args)
        assert got is not None and float(got) == expected, (
            f"{name}(num_layers={args[0]}, num_kv_heads={args[1]}, head_dim={args[2]}, rows={args[3]}, "
            f"length={args[4]}) returned {got!r}, expected {expected:,} (keys and values, for every layer)")
    for args in ((2, 2, 16, 3, 5), (3, 1, 8, 2, 7)):
        measured = _measured_floats(*args)
        assert float(kv_cache_floats(*args)) == measured, (
            f"{name}{args} returned {kv_cache_floats(*args)!r}, but a real DynamicCache holds {measured:,} numbers")
    print(f"{name}: correct ({len(KV_CASES)} cases by hand, 2 counted in a real transformers DynamicCache)")
