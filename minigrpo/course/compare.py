"""Lesson 8's experiment: GRPO, PPO (critic + GAE), REINFORCE and RLOO from one SFT start, measured.

Every run starts from the same checkpoint (the CPU preset's SFT start,
results/cpu_arithmetic/sft), trains on the same arithmetic prompts with the same
number of samples per step (B prompts x G completions), learning rate, clip range,
loss aggregation and number of steps, and differs only in `algo`. Each (method,
seed) runs in a process of its own, so that its peak memory is its own. Reported:

    curve          held-out accuracy (greedy, data/arithmetic/test.jsonl) every eval_every steps,
                   against steps and against training seconds (sampling + update, no evaluation)
    peak_rss_mb    the worker process's peak resident memory
    state_mb       weights + AdamW moments of what is trained (the policy, and the critic for PPO)
    values         PPO only, after training: along one sampled completion for each of `value_prompts`
                   test prompts, the true value V(s_t) of every prefix (Monte Carlo, `rollouts`
                   continuations), the critic's V(s_t), and the prompt-level baseline V(s_0) that a
                   group mean estimates: the note's claim about intermediate tokens, measured
    warmup         PPO with critic_warmup > 0 only: the critic was first trained on the SFT policy's own
                   rollouts until its error on the rollouts of test prompts it never trains on stopped
                   falling (values.warm_up_critic, at most critic_warmup steps); its checks and seconds

    python -m minigrpo compare                                   # the committed comparison
    python -m minigrpo compare --steps 20 --seeds 0 --out runs/compare_smoke
    python -m minigrpo compare --methods ppo --critic_warmup 300 --out results/cpu_critic/warm
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time

from ..files import atomic_write

METHODS = ("grpo", "ppo", "reinforce", "rloo")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START = os.path.join(ROOT, "results", "cpu_arithmetic", "sft")
DEFAULTS = dict(steps=200, prompts_per_step=64, group_size=8, eval_every=25, eval_size=500,
                value_prompts=64, rollouts=32, critic_warmup=0)


def run_one(algo: str, seed: int, out_dir: str, init: str = START, steps: int = DEFAULTS["steps"],
            prompts_per_step: int = DEFAULTS["prompts_per_step"], group_size: int = DEFAULTS["group_size"],
            eval_every: int = DEFAULTS["eval_every"], eval_size: int = DEFAULTS["eval_size"],
            value_prompts: int = DEFAULTS["value_prompts"], rollouts: int = DEFAULTS["rollouts"],
            critic_warmup: int = DEFAULTS["critic_warmup"], progress: bool = False) -> dict:
    """Train one method from `init` in this process; returns its measurements (see the module docstring).

    out_dir keeps the run's metrics.jsonl; its final checkpoint is deleted (12 runs would be ~100 MB).
    """
    import torch
    from ..checkpoint import load_model
    from ..config import make_config
    from ..evaluate import evaluate
    from ..pipeline import prepare_model, seed_everything, split
    from ..ppo import Critic, PPOStep
    from ..reward import parse_reward
    from ..trainer import train_grpo

    cfg = make_config("cpu", algo=algo, seed=seed, out_dir=out_dir, data_dir=os.path.join(ROOT, "data"), steps=steps,
                      prompts_per_step=prompts_per_step,
                      group_size=group_size, eval_every=eval_every, eval_size=eval_size, save_every=0)
    seed_everything(seed)
    device = torch.device("cpu")
    model, tok = load_model(init, device)
    model = prepare_model(model, device)
    test = split(cfg, "test", tok)
    start_acc = evaluate(model, tok, test[:eval_size], max_new_tokens=cfg.max_new_tokens)["accuracy"]
    train = split(cfg, "train", tok)
    critic, warmup = None, None
    if algo == "ppo" and critic_warmup:   # the critic first learns the SFT policy's values (values.warm_up_critic)
        from .values import warm_up_critic
        critic = Critic(model, cfg)
        began = time.perf_counter()
        history = warm_up_critic(model, critic, tok, train, test[:prompts_per_step], parse_reward(cfg.reward), cfg,
                                 max_steps=critic_warmup, progress=progress)
        warmup = {"history": history, "seconds": time.perf_counter() - began}
    step = PPOStep(critic if critic is not None else Critic(model, cfg)) if algo == "ppo" else None   # PPO attaches
    rows = train_grpo(model, tok, cfg, train, test, progress=progress, start=init, step=step)
    critic = step.critic if step is not None else None   # trained
    shutil.rmtree(os.path.join(out_dir, "checkpoint"), ignore_errors=True)
    seconds, curve = 0.0, [{"step": 0, "seconds": 0.0, "accuracy": start_acc}]
    for r in rows:
        seconds += r["sample_s"] + r["learn_s"]
        if "eval_accuracy" in r:
            curve.append({"step": r["step"], "seconds": seconds, "accuracy": r["eval_accuracy"]})
    trained = list(model.parameters()) + (list(critic.parameters()) if critic is not None else [])
    result = {
        "algo": algo, "seed": seed, "curve": curve, "final_accuracy": curve[-1]["accuracy"],
        "train_seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "state_mb": sum(p.numel() for p in trained) * 4 * 3 / 2**20,   # float32 weights + Adam's two moments
        "zero_var_frac": sum(r["zero_var_frac"] for r in rows) / len(rows),
        "rows": len(rows), "settings": dict(steps=steps, prompts_per_step=prompts_per_step, group_size=group_size,
                                            eval_every=eval_every, eval_size=eval_size, lr=cfg.lr,
                                            critic_lr=cfg.critic_lr, gae_lambda=cfg.gae_lambda,
                                            critic_warmup=critic_warmup),
    }
    if warmup is not None:
        result["warmup"] = warmup
    if critic is not None:
        from .values import critic_values, monte_carlo_values
        traces = monte_carlo_values(model, tok, test[-value_prompts:], parse_reward(cfg.reward),
                                    max_new_tokens=cfg.max_new_tokens, rollouts=rollouts, seed=seed)
        for tr, v in zip(traces, critic_values(critic, tok, traces)):
            tr["critic"] = v
        result["values"] = traces
        result["value_mae_by_step"] = [r.get("value_mae") for r in rows]
    return result


def compare(methods=METHODS, seeds=(0, 1, 2), out: str = "runs/compare", init: str = START,
            progress: bool = True, **settings) -> dict:
    """Run every (method, seed) in its own process, one after the other; write and return the summary."""
    from tqdm.auto import tqdm
    settings = {**DEFAULTS, **settings}
    os.makedirs(out, exist_ok=True)
    runs = []
    for seed in seeds:   # seed by seed, so that a slow-down of the machine hits every method alike
        for algo in tqdm(methods, desc=f"seed {seed}", disable=not progress):
            args = json.dumps({"algo": algo, "seed": seed, "out_dir": os.path.join(out, f"{algo}_s{seed}"),
                               "init": init, **settings})
            done = subprocess.run([sys.executable, "-m", "minigrpo.course.compare", "--worker", args],
                                  capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
            if done.returncode != 0:
                raise RuntimeError(f"{algo} seed {seed} failed: {done.stderr.strip().splitlines()[-1]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    summary = {"runs": runs, "settings": settings, "init": os.path.relpath(init, ROOT), "machine": machine()}
    atomic_write(os.path.join(out, "summary.json"), lambda f: json.dump(summary, f))
    return summary


def machine() -> str:
    import platform
    import torch
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def table(summary: dict) -> list[dict]:
    """One row per method: mean and std over seeds of the measurements, and accuracy at GRPO's time budget."""
    import statistics as st
    runs = summary["runs"]
    budget = st.mean(r["train_seconds"] for r in runs if r["algo"] == "grpo") if any(
        r["algo"] == "grpo" for r in runs) else None
    rows = []
    for algo in METHODS:
        mine = [r for r in runs if r["algo"] == algo]
        if not mine:
            continue
        final = [100 * r["final_accuracy"] for r in mine]
        at_budget = [100 * max((p for p in r["curve"] if p["seconds"] <= budget), key=lambda p: p["seconds"])["accuracy"]
                     for r in mine] if budget else []
        rows.append({
            "method": algo, "seeds": len(mine),
            "start_acc": 100 * mine[0]["curve"][0]["accuracy"],
            "final_acc": st.mean(final), "final_acc_std": st.stdev(final) if len(final) > 1 else 0.0,
            "acc_at_grpo_time": st.mean(at_budget) if at_budget else None,
            "train_s": st.mean(r["train_seconds"] for r in mine),
            "s_per_step": st.mean(r["train_seconds"] / r["rows"] for r in mine),
            "peak_rss_mb": st.mean(r["peak_rss_mb"] for r in mine), "state_mb": mine[0]["state_mb"],
        })
    return rows


def plot(summary: dict):
    """Held-out accuracy against steps and against training seconds, every seed drawn; returns the figure."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = dict(zip(METHODS, ("C0", "C3", "C2", "C1")))
    for r in summary["runs"]:
        label = r["algo"] if r["seed"] == summary["runs"][0]["seed"] else None
        for ax, x in zip(axes, ("step", "seconds")):
            ax.plot([p[x] for p in r["curve"]], [100 * p["accuracy"] for p in r["curve"]], color=colors[r["algo"]],
                    alpha=0.8, marker="o", ms=3, label=label)
    for ax, x in zip(axes, ("GRPO step (same samples per step for all)", "training seconds (no evaluation)")):
        ax.set_xlabel(x)
        ax.set_ylabel("held-out accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    return fig


def _worker(args: str) -> None:
    print(json.dumps(run_one(**json.loads(args))))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
    else:
        sys.exit("use: python -m minigrpo compare (this module's --worker is for compare() itself)")
