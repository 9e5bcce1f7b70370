"""One flat configuration for a run: the model, the SFT warm start, the GRPO loop and lesson 8's baselines.

Every knob is a field with a one-line comment (CleanRL's `Args`), which is also its `--help`. The
defaults are the CPU preset: a ~1M parameter model that learns two-digit arithmetic in minutes.

    cfg = make_config("gpu", steps=400)     # a preset plus overrides, checked
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import json
import os
import tokenize
from dataclasses import dataclass

import yaml

from .checks import CHOICES, RANGES, check
from .files import atomic_write
from .reward import parse_reward


@dataclass
class Config:
    # --- run ---
    preset: str = "cpu"            # name of the preset these values came from
    task: str = "arithmetic"       # dataset folder under data_dir: arithmetic | arithmetic_hard | equations | multiplication
    data_dir: str = "data"         # where `python -m minigrpo data` wrote the JSONL splits
    out_dir: str = "runs/arithmetic"  # checkpoints, metrics.jsonl and run_config.json go here
    seed: int = 0                  # seeds python, numpy and torch; same seed, same run (on the CPU)
    device: str = "auto"           # "auto" (CUDA if present, else CPU), "cpu", "cuda", "cuda:1", ...
    # --- your own data: any JSONL of "prompt" and "answer" (free text, e.g. GSM8K) in place of data_dir/<task>/ ---
    train_file: str = ""           # GRPO's prompts (with test_file); records without a "task" are free text
    test_file: str = ""            # the held-out problems
    sft_file: str = ""             # SFT's demonstrations ("solution" if given, else "answer"); or use --sft_steps 0
    answer_parser: str = "strict"  # free text: "strict" (#### n, \boxed{n}, <answer>n</answer>) or "last_number"
    # --- your own model: a local transformers folder (AutoModelForCausalLM + AutoTokenizer), nothing downloaded ---
    model: str = ""                # that folder, in place of the course's model below ("" = the course's)
    chat_template: bool = False    # wrap each prompt in the tokenizer's chat template, with the generation prompt
    # --- memory and speed (GPU) ---
    micro_batch_size: int = 0      # rows per forward and backward (0 = all at once); gradients add up to the batch's
    dtype: str = "float32"         # float32 | bfloat16 | float16 (CUDA): autocast for the forwards; weights, Adam: float32
    torch_compile: bool = False    # torch.compile the training forward (recompiles as the batch changes: slower on the CPU)
    sample_dtype: str = ""         # the sampler's autocast dtype ("" = dtype); if it differs, is_cap corrects the mismatch
    is_cap: float = 3.0            # sampler != trainer: weight each token's loss by min(pi_train / pi_sampler, is_cap) (TIS)
    compact_decoding: bool = True  # finished rows leave the decoding batch (same tokens; less work when lengths differ)
    share_prompts: bool = True     # a group's G rows share one copy of their prompt: in the sampler's cache, in training
    merge_prefixes: bool = True    # a group's rows with the same tokens so far decode as one (a prefix tree); equal rows
                                   # train as one (same tokens, same gradient; less work when samples agree)
    draw: str = "multinomial"      # how a token is drawn: "multinomial" (V random numbers per row) or "inverse_cdf" (one)
    # --- model (a Llama-style decoder built from a transformers config, no download) ---
    hidden_size: int = 128         # width of the residual stream
    num_layers: int = 4            # transformer blocks
    num_heads: int = 4             # attention heads (head_dim = hidden_size / num_heads)
    intermediate_size: int = 512   # width of the SwiGLU MLP
    max_seq_len: int = 96          # longest prompt + completion the model will see
    # --- SFT warm start (supervised, on demonstrations from the sft split) ---
    sft_steps: int = 1250          # optimizer steps of supervised training (0 to skip)
    sft_batch_size: int = 128      # demonstrations per SFT step
    sft_lr: float = 1e-3           # AdamW peak learning rate for SFT
    sft_warmup_frac: float = 0.05  # fraction of sft_steps of linear warm-up (at least one step)
    sft_min_lr_frac: float = 0.1   # after warm-up, cosine decay from sft_lr down to this fraction of it
    sft_adam_beta1: float = 0.9    # AdamW beta1 for SFT
    sft_adam_beta2: float = 0.98   # AdamW beta2 for SFT
    sft_weight_decay: float = 0.01  # AdamW weight decay for SFT
    sft_grad_clip: float = 1.0     # clip SFT gradients' global norm to this (0 = off)
    sft_examples: int = 0          # use only the first N demonstrations (0 = all of sft.jsonl)
    # --- GRPO: sampling a group per prompt ---
    steps: int = 500               # GRPO steps; each samples a fresh batch of prompts
    prompts_per_step: int = 256    # B: prompts per step
    group_size: int = 8            # G: completions sampled per prompt (G >= 2)
    max_new_tokens: int = 6        # completion length limit, EOS included
    temperature: float = 1.0       # sampling temperature; log-probs use the same one
    top_k: int = 0                 # sample from the k most likely tokens (0 = off)
    top_p: float = 1.0             # nucleus sampling mass (1.0 = off)
    dynamic_sampling: bool = False  # DAPO §3.2: drop groups of equal rewards, sample more prompts until B informative ones
    max_sampling_rounds: int = 3   # dynamic sampling: at most this many batches of B prompts per step
    # --- GRPO: reward and advantage ---
    reward: str = "correct"        # reward names and weights, e.g. "correct" or "rubric" or "correct:1,format:0.1"
    scale: str = "group"           # advantage denominator: "group" std, "batch" std or "none" (Dr. GRPO)
    std: str = "sample"            # "sample" (divide by G-1, as the course's formula) or "population" (by G)
    std_eps: float = 0.0           # added to the std before dividing (TRL adds 1e-4; equal rewards give 0 anyway)
    overlong_cache: int = 0        # DAPO §3.4 soft overlong punishment: the last N tokens before max_new_tokens cost up to -1
    # --- GRPO: the clipped objective ---
    num_iterations: int = 1        # mu: updates on each sampled batch against the frozen old policy
    lr: float = 1e-4               # AdamW learning rate for GRPO (constant after warm-up)
    warmup_steps: int = 10         # GRPO steps of linear learning-rate warm-up (Adam's first steps are large)
    adam_beta1: float = 0.9        # AdamW beta1 for GRPO (and lesson 8's critic)
    adam_beta2: float = 0.99       # AdamW beta2 for GRPO (and lesson 8's critic)
    weight_decay: float = 0.0      # AdamW weight decay for GRPO (and lesson 8's critic)
    eps_low: float = 0.2           # ratio may fall to 1 - eps_low before clipping (A < 0)
    eps_high: float = 0.28         # ratio may rise to 1 + eps_high before clipping (A > 0; DAPO clip-higher)
    beta: float = 0.0              # KL penalty to the frozen reference (SFT) model; 0 = no reference model
    kl_estimator: str = "k3"       # k1 | k2 | k3 (Schulman's estimators; DeepSeekMath uses k3)
    log_kl: bool = False           # keep pi_ref at beta = 0 too, to log the samples' KL to it (a measurement; one forward)
    use_bias_correction_kl: bool = False  # weight the KL term by the ratio pi_theta / pi_old (DeepSeek-V3.2; TRL)
    loss_type: str = "grpo"        # grpo | bnpo | dapo | dr_grpo | seq_sum (how tokens are averaged) | cispo (MiniMax-M1)
    importance_sampling_level: str = "token"  # "token", or "sequence": GSPO's one ratio per completion, clipped whole
    delta: float = 0.0             # two-sided clipping: cap the ratio at delta where A < 0 (TRL's delta; 0 = off)
    cispo_max: float = 5.0         # cispo: cap on the detached importance weight (TRL's epsilon_high for cispo)
    old_logps: str = "sampler"     # mu > 1: pi_old's log-probs from the "sampler", or "recompute"d by a training forward
    grad_clip: float = 1.0         # clip the gradient's global norm to this (0 = off)
    mask_truncated: bool = False   # DAPO's overlong filtering: no loss on completions cut off without EOS
    skip_zero_adv: bool = True     # leave rows with advantage 0 out of the backward pass (same gradient when beta=0)
    # --- lesson 8's other policy-gradient methods (ppo.py; algo='ppo' uses the rest of this group); GRPO ignores them ---
    algo: str = "grpo"             # grpo | ppo (critic + GAE) | reinforce (batch-mean baseline) | rloo (leave-one-out)
    gamma: float = 1.0             # PPO: discount per token (1: the reward at the end counts fully everywhere)
    gae_lambda: float = 0.95       # PPO: GAE's lambda (1: A_t = R - V(s_t); 0: one-step TD)
    critic_lr: float = 1e-3        # PPO: AdamW learning rate of the critic (a copy of the policy's body + value head)
    value_clip: float = 0.2        # PPO: clip the value update to old V +- value_clip (as PPO2 / TRL)
    # --- evaluation, logging, checkpoints ---
    eval_every: int = 50           # evaluate on held-out test prompts every N GRPO steps (0 = only at the end)
    eval_size: int = 500           # held-out test problems per evaluation (0 = all)
    eval_batch_size: int = 256     # prompts per greedy generation batch when evaluating
    save_every: int = 100          # write a checkpoint every N GRPO steps (0 = only at the end)
    # --- lesson 9's token trace, the clip scrubber's data (a measurement: training is the same with or without) ---
    trace_every: int = 0           # every N steps, write each token's ratio, clip, entropy, advantage to tokens.jsonl (0 = off)
    trace_groups: int = 4          # groups (prompts) per traced step


PRESETS: dict[str, dict] = {
    # ~1M parameters; two-digit + and -; minutes on a 2-core CPU.
    "cpu": {},
    # A 10M-parameter model on 3-digit + and -; about 4 minutes on one H200 (benchmarks/README.md: the estimate).
    # lr 3e-5 rather than the first GPU run's 3e-4, under which held-out accuracy fell (1.9% -> 0.8%); not yet tuned.
    "gpu": dict(
        task="arithmetic_hard", out_dir="runs/arithmetic_hard",
        hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1024,
        sft_steps=3000, sft_batch_size=256, sft_lr=1e-3,
        steps=500, prompts_per_step=128, group_size=16, max_new_tokens=8,
        lr=3e-5, eval_every=100, eval_size=1000, save_every=250,
    ),
    # The note's section 6: solve ax+b=c, rewarded by its rubric (9/8/6/0); ~11 min on a
    # 2-core CPU. A small lr, because the style signal is full-strength (lesson 07).
    "equations": dict(
        task="equations", out_dir="runs/equations", reward="rubric",
        sft_steps=800, max_new_tokens=48, prompts_per_step=64, group_size=8,
        steps=150, lr=2e-5, eval_every=25, eval_size=300, save_every=50,
    ),
    # Long answers (lesson 11): worked multiplication, 53-152 tokens, and half the SFT demonstrations state the
    # product alone; GRPO finds that the working is what gets products right. ~20 min on a 2-core CPU, SFT most.
    "long": dict(
        task="multiplication", out_dir="runs/long", max_seq_len=192, max_new_tokens=160,
        sft_steps=1000, sft_batch_size=64,
        steps=100, prompts_per_step=32, group_size=8, lr=3e-5,
        eval_every=25, eval_size=0, save_every=50,
    ),
    # Seconds, for tests and smoke runs.
    "tiny": dict(
        out_dir="runs/tiny", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
        sft_steps=20, sft_batch_size=16, steps=4, prompts_per_step=4, group_size=4,
        eval_every=2, eval_size=16, save_every=2,
    ),
}

FIELDS = tuple(f.name for f in dataclasses.fields(Config))


def make_config(preset: str = "cpu", **overrides) -> Config:
    """A Config from a named preset plus field overrides; raises a one-line ValueError on bad names or values."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    for name in overrides:
        if name not in FIELDS:
            raise ValueError(f"unknown config field {name!r}")
    cfg = Config(**{**PRESETS[preset], "preset": preset, **overrides})
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Raise a one-line ValueError naming the first field whose value cannot work."""
    for name in (*CHOICES, *RANGES):
        if name in FIELDS:
            check(name, getattr(cfg, name))
    if cfg.max_seq_len <= cfg.max_new_tokens:
        raise ValueError(f"max_seq_len={cfg.max_seq_len!r} must exceed max_new_tokens")
    if cfg.num_heads < 1 or cfg.hidden_size % cfg.num_heads:
        raise ValueError(f"hidden_size={cfg.hidden_size!r} must be a multiple of num_heads")
    if cfg.algo == "ppo" and cfg.beta > 0:
        raise ValueError(f"beta={cfg.beta!r} with algo='ppo': lesson 8's PPO has no KL term; use beta=0")
    if cfg.algo == "ppo" and cfg.log_kl:
        raise ValueError("log_kl=True with algo='ppo': lesson 8's PPO logs no KL to a reference; use algo='grpo'")
    if cfg.algo == "ppo" and cfg.dynamic_sampling:
        raise ValueError("dynamic_sampling=True with algo='ppo': dynamic sampling filters GRPO's groups; use algo='grpo'")
    if cfg.overlong_cache >= cfg.max_new_tokens:
        raise ValueError(f"overlong_cache={cfg.overlong_cache!r} must be below max_new_tokens={cfg.max_new_tokens}")
    parse_reward(cfg.reward)  # here, not when GRPO starts: a typo must not cost the SFT stage first
    if bool(cfg.train_file) != bool(cfg.test_file):
        given, missing = ("train_file", "test_file") if cfg.train_file else ("test_file", "train_file")
        raise ValueError(f"{given} is given but {missing} is not: a run on your own data needs both")
    if cfg.train_file and cfg.sft_steps and not cfg.sft_file:
        raise ValueError(f"sft_steps={cfg.sft_steps} with train_file: give --sft_file (demonstrations), "
                         f"or --sft_steps 0 to start GRPO from the model as it is")
    rows = cfg.prompts_per_step * cfg.group_size
    if cfg.micro_batch_size and rows % cfg.micro_batch_size:
        raise ValueError(f"micro_batch_size={cfg.micro_batch_size} does not divide the {rows} rows of a step "
                         f"(prompts_per_step x group_size); choose a divisor of {rows}")
    if cfg.micro_batch_size and cfg.sft_steps and cfg.sft_batch_size % cfg.micro_batch_size:
        raise ValueError(f"micro_batch_size={cfg.micro_batch_size} does not divide sft_batch_size="
                         f"{cfg.sft_batch_size}; choose a divisor of both {rows} and {cfg.sft_batch_size}")
    if "rubric" in cfg.reward and cfg.task != "equations":
        raise ValueError(f"reward={cfg.reward!r} uses the rubric, which scores equation solutions; "
                         f"use it with task='equations' (or --preset equations)")


def save_config(cfg: Config, path: str) -> None:
    """Write every field of `cfg` as JSON, atomically; `--config path` (or read_config_file) reads it back."""
    atomic_write(path, lambda f: json.dump(dataclasses.asdict(cfg), f, indent=2))


def read_config_file(path: str) -> dict:
    """The fields set in a JSON or YAML file ({field: value}); one-line errors naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    kind = "YAML" if path.endswith((".yaml", ".yml")) else "JSON"
    try:
        with open(path, encoding="utf-8") as f:
            fields = yaml.safe_load(f) if kind == "YAML" else json.load(f)
    except Exception as e:  # a parse error, or bytes that are not UTF-8
        raise ValueError(f"{path}: not valid {kind} ({str(e).splitlines()[0]})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(fields).__name__}")
    unknown = [k for k in fields if k not in FIELDS]
    if unknown:
        raise ValueError(f"{path}: unknown config field {unknown[0]!r}")
    return fields


def field_comments() -> dict[str, str]:
    """{field: its one-line comment in the Config class above} (the command line's help texts)."""
    comments, name = {}, None
    for t in tokenize.generate_tokens(io.StringIO(inspect.getsource(Config)).readline):
        if t.type == tokenize.NAME and t.start[1] == 4 and name is None:
            name = t.string
        elif t.type == tokenize.COMMENT and name is not None:
            comments[name] = t.string.lstrip("# ")
        if t.type == tokenize.NEWLINE:
            name = None
    return comments
