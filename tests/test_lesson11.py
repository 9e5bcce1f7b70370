"""Lesson 11 (long answers): the experiment's runner trains the long preset's settings from the committed SFT
start, logs the KL to that start in every run (also at beta = 0), and refuses settings the experiment lacks."""
import json
import os
import subprocess
import sys

import pytest

from minigrpo.config import make_config
from minigrpo.course.ablate import LONG, LONG_CUT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ablate(*args):
    return subprocess.run([sys.executable, "-m", "minigrpo", "ablate", "--experiment", "long", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=900)


def test_every_setting_makes_a_valid_config_that_differs_from_the_base():
    base = make_config(LONG.preset, **LONG.base)
    assert base.task == "multiplication" and base.log_kl and base.beta == 0.0
    for setting, (_, overrides) in LONG.settings.items():
        cfg = make_config(LONG.preset, **{**LONG.base, **overrides})
        assert (setting == "base") == (cfg == base), setting
    cut = make_config(LONG.preset, **{**LONG.base, **LONG.settings["cut"][1]})
    assert cut.max_new_tokens == LONG_CUT < 152          # the longest worked answer (3 x 2 digits) is 152 tokens


def test_the_long_experiment_runs_logs_the_kl_at_beta_0_and_resumes(tmp_path):
    done = ablate("--settings", "random_reward", "kl_k3", "--seeds", "0", "--steps", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["setting"]: r for r in json.loads(done.stdout[done.stdout.index("["):])}
    assert set(rows) == {"random_reward", "kl_k3"}
    for setting in rows:
        metrics = [json.loads(line) for line in (tmp_path / f"{setting}_s0" / "metrics.jsonl").read_text().splitlines()]
        assert len(metrics) == 2 and all("kl_ref" in m and m["kl_ref"] >= 0.0 for m in metrics)
        assert metrics[0]["kl_ref"] < 1e-6                       # the first samples come from the start itself
        assert "eval_worked_share" in metrics[-1]
        assert rows[setting]["kl_ref_last"] >= 0.0
    result = json.loads((tmp_path / "random_reward_s0" / "result.json").read_text())
    assert result["overrides"]["reward"] == "random" and result["init"] == "results/cpu_long/sft"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["experiment"] == "long" and summary["init"] == "results/cpu_long/sft"
    # run again: the finished run is read back, not run again
    written = (tmp_path / "random_reward_s0" / "metrics.jsonl").stat().st_mtime_ns
    again = ablate("--settings", "random_reward", "--seeds", "0", "--steps", "2", "--out", str(tmp_path))
    assert again.returncode == 0 and json.loads(again.stdout[again.stdout.index("["):])[0]["final_accuracy"] == \
        rows["random_reward"]["final_accuracy"]
    assert (tmp_path / "random_reward_s0" / "metrics.jsonl").stat().st_mtime_ns == written


def test_a_setting_of_another_experiment_is_refused_in_one_line(tmp_path):
    done = ablate("--settings", "gspo", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "experiment 'long' has no setting 'gspo'" in done.stderr and "random_reward" in done.stderr


def tiny_policy_and_critic(**over):
    import torch
    from minigrpo.model import build_model
    from minigrpo.ppo import Critic
    from minigrpo.tokenizer import build_tokenizer
    cfg = make_config("tiny", group_size=4, prompts_per_step=4, max_new_tokens=4, **over)
    tok = build_tokenizer()
    torch.manual_seed(0)
    policy = build_model(cfg, tok).eval()
    critic = Critic(policy, cfg)                 # as long_values builds it: before the policy is frozen
    return cfg, tok, policy.requires_grad_(False), critic


RECORDS = [{"task": "arithmetic", "prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]
# a reward decided by the first token, about half the time 1 from a fresh model: V(s_0) near 0.5, V(s_t) for t >= 1
# exactly 0 or 1, which a critic that reads the first token can learn
FIRST_EVEN = lambda prompt, completion, **_: float(completion[:1] != "" and ord(completion[0]) % 2 == 0)


def test_the_critic_warm_up_lowers_its_held_out_error():
    from minigrpo.course.values import warm_up_critic
    import torch
    cfg, tok, policy, critic = tiny_policy_and_critic(critic_lr=3e-3)
    body = [p.detach().clone() for p in critic.body.parameters()]
    frozen = [p.detach().clone() for p in policy.parameters()]
    history = warm_up_critic(policy, critic, tok, RECORDS, RECORDS[:8], FIRST_EVEN, cfg, max_steps=60,
                             check_every=5, patience=100)
    assert [h["step"] for h in history] == list(range(0, 65, 5))
    # a head at 0 starts at E[R^2] (about 0.5); a critic that has learned at least V(s_0) (about 0.5) is near
    # the rewards' variance (about 0.25)
    assert history[-1]["check_mse"] < 0.75 * history[0]["check_mse"]
    # the critic's body learns with its head; the policy does not move
    assert any(not torch.equal(a, b) for a, b in zip(body, critic.body.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(frozen, policy.parameters()))


def test_the_critic_warm_up_stops_when_the_error_stops_falling():
    from minigrpo.course.values import warm_up_critic
    cfg, tok, policy, critic = tiny_policy_and_critic(critic_lr=1e-12)   # the critic cannot move
    history = warm_up_critic(policy, critic, tok, RECORDS, RECORDS[:8], FIRST_EVEN, cfg, max_steps=200,
                             check_every=2, patience=3)
    # the check before training sets the best; three more without a 1% gain stop it: after 6 steps
    assert [h["step"] for h in history] == [0, 2, 4, 6]
    assert len({round(h["check_mse"], 6) for h in history}) == 1


def test_monte_carlo_values_with_a_stride_are_compared_at_their_positions():
    from minigrpo.course.values import value_errors
    traces = [{"values": [0.5, 1.0], "positions": [0, 2], "critic": [0.4, 0.0, 0.75, 0.0]}]
    errors = value_errors(traces, group_size=2)
    assert set(errors) == {0, 2}
    assert errors[0]["critic"] == pytest.approx(0.1) and errors[2]["critic"] == 0.25
    assert errors[2]["prompt_baseline"] == 0.5
    # a group of 2 with p = V(s_0) = 0.5: its mean is 0, 0.5 or 1 w.p. 1/4, 1/2, 1/4, so E|m - 1| = 0.5
    assert errors[2]["group_mean"] == 0.25 * 1.0 + 0.5 * 0.5 + 0.25 * 0.0


# ------------------------------------------------------------------ the committed experiment (lesson 11 reads it)

RUN = os.path.join(ROOT, "results", "cpu_long_mechanisms")
VALUES = os.path.join(ROOT, "results", "cpu_long_values")


def committed_summary():
    with open(os.path.join(RUN, "summary.json")) as f:
        return json.load(f)


def rows_of(setting, seed):
    with open(os.path.join(RUN, f"{setting}_s{seed}", "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_every_long_setting_ran_with_three_seeds_from_the_long_start():
    summary = committed_summary()
    assert summary["experiment"] == "long" and summary["init"] == os.path.join("results", "cpu_long", "sft")
    assert summary["base"] == LONG.base
    assert summary["settings"] == {k: [section, over] for k, (section, over) in LONG.settings.items()}
    counts = {s: sorted(r["seed"] for r in summary["runs"] if r["setting"] == s) for s in LONG.settings}
    assert all(seeds == [0, 1, 2] for seeds in counts.values()), counts


def test_each_long_run_agrees_with_its_own_metrics_and_logs_the_kl_at_every_step():
    import statistics
    for run in committed_summary()["runs"]:
        rows = rows_of(run["setting"], run["seed"])
        assert [r["step"] for r in rows] == list(range(1, LONG.base["steps"] + 1)), run["setting"]
        evals = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r]
        assert len(evals) == 4 and [p["accuracy"] for p in run["curve"][1:]] == evals
        assert [p["worked_share"] for p in run["curve"][1:]] == [r["eval_worked_share"] for r in rows
                                                                  if "eval_worked_share" in r]
        assert all(r["kl_ref"] >= 0 for r in rows) and rows[0]["kl_ref"] < 1e-3   # step 1 samples the start itself
        assert run["kl_ref_last"] == pytest.approx(statistics.mean(r["kl_ref"] for r in rows[-5:]), abs=1e-12)
        assert run["entropy_last"] == pytest.approx(statistics.mean(r["entropy"] for r in rows[-5:]), abs=1e-12)
        cut = {**LONG.base, **LONG.settings[run["setting"]][1]}.get("max_new_tokens")
        assert all(r["completion_len"] <= (cut or 160) for r in rows)


def test_the_clip_acts_only_at_mu_4_and_the_scrubber_has_its_trace():
    for setting, (_, over) in LONG.settings.items():
        for seed in (0, 1, 2):
            rows = rows_of(setting, seed)
            if over.get("num_iterations", 1) == 1:
                assert all(r["ratio_mean"] == 1.0 and r["clip_low"] == r["clip_high"] == 0.0 for r in rows), setting
            else:
                assert sum(r["clip_low"] + r["clip_high"] > 0 for r in rows) > len(rows) // 2, setting
    with open(os.path.join(RUN, f"{LONG.traced}_s0", "tokens.jsonl")) as f:
        traces = [json.loads(line) for line in f]
    assert [t["step"] for t in traces] == [15, 30, 45, 60]
    assert all(len(c["ratios"]) == 4 for t in traces for c in t["completions"])
    assert all(abs(x - 1) < 1e-3 for t in traces for c in t["completions"] for x in c["ratios"][0])


def test_the_random_reward_pays_half_whatever_the_answer():
    for setting in ("random_reward", "random_reward_mu4"):
        rewards = [r["reward_mean"] for seed in (0, 1, 2) for r in rows_of(setting, seed)]
        # 180 steps x 256 fair coins: the mean is 0.5 within 4 standard errors (0.5 / sqrt(46,080) = 0.0023)
        assert abs(sum(rewards) / len(rewards) - 0.5) < 4 * 0.5 / (len(rewards) * 256) ** 0.5, setting


def test_the_critic_comparison_is_committed_for_three_seeds_and_agrees_with_its_traces():
    from minigrpo.course.long_values import PROMPTS, ROLLOUTS, STRIDE
    from minigrpo.course.values import value_errors
    for seed in (0, 1, 2):
        with open(os.path.join(VALUES, f"values_s{seed}.json")) as f:
            v = json.load(f)
        assert (v["seed"], v["prompts"], v["rollouts"], v["stride"]) == (seed, PROMPTS, ROLLOUTS, STRIDE)
        assert v["init"] == os.path.join("results", "cpu_long", "sft") and len(v["traces"]) == PROMPTS
        checks = [h["check_mse"] for h in v["warmup"]]
        assert v["warmup"][0]["step"] == 0 and min(checks) < checks[0]   # the warm-up lowered the held-out error
        for tr in v["traces"]:
            assert tr["positions"] == list(range(0, len(tr["completion_ids"]), STRIDE))
            assert len(tr["critic"]) == len(tr["completion_ids"]) and all(0 <= x <= 1 for x in tr["values"])
        errors, again = {int(t): e for t, e in v["errors"].items()}, value_errors(v["traces"], group_size=8)
        assert set(errors) == set(again) and all(errors[t] == pytest.approx(again[t]) for t in again)
        assert errors[0]["prompt_baseline"] == 0.0        # V(s_0) against itself
