"""Checkers for the exercises of lesson 07 (equations with the section-6 rubric).

Each checker takes the reader's function, calls it on cases worked out by
hand, and:
  - prints "<name>: not done yet" when the function returns None (the stub),
  - raises AssertionError, naming the failing case, on a wrong answer,
  - prints "<name>: correct" when every case passes.

    1. style_shares(records, completions)   share of each section-6 style among the correct answers
    2. complete_advantage(k, G)             the closed form of a complete answer's advantage in an all-correct group
    3. first_wrong_step(record, completion) where a complete-style solution first goes wrong
    4. process_advantages(steps, lengths)   per-token advantages from step rewards (DeepSeekMath §4.1.3)
"""
from __future__ import annotations

import math
import random

import torch

from minigrpo.course.exercises import as_float64 as _f64
from minigrpo.course.exercises import not_done as _not_done

# The note's equation 2x+3=7 and its closing example 3x-5=10, as records.
EQ_2X3 = {"task": "equation", "prompt": "求解方程 2x+3=7。", "answer": "2", "a": 2, "b": 3, "c": 7}
EQ_3X5 = {"task": "equation", "prompt": "求解方程 3x-5=10。", "answer": "5", "a": 3, "b": -5, "c": 10}

# The three answers of section 6 to 2x+3=7 ("因为" for the note's typo "因为治安"), written out by hand.
GUESS = "直接猜：x=2，因为2×2+3=7，正确。所以x=2。"
SHORT = "两边减3，得2x=4，再除以2，得x=2。"
COMPLETE = "2x+3=7，移项得2x=7-3，计算得2x=4，两边除以2，得x=2。"
# Section 6's result for 3x-5=10, verbatim, and variants of it with one step wrong.
RESULT = "3x-5=10，移项得3x=10+5，计算得3x=15，两边除以3，得x=5。"

STYLE_NAMES = ("guess", "short", "complete", "other")


# ---------------------------------------------------------------------------
# Exercise 1: style shares among the correct answers
# ---------------------------------------------------------------------------

# (records, completions, expected shares), counted by hand. Wrong answers are not counted at all.
STYLE_CASES = [
    ([EQ_2X3] * 3, [GUESS, SHORT, COMPLETE],
     {"guess": 1 / 3, "short": 1 / 3, "complete": 1 / 3, "other": 0.0}),       # section 6's group
    ([EQ_2X3] * 4, [COMPLETE, COMPLETE, SHORT, "两边减3，得2x=4，再除以2，得x=3。"],
     {"guess": 0.0, "short": 1 / 3, "complete": 2 / 3, "other": 0.0}),         # the wrong one is left out
    ([EQ_2X3, EQ_3X5], ["x=2", RESULT],
     {"guess": 0.0, "short": 0.0, "complete": 0.5, "other": 0.5}),             # a bare "x=2" is correct, "other"
    ([EQ_3X5, EQ_3X5], ["x=4", "3x-5=10，移项得3x=10+5，计算得3x=15，两边除以3，得x=6。"],
     {"guess": 0.0, "short": 0.0, "complete": 0.0, "other": 0.0}),             # nothing correct: all 0
]


def check_style_shares(style_shares) -> None:
    """Exercise 1: style_shares(records, completions) -> {style: share among the correct answers}."""
    name = "style_shares"
    if _not_done(name, style_shares(*STYLE_CASES[0][:2])):
        return
    for records, completions, expected in STYLE_CASES:
        got = style_shares([dict(r) for r in records], list(completions))
        assert isinstance(got, dict) and set(got) == set(STYLE_NAMES), (
            f"{name} returned {got!r}; expected a dict with the keys {STYLE_NAMES}")
        for style, share in expected.items():
            assert math.isclose(float(got[style]), share, abs_tol=1e-9), (
                f"{name}({completions}) gives {style} {got[style]}, expected {share:.4f} "
                f"(count only the correct answers; every share is 0 when none is correct)")
    print(f"{name}: correct ({len(STYLE_CASES)} cases; wrong answers have no style)")


