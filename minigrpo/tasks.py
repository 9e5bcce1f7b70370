"""The tasks the course trains on: problem generators, the three solution styles of
the equation example, and strict parsing of a completion's final answer.

Source: the course document, section 6 ("六、示例：GRPO训练数学解题模型"). Its
prompt "求解方程 2x+3=7" gets a group of three correct answers that differ only in
how much working they show, and a rubric scores them 6.0 / 8.0 / 9.0:

    guess     "直接猜：x=2，因为2×2+3=7，正确。所以x=2。"             6.0 (correct, incomplete)
    short     "两边减3，得2x=4，再除以2，得x=2。"                       8.0 (correct, clear)
    complete  "2x+3=7，移项得2x=7-3，计算得2x=4，两边除以2，得x=2。"   9.0 (most complete)

The document writes the guess as "因为治安，2×2+3=7" -- "治安" is a typo -- and
this module writes "因为". Its closing example, 3x-5=10, is reproduced exactly
by `solution(record, "complete")`. Equations are ax+b=c with an integer root;
arithmetic ("12+34=" -> "46") is the simpler task used on a laptop CPU.

A record is a plain, JSON-serialisable dict:

    {"task": "arithmetic", "prompt": "12+34=", "answer": "46", "a": 12, "b": 34, "op": "+"}
    {"task": "equation", "prompt": "求解方程 2x+3=7。", "answer": "2", "a": 2, "b": 3, "c": 7}

`answer` is always the canonical integer string ("46", "-45", "0"). Parsing is
strict on purpose: a reward computed from a lenient parser can be gamed (list
several candidates, pad with zeros), and GRPO finds such holes quickly.
"""
from __future__ import annotations

import random
import re

TASKS = ("arithmetic", "equation")
OPS = ("+", "-", "*")
STYLES = ("guess", "short", "complete")  # section 6's answers 1, 2, 3, in rubric order

_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")  # canonical integer: no "+", no leading zeros
# One occurrence of "x=<number>" as a stated value of x. Not preceded by a digit,
# a letter, ")" or a product sign (so "2x=4", "(x)=", "2×x=4" are not answers),
# and not followed by more digits or an operator (so "x=7-3" states no value).
_X_IS = re.compile(
    r"(?<![0-9A-Za-z)\]×*/÷])x=(-?[0-9]+(?:\.[0-9]+)?)(?![0-9+\-*/×÷(x=]|\.[0-9])")
_EQUATION_PROMPT = re.compile(r"求解方程 ([0-9]+)x([+-][0-9]+)=(-?[0-9]+)。")


# ---------------------------------------------------------------------------
# Problem generators
# ---------------------------------------------------------------------------

def make_arithmetic(rng: random.Random, op: str, digits: int) -> dict:
    """Draw one arithmetic problem `a op b =`.

    Args:
        rng: the random source (a `random.Random`; never the global one).
        op: "+", "-" or "*".
        digits: operands are uniform in [0, 10**digits - 1].
    Returns:
        a record {"task", "prompt", "answer", "a", "b", "op"}; the answer of a
        subtraction may be negative ("-45"). The completion to learn is `answer`.
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {OPS}")
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    hi = 10 ** digits - 1
    a, b = rng.randint(0, hi), rng.randint(0, hi)
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return {"task": "arithmetic", "prompt": f"{a}{op}{b}=", "answer": str(value),
            "a": a, "b": b, "op": op}


def equation_text(a: int, b: int, c: int) -> str:
    """The equation ax+b=c as written in prompts: "2x+3=7", "3x-5=10", "2x+3=-7"."""
    return f"{a}x{_signed(b)}={c}"


def make_equation(rng: random.Random, a_max: int = 9, x_max: int = 10, b_max: int = 20) -> dict:
    """Draw one equation ax+b=c whose root x is an integer.

    Args:
        rng: the random source.
        a_max: a is uniform in [2, a_max] (a=1 would make "two sides divide by 1").
        x_max: the root x is uniform in [-x_max, x_max].
        b_max: b is uniform in [-b_max, b_max] without 0 (every equation needs a 移项).
    Returns:
        a record {"task", "prompt", "answer", "a", "b", "c"} with c = a*x + b and
        prompt "求解方程 {ax+b=c}。", answer str(x).
    """
    if a_max < 2 or x_max < 0 or b_max < 1:
        raise ValueError(f"need a_max >= 2, x_max >= 0, b_max >= 1; got {a_max}, {x_max}, {b_max}")
    a = rng.randint(2, a_max)
    x = rng.randint(-x_max, x_max)
    b = rng.choice([v for v in range(-b_max, b_max + 1) if v != 0])
    c = a * x + b
    return {"task": "equation", "prompt": f"求解方程 {equation_text(a, b, c)}。",
            "answer": str(x), "a": a, "b": b, "c": c}


def parse_equation(prompt: str) -> tuple[int, int, int]:
    """(a, b, c) of an equation prompt "求解方程 ax+b=c。"; ValueError if it is not one."""
    m = _EQUATION_PROMPT.search(prompt)
    if m is None:
        raise ValueError(f"not an equation prompt of the form '求解方程 ax+b=c。': {prompt!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


# ---------------------------------------------------------------------------
# The three solution styles of section 6
# ---------------------------------------------------------------------------

def solution(record: dict, style: str = "complete") -> str:
    """The canonical completion of `record` in one of the section-6 styles.

    Args:
        record: an equation record (needs "a", "b", "c") or an arithmetic record.
        style: "guess", "short" or "complete" (see STYLES). An arithmetic problem
            has no working to show, so its only solution is the answer text,
            whatever the style.
    Returns:
        the completion text, without EOS (the trainer appends it).
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    if record["task"] == "arithmetic":
        return str(record["answer"])
    a, b, c = int(record["a"]), int(record["b"]), int(record["c"])
    if (c - b) % a:
        raise ValueError(f"{equation_text(a, b, c)} has no integer root")
    x = (c - b) // a
    if style == "guess":  # answer 1: state x, then check it by substitution
        shown = f"({x})" if x < 0 else f"{x}"
        return f"直接猜：x={x}，因为{a}×{shown}{_signed(b)}={c}，正确。所以x={x}。"
    if style == "short":  # answer 2: one operation on both sides, then divide
        move = f"两边减{b}" if b > 0 else f"两边加{-b}"
        return f"{move}，得{a}x={c - b}，再除以{a}，得x={x}。"
    # answer 3: move the constant across, compute, divide
    return (f"{equation_text(a, b, c)}，移项得{a}x={c}{_signed(-b)}，"
            f"计算得{a}x={c - b}，两边除以{a}，得x={x}。")


