"""The GRPO step and the loop around it (DeepSeekMath, Algorithm 1), stage by stage.

    1-2. sample B prompts and a group of G completions each with the old policy; score them
    3.   normalise the rewards within each group -> advantages A_i
    4.   mu updates: the clipped objective against pi_old, minus beta * KL to pi_ref
    5.   log one row of fixed keys; evaluate and checkpoint now and then

REINFORCE and RLOO change only stage 3; PPO learns a critic for it (ppo.py).
"""
from __future__ import annotations

import copy
import os
import signal
import threading

import torch
from tqdm.auto import tqdm

from .advantage import baseline_advantages, group_advantages
from .checkpoint import CheckpointError, reference_record, restore, save_checkpoint
from .config import save_config, validate
from .data import prompt_batch
from .diagnose import Watch
from .distributed import Ranks, gather_objects, gather_rows, merge_rows, shard, start as start_ranks, unwrap, wrap
from .evaluate import evaluate
from .logger import MetricsLogger, TokenLog, lengths_by_correctness, step_row, token_trace, traced_rows
from .loss import kl_estimate, loss_mask
from .model import LogprobHead, plain_head, precision, sync_clock
from .optim import grpo_lr, logprobs_in_chunks, make_optimizer, set_lr, update_policy
from .ppo import Critic, ppo_step
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
               critic=None, generation=None) -> list[dict]:
    """Run cfg.steps steps of cfg.algo on `policy` in place; returns the metric rows.

    Writes run_config.json and metrics.jsonl to cfg.out_dir, and a checkpoint (checkpoint_dir, default
    out_dir/checkpoint) every cfg.save_every steps and at the end; `resume` continues from one. `start`
    names the checkpoint the policy starts from (pi_ref is then not written again with every save).
    `critic` (algo='ppo' only) is a ppo.Critic to train on, e.g. one warmed up first (lesson 8); default a new one.
    `generation` (generation.py) samples the completions, e.g. another engine; default the KV-cache sampler.
    A non-finite loss or an unwritable checkpoint stops the run naming the checkpoint that is kept.
    """
    device = next(policy.parameters()).device
    ranks = start_ranks(cfg, device)                     # torchrun: this process's rank (distributed.py)
    _check_run(cfg, ranks, critic)
    ckpt = checkpoint_dir or os.path.join(cfg.out_dir, "checkpoint")
    reward_fn = parse_reward(cfg.reward)
    ref_model = copy.deepcopy(policy).eval().requires_grad_(False) if cfg.beta > 0 or cfg.log_kl else None
    trainee, opt, scaler = _trainee(policy, cfg, device, ranks)
    critic = Critic(policy, cfg) if cfg.algo == "ppo" and critic is None else critic
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 7919 * ranks.rank)   # each rank its own samples
    state = restore(resume, opt, generator, critic) if resume else {}
    if ranks.active and "generators" in state.get("extra", {}):
        generator.set_state(state["extra"]["generators"][ranks.rank].to(generator.get_state().device))
    first = state.get("step", 0)
    reference, ref_models = reference_record(ref_model, start, resume, state) if ref_model is not None else ({}, {})
    log, traces = _open_logs(cfg, ranks, resume, first, state)
    eval_records = test_records[:cfg.eval_size] if cfg.eval_size else test_records
    watch = _watch(cfg, log)
    saved = first if resume else None   # the step of the newest checkpoint this run can fall back on

    def save(step: int) -> None:
        nonlocal saved
        _save(ckpt, step, policy, tok, cfg, opt, generator, ranks, log, reference, critic, ref_models)
        saved = step

    bar = _bar(cfg, first, progress and ranks.main, log)
    step = first
    try:
        with StopAfterStep() as stop:
            for step in bar:
                row = _run_step(step, train_records, trainee, policy, ref_model, critic, tok, opt, reward_fn, cfg,
                                generator, scaler, ranks, generation)
                _finish_row({"step": step + 1, **row}, policy, tok, eval_records, cfg, ranks, log, traces, watch,
                            progress)
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


def _run_step(step: int, train_records, trainee, policy, ref_model, critic, tok, opt, reward_fn, cfg, generator,
              scaler, ranks: Ranks, generation=None) -> dict:
    """GRPO step `step` (0-based; or PPO's, with a critic) on its batch of prompts, this rank's share; its row."""
    set_lr(opt, grpo_lr(step, cfg))
    batch = shard(prompt_batch(train_records, step, cfg.prompts_per_step, cfg.seed), ranks)
    if critic is not None:
        return ppo_step(policy, critic, tok, opt, batch, reward_fn, cfg, generator)
    more = lambda k: shard(prompt_batch(train_records, step, cfg.prompts_per_step, cfg.seed, k), ranks)
    trace = bool(cfg.trace_every) and (step + 1) % cfg.trace_every == 0
    return grpo_step(trainee, ref_model, tok, opt, batch, reward_fn, cfg, generator, more, trace, scaler, ranks=ranks,
                     generation=generation)


