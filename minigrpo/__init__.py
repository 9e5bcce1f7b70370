"""minigrpo: GRPO (Group Relative Policy Optimization) from first principles, small enough to read.

The four parts of GRPO, one file each, plus the loop that runs them:

    sampler.py    sample a group of G completions per prompt (KV cache)
    reward.py     score them with verifiable rewards (tasks.py parses answers)
    advantage.py  normalise rewards within each group
    loss.py       the clipped objective with decoupled eps_low/eps_high and KL
    trainer.py    the GRPO loop; sft.py the warm start; pipeline.py the whole job

The engine imports only torch, transformers, numpy and tqdm.
"""
from .advantage import group_advantages, group_stats, zero_variance_fraction
from .config import Config, make_config
from .loss import aggregate, clipped_surrogate, grpo_loss, kl_estimate
from .reward import REWARDS, combine, correctness, format_reward, rubric
from .tasks import classify_style, parse_answer, solution
from .tokenizer import build_tokenizer, decode, encode

__version__ = "0.1.0"

__all__ = [
    "Config", "make_config", "build_tokenizer", "encode", "decode",
    "group_advantages", "group_stats", "zero_variance_fraction",
    "grpo_loss", "clipped_surrogate", "kl_estimate", "aggregate",
    "REWARDS", "combine", "correctness", "format_reward", "rubric",
    "parse_answer", "classify_style", "solution",
]
