"""The GRPO loss: the clipped surrogate with decoupled bounds, the KL to a reference, and token aggregation.

The course's section 3 objective, negated as the loss to MINIMISE (the ratio compares with the OLD,
sampling policy; the KL with the frozen REFERENCE policy, which the note writes with the same symbol):

    J = 1/N sum_n sum_t min( r_nt A_nt, clip(r_nt, 1-eps_low, 1+eps_high) A_nt ) - beta KL(pi_theta || pi_ref)

Sources: PPO (Schulman et al., 2017, eq. 7); DAPO's decoupled "clip-higher" (Yu et al., 2025, §3.1);
Schulman's KL estimators (2020; DeepSeekMath eq. 4 uses k3); TRL's `loss_type` aggregations.
"""
from __future__ import annotations

import torch

from .checks import CHOICES, check

KL_ESTIMATORS = CHOICES["kl_estimator"]
LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo", "seq_sum")   # lesson 4's aggregations; "cispo" is a loss of its own
TOKEN_MEAN = ("bnpo", "dapo", "cispo")   # the loss types that average over all tokens of the batch


def clipped_surrogate(ratio, advantages, eps_low: float, eps_high: float, delta: float = 0.0) -> torch.Tensor:
    """Per-token clipped objective min(r A, clip(r, 1-eps_low, 1+eps_high) A), to be MAXIMISED.

    Where the min picks the clipped term (A > 0 and r > 1+eps_high, or A < 0 and r < 1-eps_low) the
    result does not depend on r: its gradient is zero, the update stops once the token has moved far
    enough the way its advantage asks. The other way it is never clipped, so a bad move can be undone,
    unless `delta` > 0 caps r there too (two-sided clipping: for A < 0, min(r, delta) A; INTELLECT-2,
    TRL's `delta`, dual-clip PPO).

    Symbol     | Shape             | Description
    ratio      | (N, T), any shape | r = pi_theta / pi_old per token (or (N, 1), one per sequence)
    advantages | broadcastable     | A of each token, e.g. (N, 1) or (N, T)
    Returns the broadcast shape of the two, e.g. (N, T).
    """
    ratio = torch.as_tensor(ratio)                                              # (N, T)
    advantages = torch.as_tensor(advantages, dtype=ratio.dtype)                 # (N, 1) or (N, T)
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages   # (N, T)
    if delta > 0:
        ratio = torch.clamp(ratio, max=delta)                                   # (N, T)
    return torch.minimum(ratio * advantages, clipped)                           # (N, T)



def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate (N, T) of KL(pi_theta || pi_ref) from tokens sampled by pi_theta (padding not masked).

    With log r = ref_logp - logp:  k1 = -log r (unbiased, can be negative), k2 = (log r)^2 / 2 (biased,
    never negative), k3 = r - log r - 1 (unbiased, never negative; computed as expm1(log r) - log r).
    """
    check("kl_estimator", estimator)
    log_r = ref_logp - logp                                                     # (N, T)
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    return torch.expm1(log_r) - log_r


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str = "grpo",
              max_completion_length: int | None = None) -> torch.Tensor:
    """Reduce per-token values (N, T) to a scalar () over the unmasked tokens; empty rows add 0.

    With S_n = sum_t m_nt x_nt and |o_n| = sum_t m_nt:
        "grpo"          1/N sum_n S_n / max(|o_n|, 1)        DeepSeekMath eq. 3 (per-sequence mean)
        "bnpo", "dapo"  sum_n S_n / max(sum_n |o_n|, 1)      DAPO §3.3 (token level; TRL's "dapo" counts
        "cispo"                                              the tokens of all processes), and CISPO
        "dr_grpo"       sum_n S_n / (N L), L = max_completion_length or T      Dr. GRPO §3.1
        "seq_sum"       1/N sum_n S_n                        the note's formula as printed
    """
    check("loss_type", loss_type)
    n_seq, n_pos = per_token.shape
    keep = mask.bool()                                                          # (N, T)
    masked = torch.where(keep, per_token, torch.zeros_like(per_token))          # (N, T)
    seq_sum = masked.sum(dim=1)                                                 # (N,)
    if loss_type == "grpo":
        return (seq_sum / keep.to(per_token.dtype).sum(dim=1).clamp(min=1.0)).mean()
    if loss_type in TOKEN_MEAN:
        return seq_sum.sum() / keep.to(per_token.dtype).sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        length = n_pos if max_completion_length is None else max_completion_length
        return seq_sum.sum() / (n_seq * length)
    return seq_sum.sum() / n_seq                                                # "seq_sum"


def loss_mask(completion_mask: torch.Tensor, truncated: torch.Tensor, mask_truncated: bool) -> torch.Tensor:
    """(N, T) float mask of the tokens that carry loss; DAPO's overlong filtering drops rows cut off (N,)."""
    mask = completion_mask.float()                                              # (N, T)
    if mask_truncated:
        mask = mask * (~truncated).float().unsqueeze(-1)
    return mask


