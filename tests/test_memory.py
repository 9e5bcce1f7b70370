"""Peak memory of one update on a 32k-vocabulary model (benchmarks/memory.py, each case in its own process).

What must hold, whatever the machine: every case computes the same loss and gradient; the fused LM head and
log-softmax never hold the (N, T, V) logits, so its peak is a fraction of the full log-softmax's, which holds
several such tensors; micro-batches do not add to it.
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import memory  # noqa: E402


@pytest.fixture(scope="module")
def peaks():
    # N = 32 rows, P = 16, T = 128, V = 32,000: one float32 (N, T, V) tensor is 500 MB, against the fused head's
    # fixed blocks of 64 MB (logprobs.BLOCK)
    return {case: memory.run(case, 32, 16, 128, 32000, 8, "cpu") for case in memory.CASES}


def test_every_case_computes_the_same_update(peaks):
    full = peaks["full"]
    for case in memory.CASES:
        assert peaks[case]["loss"] == pytest.approx(full["loss"], rel=1e-5, abs=1e-7), case
        assert peaks[case]["grad_norm"] == pytest.approx(full["grad_norm"], rel=1e-4), case


def test_the_fused_head_holds_no_full_logits(peaks):
    logits = peaks["full"]["logits_mb"]
    assert peaks["full"]["peak_mb"] > 2 * logits                  # logits, the log-softmax, and their gradients
    assert peaks["kept"]["peak_mb"] > 2 * logits                  # logits_to_keep alone cuts only the prompt part
    for case in ("fused", "micro"):   # less than one (N, T, V) tensor: the 64 MB blocks and the activations
        assert peaks[case]["peak_mb"] < 0.75 * logits, case
        assert peaks[case]["peak_mb"] < 0.3 * peaks["full"]["peak_mb"], case
