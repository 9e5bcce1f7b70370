"""`python -m minigrpo doctor` and the in-training rules (minigrpo/doctor.py): each rule fires on a run or a
configuration that has its problem, and the committed healthy runs raise no WARN or FAIL."""
import json
import os
import subprocess
import sys

import pytest

from minigrpo.config import make_config
from minigrpo.doctor import Watch, sample_findings, settings_findings, zero_variance_expected

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEALTHY = ["results/cpu_arithmetic", "results/cpu_equations"] + \
          [f"results/cpu_compare/grpo_s{s}" for s in range(3)]


def levels(findings):
    return {f.rule: f.level for f in findings}


def test_zero_variance_expected_by_hand():
    # p = 0.5, G = 2: 0.25 + 0.25; p = 1: 1 + 0; mean 0.75
    assert zero_variance_expected([0.5, 1.0], 2) == pytest.approx(0.75)
    assert zero_variance_expected([0.9], 8) == pytest.approx(0.9 ** 8 + 0.1 ** 8)


def test_the_course_presets_settings_are_ok():
    for preset in ("cpu", "equations", "gpu"):
        assert set(levels(settings_findings(make_config(preset), 1_000_000)).values()) == {"OK"}


@pytest.mark.parametrize("override, rule", [
    (dict(lr=1e-2), "learning rate"),
    (dict(warmup_steps=0), "warm-up"),
    (dict(group_size=2), "group size"),
    (dict(eps_low=0.6), "clip range"),
    (dict(eps_high=0.4), "clip never acts"),        # mu = 1: the ratio is 1 when the gradient is taken
    (dict(beta=0.5), "KL coefficient"),
])
def test_each_settings_rule_fires(override, rule):
    assert levels(settings_findings(make_config("cpu", **override), 1_000_000))[rule] == "WARN"


def test_clip_settings_act_with_mu_2():
    assert "clip never acts" not in levels(settings_findings(make_config("cpu", eps_high=0.4, num_iterations=2),
                                                             1_000_000))


def test_a_large_models_lr_is_judged_by_its_size():
    assert levels(settings_findings(make_config("cpu", lr=1e-4), 500_000_000))["learning rate"] == "WARN"


def groups(correct_per_group, G=4):
    """correct flags for groups of G with k right answers each; reward = correctness."""
    correct = [i < k for k in correct_per_group for i in range(G)]
    return correct, [float(c) for c in correct]


def findings(lengths=None, truncated=None, correct_per_group=(1, 2, 3, 0), diff=1e-6, **cfg):
    cfg = make_config("cpu", group_size=4, **cfg)
    correct, rewards = groups(correct_per_group)
    n = len(correct)
    return levels(sample_findings(cfg, lengths or [3] * n, truncated or [False] * n, correct, rewards, diff, 256))


def test_a_healthy_sample_is_ok():
    assert set(findings().values()) == {"OK"}


def test_truncation_warns_and_fails():
    assert findings(truncated=[True] * 2 + [False] * 14)["truncation"] == "WARN"     # 12.5%
    assert findings(truncated=[True] * 8 + [False] * 8)["truncation"] == "FAIL"      # 50%


def test_equal_rewards_fail_and_mostly_equal_warn():
    assert findings(correct_per_group=(0, 0, 0, 0))["signal"] == "FAIL"               # too hard: nothing to learn
    assert findings(correct_per_group=(4, 4, 4, 4))["signal"] == "FAIL"               # too easy
    assert findings(correct_per_group=(4,) * 19 + (2,))["signal"] == "WARN"           # 95% of the groups equal


