"""minigrpo: GRPO (Group Relative Policy Optimization) from first principles, small enough to read.

A step of GRPO, one file per stage, and the loop that runs them:

    sampler.py    1-2. sample a group of G completions per prompt (KV cache) and score them (reward.py)
    advantage.py  3.   normalise the rewards within each group
    loss.py       4.   the clipped objective with decoupled eps_low / eps_high, KL, aggregation
    optim.py      4.   mu AdamW updates of that objective on the sampled batch
    trainer.py         the step and the loop; sft.py the warm start; pipeline.py the whole job

The engine imports only torch, transformers, numpy, tqdm and PyYAML; the lessons' helpers live
apart, in minigrpo.course.

Shapes. Every tensor line carries its shape, in one set of symbols for the whole engine
(tests/test_engine_shape.py holds the shape comments to this table):

    Symbol | Meaning
    B      | prompts in a step (cfg.prompts_per_step; under torchrun, this rank's share)
    G      | completions per prompt, the group (cfg.group_size)
    N      | completions (rows) of a step, N = B*G
    N'     | the rows dynamic sampling keeps
    P      | prompt tokens, left-padded to the longest prompt
    T      | completion tokens, right-padded (at most cfg.max_new_tokens)
    Tb     | the completion tokens of one block of rows
    t      | tokens decoded so far, inside the sampler
    L      | tokens of a whole sequence (SFT's demonstrations)
    V      | vocabulary
    d      | hidden width (in attention, a head's)
    h      | attention heads
    h_kv   | key/value heads (grouped-query attention)
    w      | either d or P (the shared prompt's grouping)
    K      | rows kept for the update (all-equal groups dropped with cfg.skip_zero_adv)
    k      | rows of one micro-batch (cfg.micro_batch_size)
    C      | micro-batches in one update
    n      | some of the N rows: those still decoding (sampler), or one block (model, logprobs)
    n'     | the rows still decoding after this token
    m      | rows of the sampler's prefix tree: distinct prefixes still decoding (cfg.merge_prefixes)
    m'     | the prefix tree's rows after this token
    U      | distinct prompts (cfg.share_prompts)
    M      | tokens scored in one flattened call (logprobs.LinearLogprob)
    R      | rows whose tokens are traced (cfg.trace_groups * G)
    S      | stop token ids
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
