"""Held-out evaluation: greedy answers, scored exactly (tasks.is_correct), and for equations the share of
each of section 6's solution styles among the correct answers, which the rubric reward should move; for
multiplications the share of answers that show their working, and each style's accuracy.
"""
from __future__ import annotations

from collections import Counter

import torch

from .sampler import pad_prompts, sample_group
from .tasks import MULTIPLICATION_STYLES, STYLES, classify_style, is_correct, multiplication_style
from .tokenizer import decode_batch, encode, stop_ids


@torch.no_grad()
def generate(model, tok, prompts: list[str], *, max_new_tokens: int, batch_size: int = 256,
             device=None, greedy: bool = True, temperature: float = 1.0,
             generator: torch.Generator | None = None, chat: bool = False) -> list[str]:
    """One completion per prompt (greedy by default), decoded to text up to its first stop id."""
    device = device or next(model.parameters()).device
    stops = stop_ids(tok, model)
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = [encode(tok, p, chat=chat) for p in prompts[i:i + batch_size]]
        ids, mask = pad_prompts(chunk, tok.pad_token_id, device)               # (B, P)
        s = sample_group(model, ids, mask, group_size=1, max_new_tokens=max_new_tokens,
                         eos_id=stops, pad_id=tok.pad_token_id,
                         greedy=greedy, temperature=temperature, generator=generator)
        out += decode_batch(tok, s.completion_ids, stops)
    return out


def evaluate(model, tok, records: list[dict], *, max_new_tokens: int, batch_size: int = 256,
             device=None, return_completions: bool = False, chat: bool = False) -> dict:
    """Greedy held-out accuracy of `model` on `records` (dicts with prompt, answer, task).

    Returns {"accuracy", "n"} and, when the records are equations,
    {"style_shares": share of each style among correct answers,
     "complete_share": the share of "complete" among correct answers};
    when they are multiplications, {"worked_share": the share of answers that show the working,
     "style_accuracy": {"direct": accuracy of the answers that state the product alone, "worked": of the
     others (None where there are none)}}.
    """
    if not records:
        raise ValueError("evaluate() got no records")
    completions = generate(model, tok, [r["prompt"] for r in records],
                           max_new_tokens=max_new_tokens, batch_size=batch_size, device=device, chat=chat)
    correct = [is_correct(r, c) for r, c in zip(records, completions)]
    result = {"accuracy": sum(correct) / len(records), "n": len(records)}
    if all(r["task"] == "equation" for r in records):
        styles = Counter(classify_style(r, c) for r, c, ok in zip(records, completions, correct) if ok)
        n_ok = max(sum(correct), 1)
        result["style_shares"] = {s: styles.get(s, 0) / n_ok for s in (*STYLES, "other")}
        result["complete_share"] = result["style_shares"]["complete"]
    if all(r["task"] == "multiplication" for r in records):
        styles = [multiplication_style(c) for c in completions]
        result["worked_share"] = styles.count("worked") / len(records)
        result["style_accuracy"] = {
            s: (sum(ok for st, ok in zip(styles, correct) if st == s) / styles.count(s)) if s in styles else None
            for s in MULTIPLICATION_STYLES}
    if return_completions:
        result["completions"] = completions
    return result
