"""Optimisation: AdamW and its learning-rate schedules, and stage 4 of a step, mu clipped updates of the policy.

`update_policy` is the inner loop of DeepSeekMath's Algorithm 1: mu times, maximise the objective on
the batch sampled from pi_old. GRPO, REINFORCE and RLOO (adv (N,), one per completion) and PPO
(adv (N, T), one per token) all update through it. With mu = 1, pi_old is `logp.detach()`; with
mu > 1 it is the sampler's log-probs (they equal the training forward's). A sampler in another precision
(cfg.sample_dtype) is not pi_old: then pi_old is the trainer's (recomputed for mu > 1) and each token's policy
term is weighted by min(pi_old / pi_sampler, cfg.is_cap), truncated importance sampling. With cfg.micro_batch_size
the rows go through the forward and backward m at a time, each chunk's loss weighted by its share of
the batch (loss.batch_share), so the accumulated gradient is the one-batch gradient.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch

from .distributed import Ranks, total
from .loss import batch_share, grpo_loss, importance_ratio, kept_rows, loss_options
from .model import completion_logprobs, precision


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


def clip_gradients(model, opt, grad_clip: float, scaler=None) -> torch.Tensor:
    """Clip the accumulated gradient's global norm to grad_clip (0 = off), after undoing a GradScaler's
    scale; returns the norm before clipping (a tensor: no host sync)."""
    if scaler is not None:
        scaler.unscale_(opt)
    return torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))


def apply_step(opt, scaler=None) -> None:
    """The optimizer's step (through the GradScaler, which skips it on inf/NaN gradients, when there is one)."""
    if scaler is None:
        opt.step()
        return
    scaler.step(opt)
    scaler.update()


def optimizer_step(model, opt, loss: torch.Tensor, grad_clip: float) -> torch.Tensor:
    """Backward, clip the gradient's global norm (0 = off), step; returns the norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = clip_gradients(model, opt, grad_clip)
    opt.step()
    return grad_norm


def sampler_differs(cfg) -> bool:
    """Whether the sampler runs in another precision than the training forward (cfg.sample_dtype), so that its
    log-probs are not pi_old's: the update then takes pi_old from the trainer and weights each token by truncated IS."""
    return bool(getattr(cfg, "sample_dtype", "")) and cfg.sample_dtype != cfg.dtype


