"""minigrpo vs TRL's GRPOTrainer: the same GRPO run, timed side by side, against this machine's own limit.

Both start from the same checkpoint (results/cpu_arithmetic/sft, the CPU preset's SFT start: a
transformers folder with the project's tokenizer), train on the same arithmetic prompts with the same
G, completion length, batch, learning rate and schedule, beta, clip range, loss aggregation and reward
(1 for the exact answer), each in its own process, alternating seed by seed. Each trainer runs at its
defaults and at the fastest CPU settings found for it (VARIANTS). Reported per run:

    step_s         median wall seconds per GRPO step (sampling + reward + update)
    completions/s  B*G / step_s
    tokens/s       completion tokens sampled per second (EOS included)
    useful GFLOP/s the step's useful arithmetic (flops.step_flops of the distinct work, flops.distinct_work) per
                   second, and as a share of this machine's torch.mm rate at the model's shapes and precision
    peak_rss_mb    the process's peak resident memory
    accuracy       greedy held-out accuracy on data/arithmetic/test.jsonl after the run,
                   scored by the same minigrpo.evaluate for both

Then (--scaling, on by default) how a step's cost grows with G (4 -> 32) and with the completion limit
(6, arithmetic, -> 48, equations from results/cpu_equations/sft), both trainers' fast variants, plotted
to benchmarks/scaling_cpu.png; and (--long, on by default) the long preset's answers, 53-152 tokens of worked
multiplication from results/cpu_long/sft, both trainers at their defaults, where sampling dominates a step.

    pip install -e ".[bench]"              # adds trl
    python benchmarks/grpo_speed.py        # 3 seeds x 4 trainer variants, the scaling runs, the long answers
    python benchmarks/grpo_speed.py --long_only   # the long answers alone: benchmarks/results_cpu_long.json
    python benchmarks/grpo_speed.py --steps 5 --seeds 1 --no-scaling --no-long   # a smoke run

A worker (`--worker minigrpo|trl --variant default|fast`) runs one trainer once and prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from flops import Shape, distinct_work, machine_rate, step_flops  # noqa: E402

START = os.path.join(ROOT, "results", "cpu_arithmetic", "sft")
STARTS = {"arithmetic": START, "equations": os.path.join(ROOT, "results", "cpu_equations", "sft"),
          "multiplication": os.path.join(ROOT, "results", "cpu_long", "sft"),
          "arithmetic_hard": None}   # the GPU preset's SFT start: made by benchmarks/gpu_run.py, given with --start
PRESET_OF = {"arithmetic": "cpu", "arithmetic_hard": "gpu", "equations": "equations", "multiplication": "long"}
# Long answers (--long, on by default): the long preset's step (B = 32 prompts x G = 8, limit 160, lr 3e-5) from its
# SFT start, both trainers at their defaults, the same steps, seed by seed; held-out accuracy on all 600 problems.
LONG = dict(task="multiplication", prompts=32, group=8, max_new=160, lr=3e-5, warmup=10, steps=20,
            start=STARTS["multiplication"])
# Each trainer at its defaults, and at the fastest CPU settings found for it (benchmarks/README.md: what was tried).
VARIANTS = {
    "minigrpo": {"default": {},                                    # float32, the reproducible course default
                 "fast": {"dtype": "bfloat16", "draw": "inverse_cdf"}},   # (torch_compile: no faster per step)
    "trl": {"default": {},                                         # transformers' default attention (SDPA), float32
            "fast": {"attn": "eager"}},                            # eager attention, float32
}
PRECISION = {("minigrpo", "fast"): "bfloat16"}                     # the rest run their matmuls in float32
# On a GPU (benchmarks/gpu_run.py): minigrpo in the GPU preset's float32, in bfloat16 autocast, and with its training
# forward compiled; TRL at its defaults (bf16 autocast, gradient checkpointing on, SDPA attention) and without
# gradient checkpointing.
VARIANTS_GPU = {
    "minigrpo": {"default": {}, "bf16": {"dtype": "bfloat16"}, "compile": {"torch_compile": True}},
    "trl": {"default": {"bf16": True}, "fast": {"bf16": True, "gradient_checkpointing": False}},
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def peak_gpu_mb() -> float | None:
    """The process's peak CUDA memory allocated by torch (None without CUDA)."""
    import torch
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def records(split: str, task: str = "arithmetic") -> list[dict]:
    from minigrpo.data import load_split
    return load_split(task, split, os.path.join(ROOT, "data"))


