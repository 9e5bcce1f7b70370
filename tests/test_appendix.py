"""The engineering appendix to lesson 5: executed, its counts and round trips pinned, its hook timer correct.

The parameter count is checked against the formula worked out by hand in the notebook's table (V d + L (4 d^2 +
3 d d_ff + 2 d) + d with V = 217, d = 128, d_ff = 512, L = 4); the hook timer `step_times` is exec'd from its
cell and run on a module whose calls are known.
"""
import os
import time

import pytest
import torch

from nbcells import code_cells, function_defined, outputs_text, source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPENDIX = os.path.join(ROOT, "notebooks", "appendix_engineering.ipynb")
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_appendix_is_executed_without_errors():
    cells = code_cells(APPENDIX)
    assert all(c.get("execution_count") for c in cells), "commit the notebook executed"
    assert not [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert source(cells[0]).startswith("# NBVAL_IGNORE_OUTPUT") and "torch.__version__" in source(cells[0])
    assert os.path.getsize(APPENDIX) < 200_000


def test_timing_cells_are_not_compared():
    for c in code_cells(APPENDIX):
        if "perf_counter()\n" in source(c) or "step_times(model," in source(c):
            assert source(c).startswith(("# NBVAL_IGNORE_OUTPUT", "def step_times(")), source(c).splitlines()[0]


def test_appendix_pins_the_counts_and_the_round_trips():
    text = "".join(outputs_text(c) for c in code_cells(APPENDIX))
    by_hand = 217 * 128 + 4 * (4 * 128 ** 2 + 3 * 128 * 512 + 2 * 128) + 128
    assert by_hand == 1_077_504
    assert f"total              {by_hand:,}   by hand: {by_hand:,}" in text
    assert f"embed_tokens          {217 * 128:,}" in text          # tied: the lm_head adds nothing
    assert "logits after a save/load round trip: exact" in text
    assert text.count("AutoTokenizer ids of") == 3 and text.count(": exact") == 4


class Sleepy(torch.nn.Module):
    """A model whose forward takes `attention_mask` and sleeps 10 ms per position."""

    def forward(self, input_ids, attention_mask):
        time.sleep(0.01 * attention_mask.shape[1])
        return input_ids


def test_step_times_records_every_call_with_its_length_and_duration():
    step_times = function_defined(APPENDIX, "step_times", {"time": time})
    m = Sleepy()
    # a sampler's k-th call attends to P + k positions: here P = 1, then 2 (10 and 20 ms of sleep)
    calls = step_times(m, lambda: [m(input_ids=torch.zeros(1, n), attention_mask=torch.ones(1, n)) for n in (1, 2)], 1)
    assert [n for n, _ in calls] == [1, 2]
    assert 0.01 <= calls[0][1] and 0.02 <= calls[1][1] < 0.1
    assert not m._forward_hooks and not m._forward_pre_hooks   # the hooks are removed afterwards
