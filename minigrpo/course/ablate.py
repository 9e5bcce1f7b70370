"""Lesson 9's experiment: the GRPO family's tricks, each switched on alone from one SFT start, several seeds.

Every run starts from lesson 7's SFT start, results/cpu_equations/sft (91.7% of the held-out equations
right, the correct answers in all three of section 6's solution styles, 32-36 tokens long) and trains
with the exact-answer reward on the same prompts, for the same steps, with BASE's settings but for the
setting's own overrides. Each (setting, seed) runs in a process of its own, one after the other.

    section 1  clip-higher and entropy      mu in {1, 4} x eps_high in {0.2, 0.28}
    section 2  aggregation and length       loss_type grpo | dapo | dr_grpo | seq_sum
    section 3  std scaling                  scale group | batch | none
    section 4  dynamic sampling             DAPO's, at most 3 rounds of prompts per step
    section 5  the KL term                  beta 0.04 with k1 and with k3
    section 6  GSPO and CISPO               next to GRPO at mu = 4 (with grpo's and with dapo's aggregation)

    python -m minigrpo ablate                                  # the committed experiment (about 70 min;
                                                               #   run again, it resumes where it stopped)
    python -m minigrpo ablate --settings base dr_grpo --seeds 0 --steps 10 --out runs/ablate_smoke
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from ..files import atomic_write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START = os.path.join(ROOT, "results", "cpu_equations", "sft")
# What every run shares (the equations preset, then these): 40 steps of 32 prompts x 8 samples.
BASE = dict(task="equations", reward="correct", steps=40, prompts_per_step=32, group_size=8, lr=5e-5,
            warmup_steps=5, num_iterations=1, eps_low=0.2, eps_high=0.28, eval_every=10, eval_size=300,
            save_every=0)
# setting: (lesson section, overrides of BASE)
SETTINGS = {
    "base": (0, {}),                                             # mu = 1, eps_high = 0.28, grpo, group std, beta 0
    "eps_high_0.20": (1, dict(eps_high=0.2)),
    "mu4_eps_high_0.20": (1, dict(num_iterations=4, eps_high=0.2)),
    "mu4": (1, dict(num_iterations=4)),
    "dapo_loss": (2, dict(loss_type="dapo")),
    "dr_grpo_loss": (2, dict(loss_type="dr_grpo")),
    "seq_sum_loss": (2, dict(loss_type="seq_sum")),
    "batch_std": (3, dict(scale="batch")),
    "no_std": (3, dict(scale="none")),
    "dynamic_sampling": (4, dict(dynamic_sampling=True, max_sampling_rounds=3)),
    "kl_k1": (5, dict(beta=0.04, kl_estimator="k1")),
    "kl_k3": (5, dict(beta=0.04, kl_estimator="k3")),
    "gspo": (6, dict(num_iterations=4, importance_sampling_level="sequence", eps_low=3e-4, eps_high=4e-4)),
    "cispo": (6, dict(num_iterations=4, loss_type="cispo", cispo_max=5.0)),
    # CISPO's loss is a token mean over the batch: GRPO at mu = 4 with the same aggregation, so that
    # cispo and this differ in the clip alone
    "mu4_dapo_loss": (6, dict(num_iterations=4, loss_type="dapo")),
}
TRACED = "mu4"   # seed 0 of this setting writes tokens.jsonl for lesson 9's clip scrubber


def run_one(setting: str, seed: int, out_dir: str, init: str = START, steps: int | None = None,
            progress: bool = False) -> dict:
    """Train one setting from `init` in this process; write and return its result.json (what lesson 9 reads)."""
    import torch
    from ..checkpoint import load_model
    from ..config import make_config
    from ..evaluate import evaluate
    from ..pipeline import prepare_model, seed_everything, split
    from ..trainer import train_grpo

    overrides = overrides_of(setting, seed, steps)
    cfg = make_config("equations", seed=seed, out_dir=out_dir, data_dir=os.path.join(ROOT, "data"), **overrides)
    seed_everything(seed)
    device = torch.device("cpu")
    model, tok = load_model(init, device)
    model = prepare_model(model, device)
    test = split(cfg, "test", tok)
    start = evaluate(model, tok, test[:cfg.eval_size], max_new_tokens=cfg.max_new_tokens)
    rows = train_grpo(model, tok, cfg, split(cfg, "train", tok), test, progress=progress, start=init)
    shutil.rmtree(os.path.join(out_dir, "checkpoint"), ignore_errors=True)
    result = summarise(rows, setting, seed, overrides, init, start)
    atomic_write(os.path.join(out_dir, "result.json"), lambda f: json.dump(result, f))
    return result


def overrides_of(setting: str, seed: int, steps: int | None = None) -> dict:
    """BASE, then the setting's overrides, then `steps`; the traced run also writes its token traces."""
    overrides = {**BASE, **SETTINGS[setting][1], **({"steps": steps} if steps else {})}
    if setting == TRACED and seed == 0:
        overrides |= dict(trace_every=max(1, overrides["steps"] // 4), trace_groups=4)
    return overrides


def summarise(rows: list[dict], setting: str, seed: int, overrides: dict, init: str, start: dict) -> dict:
    """One run's metrics rows (and its start's greedy evaluation) condensed to what lesson 9 compares."""
    seconds, samples = 0.0, 0
    curve = [{"step": 0, "seconds": 0.0, "samples": 0, "accuracy": start["accuracy"],
              "style_shares": start["style_shares"]}]
    for r in rows:
        seconds += r["sample_s"] + r["learn_s"]
        samples += r.get("samples", overrides["prompts_per_step"] * overrides["group_size"])
        if "eval_accuracy" in r:
            curve.append({"step": r["step"], "seconds": seconds, "samples": samples, "accuracy": r["eval_accuracy"],
                          "style_shares": r["eval_style_shares"]})
    mean = lambda key, part=slice(None): sum(r[key] for r in rows[part]) / len(rows[part])
    return {"setting": setting, "section": SETTINGS[setting][0], "seed": seed, "overrides": overrides,
            "init": os.path.relpath(init, ROOT), "curve": curve, "final_accuracy": curve[-1]["accuracy"],
            "train_seconds": seconds, "samples": samples,
            "entropy_first": mean("entropy", slice(0, 5)), "entropy_last": mean("entropy", slice(-5, None)),
            "clip_low": mean("clip_low"), "clip_high": mean("clip_high"), "kl_last": mean("kl", slice(-5, None)),
            "len_first": mean("completion_len", slice(0, 5)), "len_last": mean("completion_len", slice(-5, None))}


def finished(run_dir: str, setting: str, seed: int, init: str, steps: int | None) -> dict | None:
    """The run's result.json if it finished with exactly these settings (so an interrupted ablate resumes)."""
    try:
        with open(os.path.join(run_dir, "result.json")) as f:
            result = json.load(f)
    except FileNotFoundError:
        return None
    same = result["overrides"] == overrides_of(setting, seed, steps) and result["init"] == os.path.relpath(init, ROOT)
    return result if same else None


def ablate(settings=tuple(SETTINGS), seeds=(0, 1, 2), out: str = "runs/family", init: str = START,
           steps: int | None = None, progress: bool = True) -> dict:
    """Run every (setting, seed) in its own process, seed by seed, skipping runs already finished in `out`
    with the same settings; write and return the summary."""
    from tqdm.auto import tqdm
    os.makedirs(out, exist_ok=True)
    runs = []
    for seed in seeds:   # seed by seed, so that a slow-down of the machine hits every setting alike
        for setting in tqdm(settings, desc=f"seed {seed}", disable=not progress):
            run_dir = os.path.join(out, f"{setting}_s{seed}")
            result = finished(run_dir, setting, seed, init, steps)
            if result is None:
                shutil.rmtree(run_dir, ignore_errors=True)   # a run cut short, or one with other settings
                args = json.dumps({"setting": setting, "seed": seed, "out_dir": run_dir, "init": init, "steps": steps})
                done = subprocess.run([sys.executable, "-m", "minigrpo.course.ablate", "--worker", args],
                                      capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
                if done.returncode != 0:
                    raise RuntimeError(f"{setting} seed {seed} failed: {done.stderr.strip().splitlines()[-1]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append(result)
    from .compare import machine
    summary = {"runs": runs, "base": BASE, "settings": {k: SETTINGS[k] for k in settings},
               "init": os.path.relpath(init, ROOT), "machine": machine()}
    atomic_write(os.path.join(out, "summary.json"), lambda f: json.dump(summary, f))
    return summary


def table(summary: dict) -> list[dict]:
    """One row per setting: mean and standard deviation over seeds of what lesson 9 compares."""
    import statistics as st
    rows = []
    for setting in summary["settings"]:
        mine = [r for r in summary["runs"] if r["setting"] == setting]
        row = {"setting": setting, "section": mine[0]["section"], "seeds": len(mine)}
        for key in ("final_accuracy", "entropy_last", "clip_low", "clip_high", "len_last", "kl_last",
                    "train_seconds", "samples"):
            values = [r[key] for r in mine]
            row[key] = st.mean(values)
            row[key + "_std"] = st.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(run_one(**json.loads(sys.argv[2]))))
    else:
        sys.exit("use: python -m minigrpo ablate (this module's --worker is for ablate() itself)")
