"""The command line: help for every command, one-line errors, and a tiny end-to-end run."""
import json
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
