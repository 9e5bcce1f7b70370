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
import profile_step  # noqa: E402
import torch  # noqa: E402
from flops import Shape, distinct_work, machine_rate, step_flops  # noqa: E402


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
    assert r["useful_gflop_s"] > 0 and r["variant"] == "default" and 1 <= r["completion_len"] <= 6


def test_table_takes_medians_over_seeds_and_the_ratios():
    rows = [{"trainer": n, "variant": v, "seed": s, "step_s": t, "completions_per_s": 16 / t, "tokens_per_s": 40 / t,
             "useful_gflop_s": 2.0, "peak_rss_mb": 500.0, "accuracy": 0.5}
            for n, v, ts in [("minigrpo", "default", (0.5, 1.0, 2.0)), ("trl", "default", (2.0, 4.0, 3.0)),
                             ("minigrpo", "fast", (0.25, 0.5, 0.5)), ("trl", "fast", (1.5, 1.5, 2.5))]
            for s, t in enumerate(ts)]
    text = grpo_speed.table(rows, SimpleNamespace(prompts=4, group=4, steps=3), {"float32": 4e9, "bfloat16": 8e9})
    # medians: minigrpo 1.0 s/step, TRL 3.0: 3.0x; fast: 0.5 against 1.5: 3.0x; minigrpo default / TRL fast: 1.5x
    assert "ratio minigrpo default / trl default: 3.0x" in text and "3 seeds" in text
    assert "ratio minigrpo fast / trl fast: 3.0x" in text and "ratio minigrpo default / trl fast: 1.5x" in text
    # 2 GFLOP/s of a 4 GFLOP/s float32 machine is 50%; minigrpo fast runs in bfloat16: 2 of 8 is 25%
    lines = {l.split()[0] + " " + l.split()[1]: l for l in text.splitlines() if l.startswith(("minigrpo ", "trl "))}
    assert "50%" in lines["minigrpo default"] and "25%" in lines["minigrpo fast"] and "50%" in lines["trl fast"]


def test_long_table_takes_medians_over_seeds_and_the_ratio():
    rows = [{"trainer": n, "seed": s, "step_s": t, "completions_per_s": 256 / t, "tokens_per_s": 25600 / t,
             "sampler_tokens_per_s": 51200 / t, "completion_len": 100.0, "peak_rss_mb": 900.0, "accuracy": acc,
             "prompts": 32, "group": 8, "max_new": 160, "steps": 20}
            for n, ts, acc in [("minigrpo", (2.0, 1.0, 4.0), 0.9), ("trl", (8.0, 6.0, 10.0), 0.8)]
            for s, t in enumerate(ts)]
    text = grpo_speed.long_table(rows)
    # medians: minigrpo 2.0 s/step (128 completions/s), TRL 8.0 (32/s): 4.0x
    assert "ratio minigrpo / trl: 4.0x" in text and "3 seeds" in text and "limit 160, 20 steps" in text
    line = next(l for l in text.splitlines() if l.startswith("minigrpo "))
    assert line.split()[1:5] == ["2.00", "128", "12800", "25600"] and line.endswith("90.0/90.0/90.0")


def test_step_flops_by_hand():
    """A 2-layer decoder with d = 4, ffn = 8, V = 10 (no GQA): 2 FLOPs per weight per token, the backward twice
    the forward. Each number below is worked out from the module's formulas by hand."""
    shape = Shape(layers=2, d=4, ffn=8, vocab=10, kv=4)
    assert shape.linear() == 2 * 2 * (4 * 12 + 16 + 3 * 32)          # q,k,v (4x12), o (4x4), MLP (3 x 4x8): 640
    assert shape.head() == 80 and shape.attention(3) == 96
    f = step_flops(shape, prompts=2, group=3, prompt_len=3, completion_len=2, kept_groups=1)
    assert f["prefill"] == 2 * 3 * (640 + 64) + 2 * 80                # 3 prompt tokens x 2 prompts, one head each
    assert f["decode"] == 6 * 1 * (640 + 80 + 128)                    # 6 rows x 1 token after the first, ctx 4
    # fwd + bwd of one group: its 3 prompt tokens once (ctx 2), then 3 rows x 1 completion token (ctx 4), 2 heads each
    assert f["learn"] == 3 * (3 * (640 + 64) + 3 * (640 + 128) + 3 * 2 * 80)
    assert f["total"] == f["prefill"] + f["decode"] + f["learn"]


