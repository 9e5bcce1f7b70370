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
