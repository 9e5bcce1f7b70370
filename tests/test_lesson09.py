"""Lesson 09 (the GRPO family's tricks, measured): its exercise checkers (1-3: GSPO-token, SAPO, gradient
weights; exercise 4's are in test_lesson09_dynamic.py) accept the solutions and reject wrong answers, and the committed experiment it reads
(results/cpu_family/) is complete and agrees with each run's own metrics and with what the settings imply.

The solutions are exec'd from the solutions notebook; the expected numbers are derived here independently (from
the formulas, and from the metrics.jsonl files).
"""
import json
import math
import os
import statistics
import subprocess
import sys

import pytest
import torch

from minigrpo.course.ablate import BASE, SETTINGS, TRACED, table
from minigrpo.course.exercises import lesson09

from nbcells import function_defined

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "09_the_grpo_family_solutions.ipynb")
RUN = os.path.join(ROOT, "results", "cpu_family")
TIMINGS = ("sample_s", "learn_s")


def solution_fn(name):
    return function_defined(SOLUTIONS, name, {"torch": torch, "math": math})


@pytest.fixture(scope="module")
def summary():
    with open(os.path.join(RUN, "summary.json")) as f:
        return json.load(f)


def rows_of(setting, seed):
    with open(os.path.join(RUN, f"{setting}_s{seed}", "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# ------------------------------------------------------------------ the checkers


def test_checkers_accept_the_solutions(capsys):
    lesson09.check_gspo_token_ratio(solution_fn("gspo_token_ratio"))
    lesson09.check_sapo_loss(solution_fn("sapo_loss"))
    lesson09.check_gradient_weight(solution_fn("gradient_weight"))
    out = capsys.readouterr().out
    assert out.count(": correct") == 3 and "not done" not in out   # exercise 4: test_lesson09_dynamic.py


def test_checkers_say_not_done_for_stubs(capsys):
    lesson09.check_gspo_token_ratio(lambda logp, old, mask: None)
    lesson09.check_sapo_loss(lambda logp, old, adv, mask, tau_pos, tau_neg: None)
    lesson09.check_gradient_weight(lambda method, r, positive, **settings: None)
    assert capsys.readouterr().out.count("not done yet") == 3


def _sequence_mean(lp, old, m):
    return ((lp - old) * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True)         # (N, 1)


@pytest.mark.parametrize("wrong", [
    lambda lp, old, m: torch.exp(_sequence_mean(lp, old, m)).expand_as(lp),          # GSPO's s_n, gradient to all
    lambda lp, old, m: torch.exp(lp - old),                                          # the token ratio
    lambda lp, old, m: torch.exp(_sequence_mean(lp, old, m)).detach().expand_as(lp).clone(),   # no gradient at all
    lambda lp, old, m: torch.exp((lp - old).mean(-1, keepdim=True)).detach() * torch.exp(lp - lp.detach()),  # padding
    lambda lp, old, m: torch.exp(_sequence_mean(lp, old, m)).detach() * torch.exp(lp - old),  # s_n times r_t
])
def test_gspo_token_ratio_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="gspo_token_ratio"):
        lesson09.check_gspo_token_ratio(wrong)


def _sapo(logp, old, adv, mask, tau_pos, tau_neg, *, same_tau=False, scale=True, token_mean=False):
    ratio = torch.exp((logp - old) * mask)
    tau = torch.full_like(adv, tau_neg).masked_fill(adv > 0, tau_pos)[:, None]
    tau = torch.full_like(tau, tau_pos) if same_tau else tau
    gate = torch.sigmoid(tau * (ratio - 1)) * (4 / tau if scale else 1.0)
    per_token = -gate * adv[:, None] * mask
    return per_token.sum() / mask.sum() if token_mean else (per_token.sum(-1) / mask.sum(-1)).mean()


def _sapo_hard_clip(logp, old, adv, mask, tau_pos, tau_neg):     # GRPO's clip, not the gate
    loss, _ = lesson09.grpo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    return loss


@pytest.mark.parametrize("wrong", [
    lambda *a: _sapo(*a, same_tau=True),                                             # one tau for both signs
    lambda *a: _sapo(*a, scale=False),                                               # no 4 / tau
    lambda *a: _sapo(*a, token_mean=True),                                           # token mean over the batch
    _sapo_hard_clip,
])
def test_sapo_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="sapo_loss"):
        wrong_fn = lambda logp, old, adv, mask, tau_pos, tau_neg: wrong(logp, old, adv, mask, tau_pos, tau_neg)
        lesson09.check_sapo_loss(wrong_fn)


def _weight(method, r, positive, eps_low, eps_high, cap, tau_pos, tau_neg, *, slope_one=False, both_sides=False,
            cispo_zero=False, sapo_no_r=False):
    one = torch.ones_like(r) if slope_one else r
    if method == "grpo":
        kept = (r >= 1 - eps_low) & (r <= 1 + eps_high) if both_sides else (
            r <= 1 + eps_high if positive else r >= 1 - eps_low)
        return torch.where(kept, one, torch.zeros_like(r))
    if method == "cispo":
        return torch.where(r > cap, torch.zeros_like(r), one) if cispo_zero else torch.clamp(one, max=cap)
    g = torch.sigmoid((tau_pos if positive else tau_neg) * (r - 1))
    return 4 * g * (1 - g) * (1 if sapo_no_r else r)


