"""Tests for minigrpo.sampler: group sampling with a KV cache.

The key property: the log-probs `sample_group` records while sampling (the old
policy's log-probs in GRPO's ratio) equal what the training forward pass
`model.completion_logprobs` computes for the same tokens at the same
temperature, including for left-padded prompts of different lengths and with
top-k / top-p on (they restrict what is drawn, not the distribution scored).

A random tiny model almost never emits EOS (p ~ 1/217 per step), so several
tests wrap it in `LogitBias`, which adds a fixed vector to its logits: this
makes EOS likely (so completions end at different lengths) or makes a few
tokens dominant (so sampling frequencies can be compared with the softmax).
Sampling and scoring both go through the wrapper, so they see the same policy.
"""
import warnings

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minigrpo.config import make_config
from minigrpo.model import build_model, completion_logprobs
from minigrpo.sampler import filter_logits, pad_prompts, sample_group
from minigrpo.tokenizer import encode

PAD, EOS, BOS = 0, 1, 2


class LogitBias(torch.nn.Module):
    """The wrapped model with `bias` (V,) added to every next-token logit."""

    def __init__(self, model, bias):
        super().__init__()
        self.inner = model
        self.register_buffer("bias", bias)

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits = out.logits + self.bias
        return out

    # what the sampler needs of a model to decode against one copy of each prompt's cache (shared_prompt.py)
    _supports_attention_backend = True

    @property
    def config(self):
        return self.inner.config

    def set_attn_implementation(self, name):
        self.inner.set_attn_implementation(name)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def model(tok):
    return build_model(make_config("tiny", seed=0), tok).eval()


@pytest.fixture(scope="module")
def eos_model(rich, tok):
    bias = torch.zeros(len(tok))
    bias[EOS] = 4.0  # EOS is likely but not certain: completions end at many different lengths
    return LogitBias(rich, bias).eval()


TEXTS = ["12+34=", "1+2=", "求解方程 2x+3=7。", "3x-5=10，", "9*8="]


@pytest.fixture(scope="module")
def prompts(tok):
    # left-padded prompts of different lengths (7, 5, 12, 9 and 5 tokens with BOS)
    return pad_prompts([encode(tok, t) for t in TEXTS], PAD)


def sample(model, ids, mask, **kw):
    args = dict(group_size=4, max_new_tokens=6, eos_id=EOS, pad_id=PAD)
    args.update(kw)
    return sample_group(model, ids, mask, **args)


def naive_full_logprobs(model, prompt: list[int], completion: list[int], temperature: float):
    """log_softmax(logits / T) of each completion step from one unpadded, uncached forward. (T, V)"""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    P = len(prompt)
    return torch.log_softmax(logits[P - 1:P - 1 + len(completion)] / temperature, dim=-1)


# ---------------------------------------------------------------- pad_prompts


def test_pad_prompts_left_pads():
    ids, mask = pad_prompts([[2, 5, 6], [2], [2, 7]], pad_id=0)
    assert ids.tolist() == [[2, 5, 6], [0, 0, 2], [0, 2, 7]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert ids.dtype == mask.dtype == torch.long
    ids, mask = pad_prompts([[9, 9]], pad_id=3)
    assert ids.tolist() == [[9, 9]] and mask.tolist() == [[1, 1]]


# ---------------------------------------------------------------- filter_logits


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.5, 0.3],
                           [3.0, -2.0, 0.0, 1.0, 2.5]])
    out = filter_logits(logits, top_k=2)
    keep = torch.isfinite(out)
    assert keep.tolist() == [[False, True, False, True, False],
                             [True, False, False, False, True]]
    assert torch.equal(out[keep], logits[keep])           # kept logits are unchanged
    assert (out[~keep] == float("-inf")).all()
    # top_k=0 (off) and top_k >= V leave everything
    assert torch.equal(filter_logits(logits, top_k=0), logits)
    assert torch.equal(filter_logits(logits, top_k=5), logits)


