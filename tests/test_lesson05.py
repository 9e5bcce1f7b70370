"""Lesson 05 (sampler and rewards) and the package agree; its exercise checkers accept the solutions and reject wrong answers.

The notebook's inline functions are exec'd from its cells (found by their
`# inline: NAME` marker): the naive sampler is compared with
`minigrpo.sampler.sample_group` and with the training forward pass on a tiny
random model; the advantage view is checked on colours worked out by hand.
The solutions are exec'd from the solutions notebook.
"""
import json
import math
import os
import re

import pytest
import torch

from minigrpo.course.exercises import lesson05
from minigrpo.model import completion_logprobs
from minigrpo.sampler import pad_prompts, sample_group
from minigrpo.tasks import parse_answer, solution
from minigrpo.tokenizer import encode

from nbcells import cell_containing, code_cells, exec_cells as load, outputs_text, source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSON = os.path.join(ROOT, "notebooks", "05_sampler_and_rewards.ipynb")
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "05_sampler_and_rewards_solutions.ipynb")
PAD, EOS = 0, 1
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class LogitBias(torch.nn.Module):
    """The wrapped model with `bias` (V,) added to every next-token logit (here: to make EOS likely)."""

    def __init__(self, model, bias):
        super().__init__()
        self.inner = model
        self.register_buffer("bias", bias)

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits = out.logits + self.bias
        return out


@pytest.fixture(scope="module")
def naive_sample():
    return load(LESSON, "# inline: naive_sample")["naive_sample"]


def prompts(tok, texts):
    return pad_prompts([encode(tok, t) for t in texts], tok.pad_token_id)  # (B, P) each, left-padded


TEXTS = ["12+34=", "求解方程 2x+3=7。", "7-9="]  # different lengths: the left padding is exercised


# ------------------------------------------------------------- the inline sampler vs the package


def test_inline_naive_sample_greedy_matches_sample_group(tok, rich, naive_sample):
    ids, mask = prompts(tok, TEXTS)
    kw = dict(group_size=3, max_new_tokens=12, eos_id=EOS, pad_id=PAD, greedy=True)
    n_ids, n_mask, n_logps = naive_sample(rich, ids, mask, **kw)
    s = sample_group(rich, ids, mask, **kw)
    assert n_ids.shape == (9, 12)
    assert torch.equal(n_ids, s.completion_ids)
    assert torch.equal(n_mask, s.completion_mask)
    assert torch.allclose(n_logps, s.logps, atol=1e-5)
    # the test has teeth: continuations vary along a row and between prompts
    assert len(set(n_ids[0].tolist())) > 2 and not torch.equal(n_ids[0], n_ids[3])
    # greedy: the G rows of a group are identical
    assert torch.equal(n_ids[0], n_ids[1]) and torch.equal(n_ids[0], n_ids[2])


def test_inline_naive_sample_greedy_is_the_argmax_of_a_full_forward(tok, rich, naive_sample):
    """Independent of any sampler: re-derive each greedy token from one forward over the unpadded sequence."""
    for text in TEXTS:
        ids, mask = prompts(tok, [text])
        n_ids, _, n_logps = naive_sample(rich, ids, mask, group_size=1, max_new_tokens=6, eos_id=EOS, pad_id=PAD,
                                         greedy=True)
        seq = encode(tok, text)
        for t in range(n_ids.shape[1]):
            with torch.no_grad():
                logits = rich(input_ids=torch.tensor([seq])).logits[0, -1]  # (V,) no padding, default positions
            logp = torch.log_softmax(logits.float(), -1)
            assert int(n_ids[0, t]) == int(logp.argmax())
            assert abs(float(n_logps[0, t]) - float(logp.max())) < 1e-5
            seq.append(int(n_ids[0, t]))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_inline_naive_sample_logps_match_training_forward(tok, rich, naive_sample, temperature):
    bias = torch.zeros(len(tok))
    bias[EOS] = 3.0  # EOS likely: rows end at different lengths
    model = LogitBias(rich, bias).eval()
    ids, mask = prompts(tok, TEXTS)
    n_ids, n_mask, n_logps = naive_sample(model, ids, mask, group_size=4, max_new_tokens=10, eos_id=EOS, pad_id=PAD,
                                          temperature=temperature, generator=torch.Generator().manual_seed(0))
    rep = ids.repeat_interleave(4, 0), mask.repeat_interleave(4, 0)  # (12, P)
    with torch.no_grad():
        train = completion_logprobs(model, *rep, n_ids, n_mask, temperature=temperature)
    assert torch.allclose(n_logps, train, atol=1e-5)
    lengths = n_mask.sum(1)
    assert len(set(lengths.tolist())) > 1  # the EOS bias did produce different lengths
    # the mask: 1 up to and including the first EOS, then PAD with mask 0 and log-prob 0
    for row, m, lp in zip(n_ids, n_mask, n_logps):
        eos = (row == EOS).nonzero()
        if len(eos):
            first = int(eos[0])
            assert m[:first + 1].all() and not m[first + 1:].any()
            assert (row[first + 1:] == PAD).all() and (lp[first + 1:] == 0).all()
        else:
            assert m.all() and len(row) == 10  # truncated


