"""`python -m minigrpo doctor`: a pre-flight check of a GRPO run, and the same kind of rules watching its metrics.

The questions GRPO users ask most on trainers' issue trackers are a few: the loss is 0, the reward stays 0
(completions cut off by the limit), every group has the same reward, the sampler's and the trainer's
log-probs disagree, entropy collapsed, the answers keep getting longer. The engine knows its config and
sees every metric, so it can say which of these is happening, why, what to change, and which lesson
explains it.

    preflight(cfg)          before training: samples a few groups with the run's settings and times one step
    Watch(cfg).check(row)   during training (diagnose.py): a diagnosis the first time a rule fires

Each finding is one line: OK, WARN or FAIL, the measured number, why, the fix, the lesson.
"""
from __future__ import annotations

import copy
import math
import os

import torch

from .advantage import zero_variance_fraction
from .diagnose import LEVELS, Finding, Watch  # noqa: F401  (Watch: the same rules during training)


def zero_variance_expected(pass_rates: list[float], group_size: int) -> float:
    """The share of groups whose G rewards are all equal when prompt i is solved with probability p_i:
    the mean of p^G + (1-p)^G (all right or all wrong) over the prompts."""
    return sum(p ** group_size + (1 - p) ** group_size for p in pass_rates) / len(pass_rates)


