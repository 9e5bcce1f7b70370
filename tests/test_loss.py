"""Tests for minigrpo.loss against values derived by hand from the formulas.

Clipped surrogate min(r A, clip(r, 1-eps_low, 1+eps_high) A) (course section 3),
Schulman's k1/k2/k3 KL estimators (DeepSeekMath eq. 4 uses k3), and the five
aggregations of TRL's GRPOTrainer. Expected numbers are worked out in comments.
"""
import math

import pytest
import torch

from minigrpo.loss import aggregate, clipped_surrogate, grpo_loss, kl_estimate


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def close(actual, expected, atol=1e-9):
    actual = torch.as_tensor(actual, dtype=torch.float64)
    assert torch.allclose(actual, t(expected), rtol=0, atol=atol), (actual, expected)


# ---------------------------------------------------------------- clip bounds


def test_clip_bounds_by_hand():
    # r = 1.5, A = +1, eps_high = 0.28: min(1.5, 1.28) = 1.28
    close(clipped_surrogate(t(1.5), t(1.0), 0.2, 0.28), 1.28)
    # r = 0.5, A = -1, eps_low = 0.2: min(-0.5, -0.8) = -0.8
    close(clipped_surrogate(t(0.5), t(-1.0), 0.2, 0.2), -0.8)
    # r = 0.5, A = +1: min(0.5, 0.8) = 0.5, unclipped (a bad move can be undone)
    close(clipped_surrogate(t(0.5), t(1.0), 0.2, 0.2), 0.5)
    # r = 1.5, A = -1: min(-1.5, -1.2) = -1.5, unclipped
    close(clipped_surrogate(t(1.5), t(-1.0), 0.2, 0.2), -1.5)


def test_the_loss_types_are_the_configs():
    """The five aggregations plus cispo are exactly what the config accepts."""
    from minigrpo.checks import CHOICES
    from minigrpo.loss import LOSS_TYPES
    assert set(LOSS_TYPES) | {"cispo"} == set(CHOICES["loss_type"]) and "cispo" not in LOSS_TYPES


def test_note_probability_caps():
    # Section 1.3: with eps = 0.2 a token of probability 0.01 can rise to at most
    # 0.01 * 1.2 = 0.012 (for A = 1 the objective stops growing there).
    p_old = 0.01
    p_new = t([0.011, 0.012, 0.02, 0.05])
    close(clipped_surrogate(p_new / p_old, t(1.0), 0.2, 0.2) * p_old, [0.011, 0.012, 0.012, 0.012])
    # Section 3.2 says eps_high = 0.3 lets a token of probability 0.9 "rise to 1.17": the
    # objective does stop growing at ratio 1.3 (0.9 * 1.3 = 1.17), but a probability is capped
    # at 1, so the ratio of a 0.9 token can never exceed 1/0.9 = 1.11 and the clip never binds.
    close(clipped_surrogate(t(1.5), t(1.0), 0.2, 0.3) * 0.9, 1.17)
    close(clipped_surrogate(t(1 / 0.9), t(1.0), 0.2, 0.3), 1 / 0.9)  # unclipped at the cap


def test_clipped_surrogate_broadcasts():
    ratio = t([[1.5, 0.5], [1.5, 0.5]])  # (2, 2)
    adv = t([[1.0], [-1.0]])  # (2, 1)
    # row 0 (A=+1): min(1.5, 1.2) = 1.2, min(0.5, 0.8) = 0.5
    # row 1 (A=-1): min(-1.5, -1.2) = -1.5, min(-0.5, -0.8) = -0.8
    close(clipped_surrogate(ratio, adv, 0.2, 0.2), [[1.2, 0.5], [-1.5, -0.8]])


# --------------------------------------------------------------- KL estimators


def test_kl_estimators_by_hand():
    logp = t([-1.0, -0.5])
    ref = t([-0.5, -1.5])
    # log r = ref - logp = 0.5, -1.0
    close(kl_estimate(logp, ref, "k1"), [-0.5, 1.0])  # -log r
    close(kl_estimate(logp, ref, "k2"), [0.125, 0.5])  # (log r)^2 / 2
    # k3 = e^{log r} - log r - 1: e^0.5 - 1.5 = 0.148721..., e^-1 + 1 - 1 = 0.367879...
    close(kl_estimate(logp, ref, "k3"), [math.exp(0.5) - 1.5, math.exp(-1.0)])


