"""Tests of minigrpo.tasks against the note's section-6 texts, written by hand."""
import random

import pytest
from hypothesis import given, settings, strategies as st

from minigrpo.course.datasets import make_arithmetic, make_equation
from minigrpo.tasks import (STYLES, classify_style, equation_text, is_correct, long_multiplication,
                            multiplication_prompt, parse_answer, parse_equation, parse_multiplication, solution)
from minigrpo.tokenizer import VOCAB_CHARS

DOC = {"task": "equation", "prompt": "求解方程 2x+3=7。", "answer": "2", "a": 2, "b": 3, "c": 7}
DOC_GUESS = "直接猜：x=2，因为2×2+3=7，正确。所以x=2。"
DOC_SHORT = "两边减3，得2x=4，再除以2，得x=2。"
DOC_COMPLETE = "2x+3=7，移项得2x=7-3，计算得2x=4，两边除以2，得x=2。"
# Section 6.6, the output after training, character for character (LaTeX and spaces removed).
DOC_RESULT = "3x-5=10，移项得3x=10+5，计算得3x=15，两边除以3，得x=5。"


def eq(a, b, c):
    return {"task": "equation", "prompt": f"求解方程 {equation_text(a, b, c)}。",
            "answer": str((c - b) // a), "a": a, "b": b, "c": c}


# --- the note's group and its closing example -------------------------------------

def test_note_group_texts():
    assert solution(DOC, "guess") == DOC_GUESS
    assert solution(DOC, "short") == DOC_SHORT
    assert solution(DOC, "complete") == DOC_COMPLETE


def test_note_result_3x_minus_5():
    assert solution(eq(3, -5, 10), "complete") == DOC_RESULT
    assert eq(3, -5, 10)["prompt"] == "求解方程 3x-5=10。"
    assert eq(3, -5, 10)["answer"] == "5"


def test_negative_b_and_negative_x_forms():
    assert solution(eq(3, -5, 10), "guess") == "直接猜：x=5，因为3×5-5=10，正确。所以x=5。"
    assert solution(eq(3, -5, 10), "short") == "两边加5，得3x=15，再除以3，得x=5。"
    neg = eq(2, 3, -7)  # x = -5
    assert solution(neg, "guess") == "直接猜：x=-5，因为2×(-5)+3=-7，正确。所以x=-5。"
    assert solution(neg, "short") == "两边减3，得2x=-10，再除以2，得x=-5。"
    assert solution(neg, "complete") == "2x+3=-7，移项得2x=-7-3，计算得2x=-10，两边除以2，得x=-5。"


def test_solution_rejects_unknown_style_and_non_integer_root():
    with pytest.raises(ValueError, match="style"):
        solution(DOC, "verbose")
    with pytest.raises(ValueError, match="integer root"):
        solution({"task": "equation", "a": 2, "b": 3, "c": 8}, "short")


def test_arithmetic_solution_is_the_answer():
    rec = {"task": "arithmetic", "prompt": "50-95=", "answer": "-45", "a": 50, "b": 95, "op": "-"}
    assert [solution(rec, s) for s in STYLES] == ["-45"] * 3


# --- generators --------------------------------------------------------------------------

def test_make_arithmetic_fields_and_ranges():
    rng = random.Random(1)
    for op, digits in [("+", 2), ("-", 2), ("-", 3), ("*", 2), ("+", 1)]:
        for _ in range(300):
            r = make_arithmetic(rng, op, digits)
            a, b = r["a"], r["b"]
            assert 0 <= a <= 10 ** digits - 1 and 0 <= b <= 10 ** digits - 1
            expected = {"+": a + b, "-": a - b, "*": a * b}[op]
            assert r == {"task": "arithmetic", "prompt": f"{a}{op}{b}=", "answer": str(expected),
                         "a": a, "b": b, "op": op}
    with pytest.raises(ValueError):
        make_arithmetic(rng, "/", 2)


def test_make_arithmetic_reaches_both_ends_and_negatives():
    rng = random.Random(2)
    rs = [make_arithmetic(rng, "-", 1) for _ in range(2000)]
    values = {r["a"] for r in rs} | {r["b"] for r in rs}
    assert values == set(range(10))
    assert any(r["answer"].startswith("-") for r in rs)


def test_make_equation_fields_and_ranges():
    rng = random.Random(3)
    seen_a, seen_x, seen_b = set(), set(), set()
    for _ in range(3000):
        r = make_equation(rng)
        a, b, c, x = r["a"], r["b"], r["c"], int(r["answer"])
        assert 2 <= a <= 9 and -10 <= x <= 10 and -20 <= b <= 20 and b != 0
        assert a * x + b == c
        sign = "+" if b > 0 else "-"
        assert r["prompt"] == f"求解方程 {a}x{sign}{abs(b)}={c}。"
        assert parse_equation(r["prompt"]) == (a, b, c)
        seen_a.add(a), seen_x.add(x), seen_b.add(b)
    assert seen_a == set(range(2, 10))
    assert seen_x == set(range(-10, 11))
    assert seen_b == set(range(-20, 21)) - {0}


def test_parse_equation_rejects_other_text():
    with pytest.raises(ValueError):
        parse_equation("12+34=")


# --- strict parsing --------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("46", "46"), (" 46\n", "46"), ("0", "0"), ("-7", "-7"), ("-45", "-45"),
    ("046", None), ("-0", None), ("+5", None), ("46 47", None), ("46。", None),
    ("", None), ("4.0", None), ("x=46", None), ("- 7", None), ("4 6", None),
])
def test_parse_arithmetic(text, expected):
    assert parse_answer(text, "arithmetic") == expected