def duration(seconds: float) -> str:
    """A time as people say it: "40 s", "3.5 min", "2.1 h"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------- the settings alone


def settings_findings(cfg, parameters: int) -> list[Finding]:
    """Settings outside what the course found to work, and combinations that cannot work."""
    out = []
    small = parameters < 20_000_000
    top = 5e-4 if small else 1e-5   # the course: 1e-4 .. 3e-4 at 1-10M parameters; the README's 0.5B recipe 1e-6
    if cfg.lr > top:
        out.append(Finding("WARN", "learning rate", f"lr={cfg.lr:g} for {parameters / 1e6:.1f}M parameters",
                           f"above {top:g}, the most the course found to work at this size; RL updates this "
                           "large overshoot and clip or collapse", f"--lr {top / 5:g}", "6"))
    else:
        out.append(Finding("OK", "learning rate", f"lr={cfg.lr:g} for {parameters / 1e6:.1f}M parameters",
                           "within the range the course found to work"))
    if cfg.warmup_steps == 0:
        out.append(Finding("WARN", "warm-up", "warmup_steps=0", "Adam's first steps are as large as lr whatever "
                           "the gradient's size", "--warmup_steps 10", "6"))
    if cfg.group_size < 4:
        out.append(Finding("WARN", "group size", f"G={cfg.group_size}", "the group's mean and std of so few "
                           "rewards are noisy baselines, and most groups come out all equal", "--group_size 8", "2"))
    if cfg.eps_low > 0.5 or cfg.eps_high > 0.5:
        out.append(Finding("WARN", "clip range", f"eps_low={cfg.eps_low:g}, eps_high={cfg.eps_high:g}",
                           "a ratio allowed to move this far is hardly a trust region", "--eps_low 0.2 "
                           "--eps_high 0.28", "3"))
    if cfg.num_iterations == 1 and (cfg.eps_low, cfg.eps_high, cfg.delta) != (0.2, 0.28, 0.0) \
            and cfg.loss_type != "cispo":
        out.append(Finding("WARN", "clip never acts", f"mu=1 with eps_low={cfg.eps_low:g}, eps_high={cfg.eps_high:g}",
                           "with one update per batch the ratio is exactly 1 when the gradient is taken, so "
                           "these settings change nothing", "--num_iterations 2 (or leave the clip range)", "3"))
    if cfg.beta > 0.1:
        out.append(Finding("WARN", "KL coefficient", f"beta={cfg.beta:g}", "a pull to the reference this strong "
                           "can outweigh the reward (DeepSeekMath used 0.04)", "--beta 0.04 (or 0)", "4"))
    return out


# ---------------------------------------------------------------- what the sampled groups show


def sample_findings(cfg, lengths: list[int], truncated: list[bool], correct: list[bool], rewards: list[float],
                    logp_diff: float, prompts: int, prompt_len: int = 0,
                    greedy_correct: list[bool] | None = None, positions: int | None = None) -> list[Finding]:
    """Findings from sampled groups: N rows, G per group, in order. `prompt_len` is the longest prompt's
    tokens, `positions` the model's position count (None: not fixed yet, SFT is still to build the model),
    `greedy_correct` whether the greedy answer to each of the groups' prompts is right (None: not asked)."""
    G = cfg.group_size
    out = []
    trunc = sum(truncated) / len(truncated)
    ends = sorted(lengths)
    p99 = ends[min(len(ends) - 1, math.ceil(0.99 * len(ends)) - 1)]
    cover = f"the limit that covers 99% is {p99}" if trunc <= 0.01 else f"more than {cfg.max_new_tokens} is needed"
    level = "FAIL" if trunc >= 0.5 else "WARN" if trunc >= 0.05 else "OK"
    limit = max(2 * cfg.max_new_tokens, p99)
    fix = f"--max_new_tokens {limit} (or --overlong_cache / --mask_truncated)"
    if prompt_len + limit > cfg.max_seq_len:   # prompt and completion must fit the sequence, and the model's positions
        fix = (f"--max_new_tokens {limit} --max_seq_len {prompt_len + limit} (or --overlong_cache / "
               "--mask_truncated)")
        if positions is not None and prompt_len + limit > positions:
            fix = (f"--mask_truncated or --overlong_cache: this model has {positions} positions, and a limit of "
                   f"{limit} needs {prompt_len + limit} (SFT again with --max_seq_len {prompt_len + limit})")
    out.append(Finding(level, "truncation", f"{100 * trunc:.1f}% of completions hit max_new_tokens="
                       f"{cfg.max_new_tokens}; {cover}",
                       "a cut-off completion has no final answer, so its reward is 0 whatever it was doing", fix,
                       "9"))
    groups = [list(range(i, i + G)) for i in range(0, len(rewards), G)]
    pass_rates = [sum(correct[j] for j in g) / G for g in groups]
    p = sum(pass_rates) / len(pass_rates)
    one_rate = zero_variance_expected([p], G)     # as if every prompt had the mean pass rate
    equal = zero_variance_fraction(torch.tensor(rewards), G)
    informative = prompts * (1 - equal)
    measured = (f"pass rate {100 * p:.0f}%; if every prompt had it, p^G + (1-p)^G would put {100 * one_rate:.0f}% of "
                f"groups at one reward (G={G}), and {100 * equal:.0f}% of the sampled groups had equal rewards (more "
                f"when the prompts' pass rates differ): about {informative:.0f} informative groups of {prompts} per "
                f"step")
    if equal == 1.0:
        hint = "too hard: SFT first (--sft_steps)" if p == 0 else "too easy, or a reward that cannot tell the " \
            "completions apart" if p == 1 or len(set(rewards)) == 1 else "a reward that gives a group one value"
        out.append(Finding("FAIL", "signal", measured, "every advantage is 0: GRPO learns nothing", hint, "2"))
    elif equal > 0.9:
        out.append(Finding("WARN", "signal", measured, "most groups teach nothing and the step is spent on them",
                           "--dynamic_sampling true, a larger G, or harder / easier prompts", "9"))
    else:
        out.append(Finding("OK", "signal", measured, "enough groups whose completions differ in reward"))
    if greedy_correct:
        out.append(greedy_finding(cfg, p, sum(greedy_correct) / len(greedy_correct), sum(lengths) / len(lengths)))
    level = "FAIL" if logp_diff > 1.0 else "WARN" if logp_diff > 0.1 else "OK"
    mismatch = bool(cfg.sample_dtype) and cfg.sample_dtype != cfg.dtype
    out.append(Finding(level, "sampler vs trainer", f"largest |log-prob difference| {logp_diff:.2g} on the same "
                       "tokens", "the ratio assumes the sampler's policy is the one being trained"
                       + ("; the truncated importance weight (is_cap) corrects for it" if mismatch else ""),
                       "--sample_dtype float32 (or a lower --is_cap)" if mismatch else
                       "sample and train in one precision (--dtype)", "5"))
    return out


def greedy_finding(cfg, sampled: float, greedy: float, mean_len: float) -> Finding:
    """The samples' pass rate against the greedy answers' on the same prompts: long answers lose it token by token."""
    measured = (f"greedy answers {100 * greedy:.0f}% right, samples at temperature {cfg.temperature:g} "
                f"{100 * sampled:.0f}% ({mean_len:.0f} tokens on average)")
    if greedy - sampled > 0.3:
        return Finding("WARN", "sampling vs greedy", measured, "a sample is right only if every token is, so slips "
                       "at this temperature add up over long answers, and GRPO learns from the samples",
                       "more SFT (--sft_steps), or a lower --temperature", "11")
    return Finding("OK", "sampling vs greedy", measured, "the samples keep most of what greedy gets right")


