"""Lesson 07 (equations with the section-6 rubric): its exercise checkers accept the solutions and reject wrong
answers, and the committed run it reads (results/cpu_equations/) is self-consistent, loadable and meets the targets.

The solutions are exec'd from the solutions notebook; the wrong answers and the expected numbers are derived here
independently (numpy's sample std, the engine's style classifier, the files).
"""
import math
import os

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from minigrpo.advantage import group_advantages
from minigrpo.data import load_split
from minigrpo.evaluate import evaluate
from minigrpo.course.exercises import lesson07
from minigrpo.logger import STEP_KEYS
from minigrpo.tasks import STYLES, classify_style, parse_answer, solution

from nbcells import code_cells, function_defined, source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSON = os.path.join(ROOT, "notebooks", "07_equations_rubric.ipynb")
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "07_equations_rubric_solutions.ipynb")
RUN = os.path.join(ROOT, "results", "cpu_equations")
# The committed run's figures, read from results/cpu_equations/results.json when it was committed.
SFT_ACCURACY, GRPO_ACCURACY = 275 / 300, 292 / 300
PARAMETERS = 1077504


def solution_fn(name):
    return function_defined(SOLUTIONS, name, {"math": math, "STYLES": STYLES, "classify_style": classify_style,
                                              "parse_answer": parse_answer, "solution": solution})


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py, as are `rows` and `results` of RUN


# ------------------------------------------------------------------ the checkers


def test_checkers_accept_the_solutions(capsys):
    lesson07.check_style_shares(solution_fn("style_shares"))
    lesson07.check_complete_advantage(solution_fn("complete_advantage"))
    lesson07.check_first_wrong_step(solution_fn("first_wrong_step"))
    out = capsys.readouterr().out
    assert out.count(": correct") == 3 and "not done" not in out


def test_checkers_say_not_done_for_stubs(capsys):
    lesson07.check_style_shares(lambda records, completions: None)
    lesson07.check_complete_advantage(lambda k, G: None)
    lesson07.check_first_wrong_step(lambda record, completion: None)
    assert capsys.readouterr().out.count("not done yet") == 3


def test_style_cases_agree_with_the_engine():
    """The hand-counted shares equal counts made with the engine's own parser and classifier."""
    for records, completions, expected in lesson07.STYLE_CASES:
        styles = [classify_style(r, t) for r, t in zip(records, completions)
                  if parse_answer(t, "equation") == r["answer"]]
        for s in (*STYLES, "other"):
            assert math.isclose(expected[s], styles.count(s) / len(styles) if styles else 0.0)


def test_advantage_cases_agree_with_numpy():
    """The closed form in the checker equals (r - mean) / std(ddof=1) computed by numpy."""
    for k, G, expected in lesson07.ADVANTAGE_CASES:
        r = np.array([9.0] * k + [8.0] * (G - k))
        a = 0.0 if r.std() == 0 or k == 0 else (9.0 - r.mean()) / r.std(ddof=1)
        assert math.isclose(a, expected, rel_tol=1e-12, abs_tol=1e-12), (k, G)


def test_closed_form_cases_follow_the_definition():
    """At non-integer k and G, and at G = 10^12: the mean and sample variance of k nines and G-k eights, with the
    counts as weights, give the checker's values; and no group of rewards can be built there."""
    for k, G, expected in lesson07.CLOSED_FORM_CASES:
        mean = (9 * k + 8 * (G - k)) / G
        var = (k * (9 - mean) ** 2 + (G - k) * (8 - mean) ** 2) / (G - 1)
        a = 0.0 if k == G else (9 - mean) / math.sqrt(var)
        assert math.isclose(a, expected, rel_tol=1e-9, abs_tol=1e-12), (k, G)
        assert not (float(k).is_integer() and float(G).is_integer() and G < 1e9), (k, G)


def test_step_cases_are_complete_style_texts():
    """Right cases are the canonical text; wrong ones state a wrong value in the named step."""
    for record, completion, expected in lesson07.STEP_CASES:
        canonical = solution(record, "complete")
        assert (completion == canonical) == (expected is None)
        assert len(completion.split("，")) == len(canonical.split("，")) == 5
    assert lesson07.RESULT == solution(lesson07.EQ_3X5, "complete")
    assert [classify_style(lesson07.EQ_2X3, t) for t in (lesson07.GUESS, lesson07.SHORT, lesson07.COMPLETE)] \
        == list(STYLES)


def _shares_counting_wrong(records, completions):
    styles = [classify_style(r, t) for r, t in zip(records, completions)]
    return {s: styles.count(s) / len(styles) for s in (*STYLES, "other")}


def _shares_without_other(records, completions):
    styles = [classify_style(r, t) for r, t in zip(records, completions) if parse_answer(t, "equation") == r["answer"]]
    known = [s for s in styles if s != "other"]
    return {s: (known.count(s) / len(known) if known else 0.0) for s in (*STYLES, "other")}