def test_k3_nonnegative_and_exactly_zero_at_equal():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(4, 7, generator=g, dtype=torch.float64) * 5
    ref = -torch.rand(4, 7, generator=g, dtype=torch.float64) * 5
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    assert (kl_estimate(logp, ref, "k2") >= 0).all()
    for est in ("k1", "k2", "k3"):
        assert torch.equal(kl_estimate(logp, logp.clone(), est), torch.zeros_like(logp))


# ---------------------------------------------------------------- aggregation

# A 2x3 batch, eps_low = eps_high = 0.2, old_logp = 0, logp = log(ratio):
#   row 0, A = +1, mask 1 1 1, ratios 1.1 1.5 0.9
#     surrogate min(1.1,1.1)=1.1, min(1.5,1.2)=1.2, min(0.9,0.9)=0.9 -> loss -1.1 -1.2 -0.9, sum -3.2
#   row 1, A = -1, mask 1 1 0, ratios 0.5 1.0 (pad: logp = 50, would be e^50)
#     surrogate min(-0.5,-0.8)=-0.8, min(-1,-1)=-1 -> loss 0.8 1.0, sum 1.8
#   grpo    = (-3.2/3 + 1.8/2) / 2 = (-16/15 + 0.9) / 2 = -1/12
#   bnpo    = (-3.2 + 1.8) / 5 = -0.28          (dapo the same)
#   dr_grpo = -1.4 / (2 * 3) = -7/30; with max_completion_length 7: -1.4 / 14 = -0.1
#   seq_sum = -1.4 / 2 = -0.7
EXPECTED = {"grpo": -1 / 12, "bnpo": -0.28, "dapo": -0.28, "dr_grpo": -7 / 30, "seq_sum": -0.7}


def small_batch():
    logp = torch.log(t([[1.1, 1.5, 0.9], [0.5, 1.0, 1.0]]))
    logp[1, 2] = 50.0  # garbage on the padding position
    logp.requires_grad_(True)
    old = torch.zeros(2, 3, dtype=torch.float64)
    adv = t([1.0, -1.0])
    mask = t([[1, 1, 1], [1, 1, 0]])
    return logp, old, adv, mask


@pytest.mark.parametrize("loss_type", sorted(EXPECTED))
def test_loss_types_by_hand(loss_type):
    logp, old, adv, mask = small_batch()
    loss, _ = grpo_loss(logp, old, adv, mask, loss_type=loss_type)
    close(loss.detach(), EXPECTED[loss_type], atol=1e-12)


def test_dr_grpo_max_completion_length():
    logp, old, adv, mask = small_batch()
    loss, _ = grpo_loss(logp, old, adv, mask, loss_type="dr_grpo", max_completion_length=7)
    close(loss.detach(), -0.1, atol=1e-12)


