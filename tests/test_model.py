"""Tests for minigrpo.model: the tiny Llama policy and the training forward pass.

`completion_logprobs` is checked against an independent path: a plain forward
of the model on one UNPADDED sequence [prompt | completion] (default positions
0..L-1, no mask), with log_softmax(logits / T) read at the offsets that predict
each completion token (logits at i predict the token at i + 1).
"""
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from minigrpo.config import make_config
from minigrpo.model import build_model, completion_logprobs, length_buckets, num_parameters, pick_device, positions
from minigrpo.tokenizer import encode


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def model(tok):
    m = build_model(make_config("tiny", seed=0), tok)
    m.eval()
    return m


def hand_logprobs(model, prompt: list[int], completion: list[int], temperature: float):
    """log pi(c_t | prompt, c_<t) and entropies from one unpadded, unmasked forward."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()                 # (L, V)
    P = len(prompt)
    lp, ent = [], []
    for t, c in enumerate(completion):
        row = logits[P - 1 + t] / temperature                            # predicts c_t
        logp_all = row - torch.logsumexp(row, 0)
        p = logp_all.exp()
        lp.append(logp_all[c].item())
        ent.append(-(p * logp_all).sum().item())
    return torch.tensor(lp, dtype=torch.float64), torch.tensor(ent, dtype=torch.float64)


def left_pad(prompt: list[int], n_pad: int, pad_id: int = 0):
    ids = torch.tensor([[pad_id] * n_pad + prompt])
    mask = torch.tensor([[0] * n_pad + [1] * len(prompt)])
    return ids, mask


# ---------------------------------------------------------------- build


def test_cpu_preset_has_1m_to_3m_parameters(tok):
    n = num_parameters(build_model(make_config("cpu"), tok))
    assert 1_000_000 <= n <= 3_000_000, n


def test_tiny_parameter_count_by_hand(tok):
    # tiny: V = 217, d = 32, 2 layers, MLP 64, tied embeddings (counted once)
    #   embedding                       217 * 32           = 6944
    #   per layer: q,k,v,o  4 * 32*32 = 4096; MLP 3 * 32*64 = 6144; 2 RMSNorms 64 -> 10304
    #   final norm                      32
    #   total 6944 + 2 * 10304 + 32 = 27584
    V = len(tok)
    assert V == 217
    model = build_model(make_config("tiny"), tok)
    assert num_parameters(model) == 27584
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight


def test_build_is_deterministic_for_a_seed(tok):
    a = build_model(make_config("tiny", seed=3), tok).state_dict()
    torch.manual_seed(12345)  # the global RNG state before building must not matter
    b = build_model(make_config("tiny", seed=3), tok).state_dict()
    c = build_model(make_config("tiny", seed=4), tok).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_generation_config_follows_tokenizer(model, tok):
    assert model.generation_config.eos_token_id == 1
    assert model.generation_config.pad_token_id == 0
    assert model.generation_config.bos_token_id == 2
    assert model.config.vocab_size == len(tok)


def test_save_and_load_with_auto_model(model, tok, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    loaded.eval()
    ids = torch.tensor([encode(tok, "12+34=46"), encode(tok, "98-76=22")])
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = loaded(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert num_parameters(loaded) == num_parameters(model)


# ---------------------------------------------------------------- positions


def test_positions_by_hand():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert positions(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    # a completion mask of 0 after EOS repeats the last position (those tokens are masked)
    mask = torch.tensor([[0, 1, 1, 1, 0, 0]])
    assert positions(mask).tolist() == [[0, 0, 1, 2, 2, 2]]


# ---------------------------------------------------------------- completion_logprobs


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.5])
def test_completion_logprobs_equal_hand_log_softmax(model, tok, temperature):
    prompt = encode(tok, "12+34=")
    completion = encode(tok, "46", bos=False, eos=True)                  # '4' '6' EOS
    ids, mask = left_pad(prompt, 0)
    c = torch.tensor([completion])
    logp, ent = completion_logprobs(model, ids, mask, c, torch.ones_like(c),
                                    temperature=temperature, with_entropy=True)
    exp_lp, exp_ent = hand_logprobs(model, prompt, completion, temperature)
    assert logp.shape == ent.shape == (1, 3)
    assert torch.allclose(logp[0].double(), exp_lp, atol=1e-5, rtol=0), (logp, exp_lp)
    assert torch.allclose(ent[0].double(), exp_ent, atol=1e-5, rtol=0), (ent, exp_ent)
    # sanity: log-probs are negative, entropies between 0 and log V
    assert (logp < 0).all()
    assert ((ent > 0) & (ent <= torch.log(torch.tensor(float(len(tok)))) + 1e-5)).all()


def test_completion_logprobs_without_entropy_returns_one_tensor(model, tok):
    prompt = encode(tok, "1+2=")
    c = torch.tensor([encode(tok, "3", bos=False, eos=True)])
    out = completion_logprobs(model, torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long),
                              c, torch.ones_like(c))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2)


def test_left_padding_does_not_change_logprobs(model, tok):
    # The same prompt and completion, scored with 0, 3 and 7 PADs on the left
    # in one batch, and then each against the unpadded hand computation.
    prompt = encode(tok, "求解方程 2x+3=7。")
    completion = encode(tok, "x=2", bos=False, eos=True)
    rows = []
    for n_pad in (0, 3, 7):
        ids, mask = left_pad(prompt, n_pad)
        rows.append((ids, mask))
    P = max(r[0].shape[1] for r in rows)
    ids = torch.cat([F.pad(r[0], (P - r[0].shape[1], 0), value=0) for r in rows])
    mask = torch.cat([F.pad(r[1], (P - r[1].shape[1], 0), value=0) for r in rows])
    assert mask.sum(1).tolist() == [len(prompt)] * 3 and mask[:, 0].tolist() == [0, 0, 0]
    c = torch.tensor([completion] * 3)
    logp, ent = completion_logprobs(model, ids, mask, c, torch.ones_like(c), temperature=0.7, with_entropy=True)
    exp_lp, exp_ent = hand_logprobs(model, prompt, completion, 0.7)
    for i in range(3):
        assert torch.allclose(logp[i].double(), exp_lp, atol=1e-5, rtol=0), (i, logp[i], exp_lp)
        assert torch.allclose(ent[i].double(), exp_ent, atol=1e-5, rtol=0), (i, ent[i], exp_ent)


def test_batch_of_different_prompts_matches_each_alone(model, tok):
    prompts = [encode(tok, "1+2="), encode(tok, "12+34="), encode(tok, "3x-5=10，")]
    completions = [encode(tok, "3", bos=False, eos=True),                 # 2 tokens
                   encode(tok, "46", bos=False, eos=True),                # 3 tokens
                   encode(tok, "x=5", bos=False, eos=True)]               # 4 tokens
    P, T = max(map(len, prompts)), max(map(len, completions))
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    pmask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    cids = torch.tensor([c + [0] * (T - len(c)) for c in completions])   # right-padded with PAD
    cmask = torch.tensor([[1] * len(c) + [0] * (T - len(c)) for c in completions])
    logp, ent = completion_logprobs(model, ids, pmask, cids, cmask, temperature=1.0, with_entropy=True)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        exp_lp, exp_ent = hand_logprobs(model, p, c, 1.0)
        n = len(c)
        assert torch.allclose(logp[i, :n].double(), exp_lp, atol=1e-5, rtol=0)
        assert torch.allclose(ent[i, :n].double(), exp_ent, atol=1e-5, rtol=0)
        # masked positions are exactly 0
        assert (logp[i, n:] == 0).all() and (ent[i, n:] == 0).all()


def test_entropy_of_uniform_logits_is_log_v(tok):
    # A model whose final norm is zeroed outputs logits 0 everywhere: uniform over V,
    # so log pi = -log V for every token and the entropy is log V (by hand).
    model = build_model(make_config("tiny"), tok)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.eval()
    V = len(tok)
    prompt = torch.tensor([encode(tok, "1+2=")])
    c = torch.tensor([encode(tok, "3", bos=False, eos=True)])
    logp, ent = completion_logprobs(model, prompt, torch.ones_like(prompt), c, torch.ones_like(c),
                                    temperature=0.5, with_entropy=True)
    log_v = torch.log(torch.tensor(float(V)))
    assert torch.allclose(logp, -log_v.expand(1, 2), atol=1e-5)
    assert torch.allclose(ent, log_v.expand(1, 2), atol=1e-5)


def test_completion_logprobs_are_differentiable(model, tok):
    prompt = torch.tensor([encode(tok, "1+2=")])
    c = torch.tensor([encode(tok, "3", bos=False, eos=True)])
    model.zero_grad(set_to_none=True)
    logp = completion_logprobs(model, prompt, torch.ones_like(prompt), c, torch.ones_like(c))
    logp.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------- each prompt once per group (share_prompts)


def group_batch(tok, G: int = 3):
    """Two prompts of different lengths (left-padded), G completions each of different lengths (right-padded):
    the N = 2G rows of a sampled batch, each group's rows contiguous."""
    prompts = [encode(tok, "12+34="), encode(tok, "3x-5=10，")]
    texts = [["46", "4", "460"], ["x=5", "5", "x=15"]]
    rows = [(p, encode(tok, t, bos=False, eos=True)) for p, ts in zip(prompts, texts) for t in ts[:G]]
    P, T = max(len(p) for p, _ in rows), max(len(c) for _, c in rows)
    ids = torch.tensor([[0] * (P - len(p)) + p for p, _ in rows])
    pmask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p, _ in rows])
    cids = torch.tensor([c + [0] * (T - len(c)) for _, c in rows])
    cmask = torch.tensor([[1] * len(c) + [0] * (T - len(c)) for _, c in rows])
    return rows, (ids, pmask, cids, cmask)


def test_shared_prompts_equal_each_row_alone(model, tok):
    rows, batch = group_batch(tok)
    logp = completion_logprobs(model, *batch, temperature=0.7, share_prompts=True)
    for i, (p, c) in enumerate(rows):
        exp_lp, _ = hand_logprobs(model, p, c, 0.7)
        assert torch.allclose(logp[i, :len(c)].double(), exp_lp, atol=1e-5, rtol=0)
        assert (logp[i, len(c):] == 0).all()


def rowwise_gradients(model, rows, w, temperature: float = 1.0) -> list[torch.Tensor]:
    """The gradient of sum_{i,t} w_it log pi(c_it) taken row by row, each row an unpadded sequence of its own
    (no cache, no sharing, no merging): the reference the shared and merged forwards are checked against."""
    model.zero_grad(set_to_none=True)
    for i, (p, c) in enumerate(rows):
        logits = model(input_ids=torch.tensor([p + c])).logits[0] / temperature          # (L, V)
        logp = F.log_softmax(logits[len(p) - 1:len(p) - 1 + len(c)], dim=-1)              # (|c|, V) predict c_t
        (logp.gather(-1, torch.tensor(c).unsqueeze(-1)).squeeze(-1) * w[i, :len(c)]).sum().backward()
    grads = [q.grad.clone() for q in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def test_shared_prompts_gradient_equals_the_sum_of_each_rows_gradient(model, tok):
    # the gradient of sum_{i,t} w_it log pi(c_it) through the shared forward, against the same sum taken row by
    # row, each row an unpadded sequence of its own (no cache, no sharing): the prompt's gradient adds up over rows
    rows, batch = group_batch(tok)
    w = torch.linspace(-1.0, 2.0, batch[2].numel()).view(batch[2].shape) * batch[3]    # (N, T) fixed weights
    model.zero_grad(set_to_none=True)
    (completion_logprobs(model, *batch, share_prompts=True) * w).sum().backward()
    shared = [p.grad.clone() for p in model.parameters()]
    for g, h in zip(shared, rowwise_gradients(model, rows, w)):
        assert torch.allclose(g, h, atol=1e-5, rtol=1e-4)


def test_shared_prompts_run_each_distinct_prompt_once(model, tok):
    # tokens through the first decoder layer: N*(P+T) without sharing; U*P + N*(T-1) with it (U = 2 prompts)
    seen = []
    count = lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).shape[:2])   # (rows, positions)
    hook = model.model.layers[0].register_forward_pre_hook(count, with_kwargs=True)
    try:
        _, batch = group_batch(tok)
        N, P, T = len(batch[0]), batch[0].shape[1], batch[2].shape[1]
        with torch.no_grad():
            completion_logprobs(model, *batch, share_prompts=False)
            assert sum(a * b for a, b in seen) == N * (P + T)
            seen.clear()
            completion_logprobs(model, *batch, share_prompts=True)
        assert [tuple(x) for x in seen] == [(2, P), (N, T - 1)]
    finally:
        hook.remove()


