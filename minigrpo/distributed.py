"""Data-parallel GRPO over torch.distributed: `torchrun --nproc_per_node K -m minigrpo train ...`.

Each of the K processes (ranks) holds the whole model, wrapped in DistributedDataParallel, and takes a
contiguous K-th of every step's prompts. It samples their groups itself, so a group's G completions,
rewards and advantage never leave their rank; batch-wide statistics (lesson 9's batch std, REINFORCE's
batch mean) are taken over the rewards of all ranks. Every chunk's loss is weighted by its share of the
global batch and multiplied by K, so DDP's all-reduce, which averages, gives every rank the gradient
of the one global batch: the same update as one process. Rank 0 alone evaluates, logs and writes
checkpoints; a checkpoint keeps every rank's sampling generator, so a resumed run goes on as before.

    torchrun --nproc_per_node 2 -m minigrpo train --preset tiny     # CPU: the gloo backend; GPUs: NCCL
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank among `world` processes (world = 1 without torchrun)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def ranks() -> Ranks:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), or one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def start(cfg, device: torch.device) -> Ranks:
    """Join the process group torchrun set up (gloo on the CPU, NCCL on CUDA); check that the prompts can be
    shared; returns the ranks. One process: nothing to join."""
    r = ranks()
    if not r.active:
        return r
    if cfg.prompts_per_step < r.world or cfg.prompts_per_step % r.world:
        raise ValueError(f"prompts_per_step={cfg.prompts_per_step} cannot be shared by {r.world} processes: "
                         f"use a multiple of {r.world} (or fewer processes with --nproc_per_node)")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return r


def device_of(name: str) -> str:
    """Under torchrun on GPUs, each rank takes the GPU of its local rank."""
    r = ranks()
    if r.active and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{r.local_rank}"
    return name


def wrap(model, device: torch.device, r: Ranks):
    """`model` in DistributedDataParallel when there are several ranks (it broadcasts rank 0's weights)."""
    if not r.active:
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model):
    """The model inside a DDP (and torch.compile) wrapper: sampling, evaluation and checkpoints use it directly."""
    from .model import LogprobHead, base_model
    inner = base_model(model)
    return inner.lm if isinstance(inner, LogprobHead) else inner


def shard(records: list[dict], r: Ranks) -> list[dict]:
    """This rank's contiguous share of a step's prompts (the global batch is the ranks' shares in order)."""
    if not r.active:
        return records
    n = len(records) // r.world
    return records[r.rank * n:(r.rank + 1) * n]


def gather_rows(x: torch.Tensor, r: Ranks) -> tuple[torch.Tensor, int]:
    """The ranks' (n_r, ...) tensors concatenated in rank order, on every rank (sizes may differ), and the
    row at which this rank's own begin."""
    if not r.active:
        return x, 0
    parts = [None] * r.world
    dist.all_gather_object(parts, x.detach().cpu())
    return torch.cat(parts).to(x.device), sum(len(p) for p in parts[:r.rank])


def total(x: torch.Tensor, r: Ranks) -> torch.Tensor:
    """The sum over ranks of a tensor, on every rank."""
    if not r.active:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


def gather_objects(obj, r: Ranks) -> list:
    """Every rank's `obj`, in rank order (one process: [obj])."""
    if not r.active:
        return [obj]
    parts = [None] * r.world
    dist.all_gather_object(parts, obj)
    return parts


def merge_rows(rows: list[dict]) -> dict:
    """One metrics row from every rank's: the global loss is the sum of the ranks' shares; every other number
    is the mean over ranks (each holds an equal share of the prompts); the rest is rank 0's."""
    out = dict(rows[0])
    for key, value in rows[0].items():
        values = [row.get(key) for row in rows]
        if isinstance(value, bool) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        out[key] = sum(values) if key == "loss" else sum(values) / len(values)
    return out


def stop() -> None:
    """Leave the process group (at the end of a run)."""
    if dist.is_initialized():
        dist.destroy_process_group()
