"""The GRPO training loop, stage by stage (DeepSeekMath, Algorithm 1).

Each step follows the pseudocode of the course:

    1. sample   B prompts, and a group of G completions for each (old policy)
    2. score    every completion with the verifiable reward
    3. normalise the rewards within each group -> advantages A_i
    4. update   mu times: maximise the clipped objective (ratio to the frozen
                old policy, decoupled eps_low / eps_high) minus beta * KL to
                the frozen reference policy (only built when beta > 0)
    5. log      one row of fixed keys; evaluate and checkpoint now and then

The old policy pi_old is the policy as it was at sampling time: its log-probs
are the ones the sampler returned (they equal the training forward's, see
sampler.py), so no extra forward pass is needed. With mu = 1 the ratio is
exactly 1 and pi_old is simply `logp.detach()`.
"""
from __future__ import annotations

import contextlib
import copy
import signal
import threading
import time

import torch
from tqdm.auto import tqdm

from .advantage import group_advantages, zero_variance_fraction
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, set_rng_state
from .config import Config
from .evaluate import evaluate
from .logger import MetricsLogger
from .loss import grpo_loss
from .model import completion_logprobs
from .reward import combine, score
from .sampler import pad_prompts, sample_group
from .tasks import parse_answer
from .tokenizer import decode_batch, encode


def parse_reward(spec: str):
    """"correct" or "correct:1,format:0.1" -> a reward function (weighted sum)."""
    weights = {}
    for part in spec.split(","):
        name, _, w = part.strip().partition(":")
        try:
            weights[name] = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"reward weight {w!r} for {name!r} is not a number (e.g. correct:1,format:0.1)")
    return combine(weights)


def prompt_batch(records: list[dict], step: int, batch_size: int, seed: int) -> list[dict]:
    """The prompts of GRPO step `step` (0-based): a seeded shuffle per epoch, a pure function of step."""
    per_epoch = max(1, len(records) // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    return [records[i] for i in order[k * batch_size:(k + 1) * batch_size].tolist()]


def sample_and_score(policy, tok, records: list[dict], reward_fn, cfg: Config, generator: torch.Generator):
    """Stages 1-2 of a step (shared with ppo.py): G completions per prompt, scored.

    Returns (samples with B*G rows, rewards (B*G,), correct: list of B*G bools,
    the perf_counter time when sampling ended and scoring began).
    """
    device = next(policy.parameters()).device
    G = cfg.group_size
    prompt_ids, prompt_mask = pad_prompts([encode(tok, r["prompt"]) for r in records],
                                          tok.pad_token_id, device)              # (B, P)
    s = sample_group(policy, prompt_ids, prompt_mask, group_size=G,
                     max_new_tokens=cfg.max_new_tokens, eos_id=tok.eos_token_id,
                     pad_id=tok.pad_token_id, temperature=cfg.temperature,
                     top_k=cfg.top_k, top_p=cfg.top_p, generator=generator)       # B*G rows
    completions = decode_batch(tok, s.completion_ids)
    t_sampled = time.perf_counter()
    group_records = [r for r in records for _ in range(G)]
    rewards = torch.tensor(score(reward_fn, [r["prompt"] for r in group_records], completions,
                                 group_records), dtype=torch.float32, device=device)  # (B*G,)
    correct = [parse_answer(c, r["task"]) == r["answer"] for r, c in zip(group_records, completions)]
    return s, rewards, correct, t_sampled


def loss_mask(s, cfg: Config) -> torch.Tensor:
    """(B*G, T) float mask of the tokens that carry loss; DAPO's overlong filtering drops cut-off rows."""
    mask = s.completion_mask.float()                                              # (B*G, T)
    if cfg.mask_truncated:
        mask = mask * (~s.truncated).float().unsqueeze(-1)
    return mask


def kept_rows(adv: torch.Tensor, mask: torch.Tensor, cfg: Config, skip: bool):
    """Rows that enter the backward pass, and the factor that turns their loss into the batch's.

    A row with advantage exactly 0 adds exactly 0 to the clipped term, so (without a KL
    term) it can be left out of the forward and backward pass; `rescale` makes the loss
    over the kept rows equal the full batch's loss. Returns (idx (K,), rescale).
    """
    keep = (adv != 0) if (skip and cfg.beta == 0) else torch.ones_like(adv, dtype=torch.bool)
    idx = keep.nonzero().squeeze(-1)                                              # (K,)
    n_tok = mask.sum().clamp(min=1)
    rescale = (mask[idx].sum() / n_tok).item() if cfg.loss_type in ("bnpo", "dapo") else len(idx) / len(adv)
    return idx, rescale


def optimizer_step(model, opt, loss: torch.Tensor, grad_clip: float) -> torch.Tensor:
    """Backward, clip the gradient's global norm (0 = off), step; returns the norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    opt.step()
    return grad_norm


def check_finite(loss: torch.Tensor, it: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite GRPO loss ({loss.item()}) at update {it + 1}; "
                                 f"try a lower lr or a smaller eps_high")


def step_row(s, rewards, correct, mask, idx, G: int, stats: dict, loss, grad_norm, t0, t1, t2) -> dict:
    """The step's log row of fixed keys (logger.STEP_KEYS, without "step")."""
    n_tok = mask.sum().clamp(min=1)
    kept_frac = (mask[idx].sum() / n_tok).item()  # clip fractions are of all tokens (rows left out were not clipped)
    return {
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std().item(),
        "accuracy": sum(correct) / len(correct),
        "zero_var_frac": zero_variance_fraction(rewards, G),
        "kl": stats["kl"],
        "entropy": (s.entropy.sum() / s.completion_mask.sum().clamp(min=1)).item(),
        "clip_low": stats["clip_low"] * kept_frac,
        "clip_high": stats["clip_high"] * kept_frac,
        "ratio_mean": stats["ratio_mean"],
        "loss": loss.item(),
        "grad_norm": float(grad_norm),
        "completion_len": s.completion_mask.sum(1).float().mean().item(),
        "truncated_frac": s.truncated.float().mean().item(),
        "sample_s": t1 - t0,
        "learn_s": t2 - t1,
    }


def grpo_step(policy, ref_model, tok, opt, records: list[dict], reward_fn, cfg: Config,
              generator: torch.Generator) -> dict:
    """One GRPO step on a batch of prompt records; returns the step's log row."""
    # ---- 1-2. sample a group of G completions per prompt (old policy, KV cache); score them ----
    t0 = time.perf_counter()
    s, rewards, correct, t1 = sample_and_score(policy, tok, records, reward_fn, cfg, generator)
    # ---- 3. normalise within each group ----
    adv = group_advantages(rewards, cfg.group_size, scale=cfg.scale, std=cfg.std)  # (B*G,)
    # ---- 4. mu updates of the clipped objective ----
    mask = loss_mask(s, cfg)                                                      # (B*G, T)
    idx, rescale = kept_rows(adv, mask, cfg, skip=cfg.skip_zero_adv)              # (K,)
    sub = lambda x: x[idx]                                                        # (B*G, ...) -> (K, ...)
    ref_logp = None
    if ref_model is not None:
        with torch.no_grad():
            ref_logp = completion_logprobs(ref_model, s.prompt_ids, s.prompt_mask, s.completion_ids,
                                           s.completion_mask, cfg.temperature)   # (B*G, T)
    loss, grad_norm = torch.zeros(()), torch.zeros(())
    stats = {"kl": 0.0, "clip_low": 0.0, "clip_high": 0.0, "ratio_mean": 1.0}
    policy.train()
    for it in range(cfg.num_iterations if len(idx) else 0):
        logp = completion_logprobs(policy, sub(s.prompt_ids), sub(s.prompt_mask), sub(s.completion_ids),
                                   sub(s.completion_mask), cfg.temperature)      # (K, T)
        old_logp = logp.detach() if cfg.num_iterations == 1 else sub(s.logps)     # (K, T)
        loss, stats = grpo_loss(logp, old_logp, sub(adv), sub(mask), eps_low=cfg.eps_low,
                                eps_high=cfg.eps_high, beta=cfg.beta,
                                ref_logp=None if ref_logp is None else sub(ref_logp),
                                kl_estimator=cfg.kl_estimator, loss_type=cfg.loss_type,
                                max_completion_length=cfg.max_new_tokens)
        loss = loss * rescale                                                     # the full batch's loss
        check_finite(loss, it)
        grad_norm = optimizer_step(policy, opt, loss, cfg.grad_clip)
    policy.eval()
    # ---- 5. one row of fixed keys ----
    return step_row(s, rewards, correct, mask, idx, cfg.group_size, stats, loss, grad_norm,
                    t0, t1, time.perf_counter())


@contextlib.contextmanager
def stop_at_step_end():
    """Turn Ctrl-C (SIGINT) into a request to stop once the current step is finished.

    A KeyboardInterrupt raised in the middle of a step could land inside `opt.step()`,
    with some weights updated and others not, or after sampling has advanced the RNG:
    a checkpoint saved then would not resume to the same run. So the first Ctrl-C only
    sets `request["stop"]`; the loop saves a clean checkpoint at the end of the step and
    stops. A second Ctrl-C stops at once (the newest checkpoint on disk is kept).
    Outside the main thread, where signal handlers cannot be installed, Ctrl-C is unchanged.
    """
    request = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if request["stop"]:
            raise KeyboardInterrupt
        request["stop"] = True
        tqdm.write("Ctrl-C: stopping after this step, with a checkpoint (Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)


def train_grpo(policy, tok, cfg: Config, train_records: list[dict], test_records: list[dict],
               *, resume: str | None = None, progress: bool = True, checkpoint_dir: str | None = None):
    """Run cfg.steps GRPO steps on `policy` in place; returns the MetricsLogger's rows.

    Writes metrics.jsonl and a checkpoint (checkpoint_dir, default
    out_dir/checkpoint: weights, optimizer, RNG states, step and the metric rows so far)
    every cfg.save_every steps and at the end; `resume` continues from such a checkpoint.
    Ctrl-C finishes the current step, saves a checkpoint and stops the run (a second Ctrl-C
    stops at once). A non-finite loss stops it with a
    FloatingPointError naming the step; the last checkpoint written (before the bad step) is kept.
    """
    device = next(policy.parameters()).device
    ckpt = checkpoint_dir or f"{cfg.out_dir}/checkpoint"
    reward_fn = parse_reward(cfg.reward)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    # the reference policy: a frozen copy of the starting point, only when the KL term is used
    ref_model = None
    if cfg.beta > 0:
        ref_model = copy.deepcopy(policy).eval().requires_grad_(False)
    critic = None
    if cfg.algo != "grpo":  # lesson 8's baselines: ppo.py
        from .ppo import Critic, rl_step
        critic = Critic(policy, cfg) if cfg.algo == "ppo" else None
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    start, state = 0, None
    if resume:
        _, _, state = load_checkpoint(resume, device)
        if not state.get("optimizer") or "generator" not in state.get("extra", {}):
            raise CheckpointError(f"{resume!r} is not a GRPO checkpoint (it has no optimizer or sampler state); "
                                  f"to start GRPO from its weights use --init {resume}")
        start = state["step"]
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        generator.set_state(state["extra"]["generator"].to(generator.get_state().device))
        if ref_model is not None and "ref_state" in state["extra"]:
            ref_model.load_state_dict(state["extra"]["ref_state"])
        if critic is not None:
            critic.load(state["extra"]["critic"])
    # a resumed run starts from the rows its checkpoint holds (metrics.jsonl may have rows logged after it)
    log = MetricsLogger(f"{cfg.out_dir}/metrics.jsonl", append=bool(resume), upto_step=start,
                        rows=state["extra"].get("metrics") if resume else None)
    eval_records = test_records[:cfg.eval_size] if cfg.eval_size else test_records

    saved = {"step": start if resume else None}  # the newest checkpoint this run can fall back on

    def save(step: int) -> None:
        saved["step"] = step
        extra = {"generator": generator.get_state(), "metrics": log.rows}
        if ref_model is not None:
            extra["ref_state"] = ref_model.state_dict()
        if critic is not None:
            extra["critic"] = critic.state()
        save_checkpoint(ckpt, policy, tok, cfg=cfg, step=step, optimizer=opt, extra=extra)

    bar = tqdm(range(start, cfg.steps), desc="GRPO", disable=not progress, initial=start,
               total=cfg.steps, mininterval=0.5)
    log.bar = bar
    step = start
    try:
        with stop_at_step_end() as request:
            for step in bar:
                for group in opt.param_groups:  # linear warm-up, then constant
                    group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
                row = {"step": step + 1}
                batch = prompt_batch(train_records, step, cfg.prompts_per_step, cfg.seed)
                if cfg.algo == "grpo":
                    row |= grpo_step(policy, ref_model, tok, opt, batch, reward_fn, cfg, generator)
                else:
                    row |= rl_step(policy, critic, tok, opt, batch, reward_fn, cfg, generator)
                if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or step + 1 == cfg.steps:
                    ev = evaluate(policy, tok, eval_records, device=device, max_new_tokens=cfg.max_new_tokens)
                    row["eval_accuracy"] = ev["accuracy"]
                    if "style_shares" in ev:  # equations: which section-6 style the correct answers use
                        row["eval_complete_share"] = ev["complete_share"]
                        row["eval_style_shares"] = ev["style_shares"]
                log.log(row)
                if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps or request["stop"]:
                    save(step + 1)
                if request["stop"]:  # Ctrl-C during this step: it is finished and saved; stop here
                    break
    except FloatingPointError as e:  # a non-finite loss: stop before it reaches the weights
        bar.close()
        kept = (f"the last good checkpoint (step {saved['step']}) is kept in {ckpt}" if saved["step"] is not None
                else "no checkpoint had been written yet")
        raise FloatingPointError(f"step {step + 1}: {e}; training stopped, {kept}") from e
    except KeyboardInterrupt:  # a second Ctrl-C, in the middle of a step
        bar.close()
        kept = (f"the newest checkpoint (step {saved['step']}) is kept in {ckpt}" if saved["step"] is not None
                else "no checkpoint had been written yet")
        print(f"stopped at once in step {step + 1}: {kept}")
        raise
    bar.close()
    if request["stop"]:
        print(f"interrupted: checkpoint of step {step + 1} saved to {ckpt} (resume with --resume {ckpt})")
        raise KeyboardInterrupt(f"stopped after step {step + 1}")
    return log.rows