def test_length_buckets_by_hand():
    # 50 rows of length 3, 50 of 4, 2 of 6; a bucket costs rows * (bound - 1) positions, plus `cost` per bucket:
    #   [6]: 102*5 + 64 = 574;  [4, 6]: 100*3 + 2*5 + 2*64 = 438;  [3, 4, 6]: 100 + 150 + 10 + 3*64 = 452
    lengths = [3] * 50 + [4] * 50 + [6] * 2
    assert length_buckets(lengths, cost=64) == [4, 6]
    assert length_buckets(lengths, cost=0) == [3, 4, 6]          # 260 against 310 for [4, 6]
    assert length_buckets(lengths, cost=1000) == [6] and length_buckets(lengths, cost=float("inf")) == [6]
    assert length_buckets([1, 1]) == [1] and length_buckets([0, 2], cost=0) == [1, 2]   # an empty row counts as 1


def test_shared_prompts_in_length_buckets_equal_each_row_alone(model, tok, monkeypatch):
    # with buckets free (cost 0) every distinct length is a bucket of its own: the same log-probs and gradient
    import minigrpo.model as mm
    monkeypatch.setattr(mm, "BUCKET_COST", 0)
    rows, batch = group_batch(tok)
    seen = []
    hook = model.model.layers[0].register_forward_pre_hook(
        lambda m, a, kw: seen.append(tuple((a[0] if a else kw["hidden_states"]).shape[:2])), with_kwargs=True)
    try:
        logp = completion_logprobs(model, *batch, share_prompts=True)
    finally:
        hook.remove()
    lengths = sorted({len(c) for _, c in rows})
    counts = {n: sum(len(c) == n for _, c in rows) for n in lengths}
    P = batch[0].shape[1]
    assert seen == [(2, P)] + [(counts[n], n - 1) for n in lengths if n > 1]   # the prompts, then each bucket
    for i, (p, c) in enumerate(rows):
        exp_lp, _ = hand_logprobs(model, p, c, 1.0)
        assert torch.allclose(logp[i, :len(c)].double(), exp_lp, atol=1e-5, rtol=0)
        assert (logp[i, len(c):] == 0).all()


