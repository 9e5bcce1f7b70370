"""Verifiable rewards: plain functions that score one completion.

Source: the course document, section 6 (the rubric that gives the group of
answers to "求解方程 2x+3=7" the rewards 6.0 / 8.0 / 9.0), and section 4 (the
reward is sequence-level: one number per whole completion, no per-token value).

Every reward has the same signature,

    reward(prompt: str, completion: str, **task_fields) -> float

where task_fields are the record's other fields ("answer", "task", "a", ...);
fields a reward does not use are accepted and ignored, so a whole record can
be passed: `reward(r["prompt"], completion, **{k: v for k, v in r.items() if k != "prompt"})`,
which is what `score` does for a batch.

    correctness    1.0 if the parsed final answer is right, else 0.0
    format_reward  1.0 if there is exactly one well-formed final answer, else 0.0
    rubric         section 6: wrong 0.0; correct and complete 9.0, short 8.0,
                   otherwise (guess or any other wording) 6.0
    combine({"correct": 1.0, "format": 0.1})  -> their weighted sum

Rewards only read text; they never run the model. "Correct" is decided by
`tasks.parse_answer`, which is strict: several candidate answers earn nothing.
"""
from __future__ import annotations

import math

from minigrpo.tasks import classify_style, parse_answer, parse_equation

# Section 6's rubric for a correct answer, by solution style.
RUBRIC_POINTS = {"complete": 9.0, "short": 8.0, "guess": 6.0, "other": 6.0}
RUBRIC_WRONG = 0.0


def _task_of(prompt: str, task: str | None) -> str:
    """The record's task, or, when not given, the one the prompt's form implies."""
    if task is not None:
        return task
    return "equation" if prompt.startswith("求解方程") else "arithmetic"


def correctness(prompt: str, completion: str, answer: str | int, task: str | None = None,
                **_fields) -> float:
    """1.0 if the completion's final answer equals `answer`, else 0.0.

    Args:
        prompt: the problem, e.g. "12+34=" or "求解方程 2x+3=7。".
        completion: the generated text (no prompt, no EOS).
        answer: the expected answer, e.g. "46" or "2".
        task: "arithmetic" or "equation" (inferred from the prompt if omitted).
    """
    return 1.0 if parse_answer(completion, _task_of(prompt, task)) == str(answer) else 0.0


def format_reward(prompt: str, completion: str, task: str | None = None, **_fields) -> float:
    """1.0 if the completion states one final answer of the right form, else 0.0.

    Arithmetic: the completion is a bare integer. Equation: it ends with
    "x=<int>" (optionally "。") and states no other value of x. Right or wrong
    does not matter here; that is `correctness`.
    """
    return 0.0 if parse_answer(completion, _task_of(prompt, task)) is None else 1.0


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
    if parse_answer(completion, task) != str(answer):
        return RUBRIC_WRONG
    if all(k in fields for k in ("a", "b", "c")):
        a, b, c = fields["a"], fields["b"], fields["c"]
    else:
        a, b, c = parse_equation(prompt)
    record = {"task": task, "prompt": prompt, "answer": str(answer), "a": a, "b": b, "c": c}
    return RUBRIC_POINTS[classify_style(record, completion)]


REWARDS = {"correct": correctness, "format": format_reward, "rubric": rubric}


def combine(weights: dict) -> callable:
    """A reward equal to the weighted sum of other rewards.

    Args:
        weights: maps a reward function, or its name in REWARDS ("correct",
            "format", "rubric"), to its weight, e.g. {"correct": 1.0, "format": 0.1}.
    Returns:
        reward(prompt, completion, **task_fields) -> sum_k weight_k * reward_k(...).
        Its __name__ spells the sum ("1.0*correct+0.1*format"), for logs.
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

    def combined(prompt: str, completion: str, **task_fields) -> float:
        return sum(w * fn(prompt, completion, **task_fields) for fn, w, _ in terms)

    combined.__name__ = "+".join(f"{w:g}*{name}" for _, w, name in terms)
    combined.__doc__ = f"Weighted sum of rewards: {combined.__name__}."
    return combined


def score(reward_fn, prompts, completions, records) -> list[float]:
    """Rewards of a batch: [reward_fn(prompts[i], completions[i], **records[i])].

    Args:
        reward_fn: a reward with the signature above.
        prompts: (N,) prompt strings.
        completions: (N,) completion strings (a group of G per prompt, flattened:
            repeat the prompt and its record G times).
        records: (N,) records holding the task fields; a "prompt" key in them
            is ignored in favour of `prompts`.
    Returns:
        (N,) floats. A reward that raises, or returns NaN / inf / a non-number,
        is reported as a ValueError naming the prompt and the completion.
    """
    if not len(prompts) == len(completions) == len(records):
        raise ValueError(f"prompts, completions and records differ in length: "
                         f"{len(prompts)}, {len(completions)}, {len(records)}")
    name = getattr(reward_fn, "__name__", repr(reward_fn))
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
