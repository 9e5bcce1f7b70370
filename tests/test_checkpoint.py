"""Checkpoints: atomic writes, loading with transformers' Auto classes, a state that round-trips exactly, clear errors."""
import errno
import json
import os
import random

import numpy as np
import safetensors.torch

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from minigrpo.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint, saved_config
from minigrpo.config import make_config
from minigrpo.model import build_model
from minigrpo.tokenizer import build_tokenizer


@pytest.fixture
def tiny():
    cfg = make_config("tiny")
    tok = build_tokenizer()
    return cfg, tok, build_model(cfg, tok)


def test_save_then_auto_load(tmp_path, tiny):
    cfg, tok, model = tiny
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = save_checkpoint(str(tmp_path / "ck"), model, tok, cfg=cfg, step=7, optimizer=opt)
    ids = torch.tensor([tok("12+34=")["input_ids"]])
    again = AutoModelForCausalLM.from_pretrained(path)
    assert torch.equal(again(ids).logits, model(ids).logits)
    assert AutoTokenizer.from_pretrained(path)("12+34=")["input_ids"] == tok("12+34=")["input_ids"]
    _, _, state = load_checkpoint(path)
    assert state["step"] == 7 and state["config"]["hidden_size"] == cfg.hidden_size
    assert "state" in state["optimizer"] and "torch" in state["rng"]


def test_overwrite_leaves_no_temporaries(tmp_path, tiny):
    cfg, tok, model = tiny
    save_checkpoint(str(tmp_path / "ck"), model, tok, step=1)
    save_checkpoint(str(tmp_path / "ck"), model, tok, step=2)
    assert os.listdir(tmp_path) == ["ck"]
    assert load_checkpoint(str(tmp_path / "ck"))[2]["step"] == 2


def test_interrupted_save_keeps_previous(tmp_path, tiny, monkeypatch):
    cfg, tok, model = tiny
    save_checkpoint(str(tmp_path / "ck"), model, tok, step=1)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", boom)  # dies half way through writing the new one
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(tmp_path / "ck"), model, tok, step=2)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck"]
    assert load_checkpoint(str(tmp_path / "ck"))[2]["step"] == 1


def test_missing_and_corrupt(tmp_path, tiny):
    cfg, tok, model = tiny
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_checkpoint(str(tmp_path / "empty"))
    path = save_checkpoint(str(tmp_path / "ck"), model, tok)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_checkpoint(path)


def test_the_state_round_trips_exactly_and_holds_no_pickle(tmp_path, tiny):
    cfg, tok, model = tiny
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model(torch.tensor([[2, 5, 6]])).logits.sum().backward()
    opt.step()                                           # Adam moments and a step count to save
    random.random(), np.random.rand(), torch.rand(1)
    gen = torch.Generator().manual_seed(3)
    extra = {"generator": gen.get_state(), "metrics": [{"step": 1, "loss": 0.5}], "nested": {"t": (1, 2.5, None)}}
    path = save_checkpoint(str(tmp_path / "ck"), model, tok, cfg=cfg, step=3, optimizer=opt, extra=extra)
    expected_python, expected_numpy, expected_torch = random.getstate(), np.random.get_state(), torch.get_rng_state()
    state = load_state(path)
    assert state["step"] == 3 and state["config"] == saved_config(path) and saved_config(path)["preset"] == "tiny"
    assert state["extra"]["metrics"] == extra["metrics"] and state["extra"]["nested"] == {"t": (1, 2.5, None)}
    assert torch.equal(state["extra"]["generator"], gen.get_state())
    assert state["rng"]["python"] == expected_python and torch.equal(state["rng"]["torch"], expected_torch)
    assert np.array_equal(state["rng"]["numpy"][1], expected_numpy[1]) and state["rng"]["numpy"][2:] == expected_numpy[2:]
    # the optimizer loads back into a fresh one and is the same, moment for moment
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    fresh.load_state_dict(state["optimizer"])
    for p in model.parameters():
        for k, v in opt.state[p].items():
            assert torch.equal(fresh.state[p][k], v), k
    assert fresh.param_groups[0]["betas"] == (0.9, 0.99)
    # only JSON and safetensors are written: nothing in the folder is a pickle
    assert sorted(f for f in os.listdir(path) if not f.startswith("tokenizer")) == [
        "config.json", "generation_config.json", "model.safetensors", "run_config.json",
        "trainer_state.json", "trainer_state.safetensors"]
    json.load(open(os.path.join(path, "trainer_state.json")))


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   PermissionError(errno.EACCES, "Permission denied")])
def test_a_checkpoint_that_cannot_be_written_is_one_line_and_keeps_the_previous(tmp_path, tiny, monkeypatch, error):
    cfg, tok, model = tiny
    save_checkpoint(str(tmp_path / "ck"), model, tok, step=1)

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(str(tmp_path / "ck"), model, tok, step=2)
    assert str(e.value) == f"could not write the checkpoint {tmp_path / 'ck'} ({error.strerror})"
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck"] and load_state(str(tmp_path / "ck"))["step"] == 1
