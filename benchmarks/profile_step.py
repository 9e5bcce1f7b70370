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

    python benchmarks/profile_step.py            # 20 steps after 2 warm-up steps
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = make_config("cpu", out_dir=tempfile.mkdtemp(prefix="profile-"))
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
    print(f"CPU preset: B={cfg.prompts_per_step} prompts x G={cfg.group_size}, {a.steps} steps, "
          f"{torch.get_num_threads()} threads; {total / a.steps:.3f} s per step (under cProfile)")
    print(f"{'part':14}{'s/step':>8}{'share':>8}")
    for label, t in parts.items():
        print(f"{label:14}{t / a.steps:8.3f}{100 * t / total:7.1f}%")
    rest = total - sum(parts.values())
    print(f"{'other':14}{rest / a.steps:8.3f}{100 * rest / total:7.1f}%")
    kept = sum(1 - r["zero_var_frac"] for r in rows) / len(rows)
    print(f"groups with signal (trained rows): {100 * kept:.0f}%; sampled tokens per step: "
          f"{sum(r['completion_len'] for r in rows) / len(rows) * cfg.prompts_per_step * cfg.group_size:.0f}")


if __name__ == "__main__":
    main()
