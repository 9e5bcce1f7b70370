"""Checkpoints: atomic writes, loading with transformers' Auto classes, clear errors."""
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from minigrpo.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
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

    monkeypatch.setattr(torch, "save", boom)  # dies half way through writing the new one
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
