"""Checkpoints: a transformers folder plus the trainer's state, written atomically.

A checkpoint folder is an ordinary Hugging Face model folder
(`config.json`, `model.safetensors`, `tokenizer.json`, ...), so
`AutoModelForCausalLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`
load it and other tools (TRL, pipelines) can use it. Beside those,
`minigrpo_state.pt` holds what resuming needs: the run's Config, the step,
the optimizer and the random number generators' states.

Atomic: everything is written into a temporary sibling folder, which is then
renamed into place (a rename within one file system is atomic), so an
interrupted save leaves the previous checkpoint intact, never half of one.
"""
from __future__ import annotations

import dataclasses
import os
import random
import shutil
import tempfile

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

STATE_FILE = "minigrpo_state.pt"


class CheckpointError(ValueError):
    """A checkpoint folder is missing or unreadable."""


def rng_state() -> dict:
    """The states of every random generator a run uses."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, model, tok, *, cfg=None, step: int = 0, optimizer=None,
                    extra: dict | None = None) -> str:
    """Write model, tokenizer and trainer state to `path` atomically; returns `path`."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every save
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        state = {
            "config": dataclasses.asdict(cfg) if cfg is not None else None,
            "step": step,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "rng": rng_state(),
            "extra": extra or {},
        }
        torch.save(state, os.path.join(tmp, STATE_FILE))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private; a checkpoint is an ordinary folder
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.rmdir(old)
            os.replace(path, old)       # keep the previous one until the new one is in place
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_checkpoint(path: str, device="cpu"):
    """Load (model, tokenizer, state) from a checkpoint folder; clear errors when it is not one."""
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint folder {path!r} does not exist "
                              f"(train one with: python -m minigrpo train)")
    for need in ("config.json", "tokenizer.json"):
        if not os.path.exists(os.path.join(path, need)):
            raise CheckpointError(f"{path!r} is not a minigrpo checkpoint: {need} is missing")
    try:
        hf_logging.disable_progress_bar()  # no "Loading weights" bar: errors and results stay one line
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).to(device)
    except Exception as e:  # corrupt weights, bad json, ...
        raise CheckpointError(f"checkpoint {path!r} could not be loaded: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from e
    state_path = os.path.join(path, STATE_FILE)
    state = {}
    if os.path.exists(state_path):
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointError(f"{state_path!r} is corrupt: {type(e).__name__}") from e
    return model, tok, state


def saved_config(path: str) -> dict | None:
    """The Config (as a dict) a checkpoint was trained with, or None if it has no trainer state."""
    state_path = os.path.join(path, STATE_FILE)
    if not os.path.exists(state_path):
        return None
    try:
        return torch.load(state_path, map_location="cpu", weights_only=False).get("config")
    except Exception as e:
        raise CheckpointError(f"{state_path!r} is corrupt: {type(e).__name__}") from e
