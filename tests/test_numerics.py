"""Numerics of a whole GRPO step on a real (tiny) model: the cases that break trainers.

- groups whose rewards are all equal (advantage exactly 0, for every `scale`): no update at all;
- empty completions (EOS first) and completions cut off at max_new_tokens, with DAPO's
  overlong masking (`mask_truncated`) on and off;
- extreme logits (a log-probability near -1000) and far-moved policies (mu = 4 updates at a
  large learning rate): the loss, the gradient norm and the weights stay finite;
- a non-finite loss stops `python -m minigrpo train` with one line naming the step and the checkpoint kept.

The loss-level properties over random inputs (|log r| up to 80, padding, k3 >= 0) are in
test_loss_properties.py; this file runs the engine end to end.
"""
import copy
import itertools
import math
import os

import pytest
import torch

from minigrpo.__main__ import main
from minigrpo.checkpoint import load_checkpoint
from minigrpo.config import make_config
from minigrpo.logger import read_metrics
from minigrpo.model import build_model
from minigrpo.tokenizer import build_tokenizer
from minigrpo.trainer import grpo_step

RECORDS = [{"task": "arithmetic", "prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (12, 30)]]


def setup(eos_bias: float = 0.0, **over):
    """A tiny model whose EOS logit is shifted by `eos_bias` (+100: always EOS, -100: never)."""
    cfg = make_config("tiny", **over)
    tok = build_tokenizer()
    torch.manual_seed(0)
    model = build_model(cfg, tok)
    if eos_bias:
        bias = torch.zeros(len(tok))
        bias[tok.eos_token_id] = eos_bias
        model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + bias)  # (.., V)
    return cfg, tok, model


def alternating():
    """A reward that alternates 0, 1, 0, ... whatever the completion: every group has A != 0."""
    counter = itertools.count()
    return lambda prompt, completion, **fields: float(next(counter) % 2)


def step(model, tok, cfg, reward, opt=None, seed=0):
    opt = opt or torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    return grpo_step(model, None, tok, opt, RECORDS, reward, cfg, torch.Generator().manual_seed(seed))


def unchanged(model, before) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def all_finite(model) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_equal_reward_groups_leave_the_weights_exactly_unchanged(scale, loss_type):
    # each group has equal rewards (the groups differ from each other): A = 0 for every row
    cfg, tok, model = setup(scale=scale, loss_type=loss_type, skip_zero_adv=False, lr=1e-2)
    before = copy.deepcopy(model.state_dict())
    row = step(model, tok, cfg, lambda p, c, **f: float(len(p)))
    assert row["zero_var_frac"] == 1.0 and row["loss"] == 0.0 and row["grad_norm"] == 0.0
    assert unchanged(model, before)


def test_empty_completions_train_with_a_finite_loss():
    cfg, tok, model = setup(eos_bias=100.0, lr=1e-2)
    row = step(model, tok, cfg, alternating())
    assert row["completion_len"] == 1.0 and row["truncated_frac"] == 0.0   # EOS only: the text is ""
    assert row["zero_var_frac"] == 0.0
    assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"]) and all_finite(model)


@pytest.mark.parametrize("mask_truncated", [False, True])
def test_truncated_completions_are_masked_only_when_asked(mask_truncated):
    cfg, tok, model = setup(eos_bias=-100.0, max_new_tokens=3, mask_truncated=mask_truncated, lr=1e-2)
    before = copy.deepcopy(model.state_dict())
    row = step(model, tok, cfg, alternating())
    assert row["truncated_frac"] == 1.0 and row["completion_len"] == 3.0   # no EOS within the limit
    assert math.isfinite(row["loss"]) and all_finite(model)
    if mask_truncated:   # DAPO's overlong filtering: every row is cut off, so nothing is learned
        assert row["loss"] == 0.0 and row["grad_norm"] == 0.0 and unchanged(model, before)
    else:
        assert row["grad_norm"] > 0.0 and not unchanged(model, before)


def test_extreme_logits_keep_log_probs_and_loss_finite():
    cfg, tok, model = setup(lr=1e-2)
    with torch.no_grad():
        model.lm_head.weight.mul_(1000.0)       # logits in the thousands: log p of most tokens ~ -1e3
    row = step(model, tok, cfg, alternating())
    assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"]) and math.isfinite(row["entropy"])
    assert all_finite(model)


def test_far_moved_policy_keeps_the_clipped_loss_finite():
    # mu = 4 updates at a large learning rate move pi_theta far from pi_old within one step
    cfg, tok, model = setup(num_iterations=4, lr=0.5, grad_clip=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    reward = alternating()
    rows = [step(model, tok, cfg, reward, opt, seed=s) for s in range(3)]
    assert any(abs(r["ratio_mean"] - 1.0) > 0.1 for r in rows)       # the ratio did move far
    for r in rows:
        assert all(math.isfinite(r[k]) for k in ("loss", "grad_norm", "ratio_mean", "clip_low", "clip_high"))
    assert all_finite(model)


def test_non_finite_loss_stops_the_cli_with_one_line(tmp_path, capsys, monkeypatch):
    import minigrpo.optim as optim
    real, calls = optim.grpo_loss, {"n": 0}

    def nan_from_step_3(*args, **kw):
        loss, stats = real(*args, **kw)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] >= 3 else loss), stats

    monkeypatch.setattr(optim, "grpo_loss", nan_from_step_3)
    out = tmp_path / "run"
    rc = main(["train", "--preset", "tiny", "--sft_steps", "1", "--steps", "4", "--save_every", "1",
               "--skip_zero_adv", "false", "--no-progress", "--out_dir", str(out)])
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1
    assert "step 3: non-finite GRPO loss (nan)" in lines[0] and "try a lower lr" in lines[0]
    assert f"the last good checkpoint (step 2) is kept in {out}/checkpoint" in lines[0]
    _, _, state = load_checkpoint(str(out / "checkpoint"))
    assert state["step"] == 2 and all_finite(load_checkpoint(str(out / "checkpoint"))[0])
    assert [r["step"] for r in read_metrics(str(out / "metrics.jsonl"))] == [1, 2]
