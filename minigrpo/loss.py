"""The GRPO loss: clipped surrogate with decoupled bounds, KL to a reference, and a choice of token aggregation.

Implements the course's section 3 objective (三、GRPO的损失函数与核心公式):

    J_GRPO = 1/N sum_n sum_t min( r_nt * A_n, clip(r_nt, 1-eps_low, 1+eps_high) * A_n )
             - beta * KL(P_theta || P_ref),
    r_nt   = P_theta(a_nt | s_nt) / P_theta_old(a_nt | s_nt),

and returns its negative, the loss to MINIMISE. The document writes the
sampling policy and the reference policy with the same symbol theta'; here
they are kept apart: the ratio compares with the OLD (sampling) policy, the
KL penalty with the frozen REFERENCE policy (e.g. the SFT model).

Pieces and sources:
  - `clipped_surrogate`: PPO's clipped objective (Schulman et al., 2017, eq. 7)
    with the decoupled bounds eps_low / eps_high of DAPO's "Clip-Higher"
    (Yu et al., 2025, section 3.1) and the document's section 3 item 2.
  - `kl_estimate`: Schulman's estimators of KL(pi_theta || pi_ref) from
    samples of pi_theta ("Approximating KL Divergence", 2020), with
    log r = log pi_ref - log pi_theta: k1 = -log r, k2 = (log r)^2 / 2,
    k3 = r - log r - 1. DeepSeekMath (Shao et al., 2024) eq. 4 uses k3:
    unbiased and never negative.
  - `aggregate`: how per-token terms become one number (TRL's `loss_type`):
      "grpo"    1/N sum_n 1/|o_n| sum_t   DeepSeekMath eq. 3 (per-sequence mean)
      "bnpo"    sum_nt / (number of tokens)   DAPO section 3.3 (token level)
      "dapo"    same as "bnpo" on one process (TRL normalises "dapo" by the
                token count of the global batch)
      "dr_grpo" sum_nt / (N * L_max)      Dr. GRPO (Liu et al., 2025) section 3.1
      "seq_sum" 1/N sum_n sum_t           the document's formula as printed

Shapes: N completions (N = B*G), T token positions (padded).

    loss, stats = grpo_loss(logp, old_logp, adv, mask, beta=0.04, ref_logp=ref_logp)
    loss.backward()
"""
from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")
LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo", "seq_sum")


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    """Raise a one-line ValueError if `value` is not one of `valid`."""
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(repr(v) for v in valid)}")


def clipped_surrogate(ratio, advantages, eps_low: float, eps_high: float) -> torch.Tensor:
    """Per-token clipped objective min(r * A, clip(r, 1-eps_low, 1+eps_high) * A).

    To be MAXIMISED. Where the min picks the clipped term (A > 0 and
    r > 1+eps_high, or A < 0 and r < 1-eps_low) the result does not depend on
    r, so its gradient is zero: the update stops once the token has moved far
    enough in the direction its advantage asks for. In the other direction it
    is never clipped, so a bad move can always be undone.

    Args:
        ratio: (N, T) or any shape: r = pi_theta / pi_old per token.
        advantages: broadcastable to `ratio`, e.g. (N, 1): A of each token.
        eps_low: lower clip range, the ratio is floored at 1-eps_low.
        eps_high: upper clip range, the ratio is capped at 1+eps_high.

    Returns:
        Tensor of the broadcast shape of ratio and advantages, e.g. (N, T).
    """
    ratio = torch.as_tensor(ratio)  # (N, T)
    advantages = torch.as_tensor(advantages, dtype=ratio.dtype)  # (N, 1)
    unclipped = ratio * advantages  # (N, T)
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages  # (N, T)
    return torch.minimum(unclipped, clipped)  # (N, T)


