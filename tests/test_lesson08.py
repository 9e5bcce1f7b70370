"""Lesson 08 (GRPO vs PPO vs REINFORCE vs RLOO): its exercise checkers accept the solutions and reject wrong answers,
and the committed comparison it reads (results/cpu_compare/) is complete and agrees with each run's own metrics.

The solutions are exec'd from the solutions notebook; the wrong answers and the summary's numbers are derived here
independently (from the formulas and from the metrics.jsonl files).
"""
import json
import math
import os

import pytest
import torch

from minigrpo.course.compare import METHODS, table
from minigrpo.course.exercises import lesson08

from nbcells import function_defined

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "08_grpo_vs_ppo_solutions.ipynb")
RUN = os.path.join(ROOT, "results", "cpu_compare")


def solution_fn(name):
    return function_defined(SOLUTIONS, name, {"torch": torch, "math": math})


def grpo_rows():
    with open(os.path.join(RUN, "grpo_s0", "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_checkers_accept_the_solutions(capsys):
    lesson08.check_group_baseline_error(solution_fn("group_baseline_error"))
    lesson08.check_gae_advantages(solution_fn("gae_advantages"))
    lesson08.check_backward_share(solution_fn("backward_share"), grpo_rows())
    out = capsys.readouterr().out
    assert out.count(": correct") == 3 and "not done" not in out


def test_checkers_say_not_done_for_stubs(capsys):
    lesson08.check_group_baseline_error(lambda p, v, G: None)
    lesson08.check_gae_advantages(lambda values, R, lam: None)
    lesson08.check_backward_share(lambda rows: None, grpo_rows())
    assert capsys.readouterr().out.count("not done yet") == 3


@pytest.mark.parametrize("wrong", [
    lambda p, v, G: abs(p - v),                                               # the error of the mean, not its mean
    lambda p, v, G: math.sqrt(p * (1 - p) / G),                               # the std of m, whatever v is
    lambda p, v, G: sum(math.comb(G, k) * p**k * (1 - p) ** (G - k) * abs(k / G - v) for k in range(G)),  # k = G
])
def test_group_baseline_error_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="group_baseline_error"):
        lesson08.check_group_baseline_error(wrong)


def test_the_baseline_error_cases_agree_with_values_group_mean_error():
    from minigrpo.course.values import group_mean_error
    for p, v, G, expected in lesson08.BASELINE_ERROR_CASES:
        assert group_mean_error(p, v, G) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("wrong", [
    lambda rows: sum(r["zero_var_frac"] for r in rows) / len(rows),          # the skipped share
    lambda rows: 1 - rows[-1]["zero_var_frac"],                                # the last step only
])
def test_backward_share_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="backward_share"):
        lesson08.check_backward_share(wrong, grpo_rows())


def _gae(values, R, lam, gamma=1.0, last_value=0.0):
    L, adv, running = len(values), torch.zeros(len(values), dtype=torch.float64), 0.0
    for t in reversed(range(L)):
        nxt = values[t + 1] if t + 1 < L else last_value
        running = (R if t == L - 1 else 0.0) + gamma * nxt - values[t] + gamma * lam * running
        adv[t] = running
    return adv


@pytest.mark.parametrize("wrong", [
    lambda v, R, lam: R - v,                                                  # ignores lambda
    lambda v, R, lam: _gae(v, R, 1.0 - lam),                                  # lambda the wrong way round
    lambda v, R, lam: _gae(v, R, lam, last_value=float(v[-1])),               # bootstraps past the last token
])
def test_gae_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="gae_advantages"):
        lesson08.check_gae_advantages(wrong)


def test_the_hand_cases_agree_with_the_engine():
    from minigrpo.ppo import gae
    for values, R, lam, expected in lesson08.GAE_CASES:
        v = torch.tensor([values], dtype=torch.float64)
        adv, _ = gae(torch.tensor([R], dtype=torch.float64), v, torch.ones_like(v), gamma=1.0, lam=lam)
        torch.testing.assert_close(adv[0], torch.tensor(expected, dtype=torch.float64))


# ------------------------------------------------------------------ the committed comparison

@pytest.fixture(scope="module")
def summary():
    with open(os.path.join(RUN, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


def test_every_method_ran_three_seeds_with_the_same_settings(summary):
    runs = summary["runs"]
    assert sorted((r["algo"], r["seed"]) for r in runs) == sorted((m, s) for m in METHODS for s in (0, 1, 2))
    assert len({json.dumps({k: v for k, v in r["settings"].items()}, sort_keys=True) for r in runs}) == 1
    steps, every = summary["settings"]["steps"], summary["settings"]["eval_every"]
    for r in runs:
        assert [p["step"] for p in r["curve"]] == list(range(0, steps + 1, every))
        assert r["curve"][0]["accuracy"] == runs[0]["curve"][0]["accuracy"]   # one SFT start for all
    assert "cores" in summary["machine"] and "torch" in summary["machine"]


def test_summary_agrees_with_each_runs_metrics(summary):
    for r in summary["runs"]:
        with open(os.path.join(RUN, f"{r['algo']}_s{r['seed']}", "metrics.jsonl"), encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        assert len(rows) == summary["settings"]["steps"]
        evals = [(x["step"], x["eval_accuracy"]) for x in rows if "eval_accuracy" in x]
        assert evals == [(p["step"], p["accuracy"]) for p in r["curve"][1:]]
        assert math.isclose(sum(x["sample_s"] + x["learn_s"] for x in rows), r["train_seconds"], rel_tol=1e-9)
        assert ("value_loss" in rows[0]) == (r["algo"] == "ppo")


def test_table_by_hand(summary):
    rows = {row["method"]: row for row in table(summary)}
    for algo in METHODS:
        finals = [100 * r["final_accuracy"] for r in summary["runs"] if r["algo"] == algo]
        mean = sum(finals) / 3
        assert math.isclose(rows[algo]["final_acc"], mean)
        assert math.isclose(rows[algo]["final_acc_std"], math.sqrt(sum((f - mean) ** 2 for f in finals) / 2))
    # PPO trains a critic as large as the policy: twice the state of the others
    assert math.isclose(rows["ppo"]["state_mb"], 2 * rows["grpo"]["state_mb"], rel_tol=1e-3)


def test_ppo_runs_measured_the_critic_on_every_state(summary):
    for r in summary["runs"]:
        if r["algo"] != "ppo":
            assert "values" not in r
            continue
        assert len(r["values"]) == summary["settings"]["value_prompts"]
        for tr in r["values"]:
            assert len(tr["values"]) == len(tr["critic"]) == len(tr["completion_ids"]) >= 1
            assert all(0.0 <= v <= 1.0 for v in tr["values"])