def test_inline_naive_sample_stops_when_every_row_is_done(tok, rich, naive_sample):
    bias = torch.zeros(len(tok))
    bias[EOS] = 50.0  # EOS at once
    model = LogitBias(rich, bias).eval()
    ids, mask = prompts(tok, TEXTS)
    n_ids, n_mask, n_logps = naive_sample(model, ids, mask, group_size=2, max_new_tokens=10, eos_id=EOS, pad_id=PAD)
    assert n_ids.shape == (6, 1) and (n_ids == EOS).all() and (n_mask == 1).all()  # EOS is inside the mask
    assert torch.allclose(n_logps, torch.zeros(6, 1), atol=1e-6)  # log p(EOS) ~ 0 under such a bias


# ------------------------------------------------------------- the advantage view


@pytest.fixture(scope="module")
def advantage_html():
    return load(LESSON, "# inline: advantage_html")["advantage_html"]


def row_colours(page):
    return [re.findall(r"background-color: (#[0-9a-f]{6})", row) for row in page.split("<tr>")[1:]]


def test_advantage_html_one_box_per_token_one_colour_per_row(advantage_html):
    texts = ["直接猜：x=2", "两边减3", "x=2"]
    page = advantage_html(texts, [-1.0, 0.5, 0.25])
    colours = row_colours(page)
    assert [len(c) for c in colours] == [len(t) + 1 for t in texts]  # <eos> box included
    assert all(len(set(c)) == 1 for c in colours)  # all tokens of a completion share its colour
    assert page.count("&lt;eos&gt;") == 3
    no_eos = advantage_html(texts, [-1.0, 0.5, 0.25], eos=False)
    assert [len(c) for c in row_colours(no_eos)] == [len(t) for t in texts] and "eos" not in no_eos


def test_advantage_html_colours_by_hand(advantage_html):
    # scale = max |A| = 2. A = -2: red (220, 40, 40) at strength 0.75: 255 - 35*0.75 = 228.75 -> e5, 255 - 215*0.75
    # = 93.75 -> 5e. A = +1: green (0, 150, 70) at 0.375: 159.375 -> 9f, 215.625 -> d8, 185.625 -> ba. A = 0: white.
    page = advantage_html(["ab", "cd", "ef"], torch.tensor([-2.0, 1.0, 0.0]))
    assert [c[0] for c in row_colours(page)] == ["#e55e5e", "#9fd8ba", "#ffffff"]
    assert "A = -2.00" in page and "A = +1.00" in page and "A = +0.00" in page


def test_advantage_html_escapes_and_shows_rewards(advantage_html):
    page = advantage_html(["a<b&c"], [0.0], rewards=[6.0])
    assert "&lt;" in page and "&amp;" in page and "<b&" not in page
    assert "r = 6" in page
    assert "r = " not in advantage_html(["x"], [1.0])


# ------------------------------------------------------------- the notebook


