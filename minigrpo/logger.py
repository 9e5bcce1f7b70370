"""One tabular logger with fixed keys, and the row each step logs (plot.py draws them).

Every step logs the same row (Spinning Up's `EpochLogger`) to metrics.jsonl, appended and flushed as
it comes, and its newest values to a tqdm progress bar (tqdm.auto renders in JupyterLab).
"""
from __future__ import annotations

import json
import os

import torch

from .advantage import informative_groups, zero_variance_fraction

# The keys every GRPO step writes, in order. Evaluation steps add "eval_accuracy" and, on
# equations, "eval_complete_share" and "eval_style_shares" ({style: share of the correct answers}); on
# multiplications, "eval_worked_share" (share of answers that show the working) and "eval_style_accuracy"
# ({"direct", "worked"}: each style's accuracy, None where no answer took it).
STEP_KEYS = (
    "step",              # GRPO step, 1-based
    "reward_mean",       # mean reward over the N = B*G completions
    "reward_std",        # std of those rewards
    "accuracy",          # fraction of sampled completions with the correct answer
    "zero_var_frac",     # fraction of groups whose G rewards are all equal (advantage 0: no signal)
    "kl",                # mean k-estimate of KL(pi_theta || pi_ref) per token (0 without a reference)
    "entropy",           # mean entropy of the sampling policy's next-token distribution per completion token
    "clip_low",          # fraction of tokens clipped at 1 - eps_low (A < 0)
    "clip_high",         # fraction of tokens clipped at 1 + eps_high (A > 0)
    "ratio_mean",        # mean pi_theta / pi_old over the trained tokens (1 at the first update)
    "loss",              # the minimised loss (minus the objective), last update of the step
    "grad_norm",         # global gradient norm before clipping
    "completion_len",    # mean completion length in tokens (EOS included)
    "truncated_frac",    # fraction of completions that hit max_new_tokens without EOS
    "sample_s",          # seconds spent sampling this step
    "learn_s",           # seconds spent scoring, normalising and updating this step
)

# Keys some rows add: "len_correct" and "len_wrong" (mean completion length of the right and the wrong
# answers sampled, None when there are none); with dynamic sampling "sampling_rounds", "samples" (completions
# sampled) and "kept_groups"; with old_logps="recompute" "logp_diff_max" (max |sampler - training| log-prob);
# with a reference model (beta > 0, or log_kl) "kl_ref" (the KL estimate of the samples to pi_ref, over every
# trained row: with dynamic sampling, the kept groups').

# Short names for the progress bar.
BAR_KEYS = {"reward_mean": "R", "accuracy": "acc", "eval_accuracy": "test", "eval_complete_share": "complete", "kl": "kl",
            "entropy": "H", "completion_len": "len"}


def lengths_by_correctness(ro) -> dict:
    """Mean completion length (tokens, EOS included) of the right and of the wrong answers of a rollout."""
    lengths = ro.samples.completion_mask.sum(1).tolist()
    mean = lambda xs: sum(xs) / len(xs) if xs else None
    return {"len_correct": mean([n for n, ok in zip(lengths, ro.correct) if ok]),
            "len_wrong": mean([n for n, ok in zip(lengths, ro.correct) if not ok])}


def step_row(ro, upd, group_size: int) -> dict:
    """The row of fixed keys (STEP_KEYS but "step" and the timings) for one step's Rollout and Update."""
    s = ro.samples
    n_tok = s.completion_mask.sum().clamp(min=1)
    lengths = s.completion_mask.sum(1).float()                                   # (N,)
    return {
        "reward_mean": ro.rewards.mean().item(),
        "reward_std": ro.rewards.std().item(),
        "accuracy": sum(ro.correct) / len(ro.correct),
        "zero_var_frac": zero_variance_fraction(ro.rewards, group_size),
        "kl": upd.stats["kl"],
        "entropy": (s.entropy.sum() / n_tok).item(),
        "clip_low": upd.stats["clip_low"] * upd.kept_frac,   # of all tokens: rows left out were not clipped
        "clip_high": upd.stats["clip_high"] * upd.kept_frac,
        "ratio_mean": upd.stats["ratio_mean"],
        "loss": upd.loss,
        "grad_norm": upd.grad_norm,
        "completion_len": lengths.mean().item(),
        "truncated_frac": s.truncated.float().mean().item(),
    }


def traced_rows(rewards, cfg) -> torch.Tensor:
    """The rows (R,) of the first cfg.trace_groups groups whose rewards differ (else the first groups)."""
    informative = informative_groups(rewards, cfg.group_size)
    groups = (informative or list(range(len(rewards) // cfg.group_size)))[:cfg.trace_groups]
    return torch.tensor([g * cfg.group_size + i for g in groups for i in range(cfg.group_size)])


def token_trace(tok, ro, adv, rows, upd) -> list[dict]:
    """Each traced completion token by token: text, sampling entropy, advantage, ratio at every update."""
    s, out = ro.samples, []
    for j, row in enumerate(rows.tolist()):
        n = int(s.completion_mask[row].sum())
        a = adv[row]
        out.append({"row": row, "completion": ro.completions[row], "reward": ro.rewards[row].item(),
                    "correct": ro.correct[row], "tokens": tok.convert_ids_to_tokens(s.completion_ids[row, :n].tolist()),
                    "advantage": (a if a.dim() == 0 else a[:n]).tolist(),
                    "entropy": [round(x, 4) for x in s.entropy[row, :n].tolist()],
                    "ratios": [[round(x, 5) for x in r[j, :n].tolist()] for r in upd.ratios]})
    return out


class MetricsLogger:
    """Appends one JSON row per call to `path` and (optionally) shows it on a tqdm bar."""

    def __init__(self, path: str, bar=None, append: bool = False, upto_step: int | None = None,
                 rows: list[dict] | None = None):
        """`append` keeps the rows already in `path` (a resumed run), those after `upto_step`
        dropped: a run stopped after logging a step it had not yet checkpointed redoes that step.
        `rows` starts from these rows instead (a resumed run: the rows its checkpoint holds)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.bar = bar
        if rows is not None:
            self.rows = [dict(r) for r in rows]
        else:
            self.rows = read_metrics(path) if append and os.path.exists(path) else []
        if upto_step is not None:
            self.rows = [r for r in self.rows if r["step"] <= upto_step]
        self._last: dict = {}  # newest value of each progress-bar key (eval_accuracy is not in every row)
        with open(path, "w", encoding="utf-8") as f:  # the file holds exactly self.rows
            f.writelines(json.dumps(r) + "\n" for r in self.rows)

    def log(self, row: dict) -> None:
        row = {k: (float(v) if isinstance(v, float) else v) for k, v in row.items()}
        self.rows.append(row)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        if self.bar is not None:
            self._last.update({k: row[k] for k in BAR_KEYS if k in row})  # newest value of each key
            self.bar.set_postfix({short: f"{self._last[k]:.3g}" for k, short in BAR_KEYS.items()
                                  if k in self._last}, refresh=False)


class TokenLog(list):
    """tokens.jsonl: one JSON line per traced step, appended as it comes; a resumed run keeps the lines
    up to its checkpoint's step."""

    def __init__(self, path: str, upto_step: int = 0):
        super().__init__()
        self.path = path
        kept = [r for r in read_metrics(path) if r["step"] <= upto_step] if upto_step and os.path.exists(path) else []
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str) -> list[dict]:
    """The rows of a metrics.jsonl file, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