def test_shared_prompts_with_one_token_completions(model, tok):
    # T = 1: only the prompt's last position predicts; no completion pass
    _, (ids, pmask, cids, cmask) = group_batch(tok)
    one, ones = cids[:, :1], torch.ones_like(cids[:, :1])
    full = completion_logprobs(model, ids, pmask, one, ones)
    assert torch.allclose(completion_logprobs(model, ids, pmask, one, ones, share_prompts=True), full, atol=1e-6)


# ---------------------------------------------------------------- equal rows once (merge)


def duplicated_batch(tok):
    """group_batch's rows with some repeated, as a group's samples often are: rows 0, 0, 1, 0 | 3, 4, 4, 3 (8 rows,
    4 distinct); a repeat's padding is the same as its original's."""
    rows, (ids, pmask, cids, cmask) = group_batch(tok)
    order = torch.tensor([0, 0, 1, 0, 3, 4, 4, 3])
    return [rows[i] for i in order.tolist()], tuple(x[order] for x in (ids, pmask, cids, cmask))


@pytest.mark.parametrize("share", [False, True])
def test_merged_rows_equal_each_row_alone_in_value_and_gradient(model, tok, share):
    # each distinct row runs once; every row's log-probs against its own unpadded forward (hand_logprobs), and
    # the gradient of a weighted sum against the same sum taken row by row, each row's own forward (no merging)
    rows, batch = duplicated_batch(tok)
    w = torch.linspace(-1.0, 2.0, batch[2].numel()).view(batch[2].shape) * batch[3]    # (N, T) fixed weights
    model.zero_grad(set_to_none=True)
    logp = completion_logprobs(model, *batch, temperature=0.8, share_prompts=share, merge=True)
    (logp * w).sum().backward()
    merged = [p.grad.clone() for p in model.parameters()]
    for i, (p, c) in enumerate(rows):
        exp_lp, _ = hand_logprobs(model, p, c, 0.8)
        assert torch.allclose(logp[i, :len(c)].double(), exp_lp, atol=1e-5, rtol=0)
        assert (logp[i, len(c):] == 0).all()
    for g, h in zip(merged, rowwise_gradients(model, rows, w, temperature=0.8)):
        assert torch.allclose(g, h, atol=1e-5, rtol=1e-4)


