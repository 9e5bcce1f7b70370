"""What happens to each step's row in train_grpo: merged over the ranks, then the row hooks in turn, then written.

The loop's own hooks come first and last: the traced tokens leave the row for tokens.jsonl (lesson 9's clip
scrubber), the held-out evaluation is added when due; then the caller's on_row hooks (lesson 7 adds its checkers'
shares); then the doctor's rules read the row (diagnose.Watch) and note what fires. A hook is any callable
`hook(row)`; it runs on rank 0 and may add keys, which metrics.jsonl then keeps (logger.MetricsLogger).
"""
from __future__ import annotations

from tqdm.auto import tqdm

from .diagnose import Watch
from .distributed import Ranks, gather_objects, merge_rows
from .evaluate import evaluate
from .model import precision


def watch(cfg, log) -> Watch:
    """The doctor's rules on the metrics (a one-line diagnosis the first time one fires); in a resumed run the
    rules that fired before stay quiet."""
    rules = Watch(cfg)
    for old in (log.rows if log is not None else []):
        rules.check({k: v for k, v in old.items() if k != "doctor"})
    return rules


def finish_row(row: dict, ranks: Ranks, log, hooks) -> None:
    """A step's row, completed and written (rank 0): merged over the ranks, then each hook in turn (the traced
    tokens to tokens.jsonl, the held-out evaluation when due, the caller's on_row, the doctor), then metrics.jsonl."""
    tokens = row.pop("tokens", None)
    if ranks.active:   # one row for the global batch (distributed.merge_rows)
        row = merge_rows(gather_objects(row, ranks))
    if not ranks.main:
        return
    if tokens is not None:
        row["tokens"] = tokens   # rank 0's traced tokens
    for hook in hooks:
        hook(row)
    log.log(row)


def write_tokens(traces, cfg):
    """Hook: a traced step's tokens leave the row for tokens.jsonl, lesson 9's clip scrubber's data (one line each)."""
    def hook(row: dict) -> None:
        tokens = row.pop("tokens", None)
        if tokens is not None:
            traces.append({"step": row["step"], "eps_low": cfg.eps_low, "eps_high": cfg.eps_high,
                           "groups": cfg.group_size, "completions": tokens})
    return hook


def evaluation(policy, tok, test_records, cfg):
    """Hook: the held-out evaluation (the first cfg.eval_size test records) every cfg.eval_every steps and after
    the last."""
    eval_records = test_records[:cfg.eval_size] if cfg.eval_size else test_records

    def hook(row: dict) -> None:
        if (cfg.eval_every and row["step"] % cfg.eval_every == 0) or row["step"] == cfg.steps:
            evaluate_into(row, policy, tok, eval_records, cfg)
    return hook


def doctor(watch: Watch, progress: bool):
    """Hook: the doctor's rules on the row; the notes of those that fire go into the row (and to the screen)."""
    def hook(row: dict) -> None:
        notes = watch.check(row)
        if notes:
            row["doctor"] = notes
            if progress:
                for note in notes:
                    tqdm.write(note)
    return hook


def evaluate_into(row: dict, policy, tok, eval_records, cfg) -> None:
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
