"""Lesson 11 (long answers): its exercise checkers accept the solutions, say "not done yet" for the stubs, and
reject plausible wrong answers.

The solutions are exec'd from the solutions notebook; the wrong answers are the slips a reader is likely to make
(a flipped sign, an off-by-one, a missing factor, the wrong quantity).
"""
import json
import math
import os

import pytest
import torch

from minigrpo.course.exercises import lesson11

from nbcells import function_defined

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "11_long_answers_solutions.ipynb")


def solution_fn(name):
    return function_defined(SOLUTIONS, name, {"torch": torch, "math": math})


def committed_warmups():
    """Section 6's three committed critic warm-ups, each a list of {"step", "check_mse"} rows."""
    out = []
    for seed in (0, 1, 2):
        with open(os.path.join(ROOT, "results", "cpu_long_values", f"values_s{seed}.json")) as f:
            out.append(json.load(f)["warmup"])
    return out


def test_checkers_accept_the_solutions(capsys):
    lesson11.check_soft_overlong(solution_fn("soft_overlong"))
    lesson11.check_overlong_filter(solution_fn("overlong_filter"))
    lesson11.check_warmup_stop(solution_fn("warmup_stop"), committed_warmups())
    out = capsys.readouterr().out
    assert out.count(": correct") == 3 and "not done" not in out


def test_checkers_say_not_done_for_stubs(capsys):
    lesson11.check_soft_overlong(lambda lengths, max_len, cache: None)
    lesson11.check_overlong_filter(lambda ids, mask, eos: None)
    lesson11.check_warmup_stop(lambda checks, every, patience, gain: None)
    assert capsys.readouterr().out.count("not done yet") == 3


def test_the_checkers_hand_numbers_agree_with_the_engine():
    """The checkers' hand-derived tables and the engine they also compare with must not contradict each other."""
    from minigrpo.loss import loss_mask
    from minigrpo.reward import soft_overlong_punishment
    for lengths, max_len, cache, expected in lesson11.OVERLONG_CASES:
        assert soft_overlong_punishment(lengths, max_len, cache) == pytest.approx(expected, abs=1e-12)
    for rows, expected in lesson11.FILTER_CASES:
        ids, mask = lesson11._filter_batch(rows)
        assert loss_mask(mask, ~(ids == lesson11.EOS).any(-1), True).tolist() == expected


def test_the_warm_up_rule_is_the_one_the_critic_ran():
    """The committed warm-ups stopped where values.warm_up_critic's rule says: exercise 3's answer, by the engine."""
    import inspect
    from minigrpo.course.values import warm_up_critic
    defaults = {k: v.default for k, v in inspect.signature(warm_up_critic).parameters.items()}
    assert (defaults["check_every"], defaults["patience"], defaults["min_gain"]) == (10, 3, 0.01)
    for history in committed_warmups():
        checks = [h["check_mse"] for h in history]
        assert lesson11._reference_stop(checks, 10, 3, 0.01) == history[-1]["step"]
    for checks, every, patience, gain, want in lesson11.STOP_CASES:
        assert lesson11._reference_stop(checks, every, patience, gain) == want


def _clamp(x):
    return max(-1.0, min(0.0, x))


@pytest.mark.parametrize("wrong", [
    lambda ls, L, c: [max(0.0, min(1.0, (n - (L - c)) / c)) for n in ls],        # sign flipped: a bonus
    lambda ls, L, c: [_clamp((L - c - n) / L) for n in ls],                       # divided by max_len
    lambda ls, L, c: [_clamp((L - c - (n - 1)) / c) for n in ls],                 # EOS not counted
    lambda ls, L, c: [min(0.0, (L - c - n) / c) for n in ls],                     # no floor at -1 past max_len
    lambda ls, L, c: [_clamp((L - c + 1 - n) / c) for n in ls],                   # the ramp starts a token late
    lambda ls, L, c: [_clamp((L - n) / c) for n in ls],                           # the ramp after max_len
])
def test_soft_overlong_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="soft_overlong"):
        lesson11.check_soft_overlong(wrong)


@pytest.mark.parametrize("wrong", [
    lambda ids, m, eos: m.float(),                                                     # no filtering
    lambda ids, m, eos: m.float() * (ids[:, -1] == eos).float().unsqueeze(-1),         # EOS must be the last token
    lambda ids, m, eos: m.float() * (ids == eos).float(),                              # only the EOS token kept
    lambda ids, m, eos: m.float() * (~(ids == eos).any(-1)).float().unsqueeze(-1),      # the cut-off rows kept
    lambda ids, m, eos: m.float() * (m.sum(-1) < m.shape[1]).float().unsqueeze(-1),    # "full length" as cut off
])
def test_overlong_filter_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="overlong_filter"):
        lesson11.check_overlong_filter(wrong)


def _stop(better, count_from=1):
    """A warm-up rule with the given test for "better", stopping after `patience` checks that are not."""
    def rule(checks, every, patience, gain):
        best, since = checks[0], 0
        for i, err in enumerate(checks[1:], start=count_from):
            if better(err, best, gain):
                best, since = err, 0
            else:
                since += 1
                if since >= patience:
                    return i * every
        return None
    return rule


@pytest.mark.parametrize("wrong", [
    _stop(lambda err, best, gain: err < best),                        # any progress counts
    _stop(lambda err, best, gain: err < best - gain),                 # an absolute margin, not a relative one
    _stop(lambda err, best, gain: err < best * (1 - gain), count_from=0),   # steps counted from the wrong check
    _stop(lambda err, best, gain: err <= best * (1 + gain)),          # the margin the wrong way round
])
def test_warmup_stop_checker_rejects_wrong(wrong):
    with pytest.raises(AssertionError, match="warmup_stop"):
        lesson11.check_warmup_stop(wrong, committed_warmups())


def test_warmup_stop_checker_rejects_a_rule_that_compares_with_the_last_check():
    def last(checks, every, patience, gain):
        since = 0
        for i in range(1, len(checks)):
            since = 0 if checks[i] < checks[i - 1] * (1 - gain) else since + 1
            if since >= patience:
                return i * every
        return None
    with pytest.raises(AssertionError, match="warmup_stop"):
        lesson11.check_warmup_stop(last, committed_warmups())