@pytest.mark.parametrize("flag", ["slope_one", "both_sides", "cispo_zero", "sapo_no_r"])
def test_gradient_weight_checker_rejects_wrong(flag):
    with pytest.raises(AssertionError, match="gradient_weight"):
        lesson09.check_gradient_weight(lambda method, r, positive, **s: _weight(method, r, positive, **s,
                                                                                **{flag: True}))


# ------------------------------------------------------------------ the committed experiment


def test_every_setting_ran_with_three_seeds_from_lesson_7s_start(summary):
    assert summary["init"] == os.path.join("results", "cpu_equations", "sft")
    assert set(summary["settings"]) == set(SETTINGS) and summary["base"] == BASE
    counts = {s: sorted(r["seed"] for r in summary["runs"] if r["setting"] == s) for s in SETTINGS}
    assert all(seeds == [0, 1, 2] for seeds in counts.values()), counts


def test_each_run_agrees_with_its_own_metrics(summary):
    for run in summary["runs"]:
        rows = rows_of(run["setting"], run["seed"])
        steps = {**BASE, **SETTINGS[run["setting"]][1]}["steps"]
        assert [r["step"] for r in rows] == list(range(1, steps + 1)), run["setting"]
        evals = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r]
        assert [p["accuracy"] for p in run["curve"][1:]] == evals and run["final_accuracy"] == evals[-1]
        assert run["clip_high"] == pytest.approx(statistics.mean(r["clip_high"] for r in rows), abs=1e-12)
        assert run["entropy_last"] == pytest.approx(statistics.mean(r["entropy"] for r in rows[-5:]), abs=1e-12)
        spent = sum(r.get("samples", BASE["prompts_per_step"] * BASE["group_size"]) for r in rows)
        assert run["samples"] == spent


def test_at_mu_1_the_clip_range_cannot_matter(summary):
    """With one update per batch the ratio is exactly 1, so eps_high 0.2 and 0.28 run the same steps, bit for bit."""
    for seed in (0, 1, 2):
        a = [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows_of("base", seed)]
        b = [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows_of("eps_high_0.20", seed)]
        assert a == b and all(r["clip_low"] == r["clip_high"] == 0.0 and r["ratio_mean"] == 1.0 for r in a)


def test_mu_4_clips_and_dynamic_sampling_pays_in_samples(summary):
    for seed in (0, 1, 2):
        assert all(r["clip_low"] + r["clip_high"] > 0 for r in rows_of("mu4", seed)[1:])
        rows = rows_of("dynamic_sampling", seed)
        per_step = BASE["prompts_per_step"] * BASE["group_size"]
        assert all(r["samples"] == per_step * r["sampling_rounds"] and r["kept_groups"] <= BASE["prompts_per_step"]
                   and 1 <= r["sampling_rounds"] <= 3 for r in rows)
        assert any(r["sampling_rounds"] > 1 for r in rows)


def test_the_table_is_the_mean_and_spread_over_seeds(summary):
    rows = {r["setting"]: r for r in table(summary)}
    for setting in SETTINGS:
        accs = [r["final_accuracy"] for r in summary["runs"] if r["setting"] == setting]
        assert rows[setting]["final_accuracy"] == pytest.approx(sum(accs) / 3)
        assert rows[setting]["final_accuracy_std"] == pytest.approx(statistics.stdev(accs))


def test_the_clip_scrubber_has_its_trace(summary):
    traces = [json.loads(line) for line in open(os.path.join(RUN, f"{TRACED}_s0", "tokens.jsonl"))]
    mu = {**BASE, **SETTINGS[TRACED][1]}["num_iterations"]
    assert len(traces) == 4 and all(len(c["ratios"]) == mu for t in traces for c in t["completions"])
    # update 1: pi_theta is pi_old (the sampler's log-probs agree with the training forward's to ~1e-6) ...
    assert all(abs(x - 1) < 1e-3 for t in traces for c in t["completions"] for x in c["ratios"][0])
    # ... by update mu the policy has moved
    assert any(abs(x - 1) > 1e-2 for t in traces for c in t["completions"] for x in c["ratios"][-1])


def test_ablate_runs_end_to_end_and_resumes(tmp_path):
    def ablate(steps):
        out = subprocess.run([sys.executable, "-m", "minigrpo", "ablate", "--settings", "base", "dr_grpo_loss",
                              "--seeds", "0", "--steps", str(steps), "--out", str(tmp_path)], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout[out.stdout.index("["):])

    table_rows = ablate(2)
    assert [r["setting"] for r in table_rows] == ["base", "dr_grpo_loss"] and all(r["seeds"] == 1 for r in table_rows)
    metrics = tmp_path / "dr_grpo_loss_s0" / "metrics.jsonl"
    assert len(metrics.read_text().splitlines()) == 2
    # as if cut short: the second run lost its result.json; ablate again reruns that run only
    (tmp_path / "dr_grpo_loss_s0" / "result.json").unlink()
    base_written = (tmp_path / "base_s0" / "metrics.jsonl").stat().st_mtime_ns
    untimed = lambda rows: [{k: v for k, v in r.items() if not k.startswith("train_seconds")} for r in rows]
    assert untimed(ablate(2)) == untimed(table_rows)   # the rerun is the same run, seeded alike
    assert (tmp_path / "base_s0" / "metrics.jsonl").stat().st_mtime_ns == base_written
    # other settings (here the steps) are not a finished run: both run again
    assert all(r["seeds"] == 1 for r in ablate(1)) and len(metrics.read_text().splitlines()) == 1
