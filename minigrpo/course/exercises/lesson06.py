"""Checkers for the exercises of lesson 06 (SFT warm start, then GRPO on arithmetic).

Each checker takes the reader's function, calls it on cases worked out by
hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. mixed_group_share(right, G)       measured: the share of groups of G samples whose rewards differ
    2. make_format_bonus_reward()        exact answer plus 0.1 for a well-formed answer, built with `combine`
    3. first_step_reaching(rows, level)  the first GRPO step whose held-out accuracy is >= level
"""
from __future__ import annotations

import math

from minigrpo.course.exercises import not_done as _not_done


# ---------------------------------------------------------------------------
# Exercise 1: how many groups carry a signal, measured on samples
# ---------------------------------------------------------------------------

# (right: prompts x samples, G, expected share of mixed groups), by hand; groups are consecutive samples of a prompt.
MIXED_CASES = [
    ([[1, 1, 0, 0]], 2, 0.0),                 # (1, 1) and (0, 0): both all equal
    ([[1, 1, 0, 0]], 4, 1.0),                 # one group (1, 1, 0, 0): mixed
    ([[1, 0, 1, 0], [1, 1, 1, 1]], 2, 0.5),   # (1, 0), (1, 0) mixed; (1, 1), (1, 1) not: 2 of 4
    ([[0, 0, 0, 0, 0, 0]], 3, 0.0),           # never right
    ([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]], 3, 0.5),
]


def check_mixed_group_share(mixed_group_share, right=None) -> None:
    """Exercise 1: mixed_group_share(right (P, n) of 0/1, G) -> the share of the P * n / G groups (G consecutive
    samples of one prompt each) whose rewards are not all equal. With `right` (the lesson's probe), also checks it
    there at G = 4, 8, 16 against a count made here."""
    import numpy as np
    name = "mixed_group_share"
    if _not_done(name, mixed_group_share(np.array(MIXED_CASES[0][0]), MIXED_CASES[0][1])):
        return
    for rows, G, expected in MIXED_CASES:
        got = float(mixed_group_share(np.array(rows), G))
        assert math.isclose(got, expected, abs_tol=1e-12), (
            f"{name}({rows}, G={G}) returned {got}, expected {expected} (split each prompt's samples into groups of "
            f"G in a row; a group counts when its rewards are not all equal)")
    if right is None:
        print(f"{name}: correct ({len(MIXED_CASES)} cases)")
        return
    right = np.asarray(right)
    shares = {}
    for G in (4, 8, 16):
        groups = right.reshape(right.shape[0], -1, G)
        shares[G] = float(np.mean(groups.min(-1) != groups.max(-1)))
        got = float(mixed_group_share(right, G))
        assert math.isclose(got, shares[G], abs_tol=1e-12), f"{name}(probe, G={G}) = {got}, expected {shares[G]}"
    print(f"{name}: correct; on the probe the mixed share is {shares[4]:.0%} at G = 4, {shares[8]:.0%} at G = 8, "
          f"{shares[16]:.0%} at G = 16")


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
