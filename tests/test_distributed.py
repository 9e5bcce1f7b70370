"""Data-parallel GRPO (torchrun, DDP) on the CPU with the gloo backend: two processes give one process's update.

The equivalence is the definition to meet: the same global batch, split between two ranks by prompts, must give
the same loss and the same updated weights as the whole batch in one process, for the per-sequence and the
token-level aggregations, with micro-batches, mu = 2 and a KL term, and when one rank has no informative row.
Then the command line end to end under torchrun, with a resume.
"""
import copy
import gc
import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from minigrpo.checkpoint import load_state
from minigrpo.config import make_config
from minigrpo.distributed import Ranks, merge_rows, start
from minigrpo.model import build_model
from minigrpo.optim import update_policy
from minigrpo.sampler import Samples, pad_prompts, sample_group
from minigrpo.tokenizer import build_tokenizer, encode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["12+34=", "5-7=", "9+9=", "40-2="]    # B = 4 prompts, G = 4: 16 rows, rank 0 takes prompts 0-1
ADV = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 1.5, -0.5, -0.5, -0.5, 0.3, -0.3, 0.3, -0.3])
IDLE = torch.cat([ADV[:8], torch.zeros(8)])      # rank 1 holds no informative row
SETTINGS = {
    "grpo": (dict(loss_type="grpo"), ADV),
    "dapo_micro": (dict(loss_type="dapo", micro_batch_size=4), ADV),   # rank 0 keeps 6 rows: chunks of 4 and 2
    "mu2_kl": (dict(loss_type="grpo", num_iterations=2, beta=0.04, kl_estimator="k3"), ADV),
    "idle_rank": (dict(loss_type="dr_grpo"), IDLE),
}


def setup(setting):
    """The model, the global batch, its advantages and its reference log-probs: the same in every process."""
    cfg = make_config("tiny", lr=1e-3, **SETTINGS[setting][0])
    tok = build_tokenizer()
    model = build_model(cfg, tok)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():   # sharper weights than the init, so that the completions differ
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    ids, mask = pad_prompts([encode(tok, p) for p in PROMPTS], tok.pad_token_id)
    s = sample_group(model.eval(), ids, mask, group_size=4, max_new_tokens=6, eos_id=tok.eos_token_id,
                     pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(1))
    ref = s.logps - 0.1 * s.completion_mask
    return cfg, model, s, SETTINGS[setting][1], ref


def rows_of(s, rows):
    return Samples(*(getattr(s, f.name)[rows] for f in fields(Samples)))


def update(model, cfg, s, adv, ref, ranks=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)     # linear in the gradient: comparable to 1e-6
    upd = update_policy(model, opt, s, adv, s.completion_mask.float(), cfg, ref if cfg.beta else None, ranks=ranks)
    return upd, torch.cat([p.detach().flatten() for p in model.parameters()])


