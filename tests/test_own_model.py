"""Bring your own model: any transformers causal LM and tokenizer, free-text data, micro-batches and 16-bit forwards.

Everything runs on a tiny Qwen2 with random weights and a byte-level BPE tokenizer trained here in a second
(tests/local_models.py). The expected values are worked out by hand (the parsers, the stop ids) or by the
definition they must meet: micro-batches give the gradient of one batch, a saved checkpoint loads back with
AutoModelForCausalLM / AutoTokenizer.
"""
import copy
import json
import os
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from minigrpo.config import make_config
from minigrpo.optim import update_policy
from minigrpo.pipeline import check_model
from minigrpo.reward import think_format
from minigrpo.sampler import pad_prompts, sample_group
from minigrpo.sft import sft_batch, sft_step
from minigrpo.tasks import canonical_number, is_correct, parse_answer
from minigrpo.tokenizer import decode, decode_batch, encode, stop_ids

from local_models import bpe_tokenizer, jsonl, model_folder, qwen2, sums
from test_errors import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def bpe():
    return bpe_tokenizer()


@pytest.fixture(scope="module")
def qwen(bpe):
    return qwen2(bpe).eval()


# ------------------------------------------------------------------ text through the tokenizer's own API

def test_byte_level_bpe_round_trip_without_bos(bpe):
    text = "What is 12 + 34? 求解方程 2x+3=7。"
    ids = encode(bpe, text)
    assert bpe.bos_token_id is None and ids == bpe(text)["input_ids"]      # no BOS is invented
    assert decode(bpe, ids) == text and "Ġ" not in decode(bpe, ids)       # text, not byte symbols
    assert encode(bpe, "7", bos=False, eos=True)[-1] == bpe.convert_tokens_to_ids("<|im_end|>")


def test_chat_template_wraps_the_prompt_with_the_generation_prompt(bpe):
    ids = encode(bpe, "What is 1 + 2?", chat=True)
    assert bpe.decode(ids) == "<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n"


def test_stop_ids_are_eos_the_generation_eos_ids_and_the_end_of_turn(bpe, qwen):
    end, text_end = bpe.convert_tokens_to_ids("<|im_end|>"), bpe.convert_tokens_to_ids("<|endoftext|>")
    assert stop_ids(bpe, qwen) == sorted({end, text_end})
    plain = bpe_tokenizer(chat_template=False)
    assert stop_ids(plain) == [end]                                         # no template, no model: EOS alone


def test_decode_cuts_at_the_first_of_several_stop_ids(bpe):
    a, b = encode(bpe, "12"), encode(bpe, "34")
    end, text_end = bpe.convert_tokens_to_ids("<|im_end|>"), bpe.convert_tokens_to_ids("<|endoftext|>")
    rows = [a + [text_end] + b, a + [end] + b + [text_end], a + b]
    assert decode_batch(bpe, rows, [end, text_end]) == ["12", "12", "1234"]


class Scripted(torch.nn.Module):
    """A causal LM that writes, greedily, row r's script[r][t] as its t-th new token (vocabulary of 10)."""

    def __init__(self, script, prompt_len):
        super().__init__()
        self.script, self.prompt_len = script, prompt_len
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, **_):
        t = attention_mask.shape[1] - self.prompt_len                          # tokens generated so far
        rows = len(input_ids)
        logits = torch.zeros(rows, input_ids.shape[1], 10)
        for r in range(rows):
            logits[r, -1, self.script[r][min(t, len(self.script[r]) - 1)]] = 10.0
        return SimpleNamespace(logits=logits)


