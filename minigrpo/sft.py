"""SFT warm start: supervised next-token training on task demonstrations.

GRPO learns only from groups whose rewards differ, so it needs a policy that
already gets some answers right (DeepSeekMath starts GRPO from an
instruction-tuned model; DeepSeek-R1 from a "cold start" SFT). This file
trains the policy on demonstrations: the prompt followed by a worked
completion (`record["solution"]` if present, else `record["answer"]`) and EOS,
with the cross-entropy loss on the completion tokens only.

Sequences are [BOS prompt completion EOS], right-padded; positions start at 0
on BOS, as they do for the left-padded prompts of the sampler.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .tokenizer import encode


def demonstration(record: dict) -> str:
    """The completion a demonstration teaches: the worked solution if any, else the answer."""
    return record.get("solution", record["answer"])


def sft_batch(tok, records: list[dict], device=None):
    """Token ids, attention mask and labels (-100 outside the completion) for `records`.

    Returns input_ids (N, L), attention_mask (N, L), labels (N, L).
    """
    seqs, starts = [], []
    for r in records:
        prompt = encode(tok, r["prompt"])
        seqs.append(prompt + encode(tok, demonstration(r), bos=False, eos=True))
        starts.append(len(prompt))
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), tok.pad_token_id, dtype=torch.long)    # (N, L)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)                     # (N, L)
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)              # (N, L)
    for i, (s, k) in enumerate(zip(seqs, starts)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
        labels[i, k:len(s)] = torch.tensor(s[k:])
    return ids.to(device), mask.to(device), labels.to(device)


def sft_loss(model, ids, mask, labels) -> torch.Tensor:
    """Mean cross-entropy of the completion tokens (labels != -100)."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (N, L, V)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def train_sft(model, tok, records: list[dict], *, steps: int, batch_size: int, lr: float,
              seed: int = 0, device=None, progress: bool = True, weight_decay: float = 0.01) -> list[float]:
    """Train `model` in place for `steps` AdamW steps on `records`; returns the loss per step.

    Batches are drawn without replacement from a seeded shuffle (epochs repeat
    with a new shuffle); the learning rate warms up for 5% of the steps, then
    follows a cosine down to 10% of `lr`.
    """
    if not records:
        raise ValueError("SFT needs at least one demonstration")
    device = device or next(model.parameters()).device
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac)))

    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses = []
    bar = tqdm(range(steps), desc="SFT", disable=not progress, mininterval=0.5)
    for step in bar:
        if len(order) < batch_size:
            order += torch.randperm(len(records), generator=gen).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        ids, mask, labels = sft_batch(tok, [records[i] for i in idx], device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = sft_loss(model, ids, mask, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses
