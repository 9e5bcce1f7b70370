"""The speed benchmark's minigrpo worker runs and reports what the table needs; the table reads its rows.

TRL is an optional extra (`pip install -e .[bench]`), so its worker is not run here.
"""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "grpo_speed.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import grpo_speed  # noqa: E402


def test_minigrpo_worker_reports_one_result_line():
    out = subprocess.run([sys.executable, SCRIPT, "--worker", "minigrpo", "--steps", "3", "--prompts", "4",
                          "--group", "4", "--threads", "1"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    assert len(line) == 1
    r = json.loads(line[0][len("RESULT "):])
    assert r["trainer"] == "minigrpo" and r["steps"] == 3 and 0 <= r["accuracy"] <= 1
    assert r["completions_per_s"] == 16 / r["step_s"] and r["tokens_per_s"] > 0 and r["peak_rss_mb"] > 0


def test_table_takes_medians_over_seeds_and_the_ratio():
    rows = [{"trainer": n, "seed": s, "step_s": t, "completions_per_s": 16 / t, "tokens_per_s": 40 / t,
             "peak_rss_mb": 500.0, "accuracy": 0.5}
            for n, ts in [("minigrpo", (0.5, 1.0, 2.0)), ("trl", (2.0, 4.0, 3.0))] for s, t in enumerate(ts)]
    text = grpo_speed.table(rows, SimpleNamespace(prompts=4, group=4, steps=3))
    # medians: minigrpo 1.0 s/step (16 compl/s), TRL 3.0 s/step (5.33 compl/s): ratio 3.0
    assert "ratio minigrpo/TRL: 3.0x" in text and "3 seeds" in text
