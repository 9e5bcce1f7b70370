"""The GPU work in one prepared call: the GPU preset trained, the speed against TRL, a 0.5B-shaped model measured.

A GPU is lent only now and then, for minutes, so everything runs from one command that was rehearsed on the
CPU (`--smoke`, a test). Nothing is needed on that machine but torch and transformers (and TRL's wheels for
part trl); each part runs in a process of its own under its own time limit, so one part that fails or runs
long never loses another's results.

    PYTHONPATH=. python benchmarks/gpu_run.py --out runs/gpu        # on a CUDA machine: at most ~9 minutes
    python benchmarks/gpu_run.py --out runs/gpu-smoke --smoke       # every part at toy sizes on the CPU (< 1 min)
    python benchmarks/gpu_run.py --estimate                         # the preset's time, predicted (README)

Parts, in order (PARTS):
    peak     the GPU's bf16 matmul rate (8192^3, the ceiling MFU is read against, beside the datasheet's)
    preset   `--preset gpu` end to end: SFT, held-out accuracy, GRPO, held-out accuracy on the test split
             and on 5,000 further problems that no split holds (datasets.extra_problems)
    long     `--preset long` end to end (worked multiplication, answers of 13-152 tokens; lesson 11), and
             its final model on 5,000 further problems
    trl      minigrpo against TRL's GRPOTrainer from the preset's SFT start, same settings, bf16
             (grpo_speed.py's workers): completions/s, the sampler's tokens/s, the learning step's MFU;
             minigrpo with its training forward compiled too
    qwen     a Qwen2.5-0.5B-shaped model (random weights, a BPE tokenizer trained on the spot): GRPO steps
             at 256 rows x 256 completion tokens in bf16 micro-batches: tokens/s, peak memory, MFU

Each part writes OUT/<part>/result.json and OUT/<part>.log; the command writes OUT/results.json (the
device, the versions, the date, every part's figures and seconds) and prints one table.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from grpo_speed import cpu_name  # noqa: E402

# part -> (seconds allowed on the GPU, seconds allowed in --smoke); the GPU limits add up to 8.8 minutes. The long
# preset, not yet run on a GPU, is guessed at about a minute there (1,000 SFT steps of a 1M model; 100 GRPO steps
# of 160 decoding steps each, launch-bound); the preset's 180 s estimate keeps 50 s of margin.
LIMITS = {"peak": (15, 30), "preset": (230, 60), "long": (85, 30), "trl": (130, 120), "qwen": (70, 60)}
PARTS = tuple(LIMITS)
BF16_PEAK_DATASHEET = {"H100": 989e12, "H200": 989e12}   # dense bf16 FLOP/s, NVIDIA's H100/H200 SXM datasheets
EXTRA_PROBLEMS = 5000


# --------------------------------------------------------------------------------------------------------------
# the parts (each runs in its own process: `--part NAME`)
# --------------------------------------------------------------------------------------------------------------

def part_peak(a) -> dict:
    """The bf16 rate of one large matrix product, the mean of 10 after 3 warm-ups (KINDS.md measured ~790 TFLOP/s)."""
    import torch
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    n = 8192
    x, y = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        x @ y
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        x @ y
    torch.cuda.synchronize()
    rate = 10 * 2 * n ** 3 / (time.perf_counter() - t0)
    name = torch.cuda.get_device_name()
    sheet = next((v for k, v in BF16_PEAK_DATASHEET.items() if k in name), None)
    return {"device": name, "bf16_mm_flop_s": rate, "bf16_datasheet_flop_s": sheet}


LONG_PRESET = "long"   # the long-answer preset (lesson 11)


def preset_config(a, name: str = "gpu"):
    """Preset `name` writing to OUT/<part>, or (--smoke) the same task and pipeline at toy sizes for the CPU."""
    from minigrpo.config import make_config
    out = os.path.join(a.out, "preset" if name == "gpu" else "long")
    if a.smoke:
        return make_config(name, out_dir=out, device="cpu", hidden_size=32, num_layers=2, num_heads=2,
                           intermediate_size=64, sft_steps=20, sft_batch_size=32, steps=4, prompts_per_step=8,
                           group_size=4, eval_every=2, eval_size=32, save_every=0)
    return make_config(name, out_dir=out)


def train_preset(a, name: str) -> dict:
    """`python -m minigrpo train --preset NAME`, then the final checkpoint on further problems no split holds."""
    import torch
    from minigrpo.checkpoint import load_model
    from minigrpo.course.datasets import DATASETS, extra_problems
    from minigrpo.evaluate import evaluate
    from minigrpo.model import precision
    from minigrpo.pipeline import prepare_model, run_train
    from minigrpo.tasks import is_correct
    cfg = preset_config(a, name)
    results = run_train(cfg, progress=True)
    out = {"accuracy_sft": results["sft"]["accuracy"], "accuracy_grpo": results["grpo"]["accuracy"],
           "test_n": results["grpo"]["n"], "seconds_sft": results["seconds_sft"],
           "seconds_grpo": results["seconds_grpo"], "seconds_total": results["seconds_total"],
           "parameters": results["parameters"], "device_name": results["device_name"],
           "grpo_steps": results["grpo_steps"], "estimate": estimate_of(cfg)}
    if cfg.task not in DATASETS:
        return out
    t0 = time.perf_counter()
    device = torch.device(results["device"])
    model, tok = load_model(os.path.join(cfg.out_dir, "checkpoint"), device)
    model = prepare_model(model, device)
    extra = extra_problems(cfg.task, 200 if a.smoke else EXTRA_PROBLEMS)
    with precision(device, cfg.dtype):
        ev = evaluate(model, tok, extra, max_new_tokens=cfg.max_new_tokens, device=device,
                      batch_size=cfg.eval_batch_size, return_completions=True)
    by_kind = {}
    for r, c in zip(extra, ev["completions"]):
        by_kind.setdefault(r.get("op", r["task"]), []).append(is_correct(r, c))
    return out | {"accuracy_extra": ev["accuracy"], "extra_n": ev["n"],
                  "accuracy_extra_by_op": {k: sum(v) / len(v) for k, v in by_kind.items()},
                  "seconds_extra_eval": time.perf_counter() - t0}


def part_preset(a) -> dict:
    return train_preset(a, "gpu")


def part_long(a) -> dict:
    return train_preset(a, LONG_PRESET)


def part_trl(a) -> dict:
    """minigrpo and TRL from the preset's SFT start, by grpo_speed.py's workers, one process each."""
    import grpo_speed
    start = os.path.join(a.out, "preset", "sft")
    if os.path.isdir(start):
        cfg = preset_config(a)
        task, prompts, group, max_new, lr = "arithmetic_hard", cfg.prompts_per_step, cfg.group_size, \
            cfg.max_new_tokens, cfg.lr
    else:   # the preset failed before its SFT start was saved: the CPU preset's committed start
        start, task, prompts, group, max_new, lr = grpo_speed.START, "arithmetic", 256, 8, 6, 1e-4
    if a.smoke:
        prompts, group = 8, 4
    device = "cuda" if not a.smoke else "cpu"
    speed = argparse.Namespace(steps=4 if a.smoke else 10, prompts=prompts, group=group, max_new=max_new, lr=lr,
                               warmup=1, threads=os.cpu_count() if device == "cuda" else 2, task=task,
                               device=device, start=start, worker_timeout=None, variant_set="gpu")
    try:
        import trl  # noqa: F401
        has_trl = True
    except Exception as e:   # not installed, or it fails with this transformers
        has_trl, why = False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    result = {"start": os.path.relpath(start, a.out) if start.startswith(a.out) else start, "task": task,
              "settings": {k: getattr(speed, k) for k in ("steps", "prompts", "group", "max_new", "lr", "warmup")},
              "mm_flop_s_at_model_shapes": _model_mm_rate(_shape_of(start), device),
              "variants": grpo_speed.variants(speed), "runs": [], "failed": {}}
    runs = [("minigrpo", "default"), ("trl", "default"), ("trl", "fast"), ("minigrpo", "bf16"), ("minigrpo", "compile")]
    rows, failed = [], {}
    deadline = time.perf_counter() + LIMITS["trl"][a.smoke] - 10
    for name, variant in runs:
        if name == "trl" and not has_trl:
            failed[f"{name} {variant}"] = f"TRL cannot be imported ({why})"
            continue
        if a.smoke and variant == "compile":
            failed[f"{name} {variant}"] = "not in --smoke (compiling takes minutes on the CPU)"
            continue
        left = deadline - time.perf_counter()
        if left < 15:
            failed[f"{name} {variant}"] = "no time left in the part"
            continue
        speed.worker_timeout = left
        try:
            rows.append(grpo_speed.worker(name, variant, 0, speed))
            r = rows[-1]
            print(f"{name} {variant}: {r['step_s']:.3f} s/step, {r['completions_per_s']:.0f} completions/s, "
                  f"accuracy {r['accuracy']}", flush=True)
        except SystemExit as e:
            failed[f"{name} {variant}"] = str(e)[-1500:]
        except subprocess.TimeoutExpired:
            failed[f"{name} {variant}"] = f"ran past {left:.0f} s"
        result["runs"], result["failed"] = rows, failed
        write_result(a, "trl", result)   # after each run: a part stopped at its limit keeps the runs it finished
    return result


def qwen_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts` here, with Qwen's special tokens (EOS <|im_end|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                        special_tokens=["<|endoftext|>", "<|im_end|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")


# Qwen2.5-0.5B's config.json: the shape that costs the time and the memory (the vocabulary included)
QWEN_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1000000.0)
QWEN_SMOKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=4096, tie_word_embeddings=True)


def parity_reward(prompt: str, completion: str, **_) -> float:
    """1 or 0 by a checksum of the completion: a reward that varies within a group, so every row is trained (a
    random model answers nothing right); the speed does not depend on what the reward means."""
    return float(zlib.crc32(completion.encode()) & 1)


def part_qwen(a) -> dict:
    """GRPO steps of the engine (trainer.grpo_step) on a Qwen2.5-0.5B-shaped model with random weights."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from flops import Shape, step_flops
    from minigrpo.config import make_config
    from minigrpo.data import load_split
    from minigrpo.optim import make_optimizer
    from minigrpo.pipeline import prepare_model, prepare_tokenizer, seed_everything
    from minigrpo.tokenizer import encode
    from minigrpo.trainer import grpo_step
    device = torch.device("cuda" if not a.smoke else "cpu")
    prompts, group, new, micro = (16, 16, 256, 64) if not a.smoke else (4, 4, 16, 8)
    cfg = make_config("gpu", device=device.type, prompts_per_step=prompts, group_size=group, max_new_tokens=new,
                      max_seq_len=new + 64, micro_batch_size=micro, dtype="bfloat16", lr=1e-6, warmup_steps=1,
                      out_dir=os.path.join(a.out, "qwen"))
    seed_everything(cfg.seed)
    data = load_split("arithmetic_hard", "train", os.path.join(ROOT, "data"))
    t0 = time.perf_counter()
    tok = prepare_tokenizer(qwen_tokenizer([r["prompt"] + r["answer"] for r in data], 2048))
    shape = QWEN_05B if not a.smoke else QWEN_SMOKE
    config = Qwen2Config(**shape, max_position_embeddings=cfg.max_seq_len, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    with torch.device(device):   # initialised where it runs: 0.5B random weights take seconds on a GPU
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model = prepare_model(model.to(device), device)
    built_s = time.perf_counter() - t0
    opt = make_optimizer(model.parameters(), cfg.lr, cfg.adam_beta1, cfg.adam_beta2, cfg.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    batches = [data[i * prompts:(i + 1) * prompts] for i in range(4)]
    rows = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i, batch in enumerate(batches):   # the first step warms up (allocator, kernels' autotuning)
        rows.append(grpo_step(model, None, tok, opt, batch, parity_reward, cfg, gen))
        r = rows[-1]
        print(f"step {i}: sample {r['sample_s']:.2f} s, learn {r['learn_s']:.2f} s, "
              f"{r['completion_len']:.0f} tokens per completion", flush=True)
    timed = rows[1:]
    P = statistics.mean(len(encode(tok, r["prompt"])) for b in batches for r in b)
    L = statistics.mean(r["completion_len"] for r in timed)
    kept = statistics.mean(prompts * (1 - r["zero_var_frac"]) for r in timed)
    work = step_flops(Shape.of(config), prompts, group, P, L, kept)
    sample_s = statistics.median(r["sample_s"] for r in timed)
    learn_s = statistics.median(r["learn_s"] for r in timed)
    return {"parameters": sum(p.numel() for p in model.parameters()), "config": shape,
            "rows": prompts * group, "prompts": prompts, "group": group, "max_new_tokens": new,
            "micro_batch_size": micro, "dtype": cfg.dtype, "prompt_len": P, "completion_len": L,
            "kept_groups": kept, "build_s": built_s, "sample_s": sample_s, "learn_s": learn_s,
            "sampler_tokens_per_s": prompts * group * L / sample_s,
            "step_tokens_per_s": prompts * group * L / (sample_s + learn_s),
            "learn_flop": work["learn"], "learn_flop_s": work["learn"] / learn_s,
            "sample_flop_s": (work["prefill"] + work["decode"]) / sample_s,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
            "steps": [{k: r[k] for k in ("sample_s", "learn_s", "completion_len", "zero_var_frac")} for r in rows]}


def _shape_of(start: str):
    from transformers import AutoConfig
    from flops import Shape
    return Shape.of(AutoConfig.from_pretrained(start))


def _model_mm_rate(shape, device: str) -> float:
    """torch.mm's bf16 rate at the model's own shapes on `device` (flops.machine_rate)."""
    import torch
    from flops import machine_rate
    return machine_rate(shape, torch.bfloat16, device=device)


# --------------------------------------------------------------------------------------------------------------
# the estimate of the preset's time, written down before the run (README)
# --------------------------------------------------------------------------------------------------------------

# Assumptions of the time model, stated so that the GPU run can test them (the first, 2026-12-04: SFT as predicted,
# GRPO 1.5x, before the per-completion Python below was counted):
LAUNCH_S = 10e-6        # host seconds per eager op (dispatch + launch; HF's Python between them) on a server CPU
MATMUL_SHARE = 0.5      # the share of the measured bf16 matmul rate that these small (d = 384) products reach
SYNC_S = 20e-6          # extra seconds per host-device synchronisation (a .item(), .tolist(), nonzero, unique)


def estimate_of(cfg) -> dict:
    """The preset's predicted seconds from its FLOPs and its ops, read from benchmarks/gpu_estimate.json (made
    here by --estimate) when it matches cfg's sizes."""
    path = os.path.join(ROOT, "benchmarks", "gpu_estimate.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        est = json.load(f)
    sizes = {k: getattr(cfg, k) for k in est.get("sizes", {})}
    return est if sizes == est.get("sizes") else {}


def count_ops(fn) -> tuple[int, int]:
    """(ops, host syncs) that `fn()` runs, counted under torch.profiler on the CPU: each aten op with no aten op
    inside it stands for one kernel launch on a GPU; syncs are the ops that read a device value on the host."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.events()
    parents = {id(e.cpu_parent) for e in events if e.cpu_parent is not None}
    leaves = [e for e in events if e.name.startswith("aten::") and id(e) not in parents]
    syncs = [e for e in events if e.name in ("aten::item", "aten::_local_scalar_dense", "aten::nonzero",
                                             "aten::unique_dim", "aten::_unique2", "aten::unique_consecutive")]
    return len(leaves), len(syncs)


def per_completion_s(tok, records: list[dict], group: int) -> float:
    """Host seconds per completion of what a GRPO step does in Python for each one, timed here: decoding it,
    rewarding it and checking it (trainer.rollout). Random digit strings of up to 8 tokens stand in for samples."""
    import torch
    from minigrpo.reward import parse_reward, score
    from minigrpo.tasks import is_correct
    from minigrpo.tokenizer import decode_batch, stop_ids
    rows = [r for r in records for _ in range(group)]
    digits = torch.tensor(tok.convert_tokens_to_ids(list("0123456789-")))
    ids = digits[torch.randint(len(digits), (len(rows), 8), generator=torch.Generator().manual_seed(0))]
    reward, t0 = parse_reward("correct"), time.perf_counter()
    texts = decode_batch(tok, ids, stop_ids(tok))
    score(reward, [r["prompt"] for r in rows], texts, rows)
    [is_correct(r, c) for r, c in zip(rows, texts)]
    return (time.perf_counter() - t0) / len(rows)


def estimate(a) -> dict:
    """Count the GPU preset's ops per SFT step, GRPO step and evaluation on the CPU (small batches: the op count
    does not depend on the batch), take the FLOPs from flops.py at the preset's sizes, and add up."""
    import torch
    from flops import Shape, step_flops
    from minigrpo.config import make_config
    from minigrpo.data import load_split, prompt_batch
    from minigrpo.evaluate import evaluate
    from minigrpo.model import build_model
    from minigrpo.optim import make_optimizer
    from minigrpo.pipeline import prepare_model, seed_everything
    from minigrpo.reward import parse_reward
    from minigrpo.sft import train_sft
    from minigrpo.tokenizer import build_tokenizer, encode
    from minigrpo.trainer import grpo_step
    torch.set_num_threads(2)
    cfg = make_config("gpu", out_dir="/tmp/gpu-estimate")
    seed_everything(0)
    tok = build_tokenizer()
    model = prepare_model(build_model(cfg, tok), torch.device("cpu"))
    data = {s: load_split(cfg.task, s, os.path.join(ROOT, "data")) for s in ("sft", "train", "test")}
    small = dataclasses.replace(cfg, sft_steps=3, sft_batch_size=32, prompts_per_step=8)
    sft_ops = count_ops(lambda: train_sft(model, tok, data["sft"][:96], small, device=torch.device("cpu"),
                                          progress=False))
    opt = make_optimizer(model.parameters(), cfg.lr, cfg.adam_beta1, cfg.adam_beta2, cfg.weight_decay)
    gen = torch.Generator().manual_seed(0)
    step = lambda i: grpo_step(model, None, tok, opt, prompt_batch(data["train"], i, 8, 0), parse_reward("correct"),
                               small, gen)
    step(0)
    grpo_ops = count_ops(lambda: step(1))
    eval_ops = count_ops(lambda: evaluate(model, tok, data["test"][:64], max_new_tokens=cfg.max_new_tokens,
                                          batch_size=64))
    row_s = per_completion_s(tok, data["train"][:cfg.prompts_per_step], cfg.group_size)
    shape = Shape.of(model.config)
    P = statistics.mean(len(encode(tok, r["prompt"])) for r in data["train"][:2000])
    L = statistics.mean(len(encode(tok, r["solution"], bos=False, eos=True)) for r in data["sft"])
    sft_tokens = cfg.sft_batch_size * (P + L)
    sft_flop = 3 * sft_tokens * (shape.linear() + shape.head() + shape.attention((P + L) / 2))
    grpo_flop = step_flops(shape, cfg.prompts_per_step, cfg.group_size, P, L, cfg.prompts_per_step / 2)["total"]
    evals = cfg.steps // cfg.eval_every + 2          # the SFT start, every eval_every steps, the final one
    eval_batches = evals * -(-cfg.eval_size // cfg.eval_batch_size) + -(-EXTRA_PROBLEMS // cfg.eval_batch_size) * 2
    rate = 790e12 * MATMUL_SHARE                     # KINDS.md's measured bf16 rate on an H200, at the share above
    per = lambda ops, flop: ops[0] * LAUNCH_S + ops[1] * SYNC_S + flop / rate
    sft_s = cfg.sft_steps * per((sft_ops[0] / 3, sft_ops[1] / 3), sft_flop)
    grpo_s = cfg.steps * (per(grpo_ops, grpo_flop) + cfg.prompts_per_step * cfg.group_size * row_s)
    eval_s = eval_batches * per(eval_ops, 0.0)
    return {"sizes": {k: getattr(cfg, k) for k in ("hidden_size", "num_layers", "sft_steps", "sft_batch_size",
                                                    "steps", "prompts_per_step", "group_size", "max_new_tokens")},
            "assumptions": {"launch_s": LAUNCH_S, "sync_s": SYNC_S, "matmul_rate": rate},
            "ops_per_sft_step": sft_ops[0] / 3, "syncs_per_sft_step": sft_ops[1] / 3,
            "ops_per_grpo_step": grpo_ops[0], "syncs_per_grpo_step": grpo_ops[1],
            "ops_per_eval_batch": eval_ops[0], "syncs_per_eval_batch": eval_ops[1], "python_s_per_completion": row_s,
            "flop_per_sft_step": sft_flop, "flop_per_grpo_step": grpo_flop, "eval_batches": eval_batches,
            "sft_s": sft_s, "grpo_s": grpo_s, "eval_s": eval_s, "total_s": sft_s + grpo_s + eval_s,
            "counted_on": cpu_name(), "torch": torch.__version__}


# --------------------------------------------------------------------------------------------------------------
# the command: every part in a process of its own, then one table
# --------------------------------------------------------------------------------------------------------------

def write_result(a, part: str, result: dict) -> None:
    """OUT/<part>/result.json, atomically (a part stopped at its limit leaves the last whole one)."""
    from minigrpo.files import atomic_write
    atomic_write(os.path.join(a.out, part, "result.json"), lambda f: json.dump(result, f, indent=2))


def run_part(name: str, a) -> dict:
    """Run part `name` in a child process under its time limit; its result, or why it has none."""
    limit = LIMITS[name][a.smoke]
    folder = os.path.join(a.out, name)
    os.makedirs(folder, exist_ok=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--part", name, "--out", a.out] + (["--smoke"] if a.smoke else [])
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    with open(os.path.join(a.out, f"{name}.log"), "w", encoding="utf-8") as log:
        child = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = child.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)   # the part and any worker it started
            child.wait()
            code = None
    seconds = time.perf_counter() - t0
    path = os.path.join(folder, "result.json")
    saved = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    if code == 0 and saved:
        return {"status": "ok", "seconds": seconds, **saved}
    with open(os.path.join(a.out, f"{name}.log"), encoding="utf-8", errors="replace") as f:
        tail = f.read()[-1500:]
    why = f"ran past its limit of {limit} s" if code is None else f"exit {code}"
    return {"status": "partial" if saved else "failed", "seconds": seconds, "why": why, "log_tail": tail, **saved}


def versions() -> dict:
    import torch
    import transformers
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "transformers": transformers.__version__}
    try:
        import trl
        out["trl"] = trl.__version__
    except Exception:
        out["trl"] = None
    return out


def device_name() -> str:
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_name()


def add_mfu(parts: dict) -> None:
    """The learning step's model-FLOPs utilisation (its useful FLOP/s) against the measured bf16 matmul rate of part
    peak and the datasheet's peak, wherever both are known."""
    peak = parts.get("peak", {})
    if "bf16_mm_flop_s" not in peak:
        return
    def mfu(flop_s: float | None) -> dict:
        return {} if not flop_s else {"learn_mfu_measured": flop_s / peak["bf16_mm_flop_s"],
                                      "learn_mfu_datasheet": flop_s / (peak["bf16_datasheet_flop_s"] or float("nan"))}
    if "learn_flop_s" in parts.get("qwen", {}):
        parts["qwen"].update(mfu(parts["qwen"]["learn_flop_s"]))
    for run in parts.get("trl", {}).get("runs", []):
        run.update(mfu((run.get("learn_gflop_s") or 0) * 1e9))


def table(parts: dict) -> str:
    """The one short table printed at the end."""
    lines = [f"{'part':8}{'status':9}{'s':>6}  result"]
    for name, r in parts.items():
        lines.append(f"{name:8}{r['status']:9}{r['seconds']:6.0f}  {_summary(name, r)}")
    return "\n".join(lines)


def _summary(name: str, r: dict) -> str:
    if r["status"] == "failed":
        return r["why"]
    if "skipped" in r:
        return r["skipped"]
    pct = lambda x: f"{100 * x:.1f}%"
    if name == "peak":
        return f"{r['device']}: bf16 mm {r['bf16_mm_flop_s'] / 1e12:.0f} TFLOP/s"
    if name in ("preset", "long"):
        est = r.get("estimate", {}).get("total_s")
        extra = f", {pct(r['accuracy_extra'])} on {r['extra_n']} more" if "extra_n" in r else ""
        return (f"held-out {pct(r['accuracy_sft'])} -> {pct(r['accuracy_grpo'])} (test, n={r['test_n']}){extra}; "
                f"SFT {r['seconds_sft']:.0f} s + GRPO {r['seconds_grpo']:.0f} s"
                + (f" (estimated {est:.0f} s)" if est else ""))
    if name == "trl":
        runs = ", ".join(f"{x['trainer']} {x['variant']} {x['completions_per_s']:.0f}/s" for x in r["runs"])
        return (f"completions per second: {runs}" + (f"; failed: {', '.join(r['failed'])}" if r["failed"] else "")
                + (f"; then {r['why']}" if r["status"] == "partial" else ""))
    if name == "qwen":
        mem = f", peak {r['peak_gpu_mb'] / 1024:.1f} GiB" if r["peak_gpu_mb"] else ""
        mfu = (f" (MFU {100 * r['learn_mfu_measured']:.0f}% of the measured mm rate)"
               if "learn_mfu_measured" in r else "")
        return (f"{r['parameters'] / 1e6:.0f}M params, {r['rows']} rows x {r['completion_len']:.0f} tokens: sampler "
                f"{r['sampler_tokens_per_s']:.0f} tok/s, learn {r['learn_flop_s'] / 1e12:.0f} TFLOP/s{mfu}{mem}")
    return ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "gpu"), help="folder for everything the run writes")
    p.add_argument("--smoke", action="store_true", help="every part at toy sizes, on the CPU (the CI rehearsal)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--estimate", action="store_true",
                   help="predict the preset's time; write benchmarks/gpu_estimate.json")
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.estimate:
        est = estimate(a)
        with open(os.path.join(ROOT, "benchmarks", "gpu_estimate.json"), "w", encoding="utf-8") as f:
            json.dump(est, f, indent=2)
        print(json.dumps(est, indent=2))
        return
    if a.part:   # a child: one part, its result to OUT/<part>/result.json
        write_result(a, a.part, globals()[f"part_{a.part}"](a))
        return
    names = [n.strip() for n in a.parts.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        p.error(f"unknown part {unknown[0]!r}; choose from {', '.join(PARTS)}")
    if os.path.isdir(a.out):
        shutil.rmtree(a.out)
    os.makedirs(a.out)
    t0 = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    parts = {}
    for name in names:
        parts[name] = run_part(name, a)
        print(f"{name}: {parts[name]['status']} in {parts[name]['seconds']:.0f} s", flush=True)
    add_mfu(parts)
    results = {"device": device_name(), "host_cpu": cpu_name(), "versions": versions(), "started": started,
               "smoke": a.smoke,
               "seconds": time.perf_counter() - t0, "limits_s": {n: LIMITS[n][a.smoke] for n in names},
               "parts": parts}
    with open(os.path.join(a.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(f"\n{results['device']}; torch {results['versions']['torch']}, transformers "
          f"{results['versions']['transformers']}; {results['seconds']:.0f} s in all")
    print(table(parts))
    print(f"written: {os.path.join(a.out, 'results.json')}")


if __name__ == "__main__":
    main()