def variants(a) -> dict:
    """The variant settings of this run: the CPU's, or (on a GPU, or --variant_set gpu) the GPU's."""
    chosen = getattr(a, "variant_set", "") or ("cpu" if a.device == "cpu" else "gpu")
    return VARIANTS if chosen == "cpu" else VARIANTS_GPU


def start_of(a) -> str:
    """The checkpoint both trainers start from: --start, else the task's committed SFT start."""
    path = a.start or STARTS[a.task]
    if not path:
        sys.exit(f"task {a.task}: give --start (an SFT checkpoint folder, e.g. one benchmarks/gpu_run.py wrote)")
    return path


def held_out_accuracy(model, tok, a) -> float | None:
    import torch
    from minigrpo.evaluate import evaluate
    from minigrpo.pipeline import prepare_model
    if not a.eval:
        return None
    model = prepare_model(model.float(), torch.device(a.device))
    return evaluate(model, tok, records("test", a.task), max_new_tokens=a.max_new,
                    device=torch.device(a.device))["accuracy"]


def prompt_length(tok, task: str) -> float:
    """Mean prompt length in tokens over the training prompts (both trainers draw from them uniformly)."""
    from minigrpo.tokenizer import encode
    rs = records("train", task)
    return sum(len(encode(tok, r["prompt"])) for r in rs) / len(rs)


def run_minigrpo(a) -> dict:
    import torch
    from minigrpo.checkpoint import load_model
    from minigrpo.config import make_config
    from minigrpo.pipeline import prepare_model, seed_everything
    from minigrpo.trainer import train_grpo
    seed_everything(a.seed)
    device = torch.device(a.device)
    model, tok = load_model(start_of(a), device)
    model = prepare_model(model, device)
    cfg = make_config(PRESET_OF[a.task], task=a.task, reward="correct", device=a.device,
                      steps=a.steps, prompts_per_step=a.prompts, group_size=a.group,
                      max_new_tokens=a.max_new, lr=a.lr, warmup_steps=a.warmup, eval_every=0, save_every=0,
                      seed=a.seed, out_dir=tempfile.mkdtemp(prefix="bench-minigrpo-"),
                      **variants(a)["minigrpo"][a.variant])
    import minigrpo.trainer
    batches, sample = [], minigrpo.trainer.rollout
    def recorded(*args, **kw):   # each step's sampled batch, kept for distinct_work (counted after the run)
        ro = sample(*args, **kw)
        batches.append((ro.samples.completion_ids, ro.samples.completion_mask, ro.rewards))
        return ro
    minigrpo.trainer.rollout = recorded
    t0 = time.perf_counter()
    rows = train_grpo(model, tok, cfg, records("train", a.task), records("test", a.task)[:1], progress=False)
    wall = time.perf_counter() - t0
    minigrpo.trainer.rollout = sample
    kept = lambda r: (r.view(-1, a.group).amax(1) > r.view(-1, a.group).amin(1)).repeat_interleave(a.group)
    return {"step_s": [r["sample_s"] + r["learn_s"] for r in rows], "wall_s": wall,
            "sample_s": [r["sample_s"] for r in rows],
            "completion_len": [r["completion_len"] for r in rows], "zero_var": [r["zero_var_frac"] for r in rows],
            "distinct": [distinct_work(ids, mask, a.group, kept(r)) for ids, mask, r in batches],
            "prompt_len": prompt_length(tok, a.task), "shape": Shape.of(model.config).__dict__,
            "accuracy": held_out_accuracy(model, tok, a), "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": peak_gpu_mb()}