@pytest.mark.parametrize("text, expected", [
    (DOC_GUESS, "2"), (DOC_SHORT, "2"), (DOC_COMPLETE, "2"), (DOC_RESULT, "5"),
    ("x=2", "2"), ("x=2。", "2"), ("  x=2。\n", "2"), ("所以x=2", "2"), ("答：x=2。", "2"),
    ("得x=-5。", "-5"), ("x=0", "0"),
    ("2x=4", None),                  # "2x=4" states 2x, not x
    ("两边减3，得2x=4", None),        # no final x=
    ("x=2或x=3。", None),             # several candidates
    ("x=2，x=3", None),
    ("x=3，所以x=2。", None),         # an earlier, different value
    ("x=2，验证正确，所以x=2。", "2"),  # the same value twice is one candidate
    ("x=2。正确", None),              # does not end with the answer
    ("x=2。。", None),
    ("x=046", None), ("x=-0", None), ("x=+2", None), ("x=2.5", None), ("x=2.0", None),
    ("x = 2", None), ("(x)=2", None), ("2×x=4，得x=2。", "2"),
    ("x=7-3，得x=4。", "4"),           # "x=7-3" is an expression, not a candidate
    ("", None), ("2", None),
])
def test_parse_equation(text, expected):
    assert parse_answer(text, "equation") == expected


def test_parse_unknown_task():
    with pytest.raises(ValueError, match="task"):
        parse_answer("2", "chess")


def test_is_correct():
    assert is_correct(DOC, DOC_SHORT)
    assert not is_correct(DOC, "两边减3，得2x=4，再除以2，得x=3。")
    assert is_correct("-45", "-45", "arithmetic")
    assert is_correct(-45, "-45", "arithmetic")
    assert not is_correct("45", "-45", "arithmetic")
    with pytest.raises(ValueError):
        is_correct("2", "x=2")


# --- styles ---------------------------------------------------------------------------

def test_classify_note_group():
    assert classify_style(DOC, DOC_GUESS) == "guess"
    assert classify_style(DOC, DOC_SHORT) == "short"
    assert classify_style(DOC, "  " + DOC_COMPLETE + "\n") == "complete"
    assert classify_style(DOC, "x=2") == "other"
    assert classify_style(DOC, DOC_COMPLETE.replace("x=2", "x=3")) == "other"
    # the complete text of another equation is not the complete text of this one
    assert classify_style(DOC, DOC_RESULT) == "other"
    assert classify_style(eq(3, -5, 10), DOC_RESULT) == "complete"


@settings(max_examples=200, deadline=None)
@given(a=st.integers(2, 9), x=st.integers(-10, 10),
       b=st.integers(-20, 20).filter(lambda v: v != 0))
def test_every_style_parses_classifies_and_spells(a, x, b):
    rec = eq(a, b, a * x + b)
    assert rec["answer"] == str(x)
    texts = {s: solution(rec, s) for s in STYLES}
    assert len(set(texts.values())) == 3
    for style, text in texts.items():
        assert parse_answer(text, "equation") == str(x)
        assert classify_style(rec, text) == style
        assert set(text) <= set(VOCAB_CHARS), set(text) - set(VOCAB_CHARS)
    assert set(rec["prompt"]) <= set(VOCAB_CHARS)


def test_arithmetic_prompts_spell_in_vocabulary():
    rng = random.Random(4)
    for op in "+-*":
        for _ in range(200):
            r = make_arithmetic(rng, op, 3)
            assert set(r["prompt"] + r["answer"]) <= set(VOCAB_CHARS)


# --- long multiplication, worked digit by digit ------------------------------------

WORKED_347_26 = ("347*6：7*6=42，4*6+4=28，3*6+2=20，得2082。\n"      # 7*6 = 42: write 2, carry 4; ...
                 "347*20：7*2=14，4*2+1=9，3*2=6，得6940。\n"         # 347*2 = 694, times ten
                 "2082+6940：2+0=2，8+4=12，0+9+1=10，2+6+1=9，得9022。\n"
                 "所以347*26=9022。")


