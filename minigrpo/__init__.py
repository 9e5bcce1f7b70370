"""minigrpo: GRPO (Group Relative Policy Optimization) from first principles, small enough to read.

A step of GRPO, one file per stage, and the loop that runs them:

    sampler.py    1-2. sample a group of G completions per prompt (KV cache) and score them (reward.py)
    advantage.py  3.   normalise the rewards within each group
    loss.py       4.   the clipped objective with decoupled eps_low / eps_high, KL, aggregation
    optim.py      4.   mu AdamW updates of that objective on the sampled batch
    trainer.py         the step and the loop; sft.py the warm start; pipeline.py the whole job

The engine imports only torch, transformers, numpy, tqdm and PyYAML; the lessons' helpers live
apart, in minigrpo.course.
"""
from .advantage import group_advantages, group_stats, zero_variance_fraction
from .config import Config, make_config
from .loss import aggregate, clipped_surrogate, grpo_loss, kl_estimate
from .reward import REWARDS, combine, correctness, format_reward, rubric
from .tasks import classify_style, parse_answer, solution
from .tokenizer import build_tokenizer, decode, encode

__version__ = "0.2.0"

__all__ = [
    "Config", "make_config", "build_tokenizer", "encode", "decode",
    "group_advantages", "group_stats", "zero_variance_fraction",
    "grpo_loss", "clipped_surrogate", "kl_estimate", "aggregate",
    "REWARDS", "combine", "correctness", "format_reward", "rubric",
    "parse_answer", "classify_style", "solution",
]
