"""Lesson 6's section 5 (R1-Zero's question at this scale): the templates, the committed runs in results/cpu_r1zero/
(complete, and agreeing with each run's own metrics), and the command end to end with its resume.

The expected numbers are derived here from the files, not from the module's own functions.
"""
import json
import os
import subprocess
import sys

import pytest

from minigrpo.course import r1zero

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "results", "cpu_r1zero")


@pytest.fixture(scope="module")
def summary():
    with open(os.path.join(RUN, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


def test_templates_ask_the_same_problem():
    record = {"task": "arithmetic", "prompt": "78+83=", "answer": "161", "a": 78, "b": 83, "op": "+"}
    got = [r["prompt"] for r in r1zero.templated([record] * len(r1zero.TEMPLATES), "{q}")]
    assert got == ["78+83="] * len(r1zero.TEMPLATES)
    asked = [r1zero.templated([record], t)[0] for t in r1zero.TEMPLATES]
    assert [r["prompt"] for r in asked] == ["78+83=", " 78+83=", "78+83 =", "(78+83)=", "78+83。", "计算 78+83="]
    assert all({k: v for k, v in r.items() if k != "prompt"} == {k: v for k, v in record.items() if k != "prompt"}
               for r in asked)


def test_every_template_ran_three_seeds(summary):
    assert summary["templates"] == list(r1zero.TEMPLATES) and summary["steps"] == r1zero.STEPS
    assert sorted((r["template"], r["seed"]) for r in summary["runs"]) == sorted(
        (t, s) for t in r1zero.TEMPLATES for s in (0, 1, 2))
    assert "cores" in summary["machine"]


def test_each_run_agrees_with_its_metrics(summary):
    for r in summary["runs"]:
        run_dir = os.path.join(RUN, f"t{r1zero.TEMPLATES.index(r['template'])}_s{r['seed']}")
        with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        assert [x["step"] for x in rows] == list(range(1, r1zero.STEPS + 1))
        evals = [(x["step"], x["eval_accuracy"]) for x in rows if "eval_accuracy" in x]
        assert evals == [(p["step"], p["accuracy"]) for p in r["curve"][1:]] and r["final_accuracy"] == evals[-1][1]
        assert r["zero_var_first10"] == pytest.approx(sum(x["zero_var_frac"] for x in rows[:10]) / 10)
        assert len(r["probe_counts"]) == r1zero.PROBE and all(0 <= c <= r["samples"] for c in r["probe_counts"])
        assert not os.path.exists(os.path.join(run_dir, "checkpoint"))     # 12 MB each: deleted after the run


def test_the_start_is_one_greedy_model(summary):
    """Greedy decoding from one checkpoint: a template's start accuracy is the same in every seed, and the plain
    template's is the CPU preset's SFT accuracy (results/cpu_arithmetic)."""
    for t in r1zero.TEMPLATES:
        assert len({r["start_accuracy"] for r in summary["runs"] if r["template"] == t}) == 1
    with open(os.path.join(ROOT, "results", "cpu_arithmetic", "results.json"), encoding="utf-8") as f:
        sft = json.load(f)["sft"]["accuracy"]
    assert next(r["start_accuracy"] for r in summary["runs"] if r["template"] == "{q}") == pytest.approx(sft)


def test_what_lesson_6_reads_from_the_runs(summary):
    """Five templates rose by at least 25 points in every seed; 计算 did not rise by 2, in any seed."""
    for t in r1zero.TEMPLATES:
        gains = [r["final_accuracy"] - r["start_accuracy"] for r in summary["runs"] if r["template"] == t]
        assert (max(gains) < 0.02) if t.startswith("计算") else (min(gains) > 0.15), (t, gains)


def test_the_command_runs_and_resumes(tmp_path):
    def run():
        out = subprocess.run([sys.executable, "-m", "minigrpo.course.r1zero", "--templates", "{e}。", "--seeds", "0",
                              "--steps", "2", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": ROOT}, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout
    assert "'{e}。'" in run()
    result = tmp_path / "t0_s0" / "result.json"
    written = result.stat().st_mtime_ns
    run()                                                     # finished: not run again
    assert result.stat().st_mtime_ns == written
    assert json.loads(result.read_text(encoding="utf-8"))["steps"] == 2


def test_a_template_without_the_problem_is_refused():
    out = subprocess.run([sys.executable, "-m", "minigrpo.course.r1zero", "--templates", "计算"], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert out.returncode == 2 and "holds neither {q} nor {e}" in out.stderr
