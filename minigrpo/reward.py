"""Verifiable rewards: plain functions that score one completion, and the spec that combines them.

Source: the note, section 6 (the rubric: 6.0 / 8.0 / 9.0 for the answers to "求解方程
2x+3=7") and section 4 (one number per whole completion). Every reward is
`reward(prompt, completion, **task_fields) -> float` and ignores the record fields it does not use; a reward
marked `stochastic` (random_reward, lesson 11's control) is also given the run's `generator=` by `score`.

    parse_reward("correct:1,format:0.1")   # their weighted sum, as --reward writes it
"""
from __future__ import annotations

import functools
import math
import re

import torch

from .tasks import classify_style, is_correct, parse_answer, parse_equation

# Section 6's rubric for a correct answer, by solution style.
RUBRIC_POINTS = {"complete": 9.0, "short": 8.0, "guess": 6.0, "other": 6.0}
RUBRIC_WRONG = 0.0


def _task_of(prompt: str, task: str | None) -> str:
    """The record's task, or, when not given, the one the prompt's form implies."""
    if task is not None:
        return task
    if prompt.startswith("求解方程"):
        return "equation"
    return "multiplication" if prompt.startswith("计算 ") else "arithmetic"


def correctness(prompt: str, completion: str, answer: str | int, task: str | None = None,
                **_fields) -> float:
    """1.0 if the completion's final answer equals `answer`, else 0.0 (task inferred from the prompt if omitted)."""
    return 1.0 if is_correct(answer, completion, _task_of(prompt, task)) else 0.0


def format_reward(prompt: str, completion: str, task: str | None = None, **_fields) -> float:
    """1.0 if the completion states one final answer of the right form, else 0.0.

    Arithmetic: the completion is a bare integer. Equation: it ends with
    "x=<int>" (optionally "。") and states no other value of x. Right or wrong
    does not matter here; that is `correctness`.
    """
    return 0.0 if parse_answer(completion, _task_of(prompt, task)) is None else 1.0


THINK_ANSWER = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)


def think_format(prompt: str, completion: str, **_fields) -> float:
    """1.0 if the completion is laid out as R1's template asks, "<think>...</think><answer>...</answer>"
    (DeepSeek-R1 §2.2.1, its format reward) and nothing else around them, else 0.0. Right or wrong does not
    matter here."""
    return 1.0 if THINK_ANSWER.fullmatch(completion) else 0.0


def rubric(prompt: str, completion: str, answer: str | int, task: str | None = None,
           **fields) -> float:
    """Section 6's score of an equation's solution.

    Wrong or unparseable: 0.0. Correct: 9.0 if it is the "complete" solution
    (移项, 计算, 两边除以), 8.0 if the "short" one (两边减, 再除以), 6.0 otherwise
    (the "guess", or any other correct wording: correct but incomplete).
    The style is decided by `tasks.classify_style` against this equation's
    canonical texts; a, b, c are read from task_fields, or from the prompt.
    """
    task = _task_of(prompt, task)
    if task != "equation":
        raise ValueError(f"the rubric scores equation solutions (section 6), not task {task!r}")
    if not is_correct(answer, completion, task):
        return RUBRIC_WRONG
    if all(k in fields for k in ("a", "b", "c")):
        a, b, c = fields["a"], fields["b"], fields["c"]
    else:
        a, b, c = parse_equation(prompt)
    record = {"task": task, "prompt": prompt, "answer": str(answer), "a": a, "b": b, "c": c}
    return RUBRIC_POINTS[classify_style(record, completion)]


def random_reward(prompt: str, completion: str, *, generator: torch.Generator, **_fields) -> float:
    """1.0 or 0.0 by a fair coin for every rollout, whatever it says: a negative control.

    "Spurious Rewards" (Shao et al. 2025) trains with a reward of 1 drawn with a fixed probability for every
    rollout. The coin comes from the run's generator (score passes it to a reward marked `stochastic`), which
    the checkpoints keep, so a run replays and resumes exactly. A coin read off the text instead (a hash of
    the completion) would not be a control: it is a fixed reward for each text, which GRPO can learn to
    chase, answer by answer.
    """
    return float(torch.rand((), generator=generator, device=generator.device).item() < 0.5)


random_reward.stochastic = True   # score() hands it the run's generator