def run_trl(a) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from minigrpo.reward import correctness

    torch.manual_seed(a.seed)
    opts = {**variants(a)["trl"][a.variant], **json.loads(a.trl_opts)}
    tok = AutoTokenizer.from_pretrained(start_of(a))
    model = AutoModelForCausalLM.from_pretrained(start_of(a), **({"attn_implementation": opts.pop("attn")}
                                                                   if "attn" in opts else {}))
    data = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in records("train", a.task)])

    def reward(prompts, completions, answer, **_):
        return [correctness(p, c, answer=x) for p, c, x in zip(prompts, completions, answer)]   # task from the prompt

    class Clock(TrainerCallback):
        """Wall seconds of each optimizer step, and what it sampled."""
        def __init__(self):
            self.step_s, self.lengths, self.zero_var, self._t = [], [], [], None

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.step_s.append(time.perf_counter() - self._t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])
                self.zero_var.append(logs.get("frac_reward_zero_std", 0.0))

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), use_cpu=a.device == "cpu", seed=a.seed, report_to="none",
        max_steps=a.steps, per_device_train_batch_size=a.prompts * a.group, gradient_accumulation_steps=1,
        num_generations=a.group, max_completion_length=a.max_new, temperature=1.0, top_k=0, top_p=1.0,
        learning_rate=a.lr, lr_scheduler_type="constant_with_warmup", warmup_steps=a.warmup,
        adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0,
        beta=0.0, epsilon=0.2, epsilon_high=0.28, loss_type="grpo", scale_rewards="group", num_iterations=1,
        logging_steps=1, save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, **opts,
    )
    clock = Clock()
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=data,
                          processing_class=tok, callbacks=[clock])
    batches, sample_s, generate = [], [], trainer._generate_and_score_completions
    def recorded(*args, **kw):   # each step's sampled batch, kept for distinct_work (counted after the run)
        t = time.perf_counter()
        out = generate(*args, **kw)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        sample_s.append(time.perf_counter() - t)
        batches.append((out["completion_ids"], out["completion_mask"], out["advantages"]))
        return out
    trainer._generate_and_score_completions = recorded
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    kept = lambda adv: (adv.view(-1, a.group) != 0).any(1).repeat_interleave(a.group)
    return {"step_s": clock.step_s, "wall_s": wall, "sample_s": sample_s, "completion_len": clock.lengths,
            "zero_var": clock.zero_var,
            "distinct": [distinct_work(ids, mask, a.group, kept(adv)) for ids, mask, adv in batches],
            "prompt_len": prompt_length(tok, a.task), "shape": Shape.of(model.config).__dict__,
            "accuracy": held_out_accuracy(trainer.model, tok, a), "peak_rss_mb": peak_rss_mb(),
            "peak_gpu_mb": peak_gpu_mb()}


def summarise(name: str, seed: int, out: dict, a) -> dict:
    """One run's row: medians over its steps but the first (which warms caches up)."""
    skip = 1 if len(out["step_s"]) > 1 else 0
    steps = out["step_s"][skip:]
    lengths = out["completion_len"][skip:] or [0.0]
    zero = out["zero_var"][skip:] or [0.0]
    shape = Shape(**out["shape"])
    n = a.prompts * a.group
    distinct = out["distinct"][skip:]
    if len(distinct) != len(steps):
        sys.exit(f"{name}: {len(out['distinct'])} sampled batches recorded for {len(out['step_s'])} steps")
    work = [step_flops(shape, a.prompts, a.group, out["prompt_len"], L, a.prompts * (1 - z), **w)
            for L, z, w in zip(lengths, zero, distinct)]
    useful = [f["total"] / t for f, t in zip(work, steps)]
    sampled = out.get("sample_s", [])[skip:] or [None] * len(steps)
    learn = [f["learn"] / (t - s) for f, t, s in zip(work, steps, sampled) if s is not None and t > s]
    decoded = sum(w["decode_positions"] for w in distinct) / max(1, sum(max(L - 1, 0) * n for L in lengths))
    return {"trainer": name, "variant": a.variant, "seed": seed, "step_s": statistics.median(steps),
            "completions_per_s": n / statistics.median(steps),
            "tokens_per_s": statistics.median(L * n / t for L, t in zip(lengths, steps)),
            "useful_gflop_s": statistics.median(useful) / 1e9, "completion_len": statistics.mean(lengths),
            "learn_gflop_s": statistics.median(learn) / 1e9 if learn else None,
            "sampler_tokens_per_s": statistics.median(L * n / s for L, s in zip(lengths, sampled))
                                    if sampled[0] is not None else None,
            "zero_var_frac": statistics.mean(zero), "prompt_len": out["prompt_len"],
            "distinct_decode_frac": decoded,
            "peak_rss_mb": out["peak_rss_mb"], "peak_gpu_mb": out.get("peak_gpu_mb"), "accuracy": out["accuracy"],
            "wall_s": out["wall_s"],
            "steps": len(out["step_s"]), "prompts": a.prompts, "group": a.group, "max_new": a.max_new,
            "task": a.task}