def test_a_longer_limit_that_would_not_fit_the_sequence_says_so():
    cfg = make_config("long", group_size=4)                         # max_seq_len 192, max_new_tokens 160
    correct, rewards = groups((1, 2, 3, 0))
    n = len(correct)
    out = sample_findings(cfg, [160] * n, [True] * n, correct, rewards, 1e-6, 32, prompt_len=12)
    line = next(f.line() for f in out if f.rule == "truncation")
    assert "Fix: --max_new_tokens 320 --max_seq_len 332 " in line  # twice the limit, and room for it and the prompt
    # a checkpoint of 192 positions cannot take 332: cut answers are then masked or punished, or SFT starts again
    out = sample_findings(cfg, [160] * n, [True] * n, correct, rewards, 1e-6, 32, prompt_len=12, positions=192)
    line = next(f.line() for f in out if f.rule == "truncation")
    assert "Fix: --mask_truncated or --overlong_cache: this model has 192 positions, and a limit of 320 needs 332 " \
           "(SFT again with --max_seq_len 332)" in line
    short = make_config("cpu", group_size=4)                        # max_seq_len 96: 8 + 12 tokens fit
    out = sample_findings(short, [6] * n, [True] * n, correct, rewards, 1e-6, 32, prompt_len=8)
    line = next(f.line() for f in out if f.rule == "truncation")
    assert "Fix: --max_new_tokens 12 (" in line and "--max_seq_len" not in line


def test_samples_far_below_greedy_warn():
    # 6 of 16 samples right (37.5%); greedy right on 4 of 4 prompts (100%) warns, on 2 of 4 (50%) does not
    cfg = make_config("long", group_size=4)
    correct, rewards = groups((1, 2, 3, 0))
    n = len(correct)
    warn = sample_findings(cfg, [100] * n, [False] * n, correct, rewards, 1e-6, 32, greedy_correct=[True] * 4)
    ok = sample_findings(cfg, [100] * n, [False] * n, correct, rewards, 1e-6, 32, greedy_correct=[True, True, False, False])
    assert levels(warn)["sampling vs greedy"] == "WARN" and levels(ok)["sampling vs greedy"] == "OK"
    line = next(f.line() for f in warn if f.rule == "sampling vs greedy")
    assert "greedy answers 100% right, samples at temperature 1 38% (100 tokens" in line
    assert "sampling vs greedy" not in levels(sample_findings(cfg, [100] * n, [False] * n, correct, rewards, 1e-6, 32))


def test_sampler_mismatch_warns_and_fails():
    assert findings(diff=0.3)["sampler vs trainer"] == "WARN"
    assert findings(diff=2.0)["sampler vs trainer"] == "FAIL"