@pytest.mark.parametrize("top_p, n_keep", [(0.7, 2), (0.5, 1), (0.81, 3), (0.4, 1), (0.96, 4)])
def test_top_p_keeps_smallest_prefix_reaching_p(top_p, n_keep):
    # probs 0.5, 0.3, 0.15, 0.05: cumulative 0.5, 0.8, 0.95, 1.0
    #   p=0.4 -> {0.5}; p=0.5 -> {0.5} (0.5 reaches 0.5); p=0.7 -> {0.5, 0.3};
    #   p=0.81 -> first 3 (0.8 < 0.81 <= 0.95); p=0.96 -> all 4
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    order = [2, 0, 3, 1]  # put them in a shuffled order so the scatter back is tested
    logits = torch.empty(4, dtype=torch.float64)
    logits[order] = probs.log()
    out = filter_logits(logits.unsqueeze(0), top_p=top_p)[0]
    kept = torch.isfinite(out)
    expected = torch.zeros(4, dtype=torch.bool)
    expected[order[:n_keep]] = True
    assert kept.tolist() == expected.tolist()
    assert torch.equal(out[kept], logits[kept])


def test_top_p_float32_boundary():
    # The same example in float32 (the sampler's dtype): p=0.5 still keeps one token.
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]


def test_top_p_always_keeps_the_top_token():
    logits = torch.tensor([[0.0, 5.0, 1.0]])
    assert torch.isfinite(filter_logits(logits, top_p=1e-6)).tolist() == [[False, True, False]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-50, 50), min_size=2, max_size=12, unique=True),
       st.floats(0.01, 0.99), st.integers(1, 12))
def test_filter_logits_properties(tenths, top_p, top_k):
    values = [v / 10 for v in tenths]  # distinct logits, at least 0.1 apart
    logits = torch.tensor([values], dtype=torch.float64)
    V = len(values)
    probs = torch.softmax(logits[0], -1)
    order = torch.argsort(probs, descending=True)
    cum = probs[order].cumsum(0)
    assume(((cum - top_p).abs() > 1e-9).all())  # stay off the exact boundary
    # top-p alone: the smallest prefix (by probability) whose mass reaches top_p
    n = int((cum < top_p).sum()) + 1
    kept = torch.isfinite(filter_logits(logits, top_p=top_p)[0])
    assert set(torch.nonzero(kept).flatten().tolist()) == set(order[:n].tolist())
    # top-k alone (distinct values): exactly the min(k, V) largest
    kept = torch.isfinite(filter_logits(logits, top_k=top_k)[0])
    assert set(torch.nonzero(kept).flatten().tolist()) == set(order[:min(top_k, V)].tolist())


# ---------------------------------------------------------------- the key test


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 0, 1.0),
    (0.7, 0, 1.0),
    (1.0, 5, 1.0),
    (0.7, 0, 0.8),
    (0.7, 8, 0.9),
])
def test_sampled_logprobs_equal_training_logprobs(eos_model, prompts, temperature, top_k, top_p):
    ids, mask = prompts
    gen = torch.Generator().manual_seed(0)
    s = sample(eos_model, ids, mask, group_size=4, temperature=temperature, top_k=top_k, top_p=top_p,
               generator=gen)
    # there are rows of several lengths, so masking after EOS is exercised
    lengths = s.completion_mask.sum(1)
    assert len(set(lengths.tolist())) >= 3, lengths
    with torch.no_grad():
        train = completion_logprobs(eos_model, s.prompt_ids, s.prompt_mask, s.completion_ids,
                                    s.completion_mask, temperature=temperature)
    assert torch.allclose(s.logps, train, atol=1e-5, rtol=0), (s.logps - train).abs().max()
    # and both equal the full tempered distribution of an unpadded, uncached forward
    for r in range(s.completion_ids.shape[0]):
        prompt = s.prompt_ids[r][s.prompt_mask[r].bool()].tolist()
        n = int(lengths[r])
        comp = s.completion_ids[r, :n].tolist()
        full = naive_full_logprobs(eos_model, prompt, comp, temperature)      # (n, V)
        expected = full[torch.arange(n), torch.tensor(comp)]
        assert torch.allclose(s.logps[r, :n].double(), expected, atol=1e-5, rtol=0)
        assert (s.logps[r, n:] == 0).all()
        if top_k:
            # every drawn token is among the k most likely of its step
            rank = (full > expected.unsqueeze(1)).sum(1)
            assert (rank < top_k).all(), rank


