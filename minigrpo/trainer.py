"""The GRPO step and the loop around it (DeepSeekMath, Algorithm 1), stage by stage.

    1-2. sample B prompts and a group of G completions each with the old policy; score them
    3.   normalise the rewards within each group -> advantages A_i
    4.   mu updates: the clipped objective against pi_old, minus beta * KL to pi_ref
    5.   log one row of fixed keys; evaluate and checkpoint now and then

REINFORCE and RLOO change only stage 3; PPO learns a critic for it (ppo.py). The loop runs a step function
(default grpo_run_step; PPO's is ppo.PPOStep) and then the row hooks of hooks.py; the course's experiments attach
their own through train_grpo(step=..., on_row=[...]) rather than writing loops of their own.
"""
from __future__ import annotations

import copy
import os
import signal
import threading
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import hooks
from .advantage import baseline_advantages, group_advantages
from .checkpoint import CheckpointError, reference_record, restore, save_checkpoint
from .config import save_config, validate
from .data import prompt_batch
from .distributed import Ranks, gather_objects, gather_rows, shard, start as start_ranks, unwrap, wrap
from .logger import MetricsLogger, TokenLog, lengths_by_correctness, step_row, token_trace, traced_rows
from .loss import kl_estimate, loss_mask
from .model import LogprobHead, plain_head, precision, sync_clock
from .optim import grpo_lr, logprobs_in_chunks, make_optimizer, set_lr, update_policy
from .ppo import Critic, PPOStep
from .reward import parse_reward
from .sampler import dynamic_rollout, rollout

def grpo_step(policy, ref_model, tok, opt, records: list[dict], reward_fn, cfg, generator: torch.Generator,
              more=None, trace: bool = False, scaler=None, ranks: Ranks | None = None, generation=None) -> dict:
    """One GRPO step on B prompt records (REINFORCE or RLOO with cfg.algo); returns the step's log row.
    `generation` (generation.py) samples the completions and gets the new weights after the update.

    With cfg.dynamic_sampling, `more(round)` gives the extra batches of prompts of rounds 1, 2, ...
    With `trace`, the row holds under "tokens" every token of cfg.trace_groups groups: its text,
    entropy, advantage and ratio at each update (written to tokens.jsonl by the loop).
    Under torchrun (`ranks`), `policy` is DDP-wrapped and `records` are this rank's share (distributed.py).
    """
    ranks = ranks or Ranks()
    trainee, policy = policy, unwrap(policy)   # the update goes through DDP; sampling uses the model itself
    device = next(policy.parameters()).device
    clock = lambda: sync_clock(device)
    t0 = clock()
    # ---- 1-2. sample a group of G completions per prompt with the old policy; score them ----
    with precision(device, cfg.sample_dtype or cfg.dtype):
        if cfg.dynamic_sampling:   # DAPO: keep sampling until B groups whose rewards differ
            sample = lambda k: rollout(policy, tok, records if k == 0 else more(k), reward_fn, cfg, generator,
                                       generation=generation)
            everything, ro, sampled = dynamic_rollout(sample, len(records), cfg, tok.pad_token_id)
        else:
            everything = ro = rollout(policy, tok, records, reward_fn, cfg, generator, generation=generation)
    s = ro.samples
    # ---- 3. normalise within each group (or subtract lesson 8's baselines) ----
    rewards, first = gather_rows(ro.rewards, ranks)        # every rank's: batch-wide statistics see the global batch
    if cfg.algo == "grpo":
        adv = group_advantages(rewards, cfg.group_size, scale=cfg.scale, std=cfg.std, eps=cfg.std_eps)  # (N,)
    else:
        adv = baseline_advantages(rewards, cfg.group_size, cfg.algo)                                # (N,)
    if ranks.active:                                       # this rank's rows of the global batch
        adv = adv[first:first + len(ro.rewards)]
    # ---- 4. mu updates of the clipped objective (and beta * KL to the reference) ----
    ref_logp = None
    if ref_model is not None:
        all_rows = torch.arange(len(s.completion_ids), device=device)
        ref_logp = logprobs_in_chunks(ref_model, s, all_rows, cfg)                                 # (N, T)
    mask = loss_mask(s.completion_mask, s.truncated, cfg.mask_truncated)                          # (N, T)
    rows = traced_rows(ro.rewards, cfg) if trace else None                                        # (R,)
    upd = update_policy(trainee, opt, s, adv, mask, cfg, ref_logp, skip_zero_adv=cfg.skip_zero_adv, trace=rows,
                        scaler=scaler, ranks=ranks)
    if generation is not None:
        generation.load_weights(policy)   # the generator samples the updated policy from the next step on
    # ---- 5. one row of fixed keys ----
    row = step_row(everything, upd, cfg.group_size) | {"sample_s": everything.sample_s,
                                                        "learn_s": clock() - t0 - everything.sample_s}
    row |= lengths_by_correctness(everything)
    if ref_logp is not None:   # the samples' KL to pi_ref over the step's rows (with dynamic sampling, the kept
        # groups'); at beta = 0 (cfg.log_kl) a measurement only
        m = s.completion_mask.bool()                                                              # (N, T)
        kl = torch.where(m, kl_estimate(s.logps, ref_logp, cfg.kl_estimator), 0.0)                # (N, T)
        row["kl_ref"] = (kl.sum() / m.sum()).item()
    if cfg.dynamic_sampling:
        row |= sampled
    if upd.logp_diff_max is not None:
        row["logp_diff_max"] = upd.logp_diff_max
    row |= {k: upd.stats[k] for k in ("is_weight_mean", "is_capped") if k in upd.stats}   # a mismatched sampler
    if trace:
        row["tokens"] = token_trace(tok, ro, adv, rows, upd)
    return row


