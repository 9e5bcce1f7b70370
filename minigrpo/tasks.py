"""The tasks: the note's three solution styles of an equation, long multiplication worked digit by digit, and
strict parsing of a final answer.

Source: the note, section 6 ("六、示例：GRPO训练数学解题模型"): "求解方程 2x+3=7" gets three
correct answers scored 6.0 (guess "直接猜：x=2，因为2×2+3=7，正确。所以x=2。"), 8.0 (short
"两边减3，得2x=4，再除以2，得x=2。") and 9.0 (complete "2x+3=7，移项得2x=7-3，计算得2x=4，两边除以2，得x=2。";
the note's "因为治安" is a typo, written "因为"). Parsing is strict on purpose: a reward from a lenient
parser can be gamed (list several candidates, pad with zeros), and GRPO finds such holes (lesson 7).

Free text (a JSONL of "prompt" and "answer" given with --train_file, e.g. GSM8K) is task "text": the
final answer must be marked, as "#### 42" (GSM8K's own solutions), "\\boxed{42}" (MATH, R1) or
"<answer>42</answer>", and every marked value must agree. Task "text_last_number" also reads an
unmarked completion's last number, as many GRPO recipes do; it pays answers the strict one does not.

Task "multiplication" ("计算 347*26。") is a long answer: 50-150 characters of worked steps
(`long_multiplication`, after the detailed scratchpads of Lee et al. 2023, "Teaching Arithmetic to Small
Transformers") ending "所以347*26=9022。", the only part the reward reads.
"""
from __future__ import annotations

import functools
import re

TASKS = ("arithmetic", "equation", "multiplication", "text", "text_last_number")
STYLES = ("guess", "short", "complete")  # section 6's answers 1, 2, 3, in rubric order

_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")  # canonical integer: no "+", no leading zeros
# One occurrence of "x=<number>" as a stated value of x. Not preceded by a digit,
# a letter, ")" or a product sign (so "2x=4", "(x)=", "2×x=4" are not answers),
# and not followed by more digits or an operator (so "x=7-3" states no value).
_X_IS = re.compile(
    r"(?<![0-9A-Za-z)\]×*/÷])x=(-?[0-9]+(?:\.[0-9]+)?)(?![0-9+\-*/×÷(x=]|\.[0-9])")
_EQUATION_PROMPT = re.compile(r"求解方程 ([0-9]+)x([+-][0-9]+)=(-?[0-9]+)。")
_MULTIPLICATION_PROMPT = re.compile(r"计算 ([0-9]+)\*([0-9]+)。")
# the last line of a worked multiplication: "所以347*26=9022。"
_PRODUCT_IS = re.compile(r"所以[0-9]+\*[0-9]+=(-?[0-9]+)。")
# a number as free text writes it: an optional sign and $, digits with optional thousands commas, a decimal part
_NUMBER = r"-?\$?\s?[0-9][0-9,]*(?:\.[0-9]+)?"
_MARKED = re.compile(rf"####\s*({_NUMBER})|\\boxed\{{\s*({_NUMBER})\s*\}}|<answer>\s*({_NUMBER})\s*</answer>")
_ANY_NUMBER = re.compile(_NUMBER)


# ---------------------------------------------------------------------------
# Equations and the three solution styles of section 6
# ---------------------------------------------------------------------------

def equation_text(a: int, b: int, c: int) -> str:
    """The equation ax+b=c as written in prompts: "2x+3=7", "3x-5=10", "2x+3=-7"."""
    return f"{a}x{_signed(b)}={c}"