def memory_estimate(cfg, model, rows: float, seq: int) -> tuple[float, float]:
    """Bytes one GRPO update needs, roughly: (the state: float32 weights, gradients and AdamW's two moments,
    16 bytes a parameter, and a reference copy with beta > 0 or log_kl; the activations the backward keeps for a
    micro-batch of the `rows` trained: about 20 hidden-sized and 3 MLP-wide values per token per layer)."""
    c = model.config
    n = sum(p.numel() for p in model.parameters())
    chunk = min(cfg.micro_batch_size or rows, rows)
    per_token = c.num_hidden_layers * (20 * c.hidden_size + 3 * c.intermediate_size) * 4
    width = 2 if cfg.dtype != "float32" else 4
    return n * (16 + (4 if cfg.beta > 0 or cfg.log_kl else 0)), chunk * seq * per_token * width / 4


def cpu_peak(work):
    """(work(), the most bytes of tensors alive at once while it ran, above what was alive when it began), from
    torch.profiler's memory timeline (every CPU allocation and free)."""
    import json
    import tempfile
    import warnings
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        out = work()
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # deprecated for CUDA's snapshots; the CPU has no other
        prof.export_memory_timeline(os.path.join(d, "timeline.json"), device="cpu")
        with open(os.path.join(d, "timeline.json"), encoding="utf-8") as f:
            _, sizes = json.load(f)
    totals = [sum(s) for s in sizes]
    return out, max(totals) - totals[0]


# ---------------------------------------------------------------- the pre-flight check


def start_policy(cfg, init: str | None, device):
    """The policy GRPO would start from: --init, else the run's SFT checkpoint, else --model, else a fresh model."""
    from .checkpoint import load_model
    from .model import build_model
    from .pipeline import load_pretrained, prepare_tokenizer
    from .tokenizer import build_tokenizer
    sft = os.path.join(cfg.out_dir, "sft")
    if init:
        model, tok = load_model(init, device)
        return model, prepare_tokenizer(tok), f"--init {init}"
    if os.path.isdir(sft):
        model, tok = load_model(sft, device)
        return model, prepare_tokenizer(tok), f"the run's SFT checkpoint {sft}"
    if cfg.model:
        model, tok = load_pretrained(cfg.model, device)
        return model, tok, f"--model {cfg.model} as it is (no SFT checkpoint at {sft} yet)"
    tok = build_tokenizer()
    return build_model(cfg, tok), tok, f"a fresh model (no SFT checkpoint at {sft}: train or sft writes one)"


def preflight(cfg, init: str | None = None, prompts: int = 16) -> tuple[str, list[Finding]]:
    """Sample `prompts` groups with the run's settings from the policy GRPO would start from, answer the same
    prompts greedily (the pass rate of samples against greedy answers), time one step of the run's size (the
    second of two, on a copy), measure its update's memory (on the CPU under the profiler, on CUDA by the
    allocator's peak), and check the settings. Returns (which policy, findings)."""
    from .model import pick_device
    from .pipeline import check_model, prepare_model, seed_everything, split
    from .reward import parse_reward
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model, tok, which = start_policy(cfg, init, device)
    check_model(cfg, model, tok, device)
    model = prepare_model(model, device)
    train = split(cfg, "train", tok)
    reward_fn = parse_reward(cfg.reward)
    prompt_len, lengths, sampled = _sampled_findings(cfg, model, tok, which, train, reward_fn, prompts, device)
    findings = settings_findings(cfg, sum(p.numel() for p in model.parameters())) + sampled
    findings.append(_step_finding(cfg, model, tok, train, reward_fn, device, prompt_len, lengths))
    return which, findings


def _sampled_findings(cfg, model, tok, which: str, train: list[dict], reward_fn, prompts: int, device):
    """preflight's findings from `prompts` sampled groups and the greedy answers to the same prompts. Returns
    (the padded prompt length P, the completions' lengths, the findings)."""
    from .data import prompt_batch
    from .evaluate import generate
    from .model import completion_logprobs, precision
    from .sampler import rollout
    from .tasks import is_correct
    from .tokenizer import encode
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    batch = prompt_batch(train, 0, min(prompts, cfg.prompts_per_step), cfg.seed)
    with precision(device, cfg.sample_dtype or cfg.dtype):
        ro = rollout(model, tok, batch, reward_fn, cfg, gen)
    s = ro.samples
    with torch.no_grad(), precision(device, cfg.dtype):
        trained = completion_logprobs(model, s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask,
                                      cfg.temperature, share_prompts=cfg.share_prompts,
                                      merge=cfg.merge_prefixes).float()
    diff = ((trained - s.logps).abs() * s.completion_mask).max().item()
    lengths = s.completion_mask.sum(1).tolist()
    with precision(device, cfg.sample_dtype or cfg.dtype):
        greedy = generate(model, tok, [r["prompt"] for r in batch], max_new_tokens=cfg.max_new_tokens,
                          device=device, chat=cfg.chat_template)
    greedy_correct = [is_correct(r, c) for r, c in zip(batch, greedy)]
    longest = max(len(encode(tok, r["prompt"], chat=cfg.chat_template)) for r in train)
    fresh = which.startswith("a fresh model")   # the run's SFT builds it with cfg.max_seq_len positions
    findings = sample_findings(cfg, lengths, s.truncated.tolist(), ro.correct, ro.rewards.tolist(), diff,
                               cfg.prompts_per_step, longest, greedy_correct,
                               None if fresh else getattr(model.config, "max_position_embeddings", None))
    return s.prompt_ids.shape[1], lengths, findings