def _save(ckpt: str, step: int, policy, tok, cfg, opt, generator, ranks: Ranks, log, reference, critic,
          ref_models) -> None:
    """A checkpoint of `step`, written atomically by rank 0; every rank hands it its generator's state."""
    generators = gather_objects(generator.get_state(), ranks)          # every rank takes part
    if ranks.main:
        extra = {"generator": generator.get_state(), "metrics": log.rows, "reference": reference,
                 **({"generators": generators} if ranks.active else {}),
                 **({"critic": critic.state()} if critic is not None else {})}
        save_checkpoint(ckpt, policy, tok, cfg=cfg, step=step, optimizer=opt, extra=extra, models=ref_models)


def _watch(cfg, log) -> Watch:
    """The doctor's rules on the metrics (a one-line diagnosis the first time one fires); in a resumed run the
    rules that fired before stay quiet."""
    watch = Watch(cfg)
    for old in (log.rows if log is not None else []):
        watch.check({k: v for k, v in old.items() if k != "doctor"})
    return watch


def _bar(cfg, first: int, show: bool, log):
    """The steps' progress bar (tqdm.auto), from `first` of cfg.steps; the metrics logger writes its postfix."""
    bar = tqdm(range(first, cfg.steps), desc=cfg.algo.upper(), disable=not show, initial=first, total=cfg.steps,
               mininterval=0.5)
    if log is not None:
        log.bar = bar
    return bar


def _check_run(cfg, ranks: Ranks, critic) -> None:
    """One-line errors, before anything is built, for a run train_grpo cannot do: the config's values (once for the
    run; the loss does not check them again), PPO under torchrun, a critic without PPO."""
    validate(cfg)
    if ranks.active and cfg.algo == "ppo":
        raise ValueError("algo='ppo' under torchrun: lesson 8's PPO runs in one process; use grpo, rloo or reinforce")
    if critic is not None and cfg.algo != "ppo":
        raise ValueError(f"a critic was given to train_grpo, but algo={cfg.algo!r} has none: only algo='ppo' uses one")


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


def _finish_row(row: dict, policy, tok, eval_records, cfg, ranks: Ranks, log, traces, watch, progress: bool) -> None:
    """A step's row, completed and written (rank 0): merged over the ranks, the traced tokens to tokens.jsonl, the
    held-out evaluation when it is due, the doctor's notes, then metrics.jsonl."""
    step = row["step"]
    tokens = row.pop("tokens", None)
    if ranks.active:   # one row for the global batch (distributed.merge_rows)
        row = merge_rows(gather_objects(row, ranks))
    if not ranks.main:
        return
    if tokens is not None:   # the clip scrubber's data (lesson 9): one line per traced step
        traces.append({"step": step, "eps_low": cfg.eps_low, "eps_high": cfg.eps_high,
                       "groups": cfg.group_size, "completions": tokens})
    if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
        _evaluate_into(row, policy, tok, eval_records, cfg)
    notes = watch.check(row)
    if notes:   # in the metrics file too
        row["doctor"] = notes
        if progress:
            for note in notes:
                tqdm.write(note)
    log.log(row)


def _evaluate_into(row: dict, policy, tok, eval_records, cfg) -> None:
    """Held-out accuracy (greedy) into the row, with the share of each answer style where the task has styles."""
    device = next(policy.parameters()).device
    with precision(device, cfg.dtype):
        ev = evaluate(policy, tok, eval_records, device=device, max_new_tokens=cfg.max_new_tokens,
                      batch_size=cfg.eval_batch_size, chat=cfg.chat_template)
    row["eval_accuracy"] = ev["accuracy"]
    if "style_shares" in ev:  # equations: which section-6 style the correct answers use
        row["eval_complete_share"] = ev["complete_share"]
        row["eval_style_shares"] = ev["style_shares"]
    if "worked_share" in ev:  # multiplication: how many answers show the working, and how well
        row["eval_worked_share"] = ev["worked_share"]
        row["eval_style_accuracy"] = ev["style_accuracy"]


def _stopped(e: BaseException, step: int, saved: int | None, ckpt: str) -> BaseException:
    """The exception that ends a failed run, naming the checkpoint that is kept; a second Ctrl-C is re-raised."""
    second_ctrl_c = isinstance(e, KeyboardInterrupt)   # in the middle of a step
    kept = "no checkpoint had been written yet" if saved is None else \
        f"the {'newest' if second_ctrl_c else 'last good'} checkpoint (step {saved}) is kept in {ckpt}"
    if second_ctrl_c:
        print(f"stopped at once in step {step + 1}: {kept}")
        return e
    return type(e)(f"step {step + 1}: {e}; training stopped, {kept}")