def micro_batches(rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    """`rows` (K,) in chunks of at most `size` (0: one chunk of all)."""
    return list(rows.split(size)) if size and len(rows) else [rows]


@torch.no_grad()
def logprobs_in_chunks(model, samples, rows: torch.Tensor, cfg) -> torch.Tensor:
    """completion_logprobs of `rows` of `samples`, cfg.micro_batch_size rows at a time, no gradient. (K, T)"""
    device = samples.completion_ids.device
    out = []
    for chunk in micro_batches(rows, cfg.micro_batch_size):
        with precision(device, cfg.dtype):
            out.append(completion_logprobs(model, samples.prompt_ids[chunk], samples.prompt_mask[chunk],
                                           samples.completion_ids[chunk], samples.completion_mask[chunk],
                                           cfg.temperature, share_prompts=cfg.share_prompts,
                                           merge=cfg.merge_prefixes).float())
    return torch.cat(out)


@dataclass
class Update:
    """What stage 4 measured: the last update's loss and gradient norm, grpo_loss's stats, the kept tokens."""
    loss: float
    grad_norm: float
    stats: dict
    kept_frac: float   # share of the loss-carrying tokens in the K kept rows (1.0 when none was skipped)
    logp_diff_max: float | None = None   # recomputed pi_old or a mismatched sampler: max |sampler - trainer| log-prob
    ratios: list | None = None           # `trace` rows' ratios (R, T) at each of the mu updates (1 where not kept)


def update_policy(policy, opt, samples, adv: torch.Tensor, mask: torch.Tensor, cfg,
                  ref_logp: torch.Tensor | None = None, skip_zero_adv: bool = True,
                  trace: torch.Tensor | None = None, scaler=None, ranks: Ranks | None = None) -> Update:
    """mu = cfg.num_iterations AdamW steps of the clipped objective on one sampled batch (`samples`, N rows).

    Rows whose advantages are all 0 are left out (when skip_zero_adv and beta = 0), and each chunk's loss
    is weighted by its share of the whole batch (with micro-batches of cfg.micro_batch_size rows, the
    gradients add up to the one-batch gradient). pi_old's log-probs for mu > 1 come from the sampler or,
    with cfg.old_logps="recompute", a no-grad training-mode forward before the first update. `trace` (R,)
    names rows whose per-token ratios to record. Forwards run in cfg.dtype (autocast); a GradScaler
    `scaler` scales float16 losses. Each update reads its statistics from the device once; a non-finite
    loss raises FloatingPointError before the weights change.

    With several `ranks` (torchrun), `policy` is DDP-wrapped and `samples` are this rank's rows: shares are
    taken of the global batch and multiplied by the number of ranks (DDP averages the gradients), only the
    last chunk's backward all-reduces, and a rank left with no row runs one at weight 0 so that it joins.
    """
    s = samples
    device = mask.device
    ranks = ranks or Ranks()
    idx = kept_rows(adv, skip=skip_zero_adv and cfg.beta == 0)                 # (K,)
    sizes = torch.stack([torch.tensor(float(len(mask)), device=device), mask.sum().float(),
                         torch.tensor(float(len(idx)), device=device)])
    total_rows, total_tokens, total_kept = total(sizes, ranks).tolist() if ranks.active else (None, None, len(idx))
    batch = _Batch(samples=s, adv=adv, mask=mask, ref_logp=ref_logp, total_rows=total_rows,
                   total_tokens=total_tokens, weight=1.0 if len(idx) else 0.0,   # a rank with no row: weight 0
                   chunks=micro_batches(idx if len(idx) else torch.zeros(1, dtype=torch.long, device=device),
                                        cfg.micro_batch_size))                  # (k,) each
    loss, grad_norm = 0.0, 0.0
    stats = {"kl": 0.0, "clip_low": 0.0, "clip_high": 0.0, "ratio_mean": 1.0}
    policy.train()
    batch.old, diff, ratios = s.logps, None, []                                 # (N, T)
    batch.mismatch = sampler_differs(cfg)   # pi_old is the trainer's; the sampler's log-probs only weight tokens
    if cfg.num_iterations > 1 and (cfg.old_logps == "recompute" or batch.mismatch) and len(idx):
        recomputed = logprobs_in_chunks(policy, s, idx, cfg)                    # (K, T)
        diff = ((recomputed - s.logps[idx]).abs() * mask[idx]).max().item()
        batch.old = s.logps.clone()
        batch.old[idx] = recomputed
    for it in range(cfg.num_iterations if total_kept else 0):
        loss, grad_norm, stats, traced = _one_update(policy, opt, batch, cfg, it, trace, scaler, ranks)
        if trace is not None:
            ratios.append(traced)
    policy.eval()
    if trace is not None and not ratios:   # no row was trained: every ratio stayed 1
        ratios = [torch.ones(len(trace), mask.shape[1], device=mask.device)] * cfg.num_iterations
    kept_frac = (mask[idx].sum() / mask.sum().clamp(min=1)).item() if len(idx) else 0.0
    if batch.diffs:
        diff = torch.stack(batch.diffs).max().item()
    return Update(loss=loss, grad_norm=grad_norm, stats=stats, kept_frac=kept_frac,
                  logp_diff_max=diff, ratios=ratios if trace is not None else None)


@dataclass
class _Batch:
    """What every one of update_policy's mu updates reads: the sampled batch and how its loss is split and scaled."""
    samples: object                       # sampler.Samples, N rows
    adv: torch.Tensor                     # (N,) or (N, T)
    mask: torch.Tensor                    # (N, T)
    ref_logp: torch.Tensor | None         # (N, T)
    total_rows: float | None              # the global batch's rows and tokens under torchrun (None: this batch)
    total_tokens: float | None
    weight: float                         # 0.0 on a rank with no row (it runs one so that it joins the all-reduce)
    chunks: list                          # micro-batches of kept row indices, (k,) each
    old: torch.Tensor | None = None       # (N, T) log pi_old: the sampler's, or recomputed before the first update
    mismatch: bool = False                # the sampler is not the trainer: truncated importance weights
    diffs: list = field(default_factory=list)   # mu = 1, mismatched sampler: max |log pi_old - log pi_sampler|


def _one_update(policy, opt, b: _Batch, cfg, it: int, trace, scaler, ranks: Ranks):
    """One of the mu updates: every chunk's weighted loss back-propagated, the gradient clipped, one step.
    Returns (loss, grad_norm, stats, traced ratios (R, T) or an empty tensor); raises on a non-finite loss."""
    mask = b.mask
    opt.zero_grad(set_to_none=True)
    parts, traced = [], torch.ones(0) if trace is None else torch.ones(len(trace), mask.shape[1], device=mask.device)
    for c, rows in enumerate(b.chunks):
        last = c == len(b.chunks) - 1
        quiet = lambda: policy.no_sync() if ranks.active and not last else contextlib.nullcontext()
        logp, old_logp, part, part_stats = _chunk_loss(policy, b, rows, cfg, quiet)
        share = batch_share(mask, rows, cfg.loss_type, b.total_rows, b.total_tokens)   # its share of the batch's loss
        part = part * share * b.weight
        part_stats["tokens"] = part_stats["tokens"] * b.weight                  # a weight-0 row is not counted
        with quiet():
            (scaler.scale(part * ranks.world) if scaler is not None else part * ranks.world).backward()
        parts.append((part.detach(), part_stats))
        if trace is not None:
            _traced_ratios(logp.detach(), old_logp, mask[rows], rows, trace, cfg, traced)
    norm = clip_gradients(policy, opt, cfg.grad_clip, scaler)
    batch_loss, combined = _combine(parts)
    if ranks.active:   # the global batch's loss, on every rank: a NaN anywhere stops every rank
        batch_loss = total(batch_loss, ranks)
    values = torch.stack([batch_loss, norm.to(batch_loss), *combined.values()]).tolist()   # one host sync
    loss, grad_norm, stats = values[0], values[1], dict(zip(combined, values[2:]))
    if not math.isfinite(loss):
        raise FloatingPointError(f"non-finite GRPO loss ({loss}) at update {it + 1}; "
                                 f"try a lower lr or a smaller eps_high")
    apply_step(opt, scaler)
    return loss, grad_norm, stats, traced


def _chunk_loss(policy, b: _Batch, rows: torch.Tensor, cfg, quiet):
    """One chunk's training forward and grpo_loss (its stats as tensors), with the truncated importance weights of a
    mismatched sampler. Returns (logp (k, T), old_logp (k, T), the unweighted loss (), its stats)."""
    s, mask = b.samples, b.mask
    with quiet(), precision(mask.device, cfg.dtype):   # DDP all-reduces in the last chunk's backward only
        logp = completion_logprobs(policy, s.prompt_ids[rows], s.prompt_mask[rows], s.completion_ids[rows],
                                   s.completion_mask[rows], cfg.temperature, share_prompts=cfg.share_prompts,
                                   merge=cfg.merge_prefixes)                    # (k, T)
    logp = logp.float()
    old_logp = logp.detach() if cfg.num_iterations == 1 else b.old[rows]       # (k, T)
    is_weight = None
    if b.mismatch:   # truncated importance sampling: the tokens came from the sampler, not pi_old
        gap = (old_logp - s.logps[rows]) * mask[rows]                          # (k, T) log pi_old / pi_sampler
        raw = gap.exp()                                                        # (k, T) pi_old / pi_sampler
        is_weight = raw.clamp(max=cfg.is_cap)                                  # (k, T)
        if cfg.num_iterations == 1:
            b.diffs.append(gap.abs().max())
    part, part_stats = grpo_loss(logp, old_logp, b.adv[rows], mask[rows], **loss_options(cfg),
                                 ref_logp=None if b.ref_logp is None else b.ref_logp[rows], is_weight=is_weight,
                                 sync=False, check_args=False)
    if is_weight is not None:   # token-weighted means, combined like the others
        m = mask[rows].to(logp.dtype)
        n = m.sum().clamp(min=1)
        part_stats["is_weight_mean"] = (is_weight * m).sum() / n
        part_stats["is_capped"] = ((raw > cfg.is_cap) & mask[rows].bool()).to(logp.dtype).sum() / n
    return logp, old_logp, part, part_stats


def _combine(parts: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
    """The batch's loss (the sum of the weighted chunk losses) and its grpo_loss stats, from the chunks':
    token-weighted means, the min and max ratio over all chunks, the tokens added up (tensors, no sync)."""
    total = torch.stack([p for p, _ in parts]).sum()
    tokens = torch.stack([st["tokens"] for _, st in parts])                     # (C,)
    weight = tokens / tokens.sum().clamp(min=1)                                  # (C,)
    stats = {}
    for key in parts[0][1]:
        column = torch.stack([st[key] for _, st in parts])                       # (C,)
        if key == "tokens":
            stats[key] = column.sum()
        elif key in ("ratio_min", "ratio_max"):   # over the chunks that have tokens (all ones if none has)
            fill = torch.full_like(column, float("inf") if key == "ratio_min" else float("-inf"))
            kept = torch.where(tokens > 0, column, fill)
            pick = kept.min() if key == "ratio_min" else kept.max()
            stats[key] = torch.where(tokens.sum() > 0, pick, torch.ones_like(pick))
        elif key == "ratio_mean":
            stats[key] = torch.where(tokens.sum() > 0, (column * weight).sum(), torch.ones_like(column[0]))
        else:
            stats[key] = (column * weight).sum()
    return total, stats


def _traced_ratios(logp, old_logp, mask, rows, trace, cfg, out: torch.Tensor) -> torch.Tensor:
    """Write into `out` (R, T) the ratios of the `trace` rows found among `rows` (this chunk's rows of the
    batch, (k,)) as grpo_loss sees them; rows not in the chunk are left as they are (1 where never kept)."""
    keep = mask.bool()
    zeros = torch.zeros_like(logp)
    ratio = importance_ratio(torch.where(keep, logp, zeros), torch.where(keep, old_logp, zeros), mask,
                             cfg.importance_sampling_level).expand_as(logp)     # (k, T)
    where = {int(row): k for k, row in enumerate(rows.tolist())}
    for j, row in enumerate(trace.tolist()):
        if row in where:
            out[j] = ratio[where[row]]
    return out
