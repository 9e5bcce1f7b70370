"""The generation seam: how GRPO gets its completions, and how the generator gets the policy's new weights.

A step of GRPO needs, for B prompts, G sampled completions each with the log-probability of every sampled
token under the policy that sampled them (pi_old in the ratio; DeepSeekMath §4.1.1). Whatever produces them
(the course's KV-cache sampler, `model.generate`, or a separate inference engine such as vLLM, which holds a
copy of the weights) is a `Generation`:

    Symbol      | Shape  | Description
    prompt_ids  | (B, P) | prompt tokens, left-padded with the tokenizer's pad id
    prompt_mask | (B, P) | 1 for real tokens, 0 for padding
    returns     |        | sampler.Samples of N = B*G rows, a prompt's G rows together, completions (N, T)
                |        | right-padded, their mask (EOS included), log-probs and entropy of each token

    generation.sample(prompt_ids, prompt_mask, group_size=G, generator=g) -> Samples
    generation.load_weights(policy)      after every update: the generator now samples the new policy

`CacheGeneration` (in sampler.py, beside sample_group; importable from here) is the default: sample_group with
the run's settings on the live policy, so load_weights only points it at the policy. sampler.rollout,
trainer.grpo_step and trainer.train_grpo take any other.
"""
from __future__ import annotations

from typing import Protocol

import torch

from .sampler import CacheGeneration, Samples  # noqa: F401  (the default lives beside sample_group)


class Generation(Protocol):
    """Prompts in, G completions each with their log-probs out; the new weights in after each update."""

    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, group_size: int,
               generator: torch.Generator | None) -> Samples: ...

    def load_weights(self, policy) -> None: ...
