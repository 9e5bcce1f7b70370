"""Tests for minigrpo.advantage against values derived by hand from the formula.

A_i = (r_i - mu_r) / sigma_r, sigma_r = sqrt(sum (r_i - mu_r)^2 / (G-1))
(course section 3, item 1). Expected numbers are closed forms worked out
below in comments, never the code's own output.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minigrpo.advantage import group_advantages, group_stats, zero_variance_fraction

# The note, section 3: rewards 3.8, 5.2, 6.1.
#   mu = 15.1 / 3 = 151/30 = 5.0333
#   deviations = -37/30, 5/30, 32/30  (-1.2333, 0.1667, 1.0667)
#   sum of squares = (1369 + 25 + 1024) / 900 = 2418/900
#   sample sigma     = sqrt(2418/900 / 2) = sqrt(1209)/30 = 1.1590
#   population sigma = sqrt(2418/900 / 3) = sqrt(806)/30  = 0.9463
#   sample A = (-37, 5, 32) / sqrt(1209) = -1.0641, 0.1438, 0.9203  (doc: -1.06, 0.14, 0.92)
DOC_REWARDS = [3.8, 5.2, 6.1]
DOC_SAMPLE = [-37 / math.sqrt(1209), 5 / math.sqrt(1209), 32 / math.sqrt(1209)]
DOC_POPULATION = [-37 / math.sqrt(806), 5 / math.sqrt(806), 32 / math.sqrt(806)]

# The note, section 6 (equation 2x+3=7): rewards 6, 8, 9.
#   mu = 23/3 = 7.6667; deviations = -5/3, 1/3, 4/3; sum of squares = 42/9
#   sample sigma     = sqrt(42/9 / 2) = sqrt(7/3)  = 1.5275 -> A = (-5, 1, 4)/sqrt(21) = -1.09, 0.22, 0.87
#   population sigma = sqrt(42/9 / 3) = sqrt(14)/3 = 1.2472 -> A = (-5, 1, 4)/sqrt(14) = -1.34, 0.27, 1.07
#   (the note prints sigma ~= 1.25 and -1.34, 0.26, 1.06: population sigma and rounded intermediates)
EQ_REWARDS = [6.0, 8.0, 9.0]
EQ_SAMPLE = [-5 / math.sqrt(21), 1 / math.sqrt(21), 4 / math.sqrt(21)]
EQ_POPULATION = [-5 / math.sqrt(14), 1 / math.sqrt(14), 4 / math.sqrt(14)]


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def close(actual, expected, atol=1e-9):
    assert torch.allclose(actual, t(expected), rtol=0, atol=atol), (actual, expected)


def test_note_group_sample_std():
    adv = group_advantages(t(DOC_REWARDS), group_size=3)
    close(adv, DOC_SAMPLE)
    # The note's two-decimal numbers.
    assert [round(a, 2) for a in adv.tolist()] == [-1.06, 0.14, 0.92]


def test_note_group_population_std():
    close(group_advantages(t(DOC_REWARDS), 3, std="population"), DOC_POPULATION)


def test_equation_group_sample_and_population():
    close(group_advantages(t(EQ_REWARDS), 3, std="sample"), EQ_SAMPLE)
    adv = group_advantages(t(EQ_REWARDS), 3, std="population")
    close(adv, EQ_POPULATION)
    assert [round(a, 2) for a in adv.tolist()] == [-1.34, 0.27, 1.07]


def test_group_stats_by_hand():
    mean, sigma = group_stats(t(EQ_REWARDS + DOC_REWARDS), 3)
    close(mean, [23 / 3, 151 / 30])
    close(sigma, [math.sqrt(7 / 3), math.sqrt(1209) / 30])
    _, sigma_pop = group_stats(t(EQ_REWARDS + DOC_REWARDS), 3, std="population")
    close(sigma_pop, [math.sqrt(14) / 3, math.sqrt(806) / 30])


def test_float32_matches_to_1e6():
    adv = group_advantages(torch.tensor(DOC_REWARDS), 3)  # float32 in, float32 out
    assert adv.dtype == torch.float32
    close(adv.double(), DOC_SAMPLE, atol=1e-6)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("value", [0.0, 1.0, 0.1, -3.7, 1e6 + 0.3])
def test_equal_rewards_give_exact_zero(scale, value):
    # 0.1 + 0.1 + 0.1 != 0.3 in floating point: the mean is not exactly 0.1,
    # yet the advantages must be exactly 0, never NaN.
    adv = group_advantages(torch.full((3,), value, dtype=torch.float64), 3, scale=scale)
    assert torch.equal(adv, torch.zeros(3, dtype=torch.float64))
    _, sigma = group_stats(torch.full((3,), value), 3)
    assert sigma.item() == 0.0


def test_multiple_groups_are_independent():
    # Group 0: note rewards; group 1: all equal; group 2: equation rewards.
    rewards = t(DOC_REWARDS + [0.3, 0.3, 0.3] + EQ_REWARDS)
    adv = group_advantages(rewards, 3)
    close(adv, DOC_SAMPLE + [0.0, 0.0, 0.0] + EQ_SAMPLE)
    assert adv[3:6].eq(0).all()


def test_scale_batch_and_none_by_hand():
    # Groups [0, 2] and [10, 14], G = 2.
    #   group means 1 and 12 -> centred -1, 1, -2, 2
    #   batch mean 6.5, deviations -6.5, -4.5, 3.5, 7.5, squares sum to 131
    #   batch sample sigma = sqrt(131/3) = 6.6081, population sqrt(131/4) = 5.7228
    #   group sample sigmas: sqrt(2) and sqrt(8) -> both groups -1/sqrt(2), 1/sqrt(2)
    rewards = t([0.0, 2.0, 10.0, 14.0])
    close(group_advantages(rewards, 2, scale="none"), [-1.0, 1.0, -2.0, 2.0])
    s = math.sqrt(131 / 3)
    close(group_advantages(rewards, 2, scale="batch"), [-1 / s, 1 / s, -2 / s, 2 / s])
    p = math.sqrt(131 / 4)
    close(group_advantages(rewards, 2, scale="batch", std="population"), [-1 / p, 1 / p, -2 / p, 2 / p])
    h = 1 / math.sqrt(2)
    close(group_advantages(rewards, 2, scale="group"), [-h, h, -h, h])


def test_scale_batch_keeps_zero_for_constant_group():
    # Groups [1, 3] and [2, 2]: batch mean 2, squares 1+1+0+0 -> sample sigma sqrt(2/3).
    adv = group_advantages(t([1.0, 3.0, 2.0, 2.0]), 2, scale="batch")
    s = math.sqrt(2 / 3)
    close(adv, [-1 / s, 1 / s, 0.0, 0.0])
    assert adv[2:].eq(0).all()


def test_eps_is_added_to_sigma():
    # 6, 8, 9 with eps = 0.5: A = (-5/3, 1/3, 4/3) / (sqrt(7/3) + 0.5)
    d = math.sqrt(7 / 3) + 0.5
    close(group_advantages(t(EQ_REWARDS), 3, eps=0.5), [-5 / 3 / d, 1 / 3 / d, 4 / 3 / d])


def test_integer_and_bool_rewards_are_accepted():
    # 0/1 correctness rewards [1, 0, 0, 1]: mean 1/2, sample sigma sqrt(1/3) -> +-sqrt(3)/2
    adv = group_advantages(torch.tensor([True, False, False, True]), 4)
    h = math.sqrt(3) / 2
    close(adv.double(), [h, -h, -h, h], atol=1e-6)


def test_zero_variance_fraction():
    rewards = t([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5])  # groups of 2: equal, not, equal, equal
    assert zero_variance_fraction(rewards, 2) == 0.75
    assert zero_variance_fraction(t([0.0, 1.0, 2.0, 3.0]), 2) == 0.0


# Rewards on a grid of quarters: adding a quarter-grid shift is exact in
# float64, so "equal" stays equal and distinct values stay far apart (a shift
# of 1.0 would swallow a reward of 1e-96 and make any formula fail the test).
finite = st.integers(min_value=-400, max_value=400).map(lambda k: k / 4)


@settings(max_examples=50, deadline=None)
@given(st.lists(finite, min_size=6, max_size=6), finite)
def test_invariant_to_adding_a_constant(values, shift):
    r = t(values)
    for scale in ("group", "batch", "none"):
        a = group_advantages(r, 3, scale=scale)
        b = group_advantages(r + shift, 3, scale=scale)
        assert torch.allclose(a, b, atol=1e-6), scale
        assert torch.isfinite(a).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(finite, min_size=6, max_size=6), st.floats(min_value=0.01, max_value=100))
def test_std_scaling_invariant_to_positive_multiplication(values, factor):
    r = t(values)
    for scale in ("group", "batch"):
        a = group_advantages(r, 3, scale=scale)
        b = group_advantages(r * factor, 3, scale=scale)
        assert torch.allclose(a, b, atol=1e-6), scale
    # Without std scaling the advantages scale with the rewards.
    assert torch.allclose(group_advantages(r * factor, 3, scale="none"),
                          factor * group_advantages(r, 3, scale="none"), atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(finite, min_size=8, max_size=8))
def test_group_advantages_have_zero_mean_and_unit_sample_std(values):
    adv = group_advantages(t(values), 4).view(2, 4)
    assert torch.allclose(adv.sum(dim=1), torch.zeros(2, dtype=torch.float64), atol=1e-9)
    stds = adv.std(dim=1)
    for group, s in zip(t(values).view(2, 4), stds):
        if group.max() > group.min():  # non-degenerate: unit sample std
            assert abs(s.item() - 1.0) < 1e-9
        else:  # all equal: all zero
            assert s.item() == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rewards=torch.zeros(2, 3), group_size=3), r"1-D.*\(2, 3\)"),
        (dict(rewards=torch.zeros(7), group_size=3), r"length 7.*group_size 3"),
        (dict(rewards=torch.zeros(0), group_size=3), r"length 0"),
        (dict(rewards=torch.zeros(4), group_size=1), r"group_size must be an int >= 2.*got 1"),
        (dict(rewards=torch.zeros(6), group_size=3, scale="global"), r"scale='global' is not one of: group, batch, none"),
        (dict(rewards=torch.zeros(6), group_size=3, std="unbiased"), r"std='unbiased' is not one of: sample, population"),
        (dict(rewards=torch.zeros(6), group_size=3, eps=-1.0), r"std_eps=-1.0 must be >= 0"),
        (dict(rewards=[1.0, 2.0], group_size=2), r"torch.Tensor"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(**kwargs)


def test_errors_in_helpers():
    with pytest.raises(ValueError, match="'pop'"):
        group_stats(torch.zeros(4), 2, std="pop")
    with pytest.raises(ValueError, match="length 5"):
        zero_variance_fraction(torch.zeros(5), 2)