def batch_share(mask: torch.Tensor, rows: torch.Tensor, loss_type: str, total_rows: float | None = None,
                total_tokens: float | None = None) -> torch.Tensor:
    """The weight of `rows` in the loss of the whole batch: their share of its rows for the per-sequence
    aggregations, of its loss-carrying tokens for the token means. A chunk's loss (aggregated over the chunk)
    times this weight, summed over chunks, is the batch's loss. mask (N, T), rows (k,); returns ().
    `total_rows` / `total_tokens` give the batch's size when it is larger than `mask` (several processes)."""
    if loss_type in TOKEN_MEAN:
        tokens = mask.sum().clamp(min=1) if total_tokens is None else max(total_tokens, 1.0)
        return mask[rows].sum() / tokens
    return torch.tensor(len(rows) / (len(mask) if total_rows is None else total_rows), device=mask.device)


def kept_rows(adv: torch.Tensor, skip: bool) -> torch.Tensor:
    """The K rows (K,) that enter the backward pass; `batch_share` weighs their loss as the batch's.

    A row whose advantages are all exactly 0 adds exactly 0 to the clipped term, so (without a KL term,
    which the caller rules out by passing skip=False) it can be left out of the forward and backward
    pass. adv is (N,) or (N, T).
    """
    nonzero = adv != 0 if adv.dim() == 1 else (adv != 0).any(dim=1)            # (N,)
    keep = nonzero if skip else torch.ones_like(nonzero)
    return keep.nonzero().squeeze(-1)                                           # (K,)


def importance_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor,
                     level: str = "token") -> torch.Tensor:
    """pi_theta / pi_old of each token (N, T), or of each sequence (N, 1) for level="sequence".

    GSPO (Zheng et al., 2025, §4.1; TRL's importance_sampling_level="sequence"): the sequence's ratio is
    exp of the mean of its tokens' log-ratios, s_n = (pi_theta(o_n) / pi_old(o_n))^(1/|o_n|). Padding
    counts as log r = 0 (logp and old_logp are expected to be 0 there, as grpo_loss makes them).
    """
    check("importance_sampling_level", level)
    log_ratio = logp - old_logp                                                 # (N, T)
    if level == "token":
        return torch.exp(log_ratio)
    m = mask.to(logp.dtype)                                                     # (N, T)
    return torch.exp((log_ratio * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0))  # (N, 1)


def _check_args(logp, old_logp, advantages, mask, eps_low, eps_high, beta, ref_logp,
                kl_estimator, loss_type, max_completion_length, delta, cispo_max) -> None:
    """One-line ValueErrors for every argument of `grpo_loss` that cannot work."""
    if logp.dim() != 2 or logp.numel() == 0:
        raise ValueError(f"logp must be a non-empty (N, T) tensor, got shape {tuple(logp.shape)}")
    for name, other in (("old_logp", old_logp), ("mask", mask), ("ref_logp", ref_logp)):
        if other is not None and other.shape != logp.shape:
            raise ValueError(f"{name} shape {tuple(other.shape)} != logp shape {tuple(logp.shape)}")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(f"advantages shape {tuple(advantages.shape)} is neither (N,) nor (N, T) "
                         f"for logp shape {tuple(logp.shape)}")
    for name, value in (("eps_low", eps_low), ("eps_high", eps_high), ("beta", beta), ("delta", delta),
                        ("cispo_max", cispo_max), ("kl_estimator", kl_estimator), ("loss_type", loss_type)):
        check(name, value)
    if beta > 0.0 and ref_logp is None:
        raise ValueError(f"beta={beta!r} > 0 needs ref_logp (the reference policy's log-probs)")
    if max_completion_length is not None and (isinstance(max_completion_length, bool) or not isinstance(
            max_completion_length, int) or max_completion_length < 1):
        raise ValueError(f"max_completion_length must be an int >= 1 or None, got {max_completion_length!r}")


