"""Checkpoints: a transformers folder plus the trainer's state, written atomically, loaded without running code.

Beside the Hugging Face files (`AutoModelForCausalLM.from_pretrained(dir)` loads them): run_config.json
(the Config; `--config` takes it), trainer_state.json (step, generators, metric rows, where pi_ref is)
and trainer_state.safetensors (the optimizer's moments, generator states, a critic). Nothing is a
pickle, and weights are read from safetensors only: a shared checkpoint cannot run code.
"""
from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np
import safetensors.torch
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from .config import save_config
from .files import atomic_path, atomic_write

CONFIG_FILE, STATE_FILE, TENSORS_FILE = "run_config.json", "trainer_state.json", "trainer_state.safetensors"
OLD_STATE_FILE = "minigrpo_state.pt"  # written by minigrpo 0.1 as a pickle; never read
REFERENCE_FILE = "reference.safetensors"   # pi_ref's weights, when no start checkpoint holds them


class CheckpointError(ValueError):
    """A checkpoint folder is missing, unreadable or cannot be written."""


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


def _encode(x, tensors: dict, key: str):
    """x as JSON data, its tensors moved to `tensors` under their path (tuples, int keys and arrays tagged)."""
    if isinstance(x, torch.Tensor):
        tensors[key] = x.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(x)]}
    if isinstance(x, list):
        return [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(x)]
    if isinstance(x, dict):
        if all(isinstance(k, str) for k in x):
            return {k: _encode(v, tensors, f"{key}.{k}") for k, v in x.items()}
        return {"__items__": [[k, _encode(v, tensors, f"{key}.{k}")] for k, v in x.items()]}
    if isinstance(x, np.generic):
        return x.item()
    return x