def test_sampling_stops_a_row_at_any_of_its_stop_ids():
    script = [[5, 7, 5, 5], [5, 5, 8, 5], [5, 5, 5, 5]]                        # stop ids 7 and 8; row 2 never stops
    ids, mask = pad_prompts([[4, 4]] * 3, 0)
    # the script is indexed by batch row, which compaction renumbers as rows finish: keep every row in the batch
    s = sample_group(Scripted(script, 2), ids, mask, group_size=1, max_new_tokens=4, eos_id=[7, 8], pad_id=0,
                     greedy=True, compact=False)
    assert s.completion_ids.tolist() == [[5, 7, 0, 0], [5, 5, 8, 0], [5, 5, 5, 5]]
    assert s.completion_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert s.truncated.tolist() == [False, False, True]


# ------------------------------------------------------------------ free-text answers and the format reward

@pytest.mark.parametrize("completion, strict, last_number", [
    ("so the total is 46.\n#### 46", "46", "46"),                 # GSM8K's mark
    ("The answer is \\boxed{1,234}.", "1234", "1234"),            # MATH / R1's box, thousands comma dropped
    ("<think>2+2</think><answer> 4 </answer>", "4", "4"),         # R1's template
    ("#### $5.50", "5.5", "5.5"),                                 # dollars and a trailing zero
    ("#### 3 ... \\boxed{4}", None, None),                        # two marked answers that differ: no credit
    ("#### 3 ... \\boxed{3.0}", "3", "3"),                        # two marks that agree
    ("I think it is 18 dollars", None, "18"),                     # unmarked: only the lenient parser reads it
    ("no number here", None, None),
])
def test_free_text_answers(completion, strict, last_number):
    assert parse_answer(completion, "text") == strict
    assert parse_answer(completion, "text_last_number") == last_number


def test_free_text_answers_compare_as_numbers():
    assert canonical_number("-0.0") == "0" and canonical_number("007") == "7" and canonical_number("x") is None
    assert is_correct({"answer": "1,234", "task": "text"}, "#### 1234")
    assert not is_correct({"answer": "1234", "task": "text"}, "1234")        # strict: unmarked pays nothing
    assert is_correct({"answer": "1234", "task": "text_last_number"}, "it is 1234")


@pytest.mark.parametrize("completion, paid", [
    ("<think>12 + 34 = 46</think><answer>46</answer>", 1.0),
    ("  <think>a\nb</think>\n<answer>46</answer>\n", 1.0),        # whitespace around the parts is allowed
    ("<answer>46</answer>", 0.0),                                  # no reasoning
    ("<think>x</think><answer>46</answer> and more", 0.0),         # text after the answer
    ("<think>x<answer>46</answer>", 0.0),                          # the think block is not closed
])
def test_think_format_reward(completion, paid):
    assert think_format("q", completion) == paid


# ------------------------------------------------------------------ micro-batches: the one-batch gradient

def batch(bpe, qwen, n_prompts=4, group=2):
    """A sampled batch of the tiny Qwen2 (N = 8 rows) and advantages with two zero rows."""
    prompts = [r["prompt"] for r in sums(n_prompts, seed=3)]
    ids, mask = pad_prompts([encode(bpe, p, chat=True) for p in prompts], bpe.pad_token_id)
    s = sample_group(qwen, ids, mask, group_size=group, max_new_tokens=7, eos_id=stop_ids(bpe, qwen),
                     pad_id=bpe.pad_token_id, generator=torch.Generator().manual_seed(0))
    adv = torch.tensor([1.0, -1.0, 0.0, 0.0, 0.7, -0.7, 1.2, -1.2])
    return s, adv


