"""Lessons 9 and 11's experiments: one trick or setting switched on at a time from one SFT start, several seeds.

An experiment is a preset, an SFT start, the settings every run shares (its base) and, for each setting, the
few fields it changes. Every (setting, seed) trains from the start on the same prompts for the same steps, in
a process of its own, one after the other; a run that finished with the same settings is not run again.

Lesson 9, "family": from lesson 7's SFT start, results/cpu_equations/sft (91.7% of the held-out equations
right, the correct answers in all three of section 6's solution styles, 32-36 tokens long), the exact-answer
reward.

    section 1  clip-higher and entropy      mu in {1, 4} x eps_high in {0.2, 0.28}
    section 2  aggregation and length       loss_type grpo | dapo | dr_grpo | seq_sum
    section 3  std scaling                  scale group | batch | none
    section 4  dynamic sampling             DAPO's, at most 3 rounds of prompts per step
    section 5  the KL term                  beta 0.04 with k1 and with k3
    section 6  GSPO and CISPO               next to GRPO at mu = 4 (with grpo's and with dapo's aggregation)

Lesson 11, "long": from the long preset's SFT start, results/cpu_long/sft (worked multiplication, answers of
53-152 tokens), the KL to that start logged in every run (log_kl, also at beta = 0).

    section 1  length                       loss_type grpo | dr_grpo | dapo
    section 2  clip-higher and entropy      mu = 4 x eps_high in {0.2, 0.28}
    section 3  the KL term                  beta 0 (measured only) | 0.04
    section 4  overlong answers             a limit that cuts the longest answers: nothing | mask_truncated |
                                            overlong_cache
    section 5  a negative control           a random reward, at mu = 1 and mu = 4

    python -m minigrpo ablate                                  # lesson 9's committed experiment (about 70 min;
                                                               #   run again, it resumes where it stopped)
    python -m minigrpo ablate --experiment long --out results/cpu_long_mechanisms   # lesson 11's committed
                                                               #   experiment (about 25 min a seed; resumes)
    python -m minigrpo ablate --settings base dr_grpo_loss --seeds 0 --steps 10 --out runs/ablate_smoke
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from ..files import atomic_write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True)
class Experiment:
    preset: str        # the config preset every run starts from (then base, then the setting's overrides)
    start: str         # the SFT checkpoint every run starts from
    base: dict         # what every run of the experiment shares
    settings: dict     # setting -> (the lesson's section, its overrides of base)
    traced: str        # seed 0 of this setting writes tokens.jsonl for the lesson's clip scrubber
    out: str           # where `python -m minigrpo ablate` writes it by default
    tracked: tuple = ()  # logged numbers each run's result also sums up over its first and its last 5 steps


FAMILY = Experiment(
    preset="equations",
    start=os.path.join(ROOT, "results", "cpu_equations", "sft"),
    # 40 steps of 32 prompts x 8 samples
    base=dict(task="equations", reward="correct", steps=40, prompts_per_step=32, group_size=8, lr=5e-5,
              warmup_steps=5, num_iterations=1, eps_low=0.2, eps_high=0.28, eval_every=10, eval_size=300,
              save_every=0),
    settings={
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
    },
    traced="mu4",
    out="runs/family",
)

# lesson 11: steps per run; a completion limit that cuts the longest worked answers (3 x 2 digits run to 152
# tokens, EOS included), and DAPO's soft punishment over the last LONG_CACHE tokens before it
LONG_STEPS, LONG_CUT, LONG_CACHE = 60, 128, 16
LONG = Experiment(
    preset="long",
    start=os.path.join(ROOT, "results", "cpu_long", "sft"),
    base=dict(steps=LONG_STEPS, eval_every=LONG_STEPS // 4, eval_size=300, save_every=0, log_kl=True),
    settings={
        "base": (0, {}),                                             # the long preset: mu = 1, grpo, beta 0
        "dr_grpo_loss": (1, dict(loss_type="dr_grpo")),
        "dapo_loss": (1, dict(loss_type="dapo")),
        "mu4": (2, dict(num_iterations=4)),
        "mu4_eps_high_0.20": (2, dict(num_iterations=4, eps_high=0.2)),
        "kl_k3": (3, dict(beta=0.04, kl_estimator="k3")),
        "cut": (4, dict(max_new_tokens=LONG_CUT)),
        "cut_mask_truncated": (4, dict(max_new_tokens=LONG_CUT, mask_truncated=True)),
        "cut_overlong_cache": (4, dict(max_new_tokens=LONG_CUT, overlong_cache=LONG_CACHE)),
        "random_reward": (5, dict(reward="random")),
        "random_reward_mu4": (5, dict(reward="random", num_iterations=4)),
    },
    traced="mu4",
    out="runs/long_mechanisms",
    tracked=("kl_ref", "len_correct", "len_wrong", "truncated_frac", "reward_mean"),
)

EXPERIMENTS = {"family": FAMILY, "long": LONG}
# lesson 9's names for its experiment
START, BASE, SETTINGS, TRACED = FAMILY.start, FAMILY.base, FAMILY.settings, FAMILY.traced


def run_one(setting: str, seed: int, out_dir: str, init: str | None = None, steps: int | None = None,
            progress: bool = False, experiment: str = "family") -> dict:
    """Train one setting from `init` (default: the experiment's start) in this process; write and return its
    result.json (what the lesson reads)."""
    import torch
    from ..checkpoint import load_model
    from ..config import make_config
    from ..evaluate import evaluate
    from ..pipeline import prepare_model, seed_everything, split
    from ..trainer import train_grpo

    exp = EXPERIMENTS[experiment]
    init = init or exp.start
    overrides = overrides_of(setting, seed, steps, experiment)
    cfg = make_config(exp.preset, seed=seed, out_dir=out_dir, data_dir=os.path.join(ROOT, "data"), **overrides)
    seed_everything(seed)
    device = torch.device("cpu")
    model, tok = load_model(init, device)
    model = prepare_model(model, device)
    test = split(cfg, "test", tok)
    start = evaluate(model, tok, test[:cfg.eval_size], max_new_tokens=cfg.max_new_tokens)
    rows = train_grpo(model, tok, cfg, split(cfg, "train", tok), test, progress=progress, start=init)
    shutil.rmtree(os.path.join(out_dir, "checkpoint"), ignore_errors=True)
    result = summarise(rows, setting, seed, overrides, init, start, experiment,
                       per_step=cfg.prompts_per_step * cfg.group_size)
    atomic_write(os.path.join(out_dir, "result.json"), lambda f: json.dump(result, f))
    return result


def overrides_of(setting: str, seed: int, steps: int | None = None, experiment: str = "family") -> dict:
    """The experiment's base, then the setting's overrides, then `steps`; the traced run also writes its token
    traces."""
    exp = EXPERIMENTS[experiment]
    overrides = {**exp.base, **exp.settings[setting][1], **({"steps": steps} if steps else {})}
    if setting == exp.traced and seed == 0:
        overrides |= dict(trace_every=max(1, overrides["steps"] // 4), trace_groups=4)
    return overrides


def summarise(rows: list[dict], setting: str, seed: int, overrides: dict, init: str, start: dict,
              experiment: str = "family", per_step: int | None = None) -> dict:
    """One run's metrics rows (and its start's greedy evaluation) condensed to what the lessons compare;
    `per_step` is the completions a step samples (default: the overrides' B x G)."""
    per_step = per_step or overrides["prompts_per_step"] * overrides["group_size"]
    seconds, samples = 0.0, 0
    curve = [{"step": 0, "seconds": 0.0, "samples": 0, "accuracy": start["accuracy"],
              **({"style_shares": start["style_shares"]} if "style_shares" in start else {}),
              **({"worked_share": start["worked_share"]} if "worked_share" in start else {})}]
    for r in rows:
        seconds += r["sample_s"] + r["learn_s"]
        samples += r.get("samples", per_step)
        if "eval_accuracy" in r:
            curve.append({"step": r["step"], "seconds": seconds, "samples": samples, "accuracy": r["eval_accuracy"],
                          **({"style_shares": r["eval_style_shares"]} if "eval_style_shares" in r else {}),
                          **({"worked_share": r["eval_worked_share"]} if "eval_worked_share" in r else {})})

    def mean(key, part=slice(None)):
        values = [r[key] for r in rows[part] if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    extra = {f"{key}_{end}": mean(key, part) for key in EXPERIMENTS[experiment].tracked
             for end, part in (("first", slice(0, 5)), ("last", slice(-5, None)))}
    return {"setting": setting, "section": EXPERIMENTS[experiment].settings[setting][0], "seed": seed,
            "overrides": overrides, "init": os.path.relpath(init, ROOT), "curve": curve,
            "final_accuracy": curve[-1]["accuracy"], "train_seconds": seconds, "samples": samples,
            "entropy_first": mean("entropy", slice(0, 5)), "entropy_last": mean("entropy", slice(-5, None)),
            "clip_low": mean("clip_low"), "clip_high": mean("clip_high"), "kl_last": mean("kl", slice(-5, None)),
            "len_first": mean("completion_len", slice(0, 5)), "len_last": mean("completion_len", slice(-5, None)),
            **extra}


def finished(run_dir: str, setting: str, seed: int, init: str, steps: int | None,
             experiment: str = "family") -> dict | None:
    """The run's result.json if it finished with exactly these settings (so an interrupted ablate resumes)."""
    try:
        with open(os.path.join(run_dir, "result.json")) as f:
            result = json.load(f)
    except FileNotFoundError:
        return None
    same = (result["overrides"] == overrides_of(setting, seed, steps, experiment)
            and result["init"] == os.path.relpath(init, ROOT))
    return result if same else None


def ablate(settings=None, seeds=(0, 1, 2), out: str | None = None, init: str | None = None,
           steps: int | None = None, progress: bool = True, experiment: str = "family") -> dict:
    """Run every (setting, seed) of `experiment` (default: all its settings) in its own process, seed by seed,
    skipping runs already finished in `out` with the same settings; write and return the summary."""
    from tqdm.auto import tqdm
    exp = EXPERIMENTS[experiment]
    settings, out, init = tuple(settings or exp.settings), out or exp.out, init or exp.start
    unknown = [name for name in settings if name not in exp.settings]
    if unknown:
        raise ValueError(f"experiment {experiment!r} has no setting {unknown[0]!r}; its settings: "
                         f"{', '.join(exp.settings)}")
    os.makedirs(out, exist_ok=True)
    runs = []
    for seed in seeds:   # seed by seed, so that a slow-down of the machine hits every setting alike
        for setting in tqdm(settings, desc=f"seed {seed}", disable=not progress):
            run_dir = os.path.join(out, f"{setting}_s{seed}")
            result = finished(run_dir, setting, seed, init, steps, experiment)
            if result is None:
                shutil.rmtree(run_dir, ignore_errors=True)   # a run cut short, or one with other settings
                args = json.dumps({"setting": setting, "seed": seed, "out_dir": run_dir, "init": init,
                                   "steps": steps, "experiment": experiment})
                done = subprocess.run([sys.executable, "-m", "minigrpo.course.ablate", "--worker", args],
                                      capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
                if done.returncode != 0:
                    raise RuntimeError(f"{setting} seed {seed} failed: {done.stderr.strip().splitlines()[-1]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append(result)
    from .compare import machine
    summary = {"experiment": experiment, "runs": runs, "base": exp.base,
               "settings": {k: exp.settings[k] for k in settings}, "init": os.path.relpath(init, ROOT),
               "machine": machine()}
    atomic_write(os.path.join(out, "summary.json"), lambda f: json.dump(summary, f))
    return summary


def table(summary: dict) -> list[dict]:
    """One row per setting: mean and standard deviation over seeds of what the lesson compares."""
    import statistics as st
    rows = []
    for setting in summary["settings"]:
        mine = [r for r in summary["runs"] if r["setting"] == setting]
        row = {"setting": setting, "section": mine[0]["section"], "seeds": len(mine)}
        tracked = EXPERIMENTS[summary.get("experiment", "family")].tracked
        keys = ("final_accuracy", "entropy_last", "clip_low", "clip_high", "len_last", "kl_last", "train_seconds",
                "samples", *(f"{key}_last" for key in tracked))
        for key in (k for k in keys if all(r.get(k) is not None for r in mine)):
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