def rows_of(run):
    with open(os.path.join(ROOT, run, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("run", HEALTHY)
def test_the_committed_healthy_runs_raise_no_warning(run):
    cfg = make_config("equations" if "equations" in run else "cpu")
    watch = Watch(cfg)
    notes = [n for row in rows_of(run) for n in watch.check(row)]
    assert not [n for n in notes if " WARN " in n or " FAIL " in n], notes
    assert any("OK   loss is 0" in n for n in notes)          # mu = 1: the loss is ~0 and the gradient is not


def healthy(step, **over):
    return {"step": step, "loss": 1e-9, "grad_norm": 1.0, "zero_var_frac": 0.5, "truncated_frac": 0.0,
            "clip_low": 0.0, "clip_high": 0.0, "entropy": 0.1, "completion_len": 4.0, "kl": 0.0, **over}


@pytest.mark.parametrize("late, rule, cfg", [
    (dict(zero_var_frac=0.95), "no signal", {}),
    (dict(truncated_frac=0.3), "truncation", {}),
    (dict(clip_low=0.15, clip_high=0.1), "clipping", dict(num_iterations=2)),
    (dict(entropy=0.01), "entropy collapse", {}),
    (dict(completion_len=8.0), "longer answers", {}),
    (dict(kl=0.3), "rising KL", dict(beta=0.04)),
])
def test_each_training_rule_fires_once(late, rule, cfg):
    watch = Watch(make_config("cpu", **cfg))
    notes = [n for s in range(1, 11) for n in watch.check(healthy(s))]
    assert not any(rule in n for n in notes)
    notes = [n for s in range(11, 31) for n in watch.check(healthy(s, **late))]
    fired = [n for n in notes if f"WARN {rule}:" in n]
    assert len(fired) == 1 and "(lesson " in fired[0] and "Fix:" in fired[0]


def test_longer_answers_are_paid_for_when_the_right_ones_are_long_and_warn_when_the_wrong_ones_are():
    def notes(late):
        watch = Watch(make_config("long"))
        early = dict(completion_len=60.0, len_correct=100.0, len_wrong=25.0, reward_mean=0.5)
        first = [n for s in range(1, 11) for n in watch.check(healthy(s, **early))]
        return first + [n for s in range(11, 31) for n in watch.check(healthy(s, **late))]
    # step 18 is the first whose window (steps 9-18, 2 early rows and 8 late) passes 1.5 x 60 tokens:
    # 0.2 * 60 + 0.8 * 100 = 92
    paid = [n for n in notes(dict(completion_len=100.0, len_correct=100.0, len_wrong=90.0, reward_mean=0.9))
            if "length" in n]
    # right 100, wrong 0.2 * 25 + 0.8 * 90 = 77, reward 0.2 * 0.5 + 0.8 * 0.9 = 0.82 > 0.5: the working pays
    assert len(paid) == 1 and paid[0].startswith("step 18: OK   length paid for: mean completion 92.0 tokens, "
                                                 "from 60.0; right answers 100.0 tokens, wrong ones 77.0")
    biased = [n for n in notes(dict(completion_len=100.0, len_correct=60.0, len_wrong=130.0, reward_mean=0.5))
              if "longer answers" in n or "length" in n]
    # right 0.2 * 100 + 0.8 * 60 = 68, wrong 0.2 * 25 + 0.8 * 130 = 109 > 1.2 * 68: the wrong ones grew
    assert len(biased) == 1 and biased[0].startswith("step 18: WARN longer answers: mean completion 92.0 tokens, "
                                                     "from 60.0; right answers 68.0 tokens, wrong ones 109.0")


def test_the_committed_long_run_is_told_its_length_is_paid_for():
    watch = Watch(make_config("long"))
    notes = [n for row in rows_of("results/cpu_long") for n in watch.check({k: v for k, v in row.items()
                                                                           if k != "doctor"})]
    assert any("OK   length paid for" in n for n in notes) and not any("longer answers" in n for n in notes)
    # what the run itself wrote into its metrics is what the rules say
    assert [n for row in rows_of("results/cpu_long") for n in row.get("doctor", [])] == notes


def test_drift_at_beta_0_is_watched_through_the_logged_kl():
    watch = Watch(make_config("long", log_kl=True))
    quiet = [n for s in range(1, 11) for n in watch.check(healthy(s, kl_ref=0.01)) if "drift" in n]
    fired = [n for s in range(11, 31) for n in watch.check(healthy(s, kl_ref=0.3)) if "drift" in n]
    # step 14's window (steps 5-14) is the first whose mean passes 0.1: 0.6 * 0.01 + 0.4 * 0.3 = 0.126
    assert not quiet and len(fired) == 1
    assert fired[0].startswith("step 14: WARN drift: KL of the samples to the start 0.126, from 0.01")


def doctor(*args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "minigrpo", "doctor", "--data_dir", os.path.join(ROOT, "data"),
                           *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_doctor_on_the_cpu_preset_is_ok():
    done = doctor("--init", "results/cpu_arithmetic/sft")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "start from --init results/cpu_arithmetic/sft" in out and "-> OK" in out
    for rule in ("truncation", "signal", "sampler vs trainer", "one step", "learning rate"):
        assert f"OK   {rule}:" in out


def test_doctor_fails_a_limit_that_cuts_answers_off():
    done = doctor("--init", "results/cpu_arithmetic/sft", "--max_new_tokens", "2")   # "12" + EOS needs 3
    assert done.returncode == 1
    assert "FAIL truncation:" in done.stdout and "Fix: --max_new_tokens 4" in done.stdout


def test_doctor_on_a_fresh_model_says_so_and_fails_for_no_signal(tmp_path):
    done = doctor("--preset", "tiny", "--out_dir", str(tmp_path / "run"))
    assert done.returncode == 1
    assert "a fresh model" in done.stdout and "FAIL signal:" in done.stdout and "SFT first" in done.stdout