def loss_options(cfg) -> dict:
    """grpo_loss's settings from a run's config: the one place that maps config fields to the loss's arguments
    (a new member of the family adds its fields here, in checks.py and in config.py, and nowhere else)."""
    return dict(eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta=cfg.beta, kl_estimator=cfg.kl_estimator,
                loss_type=cfg.loss_type, max_completion_length=cfg.max_new_tokens,
                importance_sampling_level=cfg.importance_sampling_level, delta=cfg.delta, cispo_max=cfg.cispo_max,
                use_bias_correction_kl=cfg.use_bias_correction_kl)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              eps_low: float = 0.2, eps_high: float = 0.2, beta: float = 0.0, ref_logp: torch.Tensor | None = None,
              kl_estimator: str = "k3", loss_type: str = "grpo", max_completion_length: int | None = None,
              importance_sampling_level: str = "token", delta: float = 0.0, cispo_max: float = 5.0,
              use_bias_correction_kl: bool = False, is_weight: torch.Tensor | None = None,
              sync: bool = True, check_args: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO loss to minimise: aggregate(-surrogate + beta KL), with the GRPO family's variants.

    Symbol        | Shape          | Description
    logp          | (N, T)         | log pi_theta of each sampled completion token (carries the gradient)
    old_logp      | (N, T)         | log pi_old, the policy that sampled the tokens (constant)
    advantages    | (N,) or (N, T) | A_n of each completion (GRPO), or A_nt of each token (PPO's GAE)
    mask          | (N, T)         | 1 for real completion tokens (EOS included), 0 for padding
    ref_logp      | (N, T)         | log pi_ref of the same tokens (constant); needed if beta > 0
    eps_low/high  | float          | ratio clipped to [1-eps_low, 1+eps_high]
    beta          | float          | KL coefficient; 0 leaves the KL out of the loss
    kl_estimator  | str            | "k1", "k2" or "k3" (DeepSeekMath uses k3)
    loss_type     | str            | "grpo", "bnpo", "dapo", "dr_grpo", "seq_sum" (see `aggregate`) or "cispo"
    max_completion_length | int    | L of "dr_grpo"; None means T
    importance_sampling_level | str | "token", or "sequence": GSPO's one ratio per completion, clipped whole
    delta         | float          | > 0: two-sided clipping, the ratio capped at delta where A < 0 (TRL's delta)
    cispo_max     | float          | "cispo" (MiniMax-M1 §3.1): the surrogate is sg(min(r, cispo_max)) A log pi,
                  |                | TRL's cispo with epsilon_high = cispo_max; token-mean aggregation
    use_bias_correction_kl | bool  | weight the KL by the ratio r (samples are pi_old's; DeepSeek-V3.2, TRL)
    is_weight     | (N, T)         | a sampler that is not the trainer (another precision or engine): each token's
                  |                | policy term times min(pi_old / pi_sampler, cap) (truncated IS; Yao et al. 2025,
                  |                | TRL's token_truncate), a constant; the KL term is not weighted

    old_logp, ref_logp and advantages are constants (detached). Padding never reaches exp(), so garbage log-probs
    there cannot make the loss or its gradient NaN. check_args=False skips the ValueErrors for bad arguments
    (update_policy: train_grpo validated the config once). Returns the loss () and `loss_stats` over the unmasked
    tokens (python floats; with sync=False 0-dim tensors on logp's device, read all at once by the caller).
    """
    if check_args:
        _check_args(logp, old_logp, advantages, mask, eps_low, eps_high, beta, ref_logp,
                    kl_estimator, loss_type, max_completion_length, delta, cispo_max)
    keep = mask.bool()                                                          # (N, T)
    zeros = torch.zeros_like(logp)                                              # (N, T)
    adv = advantages.detach().to(logp.dtype)                                    # (N,) or (N, T)
    adv = adv[:, None] if adv.dim() == 1 else adv                               # (N, 1) or (N, T)
    lp = torch.where(keep, logp, zeros)                                         # (N, T) padding -> 0
    old = torch.where(keep, old_logp.detach(), zeros)                           # (N, T)
    # 1. importance ratio to the sampling policy (padding: log r = 0, r = 1)
    ratio = importance_ratio(lp, old, mask, importance_sampling_level)          # (N, T), or (N, 1) for GSPO
    if loss_type == "cispo":    # 2. the surrogate (the loss is its negative); cispo's weight is clipped and detached
        surrogate = torch.clamp(ratio, max=cispo_max).detach() * adv * lp       # (N, T)
    else:
        surrogate = clipped_surrogate(ratio, adv, eps_low, eps_high, delta).expand_as(lp)  # (N, T)
    per_token_loss = -surrogate                                                 # (N, T)
    if is_weight is not None:   # the tokens were drawn by a sampler that is not pi_old
        per_token_loss = per_token_loss * torch.where(keep, is_weight.detach().to(logp.dtype), zeros)   # (N, T)
    # 3. KL penalty to the reference policy (not the old one)
    kl = None if ref_logp is None else kl_to_reference(lp, ref_logp, keep, ratio, kl_estimator,
                                                        use_bias_correction_kl)   # (N, T)
    if kl is not None and beta > 0.0:
        per_token_loss = per_token_loss + beta * kl                             # (N, T)
    # 4. aggregate over tokens and sequences; 5. diagnostics, over unmasked tokens only
    loss = aggregate(per_token_loss, mask, loss_type, max_completion_length)    # ()
    stats = loss_stats(keep, adv, ratio, surrogate, kl, loss_type, eps_low, eps_high, cispo_max, sync)
    return loss, stats


def kl_to_reference(lp: torch.Tensor, ref_logp: torch.Tensor, keep: torch.Tensor, ratio: torch.Tensor,
                    kl_estimator: str, use_bias_correction_kl: bool) -> torch.Tensor:
    """grpo_loss's per-token KL estimate to pi_ref (N, T), 0 at padding; times the ratio r when the samples are
    pi_old's and the bias is corrected (DeepSeek-V3.2, TRL's use_bias_correction_kl)."""
    kl = kl_estimate(lp, torch.where(keep, ref_logp.detach(), torch.zeros_like(lp)), kl_estimator)   # (N, T)
    return kl * ratio if use_bias_correction_kl else kl                          # (N, T)


@torch.no_grad()
def loss_stats(keep: torch.Tensor, adv: torch.Tensor, ratio: torch.Tensor, surrogate: torch.Tensor,
               kl: torch.Tensor | None, loss_type: str, eps_low: float, eps_high: float, cispo_max: float,
               sync: bool = True) -> dict:
    """grpo_loss's diagnostics over the unmasked tokens: "clip_low" (fraction with A < 0 and r < 1-eps_low),
    "clip_high" (A > 0 and r > 1+eps_high; for cispo r > cispo_max), "clip" (their sum), "ratio_mean",
    "ratio_min", "ratio_max" (1.0 with no token), "kl" (mean estimate to ref_logp, even when beta = 0; 0.0
    without it), "surrogate" (mean objective), "tokens" (unmasked tokens).
    keep (N, T) bool; adv (N, 1) or (N, T); ratio (N, T) or (N, 1); surrogate (N, T); kl (N, T) or None."""
    dtype, device = surrogate.dtype, surrogate.device
    m = keep.to(dtype)                                                          # (N, T)
    n_tok = m.sum()
    denom = n_tok.clamp(min=1.0)
    r = ratio.detach().expand_as(surrogate)                                     # (N, T)
    if loss_type == "cispo":
        low, high = torch.zeros_like(keep), keep & (adv > 0) & (r > cispo_max)   # (N, T)
    else:
        low = keep & (adv < 0) & (r < 1.0 - eps_low)                            # (N, T)
        high = keep & (adv > 0) & (r > 1.0 + eps_high)                          # (N, T)
    one = torch.ones((), dtype=dtype, device=device)
    inf = torch.full((), float("inf"), dtype=dtype, device=device)
    empty = n_tok == 0                                                          # no token: every ratio stat is 1
    stats = {
        "clip_low": low.to(dtype).sum() / denom,
        "clip_high": high.to(dtype).sum() / denom,
        "clip": (low | high).to(dtype).sum() / denom,
        "ratio_mean": torch.where(n_tok > 0, (r * m).sum() / denom, one),
        "ratio_min": torch.where(empty, one, torch.where(keep, r, inf).min()),
        "ratio_max": torch.where(empty, one, torch.where(keep, r, -inf).max()),
        "kl": (kl.detach() * m).sum() / denom if kl is not None else 0.0 * one,
        "surrogate": (surrogate.detach() * m).sum() / denom,
        "tokens": n_tok,
    }
    if sync:   # one transfer for all of them
        stats = dict(zip(stats, torch.stack(list(stats.values())).tolist()))
    return stats