# ---------------------------------------------------------------------------
# Exercise 2: the advantage of the complete style in an all-correct group
# ---------------------------------------------------------------------------

# (k, G, expected), by hand. Rewards: k answers 9.0 (complete), G-k answers 8.0 (short).
# mean = 8 + k/G; sample variance = k(G-k) / (G(G-1)); A = (1 - k/G) / std = sqrt((G-k)(G-1) / (kG)).
ADVANTAGE_CASES = [
    (1, 8, 7 / math.sqrt(8)),            # sqrt(7*7/8) = 2.4749: one complete answer among eight
    (4, 8, math.sqrt(28 / 32)),          # half and half: sqrt(0.875) = 0.9354
    (7, 8, math.sqrt(7 / 56)),           # seven of eight already complete: 0.3536
    (1, 2, math.sqrt(1 / 2)),            # the smallest group: 0.7071
    (1, 3, math.sqrt(4 / 3)),            # 1.1547
    (0, 8, 0.0),                         # no complete answer in the group: nothing to push
    (8, 8, 0.0),                         # all complete: all rewards equal, A = 0
]


# The closed form where no group of rewards can be built: k and G not integers, or G far too large to list.
# The same formula, by hand.
CLOSED_FORM_CASES = [
    (2.5, 7.5, math.sqrt(5.0 * 6.5 / (2.5 * 7.5))),   # sqrt(32.5 / 18.75) = 1.3166
    (0.5, 2.0, math.sqrt(1.5)),                        # sqrt(1.5 * 1 / (0.5 * 2)) = 1.2247
    (1.0, 1e12, (1e12 - 1) / 1e6),                     # a lone complete answer: (G-1)/sqrt(G), about sqrt(G)
    (7.5, 7.5, 0.0),                                   # k = G: all equal
]


def check_complete_advantage(complete_advantage) -> None:
    """Exercise 2: complete_advantage(k, G) -> A of a complete answer (9.0) among G-k short ones (8.0), in closed
    form: also at non-integer k and G, and at G = 10^12, where no group of rewards can be built."""
    name = "complete_advantage"
    if _not_done(name, complete_advantage(1, 8)):
        return

    def call(k, G) -> float:
        try:
            return float(complete_advantage(k, G))
        except Exception as e:   # a function that builds the group fails at k = 2.5 or G = 10^12
            raise AssertionError(
                f"{name}({k}, {G}) raised {type(e).__name__}: {e}. Write A as a formula in k and G, valid for any "
                f"real 0 < k < G, and return 0.0 at k = 0 and k = G; a function that builds the group of rewards "
                f"cannot take k = 2.5 or G = 10^12") from e

    for k, G, expected in ADVANTAGE_CASES:
        got = call(k, G)
        assert math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9), (
            f"{name}({k}, {G}) returned {got:.6f}, expected {expected:.6f} "
            f"(rewards: {k} x 9.0 and {G - k} x 8.0; A = (r - mean) / sample std; 0 when all are equal)")
    for k, G, expected in CLOSED_FORM_CASES:
        got = call(k, G)
        assert math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9), (
            f"{name}({k}, {G:g}) returned {got:.6f}, expected {expected:.6f}: the formula that is right at whole "
            f"numbers, evaluated at k = {k}, G = {G:g} (mean 8 + k/G; sample variance k(G-k) / (G(G-1)))")
    print(f"{name}: correct ({len(ADVANTAGE_CASES)} cases, and {len(CLOSED_FORM_CASES)} where no group can be built; "
          f"one complete answer among eight gets A = {ADVANTAGE_CASES[0][2]:.2f}, whatever the size of the "
          f"rubric's 1-point bonus, and among 10^12 about 10^6)")


# ---------------------------------------------------------------------------
# Exercise 3: where a complete-style solution goes wrong
# ---------------------------------------------------------------------------

