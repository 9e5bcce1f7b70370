"""Where one minigrpo GRPO step spends its time, on the CPU preset.

Runs a few GRPO steps from the CPU preset's SFT start under cProfile and splits
each step's wall time into the parts of `trainer.grpo_step`:

    sampling        sample_group: prefill once per prompt, then G rows decoded with the KV cache
    decode          token ids -> text, for the reward
    reward          score(): the verifiable reward of every completion
    advantages      group_advantages
    logprob fwd     completion_logprobs: the training forward of the kept rows
    backward        loss.backward()
    optimizer       clip_grad_norm_ + AdamW.step

then 5 more steps under torch.profiler, whose self time per aten op shows how much of a step the
matrix products take, the FLOP rate they run at (the profiler counts mm/bmm/addmm FLOPs) against
torch.mm's at the model's shapes (flops.machine_rate), and which other ops take the rest.

    python benchmarks/profile_step.py            # 20 + 5 steps after 2 warm-up steps
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from flops import Shape, machine_rate  # noqa: E402
from minigrpo.checkpoint import load_model  # noqa: E402
from minigrpo.config import make_config  # noqa: E402
from minigrpo.data import load_split, prompt_batch  # noqa: E402
from minigrpo.optim import make_optimizer  # noqa: E402
from minigrpo.pipeline import prepare_model, seed_everything  # noqa: E402
from minigrpo.reward import parse_reward  # noqa: E402
from minigrpo.trainer import grpo_step  # noqa: E402

# (label, file suffix, function name) of the profiled parts, as cProfile names them.
PARTS = [
    ("sampling", "sampler.py", "sample_group"),
    ("decode", "tokenizer.py", "decode_batch"),
    ("reward", "reward.py", "score"),
    ("advantages", "advantage.py", "group_advantages"),
    ("logprob fwd", "model.py", "completion_logprobs"),
    ("backward", "_tensor.py", "backward"),
    ("optimizer", "clip_grad.py", "clip_grad_norm_"),
    ("optimizer", "adam.py", "step"),     # AdamW.step is Adam.step
]

MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")   # the ops whose FLOPs the profiler counts


def op_breakdown(events, steps: int) -> dict:
    """Per step, from torch.profiler's key_averages(): the matrix products' self time (s) and FLOPs, and every
    other op's self time (s), largest first. `events` need .key, .self_cpu_time_total (us) and .flops."""
    mm = [e for e in events if e.key in MATMULS]
    rest = sorted(((e.key, e.self_cpu_time_total / 1e6 / steps) for e in events if e.key not in MATMULS),
                  key=lambda kv: -kv[1])
    return {"matmul_s": sum(e.self_cpu_time_total for e in mm) / 1e6 / steps,
            "matmul_flop": sum(e.flops for e in mm) / steps,
            "op_s": sum(e.self_cpu_time_total for e in events) / 1e6 / steps,
            "others": rest}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--op_steps", type=int, default=5, help="steps under torch.profiler (slow to collect)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--draw", default="multinomial", help="the sampler's draw: multinomial or inverse_cdf")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = make_config("cpu", draw=a.draw, out_dir=tempfile.mkdtemp(prefix="profile-"))
    seed_everything(cfg.seed)
    model, tok = load_model(os.path.join(ROOT, "results", "cpu_arithmetic", "sft"))
    model = prepare_model(model, torch.device("cpu"))
    train = load_split("arithmetic", "train", os.path.join(ROOT, "data"))
    opt = make_optimizer(model.parameters(), cfg.lr, cfg.adam_beta1, cfg.adam_beta2, cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    reward_fn = parse_reward(cfg.reward)
    step = lambda i: grpo_step(model, None, tok, opt, prompt_batch(train, i, cfg.prompts_per_step, cfg.seed),
                               reward_fn, cfg, gen)
    for i in range(2):  # warm-up: allocator, first Adam steps
        step(i)
    prof = cProfile.Profile()
    rows = []
    prof.enable()
    for i in range(2, 2 + a.steps):
        rows.append(step(i))
    prof.disable()
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    total = sum(r["sample_s"] + r["learn_s"] for r in rows)
    parts: dict[str, float] = {}
    for label, suffix, name in PARTS:
        cum = sum(v[3] for (f, _, n), v in stats.items() if n == name and f.endswith(suffix))
        parts[label] = parts.get(label, 0.0) + cum
    print(f"CPU preset ({cfg.draw}): B={cfg.prompts_per_step} prompts x G={cfg.group_size}, {a.steps} steps, "
          f"{torch.get_num_threads()} threads; {total / a.steps:.3f} s per step (under cProfile)")
    print(f"{'part':14}{'s/step':>8}{'share':>8}")
    for label, t in parts.items():
        print(f"{label:14}{t / a.steps:8.3f}{100 * t / total:7.1f}%")
    rest = total - sum(parts.values())
    print(f"{'other':14}{rest / a.steps:8.3f}{100 * rest / total:7.1f}%")
    kept = sum(1 - r["zero_var_frac"] for r in rows) / len(rows)
    print(f"groups with signal (trained rows): {100 * kept:.0f}%; sampled tokens per step: "
          f"{sum(r['completion_len'] for r in rows) / len(rows) * cfg.prompts_per_step * cfg.group_size:.0f}")

    first = 2 + a.steps
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for i in range(first, first + a.op_steps):
            step(i)
    ops = op_breakdown(prof.key_averages(), a.op_steps)
    rate = machine_rate(Shape.of(model.config), torch.float32)
    print(f"\nunder torch.profiler, {a.op_steps} more steps: {ops['op_s']:.3f} s of op self time per step")
    print(f"{'op':34}{'s/step':>8}{'share':>8}")
    print(f"{'matrix products (mm, bmm, addmm)':34}{ops['matmul_s']:8.3f}{100 * ops['matmul_s'] / ops['op_s']:7.1f}%")
    for key, t in ops["others"][:10]:
        print(f"{key:34}{t:8.3f}{100 * t / ops['op_s']:7.1f}%")
    print(f"the matrix products: {ops['matmul_flop'] / 1e9:.1f} GFLOP per step at "
          f"{ops['matmul_flop'] / ops['matmul_s'] / 1e9:.0f} GFLOP/s; torch.mm at the model's shapes: "
          f"{rate / 1e9:.0f} GFLOP/s (float32)")


if __name__ == "__main__":
    main()