def test_samples_structure_mask_pad_and_truncated(eos_model, prompts):
    ids, mask = prompts
    B, G, T_max = len(TEXTS), 8, 6
    s = sample(eos_model, ids, mask, group_size=G, max_new_tokens=T_max, generator=torch.Generator().manual_seed(1))
    N, T = s.completion_ids.shape
    assert N == B * G and T <= T_max
    assert s.completion_mask.shape == s.logps.shape == (N, T) and s.truncated.shape == (N,)
    # rows of one prompt are contiguous: row i belongs to prompt i // G
    for i in range(N):
        assert torch.equal(s.prompt_ids[i], ids[i // G])
        assert torch.equal(s.prompt_mask[i], mask[i // G])
    n_trunc = 0
    for i in range(N):
        row = s.completion_ids[i].tolist()
        m = s.completion_mask[i].tolist()
        if EOS in row:
            k = row.index(EOS)                      # the first EOS
            assert m == [1] * (k + 1) + [0] * (T - k - 1)
            assert row[k + 1:] == [PAD] * (T - k - 1)
            assert not s.truncated[i]
        else:
            assert m == [1] * T and T == T_max
            assert s.truncated[i]
            n_trunc += 1
        assert PAD not in row[:sum(m)]
    # both kinds occur, so the checks above both ran
    assert 0 < n_trunc < N, n_trunc


def test_sampling_stops_when_every_row_has_eos(tok, model):
    bias = torch.zeros(len(tok))
    bias[EOS] = 100.0  # EOS is certain: every row stops after one token
    ids, mask = pad_prompts([encode(tok, "1+2=")], PAD)
    s = sample(LogitBias(model, bias), ids, mask, group_size=3, max_new_tokens=6)
    assert s.completion_ids.tolist() == [[EOS]] * 3
    assert s.completion_mask.tolist() == [[1]] * 3
    assert not s.truncated.any()
    assert torch.allclose(s.logps, torch.zeros(3, 1), atol=1e-6)  # log 1


# ---------------------------------------------------------------- KV cache vs naive decoding


def naive_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding that re-runs the whole unpadded sequence, without cache, every step."""
    seq = list(prompt)
    out = []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
        t = int(logits.argmax())
        out.append(t)
        if t == EOS:
            break
        seq.append(t)
    return out


@pytest.mark.parametrize("which", ["plain", "eos"])
def test_greedy_with_cache_equals_naive_greedy(rich, eos_model, prompts, which):
    m = rich if which == "plain" else eos_model
    ids, mask = prompts
    T_max = 8
    s = sample(m, ids, mask, group_size=2, max_new_tokens=T_max, greedy=True, temperature=0.7)
    lengths = set()
    for i in range(ids.shape[0]):
        prompt = ids[i][mask[i].bool()].tolist()
        expected = naive_greedy(m, prompt, T_max)
        lengths.add(len(expected))
        for g in range(2):
            r = i * 2 + g
            n = int(s.completion_mask[r].sum())
            assert s.completion_ids[r, :n].tolist() == expected, (i, g)
            assert bool(s.truncated[r]) == (EOS not in expected)
    if which == "eos":
        assert len(lengths) >= 3, lengths  # rows stop at different steps while others go on
    else:
        # the continuations are not one repeated token
        assert len(set(s.completion_ids.flatten().tolist())) >= 8
    # greedy log-probs are still those of the tempered distribution
    with torch.no_grad():
        train = completion_logprobs(m, s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask,
                                    temperature=0.7)
    assert torch.allclose(s.logps, train, atol=1e-5, rtol=0)


def test_top_k_1_equals_greedy(eos_model, prompts):
    ids, mask = prompts
    greedy = sample(eos_model, ids, mask, greedy=True, temperature=0.9)
    top1 = sample(eos_model, ids, mask, top_k=1, temperature=0.9, generator=torch.Generator().manual_seed(5))
    assert torch.equal(greedy.completion_ids, top1.completion_ids)
    assert torch.equal(greedy.completion_mask, top1.completion_mask)
    assert torch.allclose(greedy.logps, top1.logps, atol=1e-6)


# ---------------------------------------------------------------- reproducibility


def test_same_seed_same_samples_different_seed_different(rich, prompts):
    ids, mask = prompts

    def run(seed):
        return sample(rich, ids, mask, group_size=4, max_new_tokens=5,
                      generator=torch.Generator().manual_seed(seed))

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.logps, b.logps)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    # the G samples of one prompt are not all copies of each other
    assert len({tuple(r) for r in a.completion_ids[:4].tolist()}) > 1


def test_sampling_restores_training_mode(model, prompts):
    ids, mask = prompts
    model.train()
    try:
        sample(model, ids, mask, max_new_tokens=2, generator=torch.Generator().manual_seed(0))
        assert model.training
    finally:
        model.eval()


def test_sampling_and_scoring_print_no_warning(model, prompts, capfd):
    """Sampling (prefill + cached decoding) and the training forward warn nothing: no deprecated argument.

    transformers 5.24 renamed the KV-cache argument `past_key_values` to `cache` and warns on the old name, once
    per process; in a notebook that warning lands on stderr, which nbval reads as a changed output. It warns
    through `warnings` and through its logger (stderr), so both are caught.
    """
    ids, mask = prompts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = sample(model, ids, mask, generator=torch.Generator().manual_seed(0))
        completion_logprobs(model, s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)
    assert s.completion_ids.shape[1] == 6  # the cache was used for 5 decoding steps
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_non_positive_temperature_raises(model, prompts, temperature):
    ids, mask = prompts
    with pytest.raises(ValueError, match="temperature"):
        sample(model, ids, mask, temperature=temperature)


# ---------------------------------------------------------------- sampling frequencies


@pytest.fixture(scope="module")
def peaked(model, tok):
    """A policy whose first token is one of a few characters with clearly different probabilities."""
    bias = torch.zeros(len(tok))
    for ch, b in zip("12345", [6.0, 5.5, 5.0, 4.0, 3.0]):
        bias[tok.convert_tokens_to_ids(ch)] = b
    return LogitBias(model, bias).eval()


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.7, 0), (1.0, 3)])
def test_first_token_frequencies_match_softmax(peaked, tok, temperature, top_k):
    prompt = encode(tok, "12+34=")
    ids, mask = pad_prompts([prompt], PAD)
    n = 4000
    s = sample(peaked, ids, mask, group_size=n, max_new_tokens=1, temperature=temperature, top_k=top_k,
               generator=torch.Generator().manual_seed(123))
    counts = torch.bincount(s.completion_ids[:, 0], minlength=len(tok)).double()
    empirical = counts / n
    # the distribution from a plain forward: softmax(logits / T), restricted to the top k if on
    with torch.no_grad():
        logits = peaked(input_ids=torch.tensor([prompt])).logits[0, -1].double() / temperature
    if top_k:
        kth = logits.topk(top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    expected = torch.softmax(logits, -1)
    # the test has power: the distribution is spread over several tokens
    assert 0.2 < expected.max() < 0.8
    assert (expected > 0.05).sum() >= 3
    assert (empirical - expected).abs().max() < 0.03, (empirical - expected).abs().max()
    # chi-square over the tokens with expected count >= 5, the rest lumped together
    big = expected * n >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([expected[big] * n, (expected[~big] * n).sum().view(1)])
    keep = exp > 0
    chi2 = (((obs - exp) ** 2)[keep] / exp[keep]).sum()
    dof = int(keep.sum()) - 1
    assert chi2 < dof + 6 * (2 * dof) ** 0.5, (chi2, dof)  # ~6 sigma of a chi-square(dof)
    if top_k:
        assert int((counts > 0).sum()) == top_k
    # at T != 1 the untempered softmax would be told apart by this test
    if temperature != 1.0:
        with torch.no_grad():
            untempered = torch.softmax(peaked(input_ids=torch.tensor([prompt])).logits[0, -1].double(), -1)
        assert (empirical - untempered).abs().max() > 0.05


# ---------------------------------------------------------------- less work: compaction, the one-number draw


@pytest.mark.parametrize("draw", ["multinomial", "inverse_cdf"])
def test_compacted_decoding_gives_the_uncompacted_samples(eos_model, prompts, draw):
    """Finished rows leave the decoding batch, but every draw is still made for all N rows: the same tokens,
    log-probs and entropies as the loop that decodes every row to the end."""
    ids, mask = prompts
    kw = dict(group_size=4, max_new_tokens=8, temperature=0.9, draw=draw)
    full = sample(eos_model, ids, mask, compact=False, generator=torch.Generator().manual_seed(3), **kw)
    compact = sample(eos_model, ids, mask, compact=True, generator=torch.Generator().manual_seed(3), **kw)
    lengths = full.completion_mask.sum(1)
    assert lengths.min() < lengths.max()                # rows finished at different steps
    assert torch.equal(compact.completion_ids, full.completion_ids)
    assert torch.equal(compact.completion_mask, full.completion_mask)
    # a forward of fewer rows may round differently in float32's last digits (a relative 1e-6)
    torch.testing.assert_close(compact.logps, full.logps, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compact.entropy, full.entropy, rtol=1e-5, atol=1e-6)
    assert torch.equal(compact.truncated, full.truncated)


def test_compacted_decoding_runs_the_unfinished_rows_only(eos_model, prompts):
    """The decoding forwards see fewer rows as rows finish (counted with a forward hook)."""
    ids, mask = prompts
    seen = []
    hook = eos_model.inner.register_forward_hook(lambda m, args, kw, out: seen.append(kw["input_ids"].shape[0]),
                                                 with_kwargs=True)
    try:
        s = sample(eos_model, ids, mask, group_size=4, max_new_tokens=8, compact=True, merge=False,
                   generator=torch.Generator().manual_seed(3))
    finally:
        hook.remove()
    alive = (s.completion_mask.sum(1, keepdim=True) > torch.arange(s.completion_ids.shape[1])).sum(0)  # (T,)
    # prefill: the 5 prompts; then decoding step t runs the rows with a token at position t
    assert seen == [5] + alive[1:len(seen)].tolist()
    assert seen[-1] < 20


@pytest.fixture(scope="module")
def agreeing(rich, tok):
    """A policy that puts most of its mass on "1", EOS and "2" (about 0.65, 0.24, 0.09): a group's samples share
    most of their prefixes."""
    bias = torch.zeros(len(tok))
    bias[EOS] = 8.0
    bias[tok.convert_tokens_to_ids("1")], bias[tok.convert_tokens_to_ids("2")] = 9.0, 7.0
    return LogitBias(rich, bias).eval()


def distinct_prefixes(s, G: int) -> list[int]:
    """For each decoding forward after the prefill (step t >= 1): how many distinct (prompt, first t tokens)
    the rows that go on at step t have, counted in Python from the samples."""
    ids, mask = s.completion_ids.tolist(), s.completion_mask.tolist()
    return [len({(i // G, tuple(ids[i][:t])) for i in range(len(ids)) if mask[i][t]})
            for t in range(1, len(ids[0]))]


@pytest.mark.parametrize("share_prompt", [True, False])
@pytest.mark.parametrize("draw, greedy", [("multinomial", False), ("inverse_cdf", False), ("multinomial", True)])
def test_merged_prefixes_give_the_unmerged_samples(agreeing, prompts, share_prompt, draw, greedy):
    """The rows of a prompt with the same tokens so far decode as one batch row, and each still draws its own token:
    the same tokens, log-probs and entropies as decoding every row on its own."""
    ids, mask = prompts
    kw = dict(group_size=8, max_new_tokens=6, temperature=0.9, draw=draw, greedy=greedy, share_prompt=share_prompt)
    alone = sample(agreeing, ids, mask, merge=False, generator=torch.Generator().manual_seed(3), **kw)
    merged = sample(agreeing, ids, mask, merge=True, generator=torch.Generator().manual_seed(3), **kw)
    alive = alone.completion_mask[:, 1:].sum().item()
    assert sum(distinct_prefixes(alone, 8)) < alive / 2           # the samples do share prefixes
    assert torch.equal(merged.completion_ids, alone.completion_ids)
    assert torch.equal(merged.completion_mask, alone.completion_mask)
    torch.testing.assert_close(merged.logps, alone.logps, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged.entropy, alone.entropy, rtol=1e-5, atol=1e-6)
    assert torch.equal(merged.truncated, alone.truncated)


@pytest.mark.parametrize("share_prompt", [True, False])
def test_merged_prefixes_decode_each_distinct_prefix_once(agreeing, prompts, share_prompt):
    """The decoding forwards see one row per distinct (prompt, tokens so far), counted from the samples by hand."""
    ids, mask = prompts
    seen = []
    hook = agreeing.inner.register_forward_hook(lambda m, args, kw, out: seen.append(kw["input_ids"].shape[0]),
                                                with_kwargs=True)
    try:
        s = sample(agreeing, ids, mask, group_size=8, max_new_tokens=6, share_prompt=share_prompt,
                   generator=torch.Generator().manual_seed(4))
    finally:
        hook.remove()
    expected = distinct_prefixes(s, 8)
    assert seen == [5] + expected[:len(seen) - 1]          # the 5 prompts, then one row per distinct prefix
    assert len(seen) - 1 == sum(n > 0 for n in expected)


def test_inverse_cdf_draws_the_softmax_frequencies():
    """One uniform number per row, the first token whose cumulative probability exceeds it: the frequencies of
    20,000 draws are the probabilities (3 sigma < 0.01), and a token of probability 0 is never drawn."""
    from minigrpo.sampler import draw_tokens
    probs = torch.tensor([0.1, 0.2, 0.0, 0.7]).repeat(20000, 1)                   # (N, V)
    tok = draw_tokens(probs, "inverse_cdf", torch.Generator().manual_seed(0))
    freq = torch.bincount(tok, minlength=4).float() / len(tok)
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.0, 0.7]), rtol=0, atol=0.01)
    assert freq[2] == 0


def test_inverse_cdf_with_top_k_1_equals_greedy(eos_model, prompts):
    ids, mask = prompts
    greedy = sample(eos_model, ids, mask, greedy=True, temperature=0.9)
    top1 = sample(eos_model, ids, mask, top_k=1, temperature=0.9, draw="inverse_cdf",
                  generator=torch.Generator().manual_seed(5))
    assert torch.equal(greedy.completion_ids, top1.completion_ids)


# ---------------------------------------------------------------- one copy of each prompt's cache (shared_prompt.py)


def test_shared_prompt_attention_equals_attention_over_the_concatenated_cache():
    """The split softmax over [prompt | completion] keys, against eager attention over their concatenation with
    G copies of each prompt, padding masked; for all N rows and for a subset (rows that finished left), with GQA."""
    from types import SimpleNamespace
    from minigrpo.shared_prompt import SharedPrompt, shared_prompt_attention
    g = torch.Generator().manual_seed(0)
    B, G, kv, groups, P, t, d = 3, 4, 2, 2, 5, 3, 8
    N, h = B * G, kv * groups
    prompt_mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    k_p, v_p = torch.randn(B, kv, P, d, generator=g), torch.randn(B, kv, P, d, generator=g)
    cache = SimpleNamespace(layers=[SimpleNamespace(keys=k_p, values=v_p)])
    sp = SharedPrompt(cache, prompt_mask, G)
    module = SimpleNamespace(layer_idx=0, num_key_value_groups=groups)
    for rows in (torch.arange(N), torch.tensor([0, 3, 5, 6, 11])):
        sp.select(rows)
        n = len(rows)
        q = torch.randn(n, h, 1, d, generator=g)
        k_c, v_c = torch.randn(n, kv, t, d, generator=g), torch.randn(n, kv, t, d, generator=g)
        out, _ = shared_prompt_attention(module, q, k_c, v_c, None, scaling=d ** -0.5, shared_prompt=sp)
        # by hand: each row's prompt copied in front of its own keys, then one softmax
        prompt = rows // G
        keys = torch.cat([k_p[prompt], k_c], dim=2).repeat_interleave(groups, dim=1)        # (n, h, P+t, d)
        values = torch.cat([v_p[prompt], v_c], dim=2).repeat_interleave(groups, dim=1)
        keep = torch.cat([prompt_mask[prompt], torch.ones(n, t, dtype=torch.long)], dim=1).bool()   # (n, P+t)
        scores = (q @ keys.transpose(2, 3)) * d ** -0.5
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
        expected = (scores.softmax(-1) @ values).transpose(1, 2)                             # (n, 1, h, d)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compact", [True, False])
def test_shared_prompt_decoding_gives_the_copied_cache_samples(eos_model, prompts, compact):
    """Decoding against one copy of each prompt's cache draws the same tokens, with the same log-probs, as
    decoding against G copies (transformers' own attention over the concatenated cache)."""
    ids, mask = prompts
    own = eos_model.config._attn_implementation
    kw = dict(group_size=4, max_new_tokens=8, temperature=0.9, compact=compact)
    copied = sample(eos_model, ids, mask, share_prompt=False, generator=torch.Generator().manual_seed(5), **kw)
    shared = sample(eos_model, ids, mask, share_prompt=True, generator=torch.Generator().manual_seed(5), **kw)
    lengths = copied.completion_mask.sum(1)
    assert lengths.min() < lengths.max()
    assert torch.equal(shared.completion_ids, copied.completion_ids)
    torch.testing.assert_close(shared.logps, copied.logps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared.entropy, copied.entropy, rtol=1e-5, atol=1e-5)
    assert eos_model.config._attn_implementation == own         # set back after decoding


def test_shared_prompt_decoding_with_grouped_query_attention(tok, prompts):
    """A Llama with 4 query heads on 2 key/value heads: the same samples either way."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    m.set_attn_implementation("eager")
    with torch.no_grad():
        m.lm_head.weight.mul_(30)                   # a peaked policy, so that samples depend on the logits
    ids, mask = prompts
    kw = dict(group_size=3, max_new_tokens=6, temperature=1.0)
    copied = sample(m.eval(), ids, mask, share_prompt=False, generator=torch.Generator().manual_seed(1), **kw)
    shared = sample(m, ids, mask, share_prompt=True, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(shared.completion_ids, copied.completion_ids)
    torch.testing.assert_close(shared.logps, copied.logps, rtol=1e-5, atol=1e-5)


def test_shared_prompt_attention_refuses_more_than_one_position():
    """It decodes one token per row; a prefill or a training forward through it is a mistake, said in one line."""
    from types import SimpleNamespace
    from minigrpo.shared_prompt import shared_prompt_attention
    q = torch.zeros(2, 1, 3, 4)                                   # 3 positions
    with pytest.raises(ValueError, match="one token per row"):
        shared_prompt_attention(SimpleNamespace(layer_idx=0), q, q, q, None, scaling=0.5, shared_prompt=None)
