"""The course's datasets, read back checked: sft / train / test splits of JSONL records, and GRPO's prompt batches.

    data/<dataset>/sft.jsonl    demonstrations for the supervised warm start ("solution" field)
    data/<dataset>/train.jsonl  prompts for GRPO (the model samples its own completions)
    data/<dataset>/test.jsonl   held-out problems for evaluation

Every record is checked when it is read: its characters against the tokenizer, its length in tokens
against the model (record_check); an error names the file and the line. Any other JSONL of "prompt"
and "answer" (free text, e.g. GSM8K) is read the same way with --train_file / --test_file / --sft_file. How data/ was generated (and that no
test problem is in sft or train) is minigrpo/course/datasets.py. The prompts of GRPO step s are a
seeded function of s (`prompt_batch`), so a resumed run sees the same batches.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .checks import CHOICES
from .files import read_jsonl
from .tasks import demonstration
from .tokenizer import encode, is_char_level

SPLITS = ("test", "sft", "train")  # the order in which they are drawn
REQUIRED_KEYS = ("prompt", "answer")
HOW_TO_GENERATE = "run: python -m minigrpo data (from the repository root)"


def dataset_path(name: str, split: str, data_dir: str | os.PathLike = "data") -> Path:
    """Path of one split's file: <data_dir>/<name>/<split>.jsonl."""
    if name not in CHOICES["task"]:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(CHOICES['task'])}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return Path(data_dir) / name / f"{split}.jsonl"


def record_check(tok, max_new_tokens: int, max_seq_len: int, demonstrations: bool = False, chat: bool = False):
    """A check for each record read: every character has a token (the course's tokenizer), and the record fits
    the model.

    A prompt needs its tokens (with BOS or the chat template, as `encode` writes them) plus max_new_tokens
    for its completion; a demonstration needs its whole solution and EOS.
    """
    unit = "characters" if is_char_level(tok) else "tokens"

    def check(record: dict) -> None:
        prompt = encode(tok, record["prompt"], chat=chat)
        need = len(prompt) + max_new_tokens
        size = len(record["prompt"]) if unit == "characters" else len(prompt)
        what = f"a prompt of {size} {unit} with max_new_tokens={max_new_tokens}"
        if demonstrations:
            need = len(prompt) + len(encode(tok, str(demonstration(record)), bos=False, eos=True))
            what = "this demonstration (prompt, solution, EOS)"
        if need > max_seq_len:
            raise ValueError(f"{what} needs {need} positions but max_seq_len={max_seq_len}; "
                             f"raise --max_seq_len to at least {need}")
    return check


def read_records(path: str | os.PathLike, tok=None, max_new_tokens: int = 0, max_seq_len: int = 0,
                 demonstrations: bool = False, chat: bool = False, missing_hint: str = HOW_TO_GENERATE) -> list[dict]:
    """The problems of a JSONL file ("prompt" and "answer" at least), checked against `tok` if given."""
    check = record_check(tok, max_new_tokens, max_seq_len, demonstrations, chat) if tok is not None else None
    return read_jsonl(path, REQUIRED_KEYS, check, missing_hint=missing_hint)


def load_split(name: str, split: str, data_dir: str | os.PathLike = "data", tok=None,
               max_new_tokens: int = 0, max_seq_len: int = 0) -> list[dict]:
    """The records of <data_dir>/<name>/<split>.jsonl; with `tok`, each is checked (see record_check)."""
    return read_records(dataset_path(name, split, data_dir), tok, max_new_tokens, max_seq_len,
                        demonstrations=split == "sft")


def prompt_batch(records: list[dict], step: int, batch_size: int, seed: int, round: int = 0) -> list[dict]:
    """The B prompts of GRPO step `step` (0-based): a seeded shuffle per epoch, a pure function of the step.

    `round` > 0 gives dynamic sampling's extra batches of the step, each from a shuffle of its own.
    """
    per_epoch = max(1, len(records) // batch_size)
    epoch, k = divmod(step, per_epoch)
    if round:
        epoch, k = 10**12 + step * 10**4 + round, 0   # a shuffle for each (step, round), apart from the epochs
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    return [records[i] for i in order[k * batch_size:(k + 1) * batch_size].tolist()]