REWARDS = {"correct": correctness, "format": format_reward, "think_format": think_format, "rubric": rubric,
           "random": random_reward}


def combine(weights: dict) -> callable:
    """A reward equal to the weighted sum of other rewards.

    `weights` maps a reward function, or its name in REWARDS, to its weight, e.g.
    {"correct": 1.0, "format": 0.1}. The result's __name__ spells the sum ("1*correct+0.1*format").
    """
    if not weights:
        raise ValueError("combine needs at least one reward and its weight")
    terms = []
    for key, w in weights.items():
        if isinstance(key, str):
            if key not in REWARDS:
                raise ValueError(f"unknown reward {key!r}; valid names: {', '.join(REWARDS)}")
            fn, name = REWARDS[key], key
        elif callable(key):
            fn = key
            name = next((n for n, f in REWARDS.items() if f is key), getattr(key, "__name__", "reward"))
        else:
            raise ValueError(f"weights keys must be reward functions or names, got {key!r}")
        if not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"weight of {name!r} must be a finite number, got {w!r}")
        terms.append((fn, float(w), name))

    def combined(prompt: str, completion: str, generator: torch.Generator | None = None, **task_fields) -> float:
        return sum(w * (fn(prompt, completion, generator=generator, **task_fields) if stochastic(fn)
                        else fn(prompt, completion, **task_fields)) for fn, w, _ in terms)

    combined.stochastic = any(stochastic(fn) for fn, _, _ in terms)
    combined.__name__ = "+".join(f"{w:g}*{name}" for _, w, name in terms)
    combined.__doc__ = f"Weighted sum of rewards: {combined.__name__}."
    return combined


def parse_reward(spec: str):
    """"correct" or "correct:1,format:0.1" (the Config's `reward`) -> a reward function (their weighted sum)."""
    weights = {}
    for part in spec.split(","):
        name, _, w = part.strip().partition(":")
        try:
            weights[name] = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"reward weight {w!r} for {name!r} is not a number (e.g. correct:1,format:0.1)")
    return combine(weights)


def soft_overlong_punishment(lengths, max_len: int, cache: int) -> list[float]:
    """DAPO's soft overlong punishment (§3.4, eq. 13), as TRL's get_soft_overlong_punishment; EOS counts.

    0 up to max_len - cache tokens, then falling linearly to -1 at max_len, and -1 beyond it.
    """
    out = []
    for n in lengths:
        if n <= max_len - cache:
            out.append(0.0)
        elif n <= max_len:
            out.append((max_len - cache - n) / cache)
        else:
            out.append(-1.0)
    return out


def stochastic(reward_fn) -> bool:
    """Whether `reward_fn` draws random numbers (it is then called with the run's `generator=`)."""
    return bool(getattr(reward_fn, "stochastic", False))


def score(reward_fn, prompts, completions, records, generator: torch.Generator | None = None) -> list[float]:
    """Rewards of a batch: [reward_fn(prompts[i], completions[i], **records[i])], N of each; a stochastic
    reward (random_reward) also gets `generator`, the run's, drawn from row by row.

    A reward that raises, or returns NaN / inf / a non-number, is reported as a ValueError naming the
    prompt and the completion: the run stops rather than hide the bug.
    """
    name = getattr(reward_fn, "__name__", repr(reward_fn))
    if stochastic(reward_fn):
        if generator is None:
            raise ValueError(f"reward {name} draws random numbers: score it with the run's generator "
                             "(score(..., generator=...))")
        reward_fn = functools.partial(reward_fn, generator=generator)
    if not len(prompts) == len(completions) == len(records):
        raise ValueError(f"prompts, completions and records differ in length: "
                         f"{len(prompts)}, {len(completions)}, {len(records)}")
    out = []
    for prompt, completion, record in zip(prompts, completions, records):
        fields = {k: v for k, v in record.items() if k != "prompt"}
        try:
            r = float(reward_fn(prompt, completion, **fields))
        except Exception as e:
            raise ValueError(f"reward {name} failed on prompt {prompt!r}, completion "
                             f"{completion!r}: {type(e).__name__}: {e}") from e
        if not math.isfinite(r):
            raise ValueError(f"reward {name} returned {r} on prompt {prompt!r}, "
                             f"completion {completion!r}")
        out.append(r)
    return out