def worker(rank, setting, rendezvous, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    cfg, model, s, adv, ref = setup(setting)
    rows = torch.arange(8 * rank, 8 * rank + 8)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    upd, weights = update(ddp, cfg, rows_of(s, rows), adv[rows], ref[rows], Ranks(rank, 2))
    if rank == 0:
        torch.save({"weights": weights, "loss": upd.loss, "grad_norm": upd.grad_norm}, out)
    # DDP's reducer goes first, while the process group lives (as train_grpo's does): freed after the group,
    # the group's destructor joins a gloo thread that waits for the GIL it holds (a hang, 1 run in ~5)
    del ddp
    gc.collect()
    dist.destroy_process_group()


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_two_processes_give_the_one_process_update(setting, tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(setting, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    torch.set_num_threads(1)
    cfg, model, s, adv, ref = setup(setting)
    start_weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    one, w_one = update(copy.deepcopy(model), cfg, s, adv, ref)
    two = torch.load(out)
    assert not torch.equal(w_one, start_weights)                           # the update did something
    torch.testing.assert_close(two["weights"], w_one, rtol=1e-5, atol=1e-6)
    assert two["loss"] == pytest.approx(one.loss, rel=1e-5, abs=1e-8)
    assert two["grad_norm"] == pytest.approx(one.grad_norm, rel=1e-5)


def test_more_ranks_than_prompts(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"prompts_per_step=4 cannot be shared by 8 processes: use a multiple of 8"):
        start(make_config("tiny"), torch.device("cpu"))


def test_merge_rows_sums_the_loss_and_averages_the_rest():
    rows = [{"step": 3, "loss": 0.25, "reward_mean": 0.5, "eval_style_shares": {"a": 1}, "truncated": False},
            {"step": 3, "loss": 0.5, "reward_mean": 1.0, "eval_style_shares": {"a": 0}, "truncated": True}]
    assert merge_rows(rows) == {"step": 3, "loss": 0.75, "reward_mean": 0.75, "eval_style_shares": {"a": 1},
                                "truncated": False}


def torchrun(*args, cwd):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "minigrpo", "train", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_torchrun_trains_logs_once_and_resumes(tmp_path):
    out = tmp_path / "run"
    done = torchrun("--preset", "tiny", "--data_dir", os.path.join(ROOT, "data"), "--sft_steps", "2", "--steps", "2", "--save_every", "1", "--eval_every", "1",
                    "--no-progress", "--out_dir", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("after GRPO") == 1                            # rank 0 alone reports
    rows = [json.loads(line) for line in open(out / "metrics.jsonl", encoding="utf-8")]
    assert [r["step"] for r in rows] == [1, 2] and all("eval_accuracy" in r for r in rows)
    state = load_state(str(out / "checkpoint"))
    assert len(state["extra"]["generators"]) == 2                         # each rank's sampler, for the resume
    results = json.load(open(out / "results.json", encoding="utf-8"))
    assert results["processes"] == 2
    done = torchrun("--resume", str(out / "checkpoint"), "--steps", "3", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [json.loads(line)["step"] for line in open(out / "metrics.jsonl", encoding="utf-8")] == [1, 2, 3]


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile's CPU backend needs a C compiler")
def test_torch_compile_gives_the_same_update():
    """--torch_compile compiles the training forward (model.LogprobHead, as the trainer does): same update."""
    from minigrpo.model import LogprobHead
    torch.set_num_threads(1)
    cfg, model, s, adv, ref = setup("grpo")
    one, w_one = update(copy.deepcopy(model), cfg, s, adv, ref)
    twin = copy.deepcopy(model)
    compiled = torch.compile(LogprobHead(twin), dynamic=True)
    opt = torch.optim.SGD(twin.parameters(), lr=0.5)
    upd = update_policy(compiled, opt, s, adv, s.completion_mask.float(), cfg)
    torch.testing.assert_close(torch.cat([p.detach().flatten() for p in twin.parameters()]), w_one,
                               rtol=1e-5, atol=1e-6)
    assert upd.grad_norm == pytest.approx(one.grad_norm, rel=1e-5)


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile's CPU backend needs a C compiler")
def test_torch_compile_of_the_bucketed_merged_forward_at_a_temperature():
    """The CPU preset's training forward under --torch_compile: each distinct prompt once, rows in two length
    buckets, equal rows merged, temperature 0.7. Compiled (dynamic shapes, so the temperature is a symbolic
    float) it gives the eager forward's log-probs and gradient."""
    from minigrpo.model import LogprobHead, length_buckets, plain_logprobs
    torch.set_num_threads(1)
    cfg = make_config("tiny")
    tok = build_tokenizer()
    model = build_model(cfg, tok)
    ids, mask = pad_prompts([encode(tok, p) for p in PROMPTS], tok.pad_token_id)
    G, T = 16, 6
    prompt_ids, prompt_mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)      # (64, P)
    gen = torch.Generator().manual_seed(0)
    completion_ids = torch.randint(3, 20, (len(prompt_ids) // 2, T), generator=gen).repeat_interleave(2, 0)
    lengths = torch.tensor([1, 1, 6, 6] * (len(prompt_ids) // 4))                            # rows 2k, 2k+1 equal
    completion_mask = (torch.arange(T) < lengths[:, None]).long()                            # (64, T)
    assert length_buckets(lengths.tolist()) == [1, 6]
    weights = torch.randn(len(prompt_ids), T, generator=gen)

    def logp_and_grad(forward, lm):
        logp = forward(prompt_ids, prompt_mask, completion_ids, completion_mask, 0.7, True, True)   # (64, T)
        (logp * completion_mask * weights).sum().backward()
        return logp.detach(), torch.cat([p.grad.flatten() for p in lm.parameters()])

    eager = copy.deepcopy(model)
    want, want_grad = logp_and_grad(lambda *a: plain_logprobs(eager, *a), eager)
    twin = copy.deepcopy(model)
    got, got_grad = logp_and_grad(torch.compile(LogprobHead(twin), dynamic=True), twin)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-5)