# (record, completion, expected), by hand: the first of the steps restate / move / compute / divide
# that differs from the canonical solution, or None when none does.
STEP_CASES = [
    (EQ_3X5, RESULT, None),
    (EQ_2X3, COMPLETE, None),
    (EQ_3X5, "3x-5=11，移项得3x=11+5，计算得3x=16，两边除以3，得x=5。", "restate"),  # copied c wrong
    (EQ_3X5, "3x-5=10，移项得3x=10-5，计算得3x=5，两边除以3，得x=5。", "move"),      # kept the sign of b
    (EQ_3X5, "3x-5=10，移项得3x=10+5，计算得3x=16，两边除以3，得x=5。", "compute"),  # 10+5 is not 16
    (EQ_3X5, "3x-5=10，移项得3x=10+5，计算得3x=14，两边除以3，得x=4。", "compute"),  # first error counts
    (EQ_3X5, "3x-5=10，移项得3x=10+5，计算得3x=15，两边除以3，得x=3。", "divide"),   # 15/3 is not 3
    (EQ_3X5, "3x-5=10，移项得3x=10+5，计算得3x=15，两边除以5，得x=3。", "divide"),   # divided by the wrong number
]


def check_first_wrong_step(first_wrong_step) -> None:
    """Exercise 3: first_wrong_step(record, completion) -> "restate" | "move" | "compute" | "divide" | None."""
    name = "first_wrong_step"
    got = [first_wrong_step(dict(record), completion) for record, completion, _ in STEP_CASES]
    if _not_done(name, next((g for g in got if g is not None), None)):  # the stub: None for every case
        return
    for (record, completion, expected), got in zip(STEP_CASES, got):
        assert got == expected, (f"{name}({record['prompt']!r}, {completion!r}) returned {got!r}, "
                                 f"expected {expected!r} (the first step that differs from the "
                                 f"canonical complete solution)")
    print(f"{name}: correct ({len(STEP_CASES)} cases)")


# ---------------------------------------------------------------------------
# Exercise 4: process supervision, per-token advantages from step rewards
# ---------------------------------------------------------------------------