def classify_style(record: dict, completion: str) -> str:
    """Which section-6 style `completion` is, for the equation `record`.

    Returns "guess", "short" or "complete" when the completion (whitespace
    stripped) is exactly that style's canonical solution for this record, else
    "other". Exact comparison keeps the rubric verifiable: a correct answer in
    any other wording counts as "correct but incomplete".
    """
    if record.get("task", "equation") != "equation":
        raise ValueError(f"solution styles are defined for equations, not {record.get('task')!r}")
    text = completion.strip()
    for style in STYLES:
        if text == solution({**record, "task": "equation"}, style):
            return style
    return "other"


# ---------------------------------------------------------------------------
# Strict answer parsing
# ---------------------------------------------------------------------------

def parse_answer(completion: str, task: str) -> str | None:
    """The final answer stated by `completion`, as a canonical integer string, or None.

    Args:
        completion: the generated text (without prompt and EOS).
        task: "arithmetic" or "equation".
    Returns:
        arithmetic: the stripped completion if it is exactly one integer ("46",
            "-7", "0"), else None ("046", "-0", "+5", "46 47", "46。" are None).
        equation: the value of the last "x=<int>" if the completion ends with it
            (optionally followed by "。") and every "x=<number>" it states agrees;
            else None. "2x=4" states no value of x; "x=2或x=3。" is None.
    """
    text = completion.strip()
    if task == "arithmetic":
        return text if _is_canonical_int(text) else None
    if task != "equation":
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    found = list(_X_IS.finditer(text))
    if not found or text[found[-1].end():] not in ("", "。"):
        return None  # the completion must end with its answer
    values = {m.group(1) for m in found}
    if len(values) != 1:
        return None  # several candidates: no credit
    value = values.pop()
    return value if _is_canonical_int(value) else None


def is_correct(record_or_answer: dict | str | int, completion: str, task: str | None = None) -> bool:
    """True iff `completion`'s parsed answer equals the expected answer.

    Args:
        record_or_answer: a record (its "answer" and "task" are used) or the
            expected answer itself (then `task` is required).
        completion: the generated text.
        task: "arithmetic" or "equation"; taken from the record when omitted.
    """
    if isinstance(record_or_answer, dict):
        answer, task = record_or_answer["answer"], task or record_or_answer["task"]
    else:
        answer = record_or_answer
    if task is None:
        raise ValueError("task is required when an answer, not a record, is given")
    return parse_answer(completion, task) == str(answer)


def _is_canonical_int(text: str) -> bool:
    return _INT.fullmatch(text) is not None and text != "-0"


def _signed(v: int) -> str:
    """v with an explicit sign, as it follows a term: +3, -5."""
    return f"+{v}" if v >= 0 else f"{v}"