def test_step_flops_counts_the_distinct_work_by_hand():
    """The same decoder and batch, with the distinct work given: 4 decoding forwards in place of 6, and 2 distinct
    trained completions of 5 tokens in place of 3 rows of 2."""
    shape = Shape(layers=2, d=4, ffn=8, vocab=10, kv=4)
    f = step_flops(shape, prompts=2, group=3, prompt_len=3, completion_len=2, kept_groups=1,
                   decode_positions=4, learn_rows=2, learn_tokens=5)
    assert f["decode"] == 4 * (640 + 80 + 128)
    # the prompt once (3 tokens, ctx 2); 5 - 2 = 3 completion tokens through the decoder (ctx 4); 5 heads
    assert f["learn"] == 3 * (3 * (640 + 64) + 3 * (640 + 128) + 5 * 80)


def test_distinct_work_by_hand():
    """Two groups of 3. Group 0: "ab<e>", "ab<e>", "ac" (a row without its end); group 1: "d<e>", "x<e>", "d<e>".
    Decoding forwards after the first token: t = 1 sees prefixes {0:a} (3 rows go on) and {1:d, 1:x}: 3;
    t = 2 sees {0:ab} (rows 0 and 1 have a third token): 1; in all 4. Trained rows: group 0 only, 2 distinct
    completions, ab<e> and ac, of 3 + 2 tokens."""
    a, b, c, d, x, e, pad = 3, 4, 5, 6, 7, 1, 0
    ids = torch.tensor([[a, b, e], [a, b, e], [a, c, pad], [d, e, pad], [x, e, pad], [d, e, pad]])
    mask = (ids != pad).long()
    kept = torch.tensor([True] * 3 + [False] * 3)
    assert distinct_work(ids, mask, 3, kept) == {"decode_positions": 4, "learn_rows": 2, "learn_tokens": 5}


def test_linear_flops_are_twice_the_decoders_linear_weights():
    """Against the model itself: 2 x the weights of every nn.Linear in the decoder blocks, for a config with
    grouped-query attention (kv width != d)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    weights = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    shape = Shape.of(config)
    assert shape.kv == 16 and shape.linear() == 2 * weights and shape.head() == 2 * model.lm_head.weight.numel()


def test_machine_rate_is_a_positive_rate():
    shape = Shape(layers=1, d=32, ffn=64, vocab=40, kv=32)
    assert machine_rate(shape, torch.float32, tokens=64, seconds=0.05) > 1e6   # at least a MFLOP/s


def test_op_breakdown_by_hand():
    """profile_step.op_breakdown: per step, the matrix products' self time and FLOPs apart from the other ops."""
    ev = lambda key, us, flops=0: SimpleNamespace(key=key, self_cpu_time_total=us, flops=flops)   # noqa: E731
    events = [ev("aten::mm", 300_000, 6e9), ev("aten::bmm", 100_000, 1e9), ev("aten::exponential_", 200_000),
              ev("aten::mul", 50_000), ev("aten::addmm", 50_000, 1e9)]
    ops = profile_step.op_breakdown(events, steps=2)
    assert ops["matmul_s"] == 0.225                      # (0.3 + 0.1 + 0.05) s over 2 steps
    assert ops["matmul_flop"] == 4e9                     # (6 + 1 + 1) GFLOP over 2 steps
    assert ops["op_s"] == 0.35                           # 0.7 s of op time over 2 steps
    assert ops["others"] == [("aten::exponential_", 0.1), ("aten::mul", 0.025)]
