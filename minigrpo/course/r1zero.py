"""Lesson 6's section 5: R1-Zero's question at this scale, GRPO from a start never trained on its prompts.

DeepSeek-R1-Zero (DeepSeek-AI 2025, §2.2) applies RL to a base model with no supervised fine-tuning first,
asking its questions through a template (§2.2.3) that the base was never fine-tuned on. Since GRPO learns only
from groups whose rewards differ, that can work only if the base already answers some of them right. Here the start is the CPU preset's SFT checkpoint
(results/cpu_arithmetic/sft), which was trained on prompts of one form only, "78+83=". Asked the same sums
through a template it never saw (" 78+83=", "78+83 =", "(78+83)=", "78+83。", "计算 78+83="), it is right on
0-12% of them: for those prompts it is a start without SFT that passes sometimes. For each template and seed:

    start     held-out accuracy under the template (greedy, the 500 test problems), and the start's counts
              of correct answers in `samples` sampled ones (the run's sampling settings: temperature 1) for each
              of `probe` test problems, from which pass@k is estimated (lesson 6's exercise 2)
    curve     held-out accuracy under the template every eval_every steps of GRPO (the CPU preset: B = 256
              prompts x G = 8, lr 1e-4, no KL) trained on the templated train prompts
    signal    the reward and the share of groups whose rewards were all equal, over the first 10 steps

    python -m minigrpo.course.r1zero            # the committed runs, 6 templates x 3 seeds (about 8 min;
                                                #   it resumes): results/cpu_r1zero
    python -m minigrpo.course.r1zero --templates " {q}" --seeds 0 --steps 4 --out runs/r1zero_smoke
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from ..files import atomic_write
from .ablate import ROOT

START = os.path.join(ROOT, "results", "cpu_arithmetic", "sft")
OUT = os.path.join(ROOT, "results", "cpu_r1zero")
# {q} is the prompt the start was trained on ("78+83="), {e} the sum alone ("78+83")
TEMPLATES = ("{q}", " {q}", "{e} =", "({e})=", "{e}。", "计算 {q}")
STEPS, EVAL_EVERY, PROBE, SAMPLES = 100, 25, 200, 16


def templated(records: list[dict], template: str) -> list[dict]:
    """The records with their prompts asked through `template` (answers and task fields unchanged)."""
    return [{**r, "prompt": template.format(q=r["prompt"], e=r["prompt"].removesuffix("="))} for r in records]


def correct_counts(policy, tok, records: list[dict], reward_fn, cfg, *, samples: int, seed: int) -> list[int]:
    """How many of `samples` answers (sampled with cfg's settings) to each record are right: one count each."""
    import dataclasses

    import torch
    from ..sampler import rollout

    with torch.no_grad():
        ro = rollout(policy, tok, records, reward_fn, dataclasses.replace(cfg, group_size=samples),
                     torch.Generator().manual_seed(seed))
    return [int(c) for c in ro.rewards.view(len(records), samples).sum(1).tolist()]


def run_one(template: str, seed: int, out_dir: str, steps: int = STEPS, init: str = START,
            progress: bool = False) -> dict:
    """GRPO from `init` on the templated arithmetic prompts; returns the measurements (module docstring)."""
    import torch
    from ..checkpoint import load_model
    from ..config import make_config
    from ..evaluate import evaluate
    from ..pipeline import prepare_model, seed_everything, split
    from ..reward import parse_reward
    from ..trainer import train_grpo

    cfg = make_config("cpu", seed=seed, out_dir=out_dir, data_dir=os.path.join(ROOT, "data"), steps=steps,
                      eval_every=EVAL_EVERY, save_every=0)
    seed_everything(seed)
    device = torch.device("cpu")
    policy, tok = load_model(init, device)
    policy = prepare_model(policy, device)
    test, train = templated(split(cfg, "test", tok), template), templated(split(cfg, "train", tok), template)
    start = evaluate(policy, tok, test, max_new_tokens=cfg.max_new_tokens)["accuracy"]
    counts = correct_counts(policy, tok, test[:PROBE], parse_reward(cfg.reward), cfg, samples=SAMPLES, seed=seed)
    began = time.perf_counter()
    rows = train_grpo(policy, tok, cfg, train, test, progress=progress, start=init)
    first = rows[:10]
    return {"template": template, "seed": seed, "steps": steps, "init": os.path.relpath(init, ROOT),
            "start_accuracy": start, "probe_counts": counts, "samples": SAMPLES,
            "curve": [{"step": 0, "accuracy": start}] + [{"step": r["step"], "accuracy": r["eval_accuracy"]}
                                                         for r in rows if "eval_accuracy" in r],
            "final_accuracy": rows[-1]["eval_accuracy"],
            "reward_first10": sum(r["reward_mean"] for r in first) / len(first),
            "zero_var_first10": sum(r["zero_var_frac"] for r in first) / len(first),
            "train_seconds": time.perf_counter() - began}


def run_all(templates=TEMPLATES, seeds=(0, 1, 2), out: str = OUT, steps: int = STEPS,
            progress: bool = True) -> dict:
    """Every (template, seed), one after the other, each kept in out/t<i>_s<seed>/ (metrics.jsonl, result.json;
    a finished run is not run again); writes and returns out/summary.json."""
    from tqdm.auto import tqdm
    from .compare import machine

    os.makedirs(out, exist_ok=True)
    runs = []
    jobs = [(t, s) for s in seeds for t in templates]
    for template, seed in tqdm(jobs, desc="R1-Zero templates", disable=not progress):
        run_dir = os.path.join(out, f"t{list(templates).index(template)}_s{seed}")
        path = os.path.join(run_dir, "result.json")
        done = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else None
        if done is None or (done["template"], done["steps"]) != (template, steps):
            done = run_one(template, seed, run_dir, steps=steps)
            shutil.rmtree(os.path.join(run_dir, "checkpoint"), ignore_errors=True)   # 12 MB each; metrics stay
            atomic_write(path, lambda f: json.dump(done, f, ensure_ascii=False))
        runs.append(done)
    summary = {"runs": runs, "templates": list(templates), "seeds": list(seeds), "steps": steps,
               "machine": machine()}
    atomic_write(os.path.join(out, "summary.json"), lambda f: json.dump(summary, f, ensure_ascii=False))
    return summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m minigrpo.course.r1zero", description=__doc__.splitlines()[0])
    p.add_argument("--templates", nargs="+", default=list(TEMPLATES),
                   help="format strings: {q} is the trained prompt, {e} the sum alone")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    bad = [t for t in args.templates if "{q}" not in t and "{e}" not in t]
    if bad:
        p.error(f"template {bad[0]!r} holds neither {{q}} nor {{e}}, so it would not ask the problem")
    summary = run_all(args.templates, tuple(args.seeds), args.out, args.steps)
    for r in summary["runs"]:
        print(f"{r['template']!r:12} seed {r['seed']}: {100 * r['start_accuracy']:5.1f}% -> "
              f"{100 * r['final_accuracy']:5.1f}%  (equal-reward groups, first 10 steps: "
              f"{100 * r['zero_var_first10']:.0f}%)")


if __name__ == "__main__":
    main()
