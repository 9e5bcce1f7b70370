"""Tests for minigrpo.sft: the supervised warm start.

Token ids in the hand-built expectations follow the tokenizer's vocabulary
order: <pad> 0, <eos> 1, <bos> 2, <unk> 3, then '0'..'9' = 4..13, '+' 14,
'-' 15, '*' 16, '/' 17, '=' 18, '(' 19, ')' 20, 'x' 21.
"""
import math

import pytest
import torch

from minigrpo.config import make_config
from minigrpo.evaluate import generate
from minigrpo.model import build_model
from minigrpo.sft import sft_batch, sft_loss, train_sft
from minigrpo.tasks import demonstration
from minigrpo.tokenizer import encode

RECORDS = [
    {"task": "arithmetic", "prompt": p, "answer": a}
    for p, a in [("1+2=", "3"), ("12+34=", "46"), ("5-7=", "-2"), ("9*8=", "72"),
                 ("23+19=", "42"), ("40-15=", "25"), ("7*6=", "42"), ("88-9=", "79")]
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ---------------------------------------------------------------- demonstrations and batches


def test_demonstration_prefers_solution():
    assert demonstration({"prompt": "1+2=", "answer": "3"}) == "3"
    rec = {"prompt": "求解方程 2x+3=7。", "answer": "2", "solution": "2x=4，x=2"}
    assert demonstration(rec) == "2x=4，x=2"


def test_sft_batch_by_hand(tok):
    records = [{"prompt": "1+2=", "answer": "3"}, {"prompt": "12+34=", "answer": "46"}]
    ids, mask, labels = sft_batch(tok, records)
    # row 0: BOS 1 + 2 = | 3 EOS            -> [2, 5, 14, 6, 18 | 7, 1], then 3 PADs
    # row 1: BOS 1 2 + 3 4 = | 4 6 EOS      -> [2, 5, 6, 14, 7, 8, 18 | 8, 10, 1]
    X = -100
    assert ids.tolist() == [[2, 5, 14, 6, 18, 7, 1, 0, 0, 0],
                            [2, 5, 6, 14, 7, 8, 18, 8, 10, 1]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                             [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]
    assert labels.tolist() == [[X, X, X, X, X, 7, 1, X, X, X],
                               [X, X, X, X, X, X, X, 8, 10, 1]]


def test_sft_batch_uses_the_solution(tok):
    ids, mask, labels = sft_batch(tok, [{"prompt": "2x=4", "answer": "2", "solution": "x=2"}])
    # BOS '2' 'x' '=' '4' | 'x' '=' '2' EOS
    assert ids.tolist() == [[2, 6, 21, 18, 8, 21, 18, 6, 1]]
    assert labels.tolist() == [[-100] * 5 + [21, 18, 6, 1]]
    assert mask.tolist() == [[1] * 9]


def test_sft_loss_is_mean_completion_cross_entropy(tok):
    # By hand: one unpadded forward per record; -log p of each completion token
    # (and EOS) given its prefix; the mean over all such tokens of the batch.
    model = build_model(make_config("tiny", seed=1), tok).eval()
    records = RECORDS[:3]
    nll = []
    with torch.no_grad():
        for r in records:
            prompt = encode(tok, r["prompt"])
            comp = encode(tok, r["answer"], bos=False, eos=True)
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + comp])).logits[0].double(), -1)
            for t, c in enumerate(comp):
                nll.append(-logp[len(prompt) - 1 + t, c].item())
        loss = sft_loss(model, *sft_batch(tok, records)).item()
    assert len(nll) == 2 + 3 + 3
    assert math.isclose(loss, sum(nll) / len(nll), abs_tol=1e-5)
    # an untrained model is near uniform: the loss is close to log V
    assert abs(loss - math.log(len(tok))) < 0.5


def test_train_sft_rejects_empty_records(tok):
    model = build_model(make_config("tiny"), tok)
    with pytest.raises(ValueError, match="at least one"):
        train_sft(model, tok, [], make_config("tiny", sft_steps=1, sft_batch_size=2), progress=False)


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tok):
    model = build_model(make_config("tiny", seed=0), tok)
    losses = train_sft(model, tok, RECORDS, make_config("tiny", sft_steps=150, sft_batch_size=8, sft_lr=3e-3, seed=0),
                       progress=False)
    return model, losses


def test_train_sft_drives_the_loss_down(trained, tok):
    model, losses = trained
    assert len(losses) == 150
    assert all(math.isfinite(x) for x in losses)
    assert abs(losses[0] - math.log(len(tok))) < 0.5          # starts near uniform
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])
    assert not model.training                                  # left in eval mode


def test_train_sft_memorises_the_answers(trained, tok):
    model, _ = trained
    out = generate(model, tok, [r["prompt"] for r in RECORDS], max_new_tokens=5)
    right = sum(o == r["answer"] for o, r in zip(out, RECORDS))
    assert right >= 6, list(zip(out, [r["answer"] for r in RECORDS]))


def test_train_sft_is_reproducible(tok):
    def run():
        model = build_model(make_config("tiny", seed=2), tok)
        return train_sft(model, tok, RECORDS, make_config("tiny", sft_steps=5, sft_batch_size=3, sft_lr=3e-3, seed=4),
                         progress=False)

    assert run() == run()
