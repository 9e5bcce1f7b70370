"""The command line: help for every command, one-line errors, and a tiny end-to-end run."""
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "minigrpo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("cmd", [[], ["data"], ["sft"], ["train"], ["eval"]])
def test_help(cmd):
    out = cli(*cmd, "--help")
    assert out.returncode == 0 and "usage: python -m minigrpo" in out.stdout


def test_train_help_lists_config_fields():
    out = cli("train", "--help").stdout
    for flag in ("--group_size", "--eps_high", "--beta", "--loss_type", "--resume", "--preset"):
        assert flag in out


@pytest.mark.parametrize("args,words", [
    (["train", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "--group_size", "1"], "group_size=1"),
    (["train", "--beta", "-0.5"], "beta=-0.5"),
    (["eval", "--checkpoint", "no/such/dir", "--data", "data/arithmetic/test.jsonl"], "does not exist"),
])
def test_errors_are_one_line_and_exit_2(args, words):
    out = cli(*args)
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in out.stderr


def test_bad_data_line_names_file_and_line(tmp_path):
    (tmp_path / "d" / "arithmetic").mkdir(parents=True)
    good = json.dumps({"task": "arithmetic", "prompt": "1+1=", "answer": "2"})
    for split in ("sft", "train", "test"):
        (tmp_path / "d" / "arithmetic" / f"{split}.jsonl").write_text(good + "\n" + good + "\n")
    (tmp_path / "d" / "arithmetic" / "sft.jsonl").write_text(good + "\n{not json\n")
    out = cli("train", "--preset", "tiny", "--data_dir", str(tmp_path / "d"), "--out_dir", str(tmp_path / "o"))
    assert out.returncode == 2 and "sft.jsonl" in out.stderr and "line 2" in out.stderr


def test_tiny_train_then_eval(tmp_path):
    out_dir = str(tmp_path / "run")
    out = cli("train", "--preset", "tiny", "--out_dir", out_dir, "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "SFT start" in out.stdout and "after GRPO" in out.stdout
    results = json.load(open(os.path.join(out_dir, "results.json")))
    assert 0.0 <= results["grpo"]["accuracy"] <= 1.0 and results["grpo_steps"] == 4
    losses = json.load(open(os.path.join(out_dir, "sft_losses.json")))   # one per SFT step of the tiny preset (20)
    assert len(losses) == 20 and all(math.isfinite(x) and x > 0 for x in losses) and losses[-1] < losses[0]
    ev = cli("eval", "--checkpoint", os.path.join(out_dir, "checkpoint"), "--data", "data/arithmetic/test.jsonl")
    assert ev.returncode == 0, ev.stderr
    report = json.loads(ev.stdout)
    # the same checkpoint, the same test set, greedy: the same accuracy as the run reported
    assert report["n"] == 500 and report["accuracy"] == results["grpo"]["accuracy"]


def test_data_command_is_deterministic(tmp_path):
    out = cli("data", "--out", str(tmp_path / "d"))
    assert out.returncode == 0, out.stderr
    for name in ("arithmetic", "equations"):
        for split in ("sft", "train", "test"):
            mine = open(os.path.join(tmp_path, "d", name, f"{split}.jsonl"), "rb").read()
            committed = open(os.path.join(ROOT, "data", name, f"{split}.jsonl"), "rb").read()
            assert mine == committed, (name, split)


def parsed_config(*argv):
    from minigrpo.__main__ import _config, build_parser
    return _config(build_parser().parse_args(["train", *argv]))


def test_options_take_underscores_or_hyphens_and_only_given_ones_override():
    assert parsed_config("--group_size", "3").group_size == 3
    assert parsed_config("--group-size", "5", "--eps-high", "0.3").group_size == 5
    cfg = parsed_config("--preset", "tiny", "--mask_truncated", "true", "--no_skip_zero_adv")
    assert (cfg.preset, cfg.hidden_size, cfg.mask_truncated, cfg.skip_zero_adv) == ("tiny", 32, True, False)
    assert parsed_config("--preset", "equations").lr == 2e-5   # the preset's value, not the dataclass default


def test_help_shows_every_field_with_its_comment():
    out = cli("train", "--help").stdout
    from minigrpo.config import FIELDS
    for name in FIELDS:
        assert f"--{name}" in out, name
    assert "G: completions sampled per prompt (G >= 2) (default 8)" in " ".join(out.split())
    assert "--group-size" in out and "--config FILE" in out


def test_config_file_then_options(tmp_path):
    (tmp_path / "run.yaml").write_text("preset: tiny\ngroup_size: 3\nlr: 0.002\n")
    cfg = parsed_config("--config", str(tmp_path / "run.yaml"), "--lr", "0.005")
    assert (cfg.preset, cfg.hidden_size, cfg.group_size, cfg.lr) == ("tiny", 32, 3, 0.005)
    (tmp_path / "run.json").write_text(json.dumps({"group_size": 6}))
    cfg = parsed_config("--config", str(tmp_path / "run.json"), "--preset", "gpu")
    assert (cfg.preset, cfg.task, cfg.group_size) == ("gpu", "arithmetic_hard", 6)


def test_a_runs_saved_config_reruns_it(tmp_path):
    first = str(tmp_path / "first")
    out = cli("train", "--preset", "tiny", "--steps", "3", "--reward", "correct,format:0.5", "--sft_steps", "40",
              "--out_dir", first, "--no-progress")
    assert out.returncode == 0, out.stderr
    saved = json.load(open(os.path.join(first, "run_config.json")))
    assert saved["steps"] == 3 and saved["reward"] == "correct,format:0.5" and saved["out_dir"] == first
    again = str(tmp_path / "again")
    out = cli("train", "--config", os.path.join(first, "run_config.json"), "--out_dir", again, "--no-progress")
    assert out.returncode == 0, out.stderr
    rows = [[{k: v for k, v in json.loads(line).items() if k not in ("sample_s", "learn_s")}
             for line in open(os.path.join(d, "metrics.jsonl"))] for d in (first, again)]
    assert len(rows[0]) == 3 and rows[0] == rows[1]
