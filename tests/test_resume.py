"""Interruption and resume, the way a learner meets them: Ctrl-C in the middle of `train`, then `--resume`.

- a real SIGINT to a running `python -m minigrpo train` saves a checkpoint of the last finished step
  and exits with status 130 and one line saying how to resume;
- `train --resume DIR`, with no other option, continues with the run's own config (preset, task,
  out_dir ...), and ends with the same metrics and weights as a run that was never interrupted;
- a checkpoint holds the model, the optimizer, every RNG state, the step and the metric rows so far.

Atomic writes and unreadable checkpoints are tested in test_checkpoint.py and test_errors.py.
"""
import os
import signal
import subprocess
import sys
import time

import torch

from minigrpo.__main__ import main
from minigrpo.checkpoint import load_checkpoint
from minigrpo.logger import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMINGS = ("sample_s", "learn_s")
STEPS = 16


def train_args(out_dir, steps=STEPS):
    # the format reward gives the untrained tiny model groups with unequal rewards, so every step updates
    return ["train", "--preset", "tiny", "--sft_steps", "100", "--sft_lr", "3e-3", "--steps", str(steps),
            "--save_every", "4", "--reward", "correct,format:0.5", "--out_dir", str(out_dir), "--no-progress"]


def without_timings(rows):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def interrupt_after(out_dir, rows_logged: int, steps: int):
    """Start `train` in a subprocess, send SIGINT once `rows_logged` steps are in metrics.jsonl."""
    metrics = os.path.join(out_dir, "metrics.jsonl")
    proc = subprocess.Popen([sys.executable, "-m", "minigrpo", *train_args(out_dir, steps)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and len(read_metrics(metrics)) >= rows_logged:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_ctrl_c_saves_and_resume_reaches_the_uninterrupted_run(tmp_path, capsys):
    # the reference: one uninterrupted run
    assert main(train_args(tmp_path / "full")) == 0
    full = read_metrics(str(tmp_path / "full" / "metrics.jsonl"))
    assert all(r["grad_norm"] > 0 for r in full)  # every step changed the weights: there is something to lose
    # the same run, Ctrl-C'd after a few steps (long schedule, so it cannot finish first) ...
    rc, out, err = interrupt_after(str(tmp_path / "cut"), rows_logged=3, steps=10_000)
    assert rc == 130, err
    ckpt = str(tmp_path / "cut" / "checkpoint")
    _, _, state = load_checkpoint(ckpt)
    done = state["step"]
    assert 3 <= done < STEPS, f"interrupted at step {done}; the test needs 3 <= step < {STEPS}"
    assert f"interrupted: checkpoint of step {done} saved to {ckpt} (resume with --resume {ckpt})" in out
    assert [r["step"] for r in state["extra"]["metrics"]] == list(range(1, done + 1))
    # ... then resumed with nothing but --resume (and the length of the schedule)
    capsys.readouterr()
    assert main(["train", "--resume", ckpt, "--steps", str(STEPS), "--no-progress"]) == 0
    assert "after GRPO" in capsys.readouterr().out
    resumed = read_metrics(str(tmp_path / "cut" / "metrics.jsonl"))
    assert without_timings(resumed) == without_timings(full)
    a = load_checkpoint(str(tmp_path / "full" / "checkpoint"))[0].state_dict()
    b = load_checkpoint(ckpt)[0].state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_keeps_the_runs_own_config(tmp_path, capsys):
    out = tmp_path / "eq"
    assert main(train_args(out, steps=2) + ["--lr", "3e-4", "--group_size", "3"]) == 0
    capsys.readouterr()
    # no --preset, no --out_dir: tiny, lr 3e-4, G = 3 and this out_dir come from the checkpoint
    assert main(["train", "--resume", str(out / "checkpoint"), "--steps", "3", "--no-progress"]) == 0
    _, _, state = load_checkpoint(str(out / "checkpoint"))
    cfg = state["config"]
    assert (cfg["preset"], cfg["lr"], cfg["group_size"], cfg["steps"], cfg["out_dir"]) == ("tiny", 3e-4, 3, 3, str(out))
    assert [r["step"] for r in read_metrics(str(out / "metrics.jsonl"))] == [1, 2, 3]


def test_a_checkpoint_holds_everything_resuming_needs(tmp_path):
    assert main(train_args(tmp_path / "run", steps=4)) == 0
    model, tok, state = load_checkpoint(str(tmp_path / "run" / "checkpoint"))
    assert state["step"] == 4 and state["config"]["steps"] == 4
    assert state["optimizer"]["state"] and len(state["optimizer"]["param_groups"]) == 1   # AdamW moments
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    assert isinstance(state["extra"]["generator"], torch.Tensor)                           # the sampler's RNG
    assert without_timings(state["extra"]["metrics"]) == without_timings(
        read_metrics(str(tmp_path / "run" / "metrics.jsonl")))
    assert sum(p.numel() for p in model.parameters()) > 0 and len(tok) > 100
