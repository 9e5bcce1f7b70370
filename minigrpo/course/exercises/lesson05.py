"""Checkers for the exercises of lesson 05 (the sampler and the rewards, course section 6).

Each checker takes the reader's function, calls it on cases worked out by
hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. top_k_filter(logits, k)                                 keep the k largest logits of each row
    2. rubric_score(completion, a, b, c)                       section 6's 9/8/6/0 rubric, by hand
    3. cached_sample(model, prompt_ids, prompt_mask, ...)      section 4's sampler with a KV cache: one prefill
                                                               per prompt, then one new token per row and step
"""
from __future__ import annotations

import functools
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
# Exercise 3: a sampler with a KV cache
# ---------------------------------------------------------------------------

EOS, PAD = 1, 0
# three left-padded prompts of different lengths (token ids 2..15; 0 is PAD, 1 is EOS)
CACHE_PROMPTS = ([5, 9], [3, 7, 11, 2, 14], [8, 4, 6])


@functools.lru_cache(maxsize=None)
def cache_world():
    """A random 2-layer Llama over 16 tokens (float32, eval mode), built without touching the global RNG."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                         bos_token_id=None, eos_token_id=EOS, pad_token_id=PAD)
    with torch.random.fork_rng():
        torch.manual_seed(8)    # a seed whose greedy and sampled rows end with EOS about half the time
        model = LlamaForCausalLM(config)
        with torch.no_grad():   # sharper next-token distributions than the tiny random init gives
            model.lm_head.weight.mul_(20.0)
    return model.eval()


def _left_padded(prompts) -> tuple[torch.Tensor, torch.Tensor]:
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (P - len(p)) + list(p) for p in prompts])                  # (B, P)
    return ids, (ids != PAD).long()                                                       # (B, P) each


@torch.no_grad()
def _reference_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature) -> torch.Tensor:
    """log pi(c_t | prompt, c_<t) at `temperature` by one uncached forward of [prompt | completion], (N, T)."""
    ids = torch.cat([prompt_ids, completion_ids], 1)                                      # (N, P+T)
    attn = torch.cat([prompt_mask, completion_mask], 1)                                   # (N, P+T)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)                                              # left padding skipped
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).logits  # (N, P+T, V)
    P, T = prompt_ids.shape[1], completion_ids.shape[1]
    logp = torch.log_softmax(logits[:, P - 1:P + T - 1].float() / temperature, -1)        # (N, T, V)
    return logp.gather(-1, completion_ids[..., None]).squeeze(-1) * completion_mask       # (N, T)


@torch.no_grad()
def _reference_greedy(model, prompt_ids, prompt_mask, group_size, max_new_tokens) -> torch.Tensor:
    """Greedy completions without a cache (the lesson's naive sampler, greedy), (B*G, T)."""
    ids, attn = prompt_ids.repeat_interleave(group_size, 0), prompt_mask.repeat_interleave(group_size, 0)
    done, out = torch.zeros(ids.shape[0], dtype=torch.bool), []
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0),
                       use_cache=False).logits[:, -1]                                     # (N, V)
        nxt = logits.argmax(-1).masked_fill(done, PAD)                                    # (N,)
        out.append(nxt)
        done = done | (nxt == EOS)
        if done.all():
            break
        ids, attn = torch.cat([ids, nxt[:, None]], 1), torch.cat([attn, torch.ones_like(nxt[:, None])], 1)
    return torch.stack(out, 1)


