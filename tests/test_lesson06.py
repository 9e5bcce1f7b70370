"""Lesson 06 (SFT warm start, then GRPO on arithmetic): its exercise checkers accept the solutions and reject wrong
answers, and the committed run it reads (results/cpu_arithmetic/) is self-consistent and loadable.

The solutions are exec'd from the solutions notebook; the wrong answers and the expected numbers are derived here
independently (by enumeration, by hand, or from the files).
"""
import itertools
import math
import os

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from minigrpo.data import load_split
from minigrpo.evaluate import evaluate
from minigrpo.course.exercises import lesson06
from minigrpo.logger import STEP_KEYS
from minigrpo.reward import combine

from nbcells import code_cells, function_defined, source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSON = os.path.join(ROOT, "notebooks", "06_train_arithmetic.ipynb")
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "06_train_arithmetic_solutions.ipynb")
RUN = os.path.join(ROOT, "results", "cpu_arithmetic")


def solution(name):
    return function_defined(SOLUTIONS, name, {"torch": torch, "math": math, "np": np, "combine": combine})


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py, as are `rows` and `results` of RUN


# ------------------------------------------------------------------ the checkers


def test_checkers_accept_the_solutions(rows, capsys):
    lesson06.check_mixed_group_share(solution("mixed_group_share"))
    lesson06.check_pass_at_k(solution("pass_at_k"))
    lesson06.check_first_step_reaching(solution("first_step_reaching"), rows)
    out = capsys.readouterr().out
    assert out.count(": correct") == 3 and "not done" not in out


def test_checkers_say_not_done_for_stubs(capsys):
    lesson06.check_mixed_group_share(lambda right, G: None)
    lesson06.check_pass_at_k(lambda n, c, k: None)
    lesson06.check_first_step_reaching(lambda rows, level: None)
    assert capsys.readouterr().out.count("not done yet") == 3


def test_mixed_group_cases_by_brute_force():
    """The checker's numbers, counted group by group with plain Python."""
    for rows, G, expected in lesson06.MIXED_CASES:
        groups = [row[k:k + G] for row in rows for k in range(0, len(row), G)]
        assert sum(len(set(g)) > 1 for g in groups) / len(groups) == expected


@pytest.mark.parametrize("wrong", [
    lambda right, G: float(np.mean(np.asarray(right).reshape(len(right), -1, G).min(-1) ==
                                   np.asarray(right).reshape(len(right), -1, G).max(-1))),   # the all-equal share
    lambda right, G: float(np.mean(np.asarray(right).reshape(-1, G, len(right)).std(1) > 0)),  # groups across prompts
    lambda right, G: float(np.mean(np.asarray(right).mean(1) % 1 > 0)),                      # per prompt, not group
])
def test_mixed_group_share_rejects_wrong(wrong):
    with pytest.raises(AssertionError):
        lesson06.check_mixed_group_share(wrong)


def test_pass_at_k_cases_by_hand():
    """The checker's hand cases, counted again draw by draw (or by the product formula for the large one)."""
    for n, c, k, expected in lesson06.PASS_AT_K_CASES:
        if n <= 16:
            draws = list(itertools.combinations(range(n), k))
            assert math.isclose(sum(any(i < c for i in d) for d in draws) / len(draws), expected, rel_tol=1e-12)
        else:
            assert math.isclose(1 - math.prod((n - c - i) / (n - i) for i in range(k)), expected, rel_tol=1e-12)


@pytest.mark.parametrize("wrong", [
    lambda n, c, k: 1 - (1 - c / n) ** k,                           # with replacement: biased
    lambda n, c, k: c / n,                                          # pass@1 whatever k
    lambda n, c, k: min(1.0, k * c / n),                            # a union bound
    lambda n, c, k: 1 - math.factorial(n - c) / math.factorial(n) * math.factorial(n - k)   # drops 1 / (n-c-k)!
    if n - c >= k else 1.0,
])
def test_pass_at_k_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="pass_at_k"):
        lesson06.check_pass_at_k(wrong)


@pytest.mark.parametrize("wrong", [
    lambda rows, level: next((r["step"] for r in rows if r.get("eval_accuracy", 0) > level), 0),     # > not >=
    lambda rows, level: next((r["step"] for r in reversed(rows) if r.get("eval_accuracy", 0) >= level), 0),  # last
    lambda rows, level: next((r["step"] for r in rows if r.get("eval_accuracy", r.get("accuracy", 0)) >= level), 0),
    lambda rows, level: next((r["step"] for r in rows if r.get("eval_accuracy", 0) >= level), -1),   # -1 for never
])
def test_first_step_rejects_wrong(wrong):
    with pytest.raises(AssertionError):
        lesson06.check_first_step_reaching(wrong)


def test_first_step_committed_value(rows):
    """The hard-coded 300 is what the file says."""
    evals = [(r["step"], r["eval_accuracy"]) for r in rows if "eval_accuracy" in r]
    assert min(s for s, a in evals if a >= 0.9) == lesson06.COMMITTED_FIRST_90


# ------------------------------------------------------------------ the committed run


def test_committed_results_are_self_consistent(rows, results):
    assert len(rows) == results["grpo_steps"] == results["config"]["steps"] == 500
    assert [r["step"] for r in rows] == list(range(1, 501))
    for r in rows:
        assert set(STEP_KEYS) <= r.keys(), r["step"]
    evals = [r for r in rows if "eval_accuracy" in r]
    assert [r["step"] for r in evals] == list(range(50, 501, 50))
    assert results["grpo"]["accuracy"] == rows[-1]["eval_accuracy"] == 0.932
    assert results["sft"]["accuracy"] == 0.628 and results["sft"]["n"] == results["grpo"]["n"] == 500
    assert results["device"] == "cpu" and results["parameters"] == 1077504
    # beta = 0 and mu = 1: no KL and no clipping, as the lesson says
    assert all(r["kl"] == 0 and r["clip_low"] == 0 and r["clip_high"] == 0 for r in rows)


@pytest.mark.parametrize("name", ["sft", "checkpoint"])
def test_committed_checkpoints_load(name):
    model = AutoModelForCausalLM.from_pretrained(os.path.join(RUN, name))
    assert sum(p.numel() for p in model.parameters()) == 1077504


def test_committed_grpo_checkpoint_accuracy():
    from minigrpo.checkpoint import load_checkpoint
    from minigrpo.pipeline import prepare_model
    model, tok, _ = load_checkpoint(os.path.join(RUN, "checkpoint"))
    model = prepare_model(model, torch.device("cpu"))
    acc = evaluate(model, tok, load_split("arithmetic", "test", os.path.join(ROOT, "data")), max_new_tokens=6)["accuracy"]
    assert abs(acc - 0.932) < 0.01


def test_notebook_pins_the_headline():
    outs = "".join("".join(o.get("text", "")) for c in code_cells(LESSON) for o in c.get("outputs", []))
    assert "SFT start   62.8%" in outs and "after GRPO  93.2%" in outs
    assert any("YOUR CODE HERE" in source(c) for c in code_cells(LESSON))
    assert not any("YOUR CODE HERE" in source(c) for c in code_cells(SOLUTIONS))