# (steps, lengths, expected (G, T)), by hand. steps[i] = (ends, rewards): step j of completion i ends at token
# ends[j] (0-based) and scores rewards[j]; T = max(lengths). Step rewards of the whole group normalised together
# with the sample std, then A[i, t] = sum of the normalised rewards of the steps of i with end >= t; 0 on padding.
PROCESS_CASES = [
    # The hint's case. R = {1, 0, 1, 1}: mean 0.75, sample std 0.5, so 1 -> +0.5 and 0 -> -1.5.
    # Completion 0's second step (tokens 2-3) is wrong: -1.5 there; its first step's tokens get +0.5 - 1.5 = -1.0.
    ([([1, 3], [1.0, 0.0]), ([0, 2], [1.0, 1.0])], [4, 3],
     [[-1.0, -1.0, -1.5, -1.5], [1.0, 0.5, 0.5, 0.0]]),
    # Outcome supervision: one step per completion, ending at its last token. Rewards 6, 8, 9 (section 6):
    # mean 23/3, sample std sqrt(7/3); every token of a completion gets its group-normalised reward.
    ([([2], [6.0]), ([0], [8.0]), ([1], [9.0])], [3, 1, 2],
     [[-5 / 3 / math.sqrt(7 / 3)] * 3, [1 / 3 / math.sqrt(7 / 3), 0.0, 0.0], [4 / 3 / math.sqrt(7 / 3)] * 2 + [0.0]]),
    # Three steps in one completion, one in the other: R = {0, 1, 2, 1}, mean 1, sample std sqrt(2/3).
    ([([0, 1, 3], [0.0, 1.0, 2.0]), ([1], [1.0])], [4, 2],
     [[k / math.sqrt(2 / 3) for k in (0.0, 1.0, 1.0, 1.0)], [0.0, 0.0, 0.0, 0.0]]),
    # Every step reward of the group equal: no signal, all 0 (as the engine's group advantage).
    ([([0, 2], [1.0, 1.0]), ([1], [1.0])], [3, 2], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
]


def _process_reference(steps, lengths) -> torch.Tensor:
    """The definition, term by term: an explicit double loop over tokens and steps (float64)."""
    flat = [r for _, rewards in steps for r in rewards]
    mean = sum(flat) / len(flat)
    var = sum((r - mean) ** 2 for r in flat) / (len(flat) - 1) if len(flat) > 1 else 0.0
    std = math.sqrt(var)
    out = torch.zeros(len(steps), max(lengths), dtype=torch.float64)       # (G, T)
    for i, (ends, rewards) in enumerate(steps):
        for t in range(lengths[i]):
            out[i, t] = sum((r - mean) / std for e, r in zip(ends, rewards) if e >= t) if std > 0 else 0.0
    return out


def _random_group(rng: random.Random):
    """A group of 2-6 completions of 1-12 tokens, each cut into 1-4 steps; the last step ends at the last token."""
    steps, lengths = [], []
    for _ in range(rng.randint(2, 6)):
        L = rng.randint(1, 12)
        ends = sorted(rng.sample(range(L - 1), rng.randint(0, min(3, L - 1)))) + [L - 1]
        rewards = ([float(rng.randint(0, 1)) for _ in ends] if rng.random() < 0.5
                   else [round(rng.uniform(-1.0, 1.0), 3) for _ in ends])
        steps.append((ends, rewards))
        lengths.append(L)
    return steps, lengths


def check_process_advantages(process_advantages) -> None:
    """Exercise 4: process_advantages(steps, lengths) -> (G, T) per-token advantages, T = max(lengths)."""
    name = "process_advantages"
    if _not_done(name, process_advantages(*PROCESS_CASES[0][:2])):
        return

    def call(steps, lengths) -> torch.Tensor:
        got = _f64(process_advantages([(list(e), list(r)) for e, r in steps], list(lengths)))
        assert got.shape == (len(steps), max(lengths)), (
            f"{name}(steps={steps}, lengths={lengths}) has shape {tuple(got.shape)}, expected "
            f"{(len(steps), max(lengths))} (G completions by T = max(lengths) tokens)")
        return got

    for steps, lengths, expected in PROCESS_CASES:
        got = call(steps, lengths)
        assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-5), (
            f"{name}(steps={steps}, lengths={lengths}) returned {[[round(float(a), 4) for a in row] for row in got]}, "
            f"expected {[[round(a, 4) for a in row] for row in expected]} (normalise all the group's step rewards "
            f"together with the sample std; a token gets the normalised rewards of the steps ending at or after it; "
            f"0 on padding and when every step reward is equal)")

    # One step per completion is outcome supervision: the engine's group advantage on every token.
    from minigrpo.advantage import group_advantages
    rng = random.Random(7)
    for G in (2, 5, 8):
        rewards = [float(rng.choice((0, 6, 8, 9))) for _ in range(G)]
        lengths = [rng.randint(1, 9) for _ in range(G)]
        got = call([([L - 1], [r]) for L, r in zip(lengths, rewards)], lengths)
        outcome = group_advantages(torch.tensor(rewards, dtype=torch.float64), G)               # (G,)
        expected = outcome[:, None] * (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None])
        assert torch.allclose(got, expected, atol=1e-5), (
            f"{name} with one step per completion (outcome supervision, rewards {rewards}, lengths {lengths}) is "
            f"not minigrpo.advantage.group_advantages on every real token: {got.tolist()}")

    # Random groups: first the property A[i, 0] = sum of completion i's normalised step rewards, then every token
    # against the explicit double loop.
    rng = random.Random(31)
    for _ in range(40):
        steps, lengths = _random_group(rng)
        got, expected = call(steps, lengths), _process_reference(steps, lengths)
        assert torch.allclose(got[:, 0], expected[:, 0], atol=1e-5), (
            f"{name}(steps={steps}, lengths={lengths}): the first tokens' advantages {got[:, 0].tolist()} are not "
            f"the sums of each completion's normalised step rewards {expected[:, 0].tolist()}")
        assert torch.allclose(got, expected, atol=1e-5), (
            f"{name}(steps={steps}, lengths={lengths}) returned {got.tolist()}, expected {expected.tolist()}")
    print(f"{name}: correct ({len(PROCESS_CASES)} hand cases, outcome supervision = group_advantages, "
          f"40 random groups; a wrong step costs the tokens before it too, less than its own)")
