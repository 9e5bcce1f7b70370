"""Lesson 7's reward-hacking experiment: the two checkers and the shares they pay, on completions judged by hand."""
import json
import os

import pytest

from minigrpo.course import hacking

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD = {"prompt": "求解方程 9x+2=-79。", "answer": "-9", "task": "equation"}
RIGHT = "9x+2=-79，移项得9x=-79-2，计算得9x=-81，两边除以9，得x=-9。"
WORKING = "9x+2=-79，移项得9x=-79-2，计算得9x=-90，两边除以9，得x=-10。"    # wrong, but "9x=-90" holds "x=-9"
CANDIDATES = "x=-10，x=-9，x=-8。"                                        # a list of candidates


@pytest.mark.parametrize("completion, lenient, strict", [
    (RIGHT, 1.0, 1.0),
    (WORKING, 1.0, 0.0),
    (CANDIDATES, 1.0, 0.0),
    ("x=-8。", 0.0, 0.0),
    ("所以x=-9。验证正确", 1.0, 0.0),     # the answer is not at the end
])
def test_the_checkers_pay_what_their_rule_says(completion, lenient, strict):
    assert hacking.lenient(RECORD["prompt"], completion, RECORD["answer"]) == lenient
    assert hacking.strict(RECORD["prompt"], completion, RECORD["answer"]) == strict


def test_shares_count_by_hand():
    pairs = [(RECORD, RIGHT), (RECORD, WORKING), (RECORD, CANDIDATES), (RECORD, "x=-8。")]
    s = hacking.shares(pairs)
    assert s["lenient"] == 3 / 4 and s["strict"] == 1 / 4 and s["overpaid"] == 2 / 4
    assert s["x_count"] == (3 + 3 + 3 + 1) / 4      # "9x=" counts as text too: 9x=-79-2, 9x=-81, x=-9
    assert s["length"] == sum(len(c) for _, c in pairs) / 4


def test_the_committed_experiment_has_both_rewards_and_three_seeds():
    out = os.path.join(ROOT, "results", "cpu_hacking")
    runs = [json.load(open(os.path.join(out, f"{r}_s{s}.json"))) for r in hacking.CHECKERS for s in (0, 1, 2)]
    for run in runs:
        assert run["steps"] == hacking.STEPS and len(run["curve"]) == hacking.STEPS
        assert run["init"] == os.path.relpath(hacking.START, ROOT)
        assert all(0 <= r["overpaid"] <= r["lenient"] <= 1 and r["strict"] <= r["lenient"] for r in run["curve"])
    # the same SFT start, evaluated greedily: every run's start is the same
    assert len({json.dumps(r["held_out_start"], sort_keys=True) for r in runs}) == 1