def test_long_multiplication_by_hand():
    assert long_multiplication(347, 26) == WORKED_347_26
    # 50*7: one line; the zero's step is written too, the last step whole
    assert long_multiplication(50, 7) == "50*7：0*7=0，5*7=35，得350。\n所以50*7=350。"
    # a zero digit of b gives a line of zeros; columns of unequal length add a 0
    assert long_multiplication(12, 30).split("\n")[:3] == [
        "12*0：2*0=0，1*0=0，得0。", "12*30：2*3=6，1*3=3，得360。", "0+360：0+0=0，0+6=6，0+3=3，得360。"]
    assert parse_multiplication(multiplication_prompt(347, 26)) == (347, 26)
    with pytest.raises(ValueError, match="计算"):
        parse_multiplication("347*26=")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 9999), st.integers(0, 999))
def test_every_step_of_a_worked_multiplication_is_true(a, b):
    """Each equation holds, each line's result is what its steps write, and the last line is a*b."""
    import re
    lines = long_multiplication(a, b).split("\n")
    assert lines[-1] == f"所以{a}*{b}={a * b}。"
    for line in lines[:-1]:
        head, rest = line.split("：")
        steps, result = rest[:-1].split("，得")
        x, y = (int(v) for v in re.split(r"[*+]", head))
        assert int(result) == (x * y if "*" in head else x + y)
        written, carry = "", 0
        for i, step in enumerate(steps.split("，")):
            lhs, value = step.split("=")
            terms = [int(v) for v in re.findall(r"[0-9]+", lhs)]
            product = "*" in lhs
            assert int(value) == (terms[0] * terms[1] if product else terms[0] + terms[1]) + sum(terms[2:])
            assert sum(terms[2:]) == carry              # the carry is the last step's value without its last digit
            carry = int(value) // 10
            written = (value if i == len(steps.split("，")) - 1 else value[-1]) + written
        # a product line multiplies by one digit of b followed by k zeros: its steps write the product by the digit
        shift = 10 ** (len(head.split("*")[1]) - 1) if "*" in head else 1
        assert int(written) * shift == int(result)


def test_multiplication_answers_are_parsed_strictly():
    assert parse_answer(WORKED_347_26, "multiplication") == "9022"
    assert is_correct({"task": "multiplication", "answer": "9022"}, WORKED_347_26)
    assert parse_answer("所以347*26=9022。", "multiplication") == "9022"          # the steps are not checked
    for bad in ("9022", WORKED_347_26[:-1], WORKED_347_26.replace("=9022。", "=09022。"),
                WORKED_347_26 + "所以347*26=9022。", "所以347*26=9022。\n所以347*26=9021。",
                WORKED_347_26.replace("得9022。", "所以9022。"), WORKED_347_26 + " 9023"):
        assert parse_answer(bad, "multiplication") is None, bad
    assert parse_answer(WORKED_347_26 + "  \n", "multiplication") == "9022"       # outer white space is stripped


def test_a_product_stated_alone_is_the_direct_style_and_parses():
    from minigrpo.tasks import direct_product, multiplication_style
    assert direct_product(347, 26) == "所以347*26=9022。"
    assert is_correct({"task": "multiplication", "answer": "9022"}, direct_product(347, 26))
    assert multiplication_style(direct_product(347, 26)) == "direct"
    assert multiplication_style(WORKED_347_26) == "worked"
    assert multiplication_style("所以347*26=9021。\n") == "direct"         # wrong, and outer white space: still direct
    assert multiplication_style("347*6：7*6=42\n所以347*26=1。") == "worked"   # any working shown, right or wrong


def test_worked_multiplications_are_long_and_vary():
    rng = random.Random(0)
    lengths = [len(long_multiplication(rng.randint(10, 999), rng.randint(10, 99))) + 1 for _ in range(500)]
    assert 60 <= min(lengths) < max(lengths) <= 200                  # characters = tokens, EOS included
    assert set("".join(long_multiplication(987, 65) + multiplication_prompt(987, 65))) <= set(VOCAB_CHARS)


def test_evaluation_counts_each_multiplication_style(monkeypatch):
    """evaluate() on multiplications: the share of answers that show the working and each style's accuracy, by
    hand on four answers (the model's greedy answers replaced by these)."""
    import minigrpo.evaluate as ev
    records = [{"task": "multiplication", "prompt": multiplication_prompt(a, b), "answer": str(a * b), "a": a, "b": b}
               for a, b in ((347, 26), (12, 30), (50, 7), (99, 99))]
    answers = [WORKED_347_26, long_multiplication(12, 30).replace("=360。", "=361。"), "所以50*7=350。", "所以99*99=9800。"]
    monkeypatch.setattr(ev, "generate", lambda model, tok, prompts, **kw: answers[:len(prompts)])
    result = ev.evaluate(None, None, records, max_new_tokens=160)
    assert result["accuracy"] == 2 / 4 and result["worked_share"] == 2 / 4
    assert result["style_accuracy"] == {"direct": 1 / 2, "worked": 1 / 2}
    only_worked = ev.evaluate(None, None, records[:2], max_new_tokens=160)
    assert only_worked["style_accuracy"] == {"direct": None, "worked": 1 / 2}
