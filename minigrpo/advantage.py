"""Group-relative advantages: the critic-free baseline at the heart of GRPO.

Implements the course's section 3, item 1 (公式拆解 1, "A_GRPO 相对优势"):

    A_i = (r_i - mu_r) / sigma_r,
    mu_r    = 1/G * sum_i r_i,
    sigma_r = sqrt( 1/(G-1) * sum_i (r_i - mu_r)^2 )

for the G completions sampled for one prompt. The group mean mu_r plays the
part of PPO's value baseline V(s) (course section 4): a completion is rewarded
for being better than its siblings, not for its absolute score.

Sources:
  - DeepSeekMath (Shao et al., 2024), section 4.1.2 "Outcome Supervision RL
    with GRPO": A_i = (r_i - mean(r)) / std(r), the same for every token of
    completion i.                                       -> scale="group"
  - Dr. GRPO, "Understanding R1-Zero-Like Training: A Critical Perspective"
    (Liu et al., 2025), section 3.1: dividing by std(r) over-weights groups
    that are almost all right or all wrong; drop it.    -> scale="none"
  - Lite PPO, "Tricks or Traps? A Deep Dive into RL for LLM Reasoning"
    (Liu et al., 2025, arXiv:2508.08221): centre on the group mean, but scale
    by the standard deviation of the rewards of the whole batch
    (TRL's `scale_rewards="batch"`).                    -> scale="batch"

Layout. The trainer samples G completions for each of B prompts and keeps
them flat and contiguous: rows g*G .. g*G+G-1 belong to prompt g, so a
(B*G,) reward vector reshapes to (B, G) with one prompt per row.

Zero-spread groups. When all G rewards of a prompt are equal (all right, or
all wrong) the group carries no learning signal, and the formula reads 0/0.
Such groups get advantages of exactly 0.0 here, whatever `scale` is; they are
detected by comparing rewards, not by testing a floating-point sigma.

The document's worked example (section 6: rewards 6, 8, 9) prints
sigma ~= 1.25, which is the population deviation (divide by G), while its
formula divides by G-1 (sigma = 1.5275). Both are available through `std`.

    r = torch.tensor([3.8, 5.2, 6.1])
    group_advantages(r, group_size=3)   # tensor([-1.0641,  0.1438,  0.9203])
"""
from __future__ import annotations

import torch

SCALES = ("group", "batch", "none")  # what sigma divides by: see module docstring
STDS = ("sample", "population")  # sample: 1/(G-1) (the document); population: 1/G


