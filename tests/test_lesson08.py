"""Lesson 08 (GRPO vs PPO vs REINFORCE vs RLOO): its exercise checkers accept the solutions and reject wrong answers,
and the committed comparison it reads (results/cpu_compare/) is complete and agrees with each run's own metrics.

The solutions are exec'd from the solutions notebook; the wrong answers and the summary's numbers are derived here
independently (from the formulas and from the metrics.jsonl files).
"""
import json
import math
import os
import statistics

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
    lesson08.check_explained_variance(solution_fn("explained_variance"))
    lesson08.check_backward_share(solution_fn("backward_share"), grpo_rows())
    out = capsys.readouterr().out
    assert out.count(": correct") == 3 and "not done" not in out


def test_checkers_say_not_done_for_stubs(capsys):
    lesson08.check_group_baseline_error(lambda p, v, G: None)
    lesson08.check_explained_variance(lambda values, targets, mask: None)
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


def _masked(x, mask):
    return x[mask.bool()]


def _ev_sklearn_r2(values, targets, mask):     # R^2 = 1 - MSE / Var: counts a constant offset as error
    y, v = _masked(targets, mask), _masked(values, mask)
    return float(1 - ((y - v) ** 2).mean() / y.var(unbiased=False))


@pytest.mark.parametrize("wrong", [
    _ev_sklearn_r2,
    lambda v, y, m: float(1 - (y - v).var() / y.var()),                       # padding counted
    lambda v, y, m: float(_masked(v, m).var() / _masked(y, m).var()),         # the values' share of variance
    lambda v, y, m: float(1 - _masked(y - v, m).var() / _masked(y, m).var()) if _masked(y, m).var() > 0 else 0.0,
])
def test_explained_variance_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="explained_variance"):
        lesson08.check_explained_variance(wrong)


def test_the_explained_variance_cases_by_numpy():
    import numpy as np
    for values, targets, mask, expected in lesson08.EV_CASES:
        keep = np.array(mask, dtype=bool)
        v, y = np.array(values)[keep], np.array(targets)[keep]
        assert 1 - np.var(y - v) / np.var(y) == pytest.approx(expected, abs=1e-12)


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


# ------------------------------------------------------------------ section 5.1: the critic warmed up first

CRITIC = os.path.join(ROOT, "results", "cpu_critic")


def _critic_summary(name):
    with open(os.path.join(CRITIC, name, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


def test_the_critic_runs_differ_only_in_the_warm_up():
    cold, warm = _critic_summary("cold"), _critic_summary("warm")
    for s, warmup in ((cold, 0), (warm, 300)):
        assert sorted((r["algo"], r["seed"]) for r in s["runs"]) == [("ppo", 0), ("ppo", 1), ("ppo", 2)]
        assert all(r["settings"]["critic_warmup"] == warmup for r in s["runs"])
        assert ("warmup" in s["runs"][0]) == bool(warmup)
    same = lambda s: {k: v for k, v in s["runs"][0]["settings"].items() if k != "critic_warmup"}
    assert same(cold) == same(warm) and cold["machine"] == warm["machine"]


def test_each_warm_up_stopped_by_its_rule():
    """values.warm_up_critic stops when the best check error has not fallen by 1% in 3 checks (or at 300 steps)."""
    for r in _critic_summary("warm")["runs"]:
        checks = [h["check_mse"] for h in r["warmup"]["history"]]
        best, since, stop = checks[0], 0, None
        for i, e in enumerate(checks[1:], start=1):
            if e < best * 0.99:
                best, since = e, 0
            else:
                since += 1
                if since == 3:
                    stop = i
                    break
        assert stop == len(checks) - 1 or r["warmup"]["history"][-1]["step"] == 300, checks
        assert min(checks[1:]) < 0.5 * checks[0]        # the warm-up did learn something


def test_a_warmed_up_critic_starts_closer_to_the_rewards():
    """The first PPO step's |V(s_0) - R|: the warm-up's effect where it must show, before the policy moves."""
    first = {name: statistics.mean(r["value_mae_by_step"][0] for r in _critic_summary(name)["runs"])
             for name in ("cold", "warm")}
    assert first["warm"] < first["cold"] - 0.1, first


def test_critic_warmup_runs_end_to_end(tmp_path):
    from minigrpo.course.compare import run_one
    r = run_one("ppo", 0, str(tmp_path / "ppo"), steps=2, prompts_per_step=8, eval_every=1, eval_size=20,
                value_prompts=2, rollouts=4, critic_warmup=20)
    history = r["warmup"]["history"]
    assert history[0]["step"] == 0 and history[0]["train_mse"] is None and history[-1]["step"] <= 20
    assert r["settings"]["critic_warmup"] == 20 and len(r["values"]) == 2


def test_a_critic_is_refused_where_the_algorithm_has_none(tmp_path):
    from minigrpo.config import make_config
    from minigrpo.model import build_model
    from minigrpo.ppo import Critic, PPOStep
    from minigrpo.tokenizer import build_tokenizer
    from minigrpo.trainer import grpo_run_step, train_grpo
    cfg = make_config("tiny", out_dir=str(tmp_path))
    tok = build_tokenizer()
    policy = build_model(cfg, tok)
    with pytest.raises(ValueError, match="only algo='ppo'"):
        train_grpo(policy, tok, cfg, [], [], step=PPOStep(Critic(policy, make_config("tiny", algo="ppo"))),
                   progress=False)
    with pytest.raises(ValueError, match="algo='ppo' needs PPO's step"):
        train_grpo(policy, tok, make_config("tiny", algo="ppo", out_dir=str(tmp_path)), [], [], step=grpo_run_step,
                   progress=False)