def _call(cached_sample, model, prompts, *, shapes=None, **kw):
    """The reader's sampler on left-padded `prompts`; with `shapes`, the input shape of every forward is recorded."""
    prompt_ids, prompt_mask = _left_padded(prompts)
    hook = None
    if shapes is not None:
        def record(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            shapes.append((tuple(ids.shape), kwargs.get("use_cache")))
        hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            out = cached_sample(model, prompt_ids, prompt_mask, eos_id=EOS, pad_id=PAD, **kw)
    finally:
        if hook is not None:
            hook.remove()
    return prompt_ids, prompt_mask, out


def _check_rows(name, ids, mask, logps, max_new_tokens, what) -> None:
    """Shapes, and the mask: 1 up to and including the first EOS, PAD and 0 after it, at most max_new_tokens."""
    assert ids.shape == mask.shape == logps.shape and ids.shape[1] <= max_new_tokens, (
        f"{name} ({what}): completion_ids {tuple(ids.shape)}, completion_mask {tuple(mask.shape)}, logps "
        f"{tuple(logps.shape)}: expected three (B*G, T) tensors with T <= {max_new_tokens}")
    for i, (row, m) in enumerate(zip(ids.tolist(), mask.tolist())):
        end = row.index(EOS) + 1 if EOS in row else len(row)
        assert m == [1] * end + [0] * (len(row) - end) and all(t == PAD for t in row[end:]), (
            f"{name} ({what}): row {i} is {row} with mask {m}; the mask must be 1 up to and including the first "
            f"EOS ({EOS}) and 0 after it, where the tokens are PAD ({PAD})")


def check_cached_sample(cached_sample) -> None:
    """Exercise 3: cached_sample(model, prompt_ids, prompt_mask, *, group_size, max_new_tokens, eos_id, pad_id,
    temperature=1.0, greedy=False, generator=None) -> (completion_ids, completion_mask, logps), each (B*G, T)."""
    name = "cached_sample"
    model = cache_world()
    B = len(CACHE_PROMPTS)
    _, _, first = _call(cached_sample, model, CACHE_PROMPTS, group_size=2, max_new_tokens=10, greedy=True)
    if _not_done(name, first):
        return
    # 1. greedy: the tokens of a sampler without a cache, and one forward per step of one new token per row
    shapes = []
    prompt_ids, prompt_mask, (ids, mask, logps) = _call(cached_sample, model, CACHE_PROMPTS, shapes=shapes,
                                                         group_size=2, max_new_tokens=10, greedy=True)
    _check_rows(name, ids, mask, logps, 10, "greedy")
    want = _reference_greedy(model, prompt_ids, prompt_mask, 2, 10)
    assert torch.equal(ids, want), (
        f"{name} (greedy, G = 2): tokens {ids.tolist()}, but greedy decoding without a cache gives {want.tolist()} "
        f"(are the new token's position ids its count of real tokens before it, left padding skipped?)")
    P = prompt_ids.shape[1]
    assert shapes and shapes[0][0] == (B, P), (
        f"{name}: the first forward ran input_ids of shape {shapes[0][0] if shapes else None}, expected the prefill "
        f"of the B = {B} prompts, {(B, P)}, once each (then repeat the cache G times)")
    later = [s for s, _ in shapes[1:]]
    assert later and all(s == (2 * B, 1) for s in later) and all(c is not False for _, c in shapes), (
        f"{name}: after the prefill every forward should run one new token per row, input_ids {(2 * B, 1)}, with "
        f"the cache; got {later} (use_cache {[c for _, c in shapes]})")
    assert len(later) == ids.shape[1] - 1, (
        f"{name}: {len(later)} decoding forwards for {ids.shape[1]} tokens; the prefill's logits give the first "
        f"token, each later forward one more")
    # 2. sampled, at two temperatures: the log-probs of the training forward, the mask, and rows that differ
    for temperature in (1.0, 0.7):
        gen = torch.Generator().manual_seed(0)
        prompt_ids, prompt_mask, (ids, mask, logps) = _call(cached_sample, model, CACHE_PROMPTS, group_size=4,
                                                            max_new_tokens=12, temperature=temperature,
                                                            generator=gen)
        _check_rows(name, ids, mask, logps, 12, f"sampled at temperature {temperature}")
        rep_ids, rep_mask = prompt_ids.repeat_interleave(4, 0), prompt_mask.repeat_interleave(4, 0)   # (B*G, P)
        want = _reference_logps(model, rep_ids, rep_mask, ids, mask, temperature)
        assert torch.allclose(logps.float() * mask, want, atol=1e-4), (
            f"{name} (sampled, temperature {temperature}): the recorded log-probs differ from those of one forward "
            f"of [prompt | completion] by up to {float((logps.float() * mask - want).abs().max()):.3g} (positions, "
            f"the attention mask, or the temperature?)")
        assert len({tuple(r) for r in ids.tolist()}) > B, f"{name} (sampled): the rows of each group are all equal"
    # 3. the first token's frequencies over 4,000 rows: those of softmax(logits / temperature)
    for temperature in (1.0, 0.7):
        prompt = [CACHE_PROMPTS[1]]
        _, _, (ids, _, _) = _call(cached_sample, model, prompt, group_size=4000, max_new_tokens=1,
                                  temperature=temperature, generator=torch.Generator().manual_seed(1))
        prompt_ids, prompt_mask = _left_padded(prompt)
        with torch.no_grad():
            logits = model(input_ids=prompt_ids, attention_mask=prompt_mask).logits[0, -1]   # (V,)
        probs = torch.softmax(logits / temperature, -1)
        freq = torch.bincount(ids[:, 0], minlength=probs.numel()).float() / ids.shape[0]
        gap = float((freq - probs).abs().max())
        assert gap < 0.03, (
            f"{name}: over 4,000 samples the first token's frequencies differ from softmax(logits / {temperature}) "
            f"by up to {gap:.3f} (sample with torch.multinomial from the tempered distribution)")
    print(f"{name}: correct (greedy tokens of an uncached sampler; 1 prefill of B = {B} prompts, then one token per "
          f"row and step; log-probs of the training forward at temperatures 1 and 0.7; first-token frequencies "
          f"within 0.03 of the softmax over 4,000 samples)")