def _step_finding(cfg, model, tok, train: list[dict], reward_fn, device, prompt_len: int, lengths) -> Finding:
    """One step of the run's size on a copy (the policy and the generator are left as they were), timed (the
    second of two) and its memory estimated and measured: the "one step" finding."""
    from .data import prompt_batch
    from .model import sync_clock
    from .optim import make_optimizer
    from .trainer import grpo_step
    twin = copy.deepcopy(model)
    opt = make_optimizer(twin.parameters(), cfg.lr, cfg.adam_beta1, cfg.adam_beta2, cfg.weight_decay)
    ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 or cfg.log_kl else None
    for k in range(2):   # the second is timed: the first warms caches and kernels up
        t0 = sync_clock(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row = grpo_step(twin, ref, tok, opt, prompt_batch(train, k, cfg.prompts_per_step, cfg.seed), reward_fn, cfg,
                        torch.Generator(device=device).manual_seed(cfg.seed + 1))
        seconds = sync_clock(device) - t0
    trained = cfg.prompts_per_step * cfg.group_size * (1 - row["zero_var_frac"] if cfg.skip_zero_adv else 1)
    state, activations = memory_estimate(cfg, model, trained, prompt_len + cfg.max_new_tokens)
    MB = 2**20
    if device.type == "cuda":
        measured = f"measured peak {torch.cuda.max_memory_allocated(device) / MB:,.0f} MB"
    else:   # the step again, on the next batch, under the profiler: what it allocates above its start
        peak = _cpu_step_peak(cfg, twin, ref, opt, tok, train, reward_fn, device)
        grads = sum(p.numel() for p in model.parameters()) * 4
        measured = (f"the step measured {peak / MB:,.0f} MB above its start on the CPU, against "
                    f"{(grads + activations) / MB:,.0f} MB estimated for its gradients and activations")
    mean_len = sum(lengths) / len(lengths)
    longer = ""   # long answers: a step's time grows with its completions, which GRPO may lengthen (lesson 11)
    if cfg.max_new_tokens > 1.5 * mean_len:
        longer = (f" at today's {mean_len:.0f} tokens per completion (up to about "
                  f"{duration(seconds * cfg.steps * cfg.max_new_tokens / mean_len)} if they grew to the limit)")
    return Finding("OK", "one step", f"{seconds:.2f} s for {cfg.prompts_per_step} x {cfg.group_size} "
                   f"completions on {device}; {cfg.steps} steps take about {duration(seconds * cfg.steps)}"
                   f"{longer}; about {(state + activations) / MB:,.0f} MB by estimate; {measured}",
                   f"sampling {row['sample_s']:.2f} s, learning {row['learn_s']:.2f} s")


def _cpu_step_peak(cfg, twin, ref, opt, tok, train: list[dict], reward_fn, device) -> int:
    """Bytes the run's own step (trainer.grpo_step: sampling, scoring, update) allocates above its start on the
    CPU, under the profiler, on the batch after the timed ones."""
    from .data import prompt_batch
    from .trainer import grpo_step
    _, peak = cpu_peak(lambda: grpo_step(twin, ref, tok, opt, prompt_batch(train, 2, cfg.prompts_per_step, cfg.seed),
                                         reward_fn, cfg, torch.Generator(device=device).manual_seed(cfg.seed + 2)))
    return peak


def report(which: str, findings: list[Finding]) -> str:
    lines = [f"doctor: GRPO would start from {which}"] + [f.line() for f in findings]
    worst = max((LEVELS.index(f.level) for f in findings), default=0)
    lines.append(f"doctor: {sum(f.level == 'WARN' for f in findings)} WARN, "
                 f"{sum(f.level == 'FAIL' for f in findings)} FAIL -> {LEVELS[worst]}")
    return "\n".join(lines)