@pytest.mark.parametrize("wrong", [_shares_counting_wrong, _shares_without_other])
def test_style_shares_rejects_wrong(wrong):
    with pytest.raises(AssertionError):
        lesson07.check_style_shares(wrong)


@pytest.mark.parametrize("wrong", [
    lambda k, G: 0.0 if k in (0, G) else math.sqrt((G - k) / k),              # population std
    lambda k, G: 0.0 if k in (0, G) else 1 - k / G,                            # not divided by the std
    lambda k, G: 0.0 if k in (0, G) else math.sqrt((G - k) * (G - 1) / (k * G)) / 9,  # scaled by the reward
    lambda k, G: math.sqrt((G - k) * (G - 1) / (max(k, 1) * G)),               # nonzero when all are short
    lambda k, G: 0.0 if k in (0, G) else math.sqrt((G - k) * G / ((G - 1) * k)),   # (G-1)/G upside down
    lambda k, G: group_advantages(torch.tensor([9.0] * k + [8.0] * (G - k)), G)[0].item(),   # section 1's line
    lambda k, G: (group_advantages(torch.tensor([9.0] * int(k) + [8.0] * int(G - k)), int(G))[0].item()
                  if 0 < k < G else 0.0),                                       # a group, rounded to whole answers
])
def test_complete_advantage_rejects_wrong(wrong):
    with pytest.raises(AssertionError):
        lesson07.check_complete_advantage(wrong)


@pytest.mark.parametrize("wrong", [
    lambda record, completion: None if completion == solution(record, "complete") else "compute",   # always compute
    lambda record, completion: (None if parse_answer(completion, "equation") == record["answer"]
                                else "divide"),                                                      # only the answer
    lambda record, completion: next((n for n, w, g in zip(["restate", "move", "compute", "divide", "divide"],
                                                          solution(record, "complete").split("，")[::-1],
                                                          completion.split("，")[::-1]) if w != g), None),  # last
])
def test_first_wrong_step_rejects_wrong(wrong):
    with pytest.raises(AssertionError):
        lesson07.check_first_wrong_step(wrong)


# ------------------------------------------------------------------ the committed run


def test_committed_results_meet_the_targets(rows, results):
    assert results["task"] == "equations" and results["preset"] == "equations" and results["device"] == "cpu"
    assert results["parameters"] == PARAMETERS and results["config"]["reward"] == "rubric"
    assert results["sft"]["accuracy"] == SFT_ACCURACY and results["grpo"]["accuracy"] == GRPO_ACCURACY
    assert results["grpo"]["accuracy"] >= 0.95 and results["grpo"]["complete_share"] >= 0.9
    assert results["sft"]["complete_share"] < 0.6          # SFT did not already prefer the complete style
    assert results["sft"]["n"] == results["grpo"]["n"] == 300


def test_committed_metrics_are_self_consistent(rows, results):
    assert len(rows) == results["grpo_steps"] == results["config"]["steps"]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        assert set(STEP_KEYS) <= r.keys(), r["step"]
        assert 0.0 <= r["reward_mean"] <= 9.0
    evals = [r for r in rows if "eval_accuracy" in r]
    assert evals and evals[-1] is rows[-1] and rows[-1]["eval_accuracy"] == results["grpo"]["accuracy"]
    for r in evals:
        assert set(r["eval_style_shares"]) == {*STYLES, "other"}
        assert math.isclose(sum(r["eval_style_shares"].values()), 1.0)
        assert r["eval_complete_share"] == r["eval_style_shares"]["complete"]
    assert all(r["kl"] == 0 and r["clip_low"] == 0 and r["clip_high"] == 0 for r in rows)  # beta 0, mu 1


@pytest.mark.parametrize("name", ["sft", "checkpoint"])
def test_committed_checkpoints_load(name):
    model = AutoModelForCausalLM.from_pretrained(os.path.join(RUN, name))
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS


def test_committed_grpo_checkpoint_accuracy_and_style():
    from minigrpo.checkpoint import load_checkpoint
    from minigrpo.pipeline import prepare_model
    model, tok, _ = load_checkpoint(os.path.join(RUN, "checkpoint"))
    model = prepare_model(model, torch.device("cpu"))
    test = load_split("equations", "test", os.path.join(ROOT, "data"))
    r = evaluate(model, tok, test, max_new_tokens=48)
    assert abs(r["accuracy"] - GRPO_ACCURACY) < 0.01 and r["complete_share"] >= 0.9


def test_notebook_pins_the_headline():
    outs = "".join("".join(o.get("text", "")) for c in code_cells(LESSON) for o in c.get("outputs", []))
    assert f"{'SFT start':12}{100 * SFT_ACCURACY:8.1f}%" in outs and f"{'after GRPO':12}{100 * GRPO_ACCURACY:8.1f}%" in outs
    assert any("YOUR CODE HERE" in source(c) for c in code_cells(LESSON))
    assert not any("YOUR CODE HERE" in source(c) for c in code_cells(SOLUTIONS))