def _check_rewards(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Validate the flat reward vector and return it as a float tensor.

    Args:
        rewards: (B*G,) rewards, the G samples of one prompt contiguous.
        group_size: G, the number of completions per prompt (>= 2).

    Returns:
        (B*G,) the same rewards, converted to the default float dtype if they
        were integer or boolean.
    """
    if not isinstance(rewards, torch.Tensor):
        raise ValueError(f"rewards must be a torch.Tensor, got {type(rewards).__name__}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D of shape (B*G,), got shape {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2 (a group of one has no baseline), got {group_size!r}")
    if rewards.numel() == 0 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards length {rewards.numel()} is not a positive multiple of group_size {group_size}"
        )
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())  # (B*G,)
    return rewards


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    """Raise a one-line ValueError if `value` is not one of `valid`."""
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(repr(v) for v in valid)}")


def _correction(std: str) -> int:
    """Bessel's correction for torch.std: 1 for "sample" (G-1), 0 for "population" (G)."""
    _check_choice("std", std, STDS)
    return 1 if std == "sample" else 0


def _constant_groups(grouped: torch.Tensor) -> torch.Tensor:
    """Which groups have all rewards equal (exact comparison, no tolerance).

    Args:
        grouped: (B, G) rewards, one prompt per row.

    Returns:
        (B,) bool, True where every reward of the row equals its first.
    """
    return (grouped == grouped[:, :1]).all(dim=1)  # (B,)


def group_stats(
    rewards: torch.Tensor, group_size: int, std: str = "sample"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prompt mean mu_r and standard deviation sigma_r of the rewards.

    Args:
        rewards: (B*G,) rewards, the G samples of one prompt contiguous.
        group_size: G, completions per prompt (>= 2).
        std: "sample" divides the squared deviations by G-1 (the document's
            formula), "population" by G.

    Returns:
        mean: (B,) mu_r of each group.
        sigma: (B,) sigma_r of each group; exactly 0.0 for a group whose
            rewards are all equal.
    """
    rewards = _check_rewards(rewards, group_size)  # (B*G,)
    correction = _correction(std)
    grouped = rewards.view(-1, group_size)  # (B, G)
    constant = _constant_groups(grouped)  # (B,)
    mean = grouped.mean(dim=1)  # (B,)
    mean = torch.where(constant, grouped[:, 0], mean)  # (B,) exact for equal rewards
    sigma = grouped.std(dim=1, correction=correction)  # (B,)
    sigma = torch.where(constant, torch.zeros_like(sigma), sigma)  # (B,) no rounding noise
    return mean, sigma


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: str = "group",
    std: str = "sample",
    eps: float = 0.0,
) -> torch.Tensor:
    """Group-relative advantage of every completion: (r_i - mu_r) / sigma.

    Every completion is compared with the mean of its own group (its prompt's
    G samples). What it is then divided by depends on `scale`:

        "group"  sigma_r of its own group       (DeepSeekMath, the document)
        "batch"  sigma of all B*G rewards       (Lite PPO; TRL scale_rewards="batch")
        "none"   nothing: A_i = r_i - mu_r      (Dr. GRPO)

    Args:
        rewards: (B*G,) float rewards; rows g*G .. g*G+G-1 are prompt g's.
        group_size: G, completions per prompt (>= 2).
        scale: "group", "batch" or "none", as above.
        std: "sample" (divide by G-1 or B*G-1: the document's formula) or
            "population" (divide by G or B*G).
        eps: added to sigma before dividing (TRL adds 1e-4). The default 0.0
            divides by sigma exactly; zero-spread groups need no eps (below).
            Ignored when scale="none".

    Returns:
        (B*G,) advantages, same dtype as `rewards`. A group whose rewards are
        all equal gets exactly 0.0 for each member, never NaN.
    """
    rewards = _check_rewards(rewards, group_size)  # (B*G,)
    _check_choice("scale", scale, SCALES)
    correction = _correction(std)
    if not eps >= 0.0:  # also rejects NaN
        raise ValueError(f"eps must be >= 0, got {eps!r}")

    grouped = rewards.view(-1, group_size)  # (B, G)
    mean, group_sigma = group_stats(rewards, group_size, std=std)  # (B,), (B,)
    # group_stats returns a constant group's own value as its mean, so such a
    # group's centred rewards are exactly 0.0 (a rounded mean would leave ~1e-17).
    centred = grouped - mean[:, None]  # (B, G)

    if scale == "none":
        return centred.reshape(-1)  # (B*G,)
    if scale == "group":
        sigma = group_sigma[:, None].expand_as(centred)  # (B, G)
    else:  # "batch": one sigma for the whole batch, around the batch mean
        batch_sigma = rewards.std(correction=correction)  # ()
        sigma = batch_sigma.expand_as(centred)  # (B, G)

    # Guard the division: where sigma is 0 the centred rewards are 0 too, and
    # the answer is 0 (no signal), not 0/0 = NaN.
    safe_sigma = torch.where(sigma > 0, sigma + eps, torch.ones_like(sigma))  # (B, G)
    advantages = torch.where(sigma > 0, centred / safe_sigma, torch.zeros_like(centred))  # (B, G)
    return advantages.reshape(-1)  # (B*G,)


def zero_variance_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Fraction of groups whose G rewards are all equal (zero learning signal).

    Such groups get advantage 0 for every completion, so every one of their
    tokens contributes nothing to the policy gradient (only the KL term acts).
    A rising fraction means the prompts are becoming too easy (all right) or
    are too hard (all wrong); DAPO's dynamic sampling (Yu et al., 2025,
    section 3.2) filters them out. The trainer logs this number.

    Args:
        rewards: (B*G,) rewards, the G samples of one prompt contiguous.
        group_size: G, completions per prompt (>= 2).

    Returns:
        A python float in [0, 1]: (number of constant groups) / B.
    """
    rewards = _check_rewards(rewards, group_size)  # (B*G,)
    grouped = rewards.view(-1, group_size)  # (B, G)
    constant = _constant_groups(grouped)  # (B,)
    return constant.float().mean().item()