# The name STYLE.md uses for the same function.
clip_objective = clipped_surrogate


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from tokens sampled by pi_theta.

    With log r = ref_logp - logp (r = pi_ref / pi_theta at the sampled token):
        k1 = -log r               unbiased, can be negative, high variance
        k2 = (log r)^2 / 2        biased, never negative, low variance
        k3 = r - log r - 1        unbiased, never negative (DeepSeekMath eq. 4)
    All three are exactly 0 where logp == ref_logp. k3 is computed as
    expm1(log r) - log r, the same number without cancellation near 0.

    Args:
        logp: (N, T) log pi_theta of the sampled tokens (current policy).
        ref_logp: (N, T) log pi_ref of the same tokens (reference policy).
        estimator: "k1", "k2" or "k3".

    Returns:
        (N, T) per-token KL estimates (padding is not masked here).
    """
    _check_choice("kl_estimator", estimator, KL_ESTIMATORS)
    log_r = ref_logp - logp  # (N, T)
    if estimator == "k1":
        return -log_r  # (N, T)
    if estimator == "k2":
        return 0.5 * log_r**2  # (N, T)
    return torch.expm1(log_r) - log_r  # (N, T)


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
) -> torch.Tensor:
    """Reduce per-token values to one scalar, counting only unmasked tokens.

    With S_n = sum_t m_nt x_nt and |o_n| = sum_t m_nt:
        "grpo"          1/N sum_n S_n / max(|o_n|, 1)
        "bnpo", "dapo"  sum_n S_n / max(sum_n |o_n|, 1)
        "dr_grpo"       sum_n S_n / (N * L),  L = max_completion_length or T
        "seq_sum"       sum_n S_n / N

    Args:
        per_token: (N, T) per-token values (e.g. the per-token loss).
        mask: (N, T) 1/True for real completion tokens, 0/False for padding.
        loss_type: one of LOSS_TYPES, as above.
        max_completion_length: L for "dr_grpo"; defaults to T.

    Returns:
        () scalar tensor. Rows with no unmasked token add 0 (never NaN).
    """
    _check_choice("loss_type", loss_type, LOSS_TYPES)
    n_seq, n_pos = per_token.shape
    keep = mask.bool()  # (N, T)
    m = keep.to(per_token.dtype)  # (N, T)
    masked = torch.where(keep, per_token, torch.zeros_like(per_token))  # (N, T) padding -> 0
    seq_sum = masked.sum(dim=1)  # (N,)
    if loss_type == "grpo":
        seq_len = m.sum(dim=1).clamp(min=1.0)  # (N,)
        return (seq_sum / seq_len).mean()  # ()
    if loss_type in ("bnpo", "dapo"):
        return seq_sum.sum() / m.sum().clamp(min=1.0)  # ()
    if loss_type == "dr_grpo":
        length = n_pos if max_completion_length is None else max_completion_length
        return seq_sum.sum() / (n_seq * length)  # ()
    return seq_sum.sum() / n_seq  # () "seq_sum"


def _check_args(logp, old_logp, advantages, mask, eps_low, eps_high, beta, ref_logp,
                kl_estimator, loss_type, max_completion_length) -> None:
    """One-line ValueErrors for every argument of `grpo_loss` that cannot work."""
    if logp.dim() != 2 or logp.numel() == 0:
        raise ValueError(f"logp must be a non-empty (N, T) tensor, got shape {tuple(logp.shape)}")
    for name, other in (("old_logp", old_logp), ("mask", mask), ("ref_logp", ref_logp)):
        if other is not None and other.shape != logp.shape:
            raise ValueError(f"{name} shape {tuple(other.shape)} != logp shape {tuple(logp.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(
            f"advantages shape {tuple(advantages.shape)} != (N,) = {tuple(logp.shape[:1])} from logp shape {tuple(logp.shape)}"
        )
    if not 0.0 <= eps_low < 1.0:
        raise ValueError(f"eps_low must be in [0, 1), got {eps_low!r}")
    if not eps_high >= 0.0:
        raise ValueError(f"eps_high must be >= 0, got {eps_high!r}")
    if not beta >= 0.0:
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    if beta > 0.0 and ref_logp is None:
        raise ValueError(f"beta={beta!r} > 0 needs ref_logp (the reference policy's log-probs)")
    _check_choice("kl_estimator", kl_estimator, KL_ESTIMATORS)
    _check_choice("loss_type", loss_type, LOSS_TYPES)
    if max_completion_length is not None and (
        isinstance(max_completion_length, bool) or not isinstance(max_completion_length, int)
        or max_completion_length < 1
    ):
        raise ValueError(f"max_completion_length must be an int >= 1 or None, got {max_completion_length!r}")


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    kl_estimator: str = "k3",
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO loss to minimise: aggregate(-clipped_surrogate + beta * KL).

    Symbol        | Shape  | Description
    logp          | (N, T) | log pi_theta of each sampled completion token (carries the gradient)
    old_logp      | (N, T) | log pi_old, the policy that sampled the tokens (constant)
    advantages    | (N,)   | A_n of each completion, shared by all its tokens (constant)
    mask          | (N, T) | 1 for real completion tokens (EOS included), 0 for padding
    ref_logp      | (N, T) | log pi_ref of the same tokens (constant); needed if beta > 0
    eps_low/high  | float  | ratio clipped to [1-eps_low, 1+eps_high]
    beta          | float  | KL coefficient; 0 leaves the KL out of the loss
    kl_estimator  | str    | "k1", "k2" or "k3" (DeepSeekMath uses k3)
    loss_type     | str    | "grpo", "bnpo", "dapo", "dr_grpo" or "seq_sum" (see `aggregate`)
    max_completion_length | int | L of "dr_grpo"; None means T

    old_logp, ref_logp and advantages are detached: they are constants of the
    objective. Padding positions never reach exp(), so garbage log-probs there
    cannot turn the loss or its gradient into NaN.

    Returns:
        loss: () scalar tensor with gradient to `logp`.
        stats: python floats, over unmasked tokens: "clip_low" (fraction with
            A < 0 and r < 1-eps_low), "clip_high" (A > 0 and r > 1+eps_high),
            "clip" (their sum: the two cannot overlap), "ratio_mean",
            "ratio_min", "ratio_max" (1.0 when no token is unmasked), "kl"
            (mean KL estimate to ref_logp, computed even when beta == 0;
            0.0 without ref_logp), "surrogate" (mean clipped objective),
            "tokens" (number of unmasked tokens).
    """
    _check_args(logp, old_logp, advantages, mask, eps_low, eps_high, beta, ref_logp,
                kl_estimator, loss_type, max_completion_length)
    keep = mask.bool()  # (N, T)
    zeros = torch.zeros_like(logp)  # (N, T)
    adv = advantages.detach().to(logp.dtype)[:, None]  # (N, 1)
    # Padding log-probs may be anything (even -inf): set them to 0 first.
    lp = torch.where(keep, logp, zeros)  # (N, T)
    old = torch.where(keep, old_logp.detach(), zeros)  # (N, T)

    # 1. Importance ratio to the sampling policy (padding: log r = 0, r = 1).
    ratio = torch.exp(lp - old)  # (N, T)

    # 2. Clipped surrogate, the objective; the loss is its negative.
    surrogate = clipped_surrogate(ratio, adv, eps_low, eps_high)  # (N, T)
    per_token_loss = -surrogate  # (N, T)

    # 3. KL penalty to the reference policy (not the old one).
    kl = None
    if ref_logp is not None:
        ref = torch.where(keep, ref_logp.detach(), zeros)  # (N, T) padding: KL 0
        kl = kl_estimate(lp, ref, kl_estimator)  # (N, T)
        if beta > 0.0:
            per_token_loss = per_token_loss + beta * kl  # (N, T)

    # 4. Aggregate over tokens and sequences.
    loss = aggregate(per_token_loss, mask, loss_type, max_completion_length)  # ()

    # 5. Diagnostics, over unmasked tokens only.
    with torch.no_grad():
        m = keep.to(logp.dtype)  # (N, T)
        n_tok = m.sum()  # ()
        denom = n_tok.clamp(min=1.0)  # ()
        r = ratio.detach()  # (N, T)
        low = keep & (adv < 0) & (r < 1.0 - eps_low)  # (N, T)
        high = keep & (adv > 0) & (r > 1.0 + eps_high)  # (N, T)
        kept_r = r[keep]  # (n_tok,)
        stats = {
            "clip_low": (low.to(logp.dtype).sum() / denom).item(),
            "clip_high": (high.to(logp.dtype).sum() / denom).item(),
            "clip": ((low | high).to(logp.dtype).sum() / denom).item(),
            "ratio_mean": kept_r.mean().item() if kept_r.numel() else 1.0,
            "ratio_min": kept_r.min().item() if kept_r.numel() else 1.0,
            "ratio_max": kept_r.max().item() if kept_r.numel() else 1.0,
            "kl": ((kl.detach() * m).sum() / denom).item() if kl is not None else 0.0,
            "surrogate": ((surrogate.detach() * m).sum() / denom).item(),
            "tokens": n_tok.item(),
        }
    return loss, stats