def test_merged_rows_run_each_distinct_row_once(model, tok):
    # the 4 distinct rows of 8 through the first decoder layer, in one sequence each (share_prompts off)
    seen = []
    hook = model.model.layers[0].register_forward_pre_hook(
        lambda m, a, kw: seen.append(tuple((a[0] if a else kw["hidden_states"]).shape[:2])), with_kwargs=True)
    try:
        _, batch = duplicated_batch(tok)
        with torch.no_grad():
            completion_logprobs(model, *batch, merge=True)
    finally:
        hook.remove()
    assert seen == [(4, batch[0].shape[1] + batch[2].shape[1])]


def test_distinct_rows_tells_rows_apart_by_their_real_tokens_only():
    # rows 0 and 1 differ only past the completion's end (padding): equal; row 2 has another mask: distinct
    from minigrpo.model import distinct_rows
    ids, pmask = torch.tensor([[0, 5, 6]] * 3), torch.tensor([[0, 1, 1]] * 3)
    cids = torch.tensor([[7, 1, 0], [7, 1, 9], [7, 1, 0]])
    cmask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 1]])
    first, inverse = distinct_rows(ids, pmask, cids, cmask)
    assert inverse[0] == inverse[1] != inverse[2]
    assert sorted(first.tolist()) == [0, 2]
    assert torch.equal(first[inverse], torch.tensor([0, 0, 2]))


def test_rows_are_not_merged_under_dropout(tok):
    # with dropout on in training, equal rows give different outputs: each row keeps its own forward
    from minigrpo.model import stochastic
    m = build_model(make_config("tiny", seed=0), tok)
    assert not stochastic(m.train())
    m.config.attention_dropout = 0.1
    assert stochastic(m.train()) and not stochastic(m.eval())


# ---------------------------------------------------------------- device


def test_pick_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device() == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError) as info:
            pick_device(name)
        msg = str(info.value)
        assert repr(name) in msg and "CUDA is not available" in msg and "cpu" in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_pick_device_on_this_cpu_machine():
    assert pick_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="CUDA"):
        pick_device("cuda")
