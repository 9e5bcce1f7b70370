"""The whole job: data -> SFT warm start -> held-out accuracy -> GRPO -> held-out accuracy.

This is what `python -m minigrpo train` (and `make train`) runs:

    1. read the task's splits (data/<task>/{sft,train,test}.jsonl)
    2. build a fresh tiny model, or start from a checkpoint (`init`)
    3. SFT warm start on the demonstrations of sft.jsonl (skipped with sft_steps=0)
    4. evaluate the SFT start on the held-out test set, save it to out_dir/sft
    5. GRPO on the (unlabelled) prompts of train.jsonl, scored by the reward alone
    6. evaluate again and print the before/after table; results.json in out_dir

The SFT start and the GRPO stage see different problems: SFT sees the
demonstrations of sft.jsonl, GRPO only the prompts of train.jsonl and the
reward; test.jsonl shares no problem with either (data.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import time

import numpy as np
import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config
from .data import dataset_path, read_jsonl
from .evaluate import evaluate
from .model import build_model, num_parameters, pick_device
from .sft import demonstration, train_sft
from .tokenizer import build_tokenizer, check_text
from .trainer import train_grpo


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_model(model, device: torch.device):
    """Move to `device`; eager attention on the CPU (faster than SDPA at these sizes)."""
    model.set_attn_implementation("eager" if device.type == "cpu" else "sdpa")
    return model.to(device).eval()


def record_check(tok, max_new_tokens: int, max_seq_len: int, demonstrations: bool = False):
    """A check for read_jsonl: every character has a token, and the record fits the model.

    A prompt needs 1 + len(prompt) positions (BOS first) plus max_new_tokens for
    its completion; a demonstration needs its whole solution and EOS.
    """
    def check(record: dict) -> None:
        check_text(tok, record["prompt"])
        need = 1 + len(record["prompt"]) + max_new_tokens
        what = f"a prompt of {len(record['prompt'])} characters with max_new_tokens={max_new_tokens}"
        if demonstrations:
            check_text(tok, demonstration(record))
            need = 1 + len(record["prompt"]) + len(demonstration(record)) + 1
            what = "this demonstration (BOS, prompt, solution, EOS)"
        if need > max_seq_len:
            raise ValueError(f"{what} needs {need} positions but max_seq_len={max_seq_len}; "
                             f"raise --max_seq_len to at least {need}")
    return check


def load_split(cfg: Config, split: str, tok) -> list[dict]:
    """data/<task>/<split>.jsonl, each record checked against the tokenizer and cfg.max_seq_len."""
    check = record_check(tok, cfg.max_new_tokens, cfg.max_seq_len, demonstrations=split == "sft")
    return read_jsonl(dataset_path(cfg.task, split, cfg.data_dir), check=check)


def run_sft(cfg: Config, *, init: str | None = None, progress: bool = True):
    """Steps 1-4: returns (model, tok, sft_eval) with the SFT start saved to out_dir/sft."""
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    if init:
        model, tok, _ = load_checkpoint(init, device)
    else:
        tok = build_tokenizer()
        model = build_model(cfg, tok)
    sft_records = load_split(cfg, "sft", tok) if cfg.sft_steps else []
    if cfg.sft_examples:
        sft_records = sft_records[:cfg.sft_examples]
    test = load_split(cfg, "test", tok)
    model = prepare_model(model, device)
    if cfg.sft_steps:
        train_sft(model, tok, sft_records, steps=cfg.sft_steps, batch_size=cfg.sft_batch_size,
                  lr=cfg.sft_lr, seed=cfg.seed, device=device, progress=progress)
    save_checkpoint(os.path.join(cfg.out_dir, "sft"), model, tok, cfg=cfg, step=0)
    before = evaluate(model, tok, test, max_new_tokens=cfg.max_new_tokens, device=device)
    return model, tok, before


def run_train(cfg: Config, *, init: str | None = None, resume: str | None = None,
              progress: bool = True) -> dict:
    """The whole job (steps 1-6); returns and writes out_dir/results.json."""
    t_start = time.perf_counter()
    device = pick_device(cfg.device)
    if resume:  # continue a GRPO run: the SFT start's accuracy was recorded by the first run
        model, tok, state = load_checkpoint(resume, device)
        model = prepare_model(model, device)
        old = _read_results(cfg.out_dir)
        before = old.get("sft", {})
        t_sft = old.get("seconds_sft", 0.0)
    else:
        model, tok, before = run_sft(cfg, init=init, progress=progress)
        t_sft = time.perf_counter() - t_start
        _write_results(cfg, {"sft": before, "seconds_sft": t_sft})
    t_grpo = time.perf_counter()
    test = load_split(cfg, "test", tok)
    rows = train_grpo(model, tok, cfg, load_split(cfg, "train", tok), test, resume=resume, progress=progress)
    after = evaluate(model, tok, test, max_new_tokens=cfg.max_new_tokens, device=device)
    results = {
        "task": cfg.task, "preset": cfg.preset, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(), "parameters": num_parameters(model),
        "sft": before, "grpo": after,
        "seconds_sft": t_sft, "seconds_grpo": time.perf_counter() - t_grpo,
        "seconds_total": t_sft + time.perf_counter() - t_grpo,
        "grpo_steps": len(rows), "config": dataclasses.asdict(cfg),
    }
    _write_results(cfg, results)
    return results


def _read_results(out_dir: str) -> dict:
    path = os.path.join(out_dir, "results.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def _write_results(cfg: Config, results: dict) -> None:
    os.makedirs(cfg.out_dir, exist_ok=True)
    path = os.path.join(cfg.out_dir, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(path + ".tmp", path)


def format_table(results: dict) -> str:
    """The before/after table that `train` prints."""
    lines = [f"held-out {results['task']} ({results['sft'].get('n', '?')} problems, greedy)",
             f"{'':16}{'accuracy':>10}"]
    for name in ("sft", "grpo"):
        r = results[name]
        acc = f"{100 * r['accuracy']:.1f}%" if "accuracy" in r else "?"
        extra = f"   complete style {100 * r['complete_share']:.0f}% of correct" if "complete_share" in r else ""
        after = f"after {results.get('config', {}).get('algo', 'grpo').upper()}"
        lines.append(f"{'SFT start' if name == 'sft' else after:16}{acc:>10}{extra}")
    lines.append(f"time: SFT {results['seconds_sft']:.0f}s + GRPO {results['seconds_grpo']:.0f}s "
                 f"on {results['device_name']} ({results['parameters'] / 1e6:.2f}M parameters)")
    return "\n".join(lines)
