"""The GPU run's command, rehearsed on the CPU (`--smoke`) so that it cannot rot between the rare GPU sessions;
the further held-out problems it scores; its time limits and its table."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_run.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gpu_run  # noqa: E402
from minigrpo.course.datasets import extra_problems, make_splits  # noqa: E402


def has_trl() -> bool:
    try:
        import trl  # noqa: F401
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-smoke")
    done = subprocess.run([sys.executable, SCRIPT, "--smoke", "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT}, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out, done.stdout, json.loads((out / "results.json").read_text())


def test_smoke_runs_every_part_on_the_cpu(smoke):
    out, stdout, r = smoke
    assert r["smoke"] is True and set(r["parts"]) == set(gpu_run.PARTS)
    assert all(p["status"] == "ok" for p in r["parts"].values()), {k: p.get("why") for k, p in r["parts"].items()}
    assert r["versions"]["torch"] and r["versions"]["transformers"] and r["device"]
    for name in gpu_run.PARTS:   # the table has a line for each part
        assert any(line.startswith(name + " ") for line in stdout.splitlines())


def test_smoke_preset_part_trains_and_scores_the_further_problems(smoke):
    out, _, r = smoke
    p = r["parts"]["preset"]
    assert p["test_n"] == 1000 and p["extra_n"] == 200 and p["grpo_steps"] == 4
    assert 0 <= p["accuracy_sft"] <= 1 and 0 <= p["accuracy_extra"] <= 1
    assert set(p["accuracy_extra_by_op"]) == {"+", "-"}
    assert (out / "preset" / "metrics.jsonl").read_text().count("\n") == 4   # one row per GRPO step


def test_smoke_long_part_trains_the_long_preset_and_counts_its_styles(smoke):
    out, _, r = smoke
    p = r["parts"]["long"]
    assert p["test_n"] == 600 and p["extra_n"] == 200 and p["grpo_steps"] == 4
    assert set(p["accuracy_extra_by_op"]) == {"*"} and 0 <= p["accuracy_grpo"] <= 1
    rows = [json.loads(line) for line in (out / "long" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and "eval_worked_share" in rows[-1]


def test_smoke_speed_parts_measure(smoke):
    _, _, r = smoke
    trl = r["parts"]["trl"]
    ran = {(x["trainer"], x["variant"]) for x in trl["runs"]}
    assert ("minigrpo", "default") in ran
    assert (("trl", "default") in ran) == has_trl()       # TRL runs where it can be imported, and says why not
    assert all(x["steps"] == 4 and x["completions_per_s"] > 0 for x in trl["runs"])
    q = r["parts"]["qwen"]
    assert q["rows"] == 16 and q["sampler_tokens_per_s"] > 0 and q["learn_flop_s"] > 0
    assert len(q["steps"]) == 4 and q["kept_groups"] > 0   # the checksum reward varies within groups: rows train


def test_extra_problems_are_new_distinct_and_in_the_mix():
    seen = {r["prompt"] for records in make_splits("arithmetic_hard").values() for r in records}
    extra = extra_problems("arithmetic_hard", 600)
    prompts = [r["prompt"] for r in extra]
    assert len(set(prompts)) == 600 and not set(prompts) & seen
    assert [r["op"] for r in extra[:4]] == ["+", "-", "+", "-"]
    for r in extra:   # each answer, worked out here
        a, b = r["a"], r["b"]
        assert int(r["answer"]) == {"+": a + b, "-": a - b, "*": a * b}[r["op"]]
    assert extra_problems("arithmetic_hard", 600) == extra          # deterministic
    with pytest.raises(ValueError, match="outside its splits"):
        extra_problems("arithmetic", 30000)                           # 2-digit + and -: 20,000 problems in all


def test_time_limits_fit_the_nine_minutes():
    assert sum(gpu for gpu, _ in gpu_run.LIMITS.values()) <= 9 * 60
    assert sum(smoke for _, smoke in gpu_run.LIMITS.values()) <= 5 * 60


def test_a_part_past_its_limit_keeps_what_it_wrote(tmp_path, monkeypatch):
    """A child that writes its result and then hangs is stopped at its limit; its result is kept as partial."""
    monkeypatch.setitem(gpu_run.LIMITS, "long", (1, 1))
    a = SimpleNamespace(out=str(tmp_path), smoke=True)
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / "result.json").write_text(json.dumps({"runs": [1]}))
    monkeypatch.setattr(gpu_run, "__file__", str(tmp_path / "hang.py"))
    (tmp_path / "hang.py").write_text("import time\ntime.sleep(60)\n")
    r = gpu_run.run_part("long", a)
    assert r["status"] == "partial" and r["runs"] == [1] and "limit of 1 s" in r["why"] and r["seconds"] < 30
