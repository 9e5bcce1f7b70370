"""Lesson 11 (long answers): the experiment's runner trains the long preset's settings from the committed SFT
start, logs the KL to that start in every run (also at beta = 0), and refuses settings the experiment lacks."""
import json
import os
import subprocess
import sys

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
    again = ablate("--settings", "random_reward", "--seeds", "0", "--steps", "2", "--out", str(tmp_path))
    assert again.returncode == 0 and json.loads(again.stdout[again.stdout.index("["):])[0]["final_accuracy"] == \
        rows["random_reward"]["final_accuracy"]


def test_a_setting_of_another_experiment_is_refused_in_one_line(tmp_path):
    done = ablate("--settings", "gspo", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "experiment 'long' has no setting 'gspo'" in done.stderr and "random_reward" in done.stderr