def test_aggregate_directly_with_bool_mask():
    x = t([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    m = torch.tensor([[True, True, True], [True, False, False]])
    # grpo: (6/3 + 4/1) / 2 = 3; bnpo: 10 / 4 = 2.5; dr_grpo: 10 / 6; seq_sum: 10 / 2 = 5
    close(aggregate(x, m, "grpo"), 3.0)
    close(aggregate(x, m, "bnpo"), 2.5)
    close(aggregate(x, m, "dr_grpo"), 10 / 6)
    close(aggregate(x, m, "seq_sum"), 5.0)


def test_gradient_is_exactly_zero_where_clipped():
    # grpo: d loss / d logp_nt = -A_n * r_nt / (N * |o_n|) where unclipped, 0 where clipped.
    #   row 0: -1.1/6, 0 (r=1.5 clipped high), -0.9/6
    #   row 1: 0 (r=0.5 clipped low), +1.0/4, 0 (padding)
    logp, old, adv, mask = small_batch()
    loss, _ = grpo_loss(logp, old, adv, mask, loss_type="grpo")
    loss.backward()
    close(logp.grad, [[-1.1 / 6, 0.0, -0.9 / 6], [0.0, 0.25, 0.0]], atol=1e-12)
    assert logp.grad[0, 1].item() == 0.0 and logp.grad[1, 0].item() == 0.0
    assert logp.grad[1, 2].item() == 0.0


def test_clip_stats_by_hand():
    # Same batch: 5 real tokens; clipped high: (0,1) r=1.5>1.2, A>0; clipped low: (1,0) r=0.5<0.8, A<0.
    # ratio mean = (1.1 + 1.5 + 0.9 + 0.5 + 1.0) / 5 = 1.0 (the padding's e^50 is not counted)
    logp, old, adv, mask = small_batch()
    _, stats = grpo_loss(logp, old, adv, mask)
    assert stats["clip_high"] == pytest.approx(1 / 5)
    assert stats["clip_low"] == pytest.approx(1 / 5)
    assert stats["clip"] == pytest.approx(2 / 5)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["ratio_min"] == pytest.approx(0.5)
    assert stats["ratio_max"] == pytest.approx(1.5)
    assert stats["kl"] == 0.0  # no ref_logp
    assert stats["tokens"] == 5.0
    # surrogate mean over real tokens = (1.1 + 1.2 + 0.9 - 0.8 - 1.0) / 5 = 0.28
    assert stats["surrogate"] == pytest.approx(0.28)
    assert all(isinstance(v, float) for v in stats.values())


def test_wider_upper_bound_stops_clipping():
    # eps_high = 0.6: r = 1.5 < 1.6 is no longer clipped -> only the low clip remains.
    logp, old, adv, mask = small_batch()
    _, stats = grpo_loss(logp, old, adv, mask, eps_high=0.6)
    assert stats["clip_high"] == 0.0
    assert stats["clip_low"] == pytest.approx(1 / 5)


# ----------------------------------------------------------- KL in the loss


def test_loss_zero_at_ratio_one_with_centred_advantages_but_gradient_nonzero():
    # r = 1 everywhere, A = (+1, -1), equal lengths T = 2, beta = 0:
    #   loss = mean_n mean_t (-A_n) = (-1 + 1) / 2 = 0
    #   d loss / d logp_nt = -A_n * 1 / (N * T) = -0.25, +0.25
    logp = t([[-1.0, -2.0], [-0.5, -3.0]]).requires_grad_(True)
    loss, stats = grpo_loss(logp, logp.detach().clone(), t([1.0, -1.0]), torch.ones(2, 2))
    assert loss.item() == 0.0
    loss.backward()
    close(logp.grad, [[-0.25, -0.25], [0.25, 0.25]], atol=1e-12)
    assert stats["clip"] == 0.0 and stats["ratio_mean"] == 1.0


def test_beta_adds_k3_against_reference_by_hand():
    # r = 1, A = 0 -> surrogate 0; ref - logp = 0.5 on every token -> k3 = e^0.5 - 1.5
    #   loss (grpo) = beta * k3 = 0.1 * 0.1487212707 = 0.01487212707
    #   d k3 / d logp = -(e^{log r}) + 1 = 1 - e^0.5 -> grad = beta (1 - e^0.5) / (N * T)
    logp = t([[-1.0, -2.0], [-0.5, -3.0]]).requires_grad_(True)
    ref = logp.detach() + 0.5
    loss, stats = grpo_loss(logp, logp.detach().clone(), t([0.0, 0.0]), torch.ones(2, 2),
                            beta=0.1, ref_logp=ref)
    close(loss.detach(), 0.1 * (math.exp(0.5) - 1.5), atol=1e-12)
    assert stats["kl"] == pytest.approx(math.exp(0.5) - 1.5)
    loss.backward()
    g = 0.1 * (1 - math.exp(0.5)) / 4
    close(logp.grad, [[g, g], [g, g]], atol=1e-12)


@pytest.mark.parametrize("estimator, expected", [("k1", -0.5), ("k2", 0.125), ("k3", math.exp(0.5) - 1.5)])
def test_kl_stat_uses_reference_not_old(estimator, expected):
    # KL stat (mean over real tokens) is computed from ref even when beta = 0,
    # and does not move when old_logp changes.
    logp, old, adv, mask = small_batch()
    ref = logp.detach() + 0.5
    ref[1, 2] = -1e9  # padding: ignored
    _, a = grpo_loss(logp, old, adv, mask, ref_logp=ref, kl_estimator=estimator)
    _, b = grpo_loss(logp, old - 0.3, adv, mask, ref_logp=ref, kl_estimator=estimator)
    assert a["kl"] == pytest.approx(expected)
    assert b["kl"] == a["kl"]
    assert b["ratio_mean"] != a["ratio_mean"]


def test_beta_zero_keeps_kl_out_of_the_loss():
    logp, old, adv, mask = small_batch()
    loss, _ = grpo_loss(logp, old, adv, mask, ref_logp=logp.detach() + 0.5, beta=0.0)
    close(loss.detach(), EXPECTED["grpo"], atol=1e-12)


# ------------------------------------------------------------ robustness


@pytest.mark.parametrize("loss_type", sorted(EXPECTED))
def test_all_masked_row_is_nan_free(loss_type):
    # Row 1 has no real token: grpo counts it as a sequence contributing 0.
    #   row 0: A = +1, r = 1 on 2 tokens -> per-token loss -1 -> sum -2
    #   grpo = (-2/2 + 0) / 2 = -0.5; bnpo = -2/2 = -1; dr_grpo = -2/(2*2); seq_sum = -2/2
    expected = {"grpo": -0.5, "bnpo": -1.0, "dapo": -1.0, "dr_grpo": -0.5, "seq_sum": -1.0}
    logp = t([[-1.0, -2.0], [float("-inf"), float("nan")]]).requires_grad_(True)
    old = t([[-1.0, -2.0], [0.0, float("-inf")]])
    ref = t([[-1.0, -2.0], [float("nan"), 3.0]])
    mask = t([[1, 1], [0, 0]])
    loss, stats = grpo_loss(logp, old, t([1.0, -1.0]), mask, beta=0.1, ref_logp=ref, loss_type=loss_type)
    close(loss.detach(), expected[loss_type], atol=1e-12)
    loss.backward()
    assert torch.isfinite(logp.grad).all()
    assert all(math.isfinite(v) for v in stats.values())


def test_everything_masked_gives_zero_loss_and_finite_stats():
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, stats = grpo_loss(logp, torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 3))
    assert loss.item() == 0.0
    assert stats["tokens"] == 0.0 and stats["ratio_mean"] == 1.0 and stats["clip"] == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(old_logp=torch.zeros(2, 4)), r"old_logp shape \(2, 4\) != logp shape \(2, 3\)"),
        (dict(mask=torch.ones(3, 3)), r"mask shape \(3, 3\) != logp shape \(2, 3\)"),
        (dict(ref_logp=torch.zeros(2, 2)), r"ref_logp shape \(2, 2\) != logp shape \(2, 3\)"),
        (dict(advantages=torch.zeros(3)), r"advantages shape \(3,\) is neither \(N,\) nor \(N, T\) for logp shape \(2, 3\)"),
        (dict(advantages=torch.zeros(2, 1)), r"advantages shape \(2, 1\)"),
        (dict(logp=torch.zeros(6)), r"logp must be a non-empty \(N, T\).*\(6,\)"),
        (dict(eps_low=1.0), r"eps_low=1.0 must be in \[0, 1\)"),
        (dict(eps_low=-0.1), r"eps_low"),
        (dict(eps_high=-0.1), r"eps_high=-0.1 must be >= 0"),
        (dict(beta=-1.0), r"beta=-1.0 must be >= 0"),
        (dict(beta=0.1), r"needs ref_logp"),
        (dict(kl_estimator="k4"), r"kl_estimator='k4' is not one of: k1, k2, k3"),
        (dict(loss_type="token_mean"), r"loss_type='token_mean' is not one of: grpo, bnpo, dapo, dr_grpo, seq_sum"),
        (dict(loss_type="dr_grpo", max_completion_length=0), r"max_completion_length"),
    ],
)
def test_errors(kwargs, match):
    args = dict(logp=torch.zeros(2, 3), old_logp=torch.zeros(2, 3), advantages=torch.zeros(2),
                mask=torch.ones(2, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        grpo_loss(**args)


def test_errors_in_pieces():
    with pytest.raises(ValueError, match="'k0'"):
        kl_estimate(torch.zeros(2), torch.zeros(2), "k0")
    with pytest.raises(ValueError, match="'mean'"):
        aggregate(torch.zeros(2, 2), torch.ones(2, 2), "mean")
