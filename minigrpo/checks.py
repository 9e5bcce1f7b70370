"""The allowed values and ranges of every setting, in one place: the Config and the public functions check here.

    check("loss_type", "mean")   # ValueError: loss_type='mean' is not one of: grpo, bnpo, dapo, dr_grpo, seq_sum
"""
from __future__ import annotations

import math

CHOICES: dict[str, tuple[str, ...]] = {
    "task": ("arithmetic", "arithmetic_hard", "equations", "multiplication"),   # the datasets of data.DATASETS
    "algo": ("grpo", "ppo", "reinforce", "rloo"),
    "scale": ("group", "batch", "none"),
    "std": ("sample", "population"),
    "kl_estimator": ("k1", "k2", "k3"),
    "loss_type": ("grpo", "bnpo", "dapo", "dr_grpo", "seq_sum", "cispo"),
    "importance_sampling_level": ("token", "sequence"),
    "old_logps": ("sampler", "recompute"),
    "answer_parser": ("strict", "last_number"),
    "dtype": ("float32", "bfloat16", "float16"),
    "sample_dtype": ("", "float32", "bfloat16", "float16"),
    "draw": ("multinomial", "inverse_cdf"),
}


# what a value must be: the fields (and function arguments) each rule covers
_RULES = [
    (lambda v: v > 0, "must be > 0", ("temperature", "lr", "sft_lr", "critic_lr", "cispo_max")),
    (lambda v: v >= 1, "must be >= 1 (a cap on the sampler-mismatch weight)", ("is_cap",)),
    (lambda v: v >= 0, "must be >= 0", ("eps_high", "beta", "std_eps", "weight_decay", "sft_weight_decay",
                                         "warmup_steps", "steps", "sft_steps", "value_clip", "overlong_cache",
                                         "trace_every", "micro_batch_size")),
    (lambda v: v >= 0, "must be >= 0 (0 = off)", ("top_k", "grad_clip", "sft_grad_clip")),
    (lambda v: v >= 1, "must be >= 1", ("prompts_per_step", "num_iterations", "sft_batch_size", "max_new_tokens",
                                         "eval_batch_size", "max_sampling_rounds", "trace_groups")),
    (lambda v: v == 0 or v > 1, "must be 0 (off) or > 1 (a cap on the ratio where A < 0)", ("delta",)),
    (lambda v: 0 <= v < 1, "must be in [0, 1)", ("eps_low", "adam_beta1", "adam_beta2", "sft_adam_beta1",
                                                 "sft_adam_beta2")),
    (lambda v: 0 <= v <= 1, "must be in [0, 1]", ("sft_warmup_frac", "sft_min_lr_frac", "gae_lambda")),
    (lambda v: 0 < v <= 1, "must be in (0, 1]", ("top_p", "gamma")),
    (lambda v: v >= 2, "must be >= 2 (a group needs two samples to compare)", ("group_size",)),
]
RANGES: dict[str, tuple] = {name: (test, must) for test, must, names in _RULES for name in names}


def check(name: str, value) -> None:
    """Raise a one-line ValueError if `value` is not allowed for the setting `name` (CHOICES or RANGES)."""
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ValueError(f"{name}={value!r} is not one of: {', '.join(CHOICES[name])}")
        return
    test, must = RANGES[name]
    if isinstance(value, float) and math.isnan(value) or not test(value):
        raise ValueError(f"{name}={value!r} {must}")