def test_lesson_is_executed_without_errors():
    cells = code_cells(LESSON)
    assert all(c.get("execution_count") for c in cells), "commit the notebook executed"
    assert not [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    first = source(cells[0])
    assert first.startswith("# NBVAL_IGNORE_OUTPUT") and "torch.__version__" in first
    assert "minigrpo.__version__" in first and "transformers.__version__" in first
    assert os.path.getsize(LESSON) < 300_000


def test_timing_and_training_cells_are_not_compared():
    for c in code_cells(LESSON):
        src = source(c)
        if "perf_counter" in src or "train_sft(" in src:
            assert src.startswith("# NBVAL_IGNORE_OUTPUT"), src.splitlines()[0]
        if src.startswith("# NBVAL_CHECK_OUTPUT"):
            out = outputs_text(c)
            assert "/tmp" not in out and "0x" not in out and " s |" not in out


def test_lesson_pins_the_note_numbers():
    pinned = [c for c in code_cells(LESSON) if source(c).startswith("# NBVAL_CHECK_OUTPUT")]
    text = "".join(outputs_text(c) for c in pinned)
    assert "answer 1 (guess   ) rubric 6.0" in text
    assert "answer 2 (short   ) rubric 8.0" in text
    assert "answer 3 (complete) rubric 9.0" in text
    assert "a wrong answer      rubric 0.0" in text
    assert "the note's text rubric 6.0" in text  # 因为治安: correct, other wording
    assert "rewards [6.0, 8.0, 9.0]: advantages -1.09  +0.22  +0.87" in text   # lesson 2 explains the note's values
    assert "parameters               1,077,504" in text
    assert "UnknownCharacterError: character 'y'" in text
    assert "'x=2或x=3。'               -> None" in text


def test_lesson_has_summary_and_exercises():
    with open(LESSON, encoding="utf-8") as f:
        md = [source(c) for c in json.load(f)["cells"] if c["cell_type"] == "markdown"]
    assert "**Assumes.**" in md[0] and "You will be able to" in md[0]
    assert any(m.startswith("## Summary") for m in md) and any("## Exercises" in m for m in md)
    for name in ("top_k_filter", "rubric_score", "cached_sample"):
        stub = cell_containing(LESSON, f"def {name}(")
        assert "# YOUR CODE HERE" in stub and "return None" in stub
        assert f"lesson05.check_{name}({name})" in cell_containing(LESSON, f"check_{name}(")


# ------------------------------------------------------------- the checkers

CHECKERS = {"top_k_filter": lesson05.check_top_k_filter, "rubric_score": lesson05.check_rubric_score,
            "cached_sample": lesson05.check_cached_sample}
SOLUTION_GLOBALS = {"parse_answer": parse_answer, "solution": solution}


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_checker_says_not_done_for_the_stub(name, capsys):
    stub = load(LESSON, f"def {name}(")[name]
    CHECKERS[name](stub)
    assert capsys.readouterr().out == f"{name}: not done yet (the function returns None)\n"


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_checker_accepts_the_solution(name, capsys):
    ns = {"torch": torch, "math": math, **SOLUTION_GLOBALS}
    exec(cell_containing(SOLUTIONS, f"def {name}("), ns)
    assert "# YOUR CODE HERE" not in cell_containing(SOLUTIONS, f"def {name}(")
    CHECKERS[name](ns[name])
    assert capsys.readouterr().out.startswith(f"{name}: correct")


def test_solutions_notebook_is_executed_and_correct():
    cells = code_cells(SOLUTIONS)
    assert all(c.get("execution_count") for c in cells)
    text = "".join(outputs_text(c) for c in cells)
    for name in CHECKERS:
        assert f"{name}: correct" in text


def _kth(x, k):
    return torch.topk(x, k, dim=-1).values[:, -1:]


def _in_place_top_k(x, k):
    x.masked_fill_(x < _kth(x, k), float("-inf"))
    return x


def _lenient_rubric(completion, a, b, c):
    """Takes the last x=<number> it finds (so listing candidates pays), then the exact styles."""
    found = re.findall(r"x=(-?\d+)", completion)
    if not found or found[-1] != str((c - b) // a):
        return 0.0
    record = {"task": "equation", "a": a, "b": b, "c": c}
    return {solution(record, "complete"): 9.0, solution(record, "short"): 8.0}.get(completion, 6.0)


def _keyword_rubric(completion, a, b, c):
    """Strict about the answer, but decides the style by key words."""
    if parse_answer(completion, "equation") != str((c - b) // a):
        return 0.0
    return 9.0 if "移项" in completion else 8.0 if "两边" in completion else 6.0


def _no_correctness_rubric(completion, a, b, c):
    record = {"task": "equation", "a": a, "b": b, "c": c}
    return {solution(record, "complete"): 9.0, solution(record, "short"): 8.0}.get(completion, 6.0)


def _swapped_rubric(completion, a, b, c):
    record = {"task": "equation", "a": a, "b": b, "c": c}
    if parse_answer(completion, "equation") != str((c - b) // a):
        return 0.0
    return {solution(record, "complete"): 8.0, solution(record, "short"): 9.0}.get(completion, 6.0)


def _wrong_sampler(flag):
    """A KV-cache sampler with one plausible mistake (`flag`); the solution's structure otherwise."""
    from transformers import DynamicCache

    from minigrpo.model import cache_kwarg, positions

    @torch.no_grad()
    def sample(model, prompt_ids, prompt_mask, *, group_size, max_new_tokens, eos_id, pad_id, temperature=1.0,
               greedy=False, generator=None):
        rows = prompt_ids.repeat_interleave(group_size, 0)                       # (N, P)
        attn = prompt_mask.repeat_interleave(group_size, 0)                      # (N, P)
        cache = DynamicCache()
        if flag == "prefill_every_row":   # G copies of each prompt through the model: the prefill G times over
            logits = model(input_ids=rows, attention_mask=attn, position_ids=positions(attn), **cache_kwarg(cache),
                           use_cache=True).logits[:, -1]
        else:
            logits = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions(prompt_mask),
                           **cache_kwarg(cache), use_cache=True).logits[:, -1].repeat_interleave(group_size, 0)
            cache.batch_repeat_interleave(group_size)
        ids, done, tokens, masks, logps = rows, torch.zeros(rows.shape[0], dtype=torch.bool), [], [], []
        for t in range(max_new_tokens):
            logp = torch.log_softmax(logits.float() / temperature, -1)           # (N, V)
            draw = torch.softmax(logits.float(), -1) if flag == "untempered_sampling" else logp.exp()
            tok_t = logp.argmax(-1) if greedy else torch.multinomial(draw, 1, generator=generator).squeeze(-1)
            tok_t = tok_t.masked_fill(done, pad_id)
            ended = done | (tok_t == eos_id)
            tokens.append(tok_t)
            masks.append(~ended if flag == "eos_outside_mask" else ~done)
            logps.append(logp.gather(-1, tok_t[:, None]).squeeze(-1) * masks[-1])
            done = ended
            if done.all() or t == max_new_tokens - 1:
                break
            attn = torch.cat([attn, torch.ones_like(tok_t[:, None])], 1)
            ids = torch.cat([ids, tok_t[:, None]], 1)
            if flag == "no_cache":              # the whole sequence again, every step
                logits = model(input_ids=ids, attention_mask=attn, position_ids=positions(attn),
                               use_cache=False).logits[:, -1]
                continue
            position = (torch.full_like(attn[:, :1], attn.shape[1] - 1) if flag == "padded_positions"
                        else attn.sum(-1, keepdim=True) - 1)                      # (N, 1)
            logits = model(input_ids=tok_t[:, None], attention_mask=attn, position_ids=position,
                           **cache_kwarg(cache), use_cache=True).logits[:, -1]
        return torch.stack(tokens, 1), torch.stack(masks, 1).long(), torch.stack(logps, 1)

    return sample


WRONG = {
    "top_k_filter": [
        lambda x, k: x.masked_fill(x < _kth(x, k), 0.0),  # 0 instead of -inf: those tokens stay possible
        lambda x, k: x.masked_fill(x <= _kth(x, k), float("-inf")),  # drops the k-th as well
        lambda x, k: x.masked_fill(x > torch.topk(x, k, -1, largest=False).values[:, -1:], float("-inf")),  # smallest
        lambda x, k: x.masked_fill(x < x.flatten().topk(min(k, x.numel())).values[-1], float("-inf")),  # not per row
        _in_place_top_k,  # right values, but overwrites the caller's logits
    ],
    "rubric_score": [_lenient_rubric, _keyword_rubric, _no_correctness_rubric, _swapped_rubric],
    "cached_sample": [_wrong_sampler(flag) for flag in ("no_cache", "padded_positions", "prefill_every_row",
                                                         "eos_outside_mask", "untempered_sampling")],
}


@pytest.mark.parametrize("name, index", [(n, i) for n, fs in sorted(WRONG.items()) for i in range(len(fs))])
def test_checker_rejects_wrong_answers(name, index):
    with pytest.raises(AssertionError, match=name):
        CHECKERS[name](WRONG[name][index])