@dataclass
class Run:
    """What every step of one run shares, handed to the step function `step(run, step, batch) -> row`."""
    trainee: object             # the training forward: the policy, or its DDP / compiled wrapper (_trainee)
    policy: object              # the model itself: sampling and evaluation use it
    ref_model: object           # pi_ref (frozen), or None at beta = 0 without cfg.log_kl
    tok: object
    opt: torch.optim.Optimizer
    reward_fn: Callable
    cfg: object
    generator: torch.Generator  # the sampler's random numbers (one per rank)
    scaler: object              # float16's GradScaler, or None
    ranks: Ranks
    generation: object          # generation.Generation, or None for the KV-cache sampler
    train_records: list         # the training prompts (dynamic sampling draws its extra batches from them)


def grpo_run_step(run: Run, step: int, batch: list[dict]) -> dict:
    """train_grpo's default step (algo grpo, reinforce, rloo): grpo_step on this rank's `batch` of prompts, its
    tokens traced every cfg.trace_every steps (lesson 9), DAPO's extra batches drawn from run.train_records."""
    cfg = run.cfg
    more = lambda k: shard(prompt_batch(run.train_records, step, cfg.prompts_per_step, cfg.seed, k), run.ranks)
    trace = bool(cfg.trace_every) and (step + 1) % cfg.trace_every == 0
    return grpo_step(run.trainee, run.ref_model, run.tok, run.opt, batch, run.reward_fn, cfg, run.generator, more,
                     trace, run.scaler, ranks=run.ranks, generation=run.generation)


class StopAfterStep:
    """Ctrl-C (SIGINT) asks the loop to stop once the current step is finished and saved.

    A KeyboardInterrupt in the middle of a step could land inside opt.step() or after sampling moved
    the RNG: a checkpoint saved then would not resume to the same run. A second Ctrl-C stops at once.
    Outside the main thread, where no handler can be installed, Ctrl-C is left as it is.
    """
    requested = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("Ctrl-C: stopping after this step, with a checkpoint (Ctrl-C again to stop at once)")

    def __exit__(self, *exc):
        if hasattr(self, "previous"):
            signal.signal(signal.SIGINT, self.previous)


