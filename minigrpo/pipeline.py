"""The whole job that `python -m minigrpo train` runs: data -> SFT -> held-out accuracy -> GRPO -> accuracy.

SFT sees the demonstrations of sft.jsonl, GRPO only the prompts of train.jsonl and the reward, and
test.jsonl shares no problem with either. The SFT start is saved to out_dir/sft, its loss at each step to
out_dir/sft_losses.json, the results to out_dir/results.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import time

import numpy as np
import torch

from .checkpoint import CheckpointError, load_model, save_checkpoint
from .data import load_split, read_records
from .distributed import device_of, start as start_ranks
from .evaluate import evaluate
from .files import atomic_write
from .model import build_model, num_parameters, pick_device
from .sft import train_sft
from .tokenizer import build_tokenizer
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


FILES = {"sft": "sft_file", "train": "train_file", "test": "test_file"}


def split(cfg, name: str, tok) -> list[dict]:
    """The run's split `name` (sft, train or test), every record checked against `tok` and cfg's lengths.

    With cfg's train_file / test_file / sft_file, that file; a record without a "task" is free text
    (task "text", or "text_last_number" with answer_parser="last_number").
    """
    path = getattr(cfg, FILES[name])
    if not path:
        return load_split(cfg.task, name, cfg.data_dir, tok, cfg.max_new_tokens, cfg.max_seq_len)
    task = "text" if cfg.answer_parser == "strict" else "text_last_number"
    records = read_records(path, tok, cfg.max_new_tokens, cfg.max_seq_len, demonstrations=name == "sft",
                           chat=cfg.chat_template, missing_hint=f"check --{FILES[name]}")
    return [{"task": task, **r} for r in records]   # a record's own task (the course's JSONL) is kept


def check_model(cfg, model, tok, device: torch.device) -> None:
    """One-line errors, before any training, for a model and tokenizer the run cannot use as configured."""
    where = cfg.model or "the model"
    if tok.eos_token_id is None:
        raise ValueError(f"the tokenizer of {where} has no EOS token, so no completion could end; set one "
                         f"(tok.eos_token = ...; tok.save_pretrained(...))")
    if cfg.chat_template and not getattr(tok, "chat_template", None):
        raise ValueError(f"chat_template=True but the tokenizer of {where} has no chat template; use "
                         f"--chat_template false, or a tokenizer saved with one")
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and cfg.max_seq_len > positions:
        raise ValueError(f"max_seq_len={cfg.max_seq_len} exceeds the {positions} positions of {where}")
    for name in ("dtype", "sample_dtype"):
        value = getattr(cfg, name)
        if value == "float16" and device.type != "cuda":
            raise ValueError(f"{name}=float16 needs a CUDA device (device is {device}); use --{name} bfloat16")
        if value == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"{name}=bfloat16 is not supported by {torch.cuda.get_device_name(device)}; "
                             f"use --{name} float16")


def prepare_tokenizer(tok):
    """The tokenizer set up for the engine: left padding, and a PAD token (EOS when it has none, as TRL does)."""
    tok.padding_side = "left"
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_pretrained(path: str, device: torch.device):
    """(model, tok) of a local transformers folder (--model), the weights in float32."""
    if not os.path.isdir(path):
        raise ValueError(f"model folder {path} does not exist (--model takes a local transformers folder)")
    if not os.path.exists(os.path.join(path, "tokenizer.json")):
        raise ValueError(f"model folder {path} has no tokenizer (tokenizer.json); save one into it with "
                         f"tokenizer.save_pretrained({path!r})")
    try:
        model, tok = load_model(path, device)
    except CheckpointError as e:
        raise ValueError(str(e).replace("is not a minigrpo checkpoint", "is not a transformers model folder")) from e
    return model.float(), prepare_tokenizer(tok)


def run_sft(cfg, *, init: str | None = None, progress: bool = True):
    """Steps 1-4: returns (model, tok, sft_eval) with the SFT start saved to out_dir/sft.

    Under torchrun every rank runs the same SFT (the same seed, the same weights); rank 0 alone saves
    and evaluates it (the other ranks return {} for sft_eval).
    """
    seed_everything(cfg.seed)
    device = pick_device(device_of(cfg.device))
    r = start_ranks(cfg, device)
    if init:
        model, tok = load_model(init, device)
        tok = prepare_tokenizer(tok)
    elif cfg.model:
        model, tok = load_pretrained(cfg.model, device)
    else:
        tok = build_tokenizer()
        model = build_model(cfg, tok)
    check_model(cfg, model, tok, device)
    sft_records = split(cfg, "sft", tok) if cfg.sft_steps else []
    if cfg.sft_examples:
        sft_records = sft_records[:cfg.sft_examples]
    test = split(cfg, "test", tok)
    model = prepare_model(model, device)
    losses = []
    if cfg.sft_steps:
        losses = train_sft(model, tok, sft_records, cfg, device=device, progress=progress and r.main)
    if r.main and losses:   # the SFT curve: a memorised set shows here first (loss near 0, held-out accuracy low)
        atomic_write(os.path.join(cfg.out_dir, "sft_losses.json"), lambda f: json.dump(losses, f))
    if not r.main:
        torch.distributed.barrier()                  # wait for rank 0's SFT checkpoint (GRPO's pi_ref may read it)
        return model, tok, {}
    save_checkpoint(os.path.join(cfg.out_dir, "sft"), model, tok, cfg=cfg, step=0)
    before = evaluate(model, tok, test, max_new_tokens=cfg.max_new_tokens, device=device,
                      batch_size=cfg.eval_batch_size, chat=cfg.chat_template)
    if r.active:
        torch.distributed.barrier()
    return model, tok, before


def run_train(cfg, *, init: str | None = None, resume: str | None = None, progress: bool = True) -> dict:
    """The whole job (steps 1-6); returns and writes out_dir/results.json."""
    t_start = time.perf_counter()
    device = pick_device(device_of(cfg.device))
    r = start_ranks(cfg, device)
    results_path = os.path.join(cfg.out_dir, "results.json")
    if resume:  # continue a GRPO run: the SFT start's accuracy was recorded by the first run
        model, tok = load_model(resume, device)
        tok = prepare_tokenizer(tok)
        check_model(cfg, model, tok, device)
        model = prepare_model(model, device)
        old = json.load(open(results_path, encoding="utf-8")) if os.path.exists(results_path) else {}
        before, t_sft = old.get("sft", {}), old.get("seconds_sft", 0.0)
    else:
        model, tok, before = run_sft(cfg, init=init, progress=progress)
        t_sft = time.perf_counter() - t_start
        if r.main:
            atomic_write(results_path, lambda f: json.dump({"sft": before, "seconds_sft": t_sft}, f, indent=2))
    t_grpo = time.perf_counter()
    test = split(cfg, "test", tok)
    rows = train_grpo(model, tok, cfg, split(cfg, "train", tok), test, resume=resume, progress=progress,
                      start=None if resume else os.path.join(cfg.out_dir, "sft"))
    if not r.main:
        return {}
    after = evaluate(model, tok, test, max_new_tokens=cfg.max_new_tokens, device=device,
                     batch_size=cfg.eval_batch_size, chat=cfg.chat_template)
    results = {
        "task": cfg.task, "preset": cfg.preset, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(), "parameters": num_parameters(model), "processes": r.world,
        "sft": before, "grpo": after,
        "seconds_sft": t_sft, "seconds_grpo": time.perf_counter() - t_grpo,
        "seconds_total": t_sft + time.perf_counter() - t_grpo,
        "grpo_steps": len(rows), "config": dataclasses.asdict(cfg),
    }
    atomic_write(results_path, lambda f: json.dump(results, f, indent=2))
    return results


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
