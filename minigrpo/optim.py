"""Optimisation: AdamW and its learning-rate schedules, and stage 4 of a step, mu clipped updates of the policy.

`update_policy` is the inner loop of DeepSeekMath's Algorithm 1: mu times, maximise the objective on
the batch sampled from pi_old. GRPO, REINFORCE and RLOO (adv (N,), one per completion) and PPO
(adv (N, T), one per token) all update through it. With mu = 1, pi_old is `logp.detach()`; with
mu > 1 it is the sampler's log-probs (they equal the training forward's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .loss import grpo_loss, importance_ratio, kept_rows
from .model import completion_logprobs


def make_optimizer(params, lr: float, beta1: float, beta2: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the Config's betas and weight decay (GRPO, the critic and SFT each pass their own)."""
    return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def grpo_lr(step: int, cfg) -> float:
    """GRPO's learning rate at `step` (0-based): linear warm-up over cfg.warmup_steps, then constant."""
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def sft_lr(step: int, cfg) -> float:
    """SFT's learning rate: linear warm-up over sft_warmup_frac of the steps, then a cosine to sft_min_lr_frac."""
    warmup = max(1, int(cfg.sft_steps * cfg.sft_warmup_frac))
    if step < warmup:
        return cfg.sft_lr * (step + 1) / warmup
    done = (step - warmup) / max(1, cfg.sft_steps - warmup)
    floor = cfg.sft_min_lr_frac
    return cfg.sft_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done)))


def optimizer_step(model, opt, loss: torch.Tensor, grad_clip: float) -> torch.Tensor:
    """Backward, clip the gradient's global norm (0 = off), step; returns the norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    opt.step()
    return grad_norm


@dataclass
class Update:
    """What stage 4 measured: the last update's loss and gradient norm, grpo_loss's stats, the kept tokens."""
    loss: float
    grad_norm: float
    stats: dict
    kept_frac: float   # share of the loss-carrying tokens in the K kept rows (1.0 when none was skipped)
    logp_diff_max: float | None = None   # old_logps="recompute": max |sampler - training forward| log-prob
    ratios: list | None = None           # `trace` rows' ratios (R, T) at each of the mu updates (1 where not kept)


def update_policy(policy, opt, samples, adv: torch.Tensor, mask: torch.Tensor, cfg,
                  ref_logp: torch.Tensor | None = None, skip_zero_adv: bool = True,
                  trace: torch.Tensor | None = None) -> Update:
    """mu = cfg.num_iterations AdamW steps of the clipped objective on one sampled batch (`samples`, N rows).

    Rows whose advantages are all 0 are left out (when skip_zero_adv and beta = 0), and the loss over
    the K kept rows is rescaled to the whole batch's. pi_old's log-probs for mu > 1 come from the
    sampler or, with cfg.old_logps="recompute", a no-grad training-mode forward before the first update.
    `trace` (R,) names rows whose per-token ratios to record. A non-finite loss raises
    FloatingPointError before it reaches the weights.
    """
    s = samples
    idx, rescale = kept_rows(adv, mask, cfg.loss_type, skip=skip_zero_adv and cfg.beta == 0)   # (K,)
    sub = lambda x: x[idx]                                                      # (N, ...) -> (K, ...)
    args = lambda: (sub(s.prompt_ids), sub(s.prompt_mask), sub(s.completion_ids), sub(s.completion_mask))
    loss, grad_norm = torch.zeros(()), torch.zeros(())
    stats = {"kl": 0.0, "clip_low": 0.0, "clip_high": 0.0, "ratio_mean": 1.0}
    policy.train()
    old, diff, ratios = sub(s.logps), None, []                                  # (K, T)
    if cfg.num_iterations > 1 and cfg.old_logps == "recompute" and len(idx):
        with torch.no_grad():
            recomputed = completion_logprobs(policy, *args(), cfg.temperature)   # (K, T)
        diff = ((recomputed - old).abs() * sub(mask)).max().item()
        old = recomputed
    for it in range(cfg.num_iterations if len(idx) else 0):
        logp = completion_logprobs(policy, *args(), cfg.temperature)            # (K, T)
        old_logp = logp.detach() if cfg.num_iterations == 1 else old            # (K, T)
        loss, stats = grpo_loss(logp, old_logp, sub(adv), sub(mask), eps_low=cfg.eps_low, eps_high=cfg.eps_high,
                                beta=cfg.beta, ref_logp=None if ref_logp is None else sub(ref_logp),
                                kl_estimator=cfg.kl_estimator, loss_type=cfg.loss_type,
                                max_completion_length=cfg.max_new_tokens,
                                importance_sampling_level=cfg.importance_sampling_level, delta=cfg.delta,
                                cispo_max=cfg.cispo_max, use_bias_correction_kl=cfg.use_bias_correction_kl)
        loss = loss * rescale                                                   # the full batch's loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite GRPO loss ({loss.item()}) at update {it + 1}; "
                                     f"try a lower lr or a smaller eps_high")
        if trace is not None:
            ratios.append(_traced_ratios(logp.detach(), old_logp, sub(mask), idx, trace, cfg))
        grad_norm = optimizer_step(policy, opt, loss, cfg.grad_clip)
    policy.eval()
    if trace is not None and not ratios:   # no row was trained: every ratio stayed 1
        ratios = [torch.ones(len(trace), mask.shape[1], device=mask.device)] * cfg.num_iterations
    kept_frac = (mask[idx].sum() / mask.sum().clamp(min=1)).item()
    return Update(loss=loss.item(), grad_norm=float(grad_norm), stats=stats, kept_frac=kept_frac,
                  logp_diff_max=diff, ratios=ratios if trace is not None else None)


def _traced_ratios(logp, old_logp, mask, idx, trace, cfg) -> torch.Tensor:
    """The ratios (R, T) of the `trace` rows at this update, as grpo_loss sees them; 1 for rows left out."""
    keep = mask.bool()
    zeros = torch.zeros_like(logp)
    r = importance_ratio(torch.where(keep, logp, zeros), torch.where(keep, old_logp, zeros), mask,
                         cfg.importance_sampling_level).expand_as(logp)         # (K, T)
    out = torch.ones(len(trace), logp.shape[1], dtype=logp.dtype, device=logp.device)   # (R, T)
    where = {int(row): k for k, row in enumerate(idx.tolist())}
    for j, row in enumerate(trace.tolist()):
        if row in where:
            out[j] = r[where[row]]
    return out