def train_grpo(policy, tok, cfg, train_records: list[dict], test_records: list[dict], *, resume: str | None = None,
               start: str | None = None, progress: bool = True, checkpoint_dir: str | None = None,
               generation=None, step=None, on_row=()) -> list[dict]:
    """Run cfg.steps steps of cfg.algo on `policy` in place; returns the metric rows.

    Writes run_config.json and metrics.jsonl to cfg.out_dir, and a checkpoint (checkpoint_dir, default
    out_dir/checkpoint) every cfg.save_every steps and at the end; `resume` continues from one. `start`
    names the checkpoint the policy starts from (pi_ref is then not written again with every save).
    `generation` (generation.py) samples the completions, e.g. another engine; default the KV-cache sampler.
    A non-finite loss or an unwritable checkpoint stops the run naming the checkpoint that is kept.

    What attaches (the course's experiments use these; the loop itself knows none of them):
    `step(run, step, batch) -> row` is one step on this rank's batch of prompts (Run: what the steps share);
    default grpo_run_step, or for algo='ppo' ppo.PPOStep with a new critic (lesson 8 passes one warmed up).
    A step with state() and load(extra) has that state saved in each checkpoint and restored on resume.
    `on_row` are callables `hook(row)`, run on rank 0 with each step's completed row (evaluated when due)
    before the doctor reads it and metrics.jsonl gets it: a hook may add keys (lesson 7 adds its checkers' shares).
    """
    device = next(policy.parameters()).device
    ranks = start_ranks(cfg, device)                     # torchrun: this process's rank (distributed.py)
    _check_run(cfg, ranks, step)
    step_fn = step or (PPOStep(Critic(policy, cfg)) if cfg.algo == "ppo" else grpo_run_step)
    ckpt = checkpoint_dir or os.path.join(cfg.out_dir, "checkpoint")
    run = _new_run(policy, tok, cfg, device, ranks, train_records, generation)
    state = _resume(resume, run.opt, run.generator, ranks, step_fn)
    first = state.get("step", 0)
    reference, ref_models = reference_record(run.ref_model, start, resume, state)
    log, traces = _open_logs(cfg, ranks, resume, first, state)
    row_hooks = [hooks.write_tokens(traces, cfg), hooks.evaluation(policy, tok, test_records, cfg), *on_row,
                 hooks.doctor(hooks.watch(cfg, log), progress)]
    saved = first if resume else None   # the step of the newest checkpoint this run can fall back on

    def save(step: int) -> None:
        nonlocal saved
        _save(ckpt, step, run, log, reference, getattr(step_fn, "state", dict)(), ref_models)
        saved = step

    bar = _bar(cfg, first, progress and ranks.main, log)
    step = first
    try:
        with StopAfterStep() as stop:
            for step in bar:
                set_lr(run.opt, grpo_lr(step, cfg))
                batch = shard(prompt_batch(train_records, step, cfg.prompts_per_step, cfg.seed), ranks)
                hooks.finish_row({"step": step + 1, **step_fn(run, step, batch)}, ranks, log, row_hooks)
                if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps or stop.requested:
                    save(step + 1)
                if stop.requested:  # Ctrl-C during this step: it is finished and saved
                    break
    except (FloatingPointError, CheckpointError, KeyboardInterrupt) as e:
        bar.close()
        err = _stopped(e, step, saved, ckpt)
        if err is e:   # a second Ctrl-C: as it came
            raise
        raise err from e
    bar.close()
    if stop.requested:
        print(f"interrupted: checkpoint of step {step + 1} saved to {ckpt} (resume with --resume {ckpt})")
        raise KeyboardInterrupt(f"stopped after step {step + 1}")
    return log.rows if log is not None else []


def _new_run(policy, tok, cfg, device, ranks: Ranks, train_records, generation) -> Run:
    """What the steps share: pi_ref (a frozen copy, when beta > 0 or cfg.log_kl), the training forward and its
    optimizer, the reward function, and the sampler's generator (seeded per rank: each rank its own samples)."""
    ref_model = copy.deepcopy(policy).eval().requires_grad_(False) if cfg.beta > 0 or cfg.log_kl else None
    trainee, opt, scaler = _trainee(policy, cfg, device, ranks)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 7919 * ranks.rank)
    return Run(trainee, policy, ref_model, tok, opt, parse_reward(cfg.reward), cfg, generator, scaler, ranks,
               generation, train_records)


def _save(ckpt: str, step: int, run: Run, log, reference, step_state: dict, ref_models) -> None:
    """A checkpoint of `step`, written atomically by rank 0; every rank hands it its generator's state.
    `step_state` is the step function's own (PPO's critic)."""
    generators = gather_objects(run.generator.get_state(), run.ranks)          # every rank takes part
    if run.ranks.main:
        extra = {"generator": run.generator.get_state(), "metrics": log.rows, "reference": reference,
                 **({"generators": generators} if run.ranks.active else {}), **step_state}
        save_checkpoint(ckpt, run.policy, run.tok, cfg=run.cfg, step=step, optimizer=run.opt, extra=extra,
                        models=ref_models)


def _resume(resume: str | None, opt, generator, ranks: Ranks, step_fn) -> dict:
    """The checkpoint's state loaded into the optimizer, the generators and the step function; {} for a new run."""
    if not resume:
        return {}
    state = restore(resume, opt, generator)
    if ranks.active and "generators" in state["extra"]:
        generator.set_state(state["extra"]["generators"][ranks.rank].to(generator.get_state().device))
    if hasattr(step_fn, "load"):
        step_fn.load(state["extra"])
    return state


def _bar(cfg, first: int, show: bool, log):
    """The steps' progress bar (tqdm.auto), from `first` of cfg.steps; the metrics logger writes its postfix."""
    bar = tqdm(range(first, cfg.steps), desc=cfg.algo.upper(), disable=not show, initial=first, total=cfg.steps,
               mininterval=0.5)
    if log is not None:
        log.bar = bar
    return bar


def _check_run(cfg, ranks: Ranks, step_fn) -> None:
    """One-line errors, before anything is built, for a run train_grpo cannot do: the config's values (once for the
    run; the loss does not check them again), PPO under torchrun, PPO's step without algo='ppo' or the reverse
    (`step_fn` None: the default, which matches cfg.algo)."""
    validate(cfg)
    if ranks.active and cfg.algo == "ppo":
        raise ValueError("algo='ppo' under torchrun: lesson 8's PPO runs in one process; use grpo, rloo or reinforce")
    if isinstance(step_fn, PPOStep) and cfg.algo != "ppo":
        raise ValueError(f"a critic was given to train_grpo, but algo={cfg.algo!r} has none: only algo='ppo' uses one")
    if cfg.algo == "ppo" and step_fn is not None and not isinstance(step_fn, PPOStep):
        raise ValueError("algo='ppo' needs PPO's step (ppo.PPOStep with its critic), not another step function")


def _trainee(policy, cfg, device, ranks: Ranks):
    """The training forward (the model itself, or under DDP / compile a module whose forward is it:
    model.LogprobHead), its AdamW, and a GradScaler for float16 (None otherwise)."""
    trainee = LogprobHead(policy) if plain_head(policy) and (ranks.active or cfg.torch_compile) else policy
    trainee = wrap(trainee, device, ranks)               # DDP with several ranks
    if cfg.torch_compile:                            # the training forward only: sampling's shapes change every step
        trainee = torch.compile(trainee, dynamic=True)
    opt = make_optimizer(trainee.parameters(), cfg.lr, cfg.adam_beta1, cfg.adam_beta2, cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if cfg.dtype == "float16" else None   # float16 needs loss scaling
    return trainee, opt, scaler


def _open_logs(cfg, ranks: Ranks, resume, first: int, state: dict):
    """(metrics logger, token log) on rank 0, which alone writes, with run_config.json; (None, None) elsewhere.
    A resumed run starts from the rows its checkpoint holds (metrics.jsonl may have rows logged after it)."""
    if not ranks.main:
        return None, None
    save_config(cfg, os.path.join(cfg.out_dir, "run_config.json"))
    log = MetricsLogger(os.path.join(cfg.out_dir, "metrics.jsonl"), append=bool(resume), upto_step=first,
                        rows=state["extra"].get("metrics") if resume else None)
    traces = TokenLog(os.path.join(cfg.out_dir, "tokens.jsonl"), upto_step=first) if cfg.trace_every else []
    return log, traces


def _stopped(e: BaseException, step: int, saved: int | None, ckpt: str) -> BaseException:
    """The exception that ends a failed run, naming the checkpoint that is kept; a second Ctrl-C is re-raised."""
    second_ctrl_c = isinstance(e, KeyboardInterrupt)   # in the middle of a step
    kept = "no checkpoint had been written yet" if saved is None else \
        f"the {'newest' if second_ctrl_c else 'last good'} checkpoint (step {saved}) is kept in {ckpt}"
    if second_ctrl_c:
        print(f"stopped at once in step {step + 1}: {kept}")
        return e
    return type(e)(f"step {step + 1}: {e}; training stopped, {kept}")
