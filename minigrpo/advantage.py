"""Advantages without a critic: GRPO's group-relative one, and the REINFORCE and RLOO baselines of lesson 8.

The course's section 3, item 1, for the G completions of one prompt (DeepSeekMath §4.1.2):

    A_i = (r_i - mu_r) / sigma_r,   mu_r = 1/G sum_i r_i,   sigma_r = sqrt( 1/(G-1) sum_i (r_i - mu_r)^2 )

scale="none" drops sigma (Dr. GRPO, Liu et al., 2025, §3.1); "batch" uses the batch's std (Lite PPO,
arXiv:2508.08221). REINFORCE (Williams, 1992) subtracts the batch mean, RLOO (Kool et al., 2019) the
mean of the group's other G-1. Rows g*G .. g*G+G-1 of the flat (N,) rewards are prompt g's; a group
of equal rewards gets advantages of exactly 0. The note prints sigma = 1.25 for rewards 6, 8, 9, the
population std, while its formula divides by G-1 (1.5275): `std` chooses.
"""
from __future__ import annotations

import torch

from .checks import check

BASELINES = ("reinforce", "rloo")


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """The flat rewards (N,) as (B, G), floating point, after checking the shapes."""
    if not isinstance(rewards, torch.Tensor):
        raise ValueError(f"rewards must be a torch.Tensor, got {type(rewards).__name__}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D of shape (N,) = (B*G,), got shape {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2 (a group of one has no baseline), got {group_size!r}")
    if rewards.numel() == 0 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards length {rewards.numel()} is not a positive multiple of group_size {group_size}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    return rewards.view(-1, group_size)                                     # (B, G)


def _constant(grouped: torch.Tensor) -> torch.Tensor:
    """(B,) True where every reward of the group equals its first (exact comparison, no tolerance)."""
    return (grouped == grouped[:, :1]).all(dim=1)


def group_stats(rewards: torch.Tensor, group_size: int, std: str = "sample") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prompt mean mu_r (B,) and std sigma_r (B,) of the rewards (N,); sigma is exactly 0 for equal rewards.

    `std`: "sample" divides the squared deviations by G-1 (the note's formula), "population" by G.
    """
    check("std", std)
    grouped = _grouped(rewards, group_size)                                 # (B, G)
    constant = _constant(grouped)                                           # (B,)
    mean = torch.where(constant, grouped[:, 0], grouped.mean(dim=1))        # (B,) exact for equal rewards
    sigma = grouped.std(dim=1, correction=1 if std == "sample" else 0)      # (B,)
    return mean, torch.where(constant, torch.zeros_like(sigma), sigma)


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group", std: str = "sample",
                     eps: float = 0.0) -> torch.Tensor:
    """Group-relative advantage (r_i - mu_r) / sigma of every completion.

    Symbol     | Shape | Description
    rewards    | (N,)  | rewards, N = B*G; rows g*G .. g*G+G-1 are prompt g's
    group_size | int   | G, completions per prompt (>= 2)
    scale      | str   | sigma is the "group"'s std, the "batch"'s std (around the batch mean), or "none" (1)
    std        | str   | "sample" (divide by G-1, or N-1) or "population" (by G, or N)
    eps        | float | added to sigma before dividing (TRL adds 1e-4); ignored for scale="none"

    Returns (N,) advantages in the rewards' dtype; a group of equal rewards gets exactly 0.0.
    """
    check("scale", scale)
    check("std_eps", eps)
    grouped = _grouped(rewards, group_size)                                 # (B, G)
    mean, group_sigma = group_stats(rewards, group_size, std=std)           # (B,), (B,)
    centred = grouped - mean[:, None]                                       # (B, G) exactly 0 for equal rewards
    if scale == "none":
        return centred.reshape(-1)                                          # (N,)
    if scale == "group":
        sigma = group_sigma[:, None].expand_as(centred)                     # (B, G)
    else:
        sigma = grouped.reshape(-1).std(correction=1 if std == "sample" else 0).expand_as(centred)  # (B, G)
    # where sigma is 0 the centred rewards are 0 too, and the answer is 0 (no signal), not 0/0
    safe = torch.where(sigma > 0, sigma + eps, torch.ones_like(sigma))     # (B, G)
    return torch.where(sigma > 0, centred / safe, torch.zeros_like(centred)).reshape(-1)  # (N,)


def baseline_advantages(rewards: torch.Tensor, group_size: int, kind: str) -> torch.Tensor:
    """REINFORCE's A_i = r_i - mean of the batch, or RLOO's r_i - mean of the group's other G-1. (N,) -> (N,)"""
    if kind == "reinforce":
        return rewards - rewards.mean()
    if kind == "rloo":
        grouped = _grouped(rewards, group_size)                             # (B, G)
        others = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)  # (B, G) mean of the other G-1
        return (grouped - others).reshape(-1)
    raise ValueError(f"unknown baseline {kind!r}; valid: {', '.join(map(repr, BASELINES))}")


def informative_groups(rewards: torch.Tensor, group_size: int) -> list[int]:
    """The groups (prompts) whose G rewards are not all equal: the only ones that teach anything. (N,) -> indices."""
    return (~_constant(_grouped(rewards, group_size))).nonzero().squeeze(-1).tolist()


def zero_variance_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Fraction of groups whose G rewards are all equal: they teach nothing (only the KL term acts).

    A rising fraction means the prompts became too easy (all right) or are too hard (all wrong); DAPO's
    dynamic sampling (Yu et al., 2025, §3.2) filters such groups. The trainer logs this number.
    """
    return _constant(_grouped(rewards, group_size)).float().mean().item()
