"""Checkers for the exercises of lesson 06 (SFT warm start, then GRPO on arithmetic).

Each checker takes the reader's function, calls it on cases worked out by
hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. all_equal_prob(p, G)              P(a group of G 0/1 rewards is all equal) at per-prompt accuracy p
    2. make_format_bonus_reward()        exact answer plus 0.1 for a well-formed answer, built with `combine`
    3. first_step_reaching(rows, level)  the first GRPO step whose held-out accuracy is >= level
"""
from __future__ import annotations

import math

from minigrpo.course.exercises import not_done as _not_done


# ---------------------------------------------------------------------------
# Exercise 1: the probability that a group teaches nothing
# ---------------------------------------------------------------------------

# (p, G, expected), by hand: p**G + (1 - p)**G.
ALL_EQUAL_CASES = [
    (0.5, 2, 0.5),                      # HH or TT: 1/4 + 1/4
    (0.5, 4, 0.125),                    # 2 / 16
    (0.0, 8, 1.0),                      # always wrong: always all equal
    (1.0, 8, 1.0),                      # always right: always all equal
    (0.9, 8, 0.43046721 + 1e-8),        # 0.9^8 + 0.1^8
    (0.1, 8, 0.43046721 + 1e-8),        # symmetric in p <-> 1 - p
    (0.2, 3, 0.008 + 0.512),            # 0.2^3 + 0.8^3
    (0.99, 16, 0.99 ** 16 + 0.01 ** 16),
]


def check_all_equal_prob(all_equal_prob) -> None:
    """Exercise 1: all_equal_prob(p, G) -> float, P(G independent Bernoulli(p) rewards are all equal)."""
    name = "all_equal_prob"
    if _not_done(name, all_equal_prob(0.5, 2)):
        return
    for p, G, expected in ALL_EQUAL_CASES:
        got = float(all_equal_prob(p, G))
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12), (
            f"{name}({p}, {G}) returned {got}, expected {expected} "
            f"(all right OR all wrong: p**G + (1-p)**G)")
    print(f"{name}: correct ({len(ALL_EQUAL_CASES)} cases; at p = 0.9 a group of 8 is all equal "
          f"{100 * ALL_EQUAL_CASES[4][2]:.0f}% of the time)")


# ---------------------------------------------------------------------------
# Exercise 2: a reward with a format bonus
# ---------------------------------------------------------------------------

# (prompt, completion, answer, expected reward of correct + 0.1 * format), by hand.
FORMAT_BONUS_CASES = [
    ("12+34=", "46", "46", 1.1),        # right and well formed
    ("12+34=", "45", "46", 0.1),        # wrong, but one bare integer: the bonus only
    ("12+34=", "46 47", "46", 0.0),     # two candidates: not an answer at all
    ("12+34=", "", "46", 0.0),          # nothing
    ("12+34=", "046", "46", 0.0),       # not a canonical integer
    ("9-17=", "-8", "-8", 1.1),         # negative answers are integers too
    ("9-17=", "8", "-8", 0.1),          # the sign wrong
]


def check_make_format_bonus_reward(make_format_bonus_reward) -> None:
    """Exercise 2: make_format_bonus_reward() -> reward(prompt, completion, **fields) = correct + 0.1 * format."""
    name = "make_format_bonus_reward"
    reward = make_format_bonus_reward()
    if _not_done(name, reward):
        return
    assert callable(reward), f"{name}() returned {reward!r}, expected a reward function"
    for prompt, completion, answer, expected in FORMAT_BONUS_CASES:
        got = float(reward(prompt, completion, answer=answer, task="arithmetic"))
        assert math.isclose(got, expected, abs_tol=1e-9), (
            f"reward({prompt!r}, {completion!r}, answer={answer!r}) = {got}, expected {expected} "
            f"(1.0 for the right answer plus 0.1 for exactly one well-formed integer)")
    print(f"{name}: correct ({len(FORMAT_BONUS_CASES)} cases: right 1.1, wrong but well formed 0.1, "
          f"malformed 0.0)")


# ---------------------------------------------------------------------------
# Exercise 3: reading the metrics file
# ---------------------------------------------------------------------------

# (rows, level, expected), by hand. Rows without "eval_accuracy" were not evaluated.
FIRST_STEP_CASES = [
    ([{"step": 1}, {"step": 2, "eval_accuracy": 0.5}, {"step": 3}, {"step": 4, "eval_accuracy": 0.9}],
     0.9, 4),
    ([{"step": 1}, {"step": 2, "eval_accuracy": 0.5}, {"step": 3}, {"step": 4, "eval_accuracy": 0.9}],
     0.5, 2),                                                          # ">=": equal counts
    ([{"step": 10, "eval_accuracy": 0.7}, {"step": 20, "eval_accuracy": 0.95},
      {"step": 30, "eval_accuracy": 0.85}, {"step": 40, "eval_accuracy": 0.97}], 0.9, 20),  # the first, not the last
    ([{"step": 5, "eval_accuracy": 0.3}, {"step": 10, "eval_accuracy": 0.4}], 0.9, 0),       # never: 0
    ([{"step": 1, "accuracy": 0.95}, {"step": 2, "eval_accuracy": 0.6}], 0.9, 0),           # "accuracy" is sampled, not held-out
]
# The committed run (results/cpu_arithmetic/metrics.jsonl), read by hand: 0.76 at step 50,
# 0.816, 0.858, 0.88, 0.872, then 0.9 at step 300.
COMMITTED_FIRST_90 = 300


def check_first_step_reaching(first_step_reaching, committed_rows=None) -> None:
    """Exercise 3: first_step_reaching(rows, level) -> the first step with eval_accuracy >= level (0 if none)."""
    name = "first_step_reaching"
    if _not_done(name, first_step_reaching(FIRST_STEP_CASES[0][0], FIRST_STEP_CASES[0][1])):
        return
    for rows, level, expected in FIRST_STEP_CASES:
        got = first_step_reaching([dict(r) for r in rows], level)
        assert got == expected, (f"{name}({rows}, {level}) returned {got!r}, expected {expected} "
                                 f"(the first row whose 'eval_accuracy' is >= the level; 0 if none)")
    if committed_rows is not None:
        got = first_step_reaching(committed_rows, 0.9)
        assert got == COMMITTED_FIRST_90, (f"{name}(committed rows, 0.9) returned {got!r}, "
                                           f"expected {COMMITTED_FIRST_90}")
    print(f"{name}: correct ({len(FIRST_STEP_CASES)} cases"
          + (f"; the committed run first reached 90% at step {COMMITTED_FIRST_90})" if committed_rows else ")"))