SETTINGS = [dict(loss_type=t) for t in ("grpo", "bnpo", "dapo", "dr_grpo", "seq_sum", "cispo")] + [
    dict(loss_type="grpo", num_iterations=2, importance_sampling_level="sequence", eps_low=3e-4, eps_high=4e-4),
    dict(loss_type="dapo", num_iterations=2, beta=0.04, kl_estimator="k3", use_bias_correction_kl=True),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_micro_batches_give_the_one_batch_update(bpe, qwen, setting):
    s, adv = batch(bpe, qwen)
    mask = s.completion_mask.float()
    ref_logp = s.logps - 0.05 * s.completion_mask if setting.get("beta") else None   # some reference policy
    after = {}
    for m in (0, 1, 3):    # one batch; one row at a time; chunks of 3, 3 and the rest
        cfg = make_config("tiny", micro_batch_size=m if m != 3 else 0, lr=1e-3, **setting)
        cfg.micro_batch_size = m    # 3 does not divide the tiny preset's rows; update_policy does not need it to
        policy = copy.deepcopy(qwen)
        opt = torch.optim.SGD(policy.parameters(), lr=0.5)                # linear in the gradient: comparable
        upd = update_policy(policy, opt, s, adv, mask, cfg, ref_logp)
        after[m] = (upd, torch.cat([p.detach().flatten() for p in policy.parameters()]))
    (one, w_one) = after[0]
    assert not torch.equal(w_one, torch.cat([p.detach().flatten() for p in qwen.parameters()]))   # it moved
    for m in (1, 3):
        upd, w = after[m]
        torch.testing.assert_close(w, w_one, rtol=1e-5, atol=1e-6)
        assert upd.loss == pytest.approx(one.loss, rel=1e-4, abs=1e-7)
        assert upd.grad_norm == pytest.approx(one.grad_norm, rel=1e-4)
        for key in ("clip_low", "clip_high", "ratio_mean", "ratio_min", "ratio_max", "kl", "tokens"):
            assert upd.stats[key] == pytest.approx(one.stats[key], rel=1e-4, abs=1e-6), key


def test_sft_micro_batches_give_the_one_batch_step(bpe, qwen):
    records = sums(6, seed=4)
    ids, mask, labels = sft_batch(bpe, records, chat=True)
    weights = {}
    for m in (0, 2):
        cfg = make_config("tiny", micro_batch_size=m, sft_batch_size=6 if m else 16)
        policy = copy.deepcopy(qwen).train()
        loss = sft_step(policy, torch.optim.SGD(policy.parameters(), lr=0.5), ids, mask, labels, cfg)
        weights[m] = (loss, torch.cat([p.detach().flatten() for p in policy.parameters()]))
    assert weights[2][0] == pytest.approx(weights[0][0], rel=1e-5)
    torch.testing.assert_close(weights[2][1], weights[0][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_forwards_keep_float32_weights(bpe, qwen, dtype):
    s, adv = batch(bpe, qwen)
    cfg = make_config("tiny", dtype=dtype, lr=1e-3)
    policy = copy.deepcopy(qwen)
    scaler = torch.amp.GradScaler("cpu") if dtype == "float16" else None
    upd = update_policy(policy, torch.optim.AdamW(policy.parameters(), lr=1e-3), s, adv,
                        s.completion_mask.float(), cfg, scaler=scaler)
    assert all(p.dtype == torch.float32 for p in policy.parameters())       # the master weights stay float32
    assert upd.loss == upd.loss and upd.grad_norm > 0                        # finite, and a gradient flowed


# ------------------------------------------------------------------ the command line, end to end

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("own")
    return {"model": model_folder(d / "qwen2"),
            "train": jsonl(d / "train.jsonl", [{"prompt": r["prompt"], "answer": r["answer"]} for r in sums(16, 5)]),
            "test": jsonl(d / "test.jsonl", [{"prompt": r["prompt"], "answer": r["answer"]} for r in sums(8, 6)]),
            "sft": jsonl(d / "sft.jsonl", sums(24, 7)), "dir": d}


def own(files, out, *extra):
    return ["train", "--model", files["model"], "--train_file", files["train"], "--test_file", files["test"],
            "--sft_file", files["sft"], "--sft_steps", "2", "--sft_batch_size", "4", "--steps", "2",
            "--prompts_per_step", "2", "--group_size", "2", "--max_new_tokens", "12", "--max_seq_len", "64",
            "--chat_template", "true", "--reward", "correct:1,think_format:0.1", "--micro_batch_size", "2",
            "--eval_size", "4", "--eval_every", "1", "--save_every", "1", "--no-progress", "--out_dir", str(out),
            *extra]


def test_a_few_grpo_steps_on_your_own_model_and_data(files, tmp_path, capsys):
    out = tmp_path / "run"
    rc, lines, _ = run_cli(own(files, out), capsys)
    assert rc == 0, lines
    rows = [json.loads(line) for line in open(out / "metrics.jsonl", encoding="utf-8")]
    assert [r["step"] for r in rows] == [1, 2] and all("eval_accuracy" in r for r in rows)
    # the checkpoint is a transformers folder: it loads back with its own (BPE, chat) tokenizer
    model = AutoModelForCausalLM.from_pretrained(out / "checkpoint")
    tok = AutoTokenizer.from_pretrained(out / "checkpoint")
    original = AutoTokenizer.from_pretrained(files["model"])
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert tok.get_vocab() == original.get_vocab() and tok.chat_template == original.chat_template
    assert encode(tok, "What is 1 + 2?", chat=True) == encode(original, "What is 1 + 2?", chat=True)
    # and the run resumes from it
    rc, lines, _ = run_cli(["train", "--resume", str(out / "checkpoint"), "--steps", "3", "--no-progress"], capsys)
    assert rc == 0, lines
    assert [json.loads(line)["step"] for line in open(out / "metrics.jsonl", encoding="utf-8")] == [1, 2, 3]


# ------------------------------------------------------------------ bad input: one line, before training

def test_a_model_folder_without_a_tokenizer(files, tmp_path, capsys):
    bare = tmp_path / "bare"
    qwen2(bpe_tokenizer()).save_pretrained(bare)
    rc, lines, _ = run_cli(own(files, tmp_path / "r", "--model", str(bare)), capsys)
    assert rc == 2 and len(lines) == 1 and f"model folder {bare} has no tokenizer" in lines[0]
    assert "save_pretrained" in lines[0]


def test_a_tokenizer_without_eos(files, tmp_path, capsys):
    folder = model_folder(tmp_path / "noeos", tok=bpe_tokenizer(eos=False), model=qwen2(bpe_tokenizer()))
    rc, lines, _ = run_cli(own(files, tmp_path / "r", "--model", folder), capsys)
    assert rc == 2 and len(lines) == 1 and "has no EOS token" in lines[0]
    assert not os.path.exists(tmp_path / "r" / "sft")                       # before any training


def test_chat_template_without_a_template(files, tmp_path, capsys):
    folder = model_folder(tmp_path / "nochat", tok=bpe_tokenizer(chat_template=False))
    rc, lines, _ = run_cli(own(files, tmp_path / "r", "--model", folder), capsys)
    assert rc == 2 and len(lines) == 1 and "has no chat template" in lines[0] and "--chat_template false" in lines[0]


def test_a_jsonl_line_without_answer(files, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "What is 1 + 2?", "answer": "3"}\n{"prompt": "What is 2 + 2?"}\n', encoding="utf-8")
    rc, lines, _ = run_cli(own(files, tmp_path / "r", "--train_file", str(bad)), capsys)
    assert rc == 2 and len(lines) == 1 and f"{bad}, line 2" in lines[0] and "answer" in lines[0]


def test_a_micro_batch_size_that_does_not_divide_the_rows(files, tmp_path, capsys):
    rc, lines, _ = run_cli(own(files, tmp_path / "r", "--micro_batch_size", "3"), capsys)
    assert rc == 2 and len(lines) == 1
    assert "micro_batch_size=3 does not divide the 4 rows of a step" in lines[0]


def test_bf16_on_a_gpu_without_it(bpe, qwen, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ValueError, match="dtype=bfloat16 is not supported by Tesla T4; use --dtype float16"):
        check_model(make_config("tiny", dtype="bfloat16"), qwen, bpe, torch.device("cuda"))