def _decode(x, tensors: dict):
    if isinstance(x, list):
        return [_decode(v, tensors) for v in x]
    if not isinstance(x, dict):
        return x
    if "__tensor__" in x:
        return tensors[x["__tensor__"]]
    if "__ndarray__" in x:
        return np.array(x["__ndarray__"], dtype=x["dtype"])
    if "__tuple__" in x:
        return tuple(_decode(v, tensors) for v in x["__tuple__"])
    if "__items__" in x:
        return {k: _decode(v, tensors) for k, v in x["__items__"]}
    return {k: _decode(v, tensors) for k, v in x.items()}


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: str, model, tok, *, cfg=None, step: int = 0, optimizer=None, extra: dict | None = None,
                    models: dict | None = None) -> str:
    """Write model, tokenizer, config and trainer state to `path` atomically; returns `path`.

    `extra` is more state (tensors, numbers, lists, dicts); `models` maps a file name to a module whose
    weights are written there as safetensors (e.g. the reference model). A write that
    fails (a full disk, no permission) raises a one-line CheckpointError; the previous folder is kept.
    """
    tensors: dict = {}
    state = _encode({"step": step, "optimizer": optimizer.state_dict() if optimizer is not None else None,
                     "rng": rng_state(), "extra": extra or {}}, tensors, "state")
    try:
        with atomic_path(path, folder=True) as tmp:
            hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every save
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            if cfg is not None:
                save_config(cfg, os.path.join(tmp, CONFIG_FILE))
            atomic_write(os.path.join(tmp, STATE_FILE), lambda f: json.dump(state, f))
            safetensors.torch.save_file(tensors, os.path.join(tmp, TENSORS_FILE))
            for name, module in (models or {}).items():
                safetensors.torch.save_model(module, os.path.join(tmp, name))
    except (OSError, RuntimeError, safetensors.SafetensorError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {str(e).splitlines()[0]}"
        raise CheckpointError(f"could not write the checkpoint {path} ({why})") from e
    return os.path.abspath(path)


def _require_folder(path: str) -> None:
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint folder {path!r} does not exist (train one with: python -m minigrpo train)")
    for need in ("config.json", "tokenizer.json"):
        if not os.path.exists(os.path.join(path, need)):
            raise CheckpointError(f"{path!r} is not a minigrpo checkpoint: {need} is missing")


def load_model(path: str, device="cpu"):
    """(model, tokenizer) of a checkpoint folder; weights only from model.safetensors, never remote code."""
    _require_folder(path)
    try:
        hf_logging.disable_progress_bar()  # no "Loading weights" bar: errors and results stay one line
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
    except Exception as e:  # corrupt or missing weights, bad json, ...
        raise CheckpointError(f"checkpoint {path!r} could not be loaded: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return model.to(device), tok


def load_state(path: str) -> dict:
    """The trainer state of a checkpoint folder ({} if it has none), without building a model."""
    _require_folder(path)
    json_path, tensor_path = os.path.join(path, STATE_FILE), os.path.join(path, TENSORS_FILE)
    if not os.path.exists(json_path):
        if os.path.exists(os.path.join(path, OLD_STATE_FILE)):
            raise CheckpointError(f"{path!r} holds its trainer state as a pickle ({OLD_STATE_FILE}, minigrpo 0.1), "
                                  f"which can run code and is not read; start from its weights with --init {path}")
        return {}
    try:
        with open(json_path, encoding="utf-8") as f:
            state = json.load(f)
        tensors = safetensors.torch.load_file(tensor_path) if os.path.exists(tensor_path) else {}
        state = _decode(state, tensors)
    except Exception as e:
        raise CheckpointError(f"{json_path!r} is corrupt: {type(e).__name__}") from e
    state["config"] = saved_config(path)
    return state


def load_checkpoint(path: str, device="cpu"):
    """(model, tokenizer, state) of a checkpoint folder; clear one-line errors when it is not one."""
    model, tok = load_model(path, device)
    return model, tok, load_state(path)


def saved_config(path: str) -> dict | None:
    """The Config (as a dict) a checkpoint was trained with, or None; reads only run_config.json."""
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.exists(config_path):
        return None
    try:
        with open(config_path, encoding="utf-8") as f:
            return json.load(f)
    except Exception as e:
        raise CheckpointError(f"{config_path!r} is corrupt: {type(e).__name__}") from e


def restore(path: str, opt, generator: torch.Generator) -> dict:
    """Load a GRPO checkpoint's state into the optimizer and the random generators; returns it (the step
    function's own state, e.g. PPO's critic, is in its "extra")."""
    state = load_state(path)
    if not state.get("optimizer") or "generator" not in state.get("extra", {}):
        raise CheckpointError(f"{path!r} is not a GRPO checkpoint (it has no optimizer or sampler state); "
                              f"to start GRPO from its weights use --init {path}")
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    generator.set_state(state["extra"]["generator"].to(generator.get_state().device))
    return state


def reference_record(ref_model, start: str | None, resume: str | None, state: dict) -> tuple[dict, dict]:
    """Where pi_ref's weights are kept, and the models each save must write: (record, {file name: model}).

    A resumed run loads pi_ref as its state recorded it, refusing a start checkpoint that changed. A new
    run from the checkpoint `start`, which holds exactly these weights, records only its path and the
    sha256 of its weights; otherwise pi_ref's weights are written with every checkpoint. Without a pi_ref
    (`ref_model` None: beta = 0 and nothing logs the KL) there is nothing to keep: ({}, {}).
    """
    if ref_model is None:
        return {}, {}
    info = state.get("extra", {}).get("reference")
    if info:
        path = info["path"] if os.path.isabs(info["path"]) else os.path.join(resume, info["path"])
        if not os.path.exists(path):
            raise CheckpointError(f"the reference model's weights {path} are gone; the run cannot resume with beta > 0")
        if "sha256" in info and file_sha256(path) != info["sha256"]:
            raise CheckpointError(f"the reference model's weights {path} changed since the run started "
                                  f"(sha256 differs); restore them, or start a new run")
        try:
            safetensors.torch.load_model(ref_model, path, device=str(next(ref_model.parameters()).device))
        except Exception as e:
            raise CheckpointError(f"{path} does not hold this model's weights ({type(e).__name__})") from e
        return info, {} if "sha256" in info else {REFERENCE_FILE: ref_model}
    weights = os.path.join(start, "model.safetensors") if start else None
    if weights and os.path.exists(weights):
        current = ref_model.state_dict()
        if all(k in current and torch.equal(v, current[k].cpu())
               for k, v in safetensors.torch.load_file(weights).items()):
            return {"path": os.path.abspath(weights), "sha256": file_sha256(weights)}, {}
    return {"path": REFERENCE_FILE}, {REFERENCE_FILE: ref_model}