def worker(name: str, variant: str, seed: int, a, **over) -> dict:
    """Run one trainer variant in a process of its own; its result row."""
    evaluate = over.pop("eval", True)
    settings = {k: getattr(a, k) for k in ("steps", "prompts", "group", "lr", "warmup", "threads", "max_new",
                                            "task", "device", "start", "variant_set")} | over
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--variant", variant, "--seed", str(seed)]
    cmd += [f"--{k}={v}" for k, v in settings.items()] + ([] if evaluate else ["--no-eval"])
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TOKENIZERS_PARALLELISM": "false"}
    # a session of its own: on a timeout the worker goes with every process it started (torch.compile's
    # compiler workers hold its output pipes open, so killing the worker alone would leave this call waiting)
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=a.worker_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise
    line = next((l for l in stdout.splitlines() if l.startswith("RESULT ")), None)
    if child.returncode or line is None:
        sys.exit(f"{name} ({variant}) seed {seed} failed (exit {child.returncode}): {stderr.strip()[-2000:]}")
    return json.loads(line[len("RESULT "):])


def machine_rates(threads: int) -> dict[str, float]:
    """This machine's torch.mm FLOP/s at the CPU preset's shapes, float32 and bfloat16, in this process."""
    import torch
    from transformers import AutoConfig
    torch.set_num_threads(threads)
    shape = Shape.of(AutoConfig.from_pretrained(START))
    return {name: machine_rate(shape, getattr(torch, name)) for name in ("float32", "bfloat16")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", choices=("minigrpo", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--variant", choices=("default", "fast", "bf16", "compile"), default="default",
                   help=argparse.SUPPRESS)
    p.add_argument("--trl_opts", default="{}", help=argparse.SUPPRESS)   # try other TRL settings in a worker
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--task", default="arithmetic", choices=tuple(STARTS), help=argparse.SUPPRESS)
    p.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)       # "cuda": benchmarks/gpu_run.py
    p.add_argument("--start", default="", help=argparse.SUPPRESS)           # an SFT start other than the task's
    p.add_argument("--worker_timeout", type=float, default=None, help=argparse.SUPPRESS)   # seconds per worker
    p.add_argument("--variant_set", choices=("", "cpu", "gpu"), default="", help=argparse.SUPPRESS)  # gpu_run --smoke
    p.add_argument("--steps", type=int, default=30, help="GRPO steps per run")
    p.add_argument("--seeds", type=int, default=3, help="runs per trainer variant (seeds 0, 1, ...)")
    p.add_argument("--prompts", type=int, default=256, help="B: prompts per step (the CPU preset's)")
    p.add_argument("--group", type=int, default=8, help="G: completions per prompt")
    p.add_argument("--max_new", type=int, default=6, help="completion length limit (the CPU preset's)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=10, help="steps of linear learning-rate warm-up")
    p.add_argument("--threads", type=int, default=2, help="torch threads in each worker")
    p.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=True,
                   help="also time G = 4..32 and the 48-token equations, and plot them")
    p.add_argument("--long", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the long preset's answers (53-152 tokens of worked multiplication) from its "
                        "SFT start, both trainers at their defaults")
    p.add_argument("--long_steps", type=int, default=LONG["steps"], help="GRPO steps per long-answer run")
    p.add_argument("--long_only", action="store_true",
                   help="time the long answers alone (default --out benchmarks/results_cpu_long.json)")
    p.add_argument("--out", default=None, help="the JSON written (default benchmarks/results_cpu.json)")
    a = p.parse_args()
    a.out = a.out or os.path.join(ROOT, "benchmarks", "results_cpu_long.json" if a.long_only else "results_cpu.json")

    if a.worker:
        import torch
        torch.set_num_threads(a.threads)
        out = (run_minigrpo if a.worker == "minigrpo" else run_trl)(a)
        print("RESULT " + json.dumps(summarise(a.worker, a.seed, out, a)))
        return

    rates = machine_rates(a.threads)
    print("machine's torch.mm rate at the model's shapes: " +
          ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in rates.items()), flush=True)
    rows = []
    for seed in range(0 if a.long_only else a.seeds):
        for name in ("minigrpo", "trl"):
            for variant in ("default", "fast"):   # alternating, one process each
                rows.append(worker(name, variant, seed, a))
                r = rows[-1]
                print(f"{name:9}{variant:8} seed {seed}: {r['step_s']:.3f} s/step, {r['completions_per_s']:.0f} "
                      f"completions/s, accuracy {100 * r['accuracy']:.1f}%", flush=True)
    if rows:
        print(table(rows, a, rates))
    scaling = run_scaling(a) if a.scaling and not a.long_only else []
    if scaling:
        print(scaling_table(scaling))
        plot_scaling(scaling, os.path.join(os.path.dirname(a.out), "scaling_cpu.png"))
    long_rows = run_long(a) if a.long or a.long_only else []
    if long_rows:
        print(long_table(long_rows))
    import torch, transformers
    meta = {"machine": cpu_name(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": _version("trl"), "variants": VARIANTS,
            "matmul_flop_s": rates, "long": ({**LONG, "start": os.path.relpath(LONG["start"], ROOT), "steps": a.long_steps}
                                              if long_rows else None),
            "settings": {k: getattr(a, k) for k in ("steps", "prompts", "group", "max_new", "lr", "warmup",
                                                     "threads")}}
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "runs": rows, "scaling": scaling, "long": long_rows}, f, indent=2)
    print(f"written: {a.out}")


SCALING = [dict(group=g, prompts=32, max_new=6, task="arithmetic") for g in (4, 8, 16, 32)] + \
          [dict(group=8, prompts=32, max_new=48, task="equations")]


def run_scaling(a) -> list[dict]:
    """Both trainers' fast variants at each SCALING setting: 5 steps (the median of the last 4), no evaluation."""
    rows = []
    for over in SCALING:
        for name in ("minigrpo", "trl"):
            r = worker(name, "fast", 0, a, steps=5, warmup=1, eval=False, **over)
            rows.append(r)
            print(f"scaling {name:9} G={over['group']:2} limit={over['max_new']:2}: {r['step_s']:.3f} s/step, "
                  f"{1e3 * r['step_s'] / (over['prompts'] * over['group']):.2f} ms/completion", flush=True)
    return rows


def run_long(a) -> list[dict]:
    """Both trainers at their defaults on the long preset's settings (LONG), seed by seed, alternating."""
    rows = []
    for seed in range(a.seeds):
        for name in ("minigrpo", "trl"):
            r = worker(name, "default", seed, a, **{**LONG, "steps": a.long_steps})
            rows.append(r)
            print(f"long     {name:9} seed {seed}: {r['step_s']:.2f} s/step, {r['completions_per_s']:.0f} "
                  f"completions/s, {r['tokens_per_s']:.0f} tokens/s, {r['completion_len']:.0f} tokens, "
                  f"accuracy {100 * r['accuracy']:.1f}%", flush=True)
    return rows


def long_table(rows: list[dict]) -> str:
    """Medians over seeds of the long-answer runs, and minigrpo's speed over TRL's."""
    by = {n: [r for r in rows if r["trainer"] == n] for n in ("minigrpo", "trl")}
    med = lambda n, f: statistics.median(r[f] for r in by[n])
    r0 = rows[0]
    lines = [f"long answers: B={r0['prompts']} x G={r0['group']}, limit {r0['max_new']}, {r0['steps']} steps, "
             f"both at their defaults, {len(by['minigrpo'])} seeds (medians)",
             f"{'':10}{'s/step':>8}{'compl/s':>9}{'tok/s':>8}{'sampler tok/s':>15}{'len':>6}{'peak MB':>9}"
             f"   held-out accuracy % per seed"]
    for n in by:
        sampler = [r["sampler_tokens_per_s"] for r in by[n] if r["sampler_tokens_per_s"]]
        lines.append(f"{n:10}{med(n, 'step_s'):8.2f}{med(n, 'completions_per_s'):9.0f}{med(n, 'tokens_per_s'):8.0f}"
                     f"{statistics.median(sampler) if sampler else float('nan'):15.0f}{med(n, 'completion_len'):6.0f}"
                     f"{med(n, 'peak_rss_mb'):9.0f}   " + "/".join(f"{100 * r['accuracy']:.1f}" for r in by[n]))
    lines.append(f"ratio minigrpo / trl: {med('minigrpo', 'completions_per_s') / med('trl', 'completions_per_s'):.1f}x "
                 f"completions per second")
    return "\n".join(lines)