def parse_equation(prompt: str) -> tuple[int, int, int]:
    """(a, b, c) of an equation prompt "求解方程 ax+b=c。"; ValueError if it is not one."""
    m = _EQUATION_PROMPT.search(prompt)
    if m is None:
        raise ValueError(f"not an equation prompt of the form '求解方程 ax+b=c。': {prompt!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def solution(record: dict, style: str = "complete") -> str:
    """The canonical completion (no EOS) of an equation `record` ("a", "b", "c") in a section-6 style.

    An arithmetic problem has no working to show: its only solution is the answer, whatever the style; a
    multiplication has one worked solution, `long_multiplication`'s.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    if record["task"] == "arithmetic":
        return str(record["answer"])
    if record["task"] == "multiplication":   # one way to work it: long_multiplication's
        return long_multiplication(int(record["a"]), int(record["b"]))
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
    """"guess", "short" or "complete" when `completion` (stripped) is exactly that style's solution of the
    equation `record`, else "other": exact comparison keeps the rubric verifiable."""
    if record.get("task", "equation") != "equation":
        raise ValueError(f"solution styles are defined for equations, not {record.get('task')!r}")
    text = completion.strip()
    for style in STYLES:
        if text == solution({**record, "task": "equation"}, style):
            return style
    return "other"


# ---------------------------------------------------------------------------
# Long multiplication, worked digit by digit: a long answer that is right only if every step is
# ---------------------------------------------------------------------------

def multiplication_prompt(a: int, b: int) -> str:
    """The prompt of the multiplication task: "计算 347*26。" ("compute 347*26")."""
    return f"计算 {a}*{b}。"


def parse_multiplication(prompt: str) -> tuple[int, int]:
    """(a, b) of a multiplication prompt "计算 a*b。"; ValueError if it is not one."""
    m = _MULTIPLICATION_PROMPT.search(prompt)
    if m is None:
        raise ValueError(f"not a multiplication prompt of the form '计算 a*b。': {prompt!r}")
    return int(m.group(1)), int(m.group(2))


def long_multiplication(a: int, b: int) -> str:
    """The worked solution of a*b (a, b >= 0) that the multiplication task teaches, one line per step:

        347*6：7*6=42，4*6+4=28，3*6+2=20，得2082。         a times each digit of b, right to left, with carries
        347*20：7*2=14，4*2+1=9，3*2=6，得6940。            (the tens digit: its product ends in a 0)
        2082+6940：2+0=2，8+4=12，0+9+1=10，2+6+1=9，得9022。   the partial products added column by column
        所以347*26=9022。

    Each equation writes its last digit and carries the rest; the last one of a line is written whole. The
    answer is right only if every step is, which is what makes it a long answer worth rewarding at the end.
    """
    if a < 0 or b < 0:
        raise ValueError(f"long_multiplication takes non-negative numbers, got {a} and {b}")
    lines, total = [], None
    for k, digit in enumerate(reversed(str(b))):
        d, steps, carry = int(digit), [], 0
        for x in reversed(str(a)):
            value = int(x) * d + carry
            steps.append(f"{x}*{d}{f'+{carry}' if carry else ''}={value}")
            carry = value // 10
        partial = a * d * 10 ** k
        lines.append(f"{a}*{d * 10 ** k}：{'，'.join(steps)}，得{partial}。")
        if total is not None:
            lines.append(_column_addition(total, partial))
        total = partial if total is None else total + partial
    lines.append(f"所以{a}*{b}={a * b}。")
    return "\n".join(lines)


def direct_product(a: int, b: int) -> str:
    """The product stated without the working, "所以347*26=9022。": the last line of long_multiplication alone.

    The multiplication dataset's demonstrations mix it with the worked solution, so that the SFT model answers
    in either style; a model this small rarely gets a product right without writing the steps down.
    """
    return f"所以{a}*{b}={a * b}。"


MULTIPLICATION_STYLES = ("direct", "worked")


def multiplication_style(completion: str) -> str:
    """"direct" if `completion` (stripped) is one line (no working shown), else "worked"; right or wrong."""
    return "worked" if "\n" in completion.strip() else "direct"


def _column_addition(x: int, y: int) -> str:
    """"x+y：" then the columns added right to left with carries (a missing digit is 0), "得x+y。"."""
    xs, ys = str(x)[::-1], str(y)[::-1]
    steps, carry = [], 0
    for i in range(max(len(xs), len(ys))):
        p, q = (int(s[i]) if i < len(s) else 0 for s in (xs, ys))
        value = p + q + carry
        steps.append(f"{p}+{q}{f'+{carry}' if carry else ''}={value}")
        carry = value // 10
    return f"{x}+{y}：{'，'.join(steps)}，得{x + y}。"


# ---------------------------------------------------------------------------
# Strict answer parsing
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=1 << 16)   # a step asks about B*G completions, many of them the same text
def parse_answer(completion: str, task: str) -> str | None:
    """The final answer `completion` states, as a canonical integer string, or None.

    arithmetic: the stripped completion if it is exactly one integer ("46", "-7", "0"); "046", "-0",
        "+5", "46 47" and "46。" are None.
    equation: the value of the last "x=<int>" if the completion ends with it (then optionally "。") and
        every "x=<number>" it states agrees; "2x=4" states no value of x, "x=2或x=3。" is None.
    multiplication: n of the last line "所以a*b=n。" (long_multiplication's), if the completion ends with it and
        states "所以" nowhere else; "所以...=09022。" and a second "所以" are None.
    text: the value marked "#### n", "\\boxed{n}" or "<answer>n</answer>" (every mark must agree), as a
        canonical number ("1,234" -> "1234", "$5.50" -> "5.5", "3.0" -> "3"); None if nothing is marked.
    text_last_number: the same, or if nothing is marked, the completion's last number.
    """
    text = completion.strip()
    if task == "arithmetic":
        return text if _is_canonical_int(text) else None
    if task in ("text", "text_last_number"):
        return _free_text_answer(text, lenient=task == "text_last_number")
    if task == "multiplication":
        last = _PRODUCT_IS.fullmatch(text.rsplit("\n", 1)[-1])
        if last is None or text.count("所以") != 1:
            return None
        return last.group(1) if _is_canonical_int(last.group(1)) else None
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
    """True iff `completion`'s parsed answer equals the expected one: the one correctness test of the engine.

    `record_or_answer` is a record (its "answer" and "task" are used) or the answer itself (then `task`,
    "arithmetic" or "equation", is required). The trainer, the evaluation and the reward all ask here.
    """
    if isinstance(record_or_answer, dict):
        answer, task = record_or_answer["answer"], task or record_or_answer["task"]
    else:
        answer = record_or_answer
    if task is None:
        raise ValueError("task is required when an answer, not a record, is given")
    if task in ("text", "text_last_number"):   # "1,234" in the data is the same answer as 1234 in the text
        answer = canonical_number(answer)
    return parse_answer(completion, task) == str(answer)


def demonstration(record: dict) -> str:
    """The completion an SFT demonstration teaches: its worked solution if it has one, else the answer."""
    return record.get("solution", record["answer"])


def canonical_number(text: str) -> str | None:
    """A number as free text writes it, in one spelling: no "$", spaces or thousands commas, no trailing
    zeros after the point, "-0" as "0". None if `text` is not a number."""
    t = str(text).strip().replace("$", "").replace(" ", "").replace(",", "")
    if not re.fullmatch(r"-?[0-9]+(?:\.[0-9]+)?", t):
        return None
    if "." in t:
        t = t.rstrip("0").rstrip(".")
    neg, digits = t.startswith("-"), t.lstrip("-")
    whole, _, frac = digits.partition(".")
    digits = (whole.lstrip("0") or "0") + ("." + frac if frac else "")
    return "0" if digits == "0" else ("-" if neg else "") + digits


def _free_text_answer(text: str, lenient: bool) -> str | None:
    """The marked answer of a free-text completion (all marks agreeing), else with `lenient` its last number."""
    marked = {canonical_number(next(g for g in m.groups() if g is not None)) for m in _MARKED.finditer(text)}
    if marked:
        return marked.pop() if len(marked) == 1 else None   # several different answers: no credit
    if not lenient:
        return None
    numbers = _ANY_NUMBER.findall(text)
    return canonical_number(numbers[-1]) if numbers else None


def _is_canonical_int(text: str) -> bool:
    return _INT.fullmatch(text) is not None and text != "-0"


def _signed(v: int) -> str:
    """v with an explicit sign, as it follows a term: +3, -5."""
    return f"+{v}" if v >= 0 else f"{v}"
