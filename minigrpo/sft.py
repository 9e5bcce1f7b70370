"""The SFT warm start: supervised next-token training on demonstrations, before GRPO.

GRPO learns only from groups whose rewards differ, so it needs a policy that already gets some answers
right (DeepSeekMath starts from an instruction-tuned model, R1 from a "cold start" SFT). Sequences are
[BOS prompt completion EOS], with the cross-entropy on the completion only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .model import precision
from .optim import apply_step, clip_gradients, make_optimizer, optimizer_step, set_lr, sft_lr
from .tasks import demonstration
from .tokenizer import encode


def sft_batch(tok, records: list[dict], device=None, chat: bool = False):
    """input_ids (N, L), attention_mask (N, L) and labels (N, L) (-100 outside the completion) of N records."""
    seqs, starts = [], []
    for r in records:
        prompt = encode(tok, r["prompt"], chat=chat)
        seqs.append(prompt + encode(tok, str(demonstration(r)), bos=False, eos=True))
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


def sft_loss(model, ids, mask, labels, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the completion tokens (labels != -100): their mean, or with reduction="sum" their sum."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (N, L, V)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100,
                           reduction=reduction)


def sft_step(model, opt, ids, mask, labels, cfg, scaler=None) -> float:
    """One AdamW step on a batch; with cfg.micro_batch_size, its rows m at a time, each chunk's summed loss
    divided by the batch's token count, so that the gradient is the batch mean's. Returns the batch's loss."""
    device = ids.device
    if not cfg.micro_batch_size and scaler is None:   # one forward and backward, as minigrpo always did
        with precision(device, cfg.dtype):
            loss = sft_loss(model, ids, mask, labels)
        optimizer_step(model, opt, loss, cfg.sft_grad_clip)
        return loss.item()
    opt.zero_grad(set_to_none=True)
    tokens = (labels[:, 1:] != -100).sum().clamp(min=1)
    total = torch.zeros((), device=device)
    for rows in torch.arange(len(ids), device=device).split(cfg.micro_batch_size or len(ids)):
        with precision(device, cfg.dtype):
            part = sft_loss(model, ids[rows], mask[rows], labels[rows], reduction="sum") / tokens
        (scaler.scale(part) if scaler is not None else part).backward()
        total = total + part.detach()
    clip_gradients(model, opt, cfg.sft_grad_clip, scaler)
    apply_step(opt, scaler)
    return total.item()


def train_sft(model, tok, records: list[dict], cfg, *, device=None, progress: bool = True) -> list[float]:
    """Train `model` in place for cfg.sft_steps AdamW steps on `records`; returns the loss of each step.

    Batches of cfg.sft_batch_size are drawn without replacement from a seeded shuffle (each epoch a new
    one); the learning rate follows optim.sft_lr (warm-up, then a cosine).
    """
    if not records:
        raise ValueError("SFT needs at least one demonstration")
    device = device or next(model.parameters()).device
    model.train()
    opt = make_optimizer(model.parameters(), cfg.sft_lr, cfg.sft_adam_beta1, cfg.sft_adam_beta2, cfg.sft_weight_decay)
    scaler = torch.amp.GradScaler(device.type) if cfg.dtype == "float16" else None
    gen = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    losses = []
    bar = tqdm(range(cfg.sft_steps), desc="SFT", disable=not progress, mininterval=0.5)
    for step in bar:
        if len(order) < cfg.sft_batch_size:
            order += torch.randperm(len(records), generator=gen).tolist()
        idx, order = order[:cfg.sft_batch_size], order[cfg.sft_batch_size:]
        ids, mask, labels = sft_batch(tok, [records[i] for i in idx], device, cfg.chat_template)   # (N, L) each
        set_lr(opt, sft_lr(step, cfg))
        losses.append(sft_step(model, opt, ids, mask, labels, cfg, scaler))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses
