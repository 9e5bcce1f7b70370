"""minigrpo vs TRL's GRPOTrainer: the same GRPO run, timed side by side.

Both start from the same checkpoint (results/cpu_arithmetic/sft, the CPU preset's SFT
start: a transformers folder with the project's tokenizer), train on the same
arithmetic prompts with the same G, completion length, batch, learning rate and
schedule, beta, clip range, loss aggregation and reward (1 for the exact answer),
each in its own process, the two alternating seed by seed. Reported per run:

    step_s         median wall seconds per GRPO step (sampling + reward + update)
    completions/s  B*G / step_s
    tokens/s       completion tokens sampled per second (EOS included)
    peak_rss_mb    the process's peak resident memory
    accuracy       greedy held-out accuracy on data/arithmetic/test.jsonl after the run,
                   scored by the same minigrpo.evaluate for both

    pip install -e ".[bench]"              # adds trl
    python benchmarks/grpo_speed.py        # 3 seeds x 2 trainers; prints the table
    python benchmarks/grpo_speed.py --steps 5 --seeds 1    # a smoke run

A worker (`--worker minigrpo|trl`) runs one trainer once and prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = os.path.join(ROOT, "results", "cpu_arithmetic", "sft")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def records(split: str) -> list[dict]:
    from minigrpo.data import load_split
    return load_split("arithmetic", split, os.path.join(ROOT, "data"))


def held_out_accuracy(model, tok) -> float:
    import torch
    from minigrpo.evaluate import evaluate
    from minigrpo.pipeline import prepare_model
    model = prepare_model(model.float(), torch.device("cpu"))
    return evaluate(model, tok, records("test"), max_new_tokens=6)["accuracy"]


def run_minigrpo(a) -> dict:
    import torch
    from minigrpo.checkpoint import load_model
    from minigrpo.config import make_config
    from minigrpo.pipeline import prepare_model, seed_everything
    from minigrpo.trainer import train_grpo
    seed_everything(a.seed)
    model, tok = load_model(START, torch.device("cpu"))
    model = prepare_model(model, torch.device("cpu"))
    cfg = make_config("cpu", steps=a.steps, prompts_per_step=a.prompts, group_size=a.group, lr=a.lr,
                      warmup_steps=a.warmup, eval_every=0, save_every=0, seed=a.seed,
                      out_dir=tempfile.mkdtemp(prefix="bench-minigrpo-"))
    t0 = time.perf_counter()
    rows = train_grpo(model, tok, cfg, records("train"), records("test")[:1], progress=False)
    wall = time.perf_counter() - t0
    step_s = [r["sample_s"] + r["learn_s"] for r in rows]
    tokens = [r["completion_len"] * a.prompts * a.group for r in rows]
    return {"step_s": step_s, "tokens": tokens, "wall_s": wall,
            "accuracy": held_out_accuracy(model, tok), "peak_rss_mb": peak_rss_mb()}


def run_trl(a) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from minigrpo.reward import correctness

    torch.manual_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(START)
    model = AutoModelForCausalLM.from_pretrained(START, attn_implementation="eager")  # as minigrpo on the CPU
    data = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in records("train")])

    def reward(prompts, completions, answer, **_):
        return [correctness(p, c, answer=x, task="arithmetic") for p, c, x in zip(prompts, completions, answer)]

    class Clock(TrainerCallback):
        """Wall seconds of each optimizer step, and the completion tokens it sampled."""
        def __init__(self):
            self.step_s, self.tokens, self._t = [], [], None

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.step_s.append(time.perf_counter() - self._t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                self.tokens.append(logs["completions/mean_length"] * a.prompts * a.group)

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), use_cpu=True, seed=a.seed, report_to="none",
        max_steps=a.steps, per_device_train_batch_size=a.prompts * a.group, gradient_accumulation_steps=1,
        num_generations=a.group, max_completion_length=6, temperature=1.0, top_k=0, top_p=1.0,
        learning_rate=a.lr, lr_scheduler_type="constant_with_warmup", warmup_steps=a.warmup,
        adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0,
        beta=0.0, epsilon=0.2, epsilon_high=0.28, loss_type="grpo", scale_rewards="group", num_iterations=1,
        logging_steps=1, save_strategy="no", disable_tqdm=True, bf16=False, dataloader_num_workers=0,
    )
    clock = Clock()
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=data,
                          processing_class=tok, callbacks=[clock])
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    return {"step_s": clock.step_s, "tokens": clock.tokens, "wall_s": wall,
            "accuracy": held_out_accuracy(trainer.model, tok), "peak_rss_mb": peak_rss_mb()}


def summarise(name: str, seed: int, out: dict, a) -> dict:
    skip = 1 if len(out["step_s"]) > 1 else 0  # the first step warms caches up
    step = statistics.median(out["step_s"][skip:])
    tok_s = statistics.median(t / s for t, s in zip(out["tokens"][skip:], out["step_s"][skip:]))
    return {"trainer": name, "seed": seed, "step_s": step, "completions_per_s": a.prompts * a.group / step,
            "tokens_per_s": tok_s, "peak_rss_mb": out["peak_rss_mb"], "accuracy": out["accuracy"],
            "wall_s": out["wall_s"], "steps": len(out["step_s"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", choices=("minigrpo", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=30, help="GRPO steps per run")
    p.add_argument("--seeds", type=int, default=3, help="runs per trainer (seeds 0, 1, ...)")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--prompts", type=int, default=256, help="B: prompts per step (the CPU preset's)")
    p.add_argument("--group", type=int, default=8, help="G: completions per prompt")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=10, help="steps of linear learning-rate warm-up")
    p.add_argument("--threads", type=int, default=2, help="torch threads in each worker")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results_cpu.json"))
    a = p.parse_args()

    if a.worker:
        import torch
        torch.set_num_threads(a.threads)
        out = (run_minigrpo if a.worker == "minigrpo" else run_trl)(a)
        print("RESULT " + json.dumps(summarise(a.worker, a.seed, out, a)))
        return

    rows = []
    for seed in range(a.seeds):
        for name in ("minigrpo", "trl"):  # alternating, one process each
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--seed", str(seed)]
            cmd += [f"--{k}={getattr(a, k)}" for k in ("steps", "prompts", "group", "lr", "warmup", "threads")]
            env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   "TOKENIZERS_PARALLELISM": "false"}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
            if done.returncode or line is None:
                sys.exit(f"{name} seed {seed} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
            rows.append(json.loads(line[len("RESULT "):]))
            r = rows[-1]
            print(f"{name:9} seed {seed}: {r['step_s']:.3f} s/step, {r['completions_per_s']:.0f} completions/s, "
                  f"accuracy {100 * r['accuracy']:.1f}%", flush=True)
    print(table(rows, a))
    import torch, transformers
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": _version("trl"),
            "settings": {k: getattr(a, k) for k in ("steps", "prompts", "group", "lr", "warmup", "threads")}}
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "runs": rows}, f, indent=2)
    print(f"written: {a.out}")


def table(rows: list[dict], a) -> str:
    by = {n: [r for r in rows if r["trainer"] == n] for n in ("minigrpo", "trl")}
    med = lambda n, k: statistics.median(r[k] for r in by[n])
    acc = lambda n: "/".join(f"{100 * r['accuracy']:.1f}" for r in by[n])
    lines = [f"B={a.prompts} prompts x G={a.group}, {a.steps} steps, {len(by['trl'])} seeds (medians over seeds)",
             f"{'':10}{'s/step':>8}{'compl/s':>9}{'tok/s':>8}{'peak MB':>9}   held-out accuracy % per seed"]
    for n in ("minigrpo", "trl"):
        lines.append(f"{n:10}{med(n, 'step_s'):8.3f}{med(n, 'completions_per_s'):9.0f}{med(n, 'tokens_per_s'):8.0f}"
                     f"{med(n, 'peak_rss_mb'):9.0f}   {acc(n)}")
    lines.append(f"ratio minigrpo/TRL: {med('minigrpo', 'completions_per_s') / med('trl', 'completions_per_s'):.1f}x "
                 f"completions per second")
    return "\n".join(lines)


def _version(pkg: str) -> str:
    from importlib.metadata import version
    return version(pkg)


if __name__ == "__main__":
    main()