def scaling_table(rows: list[dict]) -> str:
    lines = [f"{'':10}{'task':12}{'G':>4}{'limit':>6}{'len':>6}{'s/step':>8}{'ms/compl':>10}"]
    for r in rows:
        lines.append(f"{r['trainer']:10}{r['task']:12}{r['group']:4}{r['max_new']:6}{r['completion_len']:6.1f}"
                     f"{r['step_s']:8.3f}{1e3 * r['step_s'] / (r['prompts'] * r['group']):10.2f}")
    return "\n".join(lines)


def plot_scaling(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, mark in (("minigrpo", "o-"), ("trl", "s--")):
        pts = [r for r in rows if r["trainer"] == name and r["task"] == "arithmetic"]
        left.plot([r["group"] for r in pts], [r["step_s"] for r in pts], mark, label=f"{name} (fast settings)")
    left.set_xscale("log", base=2)
    left.set_xlabel("G, completions per prompt (B = 32 prompts, limit 6 tokens)")
    left.set_ylabel("seconds per GRPO step")
    left.set_title("cost as the group grows")
    left.legend()
    pts = [r for r in rows if r["group"] == 8]
    labels = [f"{r['trainer']}\n{r['task']}\nlimit {r['max_new']}" for r in pts]
    right.bar(range(len(pts)), [1e3 * r["step_s"] / (r["prompts"] * r["group"]) for r in pts],
              color=["C0" if r["trainer"] == "minigrpo" else "C1" for r in pts])
    right.set_xticks(range(len(pts)), labels, fontsize=8)
    right.set_ylabel("milliseconds per completion")
    right.set_title("cost as completions get longer (B = 32, G = 8)")
    fig.suptitle(f"GRPO step cost on {cpu_name()}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"written: {path}")


def table(rows: list[dict], a, rates: dict[str, float]) -> str:
    """The medians over seeds of each trainer variant, the speed ratios, and the share of the machine's limit."""
    keys = [(n, v) for n in ("minigrpo", "trl") for v in ("default", "fast")]
    by = {k: [r for r in rows if (r["trainer"], r.get("variant", "default")) == k] for k in keys}
    keys = [k for k in keys if by[k]]
    med = lambda k, f: statistics.median(r[f] for r in by[k])
    acc = lambda k: "/".join(f"{100 * r['accuracy']:.1f}" for r in by[k])
    seeds = max(len(v) for v in by.values())
    lines = [f"B={a.prompts} prompts x G={a.group}, {a.steps} steps, {seeds} seeds (medians over seeds)",
             f"{'':18}{'s/step':>8}{'compl/s':>9}{'tok/s':>8}{'GFLOP/s':>9}{'of mm':>7}{'run s':>7}{'peak MB':>9}"
             f"   held-out accuracy % per seed"]
    for k in keys:
        precision = PRECISION.get(k, "float32")
        share = med(k, "useful_gflop_s") * 1e9 / rates[precision]
        lines.append(f"{k[0] + ' ' + k[1]:18}{med(k, 'step_s'):8.3f}{med(k, 'completions_per_s'):9.0f}"
                     f"{med(k, 'tokens_per_s'):8.0f}{med(k, 'useful_gflop_s'):9.1f}{100 * share:6.0f}%"
                     f"{statistics.median(r.get('wall_s', 0.0) for r in by[k]):7.0f}"
                     f"{med(k, 'peak_rss_mb'):9.0f}   {acc(k)}")
    speed = lambda k: med(k, "completions_per_s") if by.get(k) else None
    for mine, theirs in ((("minigrpo", "default"), ("trl", "default")), (("minigrpo", "fast"), ("trl", "fast")),
                         (("minigrpo", "default"), ("trl", "fast"))):
        if speed(mine) and speed(theirs):
            lines.append(f"ratio {' '.join(mine)} / {' '.join(theirs)}: {speed(mine) / speed(theirs):.1f}x "
                         f"completions per second")
    lines.append("run s: the whole run's wall seconds, the first steps (and torch.compile's compilation) included")
    lines.append("of mm: useful FLOP/s as a share of this machine's torch.mm rate at the model's shapes, in the "
                 "precision used (" + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in rates.items()) + ")")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name (lscpu's), and its core count."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def _version(pkg: str) -> str:
    from importlib.metadata import version
    return version(pkg)


if __name__ == "__main__":
    main()
